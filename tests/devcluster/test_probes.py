"""Probes: thresholds (pure), each handler against a real local server, and probes driving a
pod's readiness and restarts on a real control plane."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import grpc
import pytest
from aiohttp import web
from gencluster_dev.node.probes import ProbeSettings, ProbeState, check, run_command
from gencluster_testing.waiting import wait_for
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.devcluster.devplane import DevPlane, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_thresholds_need_consecutive_outcomes() -> None:
    state = ProbeState(ProbeSettings(success_threshold=2, failure_threshold=3), initial=False)
    assert not state.record(True)
    assert not state.record(False)
    assert not state.record(True)
    assert state.record(True) and state.result
    assert not state.record(False) and not state.record(False)
    assert not state.record(True)
    assert [state.record(False) for _ in range(3)] == [False, False, True]
    assert not state.result


def test_settings_defaults() -> None:
    assert ProbeSettings.from_spec({}) == ProbeSettings(0, 10, 1, 1, 3)
    assert ProbeSettings.from_spec({"periodSeconds": 1, "failureThreshold": 1}).period == 1


async def _exec(argv: list[str], timeout: float) -> tuple[int, str]:
    return await run_command(argv, env=dict(os.environ), cwd=None, timeout=timeout)


def _check(probe: dict, port_names: dict[str, int] | None = None) -> tuple[bool, str]:
    names = port_names or {}
    return asyncio.run(check(probe, pod_ip="127.0.0.1",
                             resolve_port=lambda p: names.get(p) if isinstance(p, str) and
                             not p.isdigit() else int(p),
                             exec_fn=_exec, timeout=1.0))


def test_tcp_and_exec_handlers() -> None:
    async def scenario() -> tuple:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        names = {"svc": port}

        def resolve(p: int | str) -> int | None:
            return names.get(p) if isinstance(p, str) else p

        up = await check({"tcpSocket": {"port": "svc"}}, pod_ip="127.0.0.1",
                         resolve_port=resolve, exec_fn=_exec, timeout=1)
        server.close()
        await server.wait_closed()
        down = await check({"tcpSocket": {"port": port}}, pod_ip="127.0.0.1",
                           resolve_port=resolve, exec_fn=_exec, timeout=1)
        unknown = await check({"tcpSocket": {"port": "nope"}}, pod_ip="127.0.0.1",
                              resolve_port=resolve, exec_fn=_exec, timeout=1)
        return up, down, unknown

    up, down, unknown = asyncio.run(scenario())
    assert up == (True, "")
    assert not down[0] and "dial tcp" in down[1]
    assert not unknown[0] and "unknown named port" in unknown[1]
    assert _check({"exec": {"command": ["true"]}}) == (True, "")
    ok, message = _check({"exec": {"command": ["sh", "-c", "echo boom; exit 2"]}})
    assert not ok and "exit code 2" in message and "boom" in message
    ok, message = _check({"exec": {"command": ["sleep", "5"]}})
    assert not ok and "timed out" in message


def test_http_handler_status_codes_and_headers() -> None:
    async def scenario() -> list[tuple[bool, str]]:
        async def handle(request: web.Request) -> web.Response:
            if request.path == "/slow":
                await asyncio.sleep(3)  # the scenario: an endpoint slower than the timeout
            if request.path == "/ok" and request.headers.get("X-Probe") == "yes":
                return web.Response(text="fine")
            if request.path == "/redirect":
                return web.Response(status=302, headers={"Location": "/elsewhere"})
            return web.Response(status=503)

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        results = []
        for spec in ({"path": "/ok", "httpHeaders": [{"name": "X-Probe", "value": "yes"}]},
                     {"path": "/redirect"}, {"path": "/bad"}, {"path": "/slow"}):
            results.append(await check({"httpGet": {"port": port, **spec}}, pod_ip="127.0.0.1",
                                       resolve_port=lambda p: p, exec_fn=_exec, timeout=0.5))
        await runner.cleanup()
        return results

    ok, redirect, bad, slow = asyncio.run(scenario())
    assert ok[0] and redirect[0]
    assert not bad[0] and "503" in bad[1]
    assert not slow[0] and "/slow" in slow[1]


def test_grpc_handler() -> None:
    async def scenario() -> list[tuple[bool, str]]:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await servicer.set("db", health_pb2.HealthCheckResponse.NOT_SERVING)
        results = []
        for service in ("", "db", "unknown"):
            results.append(await check({"grpc": {"port": port, "service": service}},
                                       pod_ip="127.0.0.1", resolve_port=lambda p: p,
                                       exec_fn=_exec, timeout=2))
        await server.stop(None)
        return results

    serving, not_serving, unknown = asyncio.run(scenario())
    assert serving == (True, "")
    assert not not_serving[0] and "NOT_SERVING" in not_serving[1]
    assert not unknown[0] and "NOT_FOUND" in unknown[1]


# ------------------------------------------------------------------------------------ pods


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("probes") / "dev").start()
    try:
        yield plane
    finally:
        plane.stop()


HTTP_LATE = r"""
import http.server, os, time
time.sleep(float(os.environ.get("DELAY", "1.5")))  # the scenario: a server that starts late
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        healthy = not os.path.exists(os.environ["HOME"] + "/unhealthy")
        self.send_response(200 if healthy else 500)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
