"""Fixtures for the local control plane's tests: a real ApiServer, real kubectl, real clients.

The server runs on its own asyncio loop in a background thread, on a loopback address with a
port the kernel picks, so tests drive it exactly as an outside client would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from gencluster_dev.apiserver.server import ApiServer

API_HOST = "127.0.250.1"
ADMIN_TOKEN = "test-admin-token"
T = TypeVar("T")


@dataclass
class RunningApiServer:
    server: ApiServer
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path
    cache_dir: Path
    pods_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop (for reaching into the store in tests)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this server."""
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir",
             str(self.cache_dir), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", token: str | None = ADMIN_TOKEN,
                raw: bytes | None = None, headers: dict[str, str] | None = None,
                ) -> tuple[int, Any]:
        """A plain HTTP request; returns (status, decoded JSON or text)."""
        import urllib.error
        import urllib.request

        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")


def _write_kubeconfig(path: Path, server: ApiServer, token: str, namespace: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dev", "cluster": {
            "server": server.tls_url,
            "certificate-authority-data": base64.b64encode(server.ca_pem).decode(),
        }}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "admin",
                                                 "namespace": namespace}}],
        "current-context": "dev",
    }
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApiServer]:
    """An ApiServer on a free port, serving until the module's tests are done."""
    with serving_apiserver(tmp_path_factory.mktemp("apiserver")) as running:
        yield running


@contextlib.contextmanager
def serving_apiserver(base: Path, **options: Any) -> Iterator[RunningApiServer]:
    """An ApiServer on a free port in `base`, with `options` for its constructor."""
    pods_dir = base / "pods"
    pods_dir.mkdir()
    loop = asyncio.new_event_loop()
    server = ApiServer(host=API_HOST, port=0, admin_token=ADMIN_TOKEN,
                       service_network="127.250.128.0/17", pods_dir=pods_dir,
                       watch_history=200, bookmark_interval=0.5, **options)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="apiserver", daemon=True)
    thread.start()
    assert started.wait(15), "ApiServer did not start"
    kubeconfig = base / "kubeconfig"
    _write_kubeconfig(kubeconfig, server, ADMIN_TOKEN, "default")
    running = RunningApiServer(server, loop, kubeconfig, base / "kubectl-cache", pods_dir)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def namespace(apiserver: RunningApiServer) -> Iterator[str]:
    """A fresh namespace per test, so tests never see each other's objects."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    status, body = apiserver.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert status == 201, body
    yield name


@pytest.fixture
def kube_client(apiserver: RunningApiServer) -> Any:
    """A `kubernetes` ApiClient for the server (plain HTTP, bearer token)."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = apiserver.url
    configuration.api_key = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    api = client.ApiClient(configuration)
    yield api
    api.close()
