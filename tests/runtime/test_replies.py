"""Exactly-once that is never silently broken: the reply table's time, byte and count bounds
(driven by entry times only, so every replica's table is the same), the rule that refuses a
retry the table cannot vouch for, and how the machine, the replica, the wire, the config and
the client's retry policy carry it."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from gencluster.codec import JsonCodec
from gencluster.log import Command, CommandKind, HandlerError, LogEntry, ReplyRecord
from gencluster.machine import MachineLimits, StateMachine
from gencluster.replica import Replica
from gencluster.replies import (
    MAX_CLOCK_SKEW_SECONDS,
    RECORD_OVERHEAD_BYTES,
    ReplyTable,
    RetryRefused,
    record_size,
    retry_refusal,
)
from gencluster.retry import CallRetries, GiveUp, RetryWindowExpired, Route
from gencluster.run import ConfigError, build_config, resolve
from gencluster.wire import (
    merge_payload,
    merge_payload_parts,
    snapshot_from_chunks,
    snapshot_to_chunks,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.servers import Ledger
from tests.runtime.test_machine import Feeder
from tests.runtime.test_retry import failure

pytestmark = pytest.mark.unit

CODEC = JsonCodec()
WINDOW = 300.0
SKEW = MAX_CLOCK_SKEW_SECONDS
NOW = 1_800_000_000.0


def refusal(first_attempt: float, *, now: float = NOW, complete_after: float = 0.0) -> str | None:
    return retry_refusal(
        first_attempt=first_attempt, now=now, window=WINDOW, complete_after=complete_after
    )


# --- the decision -----------------------------------------------------------------------------


def test_an_unknown_first_attempt_is_a_new_request_whatever_the_horizon() -> None:
    assert refusal(0, complete_after=NOW) is None
    assert refusal(-5.0, complete_after=NOW) is None


def test_a_retry_within_the_window_is_accepted() -> None:
    assert refusal(NOW) is None
    assert refusal(NOW - WINDOW + 0.001) is None


def test_exactly_at_the_window_is_refused_with_what_to_do() -> None:
    reason = refusal(NOW - WINDOW)
    assert reason is not None
    assert "older than what the cluster remembers" in reason
    assert "300 s" in reason
    assert "may or may not have been applied" in reason
    assert "check the state before retrying with a new request id" in reason


def test_early_eviction_moves_the_horizon_by_the_skew_margin() -> None:
    evicted = NOW - 60.0
    assert refusal(evicted + SKEW, complete_after=evicted) is not None
    assert refusal(evicted + SKEW + 0.001, complete_after=evicted) is None
    assert refusal(evicted, complete_after=evicted) is not None


def test_the_later_bound_wins() -> None:
    assert refusal(NOW - WINDOW + 1, complete_after=NOW - WINDOW - 100) is None
    assert refusal(NOW - 30, complete_after=NOW - 30) is not None


def test_a_client_clock_ahead_by_at_most_the_skew_is_accepted() -> None:
    assert refusal(NOW + SKEW) is None


def test_a_first_attempt_beyond_the_tolerated_skew_in_the_future_is_refused() -> None:
    reason = refusal(NOW + SKEW + 0.5)
    assert reason is not None and "in the future" in reason
    assert "may or may not have been applied" in reason


@given(
    applied_after_complete=st.floats(0, 10_000),
    sent_before_applied=st.floats(0, 10_000),
    client_skew=st.floats(-SKEW, SKEW),
    now_after_applied=st.floats(0, 100_000),
    window=st.floats(1, 86_400),
)
def test_a_request_evicted_from_the_table_is_never_accepted(
    applied_after_complete: float,
    sent_before_applied: float,
    client_skew: float,
    now_after_applied: float,
    window: float,
) -> None:
    """Safety: a request applied at entry time `applied` whose record left the table
    (`applied <= complete_after`), first sent at true time `applied - sent_before_applied`
    by a client whose clock is off by at most the tolerated skew, is refused at any later
    time and with any window."""
    complete_after = NOW
    applied = complete_after - applied_after_complete
    first_attempt = applied - sent_before_applied + client_skew
    reason = retry_refusal(
        first_attempt=first_attempt,
        now=applied + now_after_applied,
        window=window,
        complete_after=complete_after,
    )
    assert reason is not None


# --- the table --------------------------------------------------------------------------------


def record(request_id: str, time: float, reply: bytes = b"1") -> ReplyRecord:
    return ReplyRecord(request_id, seq=1, reply=reply, time=time)


def test_records_expire_by_entry_time_after_the_window_and_the_skew() -> None:
    table = ReplyTable(window=WINDOW)
    for index in range(5):
        table.remember(record(f"r{index}", 1000.0 + index))
    table.expire(1000.0 + 2 + WINDOW + SKEW)
    assert [r.request_id for r in table.records()] == ["r2", "r3", "r4"]
    assert table.complete_after == 1001.0
    assert table.size_bytes == sum(record_size(r) for r in table.records())


def test_the_byte_bound_evicts_the_oldest_and_moves_the_horizon() -> None:
    one = record_size(record("r0", 0.0))
    table = ReplyTable(window=WINDOW, max_bytes=3 * one)
    for index in range(5):
        table.remember(record(f"r{index}", 1000.0 + index))
    assert [r.request_id for r in table.records()] == ["r2", "r3", "r4"]
    assert table.complete_after == 1001.0
    assert table.size_bytes == 3 * one


def test_the_byte_bound_counts_ids_replies_errors_and_overhead() -> None:
    error = ReplyRecord("abc", 1, error=HandlerError("ValueError", "boom"), time=1.0)
    assert record_size(error) == 3 + len("ValueError") + 4 + RECORD_OVERHEAD_BYTES
    assert record_size(record("abc", 1.0, b"12345")) == 3 + 5 + RECORD_OVERHEAD_BYTES


def test_the_count_bound_is_a_safety_net_and_one_oversized_record_stays() -> None:
    table = ReplyTable(window=WINDOW, max_records=2)
    for index in range(4):
        table.remember(record(f"r{index}", 1000.0 + index))
    assert len(table) == 2 and table.complete_after == 1001.0
    tiny = ReplyTable(window=WINDOW, max_bytes=1)
    tiny.remember(record("big", 5.0, b"x" * 1000))
    assert tiny.get("big") is not None


def test_eviction_keeps_insertion_order_when_times_go_backwards() -> None:
    """After a failover to an active whose clock is behind, entry times may decrease: the
    table still drops in insertion order, and the horizon is the newest time dropped."""
    table = ReplyTable(window=WINDOW, max_records=2)
    table.remember(record("late", 2000.0))
    table.remember(record("early", 1990.0))
    table.remember(record("next", 1995.0))
    assert table.complete_after == 2000.0
    table.remember(record("more", 1996.0))
    assert table.complete_after == 2000.0


def test_a_record_of_unknown_age_leaves_the_table_incomplete_up_to_the_newest_time_seen() -> None:
    """A record restored from a snapshot of a version that kept no times (time 0) expires on
    the next entry; a retry of it must then be refused, not taken for a new request."""
    table = ReplyTable(window=WINDOW)
    table.restore([ReplyRecord("legacy", 1, reply=b"1"), record("timed", NOW)], 0.0)
    table.expire(NOW + 1)
    assert table.get("legacy") is None and table.get("timed") is not None
    assert table.complete_after == NOW + 1
    assert table.refusal(NOW - 5, NOW + 2) is not None


def test_a_restored_table_is_the_same_table() -> None:
    table = ReplyTable(window=WINDOW, max_records=3)
    for index in range(6):
        table.remember(record(f"r{index}", 1000.0 + index))
    copy = ReplyTable(window=WINDOW, max_records=3)
    copy.restore(table.records(), table.complete_after)
    assert copy.records() == table.records()
    assert copy.complete_after == table.complete_after
    assert copy.refusal(1004.0, 1010.0) == table.refusal(1004.0, 1010.0)


# --- the machine and the replica ----------------------------------------------------------------


def limits(**overrides: Any) -> MachineLimits:
    return MachineLimits(**{"deduplication_window": WINDOW, **overrides})


def test_twenty_thousand_calls_later_a_retry_in_the_window_gets_the_original_reply() -> None:
    """The bug of issue #11: the table kept 10,000 ids, so this retry was applied again."""
    machine = StateMachine.from_init(Ledger(), CODEC, 0, limits())
    feed = Feeder()
    first = machine.apply(feed.entry(["add", 7], request_id="fixed", time=NOW))
    for index in range(20_000):
        machine.apply(feed.entry(["add", 1], request_id=f"other-{index}", time=NOW + 1))
    retry = machine.apply(feed.entry(["add", 7], request_id="fixed", time=NOW + 2))
    assert retry.duplicate and retry.record == first.record
    assert machine.state["total"] == 7 + 20_000


