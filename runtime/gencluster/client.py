"""The client library: `Client` (blocking) and `AsyncClient` (asyncio), same behaviour.

    client = gencluster.Client("10.0.0.7:50051,10.0.0.8:50051")
    client.call("next_value")            # -> 1
    for event in client.subscribe("room:lobby"):
        print(event.number, event.data)

What makes calls survive failover:

- Every call gets a request id once, reused on every retry: the replicated reply table makes a
  retried request apply once and answer with the original reply, even on a new active.
- UNAVAILABLE, connection failures and a shutting-down server's CANCELLED are retried until
  the call's deadline. A standby answers
  UNAVAILABLE with `gencluster-active-address`: the client goes there at once; without a
  redirect it tries the next address after a short back-off.
- A handler's exception is not retried: it raises `RemoteError` (type and message of the
  server-side exception; the state did not change). Other gRPC errors (INVALID_ARGUMENT for
  undecodable input, RESOURCE_EXHAUSTED for oversized input, ...) raise `grpc.RpcError` as is.
- `subscribe` resumes after a reconnect from the last event number + 1 (or, before the first
  event, from the number the server announced), so no event is lost or repeated.
- Channels use HTTP/2 keepalive, so a silently dead connection is noticed.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from gencluster.codec import Codec, get_codec
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import ACTIVE_ADDRESS_METADATA

NEXT_EVENT_METADATA = "gencluster-next-event"
DEFAULT_TIMEOUT = 30.0
RETRY_BACKOFF_START = 0.02
RETRY_BACKOFF_MAX = 0.25
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
"""Retried with the same request id (so applied once). CANCELLED is in because this library
never cancels a call it will not retry, while a gRPC server that shuts down answers CANCELLED
for calls it had not handed to a handler yet (grpc/grpc#41785): a graceful handover must not
surface that to the caller."""

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]

T = TypeVar("T")


class RemoteError(Exception):
    """The server's handler raised; the server's state is unchanged."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.type = error_type
        self.message = message


class ClusterUnavailable(Exception):
    """No replica answered as active before the deadline; `last_error` is the last failure."""

    def __init__(self, message: str, last_error: BaseException | None) -> None:
        super().__init__(message)
        self.last_error = last_error


@dataclass(frozen=True, slots=True)
class Event:
    """A published event: `number` increases by one per topic."""

    topic: str
    number: int
    data: Any
    seq: int
    time: float
    epoch: int
    missed: int


class _Addresses:
    """Where to send the next attempt: the redirect target first, then the list in turn."""

    def __init__(self, addresses: str) -> None:
        self.addresses = [part.strip() for part in addresses.split(",") if part.strip()]
        if not self.addresses:
            raise ValueError("Client needs at least one host:port address")
        self._index = 0
        self.redirect: str | None = None

    def current(self) -> str:
        return self.redirect or self.addresses[self._index % len(self.addresses)]

    def failed(self, error: grpc.RpcError) -> bool:
        """Record a retryable failure; True when the server named the active (go at once)."""
        target = _trailing(error, ACTIVE_ADDRESS_METADATA)
        if target and target != self.current():
            self.redirect = target
            return True
        if self.redirect:
            self.redirect = None
        else:
            self._index += 1
        return False


def _trailing(error: grpc.RpcError, key: str) -> str:
    try:
        metadata = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:
        return ""
    for item_key, value in metadata:
        if item_key == key:
            return value if isinstance(value, str) else value.decode()
    return ""


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    try:
        return error.code()  # type: ignore[attr-defined]
    except Exception:
        return None


def _result_of_call(codec: Codec, reply: pb.CallReply) -> Any:
    if reply.WhichOneof("outcome") == "error":
        raise RemoteError(reply.error.type, reply.error.message)
    return codec.decode(reply.reply, what="reply", bounded=False)


def _event(codec: Codec, message: pb.Event) -> Event:
    return Event(
        topic=message.topic,
        number=message.number,
        data=codec.decode(message.data, what="event", bounded=False),
        seq=message.seq,
        time=message.time,
        epoch=message.epoch,
        missed=message.missed,
    )


def _subscribe_request(topic: str, from_event: int | None, accept_gap: bool) -> Any:
    request = pb.SubscribeRequest(topic=topic, accept_gap=accept_gap)
    if from_event is not None:
        request.from_event = from_event
    return request


def _open_stream(stub: pb_grpc.ClientStub, request: Any) -> tuple[Any, dict[str, str]]:
    stream = stub.Subscribe(request)
    return stream, dict(stream.initial_metadata() or ())


async def _open_stream_async(stub: pb_grpc.ClientStub, request: Any) -> tuple[Any, dict[str, str]]:
    stream = stub.Subscribe(request)
    return stream, dict(await stream.initial_metadata() or ())


class Client:
    """A blocking client of a gencluster cluster (thread-safe, as gRPC channels are)."""

    def __init__(
        self, addresses: str, *, codec: str = "json", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._addresses = _Addresses(addresses)
        self.codec = get_codec(codec)
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _stub(self, address: str) -> pb_grpc.ClientStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                self._channels[address] = channel
        return pb_grpc.ClientStub(channel)

    def _retrying(self, attempt: Callable[[pb_grpc.ClientStub, float], T], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        backoff = RETRY_BACKOFF_START
        last_error: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterUnavailable(
                    f"no active answered within {timeout}s ({last_error})", last_error
                )
            try:
                return attempt(self._stub(self._addresses.current()), remaining)
            except grpc.RpcError as error:
                if _code(error) not in RETRYABLE:
                    raise
                last_error = error
                if self._addresses.failed(error):
                    continue
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)

    def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send `request` to the active and return its reply (retried across failover)."""
        message = pb.CallRequest(
            request_id=uuid.uuid4().hex,
            payload=self.codec.encode(request, what="request"),
            codec=self.codec.name,
        )
        reply = self._retrying(
            lambda stub, remaining: stub.Call(message, timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        return _result_of_call(self.codec, reply)

    def cast(self, msg: Any, timeout: float | None = None) -> None:
        """Send `msg` without a reply; returns once the active accepted (and replicated) it."""
        message = pb.CastRequest(
            request_id=uuid.uuid4().hex,
            payload=self.codec.encode(msg, what="message"),
            codec=self.codec.name,
        )
        reply = self._retrying(
            lambda stub, remaining: stub.Cast(message, timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        if reply.HasField("error"):
            raise RemoteError(reply.error.type, reply.error.message)

    def subscribe(
        self, topic: str, from_event: int | None = None, *, accept_gap: bool = False
    ) -> Iterator[Event]:
        """Events of `topic` from `from_event` on (None: new events only), forever; resumes
        after failover. Raises `ClusterUnavailable` after `timeout` seconds without an
        active to subscribe to."""
        next_event = from_event
        while True:
            request = _subscribe_request(topic, next_event, accept_gap)
            stream, metadata = self._retrying(
                lambda stub, remaining, request=request: _open_stream(stub, request),
                self.timeout,
            )
            if next_event is None and NEXT_EVENT_METADATA in metadata:
                next_event = int(metadata[NEXT_EVENT_METADATA])
            try:
                for message in stream:
                    event = _event(self.codec, message)
                    next_event = event.number + 1
                    yield event
            except grpc.RpcError as error:
                if self._closed:
                    return
                if _code(error) not in RETRYABLE:
                    raise
                if not self._addresses.failed(error):
                    time.sleep(RETRY_BACKOFF_MAX / 5)
            finally:
                stream.cancel()

    def close(self) -> None:
        """Close every channel; a `subscribe` iterator in another thread then ends."""
        self._closed = True
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: the same retries, redirects and resumption."""

    def __init__(
        self, addresses: str, *, codec: str = "json", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._addresses = _Addresses(addresses)
        self.codec = get_codec(codec)
        self.timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    def _stub(self, address: str) -> pb_grpc.ClientStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return pb_grpc.ClientStub(channel)

    async def _retrying(
        self, attempt: Callable[[pb_grpc.ClientStub, float], Any], timeout: float
    ) -> Any:
        deadline = time.monotonic() + timeout
        backoff = RETRY_BACKOFF_START
        last_error: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterUnavailable(
                    f"no active answered within {timeout}s ({last_error})", last_error
                )
            try:
                return await attempt(self._stub(self._addresses.current()), remaining)
            except grpc.RpcError as error:
                if _code(error) not in RETRYABLE:
                    raise
                last_error = error
                if self._addresses.failed(error):
                    continue
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        message = pb.CallRequest(
            request_id=uuid.uuid4().hex,
            payload=self.codec.encode(request, what="request"),
            codec=self.codec.name,
        )
        reply = await self._retrying(
            lambda stub, remaining: stub.Call(message, timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        return _result_of_call(self.codec, reply)

    async def cast(self, msg: Any, timeout: float | None = None) -> None:
        message = pb.CastRequest(
            request_id=uuid.uuid4().hex,
            payload=self.codec.encode(msg, what="message"),
            codec=self.codec.name,
        )
        reply = await self._retrying(
            lambda stub, remaining: stub.Cast(message, timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        if reply.HasField("error"):
            raise RemoteError(reply.error.type, reply.error.message)

    async def subscribe(
        self, topic: str, from_event: int | None = None, *, accept_gap: bool = False
    ) -> AsyncIterator[Event]:
        next_event = from_event
        while True:
            request = _subscribe_request(topic, next_event, accept_gap)
            stream, metadata = await self._retrying(
                lambda stub, remaining, request=request: _open_stream_async(stub, request),
                self.timeout,
            )
            if next_event is None and NEXT_EVENT_METADATA in metadata:
                next_event = int(metadata[NEXT_EVENT_METADATA])
            try:
                async for message in stream:
                    event = _event(self.codec, message)
                    next_event = event.number + 1
                    yield event
            except grpc.RpcError as error:
                if self._closed:
                    return
                if _code(error) not in RETRYABLE:
                    raise
                if not self._addresses.failed(error):
                    await asyncio.sleep(RETRY_BACKOFF_MAX / 5)
            finally:
                stream.cancel()

    async def close(self) -> None:
        self._closed = True
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
