"""The operator's Admin RPC client (`runtime_admin`) against an in-process gRPC Admin server
that records what it was asked: the peer token, timeouts of silent pods, the merge sequence.

The real runtime's Admin service is exercised end to end in test_operator_lifecycle.py; this
file pins the contract details that a healthy cluster never shows (errors, unreachable pods,
a merge the user's merge() refuses)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import PEER_TOKEN_METADATA
from gencluster_operator.observed import RuntimeStatus
from gencluster_operator.runtime_admin import (
    MERGE_PAUSE_SECONDS,
    AdminError,
    RuntimeAdmin,
    pod_address,
)

pytestmark = pytest.mark.integration

TOKEN = "peer-token-" + "x" * 32


@dataclass
class FakeAdmin(pb_grpc.AdminServicer):
    """Answers as one pod would; `calls` records (method, request) in order."""

    status: pb.StatusReply = field(default_factory=pb.StatusReply)
    switchover_error: grpc.StatusCode | None = None
    merge_error: pb.HandlerError | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def _check(self, context: grpc.ServicerContext) -> None:
        if dict(context.invocation_metadata()).get("gencluster-peer-token") != TOKEN:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong peer token")

    def Status(
        self, request: pb.StatusRequest, context: grpc.ServicerContext
    ) -> pb.StatusReply:
        self._check(context)
        return self.status

    def Switchover(
        self, request: pb.SwitchoverRequest, context: grpc.ServicerContext
    ) -> pb.SwitchoverReply:
        self._check(context)
        self.calls.append(("Switchover", request.target))
        if self.switchover_error is not None:
            context.abort(self.switchover_error, f"{request.target} is not in sync")
        return pb.SwitchoverReply(active=request.target, epoch=self.status.epoch + 1)

    def Demote(
        self, request: pb.DemoteRequest, context: grpc.ServicerContext
    ) -> pb.DemoteReply:
        self._check(context)
        self.calls.append(("Demote", request.follow_address))
        return pb.DemoteReply(epoch=self.status.epoch)

    def ExportState(
        self, request: pb.ExportStateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.SnapshotChunk]:
        self._check(context)
        self.calls.append(("ExportState", None))
        yield pb.SnapshotChunk(epoch=3, header=pb.SnapshotHeader(applied_seq=41, state_size=5))
        yield pb.SnapshotChunk(epoch=3, state=b"st")
        yield pb.SnapshotChunk(epoch=3, state=b"ate")

    def PauseWrites(
        self, request: pb.PauseWritesRequest, context: grpc.ServicerContext
    ) -> pb.PauseWritesReply:
        self._check(context)
        self.calls.append(("PauseWrites", request.seconds))
        return pb.PauseWritesReply(epoch=self.status.epoch, paused=request.seconds > 0)

    def Merge(
        self, request_iterator: Iterator[pb.MergeChunk], context: grpc.ServicerContext
    ) -> pb.MergeReply:
        self._check(context)
        chunks = list(request_iterator)
        self.calls.append(("Merge", chunks))
        if self.merge_error is not None:
            return pb.MergeReply(epoch=self.status.epoch, error=self.merge_error)
        return pb.MergeReply(epoch=self.status.epoch, seq=42)


@dataclass
class RunningFake:
    admin: FakeAdmin
    address: str


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(admin: FakeAdmin) -> RunningFake:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_AdminServicer_to_server(admin, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return RunningFake(admin, pod_address("127.0.0.1", port))

    yield start
    for server in servers:
        server.stop(None)


@pytest.fixture
def client() -> Iterator[RuntimeAdmin]:
    admin = RuntimeAdmin()
    yield admin
    admin.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_status_maps_roles_and_lag_and_leaves_out_pods_that_do_not_answer(
    serve: Any, client: RuntimeAdmin
) -> None:
    active = serve(FakeAdmin(pb.StatusReply(
        identity="id-0", role=pb.ROLE_ACTIVE, epoch=3, applied_seq=17,
        standbys=[pb.StandbyStatus(identity="id-1", lag=0, in_sync=True),
                  pb.StandbyStatus(identity="id-2", lag=5)],
    )))
    joining = serve(FakeAdmin(pb.StatusReply(identity="id-1", role=pb.ROLE_JOINING, epoch=3,
                                             applied_seq=12)))
    unknown_role = serve(FakeAdmin(pb.StatusReply(identity="id-3")))
    reports = client.statuses(TOKEN, {
        "id-0": active.address,
        "id-1": joining.address,
        "id-2": pod_address("127.0.0.1", closed_port()),
        "id-3": unknown_role.address,
    })
    assert reports == {
        "id-0": RuntimeStatus("active", 3, 17, (("id-1", 0), ("id-2", 5))),
        "id-1": RuntimeStatus("joining", 3, 12),
    }


def test_one_clusters_pass_keeps_the_other_clusters_channels_open(
    serve: Any, client: RuntimeAdmin
) -> None:
    """Passes of different ClusteredServers run at once: forgetting the pods one cluster no
    longer has must not close the channel another cluster's pass is using (that pass failed
    with `ValueError: Channel closed` at 30 clusters)."""
    a = serve(FakeAdmin(pb.StatusReply(identity="a-0", role=pb.ROLE_ACTIVE, epoch=1)))
    b = serve(FakeAdmin(pb.StatusReply(identity="b-0", role=pb.ROLE_ACTIVE, epoch=1)))
    client.forget_except(("ns", "a"), {a.address})  # a's pass: register, then call
    assert set(client.statuses(TOKEN, {"a-0": a.address})) == {"a-0"}
    client.forget_except(("ns", "b"), {b.address})
    stub_of_b = client._stub(b.address)  # b's pass has its stub ...
    client.forget_except(("ns", "a"), {a.address})  # ... when a's next pass forgets
    assert stub_of_b.Status(pb.StatusRequest(), metadata=((PEER_TOKEN_METADATA, TOKEN),),
                            timeout=5).role == pb.ROLE_ACTIVE
    client.forget_except(("ns", "a"), set())  # cluster a deleted: its channel goes
    assert a.address not in client._channels and b.address in client._channels


def test_status_carries_the_pods_own_view_of_the_lease(
    serve: Any, client: RuntimeAdmin
) -> None:
    """What `assessment.reconnected` decides from: an absent age (never read) stays None,
    which is not the same as a read just now (0.0)."""
    fresh = serve(FakeAdmin(pb.StatusReply(
        role=pb.ROLE_ACTIVE, epoch=3, lease_holder="id-0", lease_epoch=4,
        lease_read_age_seconds=0.0,
    )))
    never = serve(FakeAdmin(pb.StatusReply(role=pb.ROLE_STANDBY, epoch=3)))
    reports = client.statuses(TOKEN, {"id-1": fresh.address, "id-2": never.address})
    assert reports["id-1"] == RuntimeStatus("active", 3, 0, lease_holder="id-0",
                                            lease_epoch=4, lease_read_age_seconds=0.0)
    assert reports["id-2"].lease_read_age_seconds is None


def test_status_with_the_wrong_token_reads_as_not_reporting(
    serve: Any, client: RuntimeAdmin
) -> None:
    active = serve(FakeAdmin(pb.StatusReply(identity="id-0", role=pb.ROLE_ACTIVE, epoch=1)))
    assert client.statuses("not-the-token", {"id-0": active.address}) == {}


def test_switchover_names_the_target_and_reports_a_refusal_as_not_ambiguous(
    serve: Any, client: RuntimeAdmin
) -> None:
    active = serve(FakeAdmin(pb.StatusReply(role=pb.ROLE_ACTIVE, epoch=3)))
    reply = client.switchover(TOKEN, active.address, "id-2", renew_deadline_seconds=1)
    assert (reply.active, reply.epoch) == ("id-2", 4)
    active.admin.switchover_error = grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(AdminError) as refused:
        client.switchover(TOKEN, active.address, "id-1", renew_deadline_seconds=1)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert not refused.value.ambiguous
    assert "id-1 is not in sync" in str(refused.value)
    assert active.admin.calls == [("Switchover", "id-2"), ("Switchover", "id-1")]


def test_merge_exports_the_loser_merges_into_the_winner_then_demotes_the_loser(
    serve: Any, client: RuntimeAdmin
) -> None:
    winner = serve(FakeAdmin(pb.StatusReply(role=pb.ROLE_ACTIVE, epoch=4)))
    loser = serve(FakeAdmin(pb.StatusReply(role=pb.ROLE_ACTIVE, epoch=3)))
    result = client.merge_states(TOKEN, winner_address=winner.address, loser="id-1",
                                 loser_address=loser.address, loser_epoch=3)
    assert (result.epoch, result.sequence) == (4, 42)
    ((method, chunks),) = winner.admin.calls
    assert method == "Merge"
    origin = chunks[0].origin
    assert (origin.request_id, origin.source, origin.source_epoch) == ("merge/id-1/3/41",
                                                                        "id-1", 3)
    assert b"".join(c.snapshot.state for c in chunks[1:]) == b"state"
    assert loser.admin.calls == [("PauseWrites", MERGE_PAUSE_SECONDS), ("ExportState", None),
                                 ("Demote", winner.address)]


def test_a_merge_the_user_refuses_demotes_nobody(serve: Any, client: RuntimeAdmin) -> None:
    winner = serve(FakeAdmin(pb.StatusReply(role=pb.ROLE_ACTIVE, epoch=4),
                             merge_error=pb.HandlerError(type="ValueError", message="no")))
    loser = serve(FakeAdmin(pb.StatusReply(role=pb.ROLE_ACTIVE, epoch=3)))
    with pytest.raises(AdminError, match="merge\\(\\) raised ValueError: no"):
        client.merge_states(TOKEN, winner_address=winner.address, loser="id-1",
                            loser_address=loser.address, loser_epoch=3)
    # The loser was paused for the export and serves its side again: both sides as before.
    assert loser.admin.calls == [("PauseWrites", MERGE_PAUSE_SECONDS), ("ExportState", None),
                                 ("PauseWrites", 0.0)]