def test_the_machine_refuses_a_retry_after_the_window_and_every_replica_agrees() -> None:
    feed = Feeder()
    entries = [feed.entry(["add", 1], request_id="old", time=NOW)]
    entries += [feed.entry(["add", 2], request_id=f"n{i}", time=NOW + WINDOW + SKEW + 1 + i)
                for i in range(3)]
    replicas = [StateMachine.from_init(Ledger(), CODEC, 0, limits()) for _ in range(2)]
    for replica in replicas:
        for entry in entries:
            replica.apply(entry)
    later = NOW + WINDOW + SKEW + 5
    for replica in replicas:
        assert replica.reply_for("old") is None
        assert replica.replies.complete_after == NOW
        with pytest.raises(RetryRefused, match="older than what the cluster remembers"):
            replica.refuse_retry("old", NOW, now=later)
        replica.refuse_retry("old", 0.0, now=later)  # an old client: treated as new
        replica.refuse_retry("fresh", later - 1, now=later)
    assert replicas[0].snapshot() == replicas[1].snapshot()


def test_an_id_found_by_the_active_is_still_a_duplicate_when_its_entry_would_expire_it() -> None:
    machine = StateMachine.from_init(Ledger(), CODEC, 0, limits())
    feed = Feeder()
    machine.apply(feed.entry(["add", 1], request_id="kept", time=NOW))
    late = NOW + WINDOW + SKEW + 100
    retry = machine.apply(feed.entry(["add", 1], request_id="kept", time=late))
    assert retry.duplicate
    assert machine.reply_for("kept") is None  # expired by that same entry, after the lookup