"""

GRPC_SERVER = r"""
import os
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port(os.environ["POD_IP"] + ":9000")
server.start()
server.wait_for_termination()
"""


def test_readiness_by_http_probe_follows_the_server(plane: DevPlane) -> None:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1,
             "failureThreshold": 1}
    plane.create(python_pod("web", HTTP_LATE, container={
        "ports": [{"name": "http", "containerPort": 8080}], "readinessProbe": probe}))
    plane.wait_running("web")
    assert plane.condition("web", "Ready") == "False"
    assert plane.container_status("web")["ready"] is False
    plane.wait_ready("web")
    assert plane.condition("web", "ContainersReady") == "True"
    assert plane.container_status("web")["ready"] is True
    home = plane.pod_dir(plane.pod("web"))
    (home / "unhealthy").write_text("")
    wait_for(lambda: plane.condition("web", "Ready") == "False", 10, message="unready again")
    assert plane.container_status("web")["restartCount"] == 0
    (home / "unhealthy").unlink()
    plane.wait_ready("web")
    plane.delete_pod("web")
    plane.wait_gone("web")


def test_grpc_and_tcp_readiness(plane: DevPlane) -> None:
    plane.create(python_pod("grpcsrv", GRPC_SERVER, container={
        "readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 1}}))
    plane.create(python_pod("tcpsrv", HTTP_LATE, container={
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "DELAY", "value": "0"}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}))
    plane.wait_ready("grpcsrv")
    plane.wait_ready("tcpsrv")
    for name in ("grpcsrv", "tcpsrv"):
        plane.delete_pod(name)
        plane.wait_gone(name)


def test_liveness_failure_restarts_and_startup_gates(plane: DevPlane) -> None:
    plane.create(python_pod("unlive", "import time; time.sleep(600)", container={
        "livenessProbe": {"exec": {"command": ["sh", "-c", "test $(id -u) = $EXPECTED_UID"]},
                          "periodSeconds": 1, "failureThreshold": 2},
        "env": [{"name": "EXPECTED_UID", "value": "-1"}]}))
    status = wait_for(lambda: (s := plane.container_status("unlive")).get(
        "restartCount", 0) >= 1 and s, 30, message="restart by liveness")
    assert status["lastState"]["terminated"]["signal"] == 15
    # repeated failures are one aggregated Event, as the kubelet's correlator does it
    unhealthy = wait_for(lambda: [e for e in plane.events("unlive")
                                  if e["reason"] == "Unhealthy" and e["count"] >= 2], 10,
                         message="an aggregated Unhealthy event")
    assert len([e for e in plane.events("unlive") if e["reason"] == "Unhealthy"]) == 1
    assert unhealthy[0]["type"] == "Warning" and "exit code 1" in unhealthy[0]["message"]
    plane.delete_pod("unlive")

    plane.create(python_pod("slowstart", HTTP_LATE, container={
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "DELAY", "value": "2"}],
        "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1,
                         "failureThreshold": 10},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1,
                          "failureThreshold": 1}}))
    plane.wait_running("slowstart")
    assert plane.container_status("slowstart")["started"] is False
    plane.wait_ready("slowstart")
    status = plane.container_status("slowstart")
    assert status["started"] is True and status["restartCount"] == 0
    plane.delete_pod("slowstart")
    plane.wait_gone("slowstart")
    plane.wait_gone("unlive")


def test_exec_probe_runs_as_the_pod_uid(plane: DevPlane) -> None:
    plane.create(python_pod("uidcheck", "import time; time.sleep(600)", container={
        "readinessProbe": {"exec": {"command": ["sh", "-c", "id -u > $HOME/probe-uid"]},
                           "periodSeconds": 1}}))
    pod = plane.wait_ready("uidcheck")
    want = plane.state("uidcheck")["runAsUser"]
    written = (plane.pod_dir(pod) / "probe-uid").read_text().strip()
    assert written == str(os.geteuid() if want is None else want)
    plane.delete_pod("uidcheck")
    plane.wait_gone("uidcheck")


def test_startup_probe_failure_restarts(plane: DevPlane) -> None:
    plane.create(python_pod("neverstarts", "import time; time.sleep(600)", container={
        "startupProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2},
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}))
    status = wait_for(lambda: (s := plane.container_status("neverstarts")).get(
        "restartCount", 0) >= 1 and s, 30, message="restart by the startup probe")
    assert status["lastState"]["terminated"]["signal"] == 15
    assert status["started"] is False and status["ready"] is False
    assert any("failed startup probe" in e["message"] for e in plane.events("neverstarts"))
    plane.delete_pod("neverstarts")
    plane.wait_gone("neverstarts")
