"""Large state never costs the Lease: the event loop's longest stall while a whole state is
encoded for a snapshot, in ONE run on one machine (issue #12 part 5).

    python bench/large_state.py            # about 500 MB encoded (2.5 M records of ~200 B)
    python bench/large_state.py --mb 50    # quicker

No cluster: the same `StateMachine.snapshot_parts` + `state_encoding.forked` path the active's
journal checkpoints, Peer.Snapshot and Admin.ExportState use, with the loop ticking every
5 ms beside it and calls mutating the state in place while the child encodes. Printed, and as
the last line one JSON object: `state_mb` (encoded), `records`, `forked_longest_stall_s` (the
longest gap between two ticks from the fork to the snapshot's arrival), `forked_fork_s`,
`forked_total_s`, `on_loop_encode_s` (the stall the earlier on-loop encoding caused: one
encode on the loop, measured in the same run), `ratio_stall_forked_to_on_loop`,
`renew_deadline_default_s` (10) and `load_average_start`/`_end`. Figures are of a shared,
noisy machine: the ratio is what means something; nothing here is a pass/fail test
(tests/runtime/test_large_state_lease.py is the condition, on 1,000,000 records)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from gencluster.codec import JsonCodec
from gencluster.election import ElectionConfig
from gencluster.machine import StateMachine
from gencluster.server import Context, GenServer
from gencluster.state_encoding import forked

TICK = 0.005
RECORD_BYTES = 200


class Records(GenServer):
    def init(self, args: Any) -> dict[str, Any]:
        filler = "x" * (RECORD_BYTES - 40)
        return {f"k{i}": {"n": i, "s": filler, "ok": True} for i in range(args)}

    def handle_call(self, request: Any, ctx: Context, state: Any) -> Any:
        return None, state


async def _pulse(stop: asyncio.Event) -> float:
    last = time.monotonic()
    longest = 0.0
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
    return longest


async def _forked_snapshot(machine: StateMachine) -> tuple[float, float, float, int]:
    stop = asyncio.Event()
    pulse = asyncio.create_task(_pulse(stop))
    await asyncio.sleep(TICK * 4)
    started = time.monotonic()
    pending = forked(machine.snapshot_parts())
    fork_seconds = time.monotonic() - started
    for number in range(1000):  # calls keep changing the state in place meanwhile
        machine.state[f"k{number}"]["n"] += 1
        await asyncio.sleep(0)
    snapshot = await asyncio.get_running_loop().run_in_executor(None, pending.result)
    total = time.monotonic() - started
    stop.set()
    return await pulse, fork_seconds, total, len(snapshot.state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=500.0, help="encoded state size (MB)")
    options = parser.parse_args()
    records = int(options.mb * 1e6 / RECORD_BYTES)
    load_start = os.getloadavg()
    print(f"building {records} records ...", file=sys.stderr)
    codec = JsonCodec()
    machine = StateMachine.from_init(Records(), codec, records)
    print("encoding in a forked child, the loop ticking ...", file=sys.stderr)
    stall, fork_seconds, total, size = asyncio.run(_forked_snapshot(machine))
    print("encoding on the loop (the earlier path) ...", file=sys.stderr)
    started = time.monotonic()
    codec.encode(machine.state, what="state", bounded=False)
    on_loop = time.monotonic() - started
    deadline = ElectionConfig().renew_deadline
    result = {
        "state_mb": round(size / 1e6, 1),
        "records": records,
        "forked_longest_stall_s": round(stall, 4),
        "forked_fork_s": round(fork_seconds, 4),
        "forked_total_s": round(total, 2),
        "on_loop_encode_s": round(on_loop, 2),
        "ratio_stall_forked_to_on_loop": round(stall / on_loop, 4),
        "renew_deadline_default_s": deadline,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"state {result['state_mb']} MB ({records} records): longest event-loop stall "
          f"{stall:.3f} s while a forked child encoded it in {total:.1f} s (fork "
          f"{fork_seconds * 1000:.0f} ms); on the loop the encoding alone stalls "
          f"{on_loop:.1f} s; renew deadline {deadline} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
