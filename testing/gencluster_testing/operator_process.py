"""The operator as a real subprocess beside a `gencluster dev up`, and what its tests read.

Tests see the operator only the way users do: `kubectl`, Events, the status, and the
Prometheus text on its metrics port.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from gencluster.client import Client, ClientTls
from gencluster.tls_identity import client_server_name
from gencluster.wellknown import CA_BUNDLE_KEY, ca_secret_name

from gencluster_testing.chart_rbac import operator_kubeconfig
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

PROJECT = Path(__file__).resolve().parents[2]
ID_SERVER = PROJECT / "examples" / "id-server.yaml"
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OperatorProcess:
    """`python -m gencluster_operator.main` against `cluster`, watching `scope` (default
    every namespace)."""

    def __init__(
        self, cluster: DevClusterProcess, *scope: str, extra: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (), as_admin: bool = False,
    ) -> None:
        """Runs as the Helm chart's ServiceAccount with the chart's RBAC (`chart_rbac`), as
        `helm install` would; `as_admin` for a test that needs the admin kubeconfig. `extra`:
        more command-line arguments (e.g. `--leader-election`); `prefix`: a command that runs
        the operator (e.g. setpriv to another uid)."""
        self.cluster = cluster
        kubeconfig = cluster.kubeconfig if as_admin else operator_kubeconfig(cluster)
        self.metrics_port = free_port()
        self.log_path = cluster.dir.parent / f"operator-{self.metrics_port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable, "-m", "gencluster_operator.main", *(scope or ["--all-namespaces"]),
                "--kubeconfig", str(kubeconfig),
                "--metrics-port", str(self.metrics_port), "--metrics-host", "127.0.0.1",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._serving_metrics, 30, message=lambda: f"operator to start:\n{self.output()}")

    def _serving_metrics(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited with {self.process.returncode}:\n"
                                 f"{self.output()}")
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as response:
            return response.read().decode()

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# -- reading what the operator wrote ------------------------------------------------------------


def get_json(cluster: DevClusterProcess, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def clustered_server(cluster: DevClusterProcess, namespace: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "csrv", name, "-n", namespace)


def condition(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (resource.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def pod_names(cluster: DevClusterProcess, namespace: str, name: str) -> list[str]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"gencluster.io/cluster={name}")
    return sorted(p["metadata"]["name"] for p in pods["items"]
                  if not p["metadata"].get("deletionTimestamp"))


def events(cluster: DevClusterProcess, namespace: str, reason: str) -> list[dict[str, Any]]:
    """Events on ClusteredServers of `namespace` with `reason`."""
    listing = get_json(
        cluster, "events", "-n", namespace,
        "--field-selector", f"involvedObject.kind=ClusteredServer,reason={reason}",
    )
    return listing["items"]


def serving(cluster: DevClusterProcess, namespace: str, name: str) -> dict[str, Any] | None:
    """The ClusteredServer once Ready=True for its current generation with every standby in
    sync, else None."""
    resource = clustered_server(cluster, namespace, name)
    status = resource.get("status") or {}
    ready = condition(resource, "Ready")
    standbys = status.get("standbys") or []
    if (
        ready.get("status") == "True"
        and status.get("observedGeneration") == resource["metadata"]["generation"]
        and len(standbys) == resource["spec"]["replicas"] - 1
        and all(s.get("inSync") for s in standbys)
    ):
        return resource
    return None


def kill_active_and_wait(
    cluster: DevClusterProcess, namespace: str, name: str, before: dict[str, Any],
    deadline: float, message: str,
) -> dict[str, Any]:
    """SIGKILL the active named in the status `before` and wait until the status names an
    active at a higher epoch; return that status."""
    cluster.gencluster("dev", "fault", "--dir", str(cluster.dir), "kill",
                       f"{namespace}/{before['activePod']}")

    def new_active() -> dict[str, Any] | None:
        status = clustered_server(cluster, namespace, name).get("status") or {}
        return status if status.get("epoch", 0) > before["epoch"] and status.get(
            "activePod") else None

    return wait_for(new_active, deadline, message=message)


def create_namespace(cluster: DevClusterProcess, namespace: str) -> str:
    cluster.kubectl("create", "namespace", namespace)
    return namespace


def namespace_for(test_name: str) -> str:
    """A namespace name (DNS label) derived from a test's name."""
    return re.sub(r"[^a-z0-9]+", "-", test_name.lower())[:50].strip("-")


def start_id_server(
    cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
    deadline: float = 60.0,
) -> dict[str, Any]:
    """`examples/id-server.yaml` applied in a new `namespace`, once serving."""
    create_namespace(cluster, namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", str(ID_SERVER))
    return wait_for(lambda: serving(cluster, namespace, "id-server"), deadline,
                    message=lambda: f"id-server Ready in {namespace}\n{operator.output()[-3000:]}")


def client_service_address(
    cluster: DevClusterProcess, namespace: str, name: str, deadline: float = 60.0
) -> str:
    """`host:port` of a ClusteredServer's client Service as a user outside the pod network
    reaches it (`status.loadBalancer.ingress`): pods' addresses change when pods are
    re-created, this one does not."""

    def ingress() -> str | None:
        service = get_json(cluster, "svc", name, "-n", namespace)
        found = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if not found or not found[0].get("ip"):
            return None
        return f"{found[0]['ip']}:{service['spec']['ports'][0]['port']}"

    return wait_for(ingress, deadline, 0.2, f"{name}'s client Service address")


def cluster_tls(cluster: DevClusterProcess, namespace: str, name: str) -> ClientTls | None:
    """How a client verifies ClusteredServer `name`'s pods, as a user's would: the trust
    bundle of its `<name>-ca` Secret (read through the kubeconfig), the client Service's DNS
    name verified. None for a cluster without TLS (`spec.tls.enabled: false`)."""
    found = cluster.kubectl("get", "secret", ca_secret_name(name), "-n", namespace, "-o",
                            "json", check=False)
    if found.returncode != 0:
        if "NotFound" in found.stderr:
            return None
        raise AssertionError(f"cannot read the CA Secret of {namespace}/{name}: {found.stderr}")
    bundle = base64.b64decode(json.loads(found.stdout)["data"][CA_BUNDLE_KEY])
    return ClientTls(bundle, client_server_name(name, namespace))


def cluster_client(
    cluster: DevClusterProcess, namespace: str, name: str, address: str | None = None,
    **options: Any,
) -> Client:
    """A `Client` of ClusteredServer `name` (at `address`, default its client Service's),
    speaking TLS when the cluster does (`cluster_tls`)."""
    return Client(address or client_service_address(cluster, namespace, name),
                  tls=cluster_tls(cluster, namespace, name), **options)
