"""No silent re-initialisation (#11 part 3) and Admin.Restore (part 4) on real pods of the
local control plane, without the operator: every replica of a cluster without persistence
killed at once reports `state_lost`, answers clients UNAVAILABLE saying how to recover, never
runs `init` again; a backup restored into one of them brings the cluster back where it was;
a forced restore on the serving active replaces the state once per request id."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator

import grpc
import pytest
from gencluster import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import INITIALIZED_ANNOTATION, PEER_TOKEN_METADATA
from gencluster.wire import snapshot_from_chunks, snapshot_to_chunks
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    group = IdCluster(dev_cluster, "lost", secrets.token_urlsafe(32), 3)
    group.create()
    group.ready_cluster()
    yield group


def admin(cluster: IdCluster, pod: str) -> pb_grpc.AdminStub:
    return pb_grpc.AdminStub(grpc.insecure_channel(cluster.address(pod)))


def restore_stream(snapshot_chunks: list[pb.SnapshotChunk], request_id: str,
                   force: bool = False) -> list[pb.RestoreChunk]:
    origin = pb.RestoreOrigin(request_id=request_id, force=force, source="test")
    return [pb.RestoreChunk(origin=origin)] + [pb.RestoreChunk(snapshot=c)
                                               for c in snapshot_chunks]


def test_losing_every_replica_reports_state_lost_and_a_restore_brings_the_state_back(
    cluster: IdCluster,
) -> None:
    token = ((PEER_TOKEN_METADATA, cluster.token),)
    active = cluster.ready_cluster()
    client = Client(cluster.addresses(), timeout=20)
    last = max(client.call("next_value") for _ in range(5))
    assert INITIALIZED_ANNOTATION in cluster.lease()["metadata"]["annotations"]
    backup = list(admin(cluster, active).ExportState(pb.ExportStateRequest(), metadata=token,
                                                     timeout=10))
    pods = [cluster.pod_name(i) for i in range(cluster.replicas)]
    for pod in pods:
        cluster.dev.gencluster("dev", "fault", "--dir", str(cluster.dev.dir), "kill", pod)

    def all_lost() -> bool:
        statuses = [cluster.status(pod) for pod in pods]
        return all(s is not None and s.state_lost and s.applied_seq == 0 for s in statuses)

    wait_for(all_lost, 60, 0.2, "every restarted replica to report state_lost")
    with pytest.raises(grpc.RpcError) as refused:
        stub = pb_grpc.ClientStub(grpc.insecure_channel(cluster.address(pods[0])))
        stub.Call(pb.CallRequest(request_id="x", payload=b'"next_value"'), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "was lost" in refused.value.details()
    assert "gencluster.io/reinitialize" in refused.value.details()
    # Nobody ran init: still lost after several lease durations (empty in-sync set or not).
    wait_for(lambda: cluster.holder() == "", 30, 0.2, "the dead holder's Lease released")
    assert all_lost() and INITIALIZED_ANNOTATION in cluster.lease()["metadata"]["annotations"]

    stream = restore_stream(backup, "restore-1")
    reply = admin(cluster, pods[1]).Restore(iter(stream), metadata=token, timeout=10)
    assert reply.applied_seq == snapshot_from_chunks(backup)[0].applied_seq
    again = admin(cluster, pods[1]).Restore(iter(stream), metadata=token, timeout=10)
    assert again.applied_seq == reply.applied_seq, "a retried restore is answered, not refused"
    assert cluster.ready_cluster() == pods[1]
    assert client.call("next_value") == last + 1


def test_restore_is_refused_where_it_would_replace_a_state_without_force(
    cluster: IdCluster,
) -> None:
    token = ((PEER_TOKEN_METADATA, cluster.token),)
    active = cluster.ready_cluster()
    standby = next(cluster.pod_name(i) for i in range(cluster.replicas)
                   if cluster.pod_name(i) != active)
    backup = list(admin(cluster, active).ExportState(pb.ExportStateRequest(), metadata=token,
                                                     timeout=10))
    for pod in (active, standby):
        with pytest.raises(grpc.RpcError) as refused:
            admin(cluster, pod).Restore(iter(restore_stream(backup, f"r-{pod}")),
                                        metadata=token, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "force" in refused.value.details()
    with pytest.raises(grpc.RpcError) as forced_on_standby:
        admin(cluster, standby).Restore(iter(restore_stream(backup, "f", force=True)),
                                        metadata=token, timeout=10)
    assert forced_on_standby.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as empty:
        admin(cluster, active).Restore(iter(()), metadata=token, timeout=10)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_forced_restore_on_the_active_replaces_the_state_once_on_every_replica(
    cluster: IdCluster,
) -> None:
    token = ((PEER_TOKEN_METADATA, cluster.token),)
    active = cluster.ready_cluster()
    client = Client(cluster.addresses(), timeout=20)
    snapshot, epoch = snapshot_from_chunks(list(admin(cluster, active).ExportState(
        pb.ExportStateRequest(), metadata=token, timeout=10)))
    replacement = dataclasses.replace(snapshot, state=json.dumps(5000).encode())
    stream = restore_stream(list(snapshot_to_chunks(replacement, epoch=epoch)), "force-1",
                            force=True)
    first = admin(cluster, active).Restore(iter(stream), metadata=token, timeout=10)
    assert client.call("next_value") == 5001
    again = admin(cluster, active).Restore(iter(stream), metadata=token, timeout=10)
    assert again.applied_seq == first.applied_seq, "a retried forced restore applies once"
    assert client.call("next_value") == 5002
    for ordinal in range(cluster.replicas):
        pod = cluster.pod_name(ordinal)
        wait_for(lambda pod=pod: _state(cluster, pod) == 5002, 20, 0.1,
                 f"{pod} to hold the restored state")


def _state(cluster: IdCluster, pod: str) -> object:
    with grpc.insecure_channel(cluster.address(pod)) as channel:
        reply = pb_grpc.AdminStub(channel).GetState(
            pb.GetStateRequest(), metadata=((PEER_TOKEN_METADATA, cluster.token),), timeout=5)
    return json.loads(reply.state)
