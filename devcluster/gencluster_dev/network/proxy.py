"""Service proxy: clusterIP:port listeners forwarding to ready pods.

For every Service with a cluster IP, listen on clusterIP:port and forward each new connection
to a ready pod chosen round-robin at accept time, so new connections follow label and
readiness changes at once. The decisions (`ready_backends`, `endpoints_backends`,
`listen_targets`) are pure functions of the cached objects. The Endpoints objects are written by
`controllers.endpoints`, from the same `service_pods` choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Callable

from gencluster_dev.client.apiclient import ApiClient, ApiError
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready, resolve_port, service_pods

log = logging.getLogger(__name__)


def ready_backends(service: dict, port: dict, pods: list[dict]) -> list[tuple[str, int]]:
    """(pod IP, target port) of every ready pod serving `port` of `service`."""
    target = port.get("targetPort", port.get("port"))
    out = []
    for pod in service_pods(service, pods):
        if not pod_is_ready(pod):
            continue
        number = resolve_port(pod, target)
        if number is not None:
            out.append((pod["status"]["podIP"], number))
    return out


def endpoints_backends(endpoints: dict | None, port: dict) -> list[tuple[str, int]]:
    """(IP, port) of the ready addresses of an Endpoints object for a Service port (used for
    Services without a selector, whose Endpoints their owner writes)."""
    out = []
    for subset in (endpoints or {}).get("subsets") or []:
        ports = subset.get("ports") or []
        match = [p for p in ports if p.get("name", "") == port.get("name", "")]
        if not match and len(ports) == 1 and not port.get("name"):
            match = ports
        for entry in match:
            out += [(a["ip"], int(entry["port"])) for a in subset.get("addresses") or []]
    return out


def listen_targets(service: dict) -> list[tuple[str, int, dict]]:
    """(clusterIP, port, port spec) the proxy listens on for a Service (TCP ports only)."""
    spec = service.get("spec") or {}
    cluster_ip = spec.get("clusterIP")
    if not cluster_ip or cluster_ip == "None":
        return []
    return [(cluster_ip, int(p["port"]), p) for p in spec.get("ports") or []
            if p.get("protocol", "TCP") == "TCP"]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, the nearest a user-space proxy gets to k8s REJECTing a connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        writer.transport.abort()


class _Listener:
    """One clusterIP:port socket, forwarding to whatever backends are ready at accept time.

    It asks `backends` on every accepted connection (rather than holding a list, or the
    proxy), so a new connection follows label and readiness changes at once.
    """

    def __init__(self, backends: Callable[[], list[tuple[str, int]]]) -> None:
        self.backends = backends
        self.server: asyncio.AbstractServer | None = None
        self.counter = itertools.count()
        self.connections: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            backends = self.backends()
            if not backends:
                _reset(writer)
                return
            host, port = backends[next(self.counter) % len(backends)]
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                _reset(writer)
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            up_writer.close()
            writer.close()
        finally:
            if task is not None:
                self.connections.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        for task in list(self.connections):
            task.cancel()


class ServiceProxy:
    """Listens on Service IPs, forwards to ready pods, publishes the Service's ingress IP."""

    def __init__(self, *, api_url: str, token: str) -> None:
        self.api = ApiClient(api_url, token)
        # start() returns after a first pass: the listeners are open by then
        self._loop = ReconcileLoop(self.api, self._reconcile, name="service proxy", log=log,
                                   reconcile_in_start=True)
        self.services = self._loop.informer("/api/v1/services")
        # pods and Endpoints are read live per connection (`backends`); no reconcile needed
        self.pods = self._loop.informer("/api/v1/pods", wakes=False)
        self.endpoints = self._loop.informer("/api/v1/endpoints", wakes=False)
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._wanted_ports: dict[tuple[str, int], tuple[tuple[str, str], str]] = {}

    async def start(self) -> None:
        """Sync the caches, open the listeners, then keep everything current."""
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        for listener in list(self._listeners.values()):
            await listener.close()
        self._listeners.clear()

    def backends(self, service_key: tuple[str, str], port_name: str) -> list[tuple[str, int]]:
        """Ready backends right now, from the live caches (so new connections follow)."""
        service = self.services.cache.get(service_key)
        if service is None:
            return []
        spec = service.get("spec") or {}
        for port in spec.get("ports") or []:
            if str(port.get("name", port.get("port"))) == port_name:
                if not spec.get("selector"):
                    return endpoints_backends(self.endpoints.cache.get(service_key), port)
                return ready_backends(service, port, list(self.pods.cache.values()))
        return []

    async def _reconcile(self) -> None:
        services = list(self.services.cache.values())
        wanted: dict[tuple[str, int], tuple[tuple[str, str], str]] = {}
        for service in services:
            key = (service["metadata"].get("namespace", "default"), service["metadata"]["name"])
            for ip, port, spec in listen_targets(service):
                wanted[(ip, port)] = (key, str(spec.get("name", spec.get("port"))))
        for address in list(self._listeners):
            if wanted.get(address) != self._wanted_ports.get(address):
                await self._listeners.pop(address).close()
        for address, (key, port_name) in wanted.items():
            if address not in self._listeners:
                await self._listen(address, key, port_name)
        self._wanted_ports = wanted
        for service in services:
            await self._publish_status(service)

    async def _listen(self, address: tuple[str, int], key: tuple[str, str],
                      port_name: str) -> None:
        listener = _Listener(lambda: self.backends(key, port_name))
        try:
            listener.server = await asyncio.start_server(listener.handle, address[0], address[1],
                                                         reuse_address=True)
        except OSError as exc:
            log.warning("service %s/%s: cannot listen on %s:%s: %s", *key, *address, exc)
            return
        self._listeners[address] = listener

    async def _publish_status(self, service: dict) -> None:
        spec, meta = service.get("spec") or {}, service["metadata"]
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None":
            return
        ingress = [{"ip": cluster_ip}]
        if ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") == ingress:
            return
        path = (f"/api/v1/namespaces/{meta.get('namespace', 'default')}/services/"
                f"{meta['name']}/status")
        try:
            await self.api.merge_patch(path, {"status": {"loadBalancer": {"ingress": ingress}}})
        except ApiError as exc:
            if exc.status != 404:
                log.warning("service status %s: %s", path, exc)
