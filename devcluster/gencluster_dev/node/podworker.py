"""One pod on the node: IP, uid, directory, ServiceAccount kubeconfig, volumes, the status
pushed to the API server, and graceful deletion. Its containers run in `containers`.

What a pod worker uses of its node comes in as one `PodHost` value (the API client, the
address pools, the settings, and a callback for when the pod is gone), not as the `Kubelet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gencluster_dev.client.apiclient import ApiClient, ApiError
from gencluster_dev.node.addresses import Pool, PoolExhausted
from gencluster_dev.node.containers import ContainerRunner, ContainerRuntimeSettings, PodEvents
from gencluster_dev.node.podspec import (
    EnvSources,
    PodFacts,
    VolumeFile,
    claim_host_path,
    mount_env,
    now_rfc3339,
    pod_conditions,
    pod_dir_name,
    pod_kubeconfig,
    pod_phase,
    referenced_objects,
    service_env,
    volume_files,
)

log = logging.getLogger(__name__)


def _write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_secret_atomic(path: Path, data: bytes) -> None:
    """Write a credential readable by its owner only (0600) from the first byte on: created
    with that mode, never widened by the umask, and moved into place whole."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ApiEndpoint:
    """How a pod reaches the API server: its kubeconfig and `KUBERNETES_SERVICE_*`."""

    url: str
    host: str
    port: int
    ca_pem: bytes | None = None

    def server_for_pods(self) -> str:
        """HTTPS when there is a CA to trust (kubectl sends tokens only over TLS)."""
        return f"https://{self.host}:{self.port}" if self.ca_pem else self.url


@dataclass(frozen=True)
class PodHost:
    """Everything a pod worker uses of the node that runs it, and nothing more.

    The pools are shared by every pod of the node (a worker allocates and releases only its
    own uid's entry); `services` reads the node's Service cache at the moment a container
    starts; `on_finished` tells the node a pod is gone for good so it forgets the worker.
    """

    api: ApiClient
    endpoint: ApiEndpoint
    events: PodEvents
    runtime: ContainerRuntimeSettings
    pods_dir: Path
    bin_dir: Path
    ips: Pool[str]
    uids: Pool[int] | None
    services: Callable[[], list[dict]]
    on_finished: Callable[[PodWorker], None]


VOLUME_REFRESH_SECONDS = 5.0
"""How often a running pod's secret and configMap volumes are compared with the API (the
kubelet's sync period plus its cache is about a minute; shorter here, for tests of rotation)."""


DATA_LINK = "..data"
"""The kubelet's AtomicWriter layout: a volume's directory holds `..data`, a symlink to the
current timestamped directory, and one symlink per top-level name into `..data`."""


def _same_files(directory: Path, files: list[VolumeFile]) -> bool:
    """Whether `directory` holds exactly `files` (paths and contents)."""
    data = directory / DATA_LINK
    root = data.resolve() if data.is_symlink() else directory
    try:
        return all((root / item.path).read_bytes() == item.data for item in files) and \
            sum(1 for path in root.rglob("*") if path.is_file()) == len(files)
    except OSError:
        return False


