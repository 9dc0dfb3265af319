"""End to end: partition recovery with `partitionPolicy: Available`.

The active is cut off from its peers and from the API server with a real nftables rule; the
other side elects its own active once the (short) lease expires; the operator, which still
reaches both pods' Admin services, sees two actives, reports the split, merges the loser's
state into the winner with the server's `merge` (max for id_server) and demotes the loser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from gencluster.client import Client

from tests.devcluster_process import DevClusterProcess, wait_for
from tests.operator.operator_process import (
    OperatorProcess,
    clustered_server,
    condition,
    create_namespace,
    events,
    get_json,
    serving,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="network faults need root (nftables and one uid per pod)"
)

NAME = "ids"
DEADLINE = 60.0
AVAILABLE_ID_SERVER = """
apiVersion: gencluster.io/v1alpha1
kind: ClusteredServer
metadata:
  name: ids
spec:
  server: gencluster_examples.id_server:IdServer
  replicas: 3
  replication: {mode: Async}
  partitionPolicy: Available
  lease: {durationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1}
"""


@pytest.fixture
def heal(dev_cluster: DevClusterProcess) -> Iterator[None]:
    yield
    dev_cluster.gencluster("dev", "fault", "--dir", str(dev_cluster.dir), "heal")


def pod_ip(cluster: DevClusterProcess, namespace: str, pod: str) -> str:
    return get_json(cluster, "pod", pod, "-n", namespace)["status"]["podIP"]


def test_two_actives_after_a_partition_are_merged_and_the_loser_follows(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, heal: None
) -> None:
    namespace = create_namespace(dev_cluster, "split-brain")
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=AVAILABLE_ID_SERVER)
    before = wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
                      message=f"ids serving\n{operator.output()[-3000:]}")["status"]
    loser = before["activePod"]
    with Client(f"{pod_ip(dev_cluster, namespace, loser)}:50051", timeout=10.0) as client:
        handed_out = [client.call("next_value") for _ in range(50)]

    dev_cluster.gencluster("dev", "fault", "--dir", str(dev_cluster.dir), "isolate",
                           f"{namespace}/{loser}")

    def merged() -> dict[str, Any] | None:
        resource = clustered_server(dev_cluster, namespace, NAME)
        return resource if (resource.get("status") or {}).get("merges") == 1 else None

    resource = wait_for(merged, DEADLINE, message=f"a merge\n{operator.output()[-3000:]}")
    split = condition(resource, "SplitBrain")
    assert (split["status"], split["reason"]) == ("False", "StatesMerged")
    winner = resource["status"]["activePod"]
    assert winner != loser and resource["status"]["epoch"] > before["epoch"]
    assert f"merged {loser}" in split["message"] and winner in split["message"]
    (detected,) = events(dev_cluster, namespace, "SplitBrainDetected")
    assert detected["type"] == "Warning" and loser in detected["message"]
    (states_merged,) = events(dev_cluster, namespace, "StatesMerged")
    assert winner in states_merged["message"]

    dev_cluster.gencluster("dev", "fault", "--dir", str(dev_cluster.dir), "heal")
    healed = wait_for(lambda: serving(dev_cluster, namespace, NAME), DEADLINE,
                      message="the loser back as an in-sync standby")["status"]
    assert healed["activePod"] == winner and healed["merges"] == 1
    # The client Service selects the role label; the demoted loser relabels itself standby
    # once it reaches the API server again (docs/runtime-config.md, "Role label").
    wait_for(lambda: roles(dev_cluster, namespace)[loser] == "standby", DEADLINE,
             message=f"{loser} relabelled standby: {roles(dev_cluster, namespace)}")
    service = get_json(dev_cluster, "service", NAME, "-n", namespace)
    with Client(f"{service['spec']['clusterIP']}:50051", timeout=30.0) as client:
        assert client.call("next_value") > max(handed_out), roles(dev_cluster, namespace)


def roles(cluster: DevClusterProcess, namespace: str) -> dict[str, str]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"gencluster.io/cluster={NAME}")
    return {p["metadata"]["name"]: p["metadata"]["labels"].get("gencluster.io/role", "")
            for p in pods["items"]}
