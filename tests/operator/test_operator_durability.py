"""Durable state (#11) end to end on the local control plane: the operator (a subprocess), the
real runtime in process pods (persistence on the claims, `state_lost`, Admin.Restore), the
real `kubectl` and `kubectl gencluster`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster_testing.devcluster_process import KUBECTL, DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    clustered_server,
    condition,
    create_namespace,
    events,
    get_json,
    namespace_for,
    pod_names,
    serving,
    start_id_server,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "id-server"
DEADLINE = 90.0
VENV_BIN = str(Path(sys.executable).parent)


def kubectl_gencluster(
    cluster: DevClusterProcess, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([KUBECTL, "gencluster", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def id_server_manifest(**spec: Any) -> str:
    manifest = yaml.safe_load(ID_SERVER.read_text())
    manifest["spec"].update(spec)
    return yaml.safe_dump(manifest)


def apply_id_server(
    cluster: DevClusterProcess, operator: OperatorProcess, namespace: str, **spec: Any
) -> dict[str, Any]:
    create_namespace(cluster, namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=id_server_manifest(**spec))
    return wait_for(lambda: serving(cluster, namespace, NAME), DEADLINE,
                    message=lambda: f"id-server Ready in {namespace}\n{operator.output()[-3000:]}")


def next_value(cluster: DevClusterProcess, namespace: str) -> int:
    return int(json.loads(cluster.gencluster("call", NAME, '"next_value"', "-n",
                                             namespace).stdout))


def lose_every_pod(cluster: DevClusterProcess, namespace: str) -> None:
    """Every pod gone at once, with no graceful handover: the whole cluster's memory."""
    cluster.kubectl("delete", "pods", "-n", namespace, "-l", f"gencluster.io/cluster={NAME}",
                    "--grace-period=0", "--force", "--wait=false")


def state_lost(cluster: DevClusterProcess, namespace: str) -> Callable[[], dict[str, Any] | None]:
    """A check for wait_for: the ClusteredServer once its Ready reason is StateLost."""

    def check() -> dict[str, Any] | None:
        resource = clustered_server(cluster, namespace, NAME)
        return resource if condition(resource, "Ready").get("reason") == "StateLost" else None

    return check


# -- admission: always -----------------------------------------------------------------------------


def test_storage_cannot_be_changed_once_created(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest
) -> None:
    namespace = namespace_for(request.node.name)
    create_namespace(dev_cluster, namespace)
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=id_server_manifest())
    result = dev_cluster.kubectl(
        "patch", "csrv", NAME, "-n", namespace, "--type", "merge",
        "-p", '{"spec":{"persistence":{"enabled":true}}}', check=False,
    )
    assert result.returncode != 0
    assert "spec.persistence.enabled" in result.stderr
    assert "cannot be changed on an existing ClusteredServer" in result.stderr
    spec = clustered_server(dev_cluster, namespace, NAME)["spec"]
    assert spec["persistence"] == {"enabled": False, "size": "1Gi", "retainOnDelete": False}
    assert spec["runtime"] == {"deduplicationWindowSeconds": 300}


# -- claims: once the control plane has them -------------------------------------------------------


def test_each_pod_gets_its_claim_and_keeps_it_across_restarts_and_scale_down(
    dev_cluster: DevClusterProcess, operator: OperatorProcess,
    request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    resource = apply_id_server(dev_cluster, operator, namespace,
                               persistence={"enabled": True, "size": "64Mi"})
    uid = resource["metadata"]["uid"]
    claims = {o: get_json(dev_cluster, "pvc", f"{NAME}-data-{o}", "-n", namespace)
              for o in range(3)}
    for ordinal, claim in claims.items():
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["resources"]["requests"]["storage"] == "64Mi"
        assert claim["metadata"]["labels"]["gencluster.io/ordinal"] == str(ordinal)
        (owner,) = claim["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ClusteredServer", uid,
                                                                      True)
        pod = get_json(dev_cluster, "pod", f"{NAME}-{ordinal}", "-n", namespace)
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{NAME}-data-{ordinal}"
    standby = next(s["pod"] for s in resource["status"]["standbys"])
    dev_cluster.kubectl("delete", "pod", standby, "-n", namespace)
    wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
             message="the deleted standby back, on its old claim")
    dev_cluster.kubectl("scale", "csrv", NAME, "-n", namespace, "--replicas=2")
    wait_for(lambda: pod_names(dev_cluster, namespace, NAME) == [f"{NAME}-0", f"{NAME}-1"]
             or None, DEADLINE, message="scaled down to two pods")
    for ordinal, claim in claims.items():
        again = get_json(dev_cluster, "pvc", f"{NAME}-data-{ordinal}", "-n", namespace)
        assert again["metadata"]["uid"] == claim["metadata"]["uid"], f"claim {ordinal} kept"


