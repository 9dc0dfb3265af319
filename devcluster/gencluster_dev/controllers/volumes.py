"""The volume controller: binds PersistentVolumeClaims, provisions local-path volumes, reclaims.

What kube-controller-manager's PV controller and protection controllers plus rancher's
local-path-provisioner do, cut to one node:

- a Pending claim first takes a matching Available volume (same class, enough capacity, the
  access modes it asks for; the smallest fits best) or the one its `spec.volumeName` names;
  failing that, a class provisioned by `gencluster.dev/local-path` gets a new volume
  `pvc-<claim uid>` backed by the directory `<volumes dir>/<volume name>/` (with
  `WaitForFirstConsumer`, only once a pod uses the claim); other provisioners are waited for;
- binding is two-sided, as in Kubernetes: the volume's `claimRef` (with the claim's uid)
  first, then the claim's `spec.volumeName`, the annotations `pv.kubernetes.io/bind-completed`
  and `bound-by-controller`, and both statuses `Bound`;
- a volume whose claim is gone turns `Released`; with reclaim policy `Delete` the controller
  then removes its directory (only one it provisioned, inside the volumes directory) and the
  volume; with `Retain` both stay;
- a bound claim of a local-path class with `allowVolumeExpansion` that asks for more gets it
  (the capacity of volume and claim become the request: a directory has no size);
- `kubernetes.io/pvc-protection` leaves a deleted claim Terminating until no pod that is not
  finished uses it; `kubernetes.io/pv-protection` leaves a deleted volume until it is not Bound.

The decisions are one pure function of the cached objects, `plan_bindings`, returning actions;
`VolumeController` performs them through the API and runs again after every change, so each
step only has to be right for what it sees (idempotent under stale caches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gencluster_dev.client.apiclient import ApiClient, ApiError, object_key
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.storage import (
    BIND_COMPLETED_ANNOTATION,
    BOUND_BY_CONTROLLER_ANNOTATION,
    PROVISIONED_BY_ANNOTATION,
    PV_PROTECTION_FINALIZER,
    PVC_PROTECTION_FINALIZER,
    QuantityError,
    claim_class,
    parse_quantity,
    pod_claim_names,
    requested_storage,
    volume_class,
    volume_host_path,
)

log = logging.getLogger(__name__)

LOCAL_PATH_PROVISIONER = "gencluster.dev/local-path"
RESYNC_SECONDS = 15.0


# -- actions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provision:
    """Create the claim's volume: its directory, then the PersistentVolume object."""

    volume: dict[str, Any]
    directory: str


@dataclass(frozen=True)
class ClaimVolume:
    """First half of a bind: point an existing volume's `claimRef` at the claim."""

    volume: str
    claim_ref: dict[str, Any]


@dataclass(frozen=True)
class BindClaim:
    """Second half: the claim names the volume and both report Bound."""

    namespace: str
    name: str
    volume: str
    capacity: dict[str, Any]
    access_modes: tuple[str, ...]
    bound_by_controller: bool


@dataclass(frozen=True)
class ExpandVolume:
    """A bound local-path claim asks for more: a directory has no size to grow, so the
    volume's capacity and the claim's `status.capacity` simply become the request."""

    volume: str
    namespace: str
    name: str
    storage: str


@dataclass(frozen=True)
class SetVolumePhase:
    volume: str
    phase: str
    message: str = ""


@dataclass(frozen=True)
class SetClaimPhase:
    namespace: str
    name: str
    phase: str


@dataclass(frozen=True)
class DeleteVolume:
    """Reclaim policy Delete: remove the directory (if it is ours), then the object."""

    volume: str
    directory: str | None


@dataclass(frozen=True)
class RemoveFinalizer:
    """Drop a protection finalizer (`namespace` "" for volumes) at the cached version."""

    resource: str  # "persistentvolumeclaims" or "persistentvolumes"
    namespace: str
    name: str
    finalizer: str
    remaining: tuple[str, ...]
    resource_version: str


@dataclass(frozen=True)
class Event:
    """An Event on a claim (or on a volume when `namespace` is "")."""

    kind: str  # "PersistentVolumeClaim" or "PersistentVolume"
    namespace: str
    name: str
    uid: str
    type: str
    reason: str
    message: str
    component: str = "persistentvolume-controller"


Action = (Provision | ClaimVolume | BindClaim | ExpandVolume | SetVolumePhase | SetClaimPhase
          | DeleteVolume | RemoveFinalizer | Event)


