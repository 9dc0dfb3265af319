"""`Client.call_with_details` and the per-attempt timeout, against real sockets: a small real
gRPC server that answers like an active (epoch, duplicate flag) and a "hung replica" that
accepts TCP connections but never speaks (what a SIGSTOPped pod looks like to a client)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from gencluster.client import CallDetails, Client, ClusterUnavailable
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

EPOCH = 7


class CountingActive(pb_grpc.ClientServicer):
    """Answers `next_value` like an id_server active of epoch 7, replaying the recorded reply
    for a request id it has seen (as the replicated reply table does)."""

    def __init__(self) -> None:
        self.value = 0
        self.replies: dict[str, int] = {}

    def Call(self, request: pb.CallRequest, context: Any) -> pb.CallReply:
        duplicate = request.request_id in self.replies
        if not duplicate:
            self.value += 1
            self.replies[request.request_id] = self.value
        value = self.replies[request.request_id]
        return pb.CallReply(epoch=EPOCH, seq=value, reply=json.dumps(value).encode(),
                            duplicate=duplicate)


@pytest.fixture
def active() -> Iterator[tuple[str, CountingActive]]:
    servicer = CountingActive()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ClientServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


@pytest.fixture
def hung_listener() -> Iterator[socket.socket]:
    """A listening socket that is never accepted from: the kernel completes the handshake, no
    HTTP/2 answer ever comes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener


@pytest.fixture
def hung_replica(hung_listener: socket.socket) -> str:
    return f"127.0.0.1:{hung_listener.getsockname()[1]}"


def test_call_with_details_names_the_term_and_the_address(
    active: tuple[str, CountingActive],
) -> None:
    address, _ = active
    with Client(address, timeout=5) as client:
        first = client.call_with_details("next_value")
        assert first == CallDetails(value=1, epoch=EPOCH, served_by=address, duplicate=False)
        assert client.call("next_value") == 2
        again = client.call_with_details("next_value", request_id="fixed")
        replay = client.call_with_details("next_value", request_id="fixed")
        assert (again.value, again.duplicate) == (3, False)
        assert (replay.value, replay.duplicate) == (3, True)


def test_a_hung_replica_costs_one_attempt_not_the_whole_deadline(
    active: tuple[str, CountingActive], hung_replica: str, hung_listener: socket.socket,
) -> None:
    """The hung replica, listed first, got the first attempt; the call was still answered,
    by the other address. Had that attempt not ended at `attempt_timeout`, it would have used
    up the call's whole deadline and the call would have failed with ClusterUnavailable."""
    address, _ = active
    with Client(f"{hung_replica},{address}", timeout=10, attempt_timeout=0.5) as client:
        details = client.call_with_details("next_value")
    assert details.served_by == address and details.value == 1
    hung_listener.setblocking(False)
    tried, _ = hung_listener.accept()  # raises BlockingIOError if no attempt connected
    tried.close()


def test_only_hung_replicas_end_in_cluster_unavailable(hung_replica: str) -> None:
    with Client(hung_replica, timeout=1.5, attempt_timeout=0.4) as client, \
            pytest.raises((ClusterUnavailable, grpc.RpcError)):
        client.call("next_value")
