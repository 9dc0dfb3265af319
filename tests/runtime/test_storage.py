"""A replica's log and snapshots on its volume (#11 part 1): the record format, recovery from
what a crash leaves (torn tail, corrupt record, an invalid snapshot, a diverged history
replaced by a join), snapshots that truncate the log, and group commit (one fsync for many
entries; nothing is reported durable before its fsync)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest
from gencluster import journal as journal_module
from gencluster import storage
from gencluster.codec import JsonCodec
from gencluster.journal import Journal, VolumeFailed
from gencluster.log import CommandKind
from gencluster.replica import Replica
from gencluster.state_encoding import in_process
from gencluster.storage import frame, recover, unframe

from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

CODEC = JsonCodec(max_bytes=1024)


def add(replica: Replica, amount: int, epoch: int = 1) -> None:
    replica.submit(CommandKind.CALL, f"id-{replica.applied_seq + 1}",
                   CODEC.encode(["add", amount]), epoch=epoch, time=1.0, seed=7)


def rebuilt(directory: Path) -> Replica | None:
    """What a restarted replica holds: the newest snapshot, then the log after it."""
    recovered = recover(directory)
    if recovered.snapshot is None:
        return None
    replica = Replica.from_snapshot(Ledger(), CODEC, recovered.snapshot)
    for entry in recovered.entries:
        replica.receive(entry)
    return replica


async def persisted_replica(directory: Path) -> tuple[Replica, Journal]:
    """The first active of a cluster with persistence: init, installed as a snapshot at 0."""
    journal = Journal(directory, segment=None, position=0, encoder=in_process)
    replica = Replica.from_init(Ledger(), CODEC, 0)
    journal.install(replica.snapshot())
    replica.journal = journal
    return replica, journal


def run(scenario):  # type: ignore[no-untyped-def]
    return asyncio.run(scenario())


# -- the record format ------------------------------------------------------------------------


def test_records_round_trip_and_a_torn_or_corrupt_record_ends_the_valid_prefix() -> None:
    data = frame(b"one") + frame(b"") + frame(b"three")
    assert unframe(data) == storage.Unframed((b"one", b"", b"three"), len(data), None)
    torn = unframe(data[:-2])
    assert torn.records == (b"one", b"") and torn.valid_bytes == len(frame(b"one") + frame(b""))
    assert "torn record at byte" in (torn.problem or "")
    header = unframe(frame(b"one") + b"\x00\x00")
    assert header.records == (b"one",) and "torn record header" in (header.problem or "")
    flipped = bytearray(data)
    flipped[len(frame(b"one")) + len(frame(b"")) + 9] ^= 0xFF
    corrupt = unframe(bytes(flipped))
    assert corrupt.records == (b"one", b"") and "CRC" in (corrupt.problem or "")


def test_an_empty_directory_holds_no_state(tmp_path: Path) -> None:
    recovered = recover(tmp_path)
    assert recovered.snapshot is None and recovered.entries == () and recovered.notes == ()


# -- write, then recover --------------------------------------------------------------------


def test_every_durable_entry_is_recovered_in_order(tmp_path: Path) -> None:
    async def scenario() -> Replica:
        replica, journal = await persisted_replica(tmp_path)
        for amount in range(1, 21):
            add(replica, amount)
        await journal.wait_durable(20)
        await journal.close()
        return replica

    replica = run(scenario)
    again = rebuilt(tmp_path)
    assert again is not None
    assert (again.applied_epoch, again.applied_seq) == (1, 20)
    assert again.machine.state == replica.machine.state == {"total": 210, "items": []}
    assert again.reply_for("id-20") == replica.reply_for("id-20"), "exactly-once survives"


def test_a_torn_tail_is_truncated_at_the_last_valid_record_and_appending_continues(
    tmp_path: Path,
) -> None:
    async def write(amounts: range, segment: Path | None, position: int) -> None:
        if segment is None:
            replica, journal = await persisted_replica(tmp_path)
        else:
            replica = rebuilt(tmp_path)
            assert replica is not None
            journal = Journal(tmp_path, segment=segment, position=position, encoder=in_process)
            replica.journal = journal
        for amount in amounts:
            add(replica, amount)
        await journal.wait_durable(replica.applied_seq)
        await journal.close()

    run(lambda: write(range(1, 6), None, 0))
    (segment,) = tmp_path.glob("log-*.seg")
    whole = segment.read_bytes()
    segment.write_bytes(whole + frame(b"x" * 40)[:-10])  # a crash mid-write
    recovered = recover(tmp_path)
    assert [e.seq for e in recovered.entries] == [1, 2, 3, 4, 5]
    assert any("torn record" in note for note in recovered.notes)
    assert segment.read_bytes() == whole, "truncated at the last valid record"
    run(lambda: write(range(6, 9), recovered.segment, 5))
    again = rebuilt(tmp_path)
    assert again is not None and again.applied_seq == 8
    assert again.machine.state["total"] == sum(range(1, 9))


def test_a_corrupt_record_ends_the_log_there(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        for amount in range(1, 11):
            add(replica, amount)
        await journal.wait_durable(10)
        await journal.close()

    run(scenario)
    (segment,) = tmp_path.glob("log-*.seg")
    data = bytearray(segment.read_bytes())
    record = len(data) // 10
    data[record * 6 + 12] ^= 0xFF  # inside the seventh entry
    segment.write_bytes(bytes(data))
    recovered = recover(tmp_path)
    assert [e.seq for e in recovered.entries] == [1, 2, 3, 4, 5, 6]
    assert any("CRC" in note or "undecodable" in note for note in recovered.notes)


def test_an_invalid_newest_snapshot_is_ignored_for_the_previous_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        add(replica, 5)
        await journal.wait_durable(1)
        await journal.close()

    run(scenario)
    (tmp_path / storage.snapshot_name(99)).write_bytes(frame(b"half a snapshot")[:-3])
    recovered = recover(tmp_path)
    assert recovered.snapshot is not None and recovered.snapshot.applied_seq == 0
    assert [e.seq for e in recovered.entries] == [1]
    assert not (tmp_path / storage.snapshot_name(99)).exists()


# -- snapshots and truncation -----------------------------------------------------------------


def test_a_snapshot_every_so_many_entries_truncates_the_log_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SNAPSHOT_EVERY_ENTRIES", 10)

    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        for amount in range(1, 26):
            add(replica, amount)
            await asyncio.sleep(0)
        await journal.wait_durable(25)
        await journal.close()  # waits for the background snapshot thread

    run(scenario)
    snapshots = [n for n, _ in storage.numbered(tmp_path, storage.SNAPSHOT_PATTERN)]
    segments = [n for n, _ in storage.numbered(tmp_path, storage.SEGMENT_PATTERN)]
    assert snapshots == [20] and segments == [20]
    recovered = recover(tmp_path)
    assert [e.seq for e in recovered.entries] == [21, 22, 23, 24, 25]
    again = rebuilt(tmp_path)
    assert again is not None and again.machine.state["total"] == sum(range(1, 26))


def test_a_join_by_snapshot_replaces_a_diverged_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        for amount in range(1, 11):
            add(replica, amount)  # entries 6..10 were never acknowledged by anyone else
        await journal.wait_durable(10)
        winner = Replica.from_init(Ledger(), CODEC, 0)
        for _ in range(5):
            add(winner, 1000, epoch=2)
        joined = Replica.from_snapshot(Ledger(), CODEC, winner.snapshot())
        journal.install(joined.snapshot())
        joined.journal = journal
        add(joined, 1, epoch=2)
        await journal.wait_durable(6)
        await journal.close()

    run(scenario)
    again = rebuilt(tmp_path)
    assert again is not None
    assert (again.applied_epoch, again.applied_seq) == (2, 6)
    assert again.machine.state["total"] == 5001


# -- group commit -------------------------------------------------------------------------------


def test_one_fsync_covers_every_entry_appended_since_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    real_fdatasync = os.fdatasync

    def counting(descriptor: int) -> None:
        fsyncs.append(descriptor)
        real_fdatasync(descriptor)

    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        await journal.wait_durable(0)
        await asyncio.sleep(0.01)
        monkeypatch.setattr(os, "fdatasync", counting)
        for amount in range(200):
            add(replica, amount)
        await journal.wait_durable(200)
        await journal.close()

    run(scenario)
    assert 1 <= len(fsyncs) <= 2, f"{len(fsyncs)} fsyncs for 200 entries"


def test_nothing_is_reported_durable_before_its_fsync_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_fdatasync = os.fdatasync

    def slow(descriptor: int) -> None:
        release.wait()
        real_fdatasync(descriptor)

    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        await journal.wait_durable(0)
        monkeypatch.setattr(os, "fdatasync", slow)
        add(replica, 1)
        waiter = asyncio.ensure_future(journal.wait_durable(1))
        for _ in range(20):
            await asyncio.sleep(0.005)
            assert not waiter.done() and journal.durable_seq == 0
        release.set()
        await waiter
        assert journal.durable_seq == 1
        await journal.close()

    run(scenario)


def test_a_failed_fsync_fails_every_waiter_and_the_journal_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsyncgate: after an fsync that failed, nothing may be reported durable again (the
    kernel may have dropped the pages), so the journal fails its waiters instead of leaving
    them to their deadlines, and says so for the process to stop."""

    def failing(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    async def scenario() -> None:
        replica, journal = await persisted_replica(tmp_path)
        await journal.wait_durable(0)
        monkeypatch.setattr(os, "fdatasync", failing)
        add(replica, 1)
        with pytest.raises(VolumeFailed, match="Input/output error"):
            await journal.wait_durable(1)
        assert journal.failed.is_set() and journal.durable_seq == 0
        monkeypatch.undo()  # the disk answers again: too late, nothing more counts
        add(replica, 2)
        with pytest.raises(VolumeFailed):
            await journal.wait_durable(2)
        assert journal.durable_seq == 0
        await journal.close()  # returns: it waits for nothing that can never be written

    run(scenario)
    assert rebuilt(tmp_path) is not None
