"""The state machine: deterministic application, errors that change nothing, exactly-once,
events for subscriptions, merge entries, snapshots."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gencluster import GenServer
from gencluster.codec import JsonCodec, MsgpackCodec
from gencluster.log import (
    Command,
    CommandKind,
    HandlerError,
    LogEntry,
    OutOfOrder,
    ReplyRecord,
    Snapshot,
    StaleEpoch,
)
from gencluster.machine import (
    Backlog,
    MachineLimits,
    RestoreError,
    StateMachine,
    SubscriptionError,
)
from gencluster.wire import merge_payload
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

CODEC = JsonCodec()


class Feeder:
    """Builds consecutive log entries for a machine, like an active would."""

    def __init__(self, epoch: int = 1) -> None:
        self.seq = 0
        self.epoch = epoch

    def entry(
        self,
        payload: Any,
        *,
        kind: CommandKind = CommandKind.CALL,
        request_id: str | None = None,
        time: float = 1000.0,
        seed: int = 1,
    ) -> LogEntry:
        self.seq += 1
        rid = f"req-{self.seq}" if request_id is None else request_id
        encoded = CODEC.encode(payload)
        if kind is CommandKind.MERGE:
            encoded = merge_bytes(encoded)
        return LogEntry(self.seq, self.epoch, Command(kind, rid, encoded, time, seed))


def merge_bytes(state: bytes, replies: tuple[ReplyRecord, ...] = ()) -> bytes:
    """A MERGE entry's payload for the other side's encoded `state` and reply table, as the
    winner's Admin.Merge builds it from the exported snapshot."""
    return merge_payload(Snapshot(applied_seq=1, applied_epoch=1, server_version=Ledger.version,
                                  codec=CODEC.name, state=state, replies=replies))


def machine(limits: MachineLimits | None = None, args: Any = 0) -> StateMachine:
    return StateMachine.from_init(Ledger(), CODEC, args, limits)


def reply_of(outcome: Any) -> Any:
    return json.loads(outcome.record.reply)


def test_a_call_replies_and_changes_the_state() -> None:
    m, feed = machine(), Feeder()
    outcome = m.apply(feed.entry(["add", 5]))
    assert outcome.ok and not outcome.duplicate
    assert reply_of(outcome) == 5
    assert m.state == {"total": 5, "items": []}
    assert (m.applied_seq, m.applied_epoch, outcome.record.seq) == (1, 1, 1)


def test_a_cast_changes_the_state_without_a_reply() -> None:
    m, feed = machine(), Feeder()
    outcome = m.apply(feed.entry("hello", kind=CommandKind.CAST))
    assert outcome.ok and outcome.record.reply is None
    assert m.state["items"] == ["hello"]


def test_time_and_randomness_come_from_the_entry() -> None:
    first, second = machine(), machine()
    entry = Feeder().entry(["stamp"], request_id="abc", time=1234.5, seed=99)
    a, b = reply_of(first.apply(entry)), reply_of(second.apply(entry))
    assert a == b
    assert a[0] == 1234.5 and a[2:] == ["abc", 1]
    other_seed = Feeder().entry(["stamp"], seed=100)
    assert reply_of(machine().apply(other_seed))[1] != a[1]


@pytest.mark.parametrize(
    ("request_", "error_type", "message"),
    [
        (["fail"], "ValueError", "boom"),
        (["nope"], "UnknownRequest", "Ledger has no handler for call ['nope']"),
        (["bad_return"], "TypeError", "handle_call must return (reply, new_state), got str"),
        (["unencodable"], "CodecError", "cannot encode reply as json"),
        (["bad_event"], "CodecError", "cannot encode event on 'totals' as json"),
    ],
)
def test_a_failing_call_changes_nothing_and_says_why(
    request_: Any, error_type: str, message: str
) -> None:
    m, feed = machine(), Feeder()
    m.apply(feed.entry(["add", 1]))
    before = m.state
    outcome = m.apply(feed.entry(request_))
    assert not outcome.ok
    assert outcome.record.error is not None
    assert outcome.record.error.type == error_type
    assert message in outcome.record.error.message
    assert m.state is before
    assert outcome.events == ()
    assert m.next_event_number("totals") == 2
    assert m.applied_seq == 2


