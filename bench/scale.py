"""Cost at scale: N ClusteredServers of 3 replicas under one operator on the local control plane.

    python bench/scale.py --quick     # N = 1, then 5
    python bench/scale.py             # N = 1, then 10, then 30

What runs (see bench/README.md for the figures):

- `gencluster dev up --no-operator` in a temporary directory and ONE operator process
  (`python -m gencluster_operator.main --all-namespaces`, as the Helm chart's ServiceAccount
  with the chart's RBAC: `gencluster_testing.operator_process.OperatorProcess`);
- the control plane alone is watched idle first (`baseline`): the dev controllers and kubelet
  make requests of their own with no workload;
- then ClusteredServers `s0`, `s1`... (examples/id-server.yaml's spec: id_server, 3 replicas,
  Sync, the CRD's default lease 15/10/2 s) are added in steps until N of them run: N = 1, 5
  (quick) or 1, 10, 30. For each step:
  * `all_ready_seconds`: from the `kubectl apply` of the step's new ClusteredServers until
    every ClusteredServer is Ready with both standbys in sync (`operator_process.serving`'s
    condition, read from one `kubectl get csrv -o json` every 0.5 s);
  * the operator's CPU seconds during that time, and then at rest;
  * at rest (after a settle time), over an idle window: API requests per second counted by
    the local API server itself (its `/metrics`, `apiserver_request_total` by user and
    client), minus the baseline rate, divided by N; split into the operator's, the pods' and
    the control plane's own; the bench's own `kubectl get --raw /metrics` reads are left out
    (client `kubectl`, nothing else uses kubectl during the window);
  * the operator's RSS and CPU share at rest, every server pod's RSS (its container process
    and children, from /proc) at rest;
  * a SIGKILL of `s0`'s active with the other clusters running: the client-side outage of a
    caller on `s0`'s Service (`failover.Caller`, as bench/failover.py measures it).

Progress goes to stderr; stdout is a table and, as the LAST line, one JSON object
(`summary()`): `clusters` and, per step in the same order, `all_ready_seconds`,
`api_requests_per_second_per_idle_cluster`, `operator_rss_mb`, `pod_rss_mb` (median over
pods), and more (see `summary`). Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    client_service_address,
    serving,
)
from gencluster_testing.process_tree import process_tree
from gencluster_testing.waiting import wait_for

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ID_SERVER = REPO / "examples" / "id-server.yaml"
NAMESPACE = "default"

REQUIRED_KEYS = ("clusters", "all_ready_seconds", "api_requests_per_second_per_idle_cluster",
                 "operator_rss_mb", "pod_rss_mb")
"""What the last line always holds (one value per step, in the order of `clusters`)."""

PAGE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
METRIC_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Settings:
    steps: tuple[int, ...]
    settle_s: float
    idle_s: float
    baseline_s: float
    failover_trials: int

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls((1, 5), 5.0, 20.0, 10.0, 1)
        return cls((1, 10, 30), 10.0, 60.0, 30.0, 3)


@dataclass
class Step:
    """What one step measured (N ClusteredServers running)."""

    clusters: int
    all_ready_seconds: float | None = None
    operator_cpu_seconds_to_ready: float | None = None
    idle_requests_per_second: float | None = None
    idle_requests_by_source: dict[str, float] = field(default_factory=dict)
    idle_requests_by_verb: dict[str, float] = field(default_factory=dict)
    operator_cpu_share_idle: float | None = None
    operator_rss_mb: float | None = None
    pod_rss_mb: list[float] = field(default_factory=list)
    pod_cpu_share_idle: list[float] = field(default_factory=list)
    outages: list[float] = field(default_factory=list)


# -- /proc ---------------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except OSError:
            continue
    return total / 1024 / 1024


# -- the API server's request counter -------------------------------------------------------------


def parse_request_counts(text: str) -> dict[tuple[str, ...], float]:
    """`apiserver_request_total` samples: (verb, resource, code, username, client) -> count."""
    counts: dict[tuple[str, ...], float] = {}
    for match in METRIC_LINE.finditer(text):
        labels = dict(LABEL.findall(match.group("labels")))
        key = tuple(labels.get(name, "") for name in
                    ("verb", "resource", "code", "username", "client"))
        counts[key] = counts.get(key, 0.0) + float(match.group("value"))
    return counts


def source_of(username: str, client: str, operator_user: str) -> str:
    """Who made a request: the operator, a server pod, the bench's own reads, or the control
    plane's own controllers and kubelet."""
    if client == "kubectl":
        return "bench"
    if username == operator_user:
        return "operator"
    if username.startswith("system:serviceaccount:"):
        return "pods"
    return "control_plane"


