"""End to end: specs that the API server must refuse, and a spec that passes the schema but
cannot run (an unimportable `server`), which the operator must explain instead of letting the
pods crash-loop in silence."""

from __future__ import annotations

import json
from typing import Any

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
        # Combinations that cannot be honoured (issue #13), never silently degraded.
        ("server: a:B\npartitionPolicy: Available\nreplication: {mode: Async, "
         "minSyncStandbys: 1}", "spec.replication.minSyncStandbys"),
        ("server: a:B\nlease: {durationSeconds: 11, renewDeadlineSeconds: 10, "
         "retryPeriodSeconds: 2}", "spec.lease.durationSeconds"),
        ("server: a:B\nlease: {durationSeconds: 20, renewDeadlineSeconds: 6, "
         "retryPeriodSeconds: 5}", "spec.lease.renewDeadlineSeconds"),
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


SMALL = ("server: gencluster_examples.id_server:IdServer\nreplicas: 1\n"
         "replication: {minSyncStandbys: 0}")
CRD_NAME = "clusteredservers.gencluster.io"
REPLICAS_MAXIMUM = ("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/"
                    "replicas/maximum")


def _id_server_answers(cluster: DevClusterProcess, namespace: str) -> int:
    reply = cluster.gencluster("call", "id-server", '"next_value"', "-n", namespace).stdout
    return int(json.loads(reply))


def test_an_absurd_scale_is_refused_naming_the_field_and_the_operator_serves_on(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, id_server: dict[str, Any]
) -> None:
    """Issue #12: `kubectl scale csrv X --replicas=2000000000` is refused by the API server
    (the scale subresource goes through the CRD's validation) naming the field; and when such
    a value slips past anyway (an older CRD without the maximum), the operator refuses the spec
    with InvalidSpec instead of building two billion ordinals, and keeps serving the other
    ClusteredServers."""
    served = id_server["metadata"]["namespace"]
    first = _id_server_answers(dev_cluster, served)
    namespace = create_namespace(dev_cluster, "absurd-scale")
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("victim", SMALL))
    wait_for(lambda: pod_names(dev_cluster, namespace, "victim") == ["victim-0"], DEADLINE,
             message="the victim's pod")

    refused = dev_cluster.kubectl("scale", "csrv", "victim", "-n", namespace,
                                  "--replicas=2000000000", check=False)
    assert refused.returncode != 0
    assert "spec.replicas" in refused.stderr and "less than or equal to 9" in refused.stderr, (
        refused.stderr)
    assert clustered_server(dev_cluster, namespace, "victim")["spec"]["replicas"] == 1

    # An older CRD without the maximum lets the value through: the operator must hold.
    dev_cluster.kubectl("patch", "crd", CRD_NAME, "--type=json",
                        f'-p=[{{"op": "remove", "path": "{REPLICAS_MAXIMUM}"}}]')
    try:
        wait_for(lambda: dev_cluster.kubectl(
            "scale", "csrv", "victim", "-n", namespace, "--replicas=2000000000",
            check=False).returncode == 0, DEADLINE, message="the scale admitted by the old CRD")

        def refused_by_the_operator() -> dict[str, str] | None:
            found = condition(clustered_server(dev_cluster, namespace, "victim"), "Degraded")
            return found if found.get("reason") == "InvalidSpec" else None

        found = wait_for(refused_by_the_operator, DEADLINE,
                         message=lambda: f"InvalidSpec\n{operator.output()[-3000:]}")
        assert "spec.replicas: Invalid value: 2000000000" in found["message"]
        (event,) = wait_for(lambda: events(dev_cluster, namespace, "InvalidSpec"), DEADLINE,
                            message="an InvalidSpec Event")
        assert "spec.replicas" in event["message"] and event["type"] == "Warning"
        assert pod_names(dev_cluster, namespace, "victim") == ["victim-0"]
        # The operator still serves the other cluster and answers changes to it.
        assert _id_server_answers(dev_cluster, served) > first
        assert operator.process.poll() is None
    finally:
        dev_cluster.kubectl("patch", "crd", CRD_NAME, "--type=json",
                            f'-p=[{{"op": "add", "path": "{REPLICAS_MAXIMUM}", "value": 9}}]')
    wait_for(lambda: dev_cluster.kubectl(
        "scale", "csrv", "victim", "-n", namespace, "--replicas=2",
        check=False).returncode == 0, DEADLINE, message="a sane scale")
    wait_for(lambda: pod_names(dev_cluster, namespace, "victim") == ["victim-0", "victim-1"],
             DEADLINE, message=lambda: f"the operator acting again\n{operator.output()[-3000:]}")
    assert condition(clustered_server(dev_cluster, namespace, "victim"), "Degraded").get(
        "reason") != "InvalidSpec"
    assert _id_server_answers(dev_cluster, served) > first
