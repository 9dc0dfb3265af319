"""The runtime's Kubernetes I/O: its Lease, its own pod's role label, and its peers' pods.

Configuration (server, credentials, CA) is loaded by the `kubernetes` Python client, from
`KUBECONFIG` when set and from the in-cluster ServiceAccount otherwise; requests are sent with
aiohttp on the runtime's event loop, so that every call has its own short timeout (shorter
than the renew deadline: an active cut off from the API server must learn it in time to fence
itself) and no thread pool can fill up with calls hanging on a dead connection.

What the pod may do is exactly what docs/runtime-config.md grants: get and update its one
Lease (never create it: the operator does), list the cluster's pods, patch its own pod's
labels. Lease updates carry the resourceVersion that was read: a 409 Conflict means someone
else wrote first, and the caller reads again and decides again (`election.decide`).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client as kubernetes_client
from kubernetes import config as kubernetes_config

from gencluster.election import LeaseRecord, lease_patch, record_from_lease
from gencluster.wellknown import ROLE_LABEL


class KubernetesError(Exception):
    """A Kubernetes API call that failed (status 0 when no HTTP answer came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LeaseConflict(KubernetesError):
    """409: the Lease changed since it was read; read it again and decide again."""


class LeaseMissing(KubernetesError):
    """404: the Lease does not exist (yet); the operator creates it before the pods."""


@dataclass(frozen=True, slots=True)
class PeerPod:
    """A pod of the cluster as peer discovery sees it."""

    name: str
    ip: str
    role: str
    deleting: bool


def load_configuration(kubeconfig: str | None) -> kubernetes_client.Configuration:
    """The API server, credentials and CA: `kubeconfig` when given, else in-cluster."""
    configuration = kubernetes_client.Configuration()
    if kubeconfig:
        kubernetes_config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        kubernetes_config.load_incluster_config(client_configuration=configuration)
    return configuration


class KubernetesApi:
    """The few API calls a runtime makes, each bounded by `request_timeout` seconds."""

    def __init__(
        self,
        configuration: kubernetes_client.Configuration,
        *,
        namespace: str,
        request_timeout: float,
    ) -> None:
        self._configuration = configuration
        self.namespace = namespace
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        configuration = self._configuration
        if not configuration.host.startswith("https"):
            return False
        if not configuration.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if configuration.cert_file and configuration.key_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return context

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=8)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _headers(self, content_type: str = "application/json") -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # auth_settings() runs the refresh hook: in-cluster tokens rotate.
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = bearer["value"]
        return headers

    async def _request(
        self, method: str, path: str, *, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        session = await self._client()
        url = self._configuration.host.rstrip("/") + path
        data = None if body is None else json.dumps(body)
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers=self._headers(content_type),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    error_class = {409: LeaseConflict, 404: LeaseMissing}.get(
                        response.status, KubernetesError
                    )
                    raise error_class(
                        response.status, f"{method} {path}: {response.status} {text[:300]}"
                    )
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise KubernetesError(
                0, f"{method} {path}: {type(error).__name__}: {error or 'timed out'}"
            ) from error

    def _lease_path(self, name: str) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{name}"

    async def get_lease(self, name: str) -> tuple[LeaseRecord, dict[str, Any]]:
        """The Lease as a record (with its resourceVersion) and as the raw object."""
        lease = await self._request("GET", self._lease_path(name))
        return record_from_lease(lease), lease

    async def update_lease(
        self, name: str, current: dict[str, Any], record: LeaseRecord
    ) -> tuple[LeaseRecord, dict[str, Any]]:
        """Replace the Lease with `record` merged into `current` (the object last read).

        The body carries `record.resource_version`: the API server answers 409 (raised as
        `LeaseConflict`) when anyone wrote since. Annotations other than gencluster's are kept.
        """
        patch = lease_patch(record)
        body = json.loads(json.dumps(current))
        metadata = body.setdefault("metadata", {})
        metadata["resourceVersion"] = record.resource_version
        annotations = dict(metadata.get("annotations") or {})
        annotations.update(patch["metadata"].get("annotations", {}))
        metadata["annotations"] = annotations
        body["spec"] = {key: value for key, value in patch["spec"].items() if value is not None}
        lease = await self._request("PUT", self._lease_path(name), body=body)
        return record_from_lease(lease), lease

    async def set_role_label(self, pod: str, role: str) -> None:
        """Merge-patch `gencluster.io/role=<role>` onto `pod` (the runtime's own pod)."""
        await self._request(
            "PATCH",
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
            body={"metadata": {"labels": {ROLE_LABEL: role}}},
            content_type="application/merge-patch+json",
        )

    async def list_pods(self, label_selector: str) -> list[PeerPod]:
        """The cluster's pods (peer discovery): name, IP, role label, being deleted."""
        listing = await self._request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={quote(label_selector)}",
        )
        pods = []
        for item in listing.get("items") or []:
            metadata = item.get("metadata") or {}
            pods.append(
                PeerPod(
                    name=metadata.get("name", ""),
                    ip=(item.get("status") or {}).get("podIP") or "",
                    role=(metadata.get("labels") or {}).get(ROLE_LABEL, ""),
                    deleting=bool(metadata.get("deletionTimestamp")),
                )
            )
        return pods

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

