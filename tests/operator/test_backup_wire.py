"""`kubectl gencluster backup|restore` over the real wire, against fake Admin servers.

Scope, on purpose: this checks the plugin's **wire handling only** (which pod it calls, with
the peer token, what stream it sends and how it reports the runtime's answers, including a
FAILED_PRECONDITION refusal). Each fake pod is a fake gRPC Admin server behind the runtime's
real Admin bridge (`gencluster.admin_http`, on the pod's `metrics` port); the plugin reaches
it the way it reaches a real pod, through an API server's `pods/NAME:PORT/proxy`, here a
stand-in that serves that one route with the local control plane's own forwarding
(`gencluster_dev.apiserver.podproxy`). The fake servers stand in for pods whose runtime
implements Admin.ExportState and Admin.Restore; they prove nothing about the runtime's own
Restore (its checks, its replication of the restored state), which is tested with the runtime.
The rest of the Kubernetes side is faked too (the pod list and the peer-token Secret).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Coroutine, Iterator
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import grpc
import kubernetes
import pytest
from aiohttp import web
from gencluster import kubectl_plugin as plugin
from gencluster.admin_http import AdminHttp
from gencluster.backup import read_backup
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import GRPC_PORT_NAME, METRICS_PORT_NAME, PEER_TOKEN_METADATA
from gencluster_dev.apiserver import podproxy

from tests.operator.test_backup_file import export

pytestmark = pytest.mark.integration

TOKEN = "p" * 40
NAME = "id"
NAMESPACE = "prod"
T = TypeVar("T")


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
    """The CoreV1Api calls the plugin makes: pods by label or name, the peer-token Secret;
    `api_client` is a real client of the stand-in API server."""

    def __init__(self, pods: list[Any], api_client: Any) -> None:
        self.pods = pods
        self.api_client = api_client

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        assert (namespace, label_selector) == (NAMESPACE, f"gencluster.io/cluster={NAME}")
        return SimpleNamespace(items=self.pods)

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        assert namespace == NAMESPACE
        return next(pod for pod in self.pods if pod.metadata.name == name)

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        assert (name, namespace) == (f"{NAME}-peer-token", NAMESPACE)
        return SimpleNamespace(data={"token": base64.b64encode(TOKEN.encode()).decode()})


class FakeCustom:
    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"metadata": {"name": NAME}, "spec": {}, "status": {}}


def fake_pod(name: str, grpc_port: int, metrics_port: int) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, deletion_timestamp=None),
        status=SimpleNamespace(pod_ip="127.0.0.1"),
        spec=SimpleNamespace(containers=[SimpleNamespace(ports=[
            SimpleNamespace(name=GRPC_PORT_NAME, container_port=grpc_port),
            SimpleNamespace(name=METRICS_PORT_NAME, container_port=metrics_port),
        ])]),
    )


class Plane:
    """An event loop in a thread hosting the pods' Admin bridges and a stand-in API server
    whose one route is `pods/[SCHEME:]NAME[:PORT]/proxy/PATH` (every pod is on 127.0.0.1)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.bridges: list[AdminHttp] = []
        self.runner = self.run(self._start_api())
        self.api_port = int(self.runner.addresses[0][1])

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def _start_api(self) -> web.AppRunner:
        async def proxy(request: web.Request) -> web.StreamResponse:
            target = podproxy.parse_target(request.match_info["target"])
            url = podproxy.target_url(target, "127.0.0.1", "/" + request.match_info["path"],
                                      request.rel_url.raw_query_string)
            return await podproxy.forward(request, url)

        app = web.Application()
        app.router.add_route("*", "/api/v1/namespaces/{ns}/pods/{target}/proxy/{path:.*}",
                             proxy)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    def bridge(self, grpc_port: int) -> int:
        """A real Admin bridge in front of the gRPC server on `grpc_port`; its port."""
        bridge = AdminHttp(f"127.0.0.1:{grpc_port}", lambda accept: (b"", "text/plain"))
        self.run(bridge.start("127.0.0.1", 0))
        self.bridges.append(bridge)
        return bridge.port

    def api_client(self) -> Any:
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.api_port}"
        return kubernetes.client.ApiClient(configuration)

    def close(self) -> None:
        for bridge in self.bridges:
            self.run(bridge.stop())
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def cluster() -> Iterator[Any]:
    """start(*admins) -> a plugin Target whose pods id-0, id-1, ... are those admins."""
    servers: list[grpc.Server] = []
    plane = Plane()
    clients: list[Any] = []

    def start(*admins: FakePodAdmin) -> plugin.Target:
        pods = []
        for ordinal, admin in enumerate(admins):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            pb_grpc.add_AdminServicer_to_server(admin, server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            servers.append(server)
            pods.append(fake_pod(f"{NAME}-{ordinal}", port, plane.bridge(port)))
        clients.append(plane.api_client())
        return plugin.Target(NAME, NAMESPACE, FakeCore(pods, clients[-1]), FakeCustom())

    yield start
    for client in clients:
        client.close()
    plane.close()
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