def rates(
    before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float], seconds: float,
    operator_user: str,
) -> tuple[dict[str, float], dict[str, float]]:
    """Requests per second over a window, by source and by `<source> <verb> <resource>`; the
    bench's own reads are left out."""
    by_source: dict[str, float] = {}
    by_verb: dict[str, float] = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta <= 0:
            continue
        verb, resource, _code, username, client = key
        source = source_of(username, client, operator_user)
        if source == "bench":
            continue
        by_source[source] = by_source.get(source, 0.0) + delta / seconds
        label = f"{source} {verb} {resource}"
        by_verb[label] = by_verb.get(label, 0.0) + delta / seconds
    return by_source, by_verb


# -- the summary ----------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summary(steps: list[Step], baseline_rps: float | None, *, quick: bool) -> dict[str, Any]:
    """The last line. Pure, so tests/operator/test_bench_scale.py checks its keys without
    running anything. Per-step lists follow `clusters`; a figure not measured is None."""

    def per_cluster(step: Step) -> float | None:
        if step.idle_requests_per_second is None or baseline_rps is None:
            return None
        return (step.idle_requests_per_second - baseline_rps) / step.clusters

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    return {
        "quick": quick,
        "clusters": [s.clusters for s in steps],
        "replicas_per_cluster": 3,
        "all_ready_seconds": [_round(s.all_ready_seconds, 2) for s in steps],
        "operator_cpu_seconds_to_ready": [_round(s.operator_cpu_seconds_to_ready, 2)
                                          for s in steps],
        "api_requests_per_second_baseline": _round(baseline_rps, 2),
        "api_requests_per_second_idle": [_round(s.idle_requests_per_second, 2) for s in steps],
        "api_requests_per_second_per_idle_cluster": [_round(per_cluster(s), 3) for s in steps],
        "api_requests_per_second_idle_by_source": [
            {k: round(v, 3) for k, v in sorted(s.idle_requests_by_source.items())}
            for s in steps],
        "operator_cpu_share_idle": [_round(s.operator_cpu_share_idle, 4) for s in steps],
        "operator_rss_mb": [_round(s.operator_rss_mb, 1) for s in steps],
        "pod_rss_mb": [_round(median(s.pod_rss_mb), 1) for s in steps],
        "pod_rss_mb_max": [_round(max(s.pod_rss_mb, default=None), 1)  # type: ignore[type-var]
                           for s in steps],
        "pod_cpu_share_idle": [_round(median(s.pod_cpu_share_idle), 4) for s in steps],
        "outage_sigkill_median_s": [_round(median(s.outages)) for s in steps],
        "outage_sigkill_trials": [len(s.outages) for s in steps],
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'clusters':>8}{'ready s':>9}{'api req/s/cluster':>19}{'operator MB':>13}"
             f"{'op cpu idle':>13}{'pod MB':>8}{'sigkill s':>11}"]
    for i, n in enumerate(result["clusters"]):
        lines.append(
            f"{n:>8}{result['all_ready_seconds'][i]!s:>9}"
            f"{result['api_requests_per_second_per_idle_cluster'][i]!s:>19}"
            f"{result['operator_rss_mb'][i]!s:>13}{result['operator_cpu_share_idle'][i]!s:>13}"
            f"{result['pod_rss_mb'][i]!s:>8}{result['outage_sigkill_median_s'][i]!s:>11}"
        )
    lines.append(f"baseline (control plane alone): "
                 f"{result['api_requests_per_second_baseline']} requests/s")
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------------