# -- the decision --------------------------------------------------------------------------------
def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def _phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "")


def _size(value: Any) -> Any:
    try:
        return parse_quantity(value)
    except (QuantityError, TypeError):
        return None


def claim_ref(claim: Mapping[str, Any]) -> dict[str, Any]:
    meta = _meta(claim)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": meta.get("namespace", "default"), "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")}


def volume_matches(volume: Mapping[str, Any], claim: Mapping[str, Any]) -> bool:
    """Whether an unbound volume can serve a claim (findMatchingVolume, without selectors
    and node affinity): free or reserved for this claim, same class and volume mode, at
    least the requested size, every access mode asked for."""
    spec = volume.get("spec") or {}
    claim_spec = claim.get("spec") or {}
    if _deleting(volume) or _phase(volume) not in ("", "Pending", "Available"):
        return False
    ref = spec.get("claimRef")
    if ref:
        meta = _meta(claim)
        if (ref.get("namespace"), ref.get("name")) != (meta.get("namespace"), meta.get("name")):
            return False
        if ref.get("uid") and ref.get("uid") != meta.get("uid"):
            return False
    if volume_class(volume) != claim_class(claim):
        return False
    if (spec.get("volumeMode") or "Filesystem") != (claim_spec.get("volumeMode")
                                                     or "Filesystem"):
        return False
    wanted, offered = _size(requested_storage(claim)), _size((spec.get("capacity") or {}).get(
        "storage"))
    if wanted is None or offered is None or offered < wanted:
        return False
    return set(claim_spec.get("accessModes") or []) <= set(spec.get("accessModes") or [])


def pod_uses_claim(pod: Mapping[str, Any], namespace: str, name: str) -> bool:
    """A pod that still holds a claim: same namespace, names it, and is not finished (a
    terminating pod still holds it until it is gone)."""
    return (_meta(pod).get("namespace", "default") == namespace
            and _phase(pod) not in ("Succeeded", "Failed")
            and name in pod_claim_names(pod))


def provisioned_volume(claim: Mapping[str, Any], storage_class: Mapping[str, Any],
                       volumes_dir: Path) -> tuple[dict[str, Any], str]:
    """The PersistentVolume local-path makes for a claim, and its directory."""
    meta = _meta(claim)
    spec = claim.get("spec") or {}
    name = f"pvc-{meta.get('uid', '')}"
    directory = str(volumes_dir / name)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name,
                     "annotations": {PROVISIONED_BY_ANNOTATION: LOCAL_PATH_PROVISIONER}},
        "spec": {
            "capacity": {"storage": requested_storage(claim)},
            "accessModes": list(spec.get("accessModes") or []),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": claim_class(claim),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": directory, "type": "DirectoryOrCreate"},
            "claimRef": claim_ref(claim),
        },
    }
    return volume, directory


def _owned_directory(volume: Mapping[str, Any], volumes_dir: Path) -> str | None:
    """The directory to remove with a volume: only one local-path made, inside its folder."""
    if (_meta(volume).get("annotations") or {}).get(
            PROVISIONED_BY_ANNOTATION) != LOCAL_PATH_PROVISIONER:
        return None
    path = volume_host_path(volume)
    if path is None:
        return None
    resolved = Path(os.path.normpath(path))
    root = Path(os.path.normpath(volumes_dir))
    return str(resolved) if resolved.parent == root else None


def _expandable(claim: Mapping[str, Any], volume: Mapping[str, Any],
                class_by_name: Mapping[str, Mapping[str, Any]]) -> bool:
    """A bound claim of a local-path class that allows expansion asks for more than it has."""
    if _phase(claim) != "Bound" or _deleting(claim):
        return False
    if (_meta(volume).get("annotations") or {}).get(
            PROVISIONED_BY_ANNOTATION) != LOCAL_PATH_PROVISIONER:
        return False
    storage_class = class_by_name.get(claim_class(claim)) or {}
    if storage_class.get("allowVolumeExpansion") is not True:
        return False
    wanted = _size(requested_storage(claim))
    have = _size(((claim.get("status") or {}).get("capacity") or {}).get("storage"))
    offered = _size(((volume.get("spec") or {}).get("capacity") or {}).get("storage"))
    return wanted is not None and any(x is None or x < wanted for x in (have, offered))


