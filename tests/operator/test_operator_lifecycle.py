"""End to end on the local control plane: the operator (a subprocess) and the real runtime in
process pods, driven with the real `kubectl`.

Each test applies `examples/id-server.yaml` in a namespace of its own, so the tests share one
`gencluster dev up` and one operator without seeing each other's objects.
"""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    clustered_server,
    events,
    get_json,
    kill_active_and_wait,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "id-server"
DEADLINE = 60.0
"""Generous for two shared cores; a healthy pass takes well under a second."""

CHILDREN = [
    ("service", NAME),
    ("service", f"{NAME}-peers"),
    ("serviceaccount", f"{NAME}-gencluster"),
    ("role", f"{NAME}-gencluster"),
    ("rolebinding", f"{NAME}-gencluster"),
    ("poddisruptionbudget", NAME),
    ("lease", NAME),
    ("secret", f"{NAME}-peer-token"),
    ("networkpolicy", NAME),
]


def namespace_of(resource: dict[str, Any]) -> str:
    return resource["metadata"]["namespace"]


def test_id_server_comes_up_with_every_child_owned(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, id_server: dict[str, Any]
) -> None:
    namespace, uid = namespace_of(id_server), id_server["metadata"]["uid"]
    status = id_server["status"]
    assert status["replicas"] == status["readyReplicas"] == 3
    assert status["phase"] == "Running" and status["epoch"] >= 1
    assert pod_names(dev_cluster, namespace, NAME) == [f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"]
    active = status["activePod"]
    assert sorted(s["pod"] for s in status["standbys"]) == sorted(
        {f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"} - {active}
    )
    owned = [*CHILDREN, *(("pod", pod) for pod in pod_names(dev_cluster, namespace, NAME))]
    for kind, name in owned:
        child = get_json(dev_cluster, kind, name, "-n", namespace)
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ClusteredServer", NAME, uid, True
        ), f"{kind}/{name}"

    table = dev_cluster.kubectl("get", "csrv", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "REPLICAS", "READY", "ACTIVE", "EPOCH", "STATUS", "AGE"]
    assert table[1].split()[:6] == [NAME, "3", "3", active, str(status["epoch"]), "Serving"]

    (elected,) = events(dev_cluster, namespace, "ActiveElected")
    assert active in elected["message"]
    assert events(dev_cluster, namespace, "ScaledUp")
    text = operator.metrics()
    labels = f'cluster="{NAME}",namespace="{namespace}"'
    assert f'gencluster_operator_active{{{labels},pod="{active}"}} 1.0' in text
    ours = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line.startswith("gencluster_")}
    assert all(name.startswith("gencluster_operator_") for name in ours), ours
    assert f"gencluster_operator_epoch{{{labels}}} {float(status['epoch'])}" in text


def test_deleting_the_active_pod_fails_over_to_a_standby(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, id_server: dict[str, Any]
) -> None:
    namespace = namespace_of(id_server)
    before = id_server["status"]
    dev_cluster.kubectl("delete", "pod", before["activePod"], "-n", namespace, "--wait=false")

    def moved() -> dict[str, Any] | None:
        resource = serving(dev_cluster, namespace, NAME)
        status = (resource or {}).get("status") or {}
        return resource if status.get("activePod") not in (None, before["activePod"]) else None

    after = wait_for(moved, DEADLINE, message="a new active, every pod back and in sync")["status"]
    assert after["epoch"] > before["epoch"]
    assert after["lastFailoverReason"] == "ActivePodDeleted"
    assert pod_names(dev_cluster, namespace, NAME) == [f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"]
    (completed,) = events(dev_cluster, namespace, "FailoverCompleted")
    assert after["activePod"] in completed["message"]
    assert events(dev_cluster, namespace, "PodReplaced")


def test_killed_active_is_cleared_from_the_lease_at_once(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, id_server: dict[str, Any]
) -> None:
    namespace = namespace_of(id_server)
    before = id_server["status"]
    # Well before the 15 s lease would expire: the operator saw the container die.
    after = kill_active_and_wait(dev_cluster, namespace, NAME, before, 10.0,
                                 "a new active before the lease expires")
    (started,) = events(dev_cluster, namespace, "FailoverStarted")
    assert before["activePod"] in started["message"]
    assert started["type"] == "Warning"
    wait_for(lambda: events(dev_cluster, namespace, "FailoverCompleted"), DEADLINE,
             message="a FailoverCompleted Event")
    assert after["lastFailoverReason"] == "ActiveContainerTerminated"
    wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
             message="the killed pod back as an in-sync standby")


