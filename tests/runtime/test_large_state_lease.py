"""Large state never costs the Lease (issue #12 part 5): whole-state encoding runs in a forked
child (`state_encoding`), so the event loop, where the Lease is renewed, keeps running while
a state of 1,000,000 small records is encoded; and what the child encodes is the state at the
moment of the snapshot, whatever the loop's later calls change in place.

The stall is measured as a condition (the longest gap between the loop's ticks must stay
below a renew deadline), never as a speed claim; bench/large_state.py measures 500 MB."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from gencluster import GenServer, storage
from gencluster.codec import JsonCodec
from gencluster.journal import Journal
from gencluster.log import Command, CommandKind, LogEntry
from gencluster.machine import StateMachine
from gencluster.replica import Replica
from gencluster.server import Context
from gencluster.state_encoding import SnapshotEncodingFailed, encode_off_loop, forked
from gencluster.storage import recover

pytestmark = pytest.mark.integration

CODEC = JsonCodec()
RECORDS = 1_000_000
RENEW_DEADLINE = 2.0
"""The tightest renew deadline the runtime's integration clusters run with
(tests/runtime/test_cluster_run_config.py): an active whose loop stalls this long is fenced."""
TICK = 0.005


class Records(GenServer):
    def init(self, args: Any) -> dict[str, Any]:
        return {f"k{i}": {"n": i, "tags": ["a", "b"], "ok": True} for i in range(args)}

    def handle_call(self, request: Any, ctx: Context, state: Any) -> Any:
        state["k0"]["n"] += 1  # in place, as servers without copy_state_before_handling do
        return state["k0"]["n"], state


async def ticking(stop: asyncio.Event, gaps: list[float]) -> None:
    """The loop's pulse: records the longest time between two ticks (a Lease renewal would
    wait that long)."""
    last = time.monotonic()
    longest = 0.0
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
    gaps.append(longest)


def test_encoding_a_million_records_leaves_the_loop_running_and_snapshots_one_moment() -> None:
    machine = StateMachine.from_init(Records(), CODEC, RECORDS)
    reference = CODEC.encode(machine.state, what="state", bounded=False)  # not measured

    async def scenario() -> tuple[float, float, float, bytes]:
        stop, gaps = asyncio.Event(), list[float]()
        pulse = asyncio.create_task(ticking(stop, gaps))
        await asyncio.sleep(TICK * 4)
        started = time.monotonic()
        parts = machine.snapshot_parts()
        pending = forked(parts)
        forked_after = time.monotonic() - started
        # Later calls mutate the state in place while the child encodes.
        for _ in range(100):
            machine.state["k0"]["n"] += 1
            machine.state[f"new{_}"] = _
            await asyncio.sleep(0)
        snapshot = await asyncio.get_running_loop().run_in_executor(None, pending.result)
        encoded_after = time.monotonic() - started
        stop.set()
        await pulse
        return gaps[0], forked_after, encoded_after, snapshot.state

    longest, fork_seconds, encode_seconds, state = asyncio.run(scenario())
    print(f"\n{RECORDS} records, {len(state) / 1e6:.1f} MB encoded in a child in "
          f"{encode_seconds:.2f} s; fork {fork_seconds * 1000:.1f} ms; longest event-loop "
          f"stall {longest * 1000:.1f} ms; renew deadline {RENEW_DEADLINE} s; "
          f"load average {os.getloadavg()}")
    assert state == reference  # the state at the snapshot, none of the later changes
    assert machine.state["k0"]["n"] == 100
    assert longest < RENEW_DEADLINE


def test_an_unencodable_state_fails_the_snapshot_with_the_codec_error() -> None:
    machine = StateMachine.from_init(Records(), CODEC, 1)
    machine.state["bad"] = {1, 2}
    pending = forked(machine.snapshot_parts())
    with pytest.raises(SnapshotEncodingFailed, match="cannot encode state as json"):
        pending.result()
    with pytest.raises(SnapshotEncodingFailed):  # asked again: the same failure
        pending.result()


def test_the_journal_checkpoints_with_a_forked_encoding_and_recovers_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gencluster import journal as journal_module

    monkeypatch.setattr(journal_module, "SNAPSHOT_EVERY_ENTRIES", 10)

    async def scenario() -> None:
        journal = Journal(tmp_path, segment=None, position=0)
        replica = Replica.from_init(Records(), CODEC, 3)
        journal.install(replica.machine.snapshot_parts())
        replica.journal = journal
        for number in range(25):
            replica.submit(CommandKind.CALL, f"r{number}", CODEC.encode("bump"),
                           epoch=1, time=1000.0 + number, seed=number)
            await asyncio.sleep(0)
        await journal.wait_durable(25)
        await journal.close()

    asyncio.run(scenario())
    assert [n for n, _ in storage.numbered(tmp_path, storage.SNAPSHOT_PATTERN)] == [20]
    recovered = recover(tmp_path)
    assert recovered.snapshot is not None
    assert CODEC.decode(recovered.snapshot.state, bounded=False)["k0"]["n"] == 20
    assert [entry.seq for entry in recovered.entries] == [21, 22, 23, 24, 25]


def test_snapshot_streams_encode_at_most_two_at_once_each_at_its_own_moment() -> None:
    """Each stream's snapshot is taken when its encoding starts (after waiting for a place),
    so header and state describe the same moment even for the stream that waited."""
    machine = StateMachine.from_init(Records(), CODEC, 1000)
    taken: list[int] = []

    def take() -> Any:
        seq = machine.applied_seq + 1  # a call between two takes, mutating in place
        machine.apply(LogEntry(seq, 1, Command(CommandKind.CALL, f"r{seq}", b'"bump"', 1.0, 0)))
        taken.append(seq)
        return machine.snapshot_parts()

    async def scenario() -> list[Any]:
        return list(await asyncio.gather(*(encode_off_loop(take) for _ in range(5))))

    snapshots = asyncio.run(scenario())
    assert sorted(taken) == [1, 2, 3, 4, 5]
    for snapshot in snapshots:
        assert CODEC.decode(snapshot.state, bounded=False)["k0"]["n"] == snapshot.applied_seq
