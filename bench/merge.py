"""Partition recovery with `partitionPolicy: Available`: convergence after the heal, and what
each side of the split could still do.

    .venv/bin/python bench/merge.py                 # 5 trials per scenario
    .venv/bin/python bench/merge.py --trials 2 --scenarios isolate

What runs: its own `gencluster dev up --no-operator` in a temporary directory and the operator
beside it (both stopped at the end, also on error; run as root: the faults are nftables rules
keyed on each pod's uid); per scenario an id_server (3 replicas, Async, lease 4/3/1 s,
`partitionPolicy: Available`) in a namespace of its own, then N trials of the tests' own run
(`gencluster_testing.partitions.available_run.run_split`): clients pinned to the active, fault
the active (`isolate`: cut from its peers and the API server; `pause`: SIGSTOP past its lease), wait
until the other side has its own active (clients pinned to the other pods start then) and
both sides served, heal (`gencluster dev fault heal` / `resume`), stop the clients, wait for
the operator's merge and for convergence.

Figures per scenario, min / median / max over the trials, in seconds:

- `convergence`: from the heal (the fault command returned) to one active and every pod at
  the same epoch, applied sequence and state (Admin Status and GetState, polled every 50 ms);
- `isolated_unavailable`: the longest stretch without an ok reply for the clients pinned to
  the faulted active, between the fault and the heal (Available's point: about zero for
  `isolate`; for `pause` it is the pause itself, nobody can answer for a stopped process);
- `others_failover`: from the fault to the first ok reply of the new term on the other side
  (lease expiry and election: the price on that side, bounded by the lease duration);
- `others_unavailable`: the longest stretch without an ok reply on the other side once it had
  its own active, until the heal.

Each trial's history is also checked (`gencluster_testing.partitions.merge_checks`) and the
counter is called once after convergence (it must continue above every value handed out); violations
are reported. Progress goes to stderr; stdout is a table and, as the LAST line, one JSON
object: {"trials", "scenarios": {name: {"convergence_min", "convergence_median",
"convergence_max", "isolated_unavailable_...", "others_failover_...",
"others_unavailable_...", "violations"}}, "seconds"}. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gencluster.client import Client
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess
from gencluster_testing.partitions.available_run import (
    ISOLATED,
    OTHERS,
    PORT,
    AvailableIdServer,
    run_split,
)
from gencluster_testing.partitions.merge_checks import (
    both_sides_served,
    duplicates_only_across_the_split,
    each_term_is_a_counter,
    split_figures,
)

SCENARIOS = ("isolate", "pause")
FIGURES = ("convergence", "isolated_unavailable", "others_failover", "others_unavailable")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trial(server: AvailableIdServer, scenario: str) -> tuple[dict[str, float], list[str]]:
    """One split and merge; its figures and the violations its history shows."""
    run = run_split(server, scenario, load_after_heal=False)
    figures = split_figures(run.history, isolated=ISOLATED, other=OTHERS,
                            new_epoch_above=run.loser_epoch)
    violations = each_term_is_a_counter(run.history)
    violations += duplicates_only_across_the_split(run.history, "split", "merged")
    if scenario != "pause":
        violations += both_sides_served(run.history, "split", "heal", [ISOLATED, OTHERS])
    handed_out = max(op.value for op in run.history.ok())
    addresses = ",".join(f"{server.ip(pod)}:{PORT}" for pod in server.pod_names())
    with Client(addresses, timeout=30) as client:
        after = client.call("next_value")
    if after <= handed_out:
        violations.append(f"after the merge the counter handed out {after}, not above "
                          f"{handed_out} handed out before")
    assert run.convergence_seconds is not None
    return {
        "convergence": run.convergence_seconds,
        "isolated_unavailable": figures.isolated_side_unavailable,
        "others_failover": figures.other_side_failover,
        "others_unavailable": figures.other_side_unavailable_after_failover,
    }, violations


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def summary(results: dict[str, dict[str, Any]], trials: int, seconds: float) -> dict[str, Any]:
    scenarios = {}
    for name, result in results.items():
        row: dict[str, Any] = {}
        for figure in FIGURES:
            for key, value in spread(result[figure]).items():
                row[f"{figure}_{key}"] = value
        row["violations"] = result["violations"]
        scenarios[name] = row
    return {"trials": trials, "scenarios": scenarios, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    options = parser.parse_args(argv)
    scenarios = [s for s in options.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gencluster-bench-merge-") as directory:
        dev = DevClusterProcess(Path(directory) / "dev", "--restart-backoff", "0.5")
        operator = None
        try:
            operator = OperatorProcess(dev)
            for scenario in scenarios:
                server = AvailableIdServer.start(dev, f"merge-{scenario}")
                result: dict[str, Any] = {figure: [] for figure in FIGURES}
                result["violations"] = []
                for number in range(1, options.trials + 1):
                    figures, violations = trial(server, scenario)
                    for figure, value in figures.items():
                        result[figure].append(value)
                    result["violations"] += [f"trial {number}: {v}" for v in violations]
                    log(f"{scenario} trial {number}: "
                        + ", ".join(f"{k} {v:.2f}s" for k, v in figures.items())
                        + (f", {len(violations)} violations" if violations else ""))
                results[scenario] = result
        finally:
            if operator is not None:
                operator.stop()
            dev.gencluster("dev", "fault", "--dir", str(dev.dir), "heal", check=False)
            dev.stop()
    report = summary(results, options.trials, time.monotonic() - started)
    print(f"{'scenario':10} {'figure':22} {'min':>7} {'median':>7} {'max':>7}")
    for name, row in report["scenarios"].items():
        for figure in FIGURES:
            print(f"{name:10} {figure:22} {row[figure + '_min']:7.2f} "
                  f"{row[figure + '_median']:7.2f} {row[figure + '_max']:7.2f}")
        for violation in row["violations"]:
            print(f"{name:10} VIOLATION {violation}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
