"""`helm install` for real: the Helm v4 engine (helm-python-sdk) installs charts/gencluster on a
`gencluster dev up` instance through its kubeconfig, waits for the operator Deployment, runs
`helm test`, lets the operator reconcile a ClusteredServer applied with kubectl, upgrades, and
uninstalls.

The instance starts without CRDs (`--crds` of an empty folder) and without its own operator
(`--no-operator`), so Helm itself installs the CRD from the chart's `crds/` (the symlink to the
repository's single file) and, as Helm always does, leaves it in place on uninstall, and the
only operator is the chart's pod.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gencluster"
CRD_FILE = ROOT / "crds" / "clusteredservers.gencluster.io.yaml"
EXAMPLE = ROOT / "examples" / "id-server.yaml"
RELEASE = "gencluster"
NAMESPACE = "gencluster-system"
WAIT_SECONDS = 120
# Images are recorded, never pulled, on gencluster dev: the chart's explicit command runs.
VALUES = {
    "image": {"repository": "registry.example/gencluster-operator", "tag": "dev"},
    "runtimeImage": {"repository": "registry.example/gencluster", "tag": "dev"},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    base = tmp_path_factory.mktemp("helm")
    no_crds = base / "no-crds"
    no_crds.mkdir()
    # --no-operator: the chart's pod must be the only operator, so that what reconciles the
    # ClusteredServer below is the pod Helm installed.
    instance = DevClusterProcess(base / "dev", "--restart-backoff", "0.5",
                                 "--crds", str(no_crds), "--no-operator")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def helm_config(cluster: DevClusterProcess) -> Iterator[Any]:
    config = helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=NAMESPACE)
    yield config
    config.close()


def _get(cluster: DevClusterProcess, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return json.loads(result.stdout)


def _operator_pods(cluster: DevClusterProcess) -> list[dict[str, Any]]:
    listed = _get(cluster, "pods", "-n", NAMESPACE, "-l",
                  "app.kubernetes.io/component=operator,app.kubernetes.io/instance=" + RELEASE)
    return [] if listed is None else [p for p in listed["items"]
                                      if not p["metadata"].get("deletionTimestamp")]


def _release_secrets(cluster: DevClusterProcess, release: str = RELEASE,
                     namespace: str = NAMESPACE) -> list[str]:
    listed = _get(cluster, "secrets", "-n", namespace, "-l", f"owner=helm,name={release}")
    return [] if listed is None else [s["metadata"]["name"] for s in listed["items"]]


def test_helm_storage_apply_and_uninstall_without_waiting(
    start_dev_cluster: Callable[..., DevClusterProcess],
) -> None:
    """What Helm itself does to the API, whatever the operator's state: server-side apply of
    every object, release Secrets written with protobuf bodies, upgrade, uninstall (which
    deletes the Secrets with protobuf DeleteOptions)."""
    instance = start_dev_cluster("--no-operator", name="storage")
    config = helm.Config(kubeconfig_path=str(instance.kubeconfig), namespace="ops")
    try:
        first = config.install(str(CHART), "ops", VALUES, namespace="ops",
                               create_namespace=True)
        assert first["status"] == "deployed"
        deployment = _get(instance, "deployment", "ops-gencluster", "-n", "ops",
                          "--show-managed-fields")
        assert deployment is not None
        operations = {entry["operation"] for entry in deployment["metadata"]["managedFields"]}
        assert "Apply" in operations  # Helm 4 creates and updates by server-side apply
        assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == "ops"
        second = config.upgrade(str(CHART), "ops", {**VALUES, "metrics": {"port": 9300}},
                                namespace="ops")
        assert second["revision"] == 2
        service = _get(instance, "service", "ops-gencluster-metrics", "-n", "ops")
        assert service is not None and service["spec"]["ports"][0]["port"] == 9300
        assert len(_release_secrets(instance, "ops", "ops")) == 2
        config.uninstall("ops")
        assert _release_secrets(instance, "ops", "ops") == []
        assert _get(instance, "deployment", "ops-gencluster", "-n", "ops") is None
        assert _get(instance, "clusterrole", "ops-gencluster") is None
        assert config.list(all_states=True) == []
    finally:
        config.close()


def test_install_waits_for_the_operator_deployment(
    cluster: DevClusterProcess, helm_config: Any
) -> None:
    assert _get(cluster, "crd", "clusteredservers.gencluster.io") is None
    release = helm_config.install(str(CHART), RELEASE, VALUES, namespace=NAMESPACE,
                                  create_namespace=True, wait="watcher", timeout=WAIT_SECONDS)
    assert release["status"] == "deployed" and release["revision"] == 1
    assert "kubectl apply" in release["notes"]

    crd = _get(cluster, "crd", "clusteredservers.gencluster.io")
    assert crd is not None
    assert crd["spec"]["versions"] == yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"]

    deployment = _get(cluster, "deployment", RELEASE, "-n", NAMESPACE)
    assert deployment is not None
    status = deployment["status"]
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    # Two replicas (leader election): both Ready, the standby answering /healthz itself.
    assert status["availableReplicas"] == status["readyReplicas"] == 2
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Progressing"] == (
        "NewReplicaSetAvailable")
    pods = _operator_pods(cluster)
    assert len(pods) == 2
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert container["image"] == "registry.example/gencluster-operator:dev"
        assert container["command"] == ["gencluster", "operator"]
        assert pod["status"]["phase"] == "Running"
        owner = pod["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet"  # the Deployment's, as in Kubernetes
        replica_set = _get(cluster, "replicaset", owner["name"], "-n", NAMESPACE)
        assert replica_set is not None
        assert replica_set["metadata"]["ownerReferences"][0]["uid"] == (
            deployment["metadata"]["uid"])

    def leader() -> str | None:
        lease = _get(cluster, "lease", RELEASE, "-n", NAMESPACE)
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    holder = wait_for(leader, WAIT_SECONDS, message="an operator pod holding the Lease")
    assert holder.rpartition("_")[0] in {p["metadata"]["name"] for p in pods}
    assert _get(cluster, "poddisruptionbudget", RELEASE, "-n", NAMESPACE) is not None
    for kind in ("serviceaccount", "service"):
        name = RELEASE if kind == "serviceaccount" else f"{RELEASE}-metrics"
        assert _get(cluster, kind, name, "-n", NAMESPACE) is not None
    for kind in ("clusterrole", "clusterrolebinding"):
        assert _get(cluster, kind, RELEASE) is not None


def test_helm_test_reaches_the_operator_metrics(helm_config: Any) -> None:
    result = helm_config.test(RELEASE, timeout=WAIT_SECONDS, logs=True)
    assert "lines of Prometheus metrics" in result["logs"]


def test_the_operator_reconciles_a_cluster_applied_with_kubectl(
    cluster: DevClusterProcess,
) -> None:
    cluster.kubectl("apply", "-f", str(EXAMPLE))
    expected = {f"id-server-{ordinal}" for ordinal in range(3)}

    def pods_created() -> bool:
        listed = _get(cluster, "pods", "-l", "gencluster.io/cluster=id-server")
        return listed is not None and {
            p["metadata"]["name"] for p in listed["items"]} >= expected

    wait_for(pods_created, WAIT_SECONDS, interval=0.5,
             message="the operator (the chart's pod) to create the id-server pods")

    def status_observed() -> bool:
        resource = _get(cluster, "csrv", "id-server") or {}
        observed = (resource.get("status") or {}).get("observedGeneration")
        return observed == resource.get("metadata", {}).get("generation")

    wait_for(status_observed, WAIT_SECONDS, interval=0.5,
             message="the operator to report the id-server's status")
    _operator_pod_passes_the_network_policy(cluster)
    # Deleted before the operator is uninstalled, without waiting: kopf holds its finalizer
    # (for the timer) and polls for the timer's end only every 60 s by default; garbage
    # collection of the children is the operator tests' subject.
    cluster.kubectl("delete", "-f", str(EXAMPLE), "--wait=false")


PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except OSError as exc:
    print("closed", exc)
"""


def _operator_pod_passes_the_network_policy(cluster: DevClusterProcess) -> None:
    """The id-server's NetworkPolicy names the chart's operator pods (labels passed by the
    Deployment), and the enforced policy lets the operator pod reach a server pod's metrics
    (admin bridge) port, which it keeps from foreign pods (test_network_policy.py)."""
    policy = wait_for(lambda: _get(cluster, "networkpolicy", "id-server"), WAIT_SECONDS,
                      interval=0.5, message="the id-server's NetworkPolicy")
    peers = policy["spec"]["ingress"][1]["from"]
    operator_pod = _operator_pods(cluster)[0]
    assert peers[1]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    wanted = peers[1]["podSelector"]["matchLabels"]
    assert wanted["app.kubernetes.io/instance"] == RELEASE
    assert all(operator_pod["metadata"]["labels"].get(k) == v for k, v in wanted.items())

    def metrics_reachable() -> bool:
        server = _get(cluster, "pod", "id-server-0") or {}
        ip = (server.get("status") or {}).get("podIP")
        if not ip:
            return False
        result = cluster.kubectl("exec", "-n", NAMESPACE, operator_pod["metadata"]["name"],
                                 "--", sys.executable, "-c", PROBE, ip, "9090", check=False)
        return result.stdout.strip() == "open"

    wait_for(metrics_reachable, WAIT_SECONDS, interval=0.5,
             message="the operator pod to reach id-server-0's metrics port")


def test_upgrade_rolls_the_operator_pod(cluster: DevClusterProcess, helm_config: Any) -> None:
    before = {p["metadata"]["name"] for p in _operator_pods(cluster)}
    values = {**VALUES, "podAnnotations": {"example.com/upgraded": "yes"}}
    release = helm_config.upgrade(str(CHART), RELEASE, values, namespace=NAMESPACE,
                                  wait="watcher", timeout=WAIT_SECONDS)
    assert release["status"] == "deployed" and release["revision"] == 2
    upgraded = [p for p in _operator_pods(cluster)
                if (p["metadata"].get("annotations") or {}).get("example.com/upgraded")]
    assert len(upgraded) == 2
    assert not {p["metadata"]["name"] for p in upgraded} & before
    assert all(p["status"]["phase"] == "Running" for p in upgraded)
    history = helm_config.history(RELEASE)
    assert [entry["revision"] for entry in history] == [1, 2]


def test_uninstall_removes_the_release_but_keeps_the_crd(
    cluster: DevClusterProcess, helm_config: Any
) -> None:
    helm_config.uninstall(RELEASE, wait="watcher", timeout=WAIT_SECONDS)
    assert _get(cluster, "deployment", RELEASE, "-n", NAMESPACE) is None
    for kind, name in (("serviceaccount", RELEASE), ("service", f"{RELEASE}-metrics")):
        assert _get(cluster, kind, name, "-n", NAMESPACE) is None
    for kind in ("clusterrole", "clusterrolebinding"):
        assert _get(cluster, kind, RELEASE) is None
    wait_for(lambda: not _operator_pods(cluster), WAIT_SECONDS, interval=0.5,
             message="the operator pod to be garbage-collected")
    assert _release_secrets(cluster) == []
    assert _get(cluster, "crd", "clusteredservers.gencluster.io") is not None
