"""Streaming the log from the active to its standbys, over `Peer.Replicate` and `Peer.Snapshot`.

Direction: **standbys connect to the active.** A standby learns who is active from the Lease
(the holder's pod IP, from the pod list), streams a snapshot if it holds no state, then opens
`Replicate` with a `Hello` giving its position. The active never needs to discover its
standbys, and failover needs no reconfiguration: when the stream breaks (the active died, or
handed the Lease over and closed its streams), the standby reads the Lease at once and either
takes it (it is the new holder, or the lease is free and it is in the in-sync set) or connects
to whoever holds it.

Active side (`Term`, one per term as active):

- one pipelined stream per standby (up to `BATCHES_IN_FLIGHT` unacknowledged batches) with
  adaptive batching (`sender_step`): on an idle stream an entry leaves at once; under load
  a batch is held while calls keep arriving (at most `COALESCE_MAX`), because each message
  costs the active a gRPC write and an ack read per standby, which dominated its per-call
  cost in Sync mode. An empty batch is a heartbeat, sent after `heartbeat_interval` of
  silence.
- cumulative acks feed the `AckTracker`; callers wait in `wait_acknowledged(seq)` until the
  tracker says an entry may be answered; `on_change` tells the node when the in-sync set must
  be published in the Lease.
- a standby whose position is outside the retained log (or diverged from it) gets
  `NeedSnapshot` and must call `Snapshot` again.

Standby side (`follow`): join by snapshot when needed, then apply entries in order, refuse any
batch from an epoch lower than the highest this replica has seen (a deposed active), and ack
after every batch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import grpc

from gencluster.acks import AckTracker
from gencluster.log import CatchUp, LogError, NeedSnapshot
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.replica import Replica
from gencluster.wellknown import PEER_TOKEN_METADATA
from gencluster.wire import entry_from_message, entry_to_message, snapshot_from_chunks

if TYPE_CHECKING:
    from gencluster.node import Node

log = logging.getLogger(__name__)

MAX_ENTRIES_PER_BATCH = 2000
"""Upper bound of one EntryBatch, so catch-up after a long disconnect stays in small messages."""

BATCHES_IN_FLIGHT = 2
"""Unacknowledged batches per standby before the sender waits: enough to keep the stream busy
(pipelining), few enough that entries arriving under load accumulate into large batches
instead of costing one gRPC message (and one ack) each."""

COALESCE_GAP = 0.001
"""Under load, a batch is held while entries keep arriving less than this apart (seconds):
calls released by the last ack come back from their clients in a burst, which then leaves
as one batch instead of several."""

COALESCE_MAX = 0.005
"""Longest a loaded sender holds a batch (seconds since its previous batch): the most
latency batching adds to a call. Each message costs the active a gRPC write and an ack read
per standby (a few hundred microseconds of its CPU on the 2-core bench machine, where 1.2
messages per call were the largest part of its per-call cost); holding up to 5 ms brought
that to 0.12-0.2 messages per call at 64 calls in flight."""

GRPC_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
"""Peer channels: keepalive notices a silent peer; large messages for catch-up batches."""


@dataclass
class ReplicationCounters:
    """What this process wrote as active on `Replicate` streams, over all terms and standbys.

    Exposed as Prometheus counters (run.py) so "per-call cost O(size of the change), never
    O(size of the state)" can be measured from outside (bench/replication.py) without a relay
    on the socket. Sizes are protobuf message sizes (`ByteSize`), not counting HTTP/2 framing.
    """

    bytes_sent: int = 0
    messages_sent: int = 0
    entries_sent: int = 0

    def count(self, message: pb.ReplicateDown) -> None:
        self.bytes_sent += message.ByteSize()
        self.messages_sent += 1
        if message.WhichOneof("message") == "entries":
            self.entries_sent += len(message.entries.entries)


COUNTERS = ReplicationCounters()
"""Process-wide: one node per `gencluster run` process, and counters must survive terms."""


class NotActive(Exception):
    """This replica stopped being active while a caller waited: the outcome is unknown to the
    caller, who retries with the same request id (and gets the recorded reply if it was
    applied by the new active's log)."""


class StaleEpochRejected(Exception):
    """A peer message from an epoch below the highest this replica has seen."""


class Notifier:
    """Wakes every listener at once (asyncio.Event per listener, so none clears another's)."""

    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    def listen(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        self._events.discard(event)

    def notify(self) -> None:
        for event in self._events:
            event.set()


@dataclass(eq=False)
class StreamProgress:
    """What one standby acknowledged on its stream, and the sender's wake-up: set on every
    ack, heartbeat tick and when the term or the stream ends, and on appends only while the
    sender `wants_entries` (not while its window is full: it could not send them anyway, and
    a wake-up per append and standby would cost a task switch per call)."""

    acked: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    wants_entries: bool = True


class SendStep(Enum):
    SEND = "send"
    HOLD = "hold"
    HEARTBEAT = "heartbeat"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class SenderDecision:
    step: SendStep
    hold: float = 0.0
    """HOLD: seconds to let pass before deciding again."""


def sender_step(
    *,
    pending: bool,
    in_flight: int,
    window: int,
    idle: bool,
    since_sent: float,
    since_append: float,
    heartbeat_interval: float,
    gap: float = COALESCE_GAP,
    max_hold: float = COALESCE_MAX,
) -> SenderDecision:
    """What one standby's sender does next (adaptive batching, like Nagle's algorithm).

    - `window` batches unacknowledged: WAIT for an ack (entries accumulate meanwhile).
    - entries `pending` on a stream that was `idle` (nothing in flight or pending when it
      last waited): SEND at once, so a lone call pays no batching delay.
    - entries pending under load: SEND once arrivals paused (no append for `gap`) or the
      batch is `max_hold` old (`since_sent`); until then HOLD, so that calls still arriving
      join this batch. Every message costs the active a gRPC write and an ack read per
      standby, the largest part of its per-call cost under load, so fewer, larger batches
      are what makes Sync replication cheap; `max_hold` bounds the latency this adds.
    - nothing pending for `heartbeat_interval`: HEARTBEAT (an empty batch); otherwise WAIT.
    """
    if in_flight >= window:
        return SenderDecision(SendStep.WAIT)
    if pending:
        if idle or since_sent >= max_hold or since_append >= gap:
            return SenderDecision(SendStep.SEND)
        return SenderDecision(SendStep.HOLD, min(gap - since_append, max_hold - since_sent))
    if since_sent >= heartbeat_interval:
        return SenderDecision(SendStep.HEARTBEAT)
    return SenderDecision(SendStep.WAIT)


class _Ticker:
    """Sets `event` every `interval` seconds (the sender's heartbeat clock): one timer per
    stream instead of a timeout (a task and a timer) around every wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, event: asyncio.Event):
        self._loop = loop
        self._interval = interval
        self._event = event
        self._handle = loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        self._event.set()
        self._handle = self._loop.call_later(self._interval, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


@dataclass
class StandbyStream:
    identity: str
    address: str
    generation: int
    task: asyncio.Task[None] | None
    sending: bool = False


class Term:
    """The active's replication machinery for one term (one epoch)."""

    def __init__(
        self,
        *,
        replica: Replica,
        tracker: AckTracker,
        epoch: int,
        heartbeat_interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self.replica = replica
        self.tracker = tracker
        self.epoch = epoch
        self.heartbeat_interval = heartbeat_interval
        self._on_change = on_change
        self.closed = False
        self._senders: set[StreamProgress] = set()
        self.acknowledged = Notifier()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_order = itertools.count()
        self._streams: dict[str, StandbyStream] = {}
        self._generations = itertools.count(1)
        self._last_batch: tuple[tuple[int, int, int], pb.ReplicateDown] | None = None
        self._loop = asyncio.get_running_loop()
        self.appended_at = self._loop.time()
        """When the newest entry was appended (loop clock): senders hold a batch while
        entries keep arriving (`sender_step`)."""

    @property
    def standby_addresses(self) -> dict[str, str]:
        return {name: stream.address for name, stream in self._streams.items()}

    def appended(self, seq: int) -> None:
        """A new entry is in the log: wake the streams and update the tracker."""
        self.appended_at = self._loop.time()
        self.tracker.appended(seq)
        for sender in self._senders:
            if sender.wants_entries:
                sender.wake.set()
        self.tracker_changed()

    def tracker_changed(self) -> None:
        acknowledged = self.tracker.acknowledged_seq
        while self._waiters and self._waiters[0][0] <= acknowledged:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
        self.acknowledged.notify()
        self._on_change()

    async def wait_acknowledged(self, seq: int) -> None:
        """Return once entry `seq` may be answered; `NotActive` if the term ends first."""
        if self.tracker.acknowledged_seq >= seq:
            return
        if self.closed:
            raise NotActive("this replica is no longer active")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._waiter_order), future))
        await future

    def close(self) -> None:
        """End the term: streams stop, waiting callers get `NotActive`."""
        self.closed = True
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(NotActive("this replica stopped being active"))
        self._waiters.clear()
        for sender in self._senders:
            sender.wake.set()
        self.acknowledged.notify()
        for stream in self._streams.values():
            # A sender that is not writing sees `closed` when it wakes and returns, so its
            # standby gets the stream's end (OK) at once and looks for the new active. Only
            # one stuck in a write (a standby that stopped reading) is cancelled: a cancelled
            # handler's RPC was seen to stay open on the standby's side until its silence
            # limit, which delayed a graceful handover by seconds.
            if stream.task is not None and stream.sending:
                stream.task.cancel()

    async def serve_standby(
        self,
        hello: pb.Hello,
        read: Callable[[], object],
        write: Callable[[pb.ReplicateDown], object],
    ) -> None:
        """The active's side of one `Replicate` stream, after its Hello was checked."""
        identity = hello.identity

        stream: StandbyStream | None = None

        async def send(message: pb.ReplicateDown) -> None:
            COUNTERS.count(message)
            if stream is None:
                await write(message)
                return
            stream.sending = True
            try:
                await write(message)
            finally:
                stream.sending = False

        position = self.replica.catch_up(hello.applied_seq, hello.applied_epoch)
        if isinstance(position, NeedSnapshot):
            log.info("standby %s needs a snapshot: %s", identity, position.reason)
            await send(
                pb.ReplicateDown(
                    need_snapshot=pb.NeedSnapshot(epoch=self.epoch, reason=position.reason)
                )
            )
            return
        previous = self._streams.get(identity)
        if previous is not None and previous.task is not None:
            previous.task.cancel()
        stream = StandbyStream(
            identity, hello.address, next(self._generations), asyncio.current_task()
        )
        self._streams[identity] = stream
        self.tracker.connected(identity, hello.applied_seq)
        self.tracker_changed()
        log.info("standby %s connected at %d", identity, hello.applied_seq)
        progress = StreamProgress(acked=hello.applied_seq)
        wake = progress.wake
        self._senders.add(progress)
        reader = asyncio.create_task(self._read_acks(identity, read, progress))
        reader.add_done_callback(lambda _: wake.set())
        loop = asyncio.get_running_loop()
        ticker = _Ticker(loop, self.heartbeat_interval / 2, wake)
        sent = hello.applied_seq
        sent_at = loop.time()
        in_flight: deque[int] = deque()  # last seq of each batch not yet acknowledged
        idle = True
        try:
            while not self.closed and not reader.done():
                # Cleared before deciding: a wake-up during the decision is not lost.
                wake.clear()
                while in_flight and in_flight[0] <= progress.acked:
                    in_flight.popleft()
                now = loop.time()
                decision = sender_step(
                    pending=self.replica.log.last_seq > sent,
                    in_flight=len(in_flight),
                    window=BATCHES_IN_FLIGHT,
                    idle=idle,
                    since_sent=now - sent_at,
                    since_append=now - self.appended_at,
                    heartbeat_interval=self.heartbeat_interval,
                )
                step = decision.step
                if step is SendStep.WAIT:
                    idle = not in_flight and self.replica.log.last_seq <= sent
                    progress.wants_entries = len(in_flight) < BATCHES_IN_FLIGHT
                    await wake.wait()
                    continue
                if step is SendStep.HOLD:
                    await asyncio.sleep(decision.hold)
                    continue
                if step is SendStep.HEARTBEAT:
                    await send(self._batch(sent, CatchUp(())))
                    sent_at = loop.time()
                    continue
                position = self.replica.catch_up(sent, limit=MAX_ENTRIES_PER_BATCH)
                if isinstance(position, NeedSnapshot):
                    await send(
                        pb.ReplicateDown(
                            need_snapshot=pb.NeedSnapshot(epoch=self.epoch, reason=position.reason)
                        )
                    )
                    return
                assert isinstance(position, CatchUp)
                await send(self._batch(sent, position))
                sent = position.entries[-1].seq if position.entries else sent
                sent_at = loop.time()
                in_flight.append(sent)
                idle = False
        finally:
            ticker.cancel()
            self._senders.discard(progress)
            reader.cancel()
            current = self._streams.get(identity)
            if current is stream:
                del self._streams[identity]
                self.tracker.disconnected(identity)
                if not self.closed:
                    self.tracker_changed()
                log.info("standby %s disconnected", identity)

    def _batch(self, after: int, position: CatchUp) -> pb.ReplicateDown:
        """The EntryBatch of `position` (the entries after `after`), built once per position:
        both standbys usually ask for the same batch, and the second need not convert the
        same entries to protobuf again."""
        key = (after, len(position.entries), self.replica.log.last_seq)
        cached = self._last_batch
        if cached is not None and cached[0] == key:
            return cached[1]
        message = pb.ReplicateDown(
            entries=pb.EntryBatch(
                epoch=self.epoch,
                entries=[entry_to_message(entry) for entry in position.entries],
                last_seq=key[2],
            )
        )
        self._last_batch = (key, message)
        return message

    async def _read_acks(
        self, identity: str, read: Callable[[], object], progress: StreamProgress
    ) -> None:
        while True:
            message = await read()  # type: ignore[misc]
            if message is grpc.aio.EOF or message is None:
                return
            assert isinstance(message, pb.ReplicateUp)
            if message.WhichOneof("message") != "ack" or self.closed:
                continue
            seq = min(message.ack.applied_seq, self.tracker.last_seq)
            progress.acked = max(progress.acked, seq)
            progress.wake.set()
            self.tracker.acked(identity, seq)
            self.tracker_changed()


