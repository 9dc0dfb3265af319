"""An unmodified kopf operator (`kopf run` as a subprocess) against the API server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gencluster_testing.waiting import wait_for

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.kopf.example.com"},
    "spec": {
        "group": "kopf.example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                  "shortNames": ["wdg"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }},
        }],
    },
}

HANDLERS = textwrap.dedent('''
    import kopf
    import kubernetes

    @kopf.on.startup()
    def configure(settings, **_):
        settings.posting.level = 0
        settings.watching.server_timeout = 10
        settings.persistence.finalizer = "kopf.example.com/finalizer"

    def write_configmap(namespace, name, data):
        kubernetes.config.load_kube_config()
        core = kubernetes.client.CoreV1Api()
        body = kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(name=name), data=data)
        core.create_namespaced_config_map(namespace, body)

    @kopf.on.create("kopf.example.com", "v1", "widgets")
    def created(spec, name, namespace, patch, **_):
        patch.status["observedSize"] = spec.get("size")
        write_configmap(namespace, f"created-{name}", {"size": str(spec.get("size"))})

    @kopf.on.update("kopf.example.com", "v1", "widgets")
    def updated(spec, patch, **_):
        patch.status["observedSize"] = spec.get("size")

    @kopf.on.delete("kopf.example.com", "v1", "widgets")
    def deleted(name, namespace, **_):
        write_configmap(namespace, f"deleted-{name}", {"done": "yes"})
''')


@pytest.fixture
def operator(apiserver: RunningApiServer, namespace: str, tmp_path: Path) -> Iterator[Any]:
    status, body = apiserver.request("POST", "/apis/apiextensions.k8s.io/v1/"
                                     "customresourcedefinitions", WIDGET_CRD)
    assert status in (201, 409), body
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLERS)
    log = (tmp_path / "kopf.log").open("w")
    env = {**os.environ, "KUBECONFIG": str(apiserver.kubeconfig)}
    kopf = Path(sys.executable).parent / "kopf"
    process = subprocess.Popen(
        [str(kopf), "run", "--standalone", f"--namespace={namespace}", "--verbose",
         str(handlers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if process.returncode not in (0, -15):
            print((tmp_path / "kopf.log").read_text()[-5000:])


def widget(server: RunningApiServer, namespace: str, name: str) -> tuple[int, Any]:
    return server.request(
        "GET", f"/apis/kopf.example.com/v1/namespaces/{namespace}/widgets/{name}")


def configmap(server: RunningApiServer, namespace: str, name: str) -> dict[str, Any] | None:
    status, body = server.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    return body if status == 200 else None


def test_kopf_handlers_fire_and_the_finalizer_is_honoured(
    apiserver: RunningApiServer, namespace: str, operator: Any, tmp_path: Path
) -> None:
    base = f"/apis/kopf.example.com/v1/namespaces/{namespace}/widgets"
    status, _ = apiserver.request("POST", base, {
        "apiVersion": "kopf.example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 3}})
    assert status == 201
    try:
        created = wait_for(lambda: configmap(apiserver, namespace, "created-w"), timeout=30,
                       message="create handler side effect")
        assert created["data"] == {"size": "3"}
        wait_for(lambda: (widget(apiserver, namespace, "w")[1].get("status") or {}).get(
            "created", {}).get("observedSize") == 3
            or (widget(apiserver, namespace, "w")[1].get("status") or {}).get(
            "observedSize") == 3, timeout=30, message="status written by the create handler")
        _, current = widget(apiserver, namespace, "w")
        assert "kopf.example.com/finalizer" in current["metadata"]["finalizers"]
        apiserver.request("PATCH", f"{base}/w", {"spec": {"size": 5}},
                          content_type="application/merge-patch+json")

        def observed_size() -> Any:
            status = widget(apiserver, namespace, "w")[1].get("status") or {}
            return (status.get("updated") or {}).get("observedSize") == 5 or \
                status.get("observedSize") == 5

        wait_for(observed_size, timeout=30, message="update handler")
        status, _ = apiserver.request("DELETE", f"{base}/w")
        assert status in (200, 202)
        wait_for(lambda: widget(apiserver, namespace, "w")[0] == 404, timeout=30,
             message="finalizer removed by kopf after the delete handler")
        assert configmap(apiserver, namespace, "deleted-w") is not None
    except AssertionError:
        print((tmp_path / "kopf.log").read_text()[-6000:])
        raise
