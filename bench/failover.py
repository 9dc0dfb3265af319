"""Failover benchmark WITH the operator: the client-side outage when the active is SIGKILLed.

    python bench/failover.py               # 10 trials
    python bench/failover.py --trials 3
    python bench/failover.py --relist-period 1   # and again on a kubelet as late as a real one

What runs (see bench/README.md for the figures):

- `gencluster dev up --dir TMP --apply examples/id-server.yaml` in a temporary directory, with
  the operator (no `--no-operator`) and the example exactly as shipped: 3 replicas, Sync with
  minSyncStandbys 1, and the CRD's default lease (15 s duration);
- one caller thread looping on `next_value` through `gencluster.Client`, addressed to the
  Service `id-server` (`status.loadBalancer.ingress` IP and the Service port), as a user
  outside the cluster would;
- N trials: SIGKILL the active (`gencluster dev fault kill POD --dir TMP`; the kubelet restarts
  the container per restartPolicy), outage = from the last successful reply before the kill to
  the first successful reply after it; then wait until the ClusteredServer is Ready again
  (3 ready replicas, an active, every standby in sync) before the next trial.

Without the operator's failover assist, a killed active whose pod does not come back is
replaced only once its lease expires (15 s here). The kubelet's restart back-off is set
(`--restart-backoff`, default 2 s and doubling per crash of the same container) longer than
the outage it would otherwise explain: the restarted process also releases the Lease it finds
in its own name, so with a shorter back-off the restart, not the operator, could end the
outage. An outage well under the back-off is the operator's doing.

The dev kubelet hears of a container's exit at once; a real kubelet notices it at its PLEG's
next relist (every 1 s), so the operator's failover assist, which waits for the pod's status to
say the container is not running, sees a death later on a real node. `--relist-period 1`
repeats the trials on a fresh control plane started with `gencluster dev up --relist-period 1`
(the kubelet reports each death at its next 1 s tick) and prints both figures.

Progress goes to stderr; stdout is a short report and, as the LAST line, one JSON object
(`summary()`): {"trials", "outage_min", "outage_median", "outage_max",
"lease_duration_seconds"} (outages in seconds). Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    cluster_tls,
    clustered_server,
    get_json,
    serving,
)
from gencluster_testing.waiting import wait_for

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ID_SERVER = REPO / "examples" / "id-server.yaml"

NAME = "id-server"
NAMESPACE = "default"
LEASE_DURATION_SECONDS = 15
"""The CRD's default `spec.lease.durationSeconds` (examples/id-server.yaml leaves it out)."""

REQUIRED_KEYS = ("trials", "outage_min", "outage_median", "outage_max", "lease_duration_seconds")
"""What the last line always holds."""


def summary(
    outages: list[float], lease_duration_seconds: float,
    relist_outages: list[float] | None = None, relist_period: float | None = None,
) -> dict[str, Any]:
    """The machine-readable result (the last line). Pure, so
    tests/operator/test_bench_failover.py can check its keys without running anything.
    With no trial measured the outage figures are None (never a made-up number). With a
    relist period, the same figures for the kubelet that reports a death at its next relist
    (`relist_outage_*`, `relist_trials`, `relist_period_seconds`) stand next to the instant
    ones."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    result: dict[str, Any] = {
        "trials": len(outages),
        "outage_min": rounded(min(outages)) if outages else None,
        "outage_median": rounded(statistics.median(outages)) if outages else None,
        "outage_max": rounded(max(outages)) if outages else None,
        "lease_duration_seconds": lease_duration_seconds,
    }
    if relist_period is not None:
        late = relist_outages or []
        result.update({
            "relist_period_seconds": relist_period,
            "relist_trials": len(late),
            "relist_outage_min": rounded(min(late)) if late else None,
            "relist_outage_median": rounded(statistics.median(late)) if late else None,
            "relist_outage_max": rounded(max(late)) if late else None,
        })
    return result


def report(result: dict[str, Any]) -> str:
    """The human-readable part, printed before the JSON line."""
    lines = []
    if not result["trials"]:
        lines.append("no trial completed (kubelet reporting a death at once)")
    else:
        lines.append(
            f"SIGKILL of the active, with the operator, kubelet reporting the death at once, "
            f"{result['trials']} trials: client-side outage min {result['outage_min']} s, "
            f"median {result['outage_median']} s, max {result['outage_max']} s (lease "
            f"duration it would otherwise take: {result['lease_duration_seconds']} s)"
        )
    if result.get("relist_trials"):
        lines.append(
            f"the same with the death reported at the kubelet's next relist (every "
            f"{result['relist_period_seconds']} s, as a real kubelet's PLEG), "
            f"{result['relist_trials']} trials: min {result['relist_outage_min']} s, median "
            f"{result['relist_outage_median']} s, max {result['relist_outage_max']} s"
        )
    return "\n".join(lines)


class Caller:
    """One thread looping on `next_value` through `gencluster.Client`; records when each
    successful reply arrived (monotonic)."""

    def __init__(self, address: str, tls: Any = None) -> None:
        """`tls`: the cluster's `ClientTls` (`operator_process.cluster_tls`), None in plaintext."""
        from gencluster import Client

        self.client = Client(address, timeout=60, tls=tls)
        self.successes: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failover-caller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.call("next_value")
            except Exception as error:  # counted as a gap; the next call tries again
                self.errors.append(f"{type(error).__name__}: {error}")
                time.sleep(0.05)
                continue
            self.successes.append(time.monotonic())

    def count(self) -> int:
        return len(self.successes)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)
        self.client.close()


