"""Hostile input against three real replicas (issue #12 parts 1 and 3): every finding of the
issue that concerns bounds and request identity, reproduced over real sockets and now refused
with a clear status that names the field, changing nothing on any replica.

- A request id of 1 MiB was accepted and kept on every replica; now INVALID_ARGUMENT.
- A client could pre-submit the operator's merge id; ids under the reserved prefix are now
  INVALID_ARGUMENT on the Client service, and Admin ids live under that prefix.
- The same id with a different request was answered with the first request's reply; now
  FAILED_PRECONDITION, on the active and on the next active after a SIGKILL.
- Replies of 100 KB broke the operator's merge (its 4 MiB limit) and events of 100 KB broke
  joins (1,000-record batches of 100 MB); both now travel in byte-bounded batches.

The pure rules: test_limits.py. Random input against the same services: test_fuzz_services.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import grpc
import pytest
from gencluster import Client, RemoteError, RequestIdReusedError, RetryWindowExpired
from gencluster.limits import (
    MAX_ERROR_MESSAGE_BYTES,
    RESERVED_REQUEST_ID_PREFIX,
    InvalidInput,
)
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import PEER_TOKEN_METADATA
from gencluster_operator.runtime_admin import RuntimeAdmin
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.hostile_servers import BLOB_SPEC
from tests.runtime.test_cluster_idserver import IdCluster, restart_count

pytestmark = pytest.mark.integration

SERVER = "tests.runtime.hostile_servers:BlobServer"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    group = IdCluster(dev_cluster, "blobs", secrets.token_urlsafe(32), 3, server=SERVER,
                      extra_spec=BLOB_SPEC)
    group.create()
    group.ready_cluster()
    yield group


def positions(cluster: IdCluster) -> dict[str, tuple[int, int]]:
    """Every replica's (applied_seq, epoch): what a refused input must not move."""
    wait_for(lambda: all(cluster.status(cluster.pod_name(i)) is not None
                         for i in range(cluster.replicas)), 20, 0.1, "every replica's status")
    result = {}
    for ordinal in range(cluster.replicas):
        pod = cluster.pod_name(ordinal)
        status = cluster.status(pod)
        assert status is not None
        result[pod] = (status.applied_seq, status.epoch)
    return result


def settled_positions(cluster: IdCluster) -> dict[str, tuple[int, int]]:
    """Positions once every standby applied what the active did (Sync mode acknowledges on
    one standby; the other may trail by a batch)."""
    def same() -> dict[str, tuple[int, int]] | None:
        now = positions(cluster)
        return now if len(set(now.values())) == 1 else None
    return wait_for(same, 20, 0.1, "every replica at the same position")


def calls(client: Client) -> int:
    value: int = client.call(["calls"])
    return value


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return raised.value