def test_retained_claims_outlive_the_clustered_server(
    dev_cluster: DevClusterProcess, operator: OperatorProcess,
    request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    apply_id_server(dev_cluster, operator, namespace,
                    persistence={"enabled": True, "size": "64Mi", "retainOnDelete": True})
    dev_cluster.kubectl("delete", "csrv", NAME, "-n", namespace)
    wait_for(lambda: not pod_names(dev_cluster, namespace, NAME) or None, DEADLINE,
             message="the pods garbage-collected")
    for ordinal in range(3):
        claim = get_json(dev_cluster, "pvc", f"{NAME}-data-{ordinal}", "-n", namespace)
        assert not claim["metadata"].get("ownerReferences")


def test_a_persistent_cluster_resumes_after_losing_every_pod(
    dev_cluster: DevClusterProcess, operator: OperatorProcess,
    request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    apply_id_server(dev_cluster, operator, namespace,
                    persistence={"enabled": True, "size": "64Mi"})
    last = max(next_value(dev_cluster, namespace) for _ in range(3))
    lose_every_pod(dev_cluster, namespace)
    wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
             message="the cluster serving again from its claims")
    assert next_value(dev_cluster, namespace) > last, "state resumed, not reset"


# -- StateLost, restore, reinitialize: once the runtime reports state_lost -------------------------


def test_a_lost_cluster_reports_state_lost_then_restores_and_reinitializes(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    namespace = namespace_for(request.node.name)
    start_id_server(dev_cluster, operator, namespace, DEADLINE)
    last = max(next_value(dev_cluster, namespace) for _ in range(3))
    path = tmp_path / "id.backup"
    backup = kubectl_gencluster(dev_cluster, "backup", NAME, "-n", namespace, "-o", str(path))
    assert backup.returncode == 0, backup.stderr

    lose_every_pod(dev_cluster, namespace)
    lost = wait_for(state_lost(dev_cluster, namespace), DEADLINE,
                    message="Ready=False, reason StateLost")
    assert lost["status"]["phase"] == "StateLost"
    assert condition(lost, "Available")["reason"] == "StateLost"
    assert len(events(dev_cluster, namespace, "StateLost")) == 1

    restored = kubectl_gencluster(dev_cluster, "restore", NAME, str(path), "-n", namespace)
    assert restored.returncode == 0, restored.stderr
    assert "it reports state_lost" in restored.stdout
    wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
             message="serving the restored state")
    assert next_value(dev_cluster, namespace) == last + 1

    dev_cluster.kubectl("annotate", "csrv", NAME, "-n", namespace,
                        "gencluster.io/reinitialize=not-now")
    wait_for(lambda: events(dev_cluster, namespace, "ReinitializeRejected"), DEADLINE,
             message="a serving cluster refuses to reinitialize")
    annotations = clustered_server(dev_cluster, namespace, NAME)["metadata"].get(
        "annotations") or {}
    assert "gencluster.io/reinitialize" not in annotations

    lose_every_pod(dev_cluster, namespace)
    wait_for(lambda: len(events(dev_cluster, namespace, "StateLost")) == 2 or None, DEADLINE,
             message="a second StateLost Event for the second loss")
    dev_cluster.kubectl("annotate", "csrv", NAME, "-n", namespace,
                        "gencluster.io/reinitialize=ticket-42")
    (done,) = wait_for(lambda: events(dev_cluster, namespace, "Reinitialized"), DEADLINE,
                       message="a Reinitialized Event")
    assert "ticket-42" in done["message"]
    wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
             message="serving a new state after init")
    assert next_value(dev_cluster, namespace) == 1
    lease = get_json(dev_cluster, "lease", NAME, "-n", namespace)
    assert "gencluster.io/initialized" in (lease["metadata"].get("annotations") or {}), (
        "the new first active marked the cluster initialized again"
    )
