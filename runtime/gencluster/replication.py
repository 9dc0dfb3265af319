"""Streaming the log from the active to its standbys, over `Peer.Replicate` and `Peer.Snapshot`.

Direction: **standbys connect to the active.** A standby learns who is active from the Lease
(the holder's pod IP, from the pod list), streams a snapshot if it holds no state, then opens
`Replicate` with a `Hello` giving its position. The active never needs to discover its
standbys, and failover needs no reconfiguration: when the stream breaks (the active died, or
handed the Lease over and closed its streams), the standby reads the Lease at once and either
takes it (it is the new holder, or the lease is free and it is in the in-sync set) or connects
to whoever holds it.

Active side (`Term`, one per term as active):

- one pipelined stream per standby: entries are sent as soon as they are appended, without
  waiting for acks; whatever accumulated while the previous batch was being written goes out
  as the next batch (adaptive batching: one entry per message when idle, large batches under
  load). An empty batch is a heartbeat, sent after `heartbeat_interval` of silence.
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
import contextlib
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class StreamProgress:
    """What one standby acknowledged on its stream, and a wake-up for the sender."""

    acked: int
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class StandbyStream:
    identity: str
    address: str
    generation: int
    task: asyncio.Task[None] | None


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
        self.entries_appended = Notifier()
        self.acknowledged = Notifier()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_order = itertools.count()
        self._streams: dict[str, StandbyStream] = {}
        self._generations = itertools.count(1)

    @property
    def standby_addresses(self) -> dict[str, str]:
        return {name: stream.address for name, stream in self._streams.items()}

    def appended(self, seq: int) -> None:
        """A new entry is in the log: wake the streams and update the tracker."""
        self.tracker.appended(seq)
        self.entries_appended.notify()
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
        self.entries_appended.notify()
        self.acknowledged.notify()
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()

    async def serve_standby(
        self,
        hello: pb.Hello,
        read: Callable[[], object],
        write: Callable[[pb.ReplicateDown], object],
    ) -> None:
        """The active's side of one `Replicate` stream, after its Hello was checked."""
        identity = hello.identity

        async def send(message: pb.ReplicateDown) -> None:
            COUNTERS.count(message)
            await write(message)

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
        reader = asyncio.create_task(self._read_acks(identity, read, progress))
        wake = self.entries_appended.listen()
        sent = hello.applied_seq
        in_flight: deque[int] = deque()  # last seq of each batch not yet acknowledged
        try:
            while not self.closed and not reader.done():
                while in_flight and in_flight[0] <= progress.acked:
                    in_flight.popleft()
                if len(in_flight) >= BATCHES_IN_FLIGHT:
                    # Adaptive batching: while the window is full, new entries accumulate
                    # and leave as one batch when an ack frees a slot.
                    progress.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(progress.changed.wait(), self.heartbeat_interval)
                    continue
                wake.clear()
                position = self.replica.catch_up(sent, limit=MAX_ENTRIES_PER_BATCH)
                if isinstance(position, NeedSnapshot):
                    await send(
                        pb.ReplicateDown(
                            need_snapshot=pb.NeedSnapshot(epoch=self.epoch, reason=position.reason)
                        )
                    )
                    return
                assert isinstance(position, CatchUp)
                if position.entries:
                    await send(self._batch(position))
                    sent = position.entries[-1].seq
                    in_flight.append(sent)
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), self.heartbeat_interval)
                except TimeoutError:
                    await send(self._batch(CatchUp(())))
        finally:
            self.entries_appended.forget(wake)
            reader.cancel()
            current = self._streams.get(identity)
            if current is stream:
                del self._streams[identity]
                self.tracker.disconnected(identity)
                if not self.closed:
                    self.tracker_changed()
                log.info("standby %s disconnected", identity)

    def _batch(self, position: CatchUp) -> pb.ReplicateDown:
        return pb.ReplicateDown(
            entries=pb.EntryBatch(
                epoch=self.epoch,
                entries=[entry_to_message(entry) for entry in position.entries],
                last_seq=self.replica.log.last_seq,
            )
        )

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
            progress.changed.set()
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
    async with grpc.aio.insecure_channel(address, options=GRPC_CHANNEL_OPTIONS) as channel:
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
            silence_limit = node.heartbeat_interval * 4
            while node.following:
                message = await asyncio.wait_for(call.read(), silence_limit)
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