def cluster_document(name: str) -> dict[str, Any]:
    document = yaml.safe_load(ID_SERVER.read_text())
    document["metadata"] = {"name": name, "namespace": NAMESPACE}
    document["spec"]["template"] = {"spec": {"env": [
        {"name": "GENCLUSTER_LOG_LEVEL", "value": "WARNING"}]}}
    return document


def all_serving(dev: DevClusterProcess, names: list[str]) -> bool:
    listing = json.loads(dev.kubectl("get", "csrv", "-n", NAMESPACE, "-o", "json").stdout)
    by_name = {item["metadata"]["name"]: item for item in listing["items"]}
    return all(name in by_name and is_serving(by_name[name]) for name in names)


def is_serving(resource: dict[str, Any]) -> bool:
    """`operator_process.serving`'s condition on an already-read object."""
    status = resource.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    standbys = status.get("standbys") or []
    return (ready.get("status") == "True"
            and status.get("observedGeneration") == resource["metadata"]["generation"]
            and len(standbys) == resource["spec"]["replicas"] - 1
            and all(s.get("inSync") for s in standbys))


def scrape(dev: DevClusterProcess) -> dict[tuple[str, ...], float]:
    return parse_request_counts(dev.kubectl("get", "--raw", "/metrics").stdout)


def server_pods(dev: DevClusterProcess) -> list[list[int]]:
    """The process trees of the running server pods."""
    from gencluster_dev.network.faults import FaultInjector

    trees = []
    for pod in FaultInjector(dev.dir).pods():
        pids = [pid for pid in pod.pids.values() if pid]
        alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        if alive and pod.namespace == NAMESPACE:
            trees.append([p for pid in alive for p in process_tree(pid)])
    return trees


def operator_user() -> str:
    from gencluster_testing.chart_rbac import NAMESPACE as OPERATOR_NAMESPACE
    from gencluster_testing.chart_rbac import chart_rbac_objects

    (account,) = [o for o in chart_rbac_objects() if o["kind"] == "ServiceAccount"]
    return f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account['metadata']['name']}"


def failover_trial(dev: DevClusterProcess, name: str) -> float | None:
    """SIGKILL `name`'s active under a caller on its Service; the client-side outage."""
    from failover import Caller, outage_after

    status = wait_for(lambda: serving(dev, NAMESPACE, name), 300, 0.5,
                      message=f"{name} Ready before the kill")["status"]
    caller = Caller(client_service_address(dev, NAMESPACE, name))
    try:
        count = caller.count()
        wait_for(lambda: caller.count() >= count + 50, 60, 0.01, message="calls before")
        fault_at = time.monotonic()
        dev.gencluster("dev", "fault", "--dir", str(dev.dir), "kill",
                       f"{NAMESPACE}/{status['activePod']}")
        wait_for(lambda: any(t > fault_at for t in caller.successes), 120, 0.01,
                 message="a reply after the kill")
        after = caller.count()
        wait_for(lambda: caller.count() >= after + 50, 60, 0.01, message="calls after")
        return outage_after(list(caller.successes), fault_at)
    finally:
        caller.stop()


