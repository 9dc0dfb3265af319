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
- Every attempt also carries the first attempt's wall-clock time: the cluster remembers
  request ids for its deduplication window (docs/exactly-once.md), and refuses a retry older
  than that instead of maybe applying it twice. That refusal raises `RetryWindowExpired` and
  is not retried.
- A request id names one request: the same id sent with another request (method or payload)
  raises `RequestIdReusedError` (nothing changed), and an id over 256 bytes or under the
  operator's reserved prefix raises `limits.InvalidInput` before anything is sent
  (docs/limits.md).
- A handler's exception is not retried: it raises `RemoteError` (type and message of the
  server-side exception; the state did not change). Other gRPC errors (INVALID_ARGUMENT for
  undecodable input, RESOURCE_EXHAUSTED for oversized input, ...) raise `grpc.RpcError` as is.
- `subscribe` resumes after a reconnect from the last event number + 1 (or, before the first
  event, from the number the server announced), so no event is lost or repeated. It names
  its last event's place in history (seq and origin epoch): if that event belongs to a side
  that lost a merge, the survivor continues it with the news it lacks and marks the first
  event `renumbered` instead of failing (docs/partitions.md, "Subscribers across a merge").
- Channels use HTTP/2 keepalive, so a silently dead connection is noticed. One channel and
  one stub per address, made on first use and closed by `close()`.
- The decisions (which address, how long to back off, when to give up) are
  `gencluster.retry`'s, shared by both clients; the clients only call, sleep and raise.
- `call_with_details` returns, besides the value, the epoch of the term that answered, the
  address that answered and whether the reply was a recorded duplicate: what a test or an
  auditor needs to check that two terms never served at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from gencluster.codec import Codec, get_codec
from gencluster.limits import MAX_RECORD_MESSAGE_BYTES, check_client_request_id
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.retry import (
    ATTEMPT_TIMEOUT,
    RETRY_BACKOFF_MAX,
    RETRY_BACKOFF_START,
    RETRYABLE,
    Attempt,
    CallRetries,
    ClusterUnavailable,
    Failure,
    GiveUp,
    RequestIdReusedError,
    RetryWindowExpired,
    Route,
    Wait,
    after_stream_break,
)

__all__ = [
    "ATTEMPT_TIMEOUT",
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "RETRYABLE",
    "RETRY_BACKOFF_MAX",
    "RETRY_BACKOFF_START",
    "AsyncClient",
    "CallDetails",
    "Client",
    "ClusterUnavailable",
    "Event",
    "RemoteError",
    "RequestIdReusedError",
    "RetryWindowExpired",
]

NEXT_EVENT_METADATA = "gencluster-next-event"
RENUMBERED_METADATA = "gencluster-renumbered"
DEFAULT_TIMEOUT = 30.0

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    # A reply is bounded by the server's codec limit (4 MiB by default, configurable), plus
    # the message around it: gRPC's default 4 MiB receive limit would refuse one at the limit.
    ("grpc.max_receive_message_length", MAX_RECORD_MESSAGE_BYTES),
]

T = TypeVar("T")