def plan_bindings(
    claims: Iterable[Mapping[str, Any]],
    volumes: Iterable[Mapping[str, Any]],
    classes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]] = (),
    *,
    volumes_dir: Path,
) -> list[Action]:
    """Every step that brings claims and volumes closer to bound, released or gone."""
    claims = list(claims)
    volumes = list(volumes)
    pods = list(pods)
    class_by_name = {str(_meta(c).get("name")): c for c in classes}
    by_uid = {_meta(c).get("uid"): c for c in claims}
    volume_by_name = {str(_meta(v).get("name")): v for v in volumes}
    bound_to: dict[str, Mapping[str, Any]] = {}
    for volume in volumes:
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if ref.get("uid") in by_uid:
            bound_to[ref["uid"]] = volume
    actions: list[Action] = []
    taken: set[str] = set()  # volumes this pass already promised to a claim

    for claim in claims:
        meta = _meta(claim)
        namespace, name, uid = meta.get("namespace", "default"), meta.get("name", ""), meta.get(
            "uid", "")
        spec = claim.get("spec") or {}

        def event(kind: str, reason: str, message: str,
                  _ns: str = namespace, _name: str = name, _uid: str = uid) -> Event:
            return Event("PersistentVolumeClaim", _ns, _name, _uid, kind, reason, message)

        if _deleting(claim) and PVC_PROTECTION_FINALIZER in (meta.get("finalizers") or []) \
                and not any(pod_uses_claim(p, namespace, name) for p in pods):
            remaining = tuple(f for f in meta.get("finalizers") or []
                              if f != PVC_PROTECTION_FINALIZER)
            actions.append(RemoveFinalizer("persistentvolumeclaims", namespace, name,
                                           PVC_PROTECTION_FINALIZER, remaining,
                                           str(meta.get("resourceVersion", ""))))
        volume = bound_to.get(uid)
        if volume is not None:
            vspec = volume.get("spec") or {}
            vname = str(_meta(volume).get("name"))
            taken.add(vname)
            if spec.get("volumeName") != vname or _phase(claim) != "Bound":
                actions.append(BindClaim(
                    namespace, name, vname, dict(vspec.get("capacity") or {}),
                    tuple(vspec.get("accessModes") or ()),
                    bound_by_controller=not spec.get("volumeName")))
            if _phase(volume) != "Bound" and not _deleting(volume):
                actions.append(SetVolumePhase(vname, "Bound"))
            elif _expandable(claim, volume, class_by_name):
                size = str(requested_storage(claim))
                actions.append(ExpandVolume(vname, namespace, name, size))
                actions.append(Event("PersistentVolumeClaim", namespace, name, uid, "Normal",
                                     "VolumeResizeSuccessful",
                                     f'resize volume "{vname}" by resizer '
                                     f'"{LOCAL_PATH_PROVISIONER}" finished successfully',
                                     component=LOCAL_PATH_PROVISIONER))
            continue
        if _phase(claim) == "Bound":
            if spec.get("volumeName") and spec["volumeName"] not in volume_by_name:
                actions.append(SetClaimPhase(namespace, name, "Lost"))
                actions.append(event("Warning", "ClaimLost",
                                     "Bound claim has lost its PersistentVolume. Data on the "
                                     "volume is lost!"))
            continue
        if _deleting(claim) or _phase(claim) == "Lost":
            continue
        if spec.get("volumeName"):
            wanted = volume_by_name.get(spec["volumeName"])
            if wanted is not None and spec["volumeName"] not in taken and volume_matches(
                    wanted, claim):
                taken.add(spec["volumeName"])
                actions.append(ClaimVolume(spec["volumeName"], claim_ref(claim)))
            else:
                actions.append(event("Warning", "FailedBinding",
                                     f'volume "{spec["volumeName"]}" is not available'))
            continue
        candidates = [v for v in volumes
                      if str(_meta(v).get("name")) not in taken and volume_matches(v, claim)]
        if candidates:
            best = min(candidates, key=lambda v: (
                _size((v.get("spec") or {}).get("capacity", {}).get("storage")),
                str(_meta(v).get("name"))))
            taken.add(str(_meta(best).get("name")))
            actions.append(ClaimVolume(str(_meta(best).get("name")), claim_ref(claim)))
            continue
        class_name = claim_class(claim)
        if not class_name:
            actions.append(event("Normal", "FailedBinding",
                                 "no persistent volumes available for this claim and no "
                                 "storage class is set"))
            continue
        storage_class = class_by_name.get(class_name)
        if storage_class is None:
            actions.append(event("Warning", "ProvisioningFailed",
                                 f'storageclass.storage.k8s.io "{class_name}" not found'))
            continue
        provisioner = str(storage_class.get("provisioner") or "")
        if provisioner != LOCAL_PATH_PROVISIONER:
            actions.append(event(
                "Normal", "ExternalProvisioning",
                "Waiting for a volume to be created either by the external provisioner "
                f"'{provisioner}' or manually by the system administrator. If volume creation "
                "is delayed, please verify that the provisioner is running and correctly "
                "registered."))
            continue
        if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer" and not any(
                pod_uses_claim(p, namespace, name) for p in pods):
            actions.append(event("Normal", "WaitForFirstConsumer",
                                 "waiting for first consumer to be created before binding"))
            continue
        new_volume, directory = provisioned_volume(claim, storage_class, volumes_dir)
        actions.append(Provision(new_volume, directory))
        actions.append(Event("PersistentVolumeClaim", namespace, name, uid, "Normal",
                             "ProvisioningSucceeded",
                             f"Successfully provisioned volume {new_volume['metadata']['name']}",
                             component=LOCAL_PATH_PROVISIONER))

    for volume in volumes:
        meta = _meta(volume)
        vname = str(meta.get("name"))
        ref = (volume.get("spec") or {}).get("claimRef")
        claim_there = bool(ref) and ref.get("uid") in by_uid
        if _deleting(volume):
            if PV_PROTECTION_FINALIZER in (meta.get("finalizers") or []) and not claim_there:
                remaining = tuple(f for f in meta.get("finalizers") or []
                                  if f != PV_PROTECTION_FINALIZER)
                actions.append(RemoveFinalizer("persistentvolumes", "", vname,
                                               PV_PROTECTION_FINALIZER, remaining,
                                               str(meta.get("resourceVersion", ""))))
            continue
        if not ref:
            if _phase(volume) != "Available" and vname not in taken:
                actions.append(SetVolumePhase(vname, "Available"))
            continue
        if not ref.get("uid") or claim_there:
            continue  # reserved for a claim by name, or bound (handled with the claim)
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if _phase(volume) != "Released":
            actions.append(SetVolumePhase(vname, "Released"))
        elif policy == "Delete":
            actions.append(DeleteVolume(vname, _owned_directory(volume, volumes_dir)))
    return actions


