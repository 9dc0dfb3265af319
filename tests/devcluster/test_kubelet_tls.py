"""The kubelet composed directly (as docs/devcluster.md's entry points say), given the API
server's CA: pod kubeconfigs then point at the TLS endpoint, which kubectl needs."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gencluster_dev.apiserver.server import ApiServer
from gencluster_dev.node.kubelet import Kubelet
from gencluster_dev.up import AddressPlan, SlotLease
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, let_default_read_pods, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class DirectPlane(DevPlane):
    """ApiServer + Kubelet(ca_pem=...) on a slot of their own, no DevCluster."""

    def __init__(self, dev_dir: Path) -> None:
        self.dev_dir = dev_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.lease = SlotLease()

    def start(self) -> DirectPlane:
        self.thread.start()
        plan = AddressPlan(self.lease.claim())
        (self.dev_dir / "pods").mkdir(parents=True)
        self.token = secrets.token_urlsafe(16)
        self.api = ApiServer(host=plan.api_host, port=6443, admin_token=self.token,
                             service_network=plan.service_network,
                             pods_dir=self.dev_dir / "pods")
        self.run(self.api.start())
        self.server = self.api.url
        self.instance = {"podNetwork": plan.pod_network, "server": self.api.url}
        self.kubelet = Kubelet(api_url=self.api.url, token=self.token, node_name="tls-node",
                               dev_dir=self.dev_dir, pod_network=plan.pod_network,
                               run_as_users=plan.run_as_users(os.geteuid() == 0),
                               bin_dir=Path(sys.executable).parent, ca_pem=self.api.ca_pem,
                               heartbeat_interval=0.5)
        self.run(self.kubelet.start())
        return self

    def stop(self) -> None:
        try:
            self.run(self.kubelet.stop())
            self.run(self.api.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.lease.release()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectPlane]:
    plane = DirectPlane(tmp_path_factory.mktemp("tls") / "dev").start()
    try:
        yield plane
    finally:
        plane.stop()


CLIENT = r"""
import os, time
from kubernetes import client, config
config.load_kube_config()
pod = client.CoreV1Api().read_namespaced_pod(os.environ["NAME"], "default")
print("ip", pod.status.pod_ip, flush=True)
time.sleep(600)
"""


def test_pod_kubeconfig_is_tls_for_kubectl_and_python(plane: DirectPlane) -> None:
    let_default_read_pods(plane.ok)  # the pod reads itself with its token (RBAC enforced)
    plane.create(python_pod("tlsclient", CLIENT, container={"env": [
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}))
    pod = plane.wait_running("tlsclient")
    ip = pod["status"]["podIP"]
    wait_for(lambda: f"ip {ip}" in plane.log("tlsclient"), 20, message="python client through TLS")
    pod_dir = plane.pod_dir(pod)
    config = json.loads((pod_dir / "kubeconfig").read_text())
    assert config["clusters"][0]["cluster"]["server"].startswith("https://")
    assert (pod_dir / "serviceaccount" / "ca.crt").read_bytes() == plane.api.ca_pem
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(pod_dir / "kubeconfig"), "get", "pod", "tlsclient",
         "-o", "jsonpath={.status.podIP}"], capture_output=True, text=True, timeout=30,
        check=False)
    assert result.stdout == ip, result.stderr
    node = plane.ok("GET", "/api/v1/nodes/tls-node")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"]
    assert node["status"]["addresses"][0]["type"] == "InternalIP"
    plane.delete_pod("tlsclient")
    plane.wait_gone("tlsclient")


def test_node_selector_follows_node_labels(plane: DirectPlane) -> None:
    plane.create(python_pod("picky", "import time; time.sleep(600)",
                            nodeSelector={"disk": "ssd"}))
    wait_for(lambda: plane.condition("picky", "PodScheduled") == "False", 10,
             message="Unschedulable")
    assert any(e["reason"] == "FailedScheduling" for e in plane.events("picky"))
    plane.ok("PATCH", "/api/v1/nodes/tls-node", {"metadata": {"labels": {"disk": "ssd"}}},
             content_type="application/merge-patch+json")
    pod = plane.wait_running("picky")
    assert pod["spec"]["nodeName"] == "tls-node"
    assert plane.condition("picky", "PodScheduled") == "True"
    plane.delete_pod("picky")
    plane.wait_gone("picky")
