"""Write unavailability under each `partitionPolicy: Fenced` fault, per side.

    .venv/bin/python bench/partitions.py               # 5 trials per scenario
    .venv/bin/python bench/partitions.py --trials 2 --scenarios kill,pause

What runs: its own `gencluster dev up --no-operator` in a temporary directory and the operator
beside it (both stopped at the end, also on error); per scenario a 3-replica id_server (Sync,
minSyncStandbys 1, lease 4/3/1 s) in a namespace of its own, then N trials of: load (3
"majority" clients that know every pod, 3 "minority" clients that know only the pod the fault
hits; both follow redirects, as the client library does), fault with `gencluster dev fault`,
wait until the majority side makes progress again (or, for faults that stop every write,
until every client saw a call time out), heal, wait for progress, converge. The recording and
the checkers are the tests' own (`gencluster_testing.partitions.history`, `.checkers`): every
trial's history is also checked, and violations are reported (a bench that measured a broken run
would be measuring the wrong thing).

Unavailability of a side = the longest gap between two consecutive ok replies of that side's
clients that overlaps the window from the fault to the heal (`checkers.unavailability`).
Majority = clients that can reach the new active; minority = clients pinned to the faulted
pod. For `partition` (the active cut from both standbys while it keeps its Lease) and
`isolate-standby` no failover happens, so both sides are the same active.

Progress goes to stderr; stdout is a table and, as the LAST line, one JSON object:
{"trials", "scenarios": {name: {"majority_min", "majority_median", "majority_max",
"minority_min", "minority_median", "minority_max", "violations"}}, "seconds"} (seconds).
Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess
from gencluster_testing.partitions.checkers import all_fenced_checks, unavailability
from gencluster_testing.partitions.cluster import IdServerUnderTest
from gencluster_testing.partitions.history import LoadRecorder, Outcome
from gencluster_testing.waiting import wait_for

OK_CALLS = 15
DEADLINE = 60.0
SIDES = ("majority", "minority")

Driver = Callable[[IdServerUnderTest, LoadRecorder, dict[str, Any]], str]
"""Injects a scenario's fault against the active described by the status given, keeps load
until the scenario's effect showed, heals; returns the faulted pod."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _failover(kind: str) -> Driver:
    def drive(server: IdServerUnderTest, load: LoadRecorder, active: dict[str, Any]) -> str:
        pod = active["identity"]
        load.mark("fault")
        server.fault(kind, pod)
        server.wait_new_active(active["epoch"], DEADLINE, not_pod=pod)
        load.wait_for_ok_calls(OK_CALLS, DEADLINE, group="majority",
                               epoch_above=active["epoch"])
        load.mark("heal")
        server.heal()
        return pod
    return drive


def _partition_from_standbys(
    server: IdServerUnderTest, load: LoadRecorder, active: dict[str, Any]
) -> str:
    pod = active["identity"]
    load.mark("fault")
    for other in server.pods():
        if other != pod:
            server.fault("partition", pod, other)
    since = time.monotonic()
    wait_for(lambda: len({op.client for op in load.operations() if op.invoked_at >= since
                          and op.outcome is Outcome.UNKNOWN}) >= 6, DEADLINE, 0.2,
             "every client's call to time out")
    load.mark("heal")
    server.heal()
    return pod


def _isolate_standby(
    server: IdServerUnderTest, load: LoadRecorder, active: dict[str, Any]
) -> str:
    standby = sorted(p for p in server.pods() if p != active["identity"])[0]
    load.mark("fault")
    server.fault("isolate", standby)
    load.wait_for_ok_calls(OK_CALLS, DEADLINE, group="majority")

    def dropped() -> bool:
        listed = {s["identity"]: s for s in (server.active() or {}).get("standbys", [])}
        return standby not in listed or not listed[standby]["inSync"]
    wait_for(dropped, DEADLINE, 0.2, f"{standby} out of the in-sync set")
    load.wait_for_ok_calls(OK_CALLS, DEADLINE, group="majority")
    load.mark("heal")
    server.heal()
    return standby


