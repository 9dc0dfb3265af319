"""The process kubelet: schedules pods onto its node and runs their containers as processes.

Each pod gets a loopback IP of its own and, when the control plane runs as root, a uid of its
own (so nftables faults can tell pods apart, see docs/devcluster.md). Each container run is one
process group in a session of its own; its state is reported to the API server as soon as it
changes, which is what controllers (and the gencluster failover assist) watch.
The pure decisions live in `podspec`; this module is the I/O around them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .addresses import Pool, PoolExhausted, pod_ip_pool, uid_pool
from .apiclient import ApiClient, ApiError, Informer
from .podspec import (
    DEFAULT_IMAGE_ENTRYPOINTS,
    ContainerConfigError,
    ContainerView,
    EnvSources,
    ImageError,
    build_env,
    container_argv,
    exit_details,
    mount_env,
    now_rfc3339,
    pod_conditions,
    pod_dir_name,
    pod_key,
    pod_kubeconfig,
    pod_phase,
    referenced_objects,
    resolve_port,
    restart_delay,
    service_env,
    should_restart,
    volume_files,
)
from .probes import check, probe_loop, run_command

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.30.0-gencluster-dev"
#: How long a container must run before its restart back-off starts again from `base`.
BACKOFF_RESET_FACTOR = 2.0
#: The capability each pod process keeps so the project's files stay readable (docs).
AMBIENT_CAPS = "+dac_read_search"
#: How many distinct recent events are remembered for aggregation.
EVENT_CACHE_SIZE = 4096


def _write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _signal_group(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


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
        image_entrypoints: dict[str, list[str]] | None = None,
        heartbeat_interval: float = 10.0,
        stop_grace: float = 2.0,
        ca_pem: bytes | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.api = ApiClient(api_url, token)
        self.node_name = node_name
        self.pods_dir = Path(dev_dir) / "pods"
        self.bin_dir = Path(bin_dir)
        self.restart_backoff_base = restart_backoff_base
        self.restart_backoff_max = restart_backoff_max
        self.image_entrypoints = dict(image_entrypoints or DEFAULT_IMAGE_ENTRYPOINTS)
        self.heartbeat_interval = heartbeat_interval
        self.stop_grace = stop_grace
        self.ca_pem = ca_pem or None
        parsed = urlparse(self.api_url)
        self.api_host = parsed.hostname or "127.0.0.1"
        self.api_port = parsed.port or 80
        self.host_ip = self.api_host
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
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)

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


class PodWorker:
    """Runs one pod bound to the node: setup, containers, status, graceful deletion."""

    def __init__(self, kubelet: Kubelet, pod: dict) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        self.dir = kubelet.pods_dir / pod_dir_name(pod)
        self.ip: str | None = None
        self.run_as: int | None = None
        self.start_time: str | None = None
        spec = pod.get("spec", {})
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.init_runners = [ContainerRunner(self, c, init=True)
                             for c in spec.get("initContainers") or []]
        self.runners = [ContainerRunner(self, c) for c in spec.get("containers") or []]
        self.init_done = not self.init_runners
        status = pod.get("status") or {}
        self.finished = status.get("phase") in ("Succeeded", "Failed")
        self.conditions: list[dict] | None = status.get("conditions")
        self.terminating = asyncio.Event()
        self.force = False
        self.halting: float | None = None
        self._version = 0
        self._pushed_version = 0
        self._dirty = asyncio.Event()
        self._push_waiter = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._mount_messages: set[str] = set()

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")
        if self.pod["metadata"].get("deletionTimestamp"):
            self.terminating.set()

    def update(self, pod: dict) -> None:
        """A newer version of the pod object (labels, deletionTimestamp, ...)."""
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.terminating.set()

    def removed(self) -> None:
        """The pod vanished from the API without a graceful deletion: kill at once."""
        self.force = True
        self.terminating.set()

    async def halt(self, grace: float) -> None:
        """Stop the pod's processes for a kubelet shutdown (the pod stays in the API)."""
        self.halting = grace
        self.terminating.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def grace_period(self) -> float:
        meta, spec = self.pod["metadata"], self.pod.get("spec", {})
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return float(grace)

    # ---------------------------------------------------------------- status

    def mark_dirty(self) -> None:
        """Something the API should know changed: push the status as soon as possible.

        A pod found already Succeeded/Failed (a restarted control plane) is not run again and
        its recorded status is left alone.
        """
        self.write_state()
        if self.finished:
            return
        self._version += 1
        self._dirty.set()

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until the status as of now has reached the API server."""
        target = self._version
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pushed_version < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._push_waiter.wait(), remaining)

    def status(self) -> dict:
        views = [r.view for r in self.runners]
        init_views = [r.view for r in self.init_runners]
        phase = pod_phase(self.restart_policy, views, init_views, self.init_done)
        terminal = phase in ("Succeeded", "Failed")
        self.conditions = pod_conditions(self.conditions, scheduled=True,
                                         initialized=self.init_done, containers=views,
                                         terminal=terminal)
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self.conditions,
            "hostIP": self.kubelet.host_ip,
            "hostIPs": [{"ip": self.kubelet.host_ip}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}] if self.ip else None,
            "startTime": self.start_time,
            "containerStatuses": [v.status() for v in views],
            "qosClass": "BestEffort",
        }
        if init_views:
            status["initContainerStatuses"] = [v.status() for v in init_views]
        return status

    async def _pusher(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            version = self._version
            try:
                await self.kubelet.api.merge_patch(path, {"status": self.status()})
            except ApiError as exc:
                if exc.status == 404:
                    return
                log.warning("pod %s/%s status: %s", self.namespace, self.name, exc)
                await asyncio.sleep(0.5)
                self._dirty.set()
                continue
            except Exception as exc:
                log.warning("pod %s/%s status: %s", self.namespace, self.name, exc)
                await asyncio.sleep(0.5)
                self._dirty.set()
                continue
            self._pushed_version = max(self._pushed_version, version)
            waiter, self._push_waiter = self._push_waiter, asyncio.Event()
            waiter.set()

    def write_state(self) -> None:
        """pods/<dir>/state.json, what the fault injector resolves pods with."""
        if not self.dir.is_dir():
            return
        state = {
            "namespace": self.namespace, "name": self.name, "uid": self.uid,
            "podIP": self.ip, "runAsUser": self.run_as,
            "containers": {r.name: {"pid": r.pid, "restartCount": r.view.restart_count}
                           for r in [*self.init_runners, *self.runners]},
        }
        with contextlib.suppress(OSError):
            _write_json_atomic(self.dir / "state.json", state)

    # ---------------------------------------------------------------- run

    async def _run(self) -> None:
        pusher = asyncio.create_task(self._pusher(), name=f"status {self.name}")
        try:
            if not self.finished and not self.terminating.is_set():
                await self._setup()
                if not self.terminating.is_set():
                    await self._run_init_containers()
                if not self.terminating.is_set() and self.init_done:
                    for runner in self.runners:
                        runner.start()
            self.mark_dirty()
            await self.terminating.wait()
            if self.halting is not None:
                await self._stop_containers(self.halting)
                return
            await self._stop_containers(0.0 if self.force else self.grace_period())
            if not self.force:
                self.mark_dirty()
                await self.flush(2.0)
                await self._delete_from_api()
        except Exception:
            log.exception("pod %s/%s failed", self.namespace, self.name)
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher
            if self.halting is None:
                self._release()
            else:
                self.write_state()
            if self.kubelet.workers.get(self.uid) is self and self.halting is None:
                del self.kubelet.workers[self.uid]
                self.kubelet.finished_uids.append(self.uid)

    def _release(self) -> None:
        self.kubelet.ips.release(self.uid)
        if self.kubelet.uids is not None:
            self.kubelet.uids.release(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _stop_containers(self, grace: float) -> None:
        runners = [*self.init_runners, *self.runners]
        for runner in runners:
            runner.request_stop()
        if grace > 0 and any(r.pid for r in runners):
            for runner in runners:
                if runner.pid:
                    self.kubelet.emit(self.pod, "Normal", "Killing",
                                      f"Stopping container {runner.name}", runner.name)
        await asyncio.gather(*(r.stop(grace) for r in runners), return_exceptions=True)

    async def _delete_from_api(self) -> None:
        try:
            await self.kubelet.api.delete(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s delete: %s", self.namespace, self.name, exc)

    async def _setup(self) -> None:
        """IP, uid, pod directory, ServiceAccount kubeconfig and volumes (retried)."""
        kubelet = self.kubelet
        try:
            self.ip = kubelet.ips.allocate(self.uid)
            self.run_as = kubelet.uids.allocate(self.uid) if kubelet.uids else None
        except PoolExhausted as exc:
            self._waiting_all("ContainerCreating", f"no free pod address or uid: {exc}")
            await self.terminating.wait()
            return
        self.start_time = now_rfc3339()
        for sub in ("", "logs", "volumes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._chown(self.dir)
        self._chown(self.dir / "volumes")
        self.mark_dirty()
        while not self.terminating.is_set():
            try:
                sources = await self.fetch_sources()
                await self._write_kubeconfig()
                self._materialize_volumes(sources)
                return
            except Exception as exc:  # a missing object, the API unreachable: retried
                message = f"MountVolume.SetUp failed: {exc}"
                self._waiting_all("ContainerCreating", message)
                if message not in self._mount_messages:
                    self._mount_messages.add(message)
                    kubelet.emit(self.pod, "Warning", "FailedMount", message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.terminating.wait(), 2.0)

    def _waiting_all(self, reason: str, message: str) -> None:
        for runner in [*self.init_runners, *self.runners]:
            if runner.view.state == "waiting":
                runner.view.reason, runner.view.message = reason, message
        self.mark_dirty()

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as, self.run_as)

    def _chown_tree(self, path: Path) -> None:
        if self.run_as is None:
            return
        self._chown(path)
        for root, dirs, files in os.walk(path):
            for entry in [*dirs, *files]:
                os.chown(os.path.join(root, entry), self.run_as, self.run_as)

    async def fetch_sources(self) -> EnvSources:
        """The Secrets and ConfigMaps the pod refers to, as they are now (None if missing)."""
        secrets, configmaps = referenced_objects(self.pod)
        api = self.kubelet.api
        base = f"/api/v1/namespaces/{self.namespace}"
        sources = EnvSources()
        for name in secrets:
            sources.secrets[name] = await api.get_or_none(f"{base}/secrets/{name}")
        for name in configmaps:
            sources.configmaps[name] = await api.get_or_none(f"{base}/configmaps/{name}")
        return sources

    @property
    def service_account_dir(self) -> Path:
        return self.dir / "serviceaccount"

    def automount(self) -> bool:
        return self.pod.get("spec", {}).get("automountServiceAccountToken", True) is not False

    async def _write_kubeconfig(self) -> None:
        """A kubeconfig with a TokenRequest token of the pod's ServiceAccount."""
        if not self.automount():
            return
        account = self.pod.get("spec", {}).get("serviceAccountName") or "default"
        reply = await self.kubelet.api.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"audiences": [], "expirationSeconds": 86400 * 365,
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                         "name": self.name, "uid": self.uid}}},
        )
        token = reply["status"]["token"]
        kubelet = self.kubelet
        server = (f"https://{kubelet.api_host}:{kubelet.api_port}" if kubelet.ca_pem
                  else kubelet.api_url)
        kubeconfig = pod_kubeconfig(server=server, token=token, namespace=self.namespace,
                                    account=account, ca_pem=kubelet.ca_pem)
        _write_json_atomic(self.dir / "kubeconfig", kubeconfig, 0o600)
        self._chown(self.dir / "kubeconfig")
        sa_dir = self.service_account_dir
        sa_dir.mkdir(exist_ok=True)
        (sa_dir / "token").write_text(token)
        (sa_dir / "namespace").write_text(self.namespace)
        if kubelet.ca_pem:
            (sa_dir / "ca.crt").write_bytes(kubelet.ca_pem)
        self._chown_tree(sa_dir)

    def _materialize_volumes(self, sources: EnvSources) -> None:
        volumes_dir = self.dir / "volumes"
        for volume in self.pod.get("spec", {}).get("volumes") or []:
            files = volume_files(volume, sources)
            if "hostPath" in volume:
                continue
            target = volumes_dir / volume["name"]
            if files is None:
                target.mkdir(exist_ok=True)
                self._chown(target)
                continue
            staging = volumes_dir / f".{volume['name']}.new"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for item in files:
                path = staging / item.path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(item.data)
                os.chmod(path, item.mode)
            self._chown_tree(staging)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)

    def base_env(self, container: dict) -> dict[str, str]:
        """The env every container starts from, before envFrom and env (see docs "Pods")."""
        kubelet = self.kubelet
        env: dict[str, str] = {}
        if self.pod.get("spec", {}).get("enableServiceLinks", True) is not False:
            env.update(service_env(list(kubelet.services.cache.values()), self.namespace))
        env |= {
            "PATH": f"{kubelet.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                    "/sbin:/bin",
            "HOME": str(self.dir),
            "HOSTNAME": self.pod.get("spec", {}).get("hostname") or self.name,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": kubelet.api_host,
            "KUBERNETES_SERVICE_PORT": str(kubelet.api_port),
            "GENCLUSTER_DEV_POD_DIR": str(self.dir),
        }
        if self.automount():
            env["KUBECONFIG"] = str(self.dir / "kubeconfig")
        env.update(mount_env(container, self.pod.get("spec", {}).get("volumes") or [],
                             self.dir / "volumes",
                             self.service_account_dir if self.automount() else None))
        return env

    async def _run_init_containers(self) -> None:
        for runner in self.init_runners:
            runner.start()
            code = await runner.wait()
            if code != 0 or self.terminating.is_set():
                self.mark_dirty()
                return
        self.init_done = True


