"""NetworkPolicy enforced between real local pods (nftables), probed from inside the pods with
`kubectl exec` (which runs as the pod's uid, as a container process would)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import PYTHON, DevPlane, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

if os.geteuid() != 0 or shutil.which("nft") is None:
    pytest.skip("NetworkPolicy enforcement needs root and nft", allow_module_level=True)

SERVER = r"""
import os, socket, threading
ip = os.environ["POD_IP"]
def serve(port):
    server = socket.create_server((ip, port))
    while True:
        conn, _ = server.accept()
        conn.sendall(b"pong")
        conn.close()
for port in (7000, 7001):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
threading.Event().wait()
"""

IDLE = "import threading; threading.Event().wait()"

PROBE = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as conn:
        conn.settimeout(1.5)
        print("open" if conn.recv(4) == b"pong" else "bad")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error", exc)
"""

NETPOLS = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("netpol") / "dev").start()
    table = plane.instance["networkPolicyTable"]
    try:
        yield plane
    finally:
        plane.stop()
        listed = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True,
                                check=False)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True,
                       check=False)
        assert listed.returncode != 0, f"table {table} left behind after stop"


@pytest.fixture(scope="module")
def server_ip(plane: DevPlane) -> str:
    """Pod `server` (7000, 7001) and `friend` in default, `stranger` in namespace other."""
    plane.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "other"}})
    plane.create(python_pod("server", SERVER, labels={"app": "server"}))
    plane.create({"kind": "Service", "metadata": {"name": "server"}, "spec": {
        "selector": {"app": "server"},
        "ports": [{"name": "open", "port": 7000}, {"name": "guarded", "port": 7001}]}})
    plane.create(python_pod("friend", IDLE, labels={"app": "friend"}))
    plane.create(python_pod("stranger", IDLE, labels={"app": "friend"}), namespace="other")
    for name, namespace in (("friend", "default"), ("stranger", "other")):
        wait_for(lambda n=name, ns=namespace: (plane.pod(n, ns) or {}).get("status", {})
                 .get("phase") == "Running", 30, message=f"{name} running")
    return str(plane.wait_running("server")["status"]["podIP"])


def probe(plane: DevPlane, pod: str, namespace: str, ip: str, port: int) -> str:
    """What a connection from inside `pod` to ip:port gives: open, timeout or error."""
    result = plane.kubectl("exec", "-n", namespace, pod, "--", PYTHON, "-c", PROBE, ip,
                           str(port), check=False)
    return result.stdout.strip() or f"exec failed: {result.stderr.strip()}"


def host_probe(ip: str, port: int) -> str:
    """The same probe from the test process: node traffic, never matched by a policy."""
    result = subprocess.run([sys.executable, "-c", PROBE, ip, str(port)], capture_output=True,
                            text=True, timeout=30, check=False)
    return result.stdout.strip()


def settle(plane: DevPlane, pod: str, namespace: str, ip: str, port: int, want: str) -> None:
    wait_for(lambda: probe(plane, pod, namespace, ip, port) == want, 60,
             message=f"{namespace}/{pod} -> {ip}:{port} {want}")


def table_exists(plane: DevPlane) -> bool:
    return subprocess.run(["nft", "list", "table", "inet", plane.instance["networkPolicyTable"]],
                          capture_output=True, check=False).returncode == 0


def test_policy_isolates_ports_and_removal_restores(plane: DevPlane, server_ip: str) -> None:
    assert probe(plane, "stranger", "other", server_ip, 7001) == "open"
    assert not table_exists(plane)
    plane.ok("POST", NETPOLS, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "server"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [
                {"ports": [{"port": 7000}]},
                {"from": [{"podSelector": {"matchLabels": {"app": "friend"}}}],
                 "ports": [{"port": 7001}]},
            ],
        },
    })
    # same labels, other namespace: a podSelector alone stays in the policy's namespace
    settle(plane, "stranger", "other", server_ip, 7001, "timeout")
    assert table_exists(plane)
    assert probe(plane, "stranger", "other", server_ip, 7000) == "open"
    assert probe(plane, "friend", "default", server_ip, 7001) == "open"
    assert host_probe(server_ip, 7001) == "open"
    # through the Service IP (the proxy forwards as the node): the backend's policy still holds
    service_ip = plane.ok("GET", "/api/v1/namespaces/default/services/server")["spec"][
        "clusterIP"]
    settle(plane, "stranger", "other", service_ip, 7001, "timeout")
    assert probe(plane, "stranger", "other", service_ip, 7000) == "open"
    assert probe(plane, "friend", "default", service_ip, 7001) == "open"
    assert host_probe(service_ip, 7001) == "open"

    plane.ok("PATCH", f"{NETPOLS}/server", {"spec": {"ingress": [
        {"ports": [{"port": 7000}]},
        {"from": [{"podSelector": {"matchLabels": {"app": "friend"}},
                   "namespaceSelector": {"matchLabels": {
                       "kubernetes.io/metadata.name": "other"}}}],
         "ports": [{"port": 7001}]},
    ]}}, content_type="application/merge-patch+json")
    settle(plane, "stranger", "other", server_ip, 7001, "open")
    settle(plane, "friend", "default", server_ip, 7001, "timeout")

    plane.ok("DELETE", f"{NETPOLS}/server")
    settle(plane, "friend", "default", server_ip, 7001, "open")
    wait_for(lambda: not table_exists(plane), 30, message="policy table removed")


def test_kubectl_and_validation(plane: DevPlane) -> None:
    bad = plane.call("POST", NETPOLS, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]}})
    assert bad[0] == 422, bad
    plane.ok("POST", NETPOLS, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "listed"},
        "spec": {"podSelector": {"matchLabels": {"app": "nothing"}}}})
    out = plane.kubectl("get", "netpol").stdout
    assert "listed" in out and "app=nothing" in out and "POD-SELECTOR" in out
    plane.ok("DELETE", f"{NETPOLS}/listed")


def test_egress_policy_limits_what_a_pod_may_open(plane: DevPlane, server_ip: str) -> None:
    service_ip = plane.ok("GET", "/api/v1/namespaces/default/services/server")["spec"][
        "clusterIP"]
    assert probe(plane, "friend", "default", server_ip, 7001) == "open"
    plane.ok("POST", NETPOLS, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "friend-out"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "friend"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}],
                        "ports": [{"port": 7000}]}],
        },
    })
    settle(plane, "friend", "default", server_ip, 7001, "timeout")
    assert probe(plane, "friend", "default", server_ip, 7000) == "open"
    assert probe(plane, "friend", "default", service_ip, 7000) == "open"
    assert probe(plane, "friend", "default", service_ip, 7001) == "timeout"
    # the policy is the friend's own: others, and the server's answers, are not limited
    assert probe(plane, "stranger", "other", server_ip, 7001) == "open"

    plane.ok("DELETE", f"{NETPOLS}/friend-out")
    settle(plane, "friend", "default", server_ip, 7001, "open")
    wait_for(lambda: not table_exists(plane), 30, message="policy table removed")