class PodWorker:
    """Runs one pod bound to the node: setup, containers, status, graceful deletion."""

    def __init__(self, host: PodHost, pod: dict) -> None:
        self.host = host
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        self.dir = host.pods_dir / pod_dir_name(pod)
        self.ip: str | None = None
        self.run_as: int | None = None
        self.start_time: str | None = None
        spec = pod.get("spec", {})
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.init_runners = [self._runner(c, init=True) for c in spec.get("initContainers") or []]
        self.runners = [self._runner(c) for c in spec.get("containers") or []]
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
        self.token: str | None = None
        #: volume name -> host directory of the PersistentVolume its claim is bound to
        self.claim_paths: dict[str, Path] = {}

    def _runner(self, container: dict, *, init: bool = False) -> ContainerRunner:
        return ContainerRunner(self, container, runtime=self.host.runtime,
                               events=self.host.events, init=init)

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
        """Stop the pod's processes for a kubelet shutdown (the pod stays in the API).

        A pod already in its graceful deletion is cut short to `grace` too: a container that
        ignores SIGTERM (a PID 1 without a handler, in a container) must not hold the
        shutdown for its whole grace period."""
        stopping = self.terminating.is_set()
        self.halting = grace
        self.terminating.set()
        if stopping:
            await asyncio.gather(*(r.stop(grace) for r in [*self.init_runners, *self.runners]),
                                 return_exceptions=True)
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
            "hostIP": self.host.runtime.host_ip,
            "hostIPs": [{"ip": self.host.runtime.host_ip}],
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
                await self.host.api.merge_patch(path, {"status": self.status()})
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
            refresher = asyncio.create_task(self._refresh_volumes(),
                                            name=f"volumes {self.name}")
            try:
                await self.terminating.wait()
            finally:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            if self.halting is not None:
                await self._stop_containers(self.halting)
                return
            await self._stop_containers(0.0 if self.force else self.grace_period(),
                                        hooks=not self.force)
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
            if self.halting is None:
                self.host.on_finished(self)

    def _release(self) -> None:
        self.host.ips.release(self.uid)
        if self.host.uids is not None:
            self.host.uids.release(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _stop_containers(self, grace: float, *, hooks: bool = False) -> None:
        runners = [*self.init_runners, *self.runners]
        for runner in runners:
            runner.request_stop()
        if grace > 0 and any(r.pid for r in runners):
            for runner in runners:
                if runner.pid:
                    self.host.events.emit(self.pod, "Normal", "Killing",
                                          f"Stopping container {runner.name}", runner.name)
        await asyncio.gather(*(r.stop(grace, hooks=hooks) for r in runners),
                             return_exceptions=True)

    async def _delete_from_api(self) -> None:
        try:
            await self.host.api.delete(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s delete: %s", self.namespace, self.name, exc)

    async def _setup(self) -> None:
        """IP, uid, pod directory, ServiceAccount kubeconfig and volumes (retried)."""
        host = self.host
        try:
            self.ip = host.ips.allocate(self.uid)
            self.run_as = host.uids.allocate(self.uid) if host.uids else None
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
                self.claim_paths = await self.resolve_claims()
                await self._write_kubeconfig()
                self._materialize_volumes(sources)
                # A claim may hold many files: chown them off the event loop.
                await asyncio.to_thread(self._mount_claims)
                return
            except Exception as exc:  # a missing object, the API unreachable: retried
                message = f"MountVolume.SetUp failed: {exc}"
                self._waiting_all("ContainerCreating", message)
                if message not in self._mount_messages:
                    self._mount_messages.add(message)
                    host.events.emit(self.pod, "Warning", "FailedMount", message)
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
        api = self.host.api
        base = f"/api/v1/namespaces/{self.namespace}"
        sources = EnvSources()
        for name in secrets:
            sources.secrets[name] = await api.get_or_none(f"{base}/secrets/{name}")
        for name in configmaps:
            sources.configmaps[name] = await api.get_or_none(f"{base}/configmaps/{name}")
        return sources

    async def resolve_claims(self) -> dict[str, Path]:
        """The host directory of every persistentVolumeClaim volume: claim → bound volume →
        its path. Raises (so `_setup` retries, with a FailedMount Event) while a claim is
        missing, unbound or being deleted."""
        api = self.host.api
        paths: dict[str, Path] = {}
        for volume in self.pod.get("spec", {}).get("volumes") or []:
            source = volume.get("persistentVolumeClaim")
            if not isinstance(source, dict):
                continue
            claim_name = str(source.get("claimName") or "")
            claim = await api.get_or_none(
                f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim_name}")
            bound = None
            volume_name = ((claim or {}).get("spec") or {}).get("volumeName")
            if volume_name:
                bound = await api.get_or_none(f"/api/v1/persistentvolumes/{volume_name}")
            paths[volume["name"]] = claim_host_path(claim_name, claim, bound)
        return paths

    @property
    def service_account_dir(self) -> Path:
        return self.dir / "serviceaccount"

    def automount(self) -> bool:
        return self.pod.get("spec", {}).get("automountServiceAccountToken", True) is not False

    async def _write_kubeconfig(self) -> None:
        """A TokenRequest token of the pod's ServiceAccount (also for projected token volumes)
        and, unless automount is off, the kubeconfig and serviceaccount/ files with it."""
        account = self.pod.get("spec", {}).get("serviceAccountName") or "default"
        reply = await self.host.api.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"audiences": [], "expirationSeconds": 86400 * 365,
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                         "name": self.name, "uid": self.uid}}},
        )
        token = self.token = reply["status"]["token"]
        if not self.automount():
            return
        endpoint = self.host.endpoint
        kubeconfig = pod_kubeconfig(server=endpoint.server_for_pods(), token=token,
                                    namespace=self.namespace, account=account,
                                    ca_pem=endpoint.ca_pem)
        _write_json_atomic(self.dir / "kubeconfig", kubeconfig, 0o600)
        self._chown(self.dir / "kubeconfig")
        sa_dir = self.service_account_dir
        sa_dir.mkdir(exist_ok=True)
        _write_secret_atomic(sa_dir / "token", token.encode())
        (sa_dir / "namespace").write_text(self.namespace)
        if endpoint.ca_pem:
            (sa_dir / "ca.crt").write_bytes(endpoint.ca_pem)
        self._chown_tree(sa_dir)

    async def _refresh_volumes(self) -> None:
        """Keep secret and configMap volumes current, as the kubelet does (within about
        `VOLUME_REFRESH_SECONDS`): a renewed certificate reaches a running pod without a
        restart. A volume is rewritten only when its files changed, by the same atomic
        replacement as at start; a Secret that vanished leaves the files as they were."""
        while True:
            await asyncio.sleep(VOLUME_REFRESH_SECONDS)
            if not any("secret" in v or "configMap" in v
                       for v in self.pod.get("spec", {}).get("volumes") or []):
                return
            try:
                sources = await self.fetch_sources()
                self._materialize_volumes(sources, refresh=True)
            except Exception as error:  # the API unreachable, a key gone: try again later
                log.debug("volume refresh of %s/%s: %s", self.namespace, self.name, error)

    def _materialize_volumes(self, sources: EnvSources, refresh: bool = False) -> None:
        volumes_dir = self.dir / "volumes"
        for volume in self.pod.get("spec", {}).get("volumes") or []:
            files = volume_files(volume, sources, PodFacts(
                self.pod, self.ip or "", self.host.runtime.host_ip, self.token))
            if "hostPath" in volume:  # used in place; created only when asked to, like k8s
                if volume["hostPath"].get("type") == "DirectoryOrCreate":
                    Path(volume["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
                continue
            if "persistentVolumeClaim" in volume:
                continue  # the claim's own directory: `_mount_claims`
            target = volumes_dir / volume["name"]
            if refresh and (("secret" not in volume and "configMap" not in volume)
                            or files is None or _same_files(target, files)):
                continue
            if files is None:
                target.mkdir(exist_ok=True)
                self._chown(target)
                continue
            self._write_atomically(target, files)

    def _write_atomically(self, target: Path, files: list[VolumeFile]) -> None:
        """Write a secret, configMap, downwardAPI or projected volume as the kubelet's
        AtomicWriter does: the files go into a new timestamped directory, `..data` is swapped
        to it in one rename, and each top-level name is a symlink through `..data`. The
        volume's own directory never changes, so a container that bind-mounted it (podman)
        sees every update, and a reader never sees half of one."""
        target.mkdir(exist_ok=True)
        self._chown(target)
        stamp = target / (f"..{time.strftime('%Y_%m_%d_%H_%M_%S', time.gmtime())}"
                          f".{secrets.token_hex(4)}")
        stamp.mkdir()
        for item in files:
            path = stamp / item.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(item.data)
            os.chmod(path, item.mode)
        self._chown_tree(stamp)
        swap = target / f"{DATA_LINK}_tmp"
        with contextlib.suppress(FileNotFoundError):
            swap.unlink()
        os.symlink(stamp.name, swap)
        os.replace(swap, target / DATA_LINK)
        names = {Path(item.path).parts[0] for item in files}
        for entry in list(target.iterdir()):
            if entry.name.startswith(".."):
                if entry.name not in (DATA_LINK, stamp.name):
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.name not in names or not entry.is_symlink():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
        for name in names:
            if not (target / name).is_symlink():
                os.symlink(f"{DATA_LINK}/{name}", target / name)

    def _mount_claims(self) -> None:
        for volume in self.pod.get("spec", {}).get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                self._mount_claim(volume)

    def _mount_claim(self, volume: dict) -> None:
        """Hand a claim's directory to this pod: as root every pod runs as a uid of its own,
        and a pod re-created later gets another, so everything in the directory is chowned
        to the mounting pod's uid (what fsGroup's recursive ownership change achieves in
        Kubernetes). Read-only mounts are left as they are: pods can read any file."""
        path = self.claim_paths[volume["name"]]
        path.mkdir(parents=True, exist_ok=True)
        if self.run_as is None or volume["persistentVolumeClaim"].get("readOnly"):
            return
        # Never through a symlink: a pod could otherwise plant one to get any file chowned.
        os.chown(path, self.run_as, self.run_as, follow_symlinks=False)
        for root, dirs, files in os.walk(path):
            for entry in [*dirs, *files]:
                os.chown(os.path.join(root, entry), self.run_as, self.run_as,
                         follow_symlinks=False)

    def base_env(self, container: dict) -> dict[str, str]:
        """The env every container starts from, before envFrom and env (see docs "Pods")."""
        host = self.host
        env: dict[str, str] = {}
        if self.pod.get("spec", {}).get("enableServiceLinks", True) is not False:
            env.update(service_env(host.services(), self.namespace))
        env |= {
            "PATH": f"{host.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                    "/sbin:/bin",
            "HOME": str(self.dir),
            "HOSTNAME": self.pod.get("spec", {}).get("hostname") or self.name,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": host.endpoint.host,
            "KUBERNETES_SERVICE_PORT": str(host.endpoint.port),
            "GENCLUSTER_DEV_POD_DIR": str(self.dir),
        }
        if self.automount():
            env["KUBECONFIG"] = str(self.dir / "kubeconfig")
        env.update(mount_env(container, self.pod.get("spec", {}).get("volumes") or [],
                             self.dir / "volumes",
                             self.service_account_dir if self.automount() else None,
                             self.claim_paths))
        return env

    async def _run_init_containers(self) -> None:
        for runner in self.init_runners:
            runner.start()
            code = await runner.wait()
            if code != 0 or self.terminating.is_set():
                self.mark_dirty()
                return
        self.init_done = True
