"""The replicated state machine: applies log entries to the user's server, deterministically.

Every replica runs one `StateMachine` over the same sequence of entries and so holds the same
state, reply table and event log: time and randomness come from the entry, replies and events
are encoded by the same codec, and the bounded tables evict in entry order.

What applying an entry guarantees:

- A handler that raises anything, `BaseException` included (`SystemExit`, `KeyboardInterrupt`,
  `GeneratorExit`, a `CancelledError` it raised itself: handlers are synchronous, so no task
  cancellation can arrive inside one), or returns something malformed, or a reply/event the
  codec refuses, changes nothing: the old state object is kept, its events are dropped, and
  the outcome is a `HandlerError` that is recorded like a reply, so a retry gets the same
  error and the sequence never advances without a recorded outcome.
- The determinism guard (`GenServer.verify_state`): a new state holding a value the codec
  would not carry unchanged (`Codec.check_value`) fails the call the same way
  (`NotRoundTripping`), on every replica alike, so no replica keeps a state a snapshot could
  not reproduce.
- A request id already in the reply table is not applied again: the original outcome is
  returned, marked `duplicate`. The table (`replies.ReplyTable`) is bounded in time by the
  entries' own times and in bytes, identically on every replica; `refuse_retry` is how the
  active refuses a retry the table can no longer vouch for, before anything is logged.
- Events published by a successful handler get per-topic numbers 1, 2, 3, ... and are retained
  (bounded, oldest first) so a subscriber that reconnects can resume from its last number.
  A `merge` may publish too (with a `ctx`, if its signature takes one), each event for one
  side's subscribers or for all; the MERGE entries' seqs are kept (bounded) so that a
  subscriber of the merged side resumes where its news starts (`resume.plan_resume`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

from gencluster import quarantine, resume, wire
from gencluster.codec import Codec, CodecError
from gencluster.limits import bounded_error_message
from gencluster.log import (
    CommandKind,
    Event,
    HandlerError,
    LogEntry,
    ReplyRecord,
    Snapshot,
    check_next_entry,
)
from gencluster.replies import (
    DEFAULT_DEDUPLICATION_WINDOW_SECONDS,
    DEFAULT_MAX_REPLIES,
    DEFAULT_MAX_REPLY_BYTES,
    ReplyTable,
    RetryRefused,
    request_digest,
)
from gencluster.server import Context, GenServer, merge_takes_ctx

MAX_MERGE_MARKS = 16
"""MERGE entries remembered for resuming subscribers (the newest one is the one used)."""


@dataclass(frozen=True, slots=True)
class MachineLimits:
    """Bounds on the replicated bookkeeping (they are part of the replicated state): the
    reply table's window (seconds of entry time), byte and count bounds, and the events."""

    deduplication_window: float = DEFAULT_DEDUPLICATION_WINDOW_SECONDS
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    max_replies: int = DEFAULT_MAX_REPLIES
    max_events: int = 10_000
    verify_state_max_nodes: int = 20_000
    """The determinism guard checks at most this many values of each new state (about a
    millisecond per 5,000 here); larger states are checked up to there (docs/poison.md)."""

    def __post_init__(self) -> None:
        if (
            not self.deduplication_window > 0
            or self.max_reply_bytes < 1
            or self.max_replies < 1
            or self.max_events < 1
            or self.verify_state_max_nodes < 1
        ):
            raise ValueError(f"machine limits must be positive: {self}")

    def reply_table(self) -> ReplyTable:
        return ReplyTable(
            window=self.deduplication_window,
            max_bytes=self.max_reply_bytes,
            max_records=self.max_replies,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one command produced.

    `record` carries the reply or error (and the entry's seq); `events` the events published
    by this command (empty for a duplicate or an error); `duplicate` is True when the request
    id had already been applied and `record` is the original outcome.
    """

    record: ReplyRecord
    events: tuple[Event, ...] = ()
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.record.error is None


@dataclass(frozen=True, slots=True)
class EventRead:
    """Events of a topic from a requested number on.

    `first_available` is the oldest number still retained (or the next number when none is):
    a reader that asked for an older number has missed `first_available - from_event` events.
    """

    events: tuple[Event, ...]
    first_available: int
    next_number: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """Where a subscription starts: the retained events to send first, then live events
    numbered from `next_number` on. `missed` counts events skipped because they were no
    longer retained (only when the subscriber accepted a gap)."""

    events: tuple[Event, ...]
    missed: int
    next_number: int
    merged_side_of: int | None = None
    """The MERGE entry whose side-b events this stream delivers (`resume.ResumePlan`)."""
    renumbered: bool = False
    """The subscriber's last event was from another history (`resume.ResumePlan`)."""


@dataclass(frozen=True, slots=True)
class MergeRequest:
    """A decoded MERGE payload: the other side's state, its recent reply records and their
    table's completeness bound (the merged table vouches only for what both sides kept)."""

    state: Any
    replies: tuple[ReplyRecord, ...] = ()
    replies_complete_after: float = 0.0


class TopicEvents(Sequence[Event]):
    """The retained events of one topic, consecutive numbers oldest first, in a list with a
    moving start: reading from a number is an index computation and a slice, so a subscriber
    that asks for its new events costs O(new events), however many are retained (a deque
    would cost O(retained) to reach the middle). It is a read-only sequence too, so a
    resuming subscriber's plan (`resume.plan_resume`) reads it without a copy."""

    __slots__ = ("_events", "_start")

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._start = 0

    def __len__(self) -> int:
        return len(self._events) - self._start

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | Sequence[Event]:
        if isinstance(index, slice):
            return self._events[self._start :][index]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._events[self._start + index if index >= 0 else index]

    @property
    def first(self) -> Event:
        return self._events[self._start]

    def append(self, event: Event) -> None:
        self._events.append(event)

    def popleft(self) -> Event:
        event = self._events[self._start]
        self._start += 1
        if self._start > 1024 and self._start * 2 > len(self._events):
            # Amortised O(1): compact once half of the list is dropped events.
            del self._events[: self._start]
            self._start = 0
        return event

    def from_number(self, number: int) -> tuple[Event, ...]:
        """The retained events numbered `number` or later (all of them if it is older)."""
        if not len(self):
            return ()
        skip = max(0, number - self.first.number)
        return tuple(self._events[self._start + skip :])


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """A snapshot taken but not yet encoded: `header` holds everything but the state's bytes
    (positions, reply records and events, copied: small and bounded), `state` the user's state
    object itself. Encoding it later is consistent only if nothing mutates `state` meanwhile:
    `state_encoding.forked` encodes it in a child forked at once (copy-on-write)."""

    header: Snapshot
    state: Any
    codec: Codec

    def encoded(self) -> Snapshot:
        """Encode here, now (on the caller's thread)."""
        data = self.codec.encode(self.state, what="state", bounded=False)
        return dataclasses.replace(self.header, state=data)


class SubscriptionError(Exception):
    """A subscription that cannot start where asked (gRPC OUT_OF_RANGE)."""


class RestoreError(Exception):
    """A snapshot that this replica cannot load (codec mismatch, undecodable, code_change)."""


_NOT_DECODED: Any = object()


class StateMachine:
    """One replica's copy of the user's server and its replicated bookkeeping."""

    def __init__(
        self,
        server: GenServer,
        codec: Codec,
        state: Any,
        *,
        applied_seq: int = 0,
        applied_epoch: int = 0,
        limits: MachineLimits | None = None,
    ) -> None:
        self.server = server
        self.codec = codec
        self.limits = limits or MachineLimits()
        self._state = state
        self._applied_seq = applied_seq
        self._applied_epoch = applied_epoch
        self._replies = self.limits.reply_table()
        self._events: deque[Event] = deque()
        self._events_by_topic: dict[str, TopicEvents] = {}
        self._next_event: dict[str, int] = {}
        self._merge_seqs: deque[int] = deque(maxlen=MAX_MERGE_MARKS)
        self._merge_takes_ctx = merge_takes_ctx(server)

    @classmethod
    def from_init(
        cls, server: GenServer, codec: Codec, args: Any, limits: MachineLimits | None = None
    ) -> StateMachine:
        """A fresh machine whose state is `server.init(args)` (the first active's start)."""
        return cls(server, codec, server.init(args), limits=limits)

    @classmethod
    def restore(
        cls,
        server: GenServer,
        codec: Codec,
        snapshot: Snapshot,
        limits: MachineLimits | None = None,
    ) -> StateMachine:
        """A machine continuing from `snapshot`, upgrading its state with `code_change`."""
        if snapshot.codec != codec.name:
            raise RestoreError(
                f"snapshot is encoded with {snapshot.codec!r}, this replica uses {codec.name!r}"
            )
        try:
            state = codec.decode(snapshot.state, what="snapshot state", bounded=False)
        except CodecError as error:
            raise RestoreError(str(error)) from error
        if snapshot.server_version != server.version:
            try:
                state = server.code_change(snapshot.server_version, state)
            except BaseException as error:  # a handler's SystemExit too: see the module doc
                raise RestoreError(
                    f"code_change({snapshot.server_version}, state) of "
                    f"{type(server).__name__} version {server.version} raised "
                    f"{type(error).__name__}: {error}"
                ) from error
        machine = cls(
            server,
            codec,
            state,
            applied_seq=snapshot.applied_seq,
            applied_epoch=snapshot.applied_epoch,
            limits=limits,
        )
        machine._replies.restore(snapshot.replies, snapshot.replies_complete_after)
        for event in snapshot.events:
            machine._retain_event(event)
        machine._next_event.update(snapshot.next_event)
        machine._merge_seqs.extend(snapshot.merge_seqs)
        return machine

    @property
    def state(self) -> Any:
        return self._state

    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    @property
    def applied_epoch(self) -> int:
        return self._applied_epoch

    def reply_for(self, request_id: str) -> ReplyRecord | None:
        """The recorded outcome of `request_id`, if it is still in the table."""
        return self._replies.get(request_id)

    def refuse_retry(self, request_id: str, first_attempt: float, *, now: float) -> None:
        """Raise `RetryRefused` for a request (whose id the table does not hold) that may
        have been applied already (`replies.retry_refusal`). The active asks before it
        appends, against the replicated table, so any active decides the same way."""
        if not request_id:
            return
        reason = self._replies.refusal(first_attempt, now)
        if reason is not None:
            raise RetryRefused(reason)

    @property
    def replies(self) -> ReplyTable:
        return self._replies

    def decode_payload(self, kind: CommandKind, payload: bytes) -> Any:
        """Decode a command's payload (raises CodecError: the caller maps it to a clear error).

        Requests are bounded by the codec's size limit; a MERGE payload is a whole state and
        is not (it arrives as a chunked snapshot): it decodes to a `MergeRequest`.
        """
        if kind is CommandKind.MERGE or kind is CommandKind.RESTORE:
            try:
                state, replies, complete_after = wire.merge_payload_parts(payload)
            except wire.WireError as error:
                raise CodecError(str(error)) from error
            decoded = self.codec.decode(state, what="merged state", bounded=False)
            return MergeRequest(decoded, replies, complete_after)
        return self.codec.decode(payload, what="request")

    def is_read_only(self, request: Any) -> bool:
        """The server's read-only declaration; a hook that raises counts as not read-only."""
        try:
            return bool(self.server.is_read_only(request))
        except BaseException:
            return False

    def apply(self, entry: LogEntry, *, request: Any = _NOT_DECODED) -> Outcome:
        """Apply the next entry. `request` may pass the already-decoded payload (the active
        decoded it to check read-only and validity; decoding again would be wasted work)."""
        check_next_entry(entry, self._applied_seq, self._applied_epoch, holder="the applied")
        self._applied_seq = entry.seq
        self._applied_epoch = entry.epoch
        command = entry.command
        previous = self._replies.get(command.request_id)
        if command.kind is CommandKind.QUARANTINE:
            outcome = self._quarantine(entry, previous)
        elif previous is not None:
            outcome = Outcome(previous, duplicate=True)
        else:
            outcome = self._run(entry, request)
            if command.request_id:
                digest = request_digest(command.kind, command.payload)
                record = dataclasses.replace(outcome.record, digest=digest)
                outcome = dataclasses.replace(outcome, record=record)
                self._replies.remember(record)
        # After the lookup: an id the active found in the table is still found here.
        self._replies.expire(command.time)
        for event in outcome.events:
            self._retain_event(event)
        return outcome

    def quarantined(self, kind: CommandKind, request_id: str, payload: bytes) -> ReplyRecord | None:
        """The quarantine outcome to answer this request with instead of running it (None:
        not quarantined). O(1) unless a quarantine is recorded for the id."""
        if not request_id or self._replies.get(request_id) is not None:
            return None
        marker = self._replies.get(quarantine.marker_id(request_id))
        if marker is None:
            return None
        return quarantine.refusal(request_id, quarantine.digest(kind, payload), marker)

    def is_marked(self, request_id: str) -> bool:
        """Whether a quarantine entry for `request_id` was applied (and is still retained)."""
        return self._replies.get(quarantine.marker_id(request_id)) is not None

    def _quarantine(self, entry: LogEntry, previous: ReplyRecord | None) -> Outcome:
        """A QUARANTINE entry: record the quarantine beside the request's id, unless the
        request has an outcome already or is marked already (the first mark stays)."""
        command = entry.command
        key = quarantine.marker_id(command.request_id)
        existing = self._replies.get(key)
        if previous is not None:
            return Outcome(previous, duplicate=True)
        if existing is not None:
            return Outcome(existing, duplicate=True)
        record = quarantine.marker_record(
            command.request_id, command.payload.decode("ascii", "replace"), entry.seq,
            command.time,
        )
        self._replies.remember(record)
        return Outcome(record)

    def query(self, request: Any, *, request_id: str = "", time: float, seed: int) -> ReplyRecord:
        """Answer a read-only call against the current state, changing nothing."""
        ctx = Context(
            request_id=request_id, time=time, seed=seed, seq=self._applied_seq, read_only=True
        )
        seq = self._applied_seq
        state = self._state_for_handler()
        try:
            reply, _ = self._call(request, ctx, state)
            encoded = self.codec.encode(reply, what="reply")
        except BaseException as error:
            return ReplyRecord(request_id, seq, error=_handler_error(error))
        return ReplyRecord(request_id, seq, reply=encoded)

    def events_from(self, topic: str, from_event: int) -> EventRead:
        """Retained events of `topic` numbered `from_event` or later, oldest first."""
        next_number = self._next_event.get(topic, 1)
        retained = self._events_by_topic.get(topic)
        if retained is None or not retained:
            return EventRead((), next_number, next_number)
        return EventRead(retained.from_number(from_event), retained.first.number, next_number)

    def backlog(
        self, topic: str, from_event: int | None, *, accept_gap: bool,
        last: resume.LastEvent | None = None,
    ) -> Backlog:
        """Start a subscription to `topic` at event `from_event` (None: live events only).

        With `last` (the subscriber's last event, number `from_event - 1`), where the stream
        starts is `resume.plan_resume`'s decision: the next number on the same history, or
        where a subscriber of another (merged, or lost) history continues, `renumbered`.
        Without it, refuses a start beyond the topic's next number: a subscriber that saw
        events this replica does not have would otherwise skip the new events that reuse
        those numbers. The shell still sends only events whose entry is acknowledged, as for
        live ones, and only those `resume.delivers` to this stream.
        """
        plan: resume.ResumePlan | None = None
        if last is not None and from_event is not None:
            retained = self._events_by_topic.get(topic)
            events: Sequence[Event] = retained if retained is not None else ()
            plan = resume.plan_resume(
                events, self.next_event_number(topic), last, tuple(self._merge_seqs)
            )
            from_event = plan.from_number
        read = self.events_from(topic, 1 if from_event is None else from_event)
        if from_event is None:
            return Backlog((), 0, read.next_number)
        if from_event > read.next_number:
            raise SubscriptionError(
                f"topic {topic!r} has events up to {read.next_number - 1}; cannot resume "
                f"from {from_event}"
            )
        missed = max(0, read.first_available - max(from_event, 1))
        if missed and not accept_gap:
            raise SubscriptionError(
                f"events {from_event} to {read.first_available - 1} of topic {topic!r} are "
                "no longer retained; resubscribe accepting the gap, or from "
                f"{read.first_available}"
            )
        if plan is None:
            return Backlog(read.events, missed, read.next_number)
        return Backlog(
            read.events, missed, read.next_number, plan.merged_side_of, plan.renumbered
        )

    def next_event_number(self, topic: str) -> int:
        return self._next_event.get(topic, 1)

    def snapshot(self) -> Snapshot:
        """The whole replicated state, encoded here: O(size of the state). The shells encode
        large states off the event loop instead (`snapshot_parts`, `state_encoding`)."""
        return self.snapshot_parts().encoded()

    def snapshot_parts(self) -> StateSnapshot:
        """The snapshot at this point, its state not yet encoded: O(reply table + retained
        events), never O(state)."""
        header = Snapshot(
            applied_seq=self._applied_seq,
            applied_epoch=self._applied_epoch,
            server_version=self.server.version,
            codec=self.codec.name,
            state=b"",
            replies=self._replies.records(),
            events=tuple(self._events),
            next_event=dict(self._next_event),
            replies_complete_after=self._replies.complete_after,
            merge_seqs=tuple(self._merge_seqs),
        )
        return StateSnapshot(header, self._state, self.codec)

    def terminate(self, reason: str) -> HandlerError | None:
        """Run the server's `terminate`; its exception is reported, never raised."""
        try:
            self.server.terminate(reason, self._state)
        except BaseException as error:
            return _handler_error(error)
        return None

    def _run(self, entry: LogEntry, request: Any) -> Outcome:
        command = entry.command
        ctx = Context(
            request_id=command.request_id, time=command.time, seed=command.seed, seq=entry.seq,
            merging=command.kind is CommandKind.MERGE,
        )
        state = self._state_for_handler()
        try:
            if request is _NOT_DECODED:
                request = self.decode_payload(command.kind, command.payload)
            reply_bytes: bytes | None = None
            if command.kind is CommandKind.CALL:
                reply, new_state = self._call(request, ctx, state)
                reply_bytes = self.codec.encode(reply, what="reply")
            elif command.kind is CommandKind.CAST:
                new_state = self.server.handle_cast(request, ctx, state)
            elif command.kind is CommandKind.RESTORE:
                new_state = self._restored(request, entry.seq)
            else:
                new_state = self._merged(state, request, ctx)
            if command.kind is CommandKind.CALL or command.kind is CommandKind.CAST:
                self._verify(new_state)
            events = self._number_events(ctx, entry.seq, command.time, entry.epoch)
            if command.kind is CommandKind.MERGE:
                # Last: nothing after this can fail, so a merge that raised (or published an
                # event the codec refused) changed nothing.
                self._absorb_replies(request, entry.seq)
                self._merge_seqs.append(entry.seq)
        except BaseException as error:
            # BaseException: a handler's SystemExit or KeyboardInterrupt must not escape with
            # the sequence advanced and no outcome recorded (every replica would then hold a
            # different reply table, and the retry would take down the next active too).
            record = ReplyRecord(
                command.request_id, entry.seq, error=_handler_error(error), time=command.time
            )
            return Outcome(record)
        self._state = new_state
        record = ReplyRecord(command.request_id, entry.seq, reply=reply_bytes, time=command.time)
        return Outcome(record, events)

    def _merged(self, state: Any, request: MergeRequest, ctx: Context) -> Any:
        """The MERGE command: the server's `merge(winner_state, loser_state[, ctx])` (with the
        ctx if its signature takes one: it may publish, per side). `_run` then numbers its
        events and, last, lets the loser's reply records join the table (`_absorb_replies`):
        a `merge` that raises changes nothing."""
        if self._merge_takes_ctx:
            merged = self.server.merge(state, request.state, ctx)
        else:
            merged = self.server.merge(state, request.state)
        self._verify(merged)
        return merged

    def _restored(self, request: MergeRequest, seq: int) -> Any:
        """The RESTORE command (Admin.Restore with force): the backup's state replaces this
        one; its reply records join the table as a merge's do, so a call recorded in the
        backup and retried now is answered, not applied again."""
        self._absorb_replies(request, seq)
        return request.state

    def _absorb_replies(self, request: MergeRequest, seq: int) -> None:
        """Another history's reply records join the table, renumbered to the entry `seq` that
        makes them durable here, with their own times (so they expire as they would have
        there); request ids this replica answered itself keep its own reply. The table's
        completeness bound becomes the later of both."""
        for record in request.replies:
            if record.request_id and self._replies.get(record.request_id) is None:
                self._replies.remember(dataclasses.replace(record, seq=seq))
        self._replies.absorb_complete_after(request.replies_complete_after)

    def _verify(self, new_state: Any) -> None:
        """The determinism guard (when the server keeps `verify_state`): `new_state` must be
        made only of values the codec carries unchanged (`Codec.check_value`, at most
        `verify_state_max_nodes` of them). Raises `NotRoundTripping`, which fails the command
        before anything is kept; every replica runs the same check on the same state, so all
        decide alike."""
        if self.server.verify_state:
            self.codec.check_value(
                new_state, what="the new state", max_nodes=self.limits.verify_state_max_nodes
            )

    def _state_for_handler(self) -> Any:
        if self.server.copy_state_before_handling:
            return copy.deepcopy(self._state)
        return self._state

    def _call(self, request: Any, ctx: Context, state: Any) -> tuple[Any, Any]:
        result = self.server.handle_call(request, ctx, state)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(
                f"handle_call must return (reply, new_state), got {type(result).__name__}"
            )
        return result

    def _number_events(
        self, ctx: Context, seq: int, time: float, epoch: int
    ) -> tuple[Event, ...]:
        """Encode and number the published events; nothing is committed until all encode.

        A merge's events for one side come first, its events for everyone after them (each
        group in publication order): a subscriber whose last event is one for everyone has
        then received every event of that merge meant for its side, so resuming after it
        needs no side (`resume.plan_resume` learns a side only from a side's event)."""
        published = ctx.published
        if ctx.merging:
            published = sorted(published, key=lambda item: not item[2])  # stable
        numbers: dict[str, int] = {}
        events = []
        for topic, data, audience in published:
            number = numbers.get(topic, self._next_event.get(topic, 1))
            numbers[topic] = number + 1
            encoded = self.codec.encode(data, what=f"event on {topic!r}")
            events.append(Event(topic, number, seq, time, encoded, epoch, audience))
        self._next_event.update(numbers)
        return tuple(events)

    def _retain_event(self, event: Event) -> None:
        self._events.append(event)
        topic_events = self._events_by_topic.get(event.topic)
        if topic_events is None:
            topic_events = self._events_by_topic[event.topic] = TopicEvents()
        topic_events.append(event)
        while len(self._events) > self.limits.max_events:
            oldest = self._events.popleft()
            topic_events = self._events_by_topic[oldest.topic]
            topic_events.popleft()
            if not topic_events:
                del self._events_by_topic[oldest.topic]


def _handler_error(error: BaseException) -> HandlerError:
    message = bounded_error_message(str(error) or type(error).__name__)
    return HandlerError(type=type(error).__name__, message=message)
