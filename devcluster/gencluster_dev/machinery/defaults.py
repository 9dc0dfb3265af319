"""Defaults of built-in kinds, as kube-apiserver fills them in on create.

Pure functions over the decoded object (and, for Services, the addresses in use): what
`kubectl describe`, the kubelet and the proxy expect to find even when a manifest left it out.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from gencluster_dev.machinery.errors import ApiError, invalid
from gencluster_dev.machinery.storage import (
    BETA_CLASS_ANNOTATION,
    PV_PROTECTION_FINALIZER,
    PVC_PROTECTION_FINALIZER,
)


def fold_string_data(obj: dict[str, Any]) -> None:
    """Secret `stringData` is write-only: merged into `data`, base64-encoded."""
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def default_pod(obj: dict[str, Any]) -> None:
    """The defaults kube-apiserver gives a Pod (kubectl describe and the kubelet read them)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("tolerations", [])
    for group in ("containers", "initContainers"):
        for container in spec.get(group) or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image", ""))
            tagless = ":" not in image.rsplit("/", 1)[-1]
            container.setdefault(
                "imagePullPolicy",
                "Always" if tagless or image.endswith(":latest") else "IfNotPresent",
            )
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def used_cluster_ips(services: Iterable[Mapping[str, Any]]) -> set[str]:
    used: set[str] = set()
    for svc in services:
        for ip in (svc.get("spec") or {}).get("clusterIPs") or []:
            used.add(ip)
        ip = (svc.get("spec") or {}).get("clusterIP")
        if ip:
            used.add(ip)
    return used


def default_service(
    obj: dict[str, Any], network: ipaddress.IPv4Network | ipaddress.IPv6Network, used: set[str]
) -> None:
    """Service defaults and its cluster IP: the one asked for (422 if outside the network or
    taken), none for headless (`None`), else the lowest free address."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    requested = spec.get("clusterIP") or ((spec.get("clusterIPs") or [None])[0])
    name = obj["metadata"]["name"]
    obj["status"] = {"loadBalancer": {}}  # kube-apiserver's answer always carries it
    if requested == "None":
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
        return
    if requested:
        try:
            address = ipaddress.ip_address(requested)
        except ValueError:
            address = None
        if address is None or address not in network:
            raise invalid("Service", "", name, [(
                "FieldValueInvalid", "spec.clusterIPs",
                f'Invalid value: []string{{"{requested}"}}: failed to allocate IP '
                f"{requested}: the provided IP ({requested}) is not in the valid range. "
                f"The range of valid IPs is {network}")])
        if requested in used:
            raise invalid("Service", "", name, [(
                "FieldValueInvalid", "spec.clusterIPs",
                f'Invalid value: []string{{"{requested}"}}: failed to allocate IP '
                f"{requested}: provided IP is already allocated")])
        ip = requested
    else:
        ip = next(
            (str(a) for a in network.hosts() if str(a) not in used), None
        )
        if ip is None:
            raise ApiError(500, "InternalError",
                           "Internal error occurred: failed to allocate a serviceIP: range is "
                           "full")
    spec["clusterIP"] = ip
    spec["clusterIPs"] = [ip]


def default_claim_spec(obj: dict[str, Any]) -> None:
    """PersistentVolumeClaim spec defaults, on create and on update (kube-apiserver defaults
    at decode, so a PUT that leaves `volumeMode` out does not count as changing it)."""
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")


def default_claim(obj: dict[str, Any], default_class: str | None) -> None:
    """A new claim: spec defaults, the DefaultStorageClass admission plugin (a claim that
    names no class, neither `spec.storageClassName` nor the beta annotation, gets the default
    class; an explicit "" means "no class" and stays), the `kubernetes.io/pvc-protection`
    finalizer (StorageObjectInUseProtection) and phase Pending."""
    default_claim_spec(obj)
    spec = obj["spec"]
    annotations = obj["metadata"].get("annotations") or {}
    if (default_class and spec.get("storageClassName") is None
            and BETA_CLASS_ANNOTATION not in annotations):
        spec["storageClassName"] = default_class
    _add_finalizer(obj, PVC_PROTECTION_FINALIZER)
    obj["status"] = {"phase": "Pending"}


def default_volume_spec(obj: dict[str, Any]) -> None:
    """PersistentVolume spec defaults: reclaim policy Retain (what a manually created volume
    gets; provisioners copy their class's policy in) and volumeMode Filesystem."""
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")


def default_volume(obj: dict[str, Any], now: str) -> None:
    """A new PersistentVolume: spec defaults, the `kubernetes.io/pv-protection` finalizer and
    phase Pending (the volume controller makes it Available or Bound)."""
    default_volume_spec(obj)
    _add_finalizer(obj, PV_PROTECTION_FINALIZER)
    obj["status"] = {"phase": "Pending", "lastPhaseTransitionTime": now}


def default_storage_class(obj: dict[str, Any]) -> None:
    """StorageClass defaults: reclaimPolicy Delete, volumeBindingMode Immediate."""
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _add_finalizer(obj: dict[str, Any], finalizer: str) -> None:
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if finalizer not in finalizers:
        finalizers.append(finalizer)


KUBERNETES_SERVICE = "kubernetes"


def kubernetes_service(port: int) -> dict[str, Any]:
    """`default/kubernetes`, the Service every cluster has for its API server (selector-less:
    its Endpoints name the API server's address); it gets the first Service IP when created
    first, as kube-apiserver's bootstrap controller does."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": port}]},
    }


def kubernetes_endpoints(host: str, port: int) -> dict[str, Any]:
    """The Endpoints of `default/kubernetes`: the API server's own address and port."""
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": KUBERNETES_SERVICE, "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }
