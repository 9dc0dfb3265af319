"""`helm install` of charts/gencluster on a control plane that runs pods as podman containers:
the operator is the image `make images` built (Dockerfile.operator), running as a container with
the chart's security context, and it brings examples/id-server.yaml up on the runtime image.

The plane starts without CRDs and without its own operator (as in test_helm_install.py), so the
chart installs the CRD and its Deployment's pod is the only operator.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.timeout(600)]
NEEDS_CONTAINER_IMAGES = True

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gencluster"
EXAMPLE = ROOT / "examples" / "id-server.yaml"
RELEASE = "gencluster"
NAMESPACE = "gencluster-system"
WAIT_SECONDS = 180
# The images `make images` built, under the names the chart and the CRD default to.
VALUES = {
    "image": {"repository": "ghcr.io/gencluster/gencluster-operator", "tag": "0.1.0"},
    "runtimeImage": {"repository": "ghcr.io/gencluster/gencluster", "tag": "0.1.0"},
}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    base = tmp_path_factory.mktemp("helm-podman")
    no_crds = base / "no-crds"
    no_crds.mkdir()
    instance = DevClusterProcess(base / "dev", "--runtime", "podman", "--restart-backoff", "0.5",
                                 "--crds", str(no_crds), "--no-operator")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def helm_config(plane: DevClusterProcess) -> Iterator[Any]:
    config = helm.Config(kubeconfig_path=str(plane.kubeconfig), namespace=NAMESPACE)
    yield config
    config.close()


def podman_inspect(name: str) -> dict[str, Any]:
    result = subprocess.run(["podman", "--runtime", "runc", "inspect", name],
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)[0]


def container_names(plane: DevClusterProcess) -> list[str]:
    result = subprocess.run(
        ["podman", "--runtime", "runc", "ps", "--filter",
         f"label=gencluster.dev/pods-dir={plane.dir / 'pods'}", "--format", "{{.Names}}"],
        capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def ready(plane: DevClusterProcess) -> bool:
    result = plane.kubectl("get", "csrv", "id-server", "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_operator_image_runs_as_the_charts_container(
    plane: DevClusterProcess, helm_config: Any
) -> None:
    release = helm_config.install(str(CHART), RELEASE, VALUES, namespace=NAMESPACE,
                                  create_namespace=True, wait="watcher", timeout=WAIT_SECONDS)
    assert release["status"] == "deployed"
    listed = json.loads(plane.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator",
        "-o", "json").stdout)["items"]
    assert len(listed) == 2, "the chart's default: two replicas, one leading"
    for pod in listed:
        assert pod["status"]["phase"] == "Running"
        container = pod["spec"]["containers"][0]
        (name,) = [n for n in container_names(plane)
                   if n.startswith(f"k8s_{container['name']}_{pod['metadata']['name']}_")]
        inspected = podman_inspect(name)
        assert inspected["ImageName"].endswith("ghcr.io/gencluster/gencluster-operator:0.1.0")
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert inspected["Config"]["User"] != "0"


def test_the_containerised_operator_brings_id_server_up(plane: DevClusterProcess) -> None:
    plane.kubectl("apply", "-f", str(EXAMPLE))
    wait_for(lambda: ready(plane), WAIT_SECONDS, 0.5,
             "the chart's operator to make id-server Ready")
    servers = [n for n in container_names(plane) if n.startswith("k8s_server_id-server-")]
    assert len(servers) == 3
    assert podman_inspect(servers[0])["ImageName"].endswith("ghcr.io/gencluster/gencluster:0.1.0")


def test_helm_test_runs_in_the_runtime_image(helm_config: Any) -> None:
    result = helm_config.test(RELEASE, timeout=WAIT_SECONDS, logs=True)
    assert "lines of Prometheus metrics" in result["logs"]


def test_uninstall_stops_the_operator_container(
    plane: DevClusterProcess, helm_config: Any
) -> None:
    plane.kubectl("delete", "-f", str(EXAMPLE), "--wait=false")
    helm_config.uninstall(RELEASE, wait="watcher", timeout=WAIT_SECONDS)
    wait_for(lambda: not [n for n in container_names(plane) if f"_{NAMESPACE}_" in n],
             WAIT_SECONDS, 0.5, "the operator's container to be gone")
