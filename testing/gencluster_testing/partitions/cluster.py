"""A ClusteredServer under test on the local control plane, seen the way a user sees it:
`kubectl`, `gencluster status`, `gencluster dev fault`, and the client library.

Shared by the partition tests and `bench/partitions.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gencluster.client import Client

from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import clustered_server, create_namespace, get_json
from gencluster_testing.waiting import wait_for

NAME = "ids"
PORT = 50051
LEASE = {"durationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}
"""The shortest integer timings the runtime's rules accept with a margin (docs/partitions.md,
"The timing rule": R > 1.2 P, D >= R + P), so a fault shows its effect within seconds."""


def id_server_manifest(
    policy: str = "Fenced", replication: dict[str, Any] | None = None, replicas: int = 3,
) -> str:
    resource = {
        "apiVersion": "gencluster.io/v1alpha1",
        "kind": "ClusteredServer",
        "metadata": {"name": NAME},
        "spec": {
            "server": "gencluster_examples.id_server:IdServer",
            "replicas": replicas,
            "replication": replication or {"mode": "Sync", "minSyncStandbys": 1},
            "partitionPolicy": policy,
            "lease": LEASE,
            # Plaintext: the recorders, checkers and fault probes here call the pods' client
            # and Admin services directly, as the partition semantics do not depend on the
            # transport; TLS under failover, rotation and load is tests/operator/test_tls.py.
            "tls": {"enabled": False},
        },
    }
    return json.dumps(resource)


@dataclass
class IdServerUnderTest:
    """One id_server ClusteredServer in a namespace of its own."""

    dev: DevClusterProcess
    namespace: str
    name: str = NAME

    @classmethod
    def create(
        cls, dev: DevClusterProcess, namespace: str, *, deadline: float = 90.0,
        policy: str = "Fenced", replication: dict[str, Any] | None = None,
    ) -> IdServerUnderTest:
        """Apply the resource and wait until one active has every standby in sync."""
        create_namespace(dev, namespace)
        dev.kubectl("apply", "-n", namespace, "-f", "-",
                    input=id_server_manifest(policy, replication))
        server = cls(dev, namespace)
        server.wait_converged(deadline)
        return server

    # -- reading ------------------------------------------------------------------------------

    def pods(self) -> dict[str, dict[str, Any]]:
        listing = get_json(self.dev, "pods", "-n", self.namespace, "-l",
                           f"gencluster.io/cluster={self.name}")
        return {pod["metadata"]["name"]: pod for pod in listing["items"]
                if not pod["metadata"].get("deletionTimestamp")}

    def address(self, pod: str) -> str:
        ip = get_json(self.dev, "pod", pod, "-n", self.namespace)["status"].get("podIP")
        return f"{ip}:{PORT}"

    def addresses(self) -> list[str]:
        """Every pod's `ip:port` (pods keep their IP across container restarts)."""
        return sorted(f"{pod['status']['podIP']}:{PORT}" for pod in self.pods().values()
                      if (pod.get("status") or {}).get("podIP"))

    def status(self) -> list[dict[str, Any]]:
        """Every pod's Admin.Status (`gencluster status`); a pod that does not answer has
        `error` instead."""
        result = self.dev.gencluster("status", self.name, "-n", self.namespace,
                                     "--timeout", "2", check=False, timeout=30)
        if result.returncode != 0:
            return []
        return json.loads(result.stdout)["replicas"]

    def resource(self) -> dict[str, Any]:
        return clustered_server(self.dev, self.namespace, self.name)

    def lease(self) -> dict[str, Any]:
        return get_json(self.dev, "lease", self.name, "-n", self.namespace)["spec"]

    def active(self) -> dict[str, Any] | None:
        """The one replica that reports itself active, when there is exactly one."""
        actives = [r for r in self.status() if r.get("role") == "active"]
        return actives[0] if len(actives) == 1 else None

    def converged(self) -> dict[str, Any] | None:
        """The active's status when the cluster has settled: exactly one active, holding the
        Lease; every other pod a standby of the same epoch at the same applied sequence, and
        in the active's in-sync set."""
        replicas = self.status()
        if not replicas or any("error" in r for r in replicas):
            return None
        actives = [r for r in replicas if r["role"] == "active"]
        if len(actives) != 1:
            return None
        active = actives[0]
        others = [r for r in replicas if r is not active]
        in_sync = {s["identity"] for s in active["standbys"] if s["inSync"]}
        settled = (
            all(r["role"] == "standby" for r in others)
            and {r["epoch"] for r in replicas} == {active["epoch"]}
            and {r["appliedSeq"] for r in replicas} == {active["appliedSeq"]}
            and in_sync == {r["identity"] for r in others}
            and self.lease().get("holderIdentity") == active["identity"]
        )
        return active if settled else None

    def wait_converged(self, deadline: float) -> dict[str, Any]:
        return wait_for(self.converged, deadline, interval=0.3,
                        message=f"{self.namespace}/{self.name} converged: {self.status()}")

    def wait_new_active(self, old_epoch: int, deadline: float,
                        not_pod: str | None = None) -> dict[str, Any]:
        """Wait until a pod (other than `not_pod`) is active with an epoch above `old_epoch`."""
        def elected() -> dict[str, Any] | None:
            for replica in self.status():
                if (replica.get("role") == "active" and replica["epoch"] > old_epoch
                        and replica["identity"] != not_pod):
                    return replica
            return None
        return wait_for(elected, deadline, interval=0.2,
                        message=f"a new active above epoch {old_epoch}: {self.status()}")

    def read_counter(self, timeout: float = 30.0) -> int:
        """The counter's value (`current`, read-only: answered by the active, changes
        nothing)."""
        with Client(",".join(self.addresses()), timeout=timeout) as client:
            return client.call("current")

    def pod_log(self, pod: str) -> str:
        return self.dev.kubectl("logs", pod, "-n", self.namespace, check=False).stdout

    def diagnostics(self) -> str:
        """What to read when a test fails: statuses, the resource's status, every pod's log
        tail."""
        parts = [f"status: {json.dumps(self.status(), indent=1)}",
                 f"resource status: {json.dumps(self.resource().get('status'), indent=1)}"]
        for pod in sorted(self.pods()):
            parts.append(f"--- log of {pod} (tail)\n{self.pod_log(pod)[-4000:]}")
        return "\n".join(parts)

    # -- faults (the real `gencluster dev fault` command) -----------------------------------

    def fault(self, kind: str, *pods: str) -> None:
        refs = [f"{self.namespace}/{pod}" for pod in pods]
        self.dev.gencluster("dev", "fault", "--dir", str(self.dev.dir), kind, *refs)

    def heal(self) -> None:
        """Remove every nftables rule of the instance and wake every paused pod of this
        server (idempotent: resuming a running pod changes nothing)."""
        self.dev.gencluster("dev", "fault", "--dir", str(self.dev.dir), "heal")
        for pod in self.pods():
            self.dev.gencluster("dev", "fault", "--dir", str(self.dev.dir), "resume",
                                f"{self.namespace}/{pod}", check=False)