def test_a_failing_cast_changes_nothing() -> None:
    m, feed = machine(), Feeder()
    outcome = m.apply(feed.entry(["fail"], kind=CommandKind.CAST))
    assert outcome.record.error == HandlerError("KeyError", "'cast failed'")
    assert m.state == {"total": 0, "items": []}


def test_an_undecodable_payload_in_an_entry_is_an_error_reply() -> None:
    m = machine()
    entry = LogEntry(1, 1, Command(CommandKind.CALL, "r", b"{broken", 1.0, 1))
    outcome = m.apply(entry)
    assert outcome.record.error is not None
    assert outcome.record.error.type == "CodecError"
    assert m.applied_seq == 1


def test_copy_state_before_handling_undoes_in_place_changes() -> None:
    class Isolated(Ledger):
        copy_state_before_handling = True

    shared, isolated = machine(), StateMachine.from_init(Isolated(), CODEC, 0)
    entry = Feeder().entry(["mutate_then_fail"])
    shared.apply(entry)
    isolated.apply(entry)
    assert shared.state["items"] == ["x"]  # documented: in-place changes are not undone
    assert isolated.state["items"] == []


def test_a_retried_request_id_is_applied_once_and_gets_the_original_reply() -> None:
    m, feed = machine(), Feeder()
    first = m.apply(feed.entry(["add", 5], request_id="same"))
    retry = m.apply(feed.entry(["add", 5], request_id="same"))
    assert retry.duplicate
    assert retry.record == first.record
    assert retry.events == ()
    assert m.state["total"] == 5
    assert m.applied_seq == 2
    assert m.reply_for("same") == first.record


def test_a_retried_failure_gets_the_same_error() -> None:
    m, feed = machine(), Feeder()
    first = m.apply(feed.entry(["fail"], request_id="f"))
    retry = m.apply(feed.entry(["add", 1], request_id="f"))
    assert retry.duplicate and retry.record.error == first.record.error
    assert m.state["total"] == 0


def test_requests_without_an_id_are_not_remembered() -> None:
    m, feed = machine(), Feeder()
    m.apply(feed.entry(["add", 1], request_id=""))
    m.apply(feed.entry(["add", 1], request_id=""))
    assert m.state["total"] == 2
    assert m.reply_for("") is None
    assert m.snapshot().replies == ()


def test_the_reply_table_is_bounded_oldest_first() -> None:
    m, feed = machine(MachineLimits(max_replies=2)), Feeder()
    for rid in ("a", "b", "c"):
        m.apply(feed.entry(["add", 1], request_id=rid))
    assert m.reply_for("a") is None
    assert m.reply_for("b") is not None and m.reply_for("c") is not None
    again = m.apply(feed.entry(["add", 1], request_id="a"))
    assert not again.duplicate
    assert m.state["total"] == 4


def test_entries_must_come_in_order_and_epochs_never_fall() -> None:
    m = machine()
    feed = Feeder(epoch=3)
    m.apply(feed.entry(["add", 1]))
    with pytest.raises(OutOfOrder, match="expected entry 2, got 5"):
        m.apply(LogEntry(5, 3, Command(CommandKind.CALL, "x", b"1", 0.0, 0)))
    with pytest.raises(StaleEpoch, match="epoch 2, below the applied epoch 3"):
        m.apply(LogEntry(2, 2, Command(CommandKind.CALL, "x", b"1", 0.0, 0)))
    assert m.applied_seq == 1


def test_events_are_numbered_per_topic_from_one() -> None:
    m, feed = machine(), Feeder()
    outcome = m.apply(feed.entry(["publish_two", "a"]))
    m.apply(feed.entry(["publish_two", "b"]))
    m.apply(feed.entry(["publish_two", "a"]))
    assert [(e.topic, e.number) for e in outcome.events] == [("a", 1), ("a", 2)]
    read = m.events_from("a", 1)
    assert [e.number for e in read.events] == [1, 2, 3, 4]
    assert [json.loads(e.data) for e in read.events] == ["first", "second"] * 2
    assert [e.seq for e in read.events] == [1, 1, 3, 3]
    assert (read.first_available, read.next_number) == (1, 5)
    assert [e.number for e in m.events_from("a", 4).events] == [4]
    assert m.events_from("a", 5).events == ()
    assert m.events_from("never", 1) == m.events_from("never", 1)
    assert m.events_from("never", 1).next_number == 1