def peer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that authenticates a Peer or Admin call."""
    return ((PEER_TOKEN_METADATA, token),)


async def follow(node: Node, address: str) -> None:
    """Replicate from the active at `address` until the stream ends.

    Returns normally when the stream ends or the active asks for a snapshot (the caller
    reconnects); raises `StaleEpochRejected` for a deposed active's stream.
    """
    metadata = peer_metadata(node.config.peer_token)
    silence_limit = node.heartbeat_interval * 4
    async with grpc.aio.insecure_channel(address, options=GRPC_CHANNEL_OPTIONS) as channel:
        # A paused (SIGSTOPped) active still accepts TCP connections in the kernel but never
        # completes the HTTP/2 handshake: without this bound the first write waits for gRPC's
        # 20 s connect timeout, and meanwhile this standby neither follows the new Lease
        # holder nor acknowledges its entries (Sync writes stall for those 20 s).
        try:
            # asyncio.timeout, not wait_for: this task is cancelled by `_acquire`, and 3.11's
            # wait_for can swallow that cancellation (node.set_within).
            async with asyncio.timeout(silence_limit):
                await _connected(channel)
        except TimeoutError:
            # Raised, not returned: the follow loop then also forgets the pods' addresses,
            # since the holder may be a re-created pod with a new IP (returning kept retrying
            # the old one: a Sync cluster stalled after a graceful handover).
            raise ConnectionError(
                f"no HTTP/2 connection to {address} within {silence_limit:.1f}s"
            ) from None
        stub = pb_grpc.PeerStub(channel)
        if node.replica is None or node.needs_snapshot:
            await join(node, stub, metadata)
        replica = node.replica
        assert replica is not None
        call = stub.Replicate(metadata=metadata)
        applied = asyncio.Event()
        acker = asyncio.create_task(_send_acks(node, replica, call, applied))
        try:
            await call.write(
                pb.ReplicateUp(
                    hello=pb.Hello(
                        identity=node.config.identity,
                        address=node.config.advertise_address,
                        epoch=node.epoch,
                        applied_seq=replica.applied_seq,
                        applied_epoch=replica.applied_epoch,
                    )
                )
            )
            # The active sends at least a heartbeat every heartbeat_interval: after four of
            # silence the stream is dead. One timer for the whole stream, pushed back (at
            # most every quarter limit) as messages arrive, rather than a timeout (a task and
            # a timer) around every read: the silence tolerated is 1 to 1.25 limits.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + silence_limit * 1.25
            async with asyncio.timeout_at(deadline) as silence:
                while node.following:
                    message = await call.read()
                    now = loop.time()
                    if now + silence_limit > deadline:
                        deadline = now + silence_limit * 1.25
                        silence.reschedule(deadline)
                    if message is grpc.aio.EOF:
                        return
                    kind = message.WhichOneof("message")
                    if kind == "need_snapshot":
                        log.info("the active asks for a snapshot: %s", message.need_snapshot.reason)
                        node.needs_snapshot = True
                        return
                    batch = message.entries
                    if batch.epoch < node.epoch:
                        raise StaleEpochRejected(
                            f"replication from {address} at epoch {batch.epoch} refused: this "
                            f"replica has seen epoch {node.epoch}"
                        )
                    node.epoch = batch.epoch
                    try:
                        for entry in batch.entries:
                            replica.receive(entry_from_message(entry))
                    except LogError as error:
                        log.warning("entry refused (%s); joining again by snapshot", error)
                        node.needs_snapshot = True
                        return
                    node.standby_caught_up(replica.applied_seq >= batch.last_seq)
                    applied.set()
                    if acker.done():
                        acker.result()  # the ack direction failed: end this stream
                        return
        finally:
            acker.cancel()
            call.cancel()


async def _connected(channel: grpc.aio.Channel) -> None:
    """Return once `channel` is connected; raise `ConnectionError` at the first failed
    attempt (a refused connection: nobody listens there any more, typically the old address
    of a re-created pod), so the follow loop looks the holder's address up again at once
    instead of waiting out the silence limit (which delayed Sync writes on the new active
    by seconds after a handover)."""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise ConnectionError("connection failed")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


async def _send_acks(
    node: Node, replica: Replica, call: grpc.aio.StreamStreamCall, applied: asyncio.Event
) -> None:
    """Acknowledge cumulatively, off the receiving path: batches applied while an ack is
    being written are covered by the next one (one ack for many batches under load)."""
    acknowledged = replica.applied_seq
    while True:
        await applied.wait()
        applied.clear()
        seq = replica.applied_seq
        if seq != acknowledged:
            await call.write(pb.ReplicateUp(ack=pb.Ack(epoch=node.epoch, applied_seq=seq)))
            acknowledged = seq


async def join(node: Node, stub: pb_grpc.PeerStub, metadata: tuple[tuple[str, str], ...]) -> None:
    """Stream a snapshot from the active and make it this replica's state."""
    node.joining()
    chunks = []
    request = pb.SnapshotRequest(identity=node.config.identity, epoch=node.epoch)
    async for chunk in stub.Snapshot(request, metadata=metadata):
        chunks.append(chunk)
    snapshot, epoch = snapshot_from_chunks(chunks)
    if epoch < node.epoch:
        raise StaleEpochRejected(
            f"snapshot at epoch {epoch} refused: this replica has seen epoch {node.epoch}"
        )
    node.epoch = epoch
    node.replica = Replica.from_snapshot(
        node.server, node.codec, snapshot, retention=node.retention
    )
    node.needs_snapshot = False
    log.info("joined by snapshot at seq %d (epoch %d)", snapshot.applied_seq, epoch)
