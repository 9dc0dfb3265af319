"""The client library: `Client` (blocking) and `AsyncClient` (asyncio), same behaviour.

    client = gencluster.Client("10.0.0.7:50051,10.0.0.8:50051")
    client.call("next_value")            # -> 1
    for event in client.subscribe("room:lobby"):
        print(event.number, event.data)

What makes calls survive failover:

- Every call gets a request id once, reused on every retry: the replicated reply table makes a
  retried request apply once and answer with the original reply, even on a new active.
- UNAVAILABLE, connection failures and a shutting-down server's CANCELLED are retried until
  the call's deadline. So is an attempt that got no answer within `attempt_timeout` (a
  replica that accepts connections but never answers: paused, hung): the next address gets
  its chance instead of one stuck replica eating the whole deadline. A standby answers
  UNAVAILABLE with `gencluster-active-address`: the client goes there at once; without a
  redirect it tries the next address after a short back-off.
- A handler's exception is not retried: it raises `RemoteError` (type and message of the
  server-side exception; the state did not change). Other gRPC errors (INVALID_ARGUMENT for
  undecodable input, RESOURCE_EXHAUSTED for oversized input, ...) raise `grpc.RpcError` as is.
- `subscribe` resumes after a reconnect from the last event number + 1 (or, before the first
  event, from the number the server announced), so no event is lost or repeated.
- Channels use HTTP/2 keepalive, so a silently dead connection is noticed.
- `call_with_details` returns, besides the value, the epoch of the term that answered, the
  address that answered and whether the reply was a recorded duplicate: what a test or an
  auditor needs to check that two terms never served at once.
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
ATTEMPT_TIMEOUT = 2.0
"""The longest one attempt of a call may take before the next address is tried (with the same
request id, so it is still applied once: a retry that reaches the active while the first
attempt's entry waits for acknowledgements waits for that same entry)."""
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


@dataclass(frozen=True, slots=True)
class CallDetails:
    """A call's reply with where it came from.

    `epoch` is the answering active's term (the Lease's leaseTransitions); `served_by` the
    `host:port` that answered (after redirects); `duplicate` is True when the request id had
    been applied before (a retry across failover) and `value` is the recorded reply, applied
    in an earlier term than `epoch` possibly.
    """

    value: Any
    epoch: int
    served_by: str
    duplicate: bool


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


def _retryable(error: grpc.RpcError, time_left: bool) -> bool:
    """Worth another attempt: UNAVAILABLE/CANCELLED, or an attempt that timed out while the
    call itself still has time (the replica did not answer; another may)."""
    code = _code(error)
    return code in RETRYABLE or (code is grpc.StatusCode.DEADLINE_EXCEEDED and time_left)


def _result_of_call(codec: Codec, reply: pb.CallReply) -> Any:
    if reply.WhichOneof("outcome") == "error":
        raise RemoteError(reply.error.type, reply.error.message)
    return codec.decode(reply.reply, what="reply", bounded=False)


def _details_of_call(codec: Codec, reply: pb.CallReply, served_by: str) -> CallDetails:
    return CallDetails(
        value=_result_of_call(codec, reply),
        epoch=reply.epoch,
        served_by=served_by,
        duplicate=reply.duplicate,
    )


def _call_request(codec: Codec, request: Any, request_id: str | None) -> pb.CallRequest:
    return pb.CallRequest(
        request_id=request_id or uuid.uuid4().hex,
        payload=codec.encode(request, what="request"),
        codec=codec.name,
    )


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
        self, addresses: str, *, codec: str = "json", timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
    ) -> None:
        self._addresses = _Addresses(addresses)
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
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

    def _retrying(
        self, attempt: Callable[[pb_grpc.ClientStub, float], T], timeout: float
    ) -> tuple[T, str]:
        """Run `attempt` against the current address until it succeeds, a non-retryable error
        or the deadline; return its result and the address that answered."""
        deadline = time.monotonic() + timeout
        backoff = RETRY_BACKOFF_START
        last_error: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterUnavailable(
                    f"no active answered within {timeout}s ({last_error})", last_error
                )
            address = self._addresses.current()
            attempt_deadline = min(remaining, self.attempt_timeout)
            try:
                return attempt(self._stub(address), attempt_deadline), address
            except grpc.RpcError as error:
                if not _retryable(error, attempt_deadline < remaining):
                    raise
                last_error = error
                if self._addresses.failed(error):
                    continue
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)

    def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send `request` to the active and return its reply (retried across failover)."""
        return self.call_with_details(request, timeout).value

    def call_with_details(
        self, request: Any, timeout: float | None = None, *, request_id: str | None = None
    ) -> CallDetails:
        """As `call`, and say which term and address answered (see `CallDetails`).

        `request_id` (default: a fresh one) is what makes retries apply once; pass your own
        to record it, or to retry a call whose outcome you do not know."""
        message = _call_request(self.codec, request, request_id)
        reply, served_by = self._retrying(
            lambda stub, remaining: stub.Call(message, timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        return _details_of_call(self.codec, reply, served_by)

    def cast(self, msg: Any, timeout: float | None = None) -> None:
        """Send `msg` without a reply; returns once the active accepted (and replicated) it."""
        message = pb.CastRequest(
            request_id=uuid.uuid4().hex,
            payload=self.codec.encode(msg, what="message"),
            codec=self.codec.name,
        )
        reply, _ = self._retrying(
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
            (stream, metadata), _ = self._retrying(
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
        self, addresses: str, *, codec: str = "json", timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
    ) -> None:
        self._addresses = _Addresses(addresses)
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
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
    ) -> tuple[Any, str]:
        """As `Client._retrying`: the result and the address that answered."""
        deadline = time.monotonic() + timeout
        backoff = RETRY_BACKOFF_START
        last_error: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterUnavailable(
                    f"no active answered within {timeout}s ({last_error})", last_error
                )
            address = self._addresses.current()
            attempt_deadline = min(remaining, self.attempt_timeout)
            try:
                return await attempt(self._stub(address), attempt_deadline), address
            except grpc.RpcError as error:
                if not _retryable(error, attempt_deadline < remaining):
                    raise
                last_error = error
                if self._addresses.failed(error):
                    continue
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        return (await self.call_with_details(request, timeout)).value

    async def call_with_details(
        self, request: Any, timeout: float | None = None, *, request_id: str | None = None
    ) -> CallDetails:
        message = _call_request(self.codec, request, request_id)
        reply, served_by = await self._retrying(
            lambda stub, remaining: stub.Call(message, timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        return _details_of_call(self.codec, reply, served_by)

    async def cast(self, msg: Any, timeout: float | None = None) -> None:
        message = pb.CastRequest(
            request_id=uuid.uuid4().hex,
            payload=self.codec.encode(msg, what="message"),
            codec=self.codec.name,
        )
        reply, _ = await self._retrying(
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
            (stream, metadata), _ = await self._retrying(
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
