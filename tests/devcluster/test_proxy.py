"""Service proxy and Endpoints controller: pure decisions, then real forwarding to pods."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gencluster_dev.controllers.endpoints import desired_endpoints, endpoints_differ
from gencluster_dev.network.proxy import endpoints_backends, listen_targets, ready_backends
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _pod(name: str, ip: str | None, ready: bool, port: int = 7000, **meta: object) -> dict:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                     "labels": {"app": "echo"}, **meta},
        "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": [
            {"name": "echo", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]},
    }


SERVICE = {
    "metadata": {"name": "echo", "namespace": "default", "labels": {"team": "x"}},
    "spec": {"selector": {"app": "echo"}, "clusterIP": "127.9.128.5",
             "ports": [{"name": "main", "port": 80, "targetPort": "echo"},
                       {"name": "udp", "port": 53, "protocol": "UDP"}]},
}


def test_endpoints_group_ready_and_not_ready_by_ports() -> None:
    pods = [_pod("a", "127.9.64.1", True), _pod("b", "127.9.64.2", False),
            _pod("c", "127.9.64.3", True, port=7001), _pod("d", None, True),
            _pod("e", "127.9.64.5", True, deletionTimestamp="2026-01-01T00:00:00Z"),
            {**_pod("f", "127.9.64.6", True), "metadata": {
                "name": "f", "namespace": "other", "uid": "u", "labels": {"app": "echo"}}}]
    endpoints = desired_endpoints(SERVICE, pods)
    assert endpoints is not None
    assert endpoints["metadata"]["name"] == "echo" and endpoints["metadata"]["labels"] == {
        "team": "x"}
    subsets = {tuple(p["port"] for p in s["ports"] if p["protocol"] == "TCP"): s
               for s in endpoints["subsets"]}
    assert [a["ip"] for a in subsets[(7000,)]["addresses"]] == ["127.9.64.1"]
    assert [a["ip"] for a in subsets[(7000,)]["notReadyAddresses"]] == [
        "127.9.64.2", "127.9.64.5"]
    assert [a["ip"] for a in subsets[(7001,)]["addresses"]] == ["127.9.64.3"]
    assert subsets[(7000,)]["addresses"][0]["targetRef"]["name"] == "a"
    assert ready_backends(SERVICE, SERVICE["spec"]["ports"][0], pods) == [
        ("127.9.64.1", 7000), ("127.9.64.3", 7001)]
    assert desired_endpoints({**SERVICE, "spec": {"ports": []}}, pods) is None


def test_endpoints_comparison_ignores_defaulted_fields_and_order() -> None:
    pods = [_pod("a", "127.9.64.1", True), _pod("b", "127.9.64.2", True)]
    desired = desired_endpoints(SERVICE, pods)
    assert desired is not None
    stored = {"metadata": {"labels": {"team": "x"}, "resourceVersion": "5"},
              "subsets": [{**s, "addresses": [{**a, "hostname": None} for a in
                                              reversed(s["addresses"])]}
                          for s in desired["subsets"]]}
    assert not endpoints_differ(stored, desired)
    assert endpoints_differ(stored, desired_endpoints(SERVICE, pods[:1]))
    assert endpoints_differ(None, desired)


def test_selectorless_services_use_their_endpoints() -> None:
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [
        {"ip": "10.0.0.2"}], "ports": [{"name": "main", "port": 9000}, {"name": "x", "port": 1}]}]}
    assert endpoints_backends(endpoints, {"name": "main", "port": 80}) == [("10.0.0.1", 9000)]
    single = {"subsets": [{"addresses": [{"ip": "10.0.0.3"}], "ports": [{"port": 7}]}]}
    assert endpoints_backends(single, {"port": 80}) == [("10.0.0.3", 7)]
    assert endpoints_backends(None, {"port": 80}) == []


def test_listen_targets_skip_headless_and_udp() -> None:
    assert [(ip, port) for ip, port, _ in listen_targets(SERVICE)] == [("127.9.128.5", 80)]
    headless = {**SERVICE, "spec": {**SERVICE["spec"], "clusterIP": "None"}}
    assert listen_targets(headless) == []


# ------------------------------------------------------------------------------------ live

ECHO = r"""
import os, socket, threading
name = os.environ["NAME"]
server = socket.create_server((os.environ["POD_IP"], 7000))
def serve(conn):
    with conn:
        data = conn.recv(100)
        conn.sendall(name.encode() + b":" + data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("proxy") / "dev").start()
    try:
        yield plane
    finally:
        plane.stop()


def _echo_pod(name: str) -> dict:
    return python_pod(name, ECHO, labels={"app": "echo"}, container={
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "echo", "containerPort": 7000}],
        "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1}})


def _ask(ip: str, port: int) -> str:
    with socket.create_connection((ip, port), timeout=3) as conn:
        conn.sendall(b"hi")
        return conn.recv(100).decode()


def _ready_ips(plane: DevPlane, name: str) -> list[str]:
    status, endpoints = plane.call("GET", f"/api/v1/namespaces/default/endpoints/{name}")
    if status != 200:
        return []
    return sorted(a["ip"] for s in endpoints.get("subsets") or []
                  for a in s.get("addresses") or [])