def test_a_snapshot_carries_the_table_and_its_horizon() -> None:
    machine = StateMachine.from_init(Ledger(), CODEC, 0, limits(max_replies=2))
    feed = Feeder()
    for index in range(4):
        machine.apply(feed.entry(["add", 1], request_id=f"r{index}", time=NOW + index))
    snapshot = machine.snapshot()
    assert snapshot.replies_complete_after == NOW + 1
    assert [r.time for r in snapshot.replies] == [NOW + 2, NOW + 3]
    wired, _ = snapshot_from_chunks(snapshot_to_chunks(snapshot, epoch=1))
    assert wired == snapshot
    restored = StateMachine.restore(Ledger(), CODEC, wired, limits(max_replies=2))
    assert restored.replies.records() == machine.replies.records()
    with pytest.raises(RetryRefused):
        restored.refuse_retry("r1", NOW + 1 + SKEW, now=NOW + 10)


def test_a_merge_keeps_the_losers_record_times_and_the_later_horizon() -> None:
    loser = StateMachine.from_init(Ledger(), CODEC, 0, limits(max_replies=1))
    feed = Feeder()
    loser.apply(feed.entry(["add", 1], request_id="gone", time=NOW))
    loser.apply(feed.entry(["add", 1], request_id="kept", time=NOW + 1))
    payload = merge_payload(loser.snapshot())
    assert merge_payload_parts(payload)[2] == NOW
    winner = StateMachine.from_init(Ledger(), CODEC, 0, limits())
    assert winner.replies.complete_after == 0.0
    winner.apply(LogEntry(1, 1, Command(CommandKind.MERGE, "m", payload, NOW + 3, 1)))
    merged = winner.reply_for("kept")
    assert merged is not None and merged.time == NOW + 1 and merged.seq == 1
    assert winner.replies.complete_after == NOW


