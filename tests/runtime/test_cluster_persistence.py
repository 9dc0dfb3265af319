"""Persistence (#11 parts 1, 2) on real pods of the local control plane, without the operator:
a Sync cluster whose pods keep their log on PersistentVolumeClaims loses every pod at once
(SIGKILL of all three within milliseconds, under concurrent load) and resumes from its volumes
with no acknowledged value lost or handed out twice; nobody clears the Lease, so the Lease
rules and the recovery rule alone decide who leads."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gencluster import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster.run import EX_IOERR
from gencluster_dev.network.faults import FaultInjector
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster, Load, assert_no_gap

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


def process_group(leader: int) -> list[int]:
    """Every process of the pod whose processes form the group led by `leader`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == leader:
                    members.append(int(entry.name))
    return members


def largest_open_file(pid: int) -> int:
    """The size of the largest regular file `pid` has open (its log segment, its stdout)."""
    sizes = [0]
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            status = descriptor.stat()
            if stat.S_ISREG(status.st_mode):
                sizes.append(status.st_size)
    return max(sizes)


def owner(pid: int) -> int:
    """The real uid of `pid` (the pod's, when the kubelet runs as root)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def fill_the_volume(cluster: IdCluster, pod: str) -> None:
    """Make the pod's next writes past what it has written so far fail with EFBIG, as a full
    or failing volume does: RLIMIT_FSIZE on its live processes (Python ignores SIGXFSZ, so
    the write raises). Its files grow by the load; the log segment grows the fastest.

    `prlimit` runs as the pod's uid: lowering another process's limits needs either that or
    CAP_SYS_RESOURCE, which root in a container may lack."""
    faults = FaultInjector(cluster.dev.dir)
    leaders = [pid for pid in faults.pod(pod).pids.values() if pid]
    for leader in leaders:
        for pid in process_group(leader):
            limit = largest_open_file(pid) + 32 * 1024
            uid = owner(pid)
            subprocess.run(["prlimit", "--pid", str(pid), f"--fsize={limit}:{limit}"],
                           user=uid, group=uid, check=True, timeout=30)


def last_termination(cluster: IdCluster, pod: str) -> dict[str, Any]:
    statuses = json.loads(cluster.dev.kubectl("get", "pod", pod, "-o", "json").stdout)
    status = statuses["status"]["containerStatuses"][0]
    return dict((status.get("lastState") or {}).get("terminated") or {})


def test_a_failing_volume_stops_its_active_which_hands_over_and_recovers_on_restart(
    cluster: IdCluster,
) -> None:
    """The volume refuses writes under load: the active stops acknowledging, hands the Lease
    to an in-sync standby and exits with EX_IOERR and a termination message; the kubelet
    restarts it and it recovers from what its disk holds. No client call fails or is
    answered twice, and nothing acknowledged goes back."""
    old_active = cluster.ready_cluster()
    restarted_before = restarts(cluster, old_active)
    probe = Client(cluster.addresses(), timeout=60)
    before = probe.call("current")
    with Load(cluster.addresses(), call_timeout=60) as load:
        load.wait_for_more(100)
        fill_the_volume(cluster, old_active)
        wait_for(lambda: restarts(cluster, old_active) > restarted_before, 120, 0.2,
                 f"{old_active} to stop on its failed volume and be restarted")
        load.wait_for_more(100, timeout=60)
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    terminated = last_termination(cluster, old_active)
    assert terminated.get("exitCode") == EX_IOERR, terminated
    assert "volume failed" in str(terminated.get("message")), terminated
    assert cluster.holder() != old_active, "the failed active handed the Lease over"
    wait_for(lambda: "recovered from" in cluster.logs(old_active), 60, 0.2,
             f"{old_active} to recover from its volume after the restart")
    cluster.ready_cluster()
    assert probe.call("next_value") > max(load.values)