def outage_after(successes: list[float], fault_at: float) -> float | None:
    """From the last success before `fault_at` to the first one after it."""
    before = [t for t in successes if t <= fault_at]
    after = [t for t in successes if t > fault_at]
    if not before or not after:
        return None
    # The longest gap ending after the fault (a reply in flight at the kill may land late).
    gaps = [b - a for a, b in itertools.pairwise(sorted(successes)) if b > fault_at]
    return max(gaps)


def bench(trials: int, restart_backoff: float, log: Callable[[str], None],
          relist_period: float | None = None) -> dict[str, Any]:
    """The instant kubelet's trials and, with `relist_period`, the same on a fresh control
    plane whose kubelet reports deaths at its next relist."""
    started = time.monotonic()
    outages = trials_on(trials, restart_backoff, log, started, 0.0)
    relist_outages = None
    if relist_period is not None:
        relist_outages = trials_on(trials, restart_backoff, log, started, relist_period)
    result = summary(outages, LEASE_DURATION_SECONDS, relist_outages, relist_period)
    log(f"[{time.monotonic() - started:6.1f}s] done: {result}")
    return result


def trials_on(trials: int, restart_backoff: float, log: Callable[[str], None], started: float,
              relist_period: float) -> list[float]:
    """`trials` SIGKILLs on a fresh `gencluster dev up`; the outages measured."""
    outages: list[float] = []

    def note(message: str) -> None:
        log(f"[{time.monotonic() - started:6.1f}s] {message}")

    def ready() -> dict[str, Any] | None:
        """Ready again: 3 ready replicas, an active, every standby in sync."""
        resource = serving(dev, NAMESPACE, NAME)
        status = (resource or {}).get("status") or {}
        if resource and status.get("readyReplicas") == 3 and status.get("activePod"):
            return status
        return None

    def service_address() -> str:
        service = get_json(dev, "service", NAME, "-n", NAMESPACE)
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if not ingress or not ingress[0].get("ip"):
            return ""
        return f"{ingress[0]['ip']}:{service['spec']['ports'][0]['port']}"

    with tempfile.TemporaryDirectory(prefix="gencluster-failover-") as tmp:
        dev = DevClusterProcess(
            Path(tmp) / "dev", "--apply", str(ID_SERVER),
            "--restart-backoff", str(restart_backoff), "--relist-period", str(relist_period),
            operator=True,
        )
        caller: Caller | None = None
        try:
            status = wait_for(ready, 180, message="id-server Ready", interval=0.2)
            address = wait_for(service_address, 60, message="the Service's loadBalancer ingress")
            note(f"id-server Ready, active {status['activePod']}, Service at {address}")
            caller = Caller(address, cluster_tls(dev, NAMESPACE, NAME))
            for trial in range(trials):
                status = wait_for(ready, 300, message="id-server Ready again", interval=0.2)
                active, epoch = status["activePod"], status["epoch"]
                count = caller.count()
                wait_for(lambda c=count: caller.count() >= c + 50, 60, 0.01,
                         message="calls before the kill")
                fault_at = time.monotonic()
                dev.gencluster("dev", "fault", "--dir", str(dev.dir), "kill",
                               f"{NAMESPACE}/{active}")
                # A successful reply after the kill, well past the outage.
                wait_for(lambda f=fault_at: any(t > f for t in caller.successes), 120,
                         message="a reply after the kill", interval=0.01)
                after = caller.count()
                wait_for(lambda a=after: caller.count() >= a + 50, 60, 0.01,
                         message="calls after the kill")
                outage = outage_after(list(caller.successes), fault_at)
                if outage is None:
                    note(f"trial {trial + 1}: no reply on one side of the kill; not counted")
                    continue
                outages.append(outage)
                def moved(e: int = epoch) -> dict[str, Any] | None:
                    now = clustered_server(dev, NAMESPACE, NAME).get("status") or {}
                    return now if now.get("epoch", 0) > e else None

                reason = wait_for(moved, 120, message="a new epoch").get("lastFailoverReason")
                note(f"relist {relist_period}s, trial {trial + 1}: killed {active}, "
                     f"outage {outage:.3f}s "
                     f"(reason {reason}, {len(caller.errors)} caller errors so far)")
            wait_for(ready, 300, message="id-server Ready at the end", interval=0.2)
        except Exception as error:  # report the trials that were measured
            note(f"stopped: {type(error).__name__}: {error}")
        finally:
            if caller is not None:
                caller.stop()
            dev.stop()  # SIGTERM to the `gencluster dev up` process, by PID
    return outages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="SIGKILLs of the active")
    parser.add_argument("--restart-backoff", type=float, default=2.0,
                        help="the dev kubelet's first crash-loop back-off in seconds")
    parser.add_argument("--relist-period", type=float, default=None, metavar="SECONDS",
                        help="also run the trials on a kubelet that reports a death at its "
                        "next relist of this period, like a real kubelet's PLEG (1)")
    args = parser.parse_args(argv)
    if args.relist_period is not None and not args.relist_period > 0:
        parser.error("--relist-period must be more than 0 seconds")
    result = bench(args.trials, args.restart_backoff,
                   lambda line: print(line, file=sys.stderr, flush=True), args.relist_period)
    print(report(result))
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