# -- the shell -----------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class VolumeController:
    """Watches claims, volumes, classes and pods; performs `plan_bindings` through the API."""

    def __init__(self, *, api_url: str, token: str, volumes_dir: Path,
                 resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self.volumes_dir = Path(volumes_dir)
        self._loop = ReconcileLoop(self.api, self._reconcile, name="volume controller", log=log,
                                   resync_seconds=resync_seconds)
        self.claims = self._loop.informer("/api/v1/persistentvolumeclaims")
        self.volumes = self._loop.informer("/api/v1/persistentvolumes")
        self.classes = self._loop.informer("/apis/storage.k8s.io/v1/storageclasses")
        self.pods = self._loop.informer("/api/v1/pods")
        self._events_sent: set[tuple[str, str, str]] = set()

    async def start(self) -> None:
        """Sync every cache, then reconcile on every change (and every resync period)."""
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile(self) -> None:
        """Perform the plan's actions in order; the first that fails ends the pass (the rest
        were planned from the same, now doubtful, caches) and asks for another."""
        actions = plan_bindings(
            list(self.claims.cache.values()), list(self.volumes.cache.values()),
            list(self.classes.cache.values()), list(self.pods.cache.values()),
            volumes_dir=self.volumes_dir)
        for action in actions:
            try:
                await self._perform(action)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    log.warning("volume controller: %s: %s", action, exc)
                # Look again once the informers have caught up (a stale cache is the
                # usual cause); the pause keeps a persistent refusal from spinning.
                self._loop.wake()
                await asyncio.sleep(0.2)
                return
            except Exception as exc:
                # the loop logs it and retries after its error delay
                exc.add_note(f"volume controller: {action}")
                raise

    async def _perform(self, action: Action) -> None:
        api = self.api
        if isinstance(action, Provision):
            directory = Path(action.directory)
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
            # World-writable, like local-path's directories: pods of any uid may create in it
            # (the kubelet also hands its contents to the pod that mounts it).
            await asyncio.to_thread(os.chmod, directory, 0o777)
            try:
                created = await api.create("/api/v1/persistentvolumes", action.volume)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                return
            self.volumes.cache[object_key(created)] = created
        elif isinstance(action, ClaimVolume):
            await api.merge_patch(f"/api/v1/persistentvolumes/{action.volume}", {
                "metadata": {"annotations": {BOUND_BY_CONTROLLER_ANNOTATION: "yes"}},
                "spec": {"claimRef": action.claim_ref}})
        elif isinstance(action, BindClaim):
            path = f"/api/v1/namespaces/{action.namespace}/persistentvolumeclaims/{action.name}"
            annotations = {BIND_COMPLETED_ANNOTATION: "yes"}
            if action.bound_by_controller:
                annotations[BOUND_BY_CONTROLLER_ANNOTATION] = "yes"
            claim = await api.merge_patch(path, {"metadata": {"annotations": annotations},
                                                 "spec": {"volumeName": action.volume}})
            claim = await api.merge_patch(f"{path}/status", {"status": {
                "phase": "Bound", "capacity": action.capacity,
                "accessModes": list(action.access_modes)}})
            self.claims.cache[object_key(claim)] = claim
        elif isinstance(action, ExpandVolume):
            volume = await api.merge_patch(f"/api/v1/persistentvolumes/{action.volume}",
                                           {"spec": {"capacity": {"storage": action.storage}}})
            self.volumes.cache[object_key(volume)] = volume
            claim = await api.merge_patch(
                f"/api/v1/namespaces/{action.namespace}/persistentvolumeclaims/{action.name}"
                "/status", {"status": {"capacity": {"storage": action.storage}}})
            self.claims.cache[object_key(claim)] = claim
        elif isinstance(action, SetVolumePhase):
            status: dict[str, Any] = {"phase": action.phase, "lastPhaseTransitionTime": _now()}
            if action.message:
                status["message"] = action.message
            volume = await api.merge_patch(f"/api/v1/persistentvolumes/{action.volume}/status",
                                           {"status": status})
            self.volumes.cache[object_key(volume)] = volume
        elif isinstance(action, SetClaimPhase):
            claim = await api.merge_patch(
                f"/api/v1/namespaces/{action.namespace}/persistentvolumeclaims/{action.name}"
                "/status", {"status": {"phase": action.phase}})
            self.claims.cache[object_key(claim)] = claim
        elif isinstance(action, DeleteVolume):
            if action.directory is not None:
                await asyncio.to_thread(shutil.rmtree, action.directory, True)
            reply = await api.delete(f"/api/v1/persistentvolumes/{action.volume}")
            if isinstance(reply, dict) and reply.get("kind") == "PersistentVolume":
                self.volumes.cache[object_key(reply)] = reply
        elif isinstance(action, RemoveFinalizer):
            base = ("/api/v1/persistentvolumes" if not action.namespace else
                    f"/api/v1/namespaces/{action.namespace}/persistentvolumeclaims")
            await api.merge_patch(f"{base}/{action.name}", {"metadata": {
                "finalizers": list(action.remaining),
                "resourceVersion": action.resource_version}})
        elif isinstance(action, Event):
            await self._event(action)

    async def _event(self, event: Event) -> None:
        """Record an Event once per (object, reason, message): a claim waiting for its
        provisioner must not add one every pass."""
        key = (event.uid, event.reason, event.message)
        if key in self._events_sent:
            return
        self._events_sent.add(key)
        namespace = event.namespace or "default"
        now = _now()
        with contextlib.suppress(Exception):
            await self.api.create(f"/api/v1/namespaces/{namespace}/events", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{event.name}.{uuid.uuid4().hex[:16]}",
                             "namespace": namespace},
                "involvedObject": {"apiVersion": "v1", "kind": event.kind,
                                   "namespace": event.namespace, "name": event.name,
                                   "uid": event.uid},
                "reason": event.reason, "message": event.message, "type": event.type,
                "source": {"component": event.component}, "firstTimestamp": now,
                "lastTimestamp": now, "count": 1, "reportingComponent": event.component,
                "reportingInstance": "",
            })


__all__ = [
    "LOCAL_PATH_PROVISIONER", "Action", "BindClaim", "ClaimVolume", "DeleteVolume", "Event",
    "ExpandVolume", "Provision", "RemoveFinalizer", "SetClaimPhase", "SetVolumePhase",
    "VolumeController", "plan_bindings", "provisioned_volume", "volume_matches",
]
