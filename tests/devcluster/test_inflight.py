"""The API server bounds the requests it works on at once, as kube-apiserver's max-in-flight
filter does: requests over the limit get 429 with `Retry-After: 1` and kube-apiserver's body,
long-running requests and `system:masters` are not counted, and kubectl's retry gets through
once the slow requests end. The slow requests are real: POSTs whose headers arrived and whose
body has not (the server holds them until the body or its body timeout)."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from gencluster_dev.machinery.inflight import TOO_MANY_REQUESTS
from gencluster_testing.devcluster_process import KUBECTL, DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "default"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    cluster = DevClusterProcess(tmp_path_factory.mktemp("inflight") / "dev",
                                "--max-mutating-requests-inflight", "2",
                                "--max-requests-inflight", "3")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def token(plane: DevClusterProcess) -> str:
    plane.kubectl("create", "serviceaccount", "flood", "-n", NAMESPACE)
    plane.kubectl("create", "role", "configmap-writer", "-n", NAMESPACE,
                  "--verb=create,get,list", "--resource=configmaps")
    plane.kubectl("create", "rolebinding", "flood-writes", "-n", NAMESPACE,
                  "--role=configmap-writer", f"--serviceaccount={NAMESPACE}:flood")
    return plane.kubectl("create", "token", "flood", "-n", NAMESPACE).stdout.strip()


def address(plane: DevClusterProcess) -> tuple[str, int]:
    host, port = plane.instance["server"].split("//")[1].rsplit(":", 1)
    return host, int(port)


def request(plane: DevClusterProcess, head: str, token: str | None,
            body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One plain-HTTP request (the port speaks both), answered in full."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection(address(plane), timeout=30) as conn:
        conn.sendall(f"{head}\r\nHost: x\r\n{auth}Connection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    header_block, _, payload = data.partition(b"\r\n\r\n")
    lines = header_block.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def slow_post(plane: DevClusterProcess, token: str) -> socket.socket:
    """A create whose headers are in and whose body never comes: in flight until closed."""
    conn = socket.create_connection(address(plane), timeout=30)
    conn.sendall(f"POST /api/v1/namespaces/{NAMESPACE}/configmaps HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n".encode())
    return conn


CREATE = f"POST /api/v1/namespaces/{NAMESPACE}/configmaps HTTP/1.1"
BODY = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s"}}'


def refused(plane: DevClusterProcess, token: str, name: str) -> bool:
    status, _, _ = request(plane, CREATE, token, BODY % name.encode())
    return status == 429


def test_writes_over_the_limit_get_429_and_reads_and_masters_go_on(
    plane: DevClusterProcess, token: str
) -> None:
    slow = [slow_post(plane, token) for _ in range(2)]
    try:
        wait_for(lambda: refused(plane, token, "over"), 30, 0.1,
                 "a third concurrent write to be refused")
        status, headers, body = request(plane, CREATE, token, BODY % b"over")
        assert status == 429
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert body.decode() == TOO_MANY_REQUESTS
        # Reads have their own pool; the admin (system:masters) is not counted.
        status, _, _ = request(plane, f"GET /api/v1/namespaces/{NAMESPACE}/configmaps "
                               "HTTP/1.1", token)
        assert status == 200
        admin = plane.kubectl("create", "configmap", "by-admin", "-n", NAMESPACE, check=False)
        assert admin.returncode == 0, admin.stderr
        assert plane.kubectl("get", "configmap", "over", "-n", NAMESPACE,
                             check=False).returncode != 0, "a refused create changed nothing"
    finally:
        for conn in slow:
            conn.close()
    wait_for(lambda: not refused(plane, token, "after"), 30, 0.1,
             "writes to be served once the slow ones ended")


def test_kubectl_retries_a_429_and_gets_through(
    plane: DevClusterProcess, token: str
) -> None:
    """client-go honours Retry-After: kubectl, refused while the slow writes last, creates
    its ConfigMap once they end."""
    slow = [slow_post(plane, token) for _ in range(2)]
    lines: list[str] = []
    try:
        wait_for(lambda: refused(plane, token, "probe"), 30, 0.1, "writes to be refused")
        retrying = subprocess.Popen(
            [KUBECTL, "create", "configmap", "patient", "-n", NAMESPACE, "--token", token,
             "-v=6"],
            env=plane.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert retrying.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(retrying.stderr or ()),
                                  daemon=True)
        reader.start()
        wait_for(lambda: any(" 429 " in line for line in list(lines)), 60, 0.1,
                 "kubectl to be answered 429")
    finally:
        for conn in slow:
            conn.close()
    out, _ = retrying.communicate(timeout=120)
    reader.join(30)
    assert retrying.returncode == 0, "".join(lines)
    assert "configmap/patient created" in out
