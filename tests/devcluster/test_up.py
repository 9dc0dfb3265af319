"""`gencluster dev up` as users run it: start, apply, refuse a second instance, stop cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gencluster_testing.devcluster_process import GENCLUSTER, DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

SLEEPER_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: ["python", "-c", "import time\\nwhile True: time.sleep(1)"]
"""

CONFIG_MAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied-at-start
data:
  greeting: hello
"""


def pod_pids(cluster: DevClusterProcess, name: str) -> list[int]:
    pids: list[int] = []
    for state_file in (cluster.dir / "pods").glob(f"default_{name}_*/state.json"):
        state = json.loads(state_file.read_text())
        pids.extend(
            c["pid"] for c in state.get("containers", {}).values() if c.get("pid") is not None
        )
    return pids


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def nft_tables() -> str:
    return subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout


def test_up_serves_installs_crds_and_applies_manifests(start_dev_cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "configmap.yaml"
    manifest.write_text(CONFIG_MAP)
    cluster = start_dev_cluster("--apply", str(manifest))

    instance = cluster.instance
    assert instance["pid"] == cluster.process.pid
    assert instance["server"] == f"http://127.{instance['slot']}.0.1:6443"
    assert f"export KUBECONFIG={cluster.kubeconfig}" in cluster.output()

    nodes = cluster.kubectl("get", "nodes", "-o", "json")
    [node] = json.loads(nodes.stdout)["items"]
    assert node["metadata"]["name"] == "dev-node"
    crd = cluster.kubectl("get", "crd", "clusteredservers.gencluster.io", "-o", "json")
    conditions = {c["type"]: c["status"] for c in json.loads(crd.stdout)["status"]["conditions"]}
    assert conditions["Established"] == "True"

    wait_for(
        lambda: "applied-at-start" in cluster.output(),
        10,
        message="the manifest to be reported as applied",
    )
    data = cluster.kubectl("get", "configmap", "applied-at-start", "-o", "jsonpath={.data}")
    assert json.loads(data.stdout) == {"greeting": "hello"}


def test_second_instance_in_the_same_dir_is_refused(start_dev_cluster) -> None:
    cluster = start_dev_cluster()
    second = subprocess.run(
        [GENCLUSTER, "dev", "up", "--dir", str(cluster.dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"an instance already runs in {cluster.dir}" in second.stderr
    cluster.kubectl("get", "namespaces")


def test_fault_without_a_running_instance_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [GENCLUSTER, "dev", "fault", "--dir", str(tmp_path / "nothing"), "kill", "some-pod"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("gencluster dev fault kill: ")


DENY_ALL_POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}}
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="network faults need root and nft"
)
def test_stop_leaves_no_process_and_no_fault_rule(start_dev_cluster) -> None:
    cluster = start_dev_cluster()
    cluster.kubectl("apply", "-f", "-", input=SLEEPER_POD)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
    pids = wait_for(lambda: pod_pids(cluster, "sleeper"), 30, message="the sleeper's pid")
    assert all(process_exists(pid) for pid in pids)
    table = cluster.instance["nftTable"]
    cluster.gencluster("dev", "fault", "--dir", str(cluster.dir), "cut-apiserver", "sleeper")
    assert table in nft_tables()
    policy_table = cluster.instance["networkPolicyTable"]
    cluster.kubectl("apply", "-f", "-", input=DENY_ALL_POLICY)
    wait_for(lambda: policy_table in nft_tables(), 30, message="the NetworkPolicy table")

    assert cluster.stop() == 0
    assert not any(process_exists(pid) for pid in pids)
    assert table not in nft_tables()
    assert policy_table not in nft_tables()
    assert not cluster.kubeconfig.exists()
    assert not (cluster.dir / "instance.json").exists()


def test_controller_runs_with_the_instance_kubeconfig_and_stops_with_it(
    start_dev_cluster, tmp_path: Path
) -> None:
    pid_file = tmp_path / "controller.pid"
    controller = (
        f"sh -c 'echo $$ > {pid_file} && "
        "kubectl create configmap from-controller --from-literal=source=controller "
        "&& exec sleep 600'"
    )
    cluster = start_dev_cluster("--controller", controller)
    data = wait_for(
        lambda: cluster.kubectl(
            "get", "configmap", "from-controller", "-o", "jsonpath={.data.source}", check=False
        ).stdout,
        30,
        message="the controller to create its ConfigMap through KUBECONFIG",
    )
    assert data == "controller"
    controller_pid = int(pid_file.read_text())
    assert process_exists(controller_pid)

    assert cluster.stop() == 0
    assert not process_exists(controller_pid)


def test_up_runs_the_operator_and_brings_up_the_example(start_dev_cluster) -> None:
    """`gencluster dev up --apply examples/id-server.yaml`: the main job of `make dev`."""
    example = Path(__file__).resolve().parents[2] / "examples" / "id-server.yaml"
    cluster = start_dev_cluster("--apply", str(example), operator=True)

    def ready() -> dict | None:
        result = cluster.kubectl("get", "csrv", "id-server", "-o", "json", check=False)
        if result.returncode != 0:
            return None
        status = json.loads(result.stdout).get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return status if conditions.get("Ready") == "True" else None

    status = wait_for(ready, 120, interval=0.5, message="id-server to become Ready")
    assert status["activePod"].startswith("id-server-")
    assert status["readyReplicas"] == 3
    assert (cluster.dir / "controllers").is_dir()