class RemoteError(Exception):
    """The server's handler raised; the server's state is unchanged."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.type = error_type
        self.message = message


@dataclass(frozen=True, slots=True)
class Event:
    """A published event: `number` increases by one per topic.

    `epoch` is the term of the active that sent it; `origin_epoch` the epoch of the entry that
    published it (with `seq`, its place in one history). `renumbered` is True on the first
    event after the subscription moved to another history (its side lost a merge, or an Async
    failover lost the tail it had seen): from this event on, numbers are the new history's,
    and an earlier number means another event there (docs/partitions.md)."""

    topic: str
    number: int
    data: Any
    seq: int
    time: float
    epoch: int
    missed: int
    origin_epoch: int = 0
    renumbered: bool = False


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


def _unix_ms(first_attempt: float | None) -> int:
    """The first attempt's time as sent, rounded down: a retry may look older than it is
    (which can only get it refused, safely), never younger."""
    return int((time.time() if first_attempt is None else first_attempt) * 1000)


def _call_request(
    codec: Codec, request: Any, request_id: str | None, first_attempt: float | None
) -> pb.CallRequest:
    if first_attempt is not None and not first_attempt > 0:
        raise ValueError(f"first_attempt must be a positive Unix time, got {first_attempt!r}")
    if request_id:
        # The server refuses these too (INVALID_ARGUMENT); refusing here says so before a
        # round trip, with the same message.
        check_client_request_id(request_id)
    return pb.CallRequest(
        request_id=request_id or uuid.uuid4().hex,
        payload=codec.encode(request, what="request"),
        codec=codec.name,
        first_attempt_unix_ms=_unix_ms(first_attempt),
        # A caller that passes `first_attempt` retries an earlier call: not a first send.
        first_send=first_attempt is None,
    )


def _cast_request(codec: Codec, msg: Any) -> pb.CastRequest:
    return pb.CastRequest(
        request_id=uuid.uuid4().hex,
        payload=codec.encode(msg, what="message"),
        codec=codec.name,
        first_attempt_unix_ms=_unix_ms(None),
        first_send=True,
    )


Sent = TypeVar("Sent", pb.CallRequest, pb.CastRequest)


def _attempts(message: Sent) -> Callable[[], Sent]:
    """The message of each attempt of one call: `message` itself the first time, then a copy
    with `first_send` cleared (a retry may find its request applied already)."""
    retry: list[Sent] = []

    def next_message() -> Sent:
        if not message.first_send:
            return message
        if retry:
            return retry[0]
        retry.append(type(message)())
        retry[0].CopyFrom(message)
        retry[0].first_send = False
        return message
    return next_message


def _check_cast(reply: pb.CastReply) -> None:
    if reply.HasField("error"):
        raise RemoteError(reply.error.type, reply.error.message)


def _event(codec: Codec, message: pb.Event) -> Event:
    return Event(
        topic=message.topic,
        number=message.number,
        data=codec.decode(message.data, what="event", bounded=False),
        seq=message.seq,
        time=message.time,
        epoch=message.epoch,
        missed=message.missed,
        origin_epoch=message.origin_epoch,
        renumbered=message.renumbered,
    )


class _Cursor:
    """Where a subscription is: the next number to ask for and the last event received (its
    seq and origin epoch, sent on resume so the active can tell whether this subscriber
    followed its history: `resume.plan_resume`). Shared by both clients."""

    __slots__ = ("last", "next_event", "renumbered")

    def __init__(self, from_event: int | None) -> None:
        self.next_event = from_event
        self.last: tuple[int, int] | None = None
        self.renumbered = False

    def request(self, topic: str, accept_gap: bool) -> Any:
        request = pb.SubscribeRequest(topic=topic, accept_gap=accept_gap)
        if self.next_event is not None:
            request.from_event = self.next_event
        if self.last is not None:
            request.last_seq, request.last_epoch = self.last
        return request

    def opened(self, metadata: dict[str, str]) -> None:
        if self.next_event is None and NEXT_EVENT_METADATA in metadata:
            self.next_event = int(metadata[NEXT_EVENT_METADATA])
        if RENUMBERED_METADATA in metadata:
            # Marked on the next event delivered, even if this stream breaks before it.
            self.renumbered = True

    def received(self, codec: Codec, message: pb.Event) -> Event:
        event = _event(codec, message)
        if self.renumbered and not event.renumbered:
            event = dataclasses.replace(event, renumbered=True)
        self.renumbered = False
        self.next_event = event.number + 1
        self.last = (event.seq, event.origin_epoch)
        return event


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
        self._route = Route(addresses)
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, pb_grpc.ClientStub] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _stub(self, address: str) -> pb_grpc.ClientStub:
        # Lock-free when cached (every call but the first per address): a dict read is atomic.
        stub = self._stubs.get(address)
        return stub if stub is not None else self._connect(address)

    def _connect(self, address: str) -> pb_grpc.ClientStub:
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                self._channels[address] = channel
                stub = self._stubs[address] = pb_grpc.ClientStub(channel)
        return stub

    def _retrying(
        self, attempt: Callable[[pb_grpc.ClientStub, float], T], timeout: float
    ) -> tuple[T, str]:
        """Run `attempt` as `CallRetries` directs until it succeeds or the policy gives up;
        return its result and the address that answered."""
        now = time.monotonic()
        retries = CallRetries(
            self._route, timeout=timeout, now=now, attempt_timeout=self.attempt_timeout
        )
        step = retries.next_attempt(now)
        while True:
            if isinstance(step, Attempt):
                try:
                    return attempt(self._stub(step.address), step.timeout), step.address
                except grpc.RpcError as error:
                    step = retries.after_failure(Failure.of(error), time.monotonic())
            elif isinstance(step, Wait):
                time.sleep(step.seconds)
                step = retries.next_attempt(time.monotonic())
            else:
                raise step.error

    def call(self, request: Any, timeout: float | None = None) -> Any:
        """Send `request` to the active and return its reply (retried across failover)."""
        return self.call_with_details(request, timeout).value

    def call_with_details(
        self,
        request: Any,
        timeout: float | None = None,
        *,
        request_id: str | None = None,
        first_attempt: float | None = None,
    ) -> CallDetails:
        """As `call`, and say which term and address answered (see `CallDetails`).

        `request_id` (default: a fresh one) is what makes retries apply once; pass your own
        to record it, or to retry a call whose outcome you do not know, and then pass
        `first_attempt` too: the `time.time()` of that call's first attempt (default: now,
        which tells the cluster the request is new). A retry older than the cluster's
        deduplication window raises `RetryWindowExpired` (see docs/exactly-once.md)."""
        message = _attempts(_call_request(self.codec, request, request_id, first_attempt))
        reply, served_by = self._retrying(
            lambda stub, remaining: stub.Call(message(), timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        return _details_of_call(self.codec, reply, served_by)

    def cast(self, msg: Any, timeout: float | None = None) -> None:
        """Send `msg` without a reply; returns once the active accepted (and replicated) it."""
        message = _attempts(_cast_request(self.codec, msg))
        reply, _ = self._retrying(
            lambda stub, remaining: stub.Cast(message(), timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        _check_cast(reply)

    def subscribe(
        self, topic: str, from_event: int | None = None, *, accept_gap: bool = False
    ) -> Iterator[Event]:
        """Events of `topic` from `from_event` on (None: new events only), forever; resumes
        after failover. Raises `ClusterUnavailable` after `timeout` seconds without an
        active to subscribe to.

        Across a merge that its side lost, the subscription continues on the survivor with
        the events it had not seen; the first event there is marked `renumbered`."""
        cursor = _Cursor(from_event)
        while True:
            request = cursor.request(topic, accept_gap)
            (stream, metadata), _ = self._retrying(
                lambda stub, remaining, request=request: _open_stream(stub, request),
                self.timeout,
            )
            cursor.opened(metadata)
            try:
                for message in stream:
                    yield cursor.received(self.codec, message)
            except grpc.RpcError as error:
                if self._closed:
                    return
                step = after_stream_break(self._route, Failure.of(error))
                if isinstance(step, GiveUp):
                    raise
                time.sleep(step.seconds)
            finally:
                stream.cancel()

    def close(self) -> None:
        """Close every channel; a `subscribe` iterator in another thread then ends."""
        self._closed = True
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: the same policy (`gencluster.retry`), awaited."""

    def __init__(
        self, addresses: str, *, codec: str = "json", timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
    ) -> None:
        self._route = Route(addresses)
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.ClientStub] = {}
        self._closed = False

    def _stub(self, address: str) -> pb_grpc.ClientStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.ClientStub(channel)
        return stub

    async def _retrying(
        self, attempt: Callable[[pb_grpc.ClientStub, float], Awaitable[T]], timeout: float
    ) -> tuple[T, str]:
        """As `Client._retrying`: the result and the address that answered."""
        now = time.monotonic()
        retries = CallRetries(
            self._route, timeout=timeout, now=now, attempt_timeout=self.attempt_timeout
        )
        step = retries.next_attempt(now)
        while True:
            if isinstance(step, Attempt):
                try:
                    return await attempt(self._stub(step.address), step.timeout), step.address
                except grpc.RpcError as error:
                    step = retries.after_failure(Failure.of(error), time.monotonic())
            elif isinstance(step, Wait):
                await asyncio.sleep(step.seconds)
                step = retries.next_attempt(time.monotonic())
            else:
                raise step.error

    async def call(self, request: Any, timeout: float | None = None) -> Any:
        return (await self.call_with_details(request, timeout)).value

    async def call_with_details(
        self,
        request: Any,
        timeout: float | None = None,
        *,
        request_id: str | None = None,
        first_attempt: float | None = None,
    ) -> CallDetails:
        message = _attempts(_call_request(self.codec, request, request_id, first_attempt))
        reply, served_by = await self._retrying(
            lambda stub, remaining: stub.Call(message(), timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        return _details_of_call(self.codec, reply, served_by)

    async def cast(self, msg: Any, timeout: float | None = None) -> None:
        message = _attempts(_cast_request(self.codec, msg))
        reply, _ = await self._retrying(
            lambda stub, remaining: stub.Cast(message(), timeout=remaining),
            self.timeout if timeout is None else timeout,
        )
        _check_cast(reply)

    async def subscribe(
        self, topic: str, from_event: int | None = None, *, accept_gap: bool = False
    ) -> AsyncIterator[Event]:
        cursor = _Cursor(from_event)
        while True:
            request = cursor.request(topic, accept_gap)
            (stream, metadata), _ = await self._retrying(
                lambda stub, remaining, request=request: _open_stream_async(stub, request),
                self.timeout,
            )
            cursor.opened(metadata)
            try:
                async for message in stream:
                    yield cursor.received(self.codec, message)
            except grpc.RpcError as error:
                if self._closed:
                    return
                step = after_stream_break(self._route, Failure.of(error))
                if isinstance(step, GiveUp):
                    raise
                await asyncio.sleep(step.seconds)
            finally:
                stream.cancel()

    async def close(self) -> None:
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
