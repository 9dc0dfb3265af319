"""Day-2 verbs end to end (#15): `kubectl gencluster restart | reconcile pause|resume |
hibernate on|off | report` with the operator on the local control plane, through the real
`kubectl` and its plugin."""

from __future__ import annotations

import base64
import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    client_service_address,
    cluster_client,
    clustered_server,
    condition,
    create_namespace,
    events,
    get_json,
    namespace_for,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for

from tests.operator.test_operator_durability import kubectl_gencluster

pytestmark = pytest.mark.integration

NAME = "id-server"
DEADLINE = 120.0


def start(dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
          **spec: Any) -> dict[str, Any]:
    manifest = yaml.safe_load(ID_SERVER.read_text())
    manifest["spec"].update(spec)
    create_namespace(dev_cluster, namespace)
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    return ready(dev_cluster, operator, namespace)


def ready(dev_cluster: DevClusterProcess, operator: OperatorProcess,
          namespace: str) -> dict[str, Any]:
    return wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
                    message=lambda: f"id-server Ready in {namespace}\n{operator.output()[-3000:]}")


def plugin(dev_cluster: DevClusterProcess, *args: str) -> str:
    result = kubectl_gencluster(dev_cluster, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def template_hashes(dev_cluster: DevClusterProcess, namespace: str) -> set[str]:
    listed = get_json(dev_cluster, "pods", "-n", namespace, "-l",
                      f"gencluster.io/cluster={NAME}")["items"]
    return {p["metadata"]["annotations"]["gencluster.io/template-hash"] for p in listed}


def test_restart_rolls_every_pod_with_no_failed_call(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    start(dev_cluster, operator, namespace)
    before = {get_json(dev_cluster, "pod", p, "-n", namespace)["metadata"]["uid"]
              for p in pod_names(dev_cluster, namespace, NAME)}
    values: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    address = client_service_address(dev_cluster, namespace, NAME, DEADLINE)

    def caller() -> None:
        with cluster_client(dev_cluster, namespace, NAME, address, timeout=60) as client:
            while not stop.is_set():
                try:
                    values.append(client.call("next_value"))
                except Exception as error:
                    failures.append(error)
                    return

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    wait_for(lambda: len(values) >= 20 or failures, DEADLINE, 0.05, "calls before the restart")
    output = plugin(dev_cluster, "restart", NAME, "-n", namespace)
    assert "rolling restart" in output

    def rolled() -> bool:
        uids = {get_json(dev_cluster, "pod", p, "-n", namespace)["metadata"]["uid"]
                for p in pod_names(dev_cluster, namespace, NAME)}
        return not (uids & before) and serving(dev_cluster, namespace, NAME) is not None

    wait_for(rolled, DEADLINE * 2, message="every pod replaced and the cluster serving")
    count = len(values)
    wait_for(lambda: len(values) > count + 20 or failures, DEADLINE, 0.05, "calls after")
    stop.set()
    thread.join(90)
    assert not failures, failures
    assert values == sorted(values) and len(values) == len(set(values))
    assert events(dev_cluster, namespace, "RollingUpdate")


def test_paused_reconciliation_leaves_a_deleted_pod_gone_until_resumed(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    resource = start(dev_cluster, operator, namespace)
    plugin(dev_cluster, "reconcile", "pause", NAME, "-n", namespace)
    wait_for(lambda: condition(clustered_server(dev_cluster, namespace, NAME),
                               "Progressing").get("reason") == "ReconcilePaused" or None,
             DEADLINE, message="Progressing=False, ReconcilePaused")
    standby = resource["status"]["standbys"][0]["pod"]
    dev_cluster.kubectl("delete", "pod", standby, "-n", namespace, "--wait=true")
    # The operator saw the missing pod (the status counts two) and created nothing.
    paused = wait_for(lambda: (lambda r: r if (r.get("status") or {}).get("replicas") == 2
                               else None)(clustered_server(dev_cluster, namespace, NAME)),
                      DEADLINE, message="the status counting two pods")
    assert condition(paused, "Progressing")["reason"] == "ReconcilePaused"
    assert standby not in pod_names(dev_cluster, namespace, NAME)
    assert events(dev_cluster, namespace, "ReconcilePaused")

    plugin(dev_cluster, "reconcile", "resume", NAME, "-n", namespace)
    ready(dev_cluster, operator, namespace)
    assert standby in pod_names(dev_cluster, namespace, NAME)
    assert events(dev_cluster, namespace, "ReconcileResumed")


def test_hibernation_keeps_the_state_on_the_claims_and_wakes_up_above_it(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    start(dev_cluster, operator, namespace, persistence={"enabled": True, "size": "64Mi"})
    call = ("call", NAME, '"next_value"', "-n", namespace)
    last = max(int(json.loads(dev_cluster.gencluster(*call).stdout)) for _ in range(5))
    plugin(dev_cluster, "hibernate", "on", NAME, "-n", namespace)
    asleep = wait_for(lambda: (lambda r: r if (r.get("status") or {}).get("phase")
                               == "Hibernated" else None)(
        clustered_server(dev_cluster, namespace, NAME)), DEADLINE, message="phase Hibernated")
    assert condition(asleep, "Ready")["reason"] == "Hibernated"
    assert pod_names(dev_cluster, namespace, NAME) == []
    for ordinal in range(3):  # the claims stay
        get_json(dev_cluster, "pvc", f"{NAME}-data-{ordinal}", "-n", namespace)
    assert events(dev_cluster, namespace, "Hibernated")

    plugin(dev_cluster, "hibernate", "off", NAME, "-n", namespace)
    ready(dev_cluster, operator, namespace)
    assert int(json.loads(dev_cluster.gencluster(*call).stdout)) > last
    assert events(dev_cluster, namespace, "ResumedFromHibernation")


def test_hibernation_of_a_cluster_in_memory_is_refused(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    start(dev_cluster, operator, namespace)
    refused = kubectl_gencluster(dev_cluster, "hibernate", "on", NAME, "-n", namespace)
    assert refused.returncode == 1 and "lose the state" in refused.stderr
    dev_cluster.kubectl("annotate", "csrv", NAME, "-n", namespace, "gencluster.io/hibernation=on")
    (warning,) = wait_for(lambda: events(dev_cluster, namespace, "HibernationRefused"),
                          DEADLINE, message="a HibernationRefused Event")
    assert "persistence" in warning["message"]
    assert len(pod_names(dev_cluster, namespace, NAME)) == 3


def test_report_bundles_the_cluster_without_secrets(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    namespace = namespace_for(request.node.name)
    start(dev_cluster, operator, namespace)
    bundle = tmp_path / "bundle.tar.gz"
    output = plugin(dev_cluster, "report", NAME, "-n", namespace, "-o", str(bundle))
    assert "no Secret" in output
    with tarfile.open(bundle) as archive:
        contents = {m.name.split("/", 1)[1]: archive.extractfile(m).read()  # type: ignore[union-attr]
                    for m in archive.getmembers() if m.isfile()}
    for name in ("clusteredserver.yaml", "pods.yaml", "events.yaml", "lease.yaml",
                 "services.yaml", "status.json"):
        assert name in contents, sorted(contents)
    pods = pod_names(dev_cluster, namespace, NAME)
    assert {f"logs/{p}/server.log" for p in pods} <= set(contents)
    status = json.loads(contents["status.json"])
    assert status["cluster"]["activePod"] in pods
    secret = get_json(dev_cluster, "secret", f"{NAME}-peer-token", "-n", namespace)
    token = base64.b64decode(secret["data"]["token"])
    assert not [name for name, data in contents.items() if token in data], "the token leaked"
    assert bundle.stat().st_mode & 0o077 == 0
