"""Durability benchmark WITH the operator: what persistence costs and what it buys, in ONE run.

    python bench/durability.py --quick   # 10 MB states, 3 throughput rounds, 5 restarts
    python bench/durability.py           # 100 MB states, 5 rounds, 7 restarts

What runs (figures in bench/README.md):

- `gencluster dev up` (with the operator) in a temporary directory, and two ClusteredServers
  of `bench_server:FillServer` (id_server's counter plus a blob that one call makes large),
  3 replicas, Sync with minSyncStandbys 2 (every reply waits for both standbys), lease 3/2/1 s:
  `plain` (memory only) and `durable` (`spec.persistence.enabled`: each pod's log and
  snapshots on its own PersistentVolumeClaim, bound by the control plane's local-path class);
- (a) throughput: `next_value` through `gencluster.AsyncClient` (the pods' addresses) at 1 and
  64 calls in flight against a bare grpc.aio server doing the same work
  (`replication.py --serve-bare`), `plain` and `durable`, alternated in rounds; every ratio is
  the **median of the per-round ratios** (paired rounds), so a burst of someone else's load hits
  one pair, not one setup;
- (b) whole-cluster restart of `durable`: a caller loops on `next_value` through the client
  Service (re-created pods get new addresses); all three pods go
  down at once, once by SIGKILL (`gencluster dev fault kill`, three at a time; the kubelet
  restarts the containers after its base back-off: `restart_sigkill_s`), then N times by
  `kubectl delete pods --grace-period=0 --force` (the operator creates new pods on the same
  claims: `restart_{min,median,max}_s`; repeated SIGKILLs would measure the kubelet's doubling
  back-off instead); each figure is from the fault to the first successful reply, and each
  trial checks that every reply is above the one before it (`lost_acknowledged` counts the
  trials where one was not: it must be 0);
- (c) join of a restarted standby with a large state: SIGKILL one standby of each cluster, time
  from the kill until it is back in sync at the active's sequence: `durable` restores from its
  own volume and catches up by log, `plain` holds nothing and joins by snapshot;
- (d) restore: `kubectl gencluster backup plain -o FILE` (the large state), SIGKILL every pod
  of `plain` (memory only: the state is lost, the cluster reports StateLost), then
  `kubectl gencluster restore plain FILE`; the figures are the restore command's duration and
  the time from its start to the first served call, which must be above the backed-up value.

Progress goes to stderr; stdout is a table and, as the LAST line, one JSON object. A part that
could not be measured is absent from the JSON (never a made-up number). Nothing here is a
pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import get_json, serving
from gencluster_testing.waiting import wait_for
from replication import LoadResult, bare_server, measure

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EXAMPLES = REPO / "examples"
NAMESPACE = "default"
PORT = 50051
LEASE = {"durationSeconds": 3, "renewDeadlineSeconds": 2, "retryPeriodSeconds": 1}
CLUSTERS = ("plain", "durable")


@dataclass(frozen=True)
class Settings:
    quick: bool
    warmup_s: float
    load_s: float
    rounds: int
    restarts: int
    state_bytes: int

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 0.5, 1.5, 3, 5, 10 * 1024 * 1024)
        return cls(False, 1.0, 4.0, 5, 7, 100 * 1024 * 1024)


def manifest(name: str, persistent: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "server": "bench_server:FillServer",
        "replicas": 3,
        "port": PORT,
        "replication": {"mode": "Sync", "minSyncStandbys": 2},
        "lease": LEASE,
        # Plaintext, as the figures in bench/README.md were measured: this bench prices
        # persistence; what TLS costs is `replication.py --tls-cost`.
        "tls": {"enabled": False},
        "template": {"spec": {"env": [
            {"name": "GENCLUSTER_LOG_LEVEL", "value": "WARNING"},
            {"name": "PYTHONPATH", "value": f"{EXAMPLES}{os.pathsep}{BENCH}"},
        ]}},
    }
    if persistent:
        spec["persistence"] = {"enabled": True, "size": "1Gi"}
    return {"apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


class Plane:
    """The control plane and what the bench asks of it."""

    def __init__(self, dev: DevClusterProcess) -> None:
        self.dev = dev

    def apply(self, resource: dict[str, Any]) -> None:
        self.dev.kubectl("apply", "-f", "-", input=json.dumps(resource))

    def serving(self, name: str, timeout: float = 180) -> dict[str, Any]:
        return wait_for(lambda: serving(self.dev, NAMESPACE, name), timeout, 0.2,
                        f"{name} Ready with every standby in sync")

    def pods(self, name: str) -> list[dict[str, Any]]:
        listed = get_json(self.dev, "pods", "-n", NAMESPACE, "-l", f"gencluster.io/cluster={name}")
        return [pod for pod in listed["items"] if not pod["metadata"].get("deletionTimestamp")]

    def addresses(self, name: str) -> str:
        return ",".join(f"{pod['status']['podIP']}:{PORT}" for pod in self.pods(name)
                        if pod.get("status", {}).get("podIP"))

    def service_address(self, name: str) -> str:
        """The client Service's address (`status.loadBalancer.ingress`, as a user outside the
        cluster reaches it): pods' addresses change when pods are re-created."""

        def ingress() -> str:
            service = get_json(self.dev, "svc", name, "-n", NAMESPACE)
            found = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            if not found or not found[0].get("ip"):
                return ""
            return f"{found[0]['ip']}:{service['spec']['ports'][0]['port']}"

        return wait_for(ingress, 60, 0.2, f"{name}'s Service address")

    def status(self, name: str) -> dict[str, Any]:
        return get_json(self.dev, "csrv", name, "-n", NAMESPACE).get("status") or {}

    def kill(self, *pods: str) -> None:
        """SIGKILL `pods` at once (one `dev fault kill` each, started together)."""
        threads = [
            threading.Thread(target=self.dev.gencluster, args=(
                "dev", "fault", "--dir", str(self.dev.dir), "kill", f"{NAMESPACE}/{pod}"))
            for pod in pods
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def plugin(self, *args: str) -> float:
        """Run `kubectl gencluster ARGS`; return its duration."""
        env = {**os.environ, "KUBECONFIG": str(self.dev.kubeconfig),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        started = time.monotonic()
        result = subprocess.run(["kubectl", "gencluster", *args], env=env, capture_output=True,
                                text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl gencluster {' '.join(args)}: {result.stderr.strip()}")
        return time.monotonic() - started


def call(addresses: str, request: Any, timeout: float = 120) -> Any:
    from gencluster import Client

    with Client(addresses, timeout=timeout) as client:
        return client.call(request)


# -- (a) throughput --------------------------------------------------------------------------


async def throughput(plane: Plane, settings: Settings, note: Callable[[str], None]
                     ) -> dict[str, Any]:
    per_round: list[dict[str, dict[int, LoadResult]]] = []
    with bare_server() as bare:
        targets = {"bare": bare, **{name: plane.addresses(name) for name in CLUSTERS}}
        for number in range(settings.rounds):
            points = {setup: await measure(target, settings)
                      for setup, target in targets.items()}
            per_round.append(points)
            note(f"round {number + 1}: " + "; ".join(
                f"{setup} {p[1].calls_per_s:.0f}/s @1, {p[64].calls_per_s:.0f}/s @64"
                for setup, p in points.items()))
    result: dict[str, Any] = {}
    for in_flight in (1, 64):
        for setup in ("bare", *CLUSTERS):
            result[f"{setup}_{in_flight}"] = round(statistics.median(
                r[setup][in_flight].calls_per_s for r in per_round), 1)
            result[f"{setup}_{in_flight}_p50_ms"] = round(statistics.median(
                r[setup][in_flight].p50_ms for r in per_round), 3)
        for numerator, denominator in (("plain", "bare"), ("durable", "bare"),
                                       ("durable", "plain")):
            result[f"ratio_{numerator}_to_{denominator}_{in_flight}"] = round(statistics.median(
                r[numerator][in_flight].calls_per_s / r[denominator][in_flight].calls_per_s
                for r in per_round), 3)
    return result


# -- (b) whole-cluster restart ------------------------------------------------------------------


def restart_trial(plane: Plane, how: str) -> tuple[float, bool]:
    """Take every pod of `durable` down at once under one sequential caller, by SIGKILL (`how`
    "sigkill": the kubelet restarts the containers in place) or by a forced delete ("delete":
    `kubectl delete pods --grace-period=0 --force`, the operator creates new pods on the same
    claims); return (from the fault to the first reply, every value strictly above the one
    before it: nothing acknowledged was lost or repeated)."""
    from gencluster import Client

    plane.serving("durable")
    # Through the Service: a forced delete re-creates the pods with new addresses.
    addresses = plane.service_address("durable")
    acknowledged: list[tuple[float, int]] = []
    stop = threading.Event()

    def caller() -> None:
        with Client(addresses, timeout=120, attempt_timeout=1.0) as client:
            while not stop.is_set():
                try:
                    value = client.call("next_value")
                except Exception:  # the outage itself: keep calling
                    continue
                acknowledged.append((time.monotonic(), value))

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    wait_for(lambda: len(acknowledged) >= 20, 60, 0.01, "calls before the kill")
    names = [pod["metadata"]["name"] for pod in plane.pods("durable")]
    if how == "sigkill":
        plane.kill(*names)
    else:
        plane.dev.kubectl("delete", "pods", "-n", NAMESPACE, *names, "--grace-period=0",
                          "--force", "--wait=false")
    # From when every kill command returned (the processes are dead by then): a reply that
    # arrived while the commands were starting came from the old processes.
    killed_at = time.monotonic()
    first = wait_for(lambda: next((at for at, _ in acknowledged if at > killed_at), None),
                     180, 0.01, "the first reply after the kill")
    wait_for(lambda: len(acknowledged) >= 40, 60, 0.01, "calls after the restart")
    stop.set()
    thread.join(30)
    values = [value for _, value in acknowledged]
    regressions = [(a, b) for a, b in itertools.pairwise(values) if b <= a]
    if regressions:
        print(f"acknowledged values went back: {regressions[:5]} (of {len(values)} values)",
              file=sys.stderr, flush=True)
    return first - killed_at, not regressions


# -- (c) join, (d) restore ------------------------------------------------------------------------


def standby_in_sync(plane: Plane, name: str, standby: str) -> bool:
    """The active's own view (Admin.Status): `standby` connected, in sync, no lag."""
    import base64

    import grpc
    from gencluster.proto import gencluster_pb2 as pb
    from gencluster.proto import gencluster_pb2_grpc as pb_grpc
    from gencluster.wellknown import PEER_TOKEN_METADATA

    secret = get_json(plane.dev, "secret", f"{name}-peer-token", "-n", NAMESPACE)
    token = base64.b64decode(secret["data"]["token"]).decode()
    active = plane.status(name).get("activePod")
    pod = next((p for p in plane.pods(name) if p["metadata"]["name"] == active), None)
    if pod is None or not pod.get("status", {}).get("podIP"):
        return False
    try:
        with grpc.insecure_channel(f"{pod['status']['podIP']}:{PORT}") as channel:
            reply = pb_grpc.AdminStub(channel).Status(
                pb.StatusRequest(), metadata=((PEER_TOKEN_METADATA, token),), timeout=2)
    except grpc.RpcError:
        return False
    return any(s.identity == standby and s.in_sync and s.lag == 0 and s.acked_seq
               >= reply.applied_seq for s in reply.standbys)


def restarts(plane: Plane, name: str, pod_name: str) -> int:
    pod = next(p for p in plane.pods(name) if p["metadata"]["name"] == pod_name)
    return sum(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses")
               or [])


def join_trial(plane: Plane, name: str) -> float:
    """SIGKILL one standby (the kubelet restarts it in place, same claim); seconds from the
    kill until the active sees it back in sync at its sequence."""
    status = plane.serving(name)["status"]
    standby = status["standbys"][0]["pod"]
    restarted_before = restarts(plane, name, standby)
    killed_at = time.monotonic()
    plane.kill(standby)
    wait_for(lambda: restarts(plane, name, standby) > restarted_before, 60, 0.02,
             f"{standby} restarted")
    wait_for(lambda: standby_in_sync(plane, name, standby), 300, 0.02,
             f"{standby} back in sync")
    return time.monotonic() - killed_at


def restore_trial(plane: Plane, backup: Path) -> dict[str, float]:
    addresses = plane.addresses("plain")
    backed_up = call(addresses, "current")
    plane.plugin("backup", "plain", "-o", str(backup), "-n", NAMESPACE)
    plane.kill(*(pod["metadata"]["name"] for pod in plane.pods("plain")))
    wait_for(lambda: plane.status("plain").get("phase") == "StateLost", 120, 0.2,
             "plain to report StateLost")
    started = time.monotonic()
    restore_seconds = plane.plugin("restore", "plain", str(backup), "-n", NAMESPACE)
    value = call(plane.addresses("plain"), "next_value", timeout=300)
    served = time.monotonic() - started
    if value <= backed_up:
        raise RuntimeError(f"after the restore next_value gave {value} <= {backed_up}")
    return {"restore_command_seconds": restore_seconds, "restore_to_first_call_seconds": served,
            "restore_backup_mb": backup.stat().st_size / 1024 / 1024}


# -- the run --------------------------------------------------------------------------------------


def bench(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    result: dict[str, Any] = {"quick": settings.quick, "state_mb": settings.state_bytes >> 20}

    def note(message: str) -> None:
        log(f"[{time.monotonic() - started:6.1f}s] {message}")

    with tempfile.TemporaryDirectory(prefix="gencluster-bench-") as tmp:
        dev = DevClusterProcess(Path(tmp) / "dev", "--restart-backoff", "0.5", operator=True)
        plane = Plane(dev)
        try:
            for name in CLUSTERS:
                plane.apply(manifest(name, persistent=name == "durable"))
            for name in CLUSTERS:
                plane.serving(name)
            note("plain and durable ready")
            result.update(asyncio.run(throughput(plane, settings, note)))
            # One SIGKILL of every container: the kubelet restarts them after its base back-off
            # (0.5 s here); a second kill of the same containers would double it (10 s, 20 s,
            # ... on a real kubelet), so the repeated trials force-delete the pods instead and
            # the operator creates new ones on the same claims.
            sigkill, kept_after_sigkill = restart_trial(plane, "sigkill")
            result["restart_sigkill_s"] = round(sigkill, 3)
            note(f"whole-cluster SIGKILL: first reply {sigkill:.3f}s after the kill, "
                 f"acknowledged kept: {kept_after_sigkill}")
            outages, kept = [], [kept_after_sigkill]
            for _ in range(settings.restarts):
                outage, ok = restart_trial(plane, "delete")
                outages.append(outage)
                kept.append(ok)
                note(f"whole-cluster forced delete: first reply {outage:.3f}s after it, "
                     f"acknowledged kept: {ok}")
            result.update({
                "restart_trials": len(outages),
                "restart_min_s": round(min(outages), 3),
                "restart_median_s": round(statistics.median(outages), 3),
                "restart_max_s": round(max(outages), 3),
                "lost_acknowledged": kept.count(False),
            })
            for name in CLUSTERS:
                call(plane.addresses(name), ["fill", settings.state_bytes], timeout=300)
                plane.serving(name, timeout=300)
            for name in CLUSTERS:
                seconds = join_trial(plane, name)
                result[f"join_{name}_seconds"] = round(seconds, 3)
                note(f"join of a killed standby of {name}: {seconds:.3f}s")
            restore = restore_trial(plane, Path(tmp) / "plain.backup")
            result.update({key: round(value, 3) for key, value in restore.items()})
            note(f"restore {restore}")
        except Exception as error:  # report what was measured
            note(f"stopped: {type(error).__name__}: {error}")
            result["error"] = f"{type(error).__name__}: {error}"
        finally:
            dev.stop()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["load_average_start"] = round(load_before, 2)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 MB states, fewer rounds")
    args = parser.parse_args(argv)
    result = bench(Settings.for_mode(args.quick),
                   lambda line: print(line, file=sys.stderr, flush=True))
    for key in sorted(result):
        print(f"{key:40} {result[key]}")
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
