"""A real local control plane (DevCluster: API server, kubelet, proxy) for pod-level tests.

It runs in a thread with its own asyncio loop so tests stay synchronous and can call the real
`kubectl`; every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import yaml
from gencluster_dev.up import DevCluster
from gencluster_testing.waiting import wait_for

T = TypeVar("T")
PYTHON = "python"


class DevPlane:
    """Start/stop a DevCluster in a background loop; small REST and kubectl helpers."""

    def __init__(self, dev_dir: Path, restart_backoff_base: float = 0.3) -> None:
        self.dev_dir = dev_dir
        self.cluster = DevCluster(dev_dir=dev_dir, restart_backoff_base=restart_backoff_base,
                                  announce=lambda *_: None)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> DevPlane:
        self.thread.start()
        self.run(self.cluster.start())
        config = yaml.safe_load((self.dev_dir / "kubeconfig").read_text())
        self.token = config["users"][0]["user"]["token"]
        self.instance = json.loads((self.dev_dir / "instance.json").read_text())
        self.server = self.cluster.api_url  # plain http: what the kubelet and Python clients use
        self.kubectl_config = self.dev_dir / "kubeconfig"
        return self

    def stop(self) -> None:
        try:
            self.run(self.cluster.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    # ---------------------------------------------------------------- REST

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        request = urllib.request.Request(
            self.server + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text.decode()

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, answer = self.call(method, path, body, **kw)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def create(self, obj: dict, namespace: str = "default") -> dict:
        plural = {"Pod": "pods", "Service": "services", "Secret": "secrets",
                  "ConfigMap": "configmaps"}[obj["kind"]]
        obj.setdefault("apiVersion", "v1")
        return self.ok("POST", f"/api/v1/namespaces/{namespace}/{plural}", obj)

    def pod(self, name: str, namespace: str = "default") -> dict | None:
        status, answer = self.call("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        return answer if status == 200 else None

    def container_status(self, name: str, container: str | None = None) -> dict:
        pod = self.pod(name) or {}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if container is None or status["name"] == container:
                return status
        return {}

    def condition(self, name: str, kind: str) -> str | None:
        pod = self.pod(name) or {}
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return condition["status"]
        return None

    def wait_running(self, name: str, timeout: float = 20) -> dict:
        return wait_for(lambda: (p := self.pod(name)) and (p.get("status") or {}).get(
            "phase") == "Running" and self.container_status(name).get("state", {}).get(
            "running") and p, timeout, message=f"pod {name} running")

    def wait_ready(self, name: str, timeout: float = 20) -> dict:
        wait_for(lambda: self.condition(name, "Ready") == "True", timeout,
                 message=f"pod {name} ready")
        return self.pod(name) or {}

    def delete_pod(self, name: str, grace: int | None = None, namespace: str = "default") -> None:
        body = None if grace is None else {"gracePeriodSeconds": grace}
        self.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    def wait_gone(self, name: str, timeout: float = 20) -> None:
        wait_for(lambda: self.pod(name) is None, timeout, message=f"pod {name} deleted")

    def state(self, name: str, namespace: str = "default") -> dict:
        """pods/<ns>_<name>_<uid>/state.json of the current pod."""
        pod = self.pod(name, namespace)
        assert pod is not None, name
        path = self.pod_dir(pod) / "state.json"
        return json.loads(path.read_text())

    def pod_dir(self, pod: dict) -> Path:
        meta = pod["metadata"]
        return self.dev_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    def log(self, name: str, container: str | None = None) -> str:
        pod = self.pod(name)
        if pod is None:
            return ""
        container = container or pod["spec"]["containers"][0]["name"]
        path = self.pod_dir(pod) / "logs" / f"{container}.log"
        try:
            return path.read_text()
        except OSError:
            return ""

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, KUBECONFIG=str(self.kubectl_config))
        result = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                                timeout=30, check=False)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def events(self, name: str) -> list[dict]:
        answer = self.ok("GET", "/api/v1/namespaces/default/events")
        return [e for e in answer.get("items") or []
                if e.get("involvedObject", {}).get("name") == name]


def python_pod(name: str, script: str, **spec: Any) -> dict:
    """A pod whose single container `main` runs `python -c script` with POD_IP set."""
    container: dict[str, Any] = {
        "name": "main", "image": "python:3", "command": [PYTHON, "-c", script],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    }
    container.update(spec.pop("container", {}))
    spec.setdefault("terminationGracePeriodSeconds", 2)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": spec.pop("labels", {"test": name})},
            "spec": {"containers": [container], **spec}}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def let_default_read_pods(ok: Any, namespace: str = "default") -> None:
    """Bind a Role with `get` on pods to the namespace's `default` ServiceAccount, for pods
    that read themselves with their token: RBAC is enforced, as on a real cluster, where the
    default ServiceAccount holds nothing by itself. `ok` is a plane's `ok(method, path, body)`."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    ok("POST", f"{rbac}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    ok("POST", f"{rbac}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
