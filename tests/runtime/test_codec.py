"""Codecs: round trips, strictness, size limits, and errors that say what went wrong."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import pytest
from gencluster.codec import (
    DEFAULT_MAX_BYTES,
    CodecError,
    JsonCodec,
    MessageTooLarge,
    MsgpackCodec,
    get_codec,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=lambda c: c.name)
@given(value=json_values)
def test_plain_data_round_trips(codec: Any, value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=lambda c: c.name)
@given(value=json_values)
def test_encoding_is_deterministic(codec: Any, value: Any) -> None:
    """Replicas compare encoded replies and events: the same value must give the same bytes."""
    assert codec.encode(value) == codec.encode(codec.decode(codec.encode(value)))


def test_json_is_compact_utf8() -> None:
    assert JsonCodec().encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


def test_msgpack_keeps_bytes_and_str_apart() -> None:
    codec = MsgpackCodec()
    assert codec.decode(codec.encode({"raw": b"\x00\xff", "text": "x"})) == {
        "raw": b"\x00\xff",
        "text": "x",
    }


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"{not json", "JSONDecodeError"),
        (b"\xff\xfe", "not UTF-8"),
        (b"NaN", "NaN is not valid JSON"),
        (b"[Infinity]", "Infinity is not valid JSON"),
        (b"", "JSONDecodeError"),
        (b'{"a": 1} trailing', "Extra data"),
        (pickle.dumps({"a": 1}), "cannot decode"),
    ],
)
def test_json_decode_errors_name_the_cause(data: bytes, cause: str) -> None:
    with pytest.raises(CodecError, match="cannot decode request as json") as raised:
        JsonCodec().decode(data, what="request")
    assert cause in str(raised.value)


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"\x92\x01", "incomplete input"),
        (b"\xc1", "FormatError"),
        (b"\x91\x01\x02", "extra data"),
        (msgpack.packb(msgpack.ExtType(3, b"x")), "extension type 3"),
        (pickle.dumps(object), "cannot decode"),
    ],
)
def test_msgpack_decode_errors_name_the_cause(data: bytes, cause: str) -> None:
    with pytest.raises(CodecError, match="cannot decode payload as msgpack") as raised:
        MsgpackCodec().decode(data)
    assert cause in str(raised.value)


def test_msgpack_timestamps_decode_to_plain_integers() -> None:
    data = msgpack.packb(msgpack.Timestamp(seconds=2, nanoseconds=5))
    assert MsgpackCodec().decode(data) == 2_000_000_005


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=lambda c: c.name)
@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), float("inf")])
def test_values_outside_plain_data_are_refused(codec: Any, value: Any) -> None:
    with pytest.raises(CodecError, match=f"cannot encode reply as {codec.name}"):
        codec.encode(value, what="reply")


def test_too_deep_nesting_is_a_codec_error_not_a_crash() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(CodecError):
        JsonCodec().encode(deep)
    with pytest.raises(CodecError):
        JsonCodec().decode(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("codec_name", ["json", "msgpack"])
def test_oversized_input_is_refused_before_parsing(codec_name: str) -> None:
    codec = get_codec(codec_name, max_bytes=10)
    with pytest.raises(MessageTooLarge, match=r"11 bytes, over the .* limit of 10 bytes"):
        codec.decode(b"x" * 11, what="request")
    assert codec.decode(codec.encode("12345678")) == "12345678"


@pytest.mark.parametrize("codec_name", ["json", "msgpack"])
def test_oversized_output_is_refused(codec_name: str) -> None:
    codec = get_codec(codec_name, max_bytes=10)
    with pytest.raises(MessageTooLarge, match="reply is"):
        codec.encode("x" * 50, what="reply")


def test_codec_lookup() -> None:
    assert isinstance(get_codec("json"), JsonCodec)
    assert isinstance(get_codec("msgpack"), MsgpackCodec)
    assert get_codec("json").max_bytes == DEFAULT_MAX_BYTES
    with pytest.raises(CodecError, match="unknown codec 'pickle'; known codecs: json, msgpack"):
        get_codec("pickle")
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        JsonCodec(max_bytes=0)