def test_oversized_and_reserved_fields_are_refused_naming_the_field(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    address = cluster.address(active)
    before = settled_positions(cluster)
    token = ((PEER_TOKEN_METADATA, cluster.token),)
    payload = b'["blob",1]'
    with grpc.insecure_channel(address) as channel:
        client = pb_grpc.ClientStub(channel)
        admin = pb_grpc.AdminStub(channel)
        cases = [
            (lambda: client.Call(pb.CallRequest(request_id="i" * MIB, payload=payload),
                                 timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "request_id is at least 1048576 bytes"),
            (lambda: client.Cast(pb.CastRequest(request_id="€" * 86, payload=b'["bump"]'),
                                 timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "request_id is 258 bytes, over the limit of 256"),
            (lambda: client.Call(pb.CallRequest(
                request_id=RESERVED_REQUEST_ID_PREFIX + "merge/blobs-1/1/1", payload=payload),
                timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "reserved for the operator"),
            (lambda: list(client.Subscribe(pb.SubscribeRequest(topic="t" * MIB), timeout=10)),
             grpc.StatusCode.INVALID_ARGUMENT, "topic is at least"),
            (lambda: client.Call(pb.CallRequest(request_id="big",
                                                payload=b'"' + b"a" * (4 * MIB) + b'"'),
                                 timeout=10),
             grpc.StatusCode.RESOURCE_EXHAUSTED, "over the json codec limit"),
            (lambda: admin.PauseWrites(pb.PauseWritesRequest(seconds=float("inf")),
                                       metadata=token, timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "seconds is inf"),
            (lambda: admin.Demote(pb.DemoteRequest(follow_address="a" * 5000),
                                  metadata=token, timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "follow_address is at least"),
            (lambda: pb_grpc.PeerStub(channel).Snapshot(
                pb.SnapshotRequest(identity="p" * 1000), metadata=token, timeout=10).__next__(),
             grpc.StatusCode.INVALID_ARGUMENT, "identity is 1000 bytes, over the limit of 253"),
        ]
        for call, code, words in cases:
            error = rpc_error(call)
            assert (error.code(), words) == (code, words) and words in error.details(), (
                error.code(), error.details()
            )
    # The client library refuses the same ids before sending them.
    with Client(address, timeout=20) as library, pytest.raises(InvalidInput, match="request_id"):
        library.call_with_details(["blob", 1], request_id="i" * MIB)
    assert positions(cluster) == before
    assert cluster.holder() == active


def test_a_reply_over_the_codec_limit_and_a_huge_error_message_are_bounded(
    cluster: IdCluster,
) -> None:
    cluster.ready_cluster()
    with Client(cluster.addresses(), timeout=30) as client:
        count = calls(client)
        with pytest.raises(RemoteError) as too_big:
            client.call(["blob", 5 * MIB])
        assert "over the json codec limit" in str(too_big.value)
        with pytest.raises(RemoteError) as huge_message:
            client.call(["raise", 10 * MIB])
        assert len(huge_message.value.message.encode()) <= MAX_ERROR_MESSAGE_BYTES
        assert "[cut: the message was 10485760 bytes]" in huge_message.value.message
        assert calls(client) == count


def test_a_request_id_reused_for_another_request_is_refused_on_this_and_the_next_active(
    cluster: IdCluster,
) -> None:
    active = cluster.ready_cluster()
    request_id = f"reused-{secrets.token_hex(8)}"
    with Client(cluster.addresses(), timeout=30) as client:
        first = client.call_with_details(["blob", 3], request_id=request_id)
        count = calls(client)
    settled = settled_positions(cluster)

    def refused_everywhere() -> None:
        address = cluster.address(cluster.ready_cluster())
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ClientStub(channel)
            for call in (
                lambda: stub.Call(pb.CallRequest(request_id=request_id,
                                                 payload=b'["blob",4]'), timeout=10),
                lambda: stub.Cast(pb.CastRequest(request_id=request_id,
                                                 payload=b'["bump"]'), timeout=10),
                lambda: stub.Call(pb.CallRequest(request_id=request_id,
                                                 payload=b'["calls"]'), timeout=10),
            ):
                error = rpc_error(call)
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "reused with a different request" in error.details()
        with Client(address, timeout=30) as again:
            with pytest.raises(RequestIdReusedError, match="reused with a different request"):
                again.call_with_details(["blob", 4], request_id=request_id)
            retry = again.call_with_details(["blob", 3], request_id=request_id)
            assert retry.duplicate and retry.value == first.value
            assert calls(again) == count

    refused_everywhere()
    assert positions(cluster) == settled
    restarts = restart_count(cluster, active)
    cluster.dev.gencluster("dev", "fault", "--dir", str(cluster.dev.dir), "kill", active)
    wait_for(lambda: cluster.holder() not in ("", active), 30, 0.1, "a new active")
    wait_for(lambda: restart_count(cluster, active) > restarts, 30, 0.1, "the restart")
    refused_everywhere()


def test_large_replies_merge_through_the_operators_admin_channel(cluster: IdCluster) -> None:
    """45 replies of 100 KB: the export of the reply table was one chunk of 4.5 MB, over the
    operator's 4 MiB receive limit, so every merge of such a cluster failed."""
    active = cluster.ready_cluster()
    with Client(cluster.addresses(), timeout=30) as client:
        for _ in range(45):
            client.call(["blob", 100_000])
        count = calls(client)
    loser = next(cluster.pod_name(i) for i in range(cluster.replicas)
                 if cluster.pod_name(i) != active)
    settled_positions(cluster)
    loser_status = cluster.status(loser)
    assert loser_status is not None
    admin = RuntimeAdmin()
    try:
        result = admin.merge_states(
            cluster.token, winner_address=cluster.address(active), loser=loser,
            loser_address=cluster.address(loser), loser_epoch=loser_status.epoch,
        )
    finally:
        admin.close()
    assert not result.duplicate
    cluster.ready_cluster()
    with Client(cluster.addresses(), timeout=30) as client:
        assert calls(client) == count  # BlobServer.merge keeps the larger count


def test_a_standby_joins_by_snapshot_past_large_events(cluster: IdCluster) -> None:
    """680 retained events of 100 KB were one 68 MB batch of the snapshot stream, over the
    peers' 64 MiB limit: a standby that restarted could never join again."""
    active = cluster.ready_cluster()
    with Client(cluster.addresses(), timeout=60) as client:
        for _ in range(17):
            client.call(["publish", "blobs", 40, 100_000])
    standby = next(cluster.pod_name(i) for i in range(cluster.replicas)
                   if cluster.pod_name(i) != active)
    restarts = restart_count(cluster, standby)
    cluster.dev.gencluster("dev", "fault", "--dir", str(cluster.dev.dir), "kill", standby)
    wait_for(lambda: restart_count(cluster, standby) > restarts, 30, 0.1, "the restart")
    wait_for(lambda: "joined by snapshot" in cluster.logs(standby), 60, 0.2,
             "the restarted standby to join by snapshot")
    assert cluster.ready_cluster() == active
    settled_positions(cluster)


@pytest.fixture(scope="module")
def small(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    """Two replicas with the overridable limits set low (docs/limits.md)."""
    group = IdCluster(
        dev_cluster, "small", secrets.token_urlsafe(32), 2, server=SERVER,
        extra_spec={**BLOB_SPEC, "runtime": {"deduplicationWindowSeconds": 300,
                                             "maxMessageBytes": 128 * 1024,
                                             "replyTableMaxBytes": MIB}},
    )
    group.create()
    group.ready_cluster()
    yield group


def test_the_overridable_limits_reach_the_runtime(small: IdCluster) -> None:
    small.ready_cluster()
    with Client(small.addresses(), timeout=30) as client:
        count = calls(client)
        with pytest.raises(grpc.RpcError) as too_big:
            client.call(["blob", 1, "y" * 150_000])  # under gRPC's own limit + 64 KiB
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over the json codec limit of 131072 bytes" in too_big.value.details()
        with pytest.raises(RemoteError, match="limit of 131072 bytes"):
            client.call(["blob", 200_000])
        assert calls(client) == count
        # 1 MiB of reply table: twenty replies of 100 KB push the first out, and its retry is
        # refused (it may have been applied), not applied again. The new calls meanwhile are
        # accepted although records younger than the clock-skew margin left the table (they
        # were refused, every one, while the table churned faster than that margin).
        first_attempt = time.time()
        first = client.call_with_details(["blob", 100_000], request_id="first")
        for _ in range(20):
            client.call(["blob", 100_000])
        with pytest.raises(RetryWindowExpired):
            client.call_with_details(["blob", 100_000], request_id="first",
                                     first_attempt=first_attempt)
        assert calls(client) == count + 21 and not first.duplicate