def test_switchover_by_annotation_then_scale_up_and_down_keeps_the_active(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, id_server: dict[str, Any]
) -> None:
    namespace = namespace_of(id_server)
    dev_cluster.kubectl("scale", "csrv", NAME, "-n", namespace, "--replicas=5")
    five = wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
                    message="five pods Ready and in sync")
    assert pod_names(dev_cluster, namespace, NAME) == [f"{NAME}-{o}" for o in range(5)]
    assert five["status"]["replicas"] == 5

    # Move the active to the highest ordinal, so that scaling down must hand over first.
    target = f"{NAME}-4"
    dev_cluster.kubectl("annotate", "csrv", NAME, "-n", namespace,
                        f"gencluster.io/switchover-to={target}")

    def switched() -> dict[str, Any] | None:
        resource = clustered_server(dev_cluster, namespace, NAME)
        annotations = resource["metadata"].get("annotations") or {}
        status = resource.get("status") or {}
        done = status.get("activePod") == target and "gencluster.io/switchover-to" not in (
            annotations)
        return resource if done else None

    after_switch = wait_for(switched, DEADLINE, message=f"{target} active, annotation removed")
    assert after_switch["status"]["epoch"] > five["status"]["epoch"]
    assert after_switch["status"]["lastFailoverReason"] == "Switchover"
    assert events(dev_cluster, namespace, "SwitchoverStarted")
    wait_for(lambda: events(dev_cluster, namespace, "SwitchoverCompleted"), DEADLINE,
             message="a SwitchoverCompleted Event")

    dev_cluster.kubectl("scale", "csrv", NAME, "-n", namespace, "--replicas=2")

    def two() -> dict[str, Any] | None:
        resource = serving(dev_cluster, namespace, NAME)
        pods = pod_names(dev_cluster, namespace, NAME)
        return resource if resource and pods == [f"{NAME}-0", f"{NAME}-1"] else None

    final = wait_for(two, DEADLINE, message="two pods, ordinals 0 and 1")["status"]
    assert final["activePod"] in (f"{NAME}-0", f"{NAME}-1")
    assert final["lastFailoverReason"] == "ScaledDown"
    assert not events(dev_cluster, namespace, "FailoverStarted")
    scaled_down = [e["message"] for e in events(dev_cluster, namespace, "ScaledDown")]
    assert len(scaled_down) == 3 and all("standby" in message for message in scaled_down)
    role = get_json(dev_cluster, "role", f"{NAME}-gencluster", "-n", namespace)
    assert role["rules"][2]["resourceNames"] == [f"{NAME}-0", f"{NAME}-1"]


def test_deleting_the_clustered_server_removes_everything_it_owned(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, id_server: dict[str, Any]
) -> None:
    namespace = namespace_of(id_server)
    dev_cluster.kubectl("delete", "csrv", NAME, "-n", namespace, "--wait=false")

    def leftovers() -> list[str]:
        kinds = ",".join(sorted({kind for kind, _ in CHILDREN} | {"pod", "csrv"}))
        listing = get_json(dev_cluster, kinds, "-n", namespace)
        return [f"{item['kind']}/{item['metadata']['name']}" for item in listing["items"]
                if item["metadata"]["name"].startswith(NAME)]

    wait_for(lambda: not leftovers(), DEADLINE, message=f"everything gone: {leftovers()}")
