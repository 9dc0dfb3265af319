"""Persistence (#11 parts 1, 2) on real pods of the local control plane, without the operator:
a Sync cluster whose pods keep their log on PersistentVolumeClaims loses every pod at once
(SIGKILL of all three within milliseconds, under concurrent load) and resumes from its volumes
with no acknowledged value lost or handed out twice; nobody clears the Lease, so the Lease
rules and the recovery rule alone decide who leads."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from gencluster import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster_dev.network.faults import FaultInjector
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster, Load

pytestmark = pytest.mark.integration

PERSISTENCE = {"enabled": True, "size": "64Mi"}


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    group = IdCluster(dev_cluster, "dur", secrets.token_urlsafe(32), 3,
                      extra_spec={"persistence": PERSISTENCE})
    group.create()
    group.ready_cluster()
    yield group


def kill_every_pod(cluster: IdCluster) -> float:
    """SIGKILL every pod's processes back to back; returns how long that took."""
    faults = FaultInjector(cluster.dev.dir)
    started = time.monotonic()
    for ordinal in range(cluster.replicas):
        faults.kill(cluster.pod_name(ordinal))
    return time.monotonic() - started


def test_every_pod_killed_at_once_under_load_resumes_from_the_volumes(
    cluster: IdCluster,
) -> None:
    cluster.ready_cluster()
    probe = Client(cluster.addresses(), timeout=60)
    before = probe.call("current")
    load = Load(cluster.addresses())
    with load:
        load.wait_for_more(300)
        spread = kill_every_pod(cluster)
        # The clients' calls in flight fail or are retried; stop once the cluster is gone.
    acknowledged = list(load.values)
    assert spread < 0.1, f"the kills took {spread:.3f}s"
    assert len(acknowledged) == len(set(acknowledged)), "a value was handed out twice"
    assert min(acknowledged) > before
    active = cluster.ready_cluster()
    for ordinal in range(cluster.replicas):
        logs = cluster.logs(cluster.pod_name(ordinal))
        assert "recovered from" in logs, f"{cluster.pod_name(ordinal)} did not read its volume"
    after = probe.call("next_value")
    assert after > max(acknowledged), (
        f"resumed at {after}, but {max(acknowledged)} was acknowledged before the crash"
    )
    # And it keeps serving with every standby in sync, from the recovered active.
    assert cluster.ready_cluster() == active
    wait_for(lambda: probe.call("next_value") > after, 30, 0.1, "serving after recovery")


def restarts(cluster: IdCluster, pod: str) -> int:
    return int(cluster.dev.kubectl(
        "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"
    ).stdout or 0)


def test_a_restarted_standby_catches_up_from_its_volume_and_the_log_not_by_snapshot(
    cluster: IdCluster,
) -> None:
    active = cluster.ready_cluster()
    standby = next(cluster.pod_name(i) for i in range(cluster.replicas)
                   if cluster.pod_name(i) != active)
    client = Client(cluster.addresses(), timeout=60)
    for _ in range(20):
        client.call("next_value")
    restarted_before = restarts(cluster, standby)
    FaultInjector(cluster.dev.dir).kill(standby)
    for _ in range(50):
        client.call("next_value")  # the other standby keeps Sync writes going
    target = client.call("next_value")

    def caught_up() -> bool:
        status = cluster.status(standby)
        active_status = cluster.status(active)
        return (restarts(cluster, standby) > restarted_before
                and status is not None and active_status is not None
                and status.role == pb.ROLE_STANDBY
                and status.applied_seq == active_status.applied_seq)

    wait_for(caught_up, 60, 0.2, f"{standby} restarted and back at the active's position")
    logs = cluster.logs(standby)  # the restarted run's
    assert "recovered from" in logs
    assert "joined by snapshot" not in logs, "it continued from its volume and the log"
    assert client.call("next_value") == target + 1