def test_retained_events_are_bounded_and_report_the_gap() -> None:
    m, feed = machine(MachineLimits(max_events=3)), Feeder()
    for topic in ("a", "b", "a"):
        m.apply(feed.entry(["publish_two", topic]))
    # six events published, three retained: b2, a3, a4
    read_a = m.events_from("a", 1)
    assert [e.number for e in read_a.events] == [3, 4]
    assert read_a.first_available == 3
    read_b = m.events_from("b", 1)
    assert [e.number for e in read_b.events] == [2]
    assert read_b.first_available == 2
    assert m.next_event_number("a") == 5


def test_read_only_queries_change_nothing_and_are_not_logged() -> None:
    m, feed = machine(), Feeder()
    m.apply(feed.entry(["add", 3]))
    record = m.query(["peek"], request_id="q", time=5.0, seed=1)
    assert json.loads(record.reply) == 3
    assert record.seq == 1
    assert m.state["total"] == 3
    assert m.reply_for("q") is None
    refused = m.query(["peek_publish"], time=5.0, seed=1)
    assert refused.error is not None and refused.error.type == "ReadOnlyViolation"


def test_a_merge_entry_runs_the_servers_merge() -> None:
    m, feed = machine(), Feeder()
    m.apply(feed.entry(["add", 2]))
    outcome = m.apply(
        feed.entry({"total": 40, "items": ["b"]}, kind=CommandKind.MERGE, request_id="merge-1")
    )
    assert outcome.ok
    assert m.state == {"total": 42, "items": ["b"]}
    again = {"total": 40, "items": []}
    retry = m.apply(feed.entry(again, kind=CommandKind.MERGE, request_id="merge-1"))
    assert retry.duplicate and m.state["total"] == 42


def test_a_merge_carries_the_other_sides_replies_once_merge_succeeded() -> None:
    """A call the loser applied and answered (or whose answer was lost) and that the client
    retries on the winner after the merge gets the loser's outcome, not a second
    application; ids the winner answered itself keep the winner's outcome."""
    m, feed = machine(), Feeder()
    m.apply(feed.entry(["add", 2], request_id="both-sides"))
    mine = m.reply_for("both-sides")
    theirs = (ReplyRecord("lost-reply", 77, reply=CODEC.encode(40)),
              ReplyRecord("both-sides", 78, reply=CODEC.encode(-1)),
              ReplyRecord("failed-there", 79, error=HandlerError("ValueError", "no")))
    feed.seq += 1
    entry = LogEntry(feed.seq, 1, Command(CommandKind.MERGE, "merge-1", merge_bytes(
        CODEC.encode({"total": 40, "items": []}), theirs), 1.0, 1))
    assert m.apply(entry).ok
    carried = m.reply_for("lost-reply")
    assert carried is not None and carried.seq == entry.seq
    assert json.loads(carried.reply or b"null") == 40
    assert m.reply_for("both-sides") == mine
    failed = m.reply_for("failed-there")
    assert failed is not None and failed.error == HandlerError("ValueError", "no")
    assert m.snapshot().replies == StateMachine.restore(Ledger(), CODEC, m.snapshot()).snapshot(
    ).replies  # the carried records are replicated state like any other


def test_a_merge_that_raises_carries_no_replies() -> None:
    class Refuses(Ledger):
        def merge(self, state_a: Any, state_b: Any) -> Any:
            raise ValueError("refused")

    m = StateMachine.from_init(Refuses(), CODEC, 0)
    theirs = (ReplyRecord("lost-reply", 5, reply=CODEC.encode(1)),)
    entry = LogEntry(1, 1, Command(CommandKind.MERGE, "merge-1", merge_bytes(
        CODEC.encode({"total": 1, "items": []}), theirs), 1.0, 1))
    outcome = m.apply(entry)
    assert outcome.record.error == HandlerError("ValueError", "refused")
    assert m.reply_for("lost-reply") is None and m.state == {"total": 0, "items": []}


