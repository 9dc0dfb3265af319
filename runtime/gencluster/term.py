"""The active side of replication: one `Term` per term as active (one epoch).

- `submit` is the one call path of Client.Call/Cast and Admin.Merge: apply the request to the
  replica, hand the entry to the standby streams, wait until the `AckTracker` says the
  replication mode allows an answer, and check that this replica may still answer. It raises
  typed errors (`NotServing`, `CodecMismatch`, and the codec's `CodecError`/`MessageTooLarge`)
  that the services translate to gRPC status codes.
- `serve_standby` is the active's end of one `Peer.Replicate` stream: pipelined (up to
  `BATCHES_IN_FLIGHT` unacknowledged batches) with adaptive batching (`sender_step`): on an
  idle stream an entry leaves at once; under load a batch is held while calls keep arriving
  (at most `COALESCE_MAX`), because each message costs the active a gRPC write and an ack
  read per standby, which dominated its per-call cost in Sync mode. An empty batch is a
  heartbeat, sent after `heartbeat_interval` of silence. A standby whose position is outside
  the retained log (or diverged from it) gets `NeedSnapshot` and calls `Snapshot` again.
- `subscribe` starts an `EventFeed`: a Subscribe stream's events, each sent only once its
  entry is acknowledged (a subscriber never sees an event the next active may not have).
  Feeds are indexed by topic: an acknowledgement wakes only the feeds of the topics it made
  deliverable, and a woken feed reads only its new events (`machine.TopicEvents`), so 1,000
  subscribers of one topic cost O(new events) each per batch, not a rescan of every retained
  event. At most `max_subscribers` feeds run at once on a pod (`TooManySubscribers`,
  RESOURCE_EXHAUSTED).
- cumulative acks feed the `AckTracker`, the one record of each standby's position (the
  sender and the handover read it there); `on_change` tells the node when the in-sync set
  must be published in the Lease.
- degraded Sync (`relax_after`, partitionPolicy `Available` with Sync replication): when
  callers have waited `relax_after` seconds with no acknowledgement progress, the tracker is
  relaxed (`AckTracker.relax`) and answers without standbys until they are back
  (docs/partitions.md, "Available and Sync replication").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from gencluster import quarantine
from gencluster.acks import AckTracker
from gencluster.codec import CodecError
from gencluster.handler_watchdog import QUARANTINE_MARKS, HandlerWatchdog
from gencluster.journal import Journal, VolumeFailed
from gencluster.log import CatchUp, CommandKind, NeedSnapshot, StaleEpoch
from gencluster.machine import Event, Outcome
from gencluster.proto import gencluster_pb2 as pb
from gencluster.replica import Replica
from gencluster.replication import (
    BATCHES_IN_FLIGHT,
    COUNTERS,
    MAX_ENTRIES_PER_BATCH,
    SendStep,
    sender_step,
)
from gencluster.resume import LastEvent, delivers
from gencluster.wakeups import Notifier, set_within
from gencluster.wire import entry_to_message

log = logging.getLogger(__name__)


class NotServing(Exception):
    """This replica may not answer (UNAVAILABLE): it is not the serving active, or stopped
    being it while the caller waited. In the second case the outcome is unknown to the
    caller, who retries with the same request id (and gets the recorded reply if the entry
    survived in the new active's log)."""


class CodecMismatch(CodecError):
    """The request names a codec other than the cluster's (INVALID_ARGUMENT)."""


class TooManySubscribers(Exception):
    """The pod already serves `max_subscribers` Subscribe streams (RESOURCE_EXHAUSTED)."""


DEFAULT_MAX_SUBSCRIBERS = 4096
"""Concurrent Subscribe streams one active serves (docs/limits.md). Each costs a task, a
gRPC stream and its buffers; the bound keeps a client that opens streams in a loop from
exhausting the pod (and with it the Lease renewals that run on the same event loop)."""


@dataclass(eq=False)
class _SenderSignal:
    """One standby sender's wake-up: set on every ack, heartbeat tick and when the term or the
    stream ends, and on appends only while the sender `wants_entries` (not while its window
    is full: it could not send them anyway, and a wake-up per append and standby would cost
    a task switch per call)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    wants_entries: bool = True


class _Ticker:
    """Sets `event` every `interval` seconds (the sender's heartbeat clock): one timer per
    stream instead of a timeout (a task and a timer) around every wait."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval: float, event: asyncio.Event
    ) -> None:
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
class _StandbyStream:
    identity: str
    address: str
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
        codec_name: str,
        identity: str,
        may_serve: Callable[[], bool],
        on_change: Callable[[], None],
        journal: Journal | None = None,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        watchdog: HandlerWatchdog | None = None,
        relax_after: float | None = None,
    ) -> None:
        """`may_serve` is the node's check (accepting, and within the renew deadline under
        the Fenced policy), asked before a request is applied and again before its answer;
        `journal` (Sync mode with persistence): an answer also waits for its entry to be on
        this replica's disk; `relax_after` (Available policy, Sync mode; None: never): the
        longest callers wait without acknowledgement progress before the term answers
        without standbys (degraded Sync)."""
        self._journal = journal
        self.replica = replica
        self.tracker = tracker
        self.epoch = epoch
        self.heartbeat_interval = heartbeat_interval
        self._codec_name = codec_name
        self._not_serving = f"{identity} is not the serving active"
        self._may_serve = may_serve
        self._on_change = on_change
        self.closed = False
        self._senders: set[_SenderSignal] = set()
        self.acknowledged = Notifier()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_order = itertools.count()
        self._streams: dict[str, _StandbyStream] = {}
        self._last_batch: tuple[tuple[int, int, int], pb.ReplicateDown] | None = None
        self._watchdog = watchdog
        self.started_at = time.time()
        """Wall-clock start of the term: a request first attempted before it is suspect
        (`quarantine.is_suspect`)."""
        self._marked: set[str] = set()
        self.max_subscribers = max_subscribers
        self.subscribers = 0
        self._topic_listeners: dict[str, set[asyncio.Event]] = {}
        """Feeds that have read every retained event of their topic, by topic."""
        self._pending_topics: deque[tuple[int, str]] = deque()
        """(seq, topic) of each appended event not yet acknowledged, in seq order."""
        self._seq_listeners: list[tuple[int, int, asyncio.Event]] = []
        """Feeds waiting for an older event's entry (before this term) to be acknowledged."""
        self._loop = asyncio.get_running_loop()
        self.appended_at = self._loop.time()
        """When the newest entry was appended (loop clock): senders hold a batch while
        entries keep arriving (`sender_step`)."""
        self._relax_after = relax_after
        self._relax_timer: asyncio.TimerHandle | None = None
        self._stalled_at = 0
        """`acknowledged_seq` when the relax timer was armed: progress re-arms it."""
        self.degraded_at: float | None = None
        """Loop time at which the tracker relaxed, while it is degraded (else None)."""

    @property
    def standby_addresses(self) -> dict[str, str]:
        return {name: stream.address for name, stream in self._streams.items()}

    async def submit(
        self,
        kind: CommandKind,
        request_id: str,
        payload: bytes,
        codec_name: str = "",
        first_attempt: float = 0.0,
    ) -> tuple[Outcome, int]:
        """Apply one request, replicate it, and return its outcome and this term's epoch once
        the replication mode allows the answer (`RetryRefused`: see `Replica.submit`)."""
        if codec_name and codec_name != self._codec_name:
            raise CodecMismatch(
                f"payload encoded with {codec_name!r}, this cluster uses {self._codec_name!r}"
            )
        if self.closed or not self._may_serve():
            raise NotServing(self._not_serving)
        if quarantine.is_suspect(kind, request_id, first_attempt, self.started_at):
            await self._mark(kind, request_id, payload, first_attempt)
        watchdog = self._watchdog
        running = watchdog.started(request_id) if watchdog is not None else None
        try:
            submission = self.replica.submit(
                kind, request_id, payload,
                epoch=self.epoch, time=time.time(), seed=random.getrandbits(63),
                first_attempt=first_attempt, marked_here=request_id in self._marked,
            )
        except StaleEpoch as error:
            raise NotServing(str(error)) from None
        finally:
            if running is not None:
                watchdog.finished(running)  # type: ignore[union-attr]
            self._marked.discard(request_id)
        if submission.entry is not None:
            for event in submission.outcome.events:
                self._pending_topics.append((event.seq, event.topic))
            self._appended(submission.entry.seq)
        seq = submission.outcome.record.seq
        journal = self._journal
        if journal is not None and journal.durable_seq < seq:
            await self._durable(journal, seq)
        if self.tracker.acknowledged_seq < seq:
            # Waited for here rather than in a helper coroutine: this is every Sync call.
            if self.closed:
                raise NotServing(
                    "this replica is no longer active; retry with the same request id"
                )
            future: asyncio.Future[None] = self._loop.create_future()
            heapq.heappush(self._waiters, (seq, next(self._waiter_order), future))
            if self._relax_after is not None and self._relax_timer is None:
                self._arm_relax(self._relax_after)
            await future
        if self.closed or not self._may_serve():
            # Fenced between submit and answer (a SIGSTOP past the lease, a lost renewal):
            # the entry may not survive on the side that now holds the Lease, so the outcome
            # is unknown; the caller's retry with the same request id settles it exactly once.
            raise NotServing("fenced before the reply; retry with the same request id")
        return submission.outcome, self.epoch

    async def _mark(
        self, kind: CommandKind, request_id: str, payload: bytes, first_attempt: float
    ) -> None:
        """Replicate the quarantine of a suspect request before it runs (`quarantine`): wait
        until every connected standby (and, with persistence, this replica's disk) has it,
        so that if the handler takes this process down, the next active refuses the retry.
        A standby that does not acknowledge within a heartbeat interval is not waited for
        (the mark is a safeguard; the call must not hang on a slow standby)."""
        try:
            entry = self.replica.mark(
                kind, request_id, payload,
                epoch=self.epoch, time=time.time(), first_attempt=first_attempt,
            )
        except StaleEpoch as error:
            raise NotServing(str(error)) from None
        if entry is None:
            return
        self._marked.add(request_id)
        log.warning(
            "request %r was first sent before this term began: replicating its quarantine "
            "before running it (seq %d)", request_id, entry.seq,
        )
        QUARANTINE_MARKS.inc()
        self._appended(entry.seq)
        if self._journal is not None:
            await self._durable(self._journal, entry.seq)
        deadline = time.monotonic() + self.heartbeat_interval
        wake = self.acknowledged.listen()
        try:
            while not self.closed and any(
                progress.connected and progress.acked_seq < entry.seq
                for progress in self.tracker.standbys()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wake.clear()
                await set_within(wake, remaining)
        finally:
            self.acknowledged.forget(wake)
        if self.closed or not self._may_serve():
            self._marked.discard(request_id)
            raise NotServing("fenced before the call ran; retry with the same request id")

    def subscribe(
        self, topic: str, from_event: int | None, *, accept_gap: bool,
        last: LastEvent | None = None,
    ) -> EventFeed:
        """Start a Subscribe stream (raises `NotServing`, or `SubscriptionError` for a start
        this replica cannot serve); `last` is the resuming subscriber's last event."""
        if self.closed or not self._may_serve():
            raise NotServing(self._not_serving)
        if self.subscribers >= self.max_subscribers:
            raise TooManySubscribers(
                f"this pod serves {self.subscribers} subscriptions, the limit is "
                f"{self.max_subscribers}; retry later or close unused subscriptions"
            )
        return EventFeed(self, topic, from_event, accept_gap=accept_gap, last=last)

    def listen_topic(self, topic: str, wake: asyncio.Event) -> None:
        """Wake `wake` once an event of `topic` appended from now on is acknowledged (at once
        if the term is closed: the feed must see that)."""
        if self.closed:
            wake.set()
            return
        self._topic_listeners.setdefault(topic, set()).add(wake)

    def listen_seq(self, seq: int, wake: asyncio.Event) -> None:
        """Wake `wake` once entry `seq` is acknowledged (or the term is closed)."""
        if self.closed or self.tracker.acknowledged_seq >= seq:
            wake.set()
            return
        heapq.heappush(self._seq_listeners, (seq, next(self._waiter_order), wake))

    def forget_listener(self, topic: str, wake: asyncio.Event) -> None:
        listeners = self._topic_listeners.get(topic)
        if listeners is not None:
            listeners.discard(wake)
            if not listeners:
                del self._topic_listeners[topic]

    def _wake_feeds(self, acknowledged: int) -> None:
        """Wake the feeds that can now deliver: those of the topics whose events the
        acknowledgement covered (O(newly acknowledged events + their feeds)), and those
        waiting for an entry now acknowledged."""
        pending = self._pending_topics
        topics: set[str] = set()
        while pending and pending[0][0] <= acknowledged:
            topics.add(pending.popleft()[1])
        for topic in topics:
            for wake in self._topic_listeners.get(topic, ()):
                wake.set()
        listeners = self._seq_listeners
        while listeners and listeners[0][0] <= acknowledged:
            heapq.heappop(listeners)[2].set()

    @staticmethod
    async def _durable(journal: Journal, seq: int) -> None:
        """Wait for this replica's own disk; a failed volume makes the call UNAVAILABLE (the
        process stops, and the retry, with the same request id, finds the next active)."""
        try:
            await journal.wait_durable(seq)
        except VolumeFailed as failure:
            raise NotServing(f"{failure}; retry with the same request id") from None

    def _appended(self, seq: int) -> None:
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
        self._wake_feeds(acknowledged)
        self.acknowledged.notify()
        if self.degraded_at is not None and not self.tracker.degraded:
            log.warning(
                "standbys acknowledge again: synchronous replication restored after %.1fs "
                "(every acknowledged entry up to %d is on the in-sync standbys)",
                self._loop.time() - self.degraded_at, self.tracker.durable_seq,
            )
            self.degraded_at = None
        self._on_change()

    def degraded_seconds(self) -> float | None:
        """Seconds since the term started answering without standbys, while some answered
        entry is not yet on the in-sync standbys (degraded Sync); None otherwise."""
        if self.degraded_at is None:
            return None
        return self._loop.time() - self.degraded_at

    def _arm_relax(self, delay: float) -> None:
        self._stalled_at = self.tracker.acknowledged_seq
        self._relax_timer = self._loop.call_later(delay, self._relax_due)

    def _relax_due(self) -> None:
        """The relax timer: callers still wait and nothing was acknowledged for
        `relax_after` seconds, so answer without standbys (Available policy)."""
        self._relax_timer = None
        if self.closed or not self._waiters or self._relax_after is None:
            return
        if self.tracker.acknowledged_seq != self._stalled_at:
            self._arm_relax(self._relax_after)  # progress: measure again from now
            return
        waiting = len(self._waiters)
        if self.tracker.relax():
            if self.degraded_at is None:
                self.degraded_at = self._loop.time()
            log.warning(
                "no standby acknowledgement for %.1fs with %d calls waiting: acknowledging "
                "without standbys (partitionPolicy Available; entries after %d live only on "
                "this side until standbys catch up or the operator merges it)",
                self._relax_after, waiting, self.tracker.durable_seq,
            )
            self.tracker_changed()

    async def caught_up(self, standby: str, deadline: float) -> bool:
        """Wait until `standby` acknowledged every entry (True), or until `deadline`
        (monotonic) or the term's end (False). New entries may not arrive meanwhile: the
        caller stopped accepting writes first."""
        wake = self.acknowledged.listen()
        try:
            while self.tracker.acked_by(standby) < self.replica.log.last_seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return False
                wake.clear()
                await set_within(wake, remaining)
            return True
        finally:
            self.acknowledged.forget(wake)

    def close(self) -> None:
        """End the term: streams stop, waiting callers get `NotServing`."""
        self.closed = True
        if self._relax_timer is not None:
            self._relax_timer.cancel()
            self._relax_timer = None
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(
                    NotServing("this replica stopped being active; retry with the same request id")
                )
        self._waiters.clear()
        for listeners in self._topic_listeners.values():
            for wake in listeners:
                wake.set()
        for _, _, wake in self._seq_listeners:
            wake.set()
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
        position = self.replica.catch_up(hello.applied_seq, hello.applied_epoch)
        if isinstance(position, NeedSnapshot):
            log.info("standby %s needs a snapshot: %s", identity, position.reason)
            await self._send(None, write, self._need_snapshot(position))
            return
        previous = self._streams.get(identity)
        if previous is not None and previous.task is not None:
            previous.task.cancel()
        stream = _StandbyStream(identity, hello.address, asyncio.current_task())
        self._streams[identity] = stream
        self.tracker.connected(identity, hello.applied_seq)
        self.tracker_changed()
        log.info("standby %s connected at %d", identity, hello.applied_seq)
        signal = _SenderSignal()
        self._senders.add(signal)
        reader = asyncio.create_task(self._read_acks(identity, read, signal.wake))
        reader.add_done_callback(lambda _: signal.wake.set())
        ticker = _Ticker(self._loop, self.heartbeat_interval / 2, signal.wake)
        try:
            await self._send_entries(stream, signal, reader, hello.applied_seq, write)
        finally:
            ticker.cancel()
            self._senders.discard(signal)
            reader.cancel()
            if self._streams.get(identity) is stream:
                del self._streams[identity]
                self.tracker.disconnected(identity)
                if not self.closed:
                    self.tracker_changed()
                log.info("standby %s disconnected", identity)

    async def _send_entries(
        self,
        stream: _StandbyStream,
        signal: _SenderSignal,
        reader: asyncio.Task[None],
        sent: int,
        write: Callable[[pb.ReplicateDown], object],
    ) -> None:
        """Send what `sender_step` says until the term or the ack direction ends."""
        loop = self._loop
        wake = signal.wake
        sent_at = loop.time()
        in_flight: deque[int] = deque()  # last seq of each batch not yet acknowledged
        idle = True
        while not self.closed and not reader.done():
            # Cleared before deciding: a wake-up during the decision is not lost.
            wake.clear()
            acked = self.tracker.acked_by(stream.identity)
            while in_flight and in_flight[0] <= acked:
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
                signal.wants_entries = len(in_flight) < BATCHES_IN_FLIGHT
                await wake.wait()
                continue
            if step is SendStep.HOLD:
                await asyncio.sleep(decision.hold)
                continue
            if step is SendStep.HEARTBEAT:
                await self._send(stream, write, self._batch(sent, CatchUp(())))
                sent_at = loop.time()
                continue
            position = self.replica.catch_up(sent, limit=MAX_ENTRIES_PER_BATCH)
            if isinstance(position, NeedSnapshot):
                await self._send(stream, write, self._need_snapshot(position))
                return
            await self._send(stream, write, self._batch(sent, position))
            sent = position.entries[-1].seq if position.entries else sent
            sent_at = loop.time()
            in_flight.append(sent)
            idle = False

    @staticmethod
    async def _send(
        stream: _StandbyStream | None,
        write: Callable[[pb.ReplicateDown], object],
        message: pb.ReplicateDown,
    ) -> None:
        """Write and count one message; `stream.sending` tells `close` that this sender is
        stuck in a write (the only case in which it cancels the stream)."""
        COUNTERS.count(message)
        if stream is None:
            await write(message)  # type: ignore[misc]
            return
        stream.sending = True
        try:
            await write(message)  # type: ignore[misc]
        finally:
            stream.sending = False

    def _need_snapshot(self, position: NeedSnapshot) -> pb.ReplicateDown:
        return pb.ReplicateDown(
            need_snapshot=pb.NeedSnapshot(epoch=self.epoch, reason=position.reason)
        )

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
                server_version=self.replica.machine.server.version,
            )
        )
        self._last_batch = (key, message)
        return message

    async def _read_acks(
        self, identity: str, read: Callable[[], object], wake: asyncio.Event
    ) -> None:
        while True:
            message = await read()  # type: ignore[misc]
            if message is grpc.aio.EOF or message is None:
                return
            assert isinstance(message, pb.ReplicateUp)
            if message.WhichOneof("message") != "ack" or self.closed:
                continue
            self.tracker.acked(identity, min(message.ack.applied_seq, self.tracker.last_seq))
            wake.set()
            self.tracker_changed()


