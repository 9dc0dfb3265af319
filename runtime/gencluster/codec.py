"""How requests, replies, states and events become bytes, and back.

Everything that crosses the network or the replication log goes through a codec, so that the
active and every standby see the same bytes and decode the same values. JSON is the default
because it is readable in `kubectl`-side tooling and in any gRPC client; msgpack is offered for
compact binary payloads. Pickle is never used: unpickling bytes from the network runs arbitrary
code.

Both codecs enforce a size limit in both directions, so an oversized request is refused before
it is parsed and an oversized reply is refused before it reaches gRPC's own (less explicit)
message limit. Every failure is a `CodecError` that names the codec and the cause.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import msgpack

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""gRPC's default maximum message size: a payload this big still fits in one message."""


class CodecError(ValueError):
    """Bytes that cannot be decoded, or a value that cannot be encoded, with the reason."""


class MessageTooLarge(CodecError):
    """A payload over the codec's size limit (mapped to gRPC RESOURCE_EXHAUSTED)."""


class NotRoundTripping(CodecError):
    """A value that encodes but decodes to something else (an int dict key that comes back
    a string, a tuple that comes back a list): a standby that joins by snapshot would hold a
    different state than the active that kept the original object."""


class Codec(ABC):
    """Encodes values to bytes and back, refusing anything over `max_bytes`."""

    name: ClassVar[str]

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes

    def encode(self, value: Any, *, what: str = "value", bounded: bool = True) -> bytes:
        """Encode `value`; `what` names it in errors ("reply", "state", ...).

        `bounded=False` lifts the size limit: for whole states, which travel in chunked
        snapshot streams rather than in one gRPC message.
        """
        try:
            data = self._encode(value)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise CodecError(f"cannot encode {what} as {self.name}: {_describe(error)}") from error
        if bounded:
            self._check_size(len(data), what)
        return data

    def decode(self, data: bytes, *, what: str = "payload", bounded: bool = True) -> Any:
        """Decode `data`; refuses oversized input before parsing it (unless not `bounded`)."""
        if bounded:
            self._check_size(len(data), what)
        try:
            return self._decode(data)
        except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as error:
            raise CodecError(f"cannot decode {what} as {self.name}: {_describe(error)}") from error

    def round_trip(self, value: Any, *, what: str = "value") -> bytes:
        """Encode `value` (unbounded) and check that decoding gives an equal value; the
        encoded bytes are returned. Raises `CodecError` for a value that does not encode and
        `NotRoundTripping`, naming the first difference, for one that decodes differently."""
        data = self.encode(value, what=what, bounded=False)
        decoded = self.decode(data, what=what, bounded=False)
        # `==` at C speed is exact here: a tuple never equals a list, an int key never
        # equals a str key, and the codecs keep bool, int and float apart. The walk that
        # names the difference runs only when there is one.
        if decoded != value:
            where = first_difference(value, decoded, what)
            raise NotRoundTripping(
                f"{what} does not survive {self.name} encoding unchanged: {where}"
            )
        return data

    def check_value(self, value: Any, *, what: str = "value", max_nodes: int) -> bool:
        """Check that `value` is made only of what this codec carries unchanged, visiting at
        most `max_nodes` values (depth first, in iteration order): True when all of it was
        checked, False when the budget ran out first (the rest is unchecked). Raises
        `NotRoundTripping` naming the first offending path.

        The determinism guard's per-call check: O(values visited), never O(bytes) (a 100 MB
        string is one value), and a pure function of the value, so every replica holding the
        same state decides the same way."""
        stack: list[tuple[Any, str]] = [(value, what)]
        visited = 0
        key_types = self._key_types
        while stack:
            if visited >= max_nodes:
                return False
            visited += 1
            item, path = stack.pop()
            kind = type(item)
            if kind is dict:
                for key, child in reversed(item.items()):
                    if type(key) not in key_types:
                        raise NotRoundTripping(
                            f"{what} does not survive {self.name} encoding unchanged: a key of "
                            f"{path} is {type(key).__name__} {_short(key)}"
                            f"{self._key_fate(key)}"
                        )
                    stack.append((child, f"{path}[{key!r}]"))
            elif kind is list:
                for index in range(len(item) - 1, -1, -1):
                    stack.append((item[index], f"{path}[{index}]"))
            else:
                problem = self._leaf_problem(item)
                if problem is not None:
                    raise NotRoundTripping(
                        f"{what} does not survive {self.name} encoding unchanged: {path} is "
                        f"{type(item).__name__} {_short(item)} ({problem})"
                    )
        return True

    _key_types: ClassVar[frozenset[type]] = frozenset({str})

    def _key_fate(self, key: Any) -> str:
        return " (keys come back as str)" if type(key) in (int, float, bool) else ""

    def _leaf_problem(self, item: Any) -> str | None:
        """Why this non-container value would not come back the same (None: it would)."""
        kind = type(item)
        if kind is str or kind is bool or kind is int or item is None:
            return None
        if kind is float:
            return None if math.isfinite(item) else "not a finite number"
        if kind is tuple:
            return "comes back as a list"
        return "not encodable as such"

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise MessageTooLarge(
                f"{what} is {size} bytes, over the {self.name} codec limit of "
                f"{self.max_bytes} bytes"
            )

    @abstractmethod
    def _encode(self, value: Any) -> bytes: ...

    @abstractmethod
    def _decode(self, data: bytes) -> Any: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_bytes={self.max_bytes})"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def first_difference(original: Any, decoded: Any, path: str) -> str | None:
    """Where `decoded` first differs from `original` (None: nowhere), in words a handler's
    author can act on: the path into the value, what it was and what it came back as."""
    if type(original) is not type(decoded):
        return (
            f"{path} is {type(original).__name__} {_short(original)} and comes back as "
            f"{type(decoded).__name__} {_short(decoded)}"
        )
    if isinstance(original, dict):
        for (key, value), (back_key, back_value) in zip(
            original.items(), decoded.items(), strict=False
        ):
            found = first_difference(key, back_key, f"a key of {path}")
            if found is None:
                found = first_difference(value, back_value, f"{path}[{key!r}]")
            if found is not None:
                return found
        if len(original) != len(decoded):
            return f"{path} has {len(original)} keys and comes back with {len(decoded)}"
        return None
    if isinstance(original, list):
        if len(original) != len(decoded):
            return f"{path} has {len(original)} items and comes back with {len(decoded)}"
        for index, (value, back_value) in enumerate(zip(original, decoded, strict=True)):
            found = first_difference(value, back_value, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if original != decoded:
        return f"{path} is {_short(original)} and comes back as {_short(decoded)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Built once: `json.dumps`/`json.loads` with non-default options build a new encoder or
decoder on every call, about half of their cost for the small requests and replies that
every replicated call encodes and decodes on every replica. Both are stateless between
calls."""


class JsonCodec(Codec):
    """Strict, compact UTF-8 JSON: no NaN or Infinity (other JSON parsers reject them)."""

    name = "json"

    def _encode(self, value: Any) -> bytes:
        return _JSON_ENCODER.encode(value).encode("utf-8")

    def _decode(self, data: bytes) -> Any:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CodecError(f"cannot decode payload as json: not UTF-8 ({error})") from error
        return _JSON_DECODER.decode(text)


def _reject_extension(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


class MsgpackCodec(Codec):
    """msgpack with str/bytes kept apart and extension types refused (plain data only)."""

    name = "msgpack"
    _key_types: ClassVar[frozenset[type]] = frozenset({str, int, bytes})

    def _key_fate(self, key: Any) -> str:
        return ""

    def _leaf_problem(self, item: Any) -> str | None:
        kind = type(item)
        if kind is bytes:
            return None
        if kind is int and not -(2**63) <= item < 2**64:
            return "outside msgpack's 64-bit integers"
        return super()._leaf_problem(item)

    def _encode(self, value: Any) -> bytes:
        if isinstance(value, float) and not math.isfinite(value):
            # msgpack can carry NaN, but JSON peers and merge functions compare values: keep
            # both codecs accepting the same value space.
            raise ValueError(f"non-finite float {value!r}")
        packed: bytes = msgpack.packb(value, use_bin_type=True)  # msgpack ships no types
        return packed

    def _decode(self, data: bytes) -> Any:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            ext_hook=_reject_extension,
            timestamp=2,  # the msgpack timestamp extension decodes to plain int nanoseconds
        )


CODECS: dict[str, type[Codec]] = {JsonCodec.name: JsonCodec, MsgpackCodec.name: MsgpackCodec}


def get_codec(name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Codec:
    """The codec called `name` ("json" or "msgpack"); a clear error for anything else."""
    try:
        codec_class = CODECS[name]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise CodecError(f"unknown codec {name!r}; known codecs: {known}") from None
    return codec_class(max_bytes)
