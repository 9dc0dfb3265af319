"""The Endpoints controller: each Service with a selector gets an Endpoints object listing its
pods, the ready ones in `addresses` and the others in `notReadyAddresses`.

An ordinary API client (list+watch of Services and pods, writes of Endpoints), like
kube-controller-manager's endpoints controller; the Service proxy and any client that reads
Endpoints see the same pods, because both choose them with `machinery.pods.service_pods`. The
decisions (`desired_endpoints`, `endpoints_differ`) are pure functions of the cached objects.
"""

from __future__ import annotations

import logging
from typing import Any

from gencluster_dev.client.apiclient import ApiClient, ApiError
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready, resolve_port, service_pods

log = logging.getLogger(__name__)


def desired_endpoints(service: dict, pods: list[dict]) -> dict | None:
    """The Endpoints object for a Service with a selector (None: not managed here).

    Pods are grouped into subsets by their resolved port numbers (named target ports may
    differ per pod), ready ones in `addresses` and the others in `notReadyAddresses`.
    """
    spec = service.get("spec") or {}
    if not spec.get("selector"):
        return None
    meta = service["metadata"]
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple, dict[str, list]] = {}
    for pod in service_pods(service, pods):
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        ports = []
        for port in spec.get("ports") or []:
            number = resolve_port(pod, port.get("targetPort", port.get("port")))
            if number is None:
                continue
            entry = {"port": number, "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
        key = tuple(sorted((p.get("name", ""), p["port"], p["protocol"]) for p in ports))
        group = groups.setdefault(key, {"ports": ports, "addresses": [], "notReady": []})
        pod_meta = pod["metadata"]
        address = {"ip": ip, "targetRef": {"kind": "Pod", "namespace": pod_meta["namespace"],
                                          "name": pod_meta["name"], "uid": pod_meta["uid"]}}
        pod_spec = pod.get("spec") or {}
        if pod_spec.get("hostname") and pod_spec.get("subdomain") == meta["name"]:
            # the pod's DNS name under a headless Service (StatefulSet pods): HOST.SVC.NS.svc
            address["hostname"] = pod_spec["hostname"]
        if pod_spec.get("nodeName"):
            address["nodeName"] = pod_spec["nodeName"]
        ready = pod_is_ready(pod) or (publish_not_ready
                                      and not pod_meta.get("deletionTimestamp"))
        group["addresses" if ready else "notReady"].append(address)
    subsets = []
    for key in sorted(groups):
        group = groups[key]
        subset: dict[str, Any] = {}
        if group["addresses"]:
            subset["addresses"] = group["addresses"]
        if group["notReady"]:
            subset["notReadyAddresses"] = group["notReady"]
        if group["ports"]:
            subset["ports"] = group["ports"]
        subsets.append(subset)
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default"),
                     "labels": dict(meta.get("labels") or {})},
        "subsets": subsets,
    }


def _subsets_signature(subsets: list[dict] | None) -> list:
    """What matters in Endpoints subsets, insensitive to fields a server may default."""
    def addresses(items: list[dict] | None) -> list:
        return sorted((a.get("ip"), (a.get("targetRef") or {}).get("uid"), a.get("nodeName"),
                       a.get("hostname") or "") for a in items or [])

    return sorted(
        (addresses(s.get("addresses")), addresses(s.get("notReadyAddresses")),
         sorted((p.get("name", ""), int(p["port"]), p.get("protocol", "TCP"))
                for p in s.get("ports") or []))
        for s in subsets or []
    )


def endpoints_differ(current: dict | None, desired: dict) -> bool:
    """Whether writing `desired` would change anything (subsets and labels)."""
    if current is None:
        return True
    return _subsets_signature(current.get("subsets")) != _subsets_signature(
        desired["subsets"]
    ) or (current.get("metadata", {}).get("labels") or {}) != desired["metadata"]["labels"]


class EndpointsController:
    """Writes the Endpoints of every Service with a selector, deletes those it wrote for
    Services that are gone (never the Endpoints of selector-less Services, which their
    owners manage)."""

    def __init__(self, *, api_url: str, token: str) -> None:
        self.api = ApiClient(api_url, token)
        # start() returns after a first pass: every Service's Endpoints are written by then
        self._loop = ReconcileLoop(self.api, self._reconcile, name="endpoints controller",
                                   log=log, reconcile_in_start=True)
        self.services = self._loop.informer("/api/v1/services")
        self.pods = self._loop.informer("/api/v1/pods")
        # read at pass time only (the current Endpoints to compare with): its changes need no pass
        self.endpoints = self._loop.informer("/api/v1/endpoints", wakes=False)
        self._managed: set[tuple[str, str]] = set()

    async def start(self) -> None:
        """Sync the caches and write every Endpoints once, then keep them current."""
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile(self) -> None:
        services = list(self.services.cache.values())
        pods = list(self.pods.cache.values())
        for service in services:
            await self._write_endpoints(service, pods)
        await self._delete_orphan_endpoints(services)

    async def _write_endpoints(self, service: dict, pods: list[dict]) -> None:
        desired = desired_endpoints(service, pods)
        if desired is None:
            return
        meta = desired["metadata"]
        key = (meta["namespace"], meta["name"])
        self._managed.add(key)
        current = self.endpoints.cache.get(key)
        if not endpoints_differ(current, desired):
            return
        base = f"/api/v1/namespaces/{meta['namespace']}/endpoints"
        try:
            if current is None:
                written = await self.api.create(base, desired)
            else:
                desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                written = await self.api.replace(f"{base}/{meta['name']}", desired)
            self.endpoints.cache[key] = written
        except ApiError as exc:
            if exc.status in (404, 409):
                fresh = await self.api.get_or_none(f"{base}/{meta['name']}")
                if fresh is None:
                    self.endpoints.cache.pop(key, None)
                else:
                    self.endpoints.cache[key] = fresh
                self._loop.wake()
            elif exc.status == 403:  # the namespace is terminating: nothing to serve there
                log.info("endpoints %s/%s: %s", *key, exc)
            else:
                log.warning("endpoints %s/%s: %s", *key, exc)

    async def _delete_orphan_endpoints(self, services: list[dict]) -> None:
        """Delete the Endpoints this proxy wrote for Services that are gone (never the
        Endpoints of selector-less Services, which their owners manage)."""
        present = {(s["metadata"].get("namespace", "default"), s["metadata"]["name"])
                   for s in services}
        for key in list(self._managed - present):
            self._managed.discard(key)
            try:
                await self.api.delete(f"/api/v1/namespaces/{key[0]}/endpoints/{key[1]}")
            except ApiError as exc:
                if exc.status != 404:
                    log.warning("endpoints %s/%s delete: %s", *key, exc)
            self.endpoints.cache.pop(key, None)