class EventFeed:
    """One Subscribe stream on the active: where it starts (`first_number`, sent to the client
    before any event so that it knows where to resume after a failover), then the events.

    It holds one of the term's `max_subscribers` places from construction until `events`
    ends or the feed is collected (a stream aborted before it iterated)."""

    def __init__(
        self, term: Term, topic: str, from_event: int | None, *, accept_gap: bool,
        last: LastEvent | None = None,
    ) -> None:
        backlog = term.replica.machine.backlog(
            topic, from_event, accept_gap=accept_gap, last=last
        )
        if from_event is None or backlog.renumbered:
            first = backlog.next_number
        else:
            first = max(from_event, 1)
        self.first_number = backlog.events[0].number if backlog.events else first
        self.renumbered = backlog.renumbered
        """The subscriber's last event was from another history: the stream marks its first
        event `renumbered` (`resume.plan_resume`)."""
        self._merged_side_of = backlog.merged_side_of
        self.epoch = term.epoch
        self._term = term
        self._topic = topic
        self._missed = backlog.missed
        term.subscribers += 1
        self._release = weakref.finalize(self, _release_place, term)

    async def events(self) -> AsyncIterator[tuple[Event, int]]:
        """(event, events missed just before it) as their entries are acknowledged; raises
        `NotServing` once the term ends (the client resubscribes at the new active).

        Each pass reads only the events after the last one delivered; with nothing left it
        waits for its topic's next acknowledged event, and an event whose entry is not yet
        acknowledged (one from before this term) for that entry."""
        term = self._term
        machine = term.replica.machine
        topic = self._topic
        next_number, missed = self.first_number, self._missed
        wake = asyncio.Event()
        try:
            while True:
                wake.clear()
                if term.closed:
                    raise NotServing("the active stepped down; resubscribe")
                acknowledged = term.tracker.acknowledged_seq
                blocked = 0
                for event in machine.events_from(topic, next_number).events:
                    if event.seq > acknowledged:
                        blocked = event.seq
                        break
                    next_number = event.number + 1
                    if not delivers(self._merged_side_of, event):
                        continue  # a merge's news for the other side's subscribers
                    yield event, missed
                    missed = 0
                if blocked:
                    term.listen_seq(blocked, wake)
                else:
                    term.listen_topic(topic, wake)
                await wake.wait()
                term.forget_listener(topic, wake)
        finally:
            term.forget_listener(topic, wake)
            self._release()


def _release_place(term: Term) -> None:
    term.subscribers -= 1
