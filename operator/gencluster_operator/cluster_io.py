"""The operator's Kubernetes API calls, as raw JSON in and out.

Everything here is I/O and nothing else: it reads and writes the objects the pure core builds
(`desired`) and parses (`observed`), with the preconditions the core asks for (uid on pod
deletion, resourceVersion on the Lease). Objects stay plain dicts exactly as the API returns
them, because the parsers and builders speak API JSON; the `kubernetes` package is used for
what it does well (kubeconfig and in-cluster credentials, TLS, connection pooling), not for
its generated models, which rename fields and drop the ones they do not know.

The calls are synchronous (the shell runs a reconcile pass in a worker thread); `ApiError`
carries the HTTP status so that the shell can tell a conflict (plan again) from a failure.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import kubernetes.client
import kubernetes.config

from gencluster_operator import names
from gencluster_operator.observed import format_time

REQUEST_TIMEOUT_SECONDS = 10.0
"""Per request: long enough for a busy API server, short enough that a hung connection does
not stall a cluster's reconciles (the next pass retries)."""

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

NOT_FOUND = 404
CONFLICT = 409

_PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "Event": "events",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Lease": "leases",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PodMonitor": "podmonitors",
    "NetworkPolicy": "networkpolicies",
    names.KIND: names.PLURAL,
}


class ApiError(Exception):
    """A failed API call: the HTTP `status` (0 when no answer came) and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def conflict(self) -> bool:
        """409: an optimistic-concurrency precondition failed or the object exists already; the
        world moved since it was observed, so the next pass plans again."""
        return self.status == CONFLICT


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """Credentials in the order a user expects: an explicit kubeconfig, then `$KUBECONFIG`,
    then the pod's ServiceAccount (in-cluster), then `~/.kube/config`."""
    configuration = kubernetes.client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
        return configuration
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return configuration


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a namespaced object (or of its collection when `name` is None)."""
    group_version = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{group_version}/namespaces/{quote(namespace)}/{_PLURALS[kind]}"
    return f"{path}/{quote(name)}" if name else path


def cluster_path(namespace: str, name: str) -> str:
    return object_path(names.API_VERSION, names.KIND, namespace, name)


class KubernetesApi:
    """The handful of calls the operator makes, on one `kubernetes` ApiClient (thread-safe:
    its connection pool is shared by the worker threads)."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self._client = kubernetes.client.ApiClient(configuration)

    def close(self) -> None:
        self._client.close()

    # -- the raw call ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            response.read()
            return self._client.response_deserialize(response, {"2XX": "object"}).data or {}
        except kubernetes.client.ApiException as error:
            raise ApiError(error.status or 0, _message(error)) from error
        except (OSError, kubernetes.client.exceptions.OpenApiException) as error:
            raise ApiError(0, f"{method} {path}: {error}") from error

    def read(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except ApiError as error:
            if error.status == NOT_FOUND:
                return None
            raise

    # -- the ClusteredServer -------------------------------------------------------------------

    def read_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.read(cluster_path(namespace, name))

    def patch_cluster(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.request("PATCH", cluster_path(namespace, name), patch, content_type=MERGE_PATCH)

    def patch_cluster_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A merge patch of the status subresource: None values remove stale fields, and lists
        (conditions, standbys) are replaced whole."""
        return self.request(
            "PATCH", f"{cluster_path(namespace, name)}/status", {"status": status},
            content_type=MERGE_PATCH,
        )

    # -- children --------------------------------------------------------------------------

    def list_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        selector = f"{names.CLUSTER_LABEL}={cluster}"
        listing = self.request(
            "GET", object_path("v1", "Pod", namespace), query={"labelSelector": selector}
        )
        return list(listing.get("items") or [])

    def list_claims(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        """The PersistentVolumeClaims labelled with the cluster's name (spec.persistence)."""
        selector = f"{names.CLUSTER_LABEL}={cluster}"
        listing = self.request(
            "GET", object_path("v1", "PersistentVolumeClaim", namespace),
            query={"labelSelector": selector},
        )
        return list(listing.get("items") or [])

    def read_child(self, template: Mapping[str, Any]) -> dict[str, Any] | None:
        """The existing object named like `template` (same kind, namespace and name)."""
        metadata = template["metadata"]
        return self.read(
            object_path(template["apiVersion"], template["kind"], metadata["namespace"],
                        metadata["name"])
        )

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        metadata = body["metadata"]
        return self.request(
            "POST", object_path(body["apiVersion"], body["kind"], metadata["namespace"]), body
        )

    def patch(self, current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
        metadata = current["metadata"]
        path = object_path(current["apiVersion"], current["kind"], metadata["namespace"],
                           metadata["name"])
        return self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    def delete(self, current: Mapping[str, Any]) -> None:
        """Delete `current`, only if it is still that object (uid precondition)."""
        metadata = current["metadata"]
        path = object_path(current["apiVersion"], current["kind"], metadata["namespace"],
                           metadata["name"])
        try:
            self.request("DELETE", path, {"preconditions": {"uid": metadata["uid"]}})
        except ApiError as error:
            if error.status != NOT_FOUND:
                raise

    def delete_pod(self, namespace: str, name: str, options: Mapping[str, Any]) -> None:
        """Delete with `options` (the uid precondition); a pod already gone is fine."""
        try:
            self.request("DELETE", object_path("v1", "Pod", namespace, name), options)
        except ApiError as error:
            if error.status != NOT_FOUND:
                raise

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.read(object_path("coordination.k8s.io/v1", "Lease", namespace, name))

    def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """A merge patch; a `metadata.resourceVersion` in it makes the write conditional."""
        self.request(
            "PATCH", object_path("coordination.k8s.io/v1", "Lease", namespace, name), patch,
            content_type=MERGE_PATCH,
        )

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.read(object_path("v1", "Secret", namespace, name))

    # -- Events ------------------------------------------------------------------------------

    def post_event(
        self,
        resource: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type: str,
        component: str,
        now: datetime,
    ) -> None:
        """A core/v1 Event regarding the ClusteredServer (what `kubectl describe` and
        `kubectl get events --field-selector reason=...` read)."""
        metadata = resource["metadata"]
        moment = format_time(now)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
        }
        self.request("POST", object_path("v1", "Event", metadata["namespace"]), body)


def _message(error: kubernetes.client.ApiException) -> str:
    """The API server's own message (a Status body names the field or the conflict)."""
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        status = {}
    message = status.get("message") if isinstance(status, dict) else None
    return message or f"{error.status} {error.reason}"
