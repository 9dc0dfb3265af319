"""What every component reads the same way off PersistentVolumeClaims, PersistentVolumes and
StorageClasses: names of annotations and finalizers, the default class, storage quantities,
access-mode abbreviations, a claim's class, a volume's host directory.

The API server (defaulting, validation, Tables), the volume controller and the kubelet all
import these, so a claim means one thing to all of them (like `pods` does for Pods).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
PVC_PROTECTION_FINALIZER = "kubernetes.io/pvc-protection"
PV_PROTECTION_FINALIZER = "kubernetes.io/pv-protection"
BIND_COMPLETED_ANNOTATION = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER_ANNOTATION = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY_ANNOTATION = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER_ANNOTATION = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER_ANNOTATION = "volume.beta.kubernetes.io/storage-provisioner"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
_ABBREVIATIONS = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                  "ReadWriteOncePod": "RWOP"}
RECLAIM_POLICIES = ("Retain", "Delete", "Recycle")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
VOLUME_MODES = ("Filesystem", "Block")

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|"
                       r"[eE][+-]?\d+)?$")
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}


class QuantityError(ValueError):
    """Not a Kubernetes resource quantity ("1Gi", "500M", "1e3")."""


def parse_quantity(value: Any) -> Decimal:
    """A resource quantity as an exact number (bytes for storage), so sizes compare right."""
    if isinstance(value, bool):
        raise QuantityError(f"quantities must match the regular expression: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise QuantityError(
            f"quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, ValueError) as error:
        raise QuantityError(str(error)) from None


def access_modes_text(modes: Any) -> str:
    """GetAccessModesAsString: "RWO,ROX,RWX,RWOP" in that fixed order, duplicates dropped."""
    present = set(modes) if isinstance(modes, list) else set()
    return ",".join(_ABBREVIATIONS[m] for m in ACCESS_MODES if m in present)


def claim_class(claim: Mapping[str, Any]) -> str:
    """The class a claim asks for: the beta annotation wins over `spec.storageClassName`
    (GetPersistentVolumeClaimClass); "" means no class."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    if BETA_CLASS_ANNOTATION in annotations:
        return str(annotations[BETA_CLASS_ANNOTATION])
    return str((claim.get("spec") or {}).get("storageClassName") or "")


def volume_class(volume: Mapping[str, Any]) -> str:
    """GetPersistentVolumeClass: the beta annotation, else `spec.storageClassName`."""
    return claim_class(volume)


def is_default_class(storage_class: Mapping[str, Any]) -> bool:
    annotations = (storage_class.get("metadata") or {}).get("annotations") or {}
    return (annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"
            or annotations.get(BETA_DEFAULT_CLASS_ANNOTATION) == "true")


def default_class_name(classes: Iterable[Mapping[str, Any]]) -> str | None:
    """The class the DefaultStorageClass admission plugin gives a claim that names none: of
    the classes marked default, the newest (then the first by name), as since Kubernetes 1.28."""
    marked = [c for c in classes if is_default_class(c) and not (c.get("metadata") or {}).get(
        "deletionTimestamp")]
    if not marked:
        return None
    marked.sort(key=lambda c: (c["metadata"].get("creationTimestamp") or "",
                               _reverse(c["metadata"]["name"])), reverse=True)
    return str(marked[0]["metadata"]["name"])


def _reverse(name: str) -> tuple[int, ...]:
    """A sort key that orders names descending, so `reverse=True` yields them ascending."""
    return tuple(-ord(ch) for ch in name)


def requested_storage(claim: Mapping[str, Any]) -> Any:
    return (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
        "storage")


def volume_host_path(volume: Mapping[str, Any]) -> str | None:
    """The host directory behind a PersistentVolume (`hostPath` or `local`), or None for a
    source this node cannot mount."""
    spec = volume.get("spec") or {}
    for source in ("hostPath", "local"):
        path = (spec.get(source) or {}).get("path")
        if isinstance(path, str) and path:
            return path
    return None


def pod_claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The claims a pod's volumes name (`persistentVolumeClaim.claimName`), in order."""
    names: list[str] = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if not isinstance(volume, Mapping):
            continue
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if isinstance(claim, str) and claim and claim not in names:
            names.append(claim)
    return names


def resize_refusal(old: Mapping[str, Any], new: Mapping[str, Any],
                   classes: Iterable[Mapping[str, Any]]) -> str | None:
    """Why the PersistentVolumeClaimResize admission plugin refuses a claim update (403), or
    None: growing a request needs a bound claim whose class sets `allowVolumeExpansion`."""
    try:
        grows = parse_quantity(requested_storage(new)) > parse_quantity(requested_storage(old))
    except (QuantityError, TypeError):
        return None  # validation reports malformed sizes
    if not grows:
        return None
    if (old.get("status") or {}).get("phase") != "Bound":
        return "Only bound persistent volume claims can be expanded"
    name = claim_class(old)
    storage_class = next((c for c in classes if (c.get("metadata") or {}).get("name") == name),
                         None) if name else None
    if storage_class is None or storage_class.get("allowVolumeExpansion") is not True:
        return ("only dynamically provisioned pvc can be resized and the storageclass that "
                "provisions the pvc must support resize")
    return None