def bench(settings: Settings, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.monotonic()
    load_start = os.getloadavg()
    steps: list[Step] = []
    baseline_rps: float | None = None

    def note(message: str) -> None:
        log(f"[{time.monotonic() - started:6.1f}s] {message}")

    user = operator_user()
    with tempfile.TemporaryDirectory(prefix="gencluster-scale-") as tmp:
        dev = DevClusterProcess(Path(tmp) / "dev", "--restart-backoff", "2")
        operator: OperatorProcess | None = None
        try:
            before = scrape(dev)
            time.sleep(settings.baseline_s)
            by_source, _ = rates(before, scrape(dev), settings.baseline_s, user)
            baseline_rps = sum(by_source.values())
            note(f"baseline (control plane alone): {baseline_rps:.2f} requests/s {by_source}")
            operator = OperatorProcess(dev)
            operator_pids = process_tree(operator.process.pid)
            names: list[str] = []
            for target in settings.steps:
                step = Step(target)
                steps.append(step)
                new = [f"s{i}" for i in range(len(names), target)]
                names.extend(new)
                cpu_before = cpu_seconds(operator_pids)
                applied_at = time.monotonic()
                dev.kubectl("apply", "-f", "-", timeout=120, input=yaml.safe_dump_all(
                    [cluster_document(name) for name in new]))
                wait_for(lambda: all_serving(dev, names), 120 + 20 * len(new), 0.5,
                         message=f"{len(names)} ClusteredServers Ready")
                step.all_ready_seconds = time.monotonic() - applied_at
                step.operator_cpu_seconds_to_ready = cpu_seconds(operator_pids) - cpu_before
                note(f"{target} clusters Ready {step.all_ready_seconds:.1f}s after the apply "
                     f"of {len(new)} (operator CPU {step.operator_cpu_seconds_to_ready:.2f}s)")
                time.sleep(settings.settle_s)
                pods = server_pods(dev)
                counts_before = scrape(dev)
                operator_cpu = cpu_seconds(operator_pids)
                pods_cpu = [cpu_seconds(tree) for tree in pods]
                idle_from = time.monotonic()
                time.sleep(settings.idle_s)
                idle = time.monotonic() - idle_from
                by_source, by_verb = rates(counts_before, scrape(dev), idle, user)
                step.idle_requests_per_second = sum(by_source.values())
                step.idle_requests_by_source = by_source
                step.idle_requests_by_verb = by_verb
                step.operator_cpu_share_idle = (cpu_seconds(operator_pids) - operator_cpu) / idle
                step.pod_cpu_share_idle = [(cpu_seconds(tree) - cpu) / idle
                                           for tree, cpu in zip(pods, pods_cpu, strict=True)]
                step.operator_rss_mb = rss_mb(operator_pids)
                step.pod_rss_mb = [rss_mb(tree) for tree in pods]
                note(f"{target} clusters at rest: {step.idle_requests_per_second:.2f} requests/s"
                     f" {by_source}; top: " + ", ".join(
                         f"{k} {v:.2f}" for k, v in sorted(by_verb.items(),
                                                           key=lambda kv: -kv[1])[:6]))
                note(f"operator RSS {step.operator_rss_mb:.1f} MB, CPU share at rest "
                     f"{step.operator_cpu_share_idle:.4f}; {len(pods)} pods, RSS median "
                     f"{statistics.median(step.pod_rss_mb):.1f} MB")
                for _ in range(settings.failover_trials):
                    try:
                        outage = failover_trial(dev, "s0")
                    except Exception as error:  # the other figures of the step still stand
                        note(f"failover trial stopped: {type(error).__name__}: {error}")
                        break
                    if outage is not None:
                        step.outages.append(outage)
                        note(f"SIGKILL of s0's active with {target} clusters: outage "
                             f"{outage:.3f}s")
                wait_for(lambda: all_serving(dev, names), 300, 0.5,
                         message="every ClusteredServer Ready after the failover")
        except Exception as error:  # report the steps that were measured
            note(f"stopped: {type(error).__name__}: {error}")
            listing = dev.kubectl("get", "csrv", "-n", NAMESPACE, check=False).stdout
            note(f"ClusteredServers at the stop:\n{listing}")
            if operator is not None:
                note(f"the operator's log, last lines:\n{operator.output()[-4000:]}")
        finally:
            if operator is not None:
                operator.stop()
            dev.stop()
    result = summary(steps, baseline_rps, quick=quick)
    result["api_requests_per_second_idle_by_verb"] = [
        {k: round(v, 3) for k, v in sorted(s.idle_requests_by_verb.items())} for s in steps]
    result["idle_window_seconds"] = settings.idle_s
    result["seconds"] = round(time.monotonic() - started, 1)
    result["load_average_start"] = [round(x, 2) for x in load_start]
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["cores"] = os.cpu_count()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 5 instead of 1, 10, 30")
    parser.add_argument("--steps", type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="cluster counts to step through, e.g. 1,10,30")
    args = parser.parse_args(argv)
    settings = Settings.for_mode(args.quick)
    if args.steps:
        settings = Settings(args.steps, settings.settle_s, settings.idle_s,
                            settings.baseline_s, settings.failover_trials)
    result = bench(settings, args.quick, lambda line: print(line, file=sys.stderr, flush=True))
    print(table(result))
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
