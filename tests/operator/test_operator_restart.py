"""End to end: the operator keeps no state that matters across restarts (everything is read
back from the API and the pods), and `--namespace` limits what it touches."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    clustered_server,
    create_namespace,
    events,
    get_json,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "id-server"
DEADLINE = 60.0
PODS = [f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"]


def test_a_restarted_operator_resumes_where_the_cluster_is(dev_cluster: DevClusterProcess) -> None:
    watched = create_namespace(dev_cluster, "watched")
    other = create_namespace(dev_cluster, "other")
    for namespace in (watched, other):
        dev_cluster.kubectl("apply", "-n", namespace, "-f", str(ID_SERVER))
    first = OperatorProcess(dev_cluster, "--namespace", watched)
    try:
        before = wait_for(
            lambda: serving(dev_cluster, watched, NAME), DEADLINE,
            message=lambda: f"serving in {watched}\n{first.output()[-3000:]}",
        )["status"]
        assert pod_names(dev_cluster, other, NAME) == []
        assert "status" not in clustered_server(dev_cluster, other, NAME)
        token_uid = secret_uid(dev_cluster, watched)
    finally:
        first.stop()

    # While no operator runs, a standby pod goes away.
    standby = next(pod for pod in PODS if pod != before["activePod"])
    dev_cluster.kubectl("delete", "pod", standby, "-n", watched)
    assert pod_names(dev_cluster, watched, NAME) == sorted(set(PODS) - {standby})

    second = OperatorProcess(dev_cluster, "--all-namespaces")
    try:
        def whole_again() -> dict[str, Any] | None:
            found = serving(dev_cluster, watched, NAME)
            return found if found and pod_names(dev_cluster, watched, NAME) == PODS else None

        after = wait_for(whole_again, DEADLINE, message=lambda: f"{standby} back\n"
                         f"{second.output()[-3000:]}")["status"]
        assert (after["activePod"], after["epoch"]) == (before["activePod"], before["epoch"])
        assert len(events(dev_cluster, watched, "ActiveElected")) == 1
        replaced = [e["message"] for e in events(dev_cluster, watched, "PodReplaced")]
        assert any(standby in message for message in replaced)
        wait_for(lambda: serving(dev_cluster, other, NAME), DEADLINE,
                 message=lambda: f"the other namespace reconciled too\n{second.output()[-3000:]}")
        assert secret_uid(dev_cluster, watched) == token_uid, "the peer token is drawn once"
    finally:
        second.stop()


def secret_uid(cluster: DevClusterProcess, namespace: str) -> str:
    return get_json(cluster, "secret", f"{NAME}-peer-token", "-n", namespace)["metadata"]["uid"]
