"""The replication log: numbering, epochs, the retention window, and catch-up decisions."""

from __future__ import annotations

import pytest
from gencluster.log import (
    ENTRY_OVERHEAD_BYTES,
    CatchUp,
    Command,
    CommandKind,
    LogEntry,
    NeedSnapshot,
    OutOfOrder,
    ReplicationLog,
    Retention,
    StaleEpoch,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def command(payload: bytes = b'"next_value"', request_id: str = "r") -> Command:
    return Command(CommandKind.CALL, request_id, payload, time=1.5, seed=7)


def filled(count: int, epoch: int = 1, retention: Retention | None = None) -> ReplicationLog:
    log = ReplicationLog(retention)
    for _ in range(count):
        log.append(epoch, command())
    return log


def test_append_numbers_entries_from_one_and_stamps_the_epoch() -> None:
    log = ReplicationLog()
    first = log.append(3, command(request_id="a"))
    second = log.append(3, command(request_id="b"))
    assert (first.seq, first.epoch, second.seq) == (1, 3, 2)
    assert (log.last_seq, log.last_epoch, log.first_seq, len(log)) == (2, 3, 1, 2)


def test_the_epoch_may_rise_but_never_fall() -> None:
    log = ReplicationLog()
    log.append(2, command())
    log.append(5, command())
    with pytest.raises(StaleEpoch, match="epoch 4, below the log's epoch 5"):
        log.append(4, command())
    assert log.last_seq == 2


def test_accept_requires_the_next_entry() -> None:
    log = ReplicationLog()
    log.accept(LogEntry(1, 1, command()))
    with pytest.raises(OutOfOrder, match="expected entry 2, got 3"):
        log.accept(LogEntry(3, 1, command()))
    with pytest.raises(OutOfOrder, match="expected entry 2, got 1"):
        log.accept(LogEntry(1, 1, command()))
    with pytest.raises(StaleEpoch):
        log.accept(LogEntry(2, 0, command()))


def test_retention_by_count_keeps_the_newest_entries() -> None:
    log = filled(10, retention=Retention(max_entries=4))
    assert (log.first_seq, log.last_seq, len(log)) == (7, 10, 4)


def test_retention_by_bytes() -> None:
    entry_size = command().size
    log = filled(10, retention=Retention(max_bytes=3 * entry_size))
    assert len(log) == 3
    assert log.retained_bytes == 3 * entry_size
    assert entry_size == len(b'"next_value"') + len("r") + ENTRY_OVERHEAD_BYTES


def test_the_newest_entry_is_kept_even_when_over_the_byte_limit() -> None:
    log = ReplicationLog(Retention(max_bytes=10))
    log.append(1, command(payload=b"x" * 100))
    log.append(1, command(payload=b"y" * 100))
    assert len(log) == 1
    caught_up = log.entries_after(1)
    assert isinstance(caught_up, CatchUp)
    assert [entry.seq for entry in caught_up.entries] == [2]
    assert isinstance(log.entries_after(0), NeedSnapshot)


def test_entries_after_a_position_in_the_window() -> None:
    log = filled(5)
    result = log.entries_after(2)
    assert isinstance(result, CatchUp)
    assert [entry.seq for entry in result.entries] == [3, 4, 5]
    assert log.entries_after(5) == CatchUp(())
    limited = log.entries_after(0, limit=2)
    assert isinstance(limited, CatchUp)
    assert [entry.seq for entry in limited.entries] == [1, 2]


@pytest.mark.parametrize(
    ("seq", "epoch", "reason"),
    [
        (3, None, "before the retained log"),
        (11, None, "ahead of this log's last entry 10"),
        (8, 2, "replica's entry 8 has epoch 2, the log's has 1"),
        (6, 7, "replica's entry 6 has epoch 7, the log's has 1"),
    ],
)
def test_positions_that_need_a_snapshot(seq: int, epoch: int | None, reason: str) -> None:
    log = filled(10, retention=Retention(max_entries=4))  # retains 7..10, base is 6
    result = log.entries_after(seq, epoch)
    assert isinstance(result, NeedSnapshot)
    assert reason in result.reason


def test_the_position_just_before_the_window_can_still_catch_up() -> None:
    log = filled(10, retention=Retention(max_entries=4))
    result = log.entries_after(6, 1)
    assert isinstance(result, CatchUp)
    assert [entry.seq for entry in result.entries] == [7, 8, 9, 10]


def test_a_replica_from_an_older_epoch_is_caught_up_only_where_epochs_agree() -> None:
    log = ReplicationLog()
    log.append(1, command())
    log.append(1, command())
    log.append(2, command())
    assert isinstance(log.entries_after(2, 1), CatchUp)
    assert isinstance(log.entries_after(3, 1), NeedSnapshot)


def test_reset_continues_from_a_snapshot_position() -> None:
    log = filled(3)
    log.reset(base_seq=40, base_epoch=4)
    assert (log.last_seq, log.last_epoch, len(log), log.retained_bytes) == (40, 4, 0, 0)
    assert log.append(4, command()).seq == 41
    assert isinstance(log.entries_after(40, 4), CatchUp)
    assert isinstance(log.entries_after(39), NeedSnapshot)


def test_retention_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retention limits must be positive"):
        Retention(max_entries=0)


@given(
    epochs=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=60),
    max_entries=st.integers(min_value=1, max_value=20),
    payload_sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=60, max_size=60),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_catch_up_always_yields_exactly_the_missing_suffix(
    epochs: list[int], max_entries: int, payload_sizes: list[int], max_bytes: int
) -> None:
    """Whatever the retention, a position is either served with every entry after it, in
    order and gap-free, or told to take a snapshot; the window respects its limits."""
    log = ReplicationLog(Retention(max_entries=max_entries, max_bytes=max_bytes))
    epoch = 0
    appended = []
    for index, step in enumerate(epochs):
        epoch += step
        appended.append(log.append(epoch, command(payload=b"x" * payload_sizes[index])))
    assert 1 <= len(log) <= max_entries
    assert len(log) == 1 or log.retained_bytes <= max_bytes
    for position in range(0, log.last_seq + 2):
        result = log.entries_after(position)
        if isinstance(result, CatchUp):
            assert list(result.entries) == appended[position:]
        else:
            assert position < log.first_seq - 1 or position > log.last_seq
