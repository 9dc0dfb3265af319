"""Poison requests against three real replicas (issue #12 part 2): a handler's SystemExit
fails only its call, with no failover; a request whose handler ends the process takes down at
most two actives, then is refused with `gencluster.RequestQuarantined` and the cluster keeps
serving. A pod serves at most GENCLUSTER_MAX_SUBSCRIBERS subscriptions (part 1)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from gencluster import Client, RemoteError
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.quarantine import QUARANTINED
from gencluster.services import NEXT_EVENT_METADATA
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster

pytestmark = pytest.mark.integration

POD_SERVERS = Path(__file__).parent / "pod_servers"


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    env = [{"name": "PYTHONPATH", "value": str(POD_SERVERS)},
           {"name": "GENCLUSTER_MAX_SUBSCRIBERS", "value": "2"}]
    group = IdCluster(dev_cluster, "poison", secrets.token_urlsafe(32), 3,
                      server="poison_server:PoisonServer",
                      extra_spec={"template": {"spec": {"env": env}}})
    group.create()
    group.ready_cluster()
    yield group


def restarts(cluster: IdCluster) -> int:
    counts = cluster.dev.kubectl(
        "get", "pods", "-l", "gencluster.io/cluster=poison", "-o",
        "jsonpath={.items[*].status.containerStatuses[*].restartCount}",
    ).stdout.split()
    return sum(int(count) for count in counts)


def test_a_handlers_system_exit_fails_only_its_call(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    client = Client(cluster.addresses(), timeout=30)
    before = client.call("next_value")
    with pytest.raises(RemoteError) as raised:
        client.call("exit")
    assert raised.value.type == "SystemExit"
    assert client.call("next_value") == before + 1
    assert cluster.holder() == active
    assert restarts(cluster) == 0


def test_a_request_that_kills_its_active_is_quarantined_after_at_most_two(
    cluster: IdCluster,
) -> None:
    cluster.ready_cluster()
    client = Client(cluster.addresses(), timeout=120)
    before = client.call("next_value")
    transitions = cluster.lease()["spec"].get("leaseTransitions", 0)
    with pytest.raises(RemoteError) as raised:
        client.call_with_details("crash", request_id=f"poison-{uuid.uuid4()}")
    print(f"\nrefused: {raised.value}")
    assert raised.value.type == QUARANTINED
    taken_down = cluster.lease()["spec"].get("leaseTransitions", 0) - transitions
    print(f"actives taken down: {taken_down}, container restarts: {restarts(cluster)}")
    assert 1 <= taken_down <= 2
    assert client.call("next_value") == before + 1  # nothing of the poison was applied


def test_a_pod_refuses_subscribers_over_its_limit_until_one_leaves(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    with grpc.insecure_channel(cluster.address(active)) as channel:
        stub = pb_grpc.ClientStub(channel)
        streams = [stub.Subscribe(pb.SubscribeRequest(topic="t")) for _ in range(2)]
        for stream in streams:
            assert NEXT_EVENT_METADATA in dict(stream.initial_metadata())  # accepted
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.Subscribe(pb.SubscribeRequest(topic="t")))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the limit is 2" in (refused.value.details() or "")
        streams[0].cancel()

        def accepted() -> bool:
            """A subscription the server accepted sends headers naming its first event; a
            refused one ends with trailers only."""
            stream = stub.Subscribe(pb.SubscribeRequest(topic="t"))
            if NEXT_EVENT_METADATA in dict(stream.initial_metadata()):
                streams.append(stream)
                return True
            stream.cancel()
            return False

        wait_for(accepted, 30, 0.2, "a place freed by the cancelled subscription")
        for stream in streams:
            stream.cancel()