def test_a_merge_without_merge_support_is_an_error() -> None:
    class NoMerge(GenServer):
        version = Ledger.version

        def init(self, args: Any) -> Any:
            return 1

    m = StateMachine.from_init(NoMerge(), CODEC, None)
    outcome = m.apply(Feeder().entry(2, kind=CommandKind.MERGE))
    assert outcome.record.error is not None
    assert outcome.record.error.type == "MergeNotSupported"
    assert m.state == 1


def test_a_snapshot_restores_an_identical_machine() -> None:
    limits = MachineLimits(max_replies=5, max_events=4)
    m, feed = machine(limits), Feeder(epoch=2)
    for amount in range(1, 8):
        m.apply(feed.entry(["add", amount]))
    snapshot = m.snapshot()
    restored = StateMachine.restore(Ledger(), CODEC, snapshot, limits)
    assert restored.state == m.state
    assert (restored.applied_seq, restored.applied_epoch) == (7, 2)
    assert restored.snapshot() == snapshot
    assert restored.reply_for("req-7") == m.reply_for("req-7")
    assert restored.events_from("totals", 1) == m.events_from("totals", 1)
    next_entry = feed.entry(["add", 100])
    assert restored.apply(next_entry) == m.apply(next_entry)
    assert restored.snapshot() == m.snapshot()


def test_restore_runs_code_change_for_an_older_version() -> None:
    old = Snapshot(applied_seq=4, applied_epoch=1, server_version=1, codec="json", state=b"17")
    restored = StateMachine.restore(Ledger(), CODEC, old)
    assert restored.state == {"total": 17, "items": []}
    assert restored.applied_seq == 4


def test_restore_refuses_what_it_cannot_load() -> None:
    with pytest.raises(RestoreError, match="encoded with 'msgpack', this replica uses 'json'"):
        StateMachine.restore(Ledger(), CODEC, Snapshot(1, 1, 2, "msgpack", b"\x00"))
    with pytest.raises(RestoreError, match="cannot decode snapshot state as json"):
        StateMachine.restore(Ledger(), CODEC, Snapshot(1, 1, 2, "json", b"{"))

    class Ledger3(Ledger):
        version = 3

    with pytest.raises(RestoreError, match=r"code_change\(2, state\) of Ledger3 version 3 raised"):
        StateMachine.restore(Ledger3(), CODEC, Snapshot(1, 1, 2, "json", b"1"))


def test_terminate_reports_a_failing_hook() -> None:
    class Grumpy(Ledger):
        def terminate(self, reason: str, state: Any) -> None:
            raise OSError(f"cannot flush on {reason}")

    assert machine().terminate("shutdown") is None
    error = StateMachine.from_init(Grumpy(), CODEC, 0).terminate("demoted")
    assert error == HandlerError("OSError", "cannot flush on demoted")


def test_the_msgpack_codec_drives_the_machine_too() -> None:
    codec = MsgpackCodec()
    m = StateMachine.from_init(Ledger(), codec, 0)
    entry = LogEntry(1, 1, Command(CommandKind.CALL, "r", codec.encode(["add", 2]), 1.0, 1))
    assert codec.decode(m.apply(entry).record.reply) == 2


requests = st.one_of(
    st.tuples(st.just("add"), st.integers(-5, 5)).map(list),
    st.sampled_from([["fail"], ["stamp"], ["unknown"], ["publish_two", "t"], ["bad_event"]]),
)


@st.composite
def workloads(draw: st.DrawFn) -> list[LogEntry]:
    """Entries as an active would write them, with some request ids reused (retries)."""
    feed = Feeder()
    entries = []
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from([CommandKind.CALL, CommandKind.CAST]))
        request_id = draw(st.sampled_from(["", "a", "b", "c", None, None, None]))
        entries.append(
            feed.entry(
                draw(requests),
                kind=kind,
                request_id=request_id,
                time=draw(st.floats(0, 1e9)),
                seed=draw(st.integers(0, 2**32)),
            )
        )
    return entries