SCENARIOS: dict[str, Driver] = {
    "kill": _failover("kill"),
    "pause": _failover("pause"),
    "cut-apiserver": _failover("cut-apiserver"),
    "partition": _partition_from_standbys,
    "isolate-standby": _isolate_standby,
    "isolate-active": _failover("isolate"),
}


def faulted_pod_for(scenario: str, server: IdServerUnderTest, active: dict[str, Any]) -> str:
    if scenario == "isolate-standby":
        return sorted(p for p in server.pods() if p != active["identity"])[0]
    return active["identity"]


def trial(scenario: str, server: IdServerUnderTest) -> tuple[dict[str, float], list[str]]:
    active = server.wait_converged(DEADLINE)
    pinned = server.address(faulted_pod_for(scenario, server, active))
    load = LoadRecorder(groups={"majority": server.addresses, "minority": [pinned]},
                        clients=3, call_timeout=5.0)
    with load:
        load.wait_for_ok_calls(OK_CALLS, DEADLINE)
        SCENARIOS[scenario](server, load, active)
        load.wait_for_ok_calls(OK_CALLS, DEADLINE)
    history = load.stop()
    server.wait_converged(DEADLINE)
    violations = all_fenced_checks(history, server.read_counter())
    figures = {side: unavailability(history, "fault", "heal", group=side) for side in SIDES}
    return figures, violations


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def summary(results: dict[str, dict[str, Any]], trials: int, seconds: float) -> dict[str, Any]:
    scenarios: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        row: dict[str, Any] = {"violations": result["violations"]}
        for side in SIDES:
            for key, value in spread(result[side]).items():
                row[f"{side}_{key}"] = value
        scenarios[name] = row
    return {"trials": trials, "scenarios": scenarios, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {', '.join(SCENARIOS)}")
    arguments = parser.parse_args(argv)
    chosen = [name.strip() for name in arguments.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown or arguments.trials < 1:
        parser.error(f"unknown scenarios {unknown}" if unknown else "--trials must be >= 1")
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gencluster-bench-partitions-") as directory:
        dev = DevClusterProcess(Path(directory) / "dev", "--restart-backoff", "0.5")
        operator = None
        try:
            operator = OperatorProcess(dev)
            for name in chosen:
                server = IdServerUnderTest.create(dev, f"bench-{name}", deadline=DEADLINE * 2)
                result: dict[str, Any] = {side: [] for side in SIDES}
                result["violations"] = 0
                for number in range(1, arguments.trials + 1):
                    figures, violations = trial(name, server)
                    for side in SIDES:
                        result[side].append(figures[side])
                    result["violations"] += len(violations)
                    log(f"{name} trial {number}: majority {figures['majority']:.2f}s, "
                        f"minority {figures['minority']:.2f}s"
                        + (f", VIOLATIONS: {violations[:3]}" if violations else ""))
                results[name] = result
                dev.kubectl("delete", "namespace", f"bench-{name}", "--wait=false",
                            check=False)
        finally:
            dev.gencluster("dev", "fault", "--dir", str(dev.dir), "heal", check=False)
            if operator is not None:
                operator.stop()
            dev.stop()
    report = summary(results, arguments.trials, time.monotonic() - started)
    print(f"{'scenario':<16} {'majority min/median/max (s)':>30} "
          f"{'minority min/median/max (s)':>30} violations")
    for name, row in report["scenarios"].items():
        majority = "/".join(f"{row[f'majority_{k}']:.2f}" for k in ("min", "median", "max"))
        minority = "/".join(f"{row[f'minority_{k}']:.2f}" for k in ("min", "median", "max"))
        print(f"{name:<16} {majority:>30} {minority:>30} {row['violations']}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