def test_service_forwards_to_ready_pods_and_follows_labels(plane: DevPlane) -> None:
    plane.create({"kind": "Service", "metadata": {"name": "echo"},
                  "spec": {"selector": {"app": "echo"},
                           "ports": [{"name": "main", "port": 8080, "targetPort": "echo"}]}})
    service = plane.ok("GET", "/api/v1/namespaces/default/services/echo")
    cluster_ip = service["spec"]["clusterIP"]
    wait_for(lambda: (plane.ok("GET", "/api/v1/namespaces/default/services/echo").get(
        "status") or {}).get("loadBalancer", {}).get("ingress") == [{"ip": cluster_ip}], 10,
        message="loadBalancer ingress")
    plane.create(_echo_pod("echo-a"))
    plane.create(_echo_pod("echo-b"))
    ips = sorted(plane.wait_ready(n)["status"]["podIP"] for n in ("echo-a", "echo-b"))
    wait_for(lambda: _ready_ips(plane, "echo") == ips, 10, message="endpoints with both pods")
    pid = plane.state("echo-a")["containers"]["main"]["pid"]
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    assert environ["ECHO_SERVICE_HOST"] == cluster_ip
    assert environ["ECHO_SERVICE_PORT_MAIN"] == "8080"
    answers = {_ask(cluster_ip, 8080) for _ in range(6)}
    assert answers == {"echo-a:hi", "echo-b:hi"}

    plane.ok("PATCH", "/api/v1/namespaces/default/pods/echo-b",
             {"metadata": {"labels": {"app": "other"}}},
             content_type="application/merge-patch+json")
    wait_for(lambda: {_ask(cluster_ip, 8080) for _ in range(4)} == {"echo-a:hi"}, 5,
             message="connections follow the label change")
    wait_for(lambda: _ready_ips(plane, "echo") == [plane.pod("echo-a")["status"]["podIP"]],
             5, message="endpoints without echo-b")

    plane.delete_pod("echo-a")
    plane.wait_gone("echo-a")
    # With no ready endpoint the proxy closes the connection (EOF or RST) instead of holding
    # it open: a hung connection would end in the socket's timeout, which fails the test.
    try:
        with socket.create_connection((cluster_ip, 8080), timeout=3) as conn:
            conn.settimeout(3)
            data = conn.recv(100)
    except ConnectionResetError:  # the RST may even beat connect() back to the caller
        data = b""
    assert data == b""
    wait_for(lambda: _ready_ips(plane, "echo") == [], 5, message="empty endpoints")

    plane.ok("DELETE", "/api/v1/namespaces/default/services/echo")
    wait_for(lambda: plane.call("GET", "/api/v1/namespaces/default/endpoints/echo")[0] == 404,
             10, message="endpoints deleted with the service")
    with pytest.raises(OSError):
        socket.create_connection((cluster_ip, 8080), timeout=2).close()
    plane.delete_pod("echo-b")
    plane.wait_gone("echo-b")


def test_selectorless_service_forwards_to_manual_endpoints(plane: DevPlane) -> None:
    plane.create(_echo_pod("manual-0"))
    ip = plane.wait_ready("manual-0")["status"]["podIP"]
    plane.create({"kind": "Service", "metadata": {"name": "manual"},
                  "spec": {"ports": [{"port": 8081, "targetPort": 7000}]}})
    plane.ok("POST", "/api/v1/namespaces/default/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 7000}]}]})
    cluster_ip = plane.ok("GET", "/api/v1/namespaces/default/services/manual")["spec"][
        "clusterIP"]
    assert wait_for(lambda: _try(cluster_ip, 8081), 10, message="manual endpoints") == "manual-0:hi"
    plane.ok("DELETE", "/api/v1/namespaces/default/services/manual")
    # the proxy does not own these Endpoints: they stay
    assert plane.call("GET", "/api/v1/namespaces/default/endpoints/manual")[0] == 200
    plane.delete_pod("manual-0")
    plane.wait_gone("manual-0")


def _try(ip: str, port: int) -> str | None:
    try:
        return _ask(ip, port)
    except OSError:
        return None


def test_headless_service_gets_endpoints_but_no_listener(plane: DevPlane) -> None:
    plane.create({"kind": "Service", "metadata": {"name": "peers"},
                  "spec": {"clusterIP": "None", "selector": {"app": "peer"},
                           "ports": [{"port": 7000}]}})
    pod = _echo_pod("peer-0")
    pod["metadata"]["labels"] = {"app": "peer"}
    plane.create(pod)
    ip = plane.wait_ready("peer-0")["status"]["podIP"]
    wait_for(lambda: _ready_ips(plane, "peers") == [ip], 10, message="headless endpoints")
    service = plane.ok("GET", "/api/v1/namespaces/default/services/peers")
    assert not (service.get("status") or {}).get("loadBalancer", {}).get("ingress")
    plane.ok("DELETE", "/api/v1/namespaces/default/services/peers")
    plane.delete_pod("peer-0")
    plane.wait_gone("peer-0")
