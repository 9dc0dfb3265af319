"""`pods/proxy` end to end on the local control plane: a real pod running an HTTP echo server,
reached through the API server with the URL forms kube-apiserver accepts, by plain HTTP and
by the real kubectl (`get --raw`, `create --raw`)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, python_pod

pytestmark = pytest.mark.integration

ECHO = r"""
import http.server, json, os
class Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                length = int(self.rfile.readline().strip(), 16)
                if not length:
                    self.rfile.readline()
                    break
                body += self.rfile.read(length)
                self.rfile.readline()
        reply = json.dumps({"method": self.command, "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body.decode()}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    do_GET = do_POST = do_PUT = do_DELETE = _answer
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), Echo).serve_forever()
"""
BASE = "/api/v1/namespaces/default/pods"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    started = DevPlane(Path(tmp_path_factory.mktemp("podproxy")) / "dev").start()
    try:
        started.create(python_pod("echo", ECHO, container={"ports": [
            {"name": "http", "containerPort": 8080}]}))
        started.wait_running("echo")
        yield started
    finally:
        started.stop()


def raw(plane: DevPlane, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        plane.server + path, method=method, data=body,
        headers={"Authorization": f"Bearer {plane.token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def echoed(plane: DevPlane, method: str, path: str, body: bytes | None = None,
           headers: dict[str, str] | None = None) -> dict:
    def attempt() -> dict | None:
        status, answer_headers, answer = raw(plane, method, path, body, headers)
        if status == 503:  # the echo server is not listening yet
            return None
        assert answer_headers.get("X-Echo") == "yes", (status, answer)
        return {"status": status, **json.loads(answer)}

    return wait_for(attempt, 20, message="the echo pod through pods/proxy")


def test_get_with_path_and_query_reaches_the_pod_without_the_callers_token(
    plane: DevPlane,
) -> None:
    seen = echoed(plane, "GET", f"{BASE}/echo:8080/proxy/a/b%20c?x=1&y=two",
                  headers={"X-Custom": "kept"})
    assert seen["status"] == 200
    assert seen["path"] == "/a/b%20c?x=1&y=two"
    assert seen["headers"]["x-custom"] == "kept"
    assert "authorization" not in seen["headers"]


def test_post_streams_the_body_and_returns_the_pods_status(plane: DevPlane) -> None:
    body = b"x" * (4 * 1024 * 1024)  # larger than the API server's request limit for objects
    seen = echoed(plane, "POST", f"{BASE}/http:echo:8080/proxy/upload", body,
                  headers={"Content-Type": "application/octet-stream"})
    assert seen["status"] == 201
    assert seen["body"] == body.decode()


def test_kubectl_raw_goes_through_pods_proxy(plane: DevPlane) -> None:
    echoed(plane, "GET", f"{BASE}/echo:8080/proxy/")
    got = plane.kubectl("get", "--raw", f"{BASE}/echo:8080/proxy/hello")
    assert json.loads(got.stdout)["path"] == "/hello"
    created = plane.kubectl("create", "--raw", f"{BASE}/echo:8080/proxy/made", "-f",
                            "/dev/null")
    assert json.loads(created.stdout)["method"] == "POST"


def test_errors_are_kube_apiservers(plane: DevPlane) -> None:
    status, _, answer = raw(plane, "GET", f"{BASE}/echo:8081/proxy/")
    assert status == 503
    assert json.loads(answer)["message"].startswith("error trying to reach service:")
    status, _, answer = raw(plane, "GET", f"{BASE}/nope:8080/proxy/")
    assert status == 404
    status, _, answer = raw(plane, "GET", f"{BASE}/echo:http/proxy/")
    assert status == 400
    assert "port number" in json.loads(answer)["message"]


def test_discovery_lists_pods_proxy(plane: DevPlane) -> None:
    resources = plane.ok("GET", "/api/v1")["resources"]
    proxy = next(r for r in resources if r["name"] == "pods/proxy")
    assert proxy["kind"] == "PodProxyOptions"
    assert "create" in proxy["verbs"] and "get" in proxy["verbs"]
