"""`DevCluster`: starts and stops the whole local control plane in one asyncio loop.

The order matters and mirrors a real cluster's bootstrap: the API server first; only once it
serves do the kubelet and the Service proxy start (they are ordinary API clients), the CRDs get
installed and established, and only then is `kubeconfig` written, so a user or a test that waits
for that file never talks to a half-started control plane. Stopping reverses it and removes every
process and nftables rule the instance made.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

from gencluster_dev.apiserver.server import ApiServer
from gencluster_dev.controllers.daemonsets import DaemonSetController
from gencluster_dev.controllers.deployments import DeploymentController
from gencluster_dev.controllers.endpoints import EndpointsController
from gencluster_dev.controllers.jobs import JobController
from gencluster_dev.controllers.replicasets import ReplicaSetController
from gencluster_dev.controllers.statefulsets import StatefulSetController
from gencluster_dev.controllers.supervised import SupervisedController
from gencluster_dev.controllers.volumes import LOCAL_PATH_PROVISIONER, VolumeController
from gencluster_dev.machinery.inflight import (
    DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
    DEFAULT_MAX_REQUESTS_INFLIGHT,
)
from gencluster_dev.network.dns import DNS_PORT, ClusterDns
from gencluster_dev.network.netpol import (
    NetworkPolicyEnforcer,
    NetworkPolicyUnavailable,
    check_nft,
)
from gencluster_dev.network.netpol import table_name as netpol_table_name
from gencluster_dev.network.proxy import ServiceProxy
from gencluster_dev.node.kubelet import Kubelet
from gencluster_dev.node.podman import PodmanEngine, PodmanUnavailable

SLOT_LOCK_DIR = Path("/tmp/gencluster-dev-slots")
FIRST_SLOT = 2
LAST_SLOT = 250
API_SERVER_PORT = 6443
UID_BASE = 200_000
UIDS_PER_SLOT = 1024
CRD_ESTABLISH_TIMEOUT = 30.0
DEFAULT_STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "standard",
                 "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": LOCAL_PATH_PROVISIONER,
    "reclaimPolicy": "Delete",
    # Immediate, not kind's WaitForFirstConsumer: with one node there is no placement to wait
    # for, and a claim is Bound as soon as it is applied (what scripts and tests expect).
    "volumeBindingMode": "Immediate",
}


class DevClusterError(Exception):
    """A reason the local control plane cannot start, worded for the person who ran it."""


@dataclass(frozen=True)
class AddressPlan:
    """Where one instance's parts live; all derived from its slot (docs/devcluster.md)."""

    slot: int

    @property
    def api_host(self) -> str:
        return f"127.{self.slot}.0.1"

    @property
    def dns_host(self) -> str:
        """The cluster DNS server's address (what ClusterFirst pods get as nameserver)."""
        return f"127.{self.slot}.0.10"

    @property
    def pod_network(self) -> str:
        return f"127.{self.slot}.64.0/18"

    @property
    def service_network(self) -> str:
        return f"127.{self.slot}.128.0/17"

    @property
    def nft_table(self) -> str:
        return f"gencluster_dev_{self.slot}"

    def run_as_users(self, is_root: bool) -> range | None:
        if not is_root:
            return None
        first = UID_BASE + self.slot * UIDS_PER_SLOT
        return range(first, first + UIDS_PER_SLOT)


