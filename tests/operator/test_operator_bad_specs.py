"""End to end: specs that the API server must refuse, and a spec that passes the schema but
cannot run (an unimportable `server`), which the operator must explain instead of letting the
pods crash-loop in silence."""

from __future__ import annotations

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    clustered_server,
    condition,
    create_namespace,
    events,
    get_json,
    pod_names,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

DEADLINE = 60.0

MANIFEST = """
apiVersion: gencluster.io/v1alpha1
kind: ClusteredServer
metadata:
  name: {name}
spec:
{spec}
"""


FOREIGN_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: taken
spec:
  selector: {app: something-else}
  ports: [{port: 80, targetPort: 8080}]
"""


def manifest(name: str, spec: str) -> str:
    return MANIFEST.format(name=name, spec="\n".join(f"  {line}" for line in spec.splitlines()))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("server: gencluster_examples.id_server", "spec.server"),
        ("server: a:B\nreplicas: 0", "spec.replicas"),
        ("server: a:B\nlease: {durationSeconds: 5, renewDeadlineSeconds: 10}",
         "spec.lease.durationSeconds"),
        ("server: a:B\nreplicas: 1\nreplication: {minSyncStandbys: 1}",
         "spec.replication.minSyncStandbys"),
        ("server: a:B\npartitionPolicy: Sometimes", "spec.partitionPolicy"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_field(
    dev_cluster: DevClusterProcess, spec: str, field: str
) -> None:
    result = dev_cluster.kubectl("apply", "-f", "-", input=manifest("invalid", spec),
                                 check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert "invalid" not in dev_cluster.kubectl("get", "csrv", "-o", "name").stdout


def test_unimportable_server_is_degraded_with_a_message_and_one_event(
    dev_cluster: DevClusterProcess, operator: OperatorProcess
) -> None:
    namespace = create_namespace(dev_cluster, "unimportable")
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(
        "broken", "server: no_such_module:Nothing\nreplicas: 2"))

    def degraded() -> dict[str, str] | None:
        resource = clustered_server(dev_cluster, namespace, "broken")
        found = condition(resource, "Degraded")
        return found if found.get("reason") == "ServerNotRunnable" else None

    found = wait_for(degraded, DEADLINE, message=lambda: f"Degraded\n{operator.output()[-3000:]}")
    assert found["status"] == "True"
    assert "no_such_module" in found["message"] and "GENCLUSTER_SERVER" in found["message"]
    resource = clustered_server(dev_cluster, namespace, "broken")
    ready = condition(resource, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ServerNotRunnable")
    assert resource["status"]["phase"] == "Failed"
    assert "activePod" not in resource["status"]
    assert pod_names(dev_cluster, namespace, "broken") == ["broken-0", "broken-1"]
    table = dev_cluster.kubectl("get", "csrv", "broken", "-n", namespace).stdout
    assert "ServerNotRunnable" in table

    # The pods keep crash-looping (restarts every half second here); the condition and its
    # Event must not flap with every restart.
    first = wait_for(lambda: events(dev_cluster, namespace, "InvalidServer"), DEADLINE,
                     message="an InvalidServer Event")
    assert "no_such_module" in first[0]["message"] and first[0]["type"] == "Warning"
    wait_for(lambda: _restarts(dev_cluster, namespace) >= 6, DEADLINE,
             message="a few crash-loop restarts")
    assert len(events(dev_cluster, namespace, "InvalidServer")) == 1
    assert condition(clustered_server(dev_cluster, namespace, "broken"), "Degraded")[
        "lastTransitionTime"] == found["lastTransitionTime"]


def _restarts(cluster: DevClusterProcess, namespace: str) -> int:
    pods = get_json(cluster, "pods", "-n", namespace)["items"]
    return sum(
        status.get("restartCount", 0)
        for pod in pods
        for status in (pod.get("status") or {}).get("containerStatuses") or []
    )


def test_a_same_named_object_of_someone_else_is_reported_not_taken_over(
    dev_cluster: DevClusterProcess, operator: OperatorProcess
) -> None:
    namespace = create_namespace(dev_cluster, "taken")
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=FOREIGN_SERVICE)
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(
        "taken", "server: gencluster_examples.id_server:IdServer"))

    def failed() -> dict[str, str] | None:
        found = condition(clustered_server(dev_cluster, namespace, "taken"), "Degraded")
        return found if found.get("reason") == "ReconcileFailed" else None

    found = wait_for(failed, DEADLINE,
                     message=lambda: f"ReconcileFailed\n{operator.output()[-3000:]}")
    assert "Service taken exists and is not controlled by ClusteredServer taken" in (
        found["message"])
    service = get_json(dev_cluster, "service", "taken", "-n", namespace)
    assert "ownerReferences" not in service["metadata"]
    assert service["spec"]["ports"][0]["port"] == 80
    (event,) = wait_for(lambda: events(dev_cluster, namespace, "ReconcileFailed"), DEADLINE,
                        message="a ReconcileFailed Event")
    assert event["message"] == found["message"]

    dev_cluster.kubectl("delete", "service", "taken", "-n", namespace)

    def recovered() -> bool:
        resource = clustered_server(dev_cluster, namespace, "taken")
        return condition(resource, "Degraded").get("reason") != "ReconcileFailed" and len(
            pod_names(dev_cluster, namespace, "taken")) == 3

    wait_for(recovered, DEADLINE, message="the operator's own Service and the pods")
    service = get_json(dev_cluster, "service", "taken", "-n", namespace)
    assert service["metadata"]["ownerReferences"][0]["name"] == "taken"
    assert len(events(dev_cluster, namespace, "ReconcileFailed")) == 1
