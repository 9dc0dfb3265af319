"""The process kubelet: registers its Node, binds pending pods to it, runs the pods bound to it.

Each pod gets a loopback IP of its own and, when the control plane runs as root, a uid of its
own (so nftables faults can tell pods apart, see docs/devcluster.md). The pod's life is in
`podworker` (setup, status, deletion) and each container's in `containers` (processes, probes,
restarts); the pure decisions live in `podspec`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gencluster_dev.client.apiclient import ApiClient, ApiError, Informer
from gencluster_dev.node.addresses import Pool, pod_ip_pool, uid_pool
from gencluster_dev.node.containers import ContainerRuntimeSettings
from gencluster_dev.node.engines import ContainerEngine
from gencluster_dev.node.podspec import DEFAULT_IMAGE_ENTRYPOINTS, now_rfc3339, pod_key
from gencluster_dev.node.podworker import ApiEndpoint, PodHost, PodWorker

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.30.0-gencluster-dev"
#: The capability each pod process keeps so the project's files stay readable (docs).
AMBIENT_CAPS = "+dac_read_search"
#: How many distinct recent events are remembered for aggregation.
EVENT_CACHE_SIZE = 4096


def _meminfo_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


class Kubelet:
    """One node: registers it, binds pending pods to it and runs the pods bound to it."""

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        node_name: str,
        dev_dir: Path,
        pod_network: str,
        run_as_users: range | None,
        bin_dir: Path,
        restart_backoff_base: float = 10.0,
        restart_backoff_max: float = 300.0,
        relist_period: float = 0.0,
        image_entrypoints: dict[str, list[str]] | None = None,
        heartbeat_interval: float = 10.0,
        stop_grace: float = 2.0,
        ca_pem: bytes | None = None,
        engine: ContainerEngine | None = None,
    ) -> None:
        self.api = ApiClient(api_url, token)
        self.node_name = node_name
        self.pods_dir = Path(dev_dir) / "pods"
        self.bin_dir = Path(bin_dir)
        self.heartbeat_interval = heartbeat_interval
        self.stop_grace = stop_grace
        parsed = urlparse(api_url.rstrip("/"))
        #: how pods reach the API server; its host is the node's address too (hostIP)
        self.endpoint = ApiEndpoint(url=api_url.rstrip("/"), host=parsed.hostname or "127.0.0.1",
                                    port=parsed.port or 80, ca_pem=ca_pem or None)
        self.host_ip = self.endpoint.host
        if run_as_users is not None and os.geteuid() != 0:
            log.warning("kubelet: not root, pods run as the current user")
            run_as_users = None
        self.ips: Pool[str] = pod_ip_pool(pod_network)
        self.uids: Pool[int] | None = uid_pool(run_as_users) if run_as_users else None
        self.setpriv = shutil.which("setpriv")
        if self.uids is not None and self.setpriv is None:
            raise RuntimeError("running pods under uids of their own needs `setpriv` "
                               "(util-linux); install it or run without root")
        self.node_labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            ),
        }
        self.workers: dict[str, PodWorker] = {}
        self.finished_uids: collections.deque[str] = collections.deque(maxlen=4096)
        self._events: collections.OrderedDict[tuple, list] = collections.OrderedDict()
        self._binding: set[str] = set()
        self._informer = Informer(self.api, "/api/v1/pods", self._on_pod)
        self.services = Informer(self.api, "/api/v1/services", lambda kind, obj: None)
        self.runtime = ContainerRuntimeSettings(
            host_ip=self.host_ip,
            image_entrypoints=dict(image_entrypoints or DEFAULT_IMAGE_ENTRYPOINTS),
            wrap_argv=self.wrap_argv,
            restart_backoff_base=restart_backoff_base,
            restart_backoff_max=restart_backoff_max,
            relist_period=relist_period,
            engine=engine,
        )
        self._pod_host = PodHost(
            api=self.api,
            endpoint=self.endpoint,
            events=self,
            runtime=self.runtime,
            pods_dir=self.pods_dir,
            bin_dir=self.bin_dir,
            ips=self.ips,
            uids=self.uids,
            services=lambda: list(self.services.cache.values()),
            on_finished=self._forget_worker,
        )
        self._tasks: set[asyncio.Task] = set()
        self._heartbeat: asyncio.Task | None = None
        self._ready_since = now_rfc3339()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Register the Node, then schedule and run pods in the background."""
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        await self._register_node()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="kubelet heartbeat")
        self.services.start()
        await asyncio.wait_for(self.services.synced.wait(), 30)
        self._informer.start()
        await asyncio.wait_for(self._informer.synced.wait(), 30)

    async def stop(self) -> None:
        """Stop every pod process (SIGTERM, `stop_grace`, SIGKILL); pods stay in the API."""
        await self._informer.stop()
        await self.services.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await asyncio.gather(*(w.halt(self.stop_grace) for w in list(self.workers.values())),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api.close()

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        """A background task kept alive (and cancelled at stop) by the kubelet."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- node

    def _node_status(self) -> dict:
        cpus = str(os.cpu_count() or 1)
        memory = f"{_meminfo_bytes() // 1024}Ki"
        now = now_rfc3339()
        resources = {"cpu": cpus, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        uname = platform.uname()

        def condition(kind: str, status: str, reason: str, message: str) -> dict:
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": self._ready_since}

        return {
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                          "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                          "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID",
                          "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": self.host_ip},
                          {"type": "Hostname", "address": self.node_name}],
            "capacity": resources,
            "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "gencluster-dev://processes",
                "operatingSystem": "linux",
                "architecture": self.node_labels["kubernetes.io/arch"],
                "kernelVersion": uname.release,
                "osImage": platform.platform(),
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        }

    async def _register_node(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": self.node_labels}, "spec": {}}
        try:
            await self.api.create("/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            await self.api.merge_patch(f"/api/v1/nodes/{self.node_name}",
                                       {"metadata": {"labels": self.node_labels}})
        await self._post_node_status()

    async def _post_node_status(self) -> None:
        node = await self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status",
                                          {"status": self._node_status()})
        # `kubectl label node` changes what nodeSelectors match
        labels = ((node or {}).get("metadata") or {}).get("labels")
        if labels:
            self.node_labels = dict(labels)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._retry_unscheduled()
            try:
                await self._post_node_status()
            except ApiError as exc:
                if exc.status == 404:
                    with contextlib.suppress(Exception):
                        await self._register_node()
                else:
                    log.warning("kubelet heartbeat: %s", exc)
            except Exception as exc:
                log.warning("kubelet heartbeat: %s", exc)

    # ---------------------------------------------------------------- pods

    def _retry_unscheduled(self) -> None:
        """Pending pods get another scheduling attempt (node labels or errors may have
        changed); like the scheduler's periodic flush of unschedulable pods."""
        for pod in list(self._informer.cache.values()):
            if not pod.get("spec", {}).get("nodeName"):
                self._on_pod("MODIFIED", pod)

    def _on_pod(self, kind: str, pod: dict) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        uid = meta["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.removed()
            return
        node = spec.get("nodeName")
        if not node:
            if uid not in self._binding and not meta.get("deletionTimestamp") and spec.get(
                "schedulerName", "default-scheduler"
            ) == "default-scheduler":
                self._binding.add(uid)
                self.spawn(self._schedule(pod), f"schedule {pod_key(pod)}")
            return
        if node != self.node_name:
            return
        if worker is None:
            if uid in self.finished_uids:
                return  # late events of a pod this kubelet already stopped and deleted
            worker = PodWorker(self._pod_host, pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)

    def _forget_worker(self, worker: PodWorker) -> None:
        """A pod stopped and deleted for good: drop its worker, ignore its late events."""
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]
            self.finished_uids.append(worker.uid)

    async def _schedule(self, pod: dict) -> None:
        meta = pod["metadata"]
        namespace, name, uid = meta.get("namespace", "default"), meta["name"], meta["uid"]
        try:
            selector = pod.get("spec", {}).get("nodeSelector") or {}
            mismatched = {k: v for k, v in selector.items() if self.node_labels.get(k) != v}
            if mismatched:
                already = any(c.get("type") == "PodScheduled" and c.get("status") == "False"
                              for c in (pod.get("status") or {}).get("conditions") or [])
                if not already:
                    message = (f"0/1 nodes are available: 1 node(s) didn't match Pod's node "
                               f"affinity/selector {mismatched}.")
                    await self.api.merge_patch(
                        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                        {"status": {"phase": "Pending", "conditions": [
                            {"type": "PodScheduled", "status": "False",
                             "reason": "Unschedulable", "message": message,
                             "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}]}})
                    await self.event(pod, "Warning", "FailedScheduling", message,
                                     component="default-scheduler")
                return
            await self.api.create(
                f"/api/v1/namespaces/{namespace}/pods/{name}/binding",
                {"apiVersion": "v1", "kind": "Binding",
                 "metadata": {"name": name, "namespace": namespace, "uid": uid},
                 "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}},
            )
            await self.event(pod, "Normal", "Scheduled",
                             f"Successfully assigned {namespace}/{name} to {self.node_name}",
                             component="default-scheduler")
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("kubelet: binding %s/%s: %s", namespace, name, exc)
        finally:
            self._binding.discard(uid)

    async def event(
        self, pod: dict, kind: str, reason: str, message: str, *,
        container: str | None = None, component: str = "kubelet",
    ) -> None:
        """Record an Event about a pod (best effort: events are informative).

        Like the kubelet's event correlator, a repeat of the same event (same pod, container,
        reason and message) bumps `count` and `lastTimestamp` of the first one instead of
        creating another object: a probe failing every second must not flood the store.
        """
        meta = pod["metadata"]
        namespace = meta.get("namespace", "default")
        base = f"/api/v1/namespaces/{namespace}/events"
        now = now_rfc3339()
        key = (meta["uid"], container, reason, message)
        try:
            seen = self._events.get(key)
            if seen is not None:
                self._events.move_to_end(key)
                seen[1] += 1
                try:
                    await self.api.merge_patch(f"{base}/{seen[0]}",
                                               {"count": seen[1], "lastTimestamp": now})
                    return
                except ApiError as exc:
                    if exc.status != 404:
                        raise
            involved = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                        "namespace": namespace, "uid": meta["uid"],
                        "resourceVersion": meta.get("resourceVersion", "")}
            if container:
                involved["fieldPath"] = f"spec.containers{{{container}}}"
            name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
            self._events[key] = [name, 1]
            while len(self._events) > EVENT_CACHE_SIZE:
                self._events.popitem(last=False)
            await self.api.create(base, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved, "reason": reason, "message": message,
                "type": kind, "source": {"component": component, "host": self.node_name},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": component, "reportingInstance": self.node_name,
            })
        except Exception as exc:
            log.debug("event %s %s: %s", reason, pod_key(pod), exc)

    def emit(self, pod: dict, kind: str, reason: str, message: str,
             container: str | None = None) -> None:
        """`event` from synchronous code."""
        self.spawn(self.event(pod, kind, reason, message, container=container),
                   f"event {reason}")

    def wrap_argv(self, argv: list[str], run_as: int | None) -> list[str]:
        """The argv that runs `argv` as the pod's uid, dying with the kubelet.

        As root: setpriv switches to the pod's uid and gid with no groups and the ambient
        capability CAP_DAC_READ_SEARCH (files anywhere stay readable). The parent-death signal
        makes a crashed control plane take its pods with it instead of leaving orphans.
        """
        if self.setpriv is None:
            return argv
        prefix = [self.setpriv]
        if run_as is not None:
            prefix += [f"--reuid={run_as}", f"--regid={run_as}", "--clear-groups",
                       f"--inh-caps={AMBIENT_CAPS}", f"--ambient-caps={AMBIENT_CAPS}"]
        return [*prefix, "--pdeathsig=KILL", "--", *argv]