def test_a_refused_retry_changes_nothing_and_a_read_is_never_refused() -> None:
    replica = Replica.from_init(Ledger(), CODEC, 0, limits=limits(max_replies=1))
    for index in range(2):
        replica.submit(CommandKind.CALL, f"r{index}", CODEC.encode(["add", 1]),
                       epoch=1, time=NOW + index, seed=1)
    before = (replica.log.last_seq, replica.applied_seq, replica.machine.state,
              replica.machine.replies.records())
    with pytest.raises(RetryRefused):
        replica.submit(CommandKind.CALL, "r0", CODEC.encode(["add", 1]),
                       epoch=1, time=NOW + 5, seed=1, first_attempt=NOW)
    assert (replica.log.last_seq, replica.applied_seq, replica.machine.state,
            replica.machine.replies.records()) == before
    read = replica.submit(CommandKind.CALL, "r0", CODEC.encode(["peek"]),
                          epoch=1, time=NOW + 5, seed=1, first_attempt=NOW)
    assert read.entry is None and read.outcome.ok
    found = replica.submit(CommandKind.CALL, "r1", CODEC.encode(["add", 1]),
                           epoch=1, time=NOW + 5, seed=1, first_attempt=NOW - 10 * WINDOW)
    assert found.outcome.duplicate


def test_limits_refuse_a_window_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MachineLimits(deduplication_window=0)
    with pytest.raises(ValueError, match="positive"):
        MachineLimits(deduplication_window=float("nan"))


# --- configuration and the client's policy ---------------------------------------------------

ENVIRONMENT = {
    "POD_NAME": "p-0",
    "POD_NAMESPACE": "ns",
    "POD_IP": "10.0.0.1",
    "GENCLUSTER_SERVER": "examples.idserver:IdServer",
    "GENCLUSTER_CLUSTER": "c",
    "GENCLUSTER_PEER_TOKEN": "t" * 40,
    "GENCLUSTER_LEASE_NAME": "c-leader",
}


def test_the_window_defaults_to_five_minutes_and_comes_from_the_environment() -> None:
    assert build_config(resolve([], ENVIRONMENT)).deduplication_window == 300.0
    environ = {**ENVIRONMENT, "GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS": "2"}
    assert build_config(resolve([], environ)).deduplication_window == 2.0


@pytest.mark.parametrize("bad", ["0", "-3", "1.5", "five", "86401"])
def test_a_bad_window_is_a_clear_startup_error(bad: str) -> None:
    environ = {**ENVIRONMENT, "GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS": bad}
    with pytest.raises(ConfigError, match="GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS"):
        build_config(resolve([], environ))


def test_the_client_gives_up_on_a_refused_retry_with_its_own_error() -> None:
    retries = CallRetries(Route("a:1,b:2"), timeout=30.0, now=0.0)
    retries.next_attempt(0.0)
    step = retries.after_failure(failure(grpc.StatusCode.FAILED_PRECONDITION), 0.1)
    assert isinstance(step, GiveUp)
    assert isinstance(step.error, RetryWindowExpired)
    assert isinstance(step.error, grpc.RpcError)
    assert step.error.code() is grpc.StatusCode.FAILED_PRECONDITION