class ContainerRunner:
    """Runs one container: spawn, probes, exit report, restart with back-off."""

    def __init__(self, worker: PodWorker, container: dict, *, init: bool = False) -> None:
        self.worker = worker
        self.container = container
        self.name: str = container["name"]
        self.init = init
        self.view = ContainerView(self.name, container.get("image", ""))
        self.process: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._probes: list[asyncio.Task] = []
        self._runs = 0
        self._backoff_count = 0
        self._env: dict[str, str] = {}
        self._kill_task: asyncio.Task | None = None

    @property
    def kubelet(self) -> Kubelet:
        return self.worker.kubelet

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"container {self.name}")

    async def wait(self) -> int | None:
        """The final exit code (None when stopped or not started)."""
        if self._task is None:
            return None
        return await asyncio.shield(self._task)

    def request_stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """SIGTERM the process group (and SIGCONT it, in case it is paused), SIGKILL after
        `grace` seconds."""
        self.request_stop()
        if self.pid is not None:
            _signal_group(self.pid, signal.SIGTERM)
            _signal_group(self.pid, signal.SIGCONT)
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            _signal_group(self.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await self._task
        except Exception:
            log.exception("container %s", self.name)

    # ---------------------------------------------------------------- loop

    def _policy(self) -> str:
        if self.init:
            return "Never" if self.worker.restart_policy == "Never" else "OnFailure"
        return self.worker.restart_policy

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if self.stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self) -> int | None:
        worker = self.worker
        while not self.stopping:
            try:
                argv, env = await self._prepare()
            except (ContainerConfigError, ImageError) as exc:
                await self._config_failed(exc.reason, str(exc))
                continue
            except ApiError as exc:
                await self._config_failed("CreateContainerConfigError", str(exc))
                continue
            except Exception as exc:  # API unreachable, ...: retried like the kubelet does
                await self._config_failed("ContainerCreating", f"{type(exc).__name__}: {exc}")
                continue
            if self.stopping:
                break
            began = asyncio.get_running_loop().time()
            returncode = await self._run_once(argv, env)
            ran_for = asyncio.get_running_loop().time() - began
            if self.stopping:
                return None
            exit_code = self.view.exit_code or 0
            if returncode is None or not should_restart(self._policy(), exit_code):
                return exit_code
            await worker.flush(2.0)
            if ran_for >= BACKOFF_RESET_FACTOR * self.kubelet.restart_backoff_max:
                self._backoff_count = 0
            delay = restart_delay(self._backoff_count, self.kubelet.restart_backoff_base,
                                  self.kubelet.restart_backoff_max)
            self._backoff_count += 1
            self.view.last_terminated = self.view.terminated_dict()
            if delay > 0:
                self.view.state = "waiting"
                self.view.reason = "CrashLoopBackOff"
                self.view.message = (f"back-off {delay:g}s restarting failed container="
                                     f"{self.name} pod={worker.name}_{worker.namespace}"
                                     f"({worker.uid})")
                worker.mark_dirty()
                self.kubelet.emit(worker.pod, "Warning", "BackOff",
                                  "Back-off restarting failed container", self.name)
                await self._sleep(delay)
        return None

    async def _config_failed(self, reason: str, message: str) -> None:
        changed = (self.view.reason, self.view.message) != (reason, message)
        self.view.state = "waiting"
        self.view.reason, self.view.message = reason, message
        if changed:
            self.worker.mark_dirty()
            self.kubelet.emit(self.worker.pod, "Warning", "Failed", f"Error: {message}",
                              self.name)
        await self._sleep(2.0)

    async def _prepare(self) -> tuple[list[str], dict[str, str]]:
        worker = self.worker
        sources = await worker.fetch_sources()
        env = build_env(worker.pod, self.container, base=worker.base_env(self.container),
                        sources=sources, pod_ip=worker.ip or "", host_ip=self.kubelet.host_ip)
        return container_argv(self.container, env, self.kubelet.image_entrypoints), env

    def _rotate_log(self) -> int:
        logs = self.worker.dir / "logs"
        current = logs / f"{self.name}.log"
        if current.exists():
            os.replace(current, logs / f"{self.name}.previous.log")
        return os.open(current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _cwd(self) -> str:
        working_dir = self.container.get("workingDir")
        if working_dir and os.path.isdir(working_dir):
            return working_dir
        return str(self.worker.dir)

    async def _run_once(self, argv: list[str], env: dict[str, str]) -> int | None:
        """One run of the container; None when it could not be started at all."""
        worker, view = self.worker, self.view
        if self._runs:
            view.restart_count += 1
        self._runs += 1
        log_fd = self._rotate_log()
        view.started_at = now_rfc3339()
        try:
            if not argv or shutil.which(argv[0], path=env.get("PATH")) is None:
                raise FileNotFoundError(
                    f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH')
            self.process = await asyncio.create_subprocess_exec(
                *self.kubelet.wrap_argv(argv, worker.run_as), env=env, cwd=self._cwd(),
                stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"failed to start container {self.name!r}: {exc}"
            os.write(log_fd, f"{message}\n".encode())
            os.close(log_fd)
            view.state, view.exit_code, view.signal = "terminated", 128, None
            view.reason, view.message = "StartError", message
            view.finished_at = now_rfc3339()
            worker.mark_dirty()
            self.kubelet.emit(worker.pod, "Warning", "Failed", view.message, self.name)
            return 128
        os.close(log_fd)
        self._env = env
        self.pid = self.process.pid
        if self.stopping:  # a stop raced with the start: it found no pid to signal
            _signal_group(self.pid, signal.SIGTERM)
        view.state, view.reason, view.message = "running", None, None
        view.exit_code = view.signal = None
        view.finished_at = None
        view.container_id = f"gencluster-dev://{worker.uid}/{self.name}/{self.pid}"
        probes = {k: self.container.get(k) for k in
                  ("startupProbe", "readinessProbe", "livenessProbe")}
        view.started = probes["startupProbe"] is None or self.init
        view.ready = view.started and probes["readinessProbe"] is None and not self.init
        worker.mark_dirty()
        self.kubelet.emit(worker.pod, "Normal", "Started", f"Started container {self.name}",
                          self.name)
        if not self.init:
            self._start_probes(probes)
        returncode = await self.process.wait()
        _signal_group(self.pid, signal.SIGKILL)
        for task in self._probes:
            task.cancel()
        self._probes = []
        if self._kill_task is not None:
            self._kill_task.cancel()
            self._kill_task = None
        exit_code, sig, reason = exit_details(returncode)
        view.state, view.exit_code, view.signal = "terminated", exit_code, sig
        view.reason, view.message = reason, None
        view.finished_at = now_rfc3339()
        view.ready = view.started = False
        self.pid = None
        self.process = None
        worker.mark_dirty()
        return returncode

    # ---------------------------------------------------------------- probes

    def _start_probes(self, probes: dict[str, dict | None]) -> None:
        if probes["startupProbe"] is not None:
            self._spawn_probe("startup", probes["startupProbe"], probes)
        else:
            self._start_running_probes(probes)

    def _start_running_probes(self, probes: dict[str, dict | None]) -> None:
        if probes["readinessProbe"] is not None:
            self._spawn_probe("readiness", probes["readinessProbe"], probes)
        if probes["livenessProbe"] is not None:
            self._spawn_probe("liveness", probes["livenessProbe"], probes)

    def _spawn_probe(self, kind: str, probe: dict, probes: dict[str, dict | None]) -> None:
        worker, view = self.worker, self.view
        pid = self.pid

        async def run_once(timeout: float) -> tuple[bool, str]:
            return await check(
                probe, pod_ip=worker.ip or "127.0.0.1",
                resolve_port=lambda port: resolve_port(worker.pod, port, self.container),
                exec_fn=self._exec, timeout=timeout,
            )

        def on_change(result: bool, message: str) -> None:
            if self.pid != pid or self.stopping:
                return
            if kind == "readiness":
                view.ready = result
                worker.mark_dirty()
            elif kind == "startup" and result:
                view.started = True
                view.ready = probes["readinessProbe"] is None
                worker.mark_dirty()
                self._start_running_probes(probes)
            else:
                what = "startup" if kind == "startup" else "liveness"
                self.kubelet.emit(worker.pod, "Normal", "Killing",
                                  f"Container {self.name} failed {what} probe, will be "
                                  f"restarted", self.name)
                self._kill_for_restart()

        def on_failure(message: str) -> None:
            self.kubelet.emit(worker.pod, "Warning", "Unhealthy",
                              f"{kind.capitalize()} probe failed: {message}", self.name)

        self._probes.append(asyncio.create_task(
            probe_loop(kind, probe, run_once=run_once, on_change=on_change,
                       on_failure=on_failure),
            name=f"{kind} probe {self.name}",
        ))

    def _kill_for_restart(self) -> None:
        """SIGTERM the group now, SIGKILL after the grace period (liveness/startup failure)."""
        pid = self.pid
        _signal_group(pid, signal.SIGTERM)
        _signal_group(pid, signal.SIGCONT)

        async def escalate() -> None:
            await asyncio.sleep(self.worker.grace_period())
            _signal_group(pid, signal.SIGKILL)

        self._kill_task = asyncio.create_task(escalate(), name=f"kill {self.name}")

    async def _exec(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """exec probes run like the container: same env, same uid."""
        return await run_command(self.kubelet.wrap_argv(argv, self.worker.run_as),
                                 env=self._env, cwd=self._cwd(), timeout=timeout)
