"""The tools work from outside the pod network: `kubectl gencluster status|state|switchover`
and `gencluster status|call` run as a uid whose packets to every pod IP are dropped (nftables,
`FaultInjector.cut_client`), while the API server and the client Service's address stay
reachable, as from a laptop. Admin calls go through the API server's pods/proxy to the
runtime's Admin bridge; `gencluster call` goes to the client Service's published address.

The control (`test_the_client_uid_cannot_reach_a_pod_directly`) proves the fault is real: the
same uid dialling a pod's gRPC address directly gets no answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gencluster import wellknown
from gencluster.commands import AdminCallFailed, admin_over_api
from gencluster.proto import gencluster_pb2 as pb
from gencluster_dev.network.faults import UID_BASE, FaultInjector
from gencluster_testing.devcluster_process import KUBECTL, DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    clustered_server,
    serving,
    start_id_server,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.fault

NAME = "id-server"
NAMESPACE = "outside-pod-network"
DEADLINE = 60.0
VENV_BIN = str(Path(sys.executable).parent)
METRICS_PORT = 9090
"""The id-server's metrics port (the operator's default: its gRPC port is not 9090)."""


class Outsider:
    """Runs commands as a uid that is cut from the pod network, with its own HOME and a copy
    of the kubeconfig it can read."""

    def __init__(self, cluster: DevClusterProcess) -> None:
        self.uid = UID_BASE - 1 - int(cluster.instance["slot"])
        self.home = Path(tempfile.mkdtemp(prefix="gencluster-outsider-"))
        self.kubeconfig = self.home / "kubeconfig"
        shutil.copy(cluster.kubeconfig, self.kubeconfig)
        self.token_file = self.home / "token"
        for path in (self.home, self.kubeconfig):
            os.chown(path, self.uid, self.uid)
        os.chmod(self.home, 0o700)

    def run(self, *command: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(self.home), "KUBECONFIG": str(self.kubeconfig),
               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        # As the local kubelet runs pods: setpriv to the uid with CAP_DAC_READ_SEARCH only,
        # so the interpreter under /root stays readable; the network is what is cut.
        setpriv = [shutil.which("setpriv") or "setpriv", f"--reuid={self.uid}",
                   f"--regid={self.uid}", "--clear-groups", "--inh-caps=+dac_read_search",
                   "--ambient-caps=+dac_read_search", "--"]
        return subprocess.run([*setpriv, *command], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=self.home)

    def plugin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(KUBECTL, "gencluster", *args, "-n", NAMESPACE)

    def gencluster(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(f"{VENV_BIN}/gencluster", *args, "-n", NAMESPACE)

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def outsider(dev_cluster: DevClusterProcess, operator: OperatorProcess) -> Iterator[Outsider]:
    start_id_server(dev_cluster, operator, NAMESPACE, DEADLINE)
    outsider = Outsider(dev_cluster)
    injector = FaultInjector(dev_cluster.dir)
    injector.cut_client(outsider.uid)
    try:
        yield outsider
    finally:
        injector.heal()
        outsider.remove()


def in_sync(cluster: DevClusterProcess) -> dict[str, Any]:
    return wait_for(lambda: serving(cluster, NAMESPACE, NAME), DEADLINE,
                    message="id-server serving with every standby in sync")


def test_the_client_uid_cannot_reach_a_pod_directly(
    dev_cluster: DevClusterProcess, outsider: Outsider
) -> None:
    active = in_sync(dev_cluster)["status"]["activePod"]
    pod = json.loads(dev_cluster.kubectl("get", "pod", active, "-n", NAMESPACE,
                                         "-o", "json").stdout)
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    address = f"{pod['status']['podIP']}:{port}"
    result = outsider.run(f"{VENV_BIN}/gencluster", "call", "--address", address,
                          '"next_value"', "--timeout", "3")
    assert result.returncode == 1, result.stdout
    result = outsider.run(f"{VENV_BIN}/gencluster", "status", "--address", address,
                          "--token-file", "/dev/null", "--timeout", "2")
    assert result.returncode == 0, result.stderr
    [reply] = json.loads(result.stdout)["replicas"]
    assert reply["error"].startswith(("DEADLINE_EXCEEDED", "UNAVAILABLE")), reply


def test_plugin_status_reaches_every_pod_through_the_api_server(
    dev_cluster: DevClusterProcess, outsider: Outsider
) -> None:
    resource = in_sync(dev_cluster)
    result = outsider.plugin("status", NAME, "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    pods = {row["pod"]: row for row in report["pods"]}
    assert sorted(row["role"] for row in pods.values()) == ["active", "standby", "standby"]
    assert pods[resource["status"]["activePod"]]["role"] == "active"
    assert all("error" not in row for row in pods.values()), pods
    assert all(row["epoch"] == resource["status"]["epoch"] for row in pods.values())


def test_gencluster_call_and_status_and_plugin_state_from_outside(
    dev_cluster: DevClusterProcess, outsider: Outsider
) -> None:
    in_sync(dev_cluster)
    values = []
    for _ in range(3):
        result = outsider.gencluster("call", NAME, '"next_value"')
        assert result.returncode == 0, result.stderr
        values.append(json.loads(result.stdout))
    assert values == sorted(values) and len(set(values)) == 3
    state = outsider.plugin("state", NAME)
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout) == values[-1]
    status = outsider.gencluster("status", NAME)
    assert status.returncode == 0, status.stderr
    replicas = json.loads(status.stdout)["replicas"]
    assert sorted(r["role"] for r in replicas) == ["active", "standby", "standby"], replicas
    assert {r["pod"] for r in replicas} == {f"{NAME}-{i}" for i in range(3)}


def test_plugin_switchover_from_outside(
    dev_cluster: DevClusterProcess, outsider: Outsider
) -> None:
    before = in_sync(dev_cluster)["status"]
    target = sorted(s["pod"] for s in before["standbys"])[-1]
    result = outsider.plugin("switchover", NAME, "--to", target, "--wait",
                             "--timeout", str(DEADLINE))
    assert result.returncode == 0, result.stderr
    after = clustered_server(dev_cluster, NAMESPACE, NAME)
    assert after["status"]["activePod"] == target
    assert after["status"]["epoch"] > before["epoch"]
    assert wellknown.SWITCHOVER_TO_ANNOTATION not in (after["metadata"].get("annotations") or {})
    in_sync(dev_cluster)
    status = outsider.plugin("status", NAME, "-o", "json")
    assert status.returncode == 0, status.stderr
    roles = {row["pod"]: row["role"] for row in json.loads(status.stdout)["pods"]}
    assert roles[target] == "active"


def test_the_admin_bridge_refuses_a_caller_without_the_peer_token(
    dev_cluster: DevClusterProcess, outsider: Outsider
) -> None:
    """Through pods/proxy with valid API credentials but no (or a wrong) peer token: the
    runtime refuses, so RBAC on pods/proxy alone does not open the Admin service."""
    active = in_sync(dev_cluster)["status"]["activePod"]
    path = (f"/api/v1/namespaces/{NAMESPACE}/pods/{active}:{METRICS_PORT}/proxy"
            f"{wellknown.ADMIN_HTTP_PATH}/GetState")
    missing = outsider.run(KUBECTL, "create", "--raw", path, "-f", "/dev/null")
    assert missing.returncode != 0
    assert "UNAUTHENTICATED" in missing.stderr or "Forbidden" in missing.stderr, missing.stderr
    from kubernetes import client

    core = client.CoreV1Api(dev_cluster.api_client())
    pod = core.read_namespaced_pod(active, NAMESPACE)
    with pytest.raises(AdminCallFailed) as refused:
        admin_over_api(core.api_client, NAMESPACE, pod, "GetState", pb.GetStateRequest(),
                       "not-the-peer-token-" * 3, 5.0)
    assert refused.value.code == "UNAUTHENTICATED", refused.value
    metrics = outsider.run(KUBECTL, "get", "--raw",
                           f"/api/v1/namespaces/{NAMESPACE}/pods/{active}:{METRICS_PORT}/proxy/metrics")
    assert metrics.returncode == 0, metrics.stderr
    assert "gencluster_runtime_active" in metrics.stdout
