"""`kubectl gencluster backup|restore` over real gRPC, against fake Admin servers in-process.

Scope, on purpose: this checks the plugin's **wire handling only** (which pod it calls, with
the peer token, what stream it sends and how it reports the runtime's answers, including a
FAILED_PRECONDITION refusal). The fake servers stand in for pods whose runtime implements
Admin.ExportState and Admin.Restore; they prove nothing about the runtime's own Restore (its
checks, its replication of the restored state), which is tested with the runtime. The
Kubernetes side is faked too (the pod list and the peer-token Secret the plugin reads).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from gencluster import kubectl_plugin as plugin
from gencluster.backup import read_backup
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import GRPC_PORT_NAME, PEER_TOKEN_METADATA

from tests.operator.test_backup_file import export

pytestmark = pytest.mark.integration

TOKEN = "p" * 40
NAME = "id"
NAMESPACE = "prod"


class FakePodAdmin(pb_grpc.AdminServicer):
    """One pod's Admin service: answers Status as told, exports `state`, records restores."""

    def __init__(self, identity: str, role: int, *, state_lost: bool = False,
                 refuse: str | None = None) -> None:
        self.identity = identity
        self.role = role
        self.state_lost = state_lost
        self.refuse = refuse
        self.restores: list[list[pb.RestoreChunk]] = []
        self.exports = 0

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        if dict(context.invocation_metadata()).get(PEER_TOKEN_METADATA) != TOKEN:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad peer token")

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        self._authenticate(context)
        return pb.StatusReply(identity=self.identity, role=self.role, epoch=7, applied_seq=120,
                              server="gencluster_examples.id_server:IdServer",
                              codec="json", state_lost=self.state_lost)

    def ExportState(self, request: pb.ExportStateRequest,
                    context: grpc.ServicerContext) -> Iterator[pb.SnapshotChunk]:
        self._authenticate(context)
        self.exports += 1
        yield from export()

    def Restore(self, request_iterator: Iterator[pb.RestoreChunk],
                context: grpc.ServicerContext) -> pb.RestoreReply:
        self._authenticate(context)
        received = list(request_iterator)
        if self.refuse is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refuse)
        self.restores.append(received)
        return pb.RestoreReply(epoch=8, applied_seq=121)


class FakeCore:
    """The CoreV1Api calls the plugin makes: pods by label, the peer-token Secret."""

    def __init__(self, pods: list[Any]) -> None:
        self.pods = pods

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        assert (namespace, label_selector) == (NAMESPACE, f"gencluster.io/cluster={NAME}")
        return SimpleNamespace(items=self.pods)

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        assert (name, namespace) == (f"{NAME}-peer-token", NAMESPACE)
        return SimpleNamespace(data={"token": base64.b64encode(TOKEN.encode()).decode()})


class FakeCustom:
    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"metadata": {"name": NAME}, "spec": {}, "status": {}}


def fake_pod(name: str, port: int) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, deletion_timestamp=None),
        status=SimpleNamespace(pod_ip="127.0.0.1"),
        spec=SimpleNamespace(containers=[SimpleNamespace(
            ports=[SimpleNamespace(name=GRPC_PORT_NAME, container_port=port)])]),
    )


@pytest.fixture
def cluster() -> Iterator[Any]:
    """start(*admins) -> a plugin Target whose pods id-0, id-1, ... are those admins."""
    servers: list[grpc.Server] = []

    def start(*admins: FakePodAdmin) -> plugin.Target:
        pods = []
        for ordinal, admin in enumerate(admins):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            pb_grpc.add_AdminServicer_to_server(admin, server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            servers.append(server)
            pods.append(fake_pod(f"{NAME}-{ordinal}", port))
        return plugin.Target(NAME, NAMESPACE, FakeCore(pods), FakeCustom())

    yield start
    for server in servers:
        server.stop(None)


def test_backup_exports_the_active_into_a_checked_file(cluster: Any, tmp_path: Path) -> None:
    standby = FakePodAdmin("id-0", pb.ROLE_STANDBY)
    active = FakePodAdmin("id-1", pb.ROLE_ACTIVE)
    target = cluster(standby, active)
    path = tmp_path / "id.backup"
    message = plugin.backup(target, str(path), timeout=10)
    assert (active.exports, standby.exports) == (1, 0)
    header, chunks = read_backup(path.read_bytes())
    assert chunks == export()
    assert (header.cluster, header.namespace, header.server) == (
        NAME, NAMESPACE, "gencluster_examples.id_server:IdServer")
    assert "taken from id-1 at epoch 7, applied_seq 120" in message
    assert [p.name for p in tmp_path.iterdir()] == ["id.backup"], "no temporary file left"


def test_restore_streams_the_origin_and_the_chunks_to_a_pod_that_lost_its_state(
    cluster: Any, tmp_path: Path
) -> None:
    source = cluster(FakePodAdmin("id-0", pb.ROLE_ACTIVE))
    path = tmp_path / "id.backup"
    plugin.backup(source, str(path), timeout=10)
    lost = [FakePodAdmin(f"id-{o}", pb.ROLE_STANDBY, state_lost=o > 0) for o in range(3)]
    message = plugin.restore(cluster(*lost), str(path), force=False, timeout=10)
    assert [len(a.restores) for a in lost] == [0, 1, 0]
    stream = lost[1].restores[0]
    origin = stream[0].origin
    assert (origin.force, origin.source) == (False, "id.backup")
    assert len(origin.request_id) == 32
    assert [c.snapshot for c in stream[1:]] == export()
    assert "through id-1 (it reports state_lost)" in message
    assert "epoch 8, applied_seq 121" in message
    assert origin.request_id in message


def test_two_restores_carry_two_request_ids(cluster: Any, tmp_path: Path) -> None:
    path = tmp_path / "id.backup"
    plugin.backup(cluster(FakePodAdmin("id-0", pb.ROLE_ACTIVE)), str(path), timeout=10)
    fresh = FakePodAdmin("id-0", pb.ROLE_STANDBY)
    target = cluster(fresh)
    plugin.restore(target, str(path), force=False, timeout=10)
    plugin.restore(target, str(path), force=False, timeout=10)
    ids = {r[0].origin.request_id for r in fresh.restores}
    assert len(ids) == 2


def test_a_serving_cluster_needs_force_and_then_gets_it_through_the_active(
    cluster: Any, tmp_path: Path
) -> None:
    active = FakePodAdmin("id-0", pb.ROLE_ACTIVE)
    standby = FakePodAdmin("id-1", pb.ROLE_STANDBY)
    target = cluster(active, standby)
    path = tmp_path / "id.backup"
    plugin.backup(target, str(path), timeout=10)
    with pytest.raises(plugin.CommandError, match="--force"):
        plugin.restore(target, str(path), force=False, timeout=10)
    assert not active.restores and not standby.restores
    plugin.restore(target, str(path), force=True, timeout=10)
    assert active.restores[0][0].origin.force is True and not standby.restores


def test_a_refusal_prints_the_runtimes_message_and_exits_1(
    cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "id.backup"
    plugin.backup(cluster(FakePodAdmin("id-0", pb.ROLE_ACTIVE)), str(path), timeout=10)
    refusing = FakePodAdmin("id-0", pb.ROLE_STANDBY,
                            refuse="this replica holds state (applied_seq 9); use force")
    target = cluster(refusing)
    monkeypatch.setattr(plugin, "connect", lambda arguments: target)
    assert plugin.main(["restore", NAME, str(path), "-n", NAMESPACE]) == 1
    err = capsys.readouterr().err
    assert "id-0 refused the restore: this replica holds state (applied_seq 9); use force" in err