class SlotLease:
    """An exclusive claim on one slot, held through an flock for the life of the process.

    flock is released by the kernel when the process dies, so a crashed instance never leaves a
    slot taken, and parallel instances (tests run side by side) never share addresses.
    """

    def __init__(self) -> None:
        self.slot: int | None = None
        self._file: IO[str] | None = None

    def claim(self) -> int:
        SLOT_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            SLOT_LOCK_DIR.chmod(0o1777)
        for slot in range(FIRST_SLOT, LAST_SLOT + 1):
            path = SLOT_LOCK_DIR / f"{slot}.lock"
            # Read-only is enough for flock, so a lock file another user created still works.
            handle = open(path, "a+") if not path.exists() else open(path)  # noqa: SIM115
            with contextlib.suppress(PermissionError):
                path.chmod(0o666)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self.slot, self._file = slot, handle
            return slot
        raise DevClusterError(
            f"every slot {FIRST_SLOT}..{LAST_SLOT} is taken by a running instance"
        )

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def kubeconfig_document(
    server: str, ca_pem: bytes, token: str, user: str = "admin"
) -> dict[str, Any]:
    """An admin kubeconfig for the instance: TLS (kubectl sends tokens only over TLS)."""
    cluster = {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gencluster-dev", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "gencluster-dev",
                "context": {"cluster": "gencluster-dev", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "gencluster-dev",
    }


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every object in the given YAML files (multi-document, `List` kinds flattened)."""
    objects: list[dict[str, Any]] = []
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            raise DevClusterError(f"cannot read manifest {path}: {error}") from error
        for document in documents:
            if not document:
                continue
            if not isinstance(document, dict) or "kind" not in document:
                raise DevClusterError(f"{path}: every document must be a Kubernetes object")
            if document["kind"].endswith("List") and "items" in document:
                objects.extend(document["items"])
            else:
                objects.append(document)
    return objects


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Readers never see a half-written file: tests wait for kubeconfig to appear."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)


def delete_nft_table(table: str) -> None:
    """Remove the instance's fault table; absent nft or table is not an error here."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(FileNotFoundError):
        subprocess.run(
            ["nft", "delete", "table", "inet", table],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


class ManifestApplier:
    """Creates or updates arbitrary objects through the API, resolving kinds by discovery.

    It is what `kubectl apply` would do for a fresh object (create, else merge-patch), kept
    inside the process so `gencluster dev up --apply` needs nothing but the API.
    """

    def __init__(self, session: aiohttp.ClientSession, server: str) -> None:
        self._session = session
        self._server = server

    async def _resource_for(self, api_version: str, kind: str) -> tuple[str, str, bool]:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        async with self._session.get(self._server + base) as response:
            if response.status != 200:
                raise DevClusterError(f"the API does not serve {api_version} (for kind {kind})")
            listing = await response.json()
        for resource in listing.get("resources", []):
            if resource.get("kind") == kind and "/" not in resource["name"]:
                return base, resource["name"], bool(resource.get("namespaced"))
        raise DevClusterError(f"the API serves no kind {kind} in {api_version}")

    async def apply(self, obj: dict[str, Any], default_namespace: str = "default") -> str:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        name = obj.get("metadata", {}).get("name")
        if not name:
            raise DevClusterError(f"a {kind} in the manifests has no metadata.name")
        base, plural, namespaced = await self._resource_for(api_version, kind)
        if namespaced:
            namespace = obj["metadata"].setdefault("namespace", default_namespace)
            collection = f"{base}/namespaces/{namespace}/{plural}"
        else:
            collection = f"{base}/{plural}"
        async with self._session.post(self._server + collection, json=obj) as response:
            if response.status in (200, 201):
                return f"{plural}/{name} created"
            body = await response.json(content_type=None)
            if response.status != 409 or body.get("reason") != "AlreadyExists":
                raise DevClusterError(f"{kind} {name}: {body.get('message', response.status)}")
        async with self._session.patch(
            f"{self._server}{collection}/{name}",
            data=json.dumps(obj),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            if response.status != 200:
                body = await response.json(content_type=None)
                raise DevClusterError(f"{kind} {name}: {body.get('message', response.status)}")
        return f"{plural}/{name} configured"

    async def wait_established(self, crd_name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self._server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}"
        while time.monotonic() < deadline:
            async with self._session.get(url) as response:
                if response.status == 200:
                    crd = await response.json()
                    conditions = crd.get("status", {}).get("conditions", [])
                    if any(
                        c.get("type") == "Established" and c.get("status") == "True"
                        for c in conditions
                    ):
                        return
            await asyncio.sleep(0.1)
        raise DevClusterError(f"CustomResourceDefinition {crd_name} was not established in time")


@dataclass
class DevCluster:
    """One running instance of the local control plane, owning `dev_dir`."""

    dev_dir: Path
    crd_files: Sequence[Path] = ()
    manifest_files: Sequence[Path] = ()
    node_name: str = "dev-node"
    restart_backoff_base: float = 10.0
    #: kube-apiserver's --max-requests-inflight and --max-mutating-requests-inflight (0: none)
    max_requests_inflight: int = DEFAULT_MAX_REQUESTS_INFLIGHT
    max_mutating_requests_inflight: int = DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT
    #: how the kubelet runs containers: "process" (local processes) or "podman" (images)
    runtime: str = "process"
    controller_commands: Sequence[Sequence[str]] = ()
    announce: Any = field(default=print)

    def __post_init__(self) -> None:
        self.dev_dir = self.dev_dir.resolve()
        self._slot_lease = SlotLease()
        self._api: ApiServer | None = None
        self._kubelet: Kubelet | None = None
        self._proxy: ServiceProxy | None = None
        self._network_policies: NetworkPolicyEnforcer | None = None
        self._endpoints: EndpointsController | None = None
        self._deployments: DeploymentController | None = None
        self._replica_sets: ReplicaSetController | None = None
        self._workloads: list[StatefulSetController | JobController | DaemonSetController] = []
        self._volumes: VolumeController | None = None
        self._plan: AddressPlan | None = None
        self._owns_dir = False
        self._controllers: list[SupervisedController] = []
        self._engine: PodmanEngine | None = None
        self._dns: ClusterDns | None = None

    @property
    def api_url(self) -> str:
        """The API server's plain-HTTP address (Python clients; kubectl needs the kubeconfig)."""
        if self._api is None:
            raise DevClusterError("the control plane is not started")
        return self._api.url

    @property
    def volumes_dir(self) -> Path:
        """Where local-path volumes live; kept across restarts (Retain means kept)."""
        return self.dev_dir / "volumes"

    @property
    def kubeconfig_path(self) -> Path:
        return self.dev_dir / "kubeconfig"

    @property
    def instance_path(self) -> Path:
        return self.dev_dir / "instance.json"

    def _refuse_if_running(self) -> None:
        """One instance per directory; a dead instance's leftovers are simply replaced.

        A dead instance's nftables table is not touched here: its slot may already belong to a
        live instance. Whoever claims a slot clears that slot's table instead.
        """
        try:
            previous = json.loads(self.instance_path.read_text())
            pid = int(previous["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        raise DevClusterError(
            f"an instance already runs in {self.dev_dir} (pid {pid}); "
            "stop it or choose another --dir"
        )

    async def start(self) -> None:
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        self._owns_dir = True
        for stale in (self.kubeconfig_path, self.instance_path):
            stale.unlink(missing_ok=True)
        pods_dir = self.dev_dir / "pods"
        if pods_dir.exists():
            await asyncio.to_thread(_remove_tree, pods_dir)
        pods_dir.mkdir()
        crds = load_manifests(self.crd_files)
        manifests = load_manifests(self.manifest_files)

        self._plan = plan = AddressPlan(self._slot_lease.claim())
        delete_nft_table(plan.nft_table)
        delete_nft_table(netpol_table_name(plan.nft_table))
        admin_token = secrets.token_urlsafe(32)
        self._api = ApiServer(
            host=plan.api_host,
            port=API_SERVER_PORT,
            admin_token=admin_token,
            service_network=plan.service_network,
            pods_dir=pods_dir,
            max_requests_inflight=self.max_requests_inflight,
            max_mutating_requests_inflight=self.max_mutating_requests_inflight,
        )
        await self._api.start()
        self._dns = ClusterDns(api_url=self._api.url, token=admin_token, host=plan.dns_host)
        await self._dns.start()
        # pods can only be pointed at it on the DNS port (resolv.conf names no port)
        cluster_dns = plan.dns_host if self._dns.port == DNS_PORT else None
        self._engine = await self._container_engine(pods_dir, cluster_dns)
        if self._engine is not None:
            self._api.container_exec = self._engine.exec_command
        self._kubelet = Kubelet(
            api_url=self._api.url,
            token=admin_token,
            node_name=self.node_name,
            dev_dir=self.dev_dir,
            pod_network=plan.pod_network,
            run_as_users=plan.run_as_users(os.geteuid() == 0),
            bin_dir=Path(sys.executable).parent,
            restart_backoff_base=self.restart_backoff_base,
            ca_pem=self._api.ca_pem,
            engine=self._engine,
        )
        await self._kubelet.start()
        self._proxy = ServiceProxy(api_url=self._api.url, token=admin_token)
        await self._proxy.start()
        self._network_policies = await self._network_policy_enforcer(plan, admin_token, pods_dir)
        self._endpoints = EndpointsController(api_url=self._api.url, token=admin_token)
        await self._endpoints.start()
        self._replica_sets = ReplicaSetController(api_url=self._api.url, token=admin_token)
        await self._replica_sets.start()
        self._deployments = DeploymentController(api_url=self._api.url, token=admin_token)
        await self._deployments.start()
        for workload in (StatefulSetController, JobController, DaemonSetController):
            controller = workload(api_url=self._api.url, token=admin_token)
            await controller.start()
            self._workloads.append(controller)
        self._volumes = VolumeController(api_url=self._api.url, token=admin_token,
                                         volumes_dir=self.volumes_dir)
        await self._volumes.start()

        headers = {"Authorization": f"Bearer {admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            applier = ManifestApplier(session, self._api.url)
            await applier.apply(json.loads(json.dumps(DEFAULT_STORAGE_CLASS)))
            for crd in crds:
                await applier.apply(crd)
            for crd in crds:
                await applier.wait_established(crd["metadata"]["name"], CRD_ESTABLISH_TIMEOUT)
            write_atomically(
                self.instance_path,
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "slot": plan.slot,
                        "server": self._api.url,
                        "nftTable": plan.nft_table,
                        "networkPolicyTable": netpol_table_name(plan.nft_table),
                        "podNetwork": plan.pod_network,
                        "serviceNetwork": plan.service_network,
                        "dns": self._dns.address,
                        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    },
                    indent=2,
                ),
                mode=0o644,
            )
            write_atomically(
                self.kubeconfig_path,
                yaml.safe_dump(
                    kubeconfig_document(self._api.tls_url, self._api.ca_pem, admin_token)
                ),
            )
            self.announce(f"API server at {self._api.url} (node {self.node_name}, "
                          f"{self.runtime} runtime)")
            self.announce(f"cluster DNS at {self._dns.address} (cluster.local)")
            self.announce(f"export KUBECONFIG={self.kubeconfig_path}")
            self._start_controllers()
            for obj in manifests:
                self.announce(await applier.apply(obj))

    async def _network_policy_enforcer(self, plan: AddressPlan, token: str,
                                       pods_dir: Path) -> NetworkPolicyEnforcer:
        """NetworkPolicy enforcement: as root it must work (nftables answers) or `up` fails
        with the reason; without root policies are stored and reported as not enforced."""
        assert self._api is not None
        is_root = os.geteuid() == 0
        if is_root:
            try:
                await asyncio.to_thread(check_nft)
            except NetworkPolicyUnavailable as error:
                raise DevClusterError(str(error)) from None
        else:
            self.announce("NetworkPolicy is not enforced: the plane runs without root")
        uids = plan.run_as_users(True)
        assert uids is not None
        enforcer = NetworkPolicyEnforcer(
            api_url=self._api.url, token=token, pods_dir=pods_dir,
            table=netpol_table_name(plan.nft_table), pod_uids=(uids.start, uids.stop - 1),
            enforce=is_root)
        await enforcer.start()
        return enforcer

    async def _container_engine(self, pods_dir: Path,
                                cluster_dns: str | None) -> PodmanEngine | None:
        """The podman engine for `runtime="podman"` (checked, leftovers of a dead instance of
        this directory removed; its pods resolve with `cluster_dns`), None for the process
        runtime."""
        if self.runtime == "process":
            return None
        if self.runtime != "podman":
            raise DevClusterError(f"unknown runtime {self.runtime!r}: process or podman")
        if os.geteuid() != 0:
            raise DevClusterError("--runtime podman needs root (pods run as uids of their own)")
        try:
            engine = PodmanEngine(instance=str(pods_dir), cluster_dns=cluster_dns)
            await asyncio.to_thread(engine.check)
        except PodmanUnavailable as error:
            raise DevClusterError(str(error)) from None
        await asyncio.to_thread(engine.remove_leftovers)
        return engine

    def _start_controllers(self) -> None:
        if not self.controller_commands:
            return
        logs = self.dev_dir / "controllers"
        logs.mkdir(exist_ok=True)
        environment = {**os.environ, "KUBECONFIG": str(self.kubeconfig_path)}
        for index, command in enumerate(self.controller_commands):
            controller = SupervisedController(
                command,
                log_path=logs / f"{index}-{Path(command[0]).name}.log",
                environment=environment,
                announce=self.announce,
            )
            controller.start()
            self._controllers.append(controller)

    async def stop(self) -> None:
        """Stop in reverse order; each part is stopped even if an earlier one fails."""
        for controller in self._controllers:
            with contextlib.suppress(Exception):
                await controller.stop()
        for part in (self._volumes, *self._workloads, self._deployments, self._replica_sets,
                     self._endpoints, self._network_policies, self._proxy, self._kubelet,
                     self._dns, self._api):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        if self._engine is not None:  # what a stop could not reach (a podman run killed)
            await asyncio.to_thread(self._engine.remove_leftovers)
        if self._plan is not None:
            delete_nft_table(self._plan.nft_table)
            delete_nft_table(netpol_table_name(self._plan.nft_table))
        if self._owns_dir:
            for path in (self.kubeconfig_path, self.instance_path):
                path.unlink(missing_ok=True)
        self._slot_lease.release()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def run_until_signalled(cluster: DevCluster) -> None:
    """Run until SIGINT or SIGTERM, then stop everything the instance started."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await cluster.start()
        cluster.announce("local control plane ready; Ctrl-C stops it")
        await stop.wait()
    finally:
        await cluster.stop()