@given(entries=workloads(), split=st.integers(0, 30))
def test_replicas_applying_the_same_entries_reach_equal_states(
    entries: list[LogEntry], split: int
) -> None:
    """Two replicas, one of which joins from a snapshot midway, end with identical
    state, reply table and event log, and return identical outcomes."""
    limits = MachineLimits(max_replies=3, max_events=5)
    first = machine(limits)
    split = min(split, len(entries))
    for entry in entries[:split]:
        first.apply(entry)
    second = StateMachine.restore(Ledger(), CODEC, first.snapshot(), limits)
    for entry in entries[split:]:
        assert first.apply(entry) == second.apply(entry)
    assert first.snapshot() == second.snapshot()


@given(amounts=st.lists(st.integers(1, 9), max_size=20), retries=st.lists(st.integers(0, 19)))
def test_a_retried_request_id_applies_once(amounts: list[int], retries: list[int]) -> None:
    m, feed = machine(), Feeder()
    originals = {}
    for index, amount in enumerate(amounts):
        originals[f"id-{index}"] = m.apply(feed.entry(["add", amount], request_id=f"id-{index}"))
    for index in retries:
        if index < len(amounts):
            retry = m.apply(feed.entry(["add", 1000], request_id=f"id-{index}"))
            assert retry.duplicate
            assert retry.record == originals[f"id-{index}"].record
    assert m.state["total"] == sum(amounts)


def test_states_are_not_bound_by_the_message_size_limit() -> None:
    """Requests and replies must fit one gRPC message; a state travels chunked, so a state
    (in a snapshot, or as a MERGE payload) may be larger than the codec's limit."""
    small = JsonCodec(max_bytes=64)
    m = StateMachine.from_init(Ledger(), small, 0)
    big_other = {"total": 1, "items": ["x" * 100]}
    merge = LogEntry(1, 1, Command(CommandKind.MERGE, "m", merge_bytes(CODEC.encode(big_other)),
                                   1.0, 1))
    assert m.apply(merge).ok
    restored = StateMachine.restore(Ledger(), small, m.snapshot())
    assert restored.state == m.state
    too_big = LogEntry(2, 1, Command(CommandKind.CALL, "c", CODEC.encode(["x" * 100]), 1.0, 1))
    error = m.apply(too_big).record.error
    assert error is not None and error.type == "MessageTooLarge"


def test_copy_state_before_handling_protects_read_only_calls_too() -> None:
    class Careless(Ledger):
        copy_state_before_handling = True

        def is_read_only(self, request: Any) -> bool:
            return True

    m = StateMachine.from_init(Careless(), CODEC, 0)
    record = m.query(["mutate_then_fail"], time=1.0, seed=1)
    assert record.error is not None
    assert m.state["items"] == []


def published_machine() -> StateMachine:
    """Topic "t" with events 1..6 published, 3..6 retained."""
    m, feed = machine(MachineLimits(max_events=4)), Feeder()
    for _ in range(3):
        m.apply(feed.entry(["publish_two", "t"]))
    return m


def test_a_live_subscription_starts_after_the_last_event() -> None:
    assert published_machine().backlog("t", None, accept_gap=False) == Backlog((), 0, 7)
    assert machine().backlog("new", None, accept_gap=False) == Backlog((), 0, 1)


def test_a_resumed_subscription_gets_the_retained_events_from_its_position() -> None:
    backlog = published_machine().backlog("t", 5, accept_gap=False)
    assert [e.number for e in backlog.events] == [5, 6]
    assert (backlog.missed, backlog.next_number) == (0, 7)
    assert published_machine().backlog("t", 7, accept_gap=False).events == ()
    assert machine().backlog("new", 1, accept_gap=False) == Backlog((), 0, 1)


def test_a_subscription_older_than_the_retained_events() -> None:
    m = published_machine()
    with pytest.raises(SubscriptionError, match="events 1 to 2 of topic 't' are no longer"):
        m.backlog("t", 1, accept_gap=False)
    backlog = m.backlog("t", 1, accept_gap=True)
    assert [e.number for e in backlog.events] == [3, 4, 5, 6]
    assert backlog.missed == 2


def test_a_subscription_ahead_of_the_topic_is_refused() -> None:
    with pytest.raises(SubscriptionError, match="has events up to 6; cannot resume from 9"):
        published_machine().backlog("t", 9, accept_gap=True)
