"""The pure parts of volumes: quantities and classes, defaulting and admission (through
`Operations`, no HTTP), validation, printer columns, the kubelet's claim resolution and the
volume controller's `plan_bindings`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from gencluster_dev.apiserver.auth import Authenticator
from gencluster_dev.apiserver.operations import DeleteOptions, Operations
from gencluster_dev.controllers.volumes import (
    LOCAL_PATH_PROVISIONER,
    BindClaim,
    ClaimVolume,
    DeleteVolume,
    Event,
    ExpandVolume,
    Provision,
    RemoveFinalizer,
    SetClaimPhase,
    SetVolumePhase,
    plan_bindings,
)
from gencluster_dev.machinery.defaults import default_claim, default_storage_class, default_volume
from gencluster_dev.machinery.errors import ApiError
from gencluster_dev.machinery.resources import (
    CLAIMS_KEY,
    STORAGE_CLASSES_KEY,
    VOLUMES_KEY,
    Registry,
)
from gencluster_dev.machinery.storage import (
    QuantityError,
    access_modes_text,
    default_class_name,
    parse_quantity,
    resize_refusal,
)
from gencluster_dev.machinery.store import Store
from gencluster_dev.machinery.tables import table_for
from gencluster_dev.machinery.validation import (
    claim_causes,
    claim_update_causes,
    storage_class_causes,
    volume_causes,
)
from gencluster_dev.node.podspec import ContainerConfigError, claim_host_path, mount_env

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
VOLUMES_DIR = Path("/dev-dir/volumes")


def _claim(name: str = "data", *, uid: str | None = None, size: str = "1Gi",
           cls: str | None = "standard", phase: str = "Pending", volume: str = "",
           modes: tuple[str, ...] = ("ReadWriteOnce",), deleting: bool = False,
           finalizers: tuple[str, ...] = ("kubernetes.io/pvc-protection",)) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}",
                     "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "finalizers": list(finalizers)},
        "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": size}},
                 "volumeMode": "Filesystem"},
        "status": {"phase": phase},
    }
    if cls is not None:
        claim["spec"]["storageClassName"] = cls
    if volume:
        claim["spec"]["volumeName"] = volume
    if deleting:
        claim["metadata"]["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    return claim


def _volume(name: str, *, size: str = "1Gi", cls: str = "standard", phase: str = "Available",
            claim: dict[str, Any] | None = None, policy: str = "Delete",
            modes: tuple[str, ...] = ("ReadWriteOnce",), path: str | None = None,
            provisioned: bool = False, deleting: bool = False) -> dict[str, Any]:
    volume: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "resourceVersion": "9", "annotations": {},
                     "finalizers": ["kubernetes.io/pv-protection"],
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"capacity": {"storage": size}, "accessModes": list(modes),
                 "persistentVolumeReclaimPolicy": policy, "storageClassName": cls,
                 "volumeMode": "Filesystem",
                 "hostPath": {"path": path or str(VOLUMES_DIR / name)}},
        "status": {"phase": phase},
    }
    if provisioned:
        volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] = \
            LOCAL_PATH_PROVISIONER
    if claim is not None:
        volume["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": "default",
                                      "name": claim["metadata"]["name"],
                                      "uid": claim["metadata"]["uid"]}
    if deleting:
        volume["metadata"]["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    return volume


def _class(name: str = "standard", *, provisioner: str = LOCAL_PATH_PROVISIONER,
           policy: str = "Delete", mode: str = "Immediate", default: bool = False,
           created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    sc: dict[str, Any] = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                          "metadata": {"name": name, "creationTimestamp": created},
                          "provisioner": provisioner, "reclaimPolicy": policy,
                          "volumeBindingMode": mode}
    if default:
        sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return sc


def _pod(claim: str, *, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": f"uses-{claim}", "namespace": "default"},
            "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}}


def _plan(claims: list, volumes: list, classes: list | None = None,
          pods: list | None = None) -> list:
    return plan_bindings(claims, volumes, classes if classes is not None else [_class()],
                         pods or [], volumes_dir=VOLUMES_DIR)


# -- quantities, classes -------------------------------------------------------------------------
def test_quantities_compare_across_suffixes() -> None:
    assert parse_quantity("1Gi") == Decimal(2**30)
    assert parse_quantity("1024Mi") == parse_quantity("1Gi")
    assert parse_quantity("1G") < parse_quantity("1Gi")
    assert parse_quantity("1e3") == Decimal(1000)
    assert parse_quantity("500m") == Decimal("0.5")
    with pytest.raises(QuantityError):
        parse_quantity("lots")


def test_access_modes_are_abbreviated_in_a_fixed_order() -> None:
    assert access_modes_text(["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"]) == "RWO,RWX"
    assert access_modes_text(["ReadWriteOncePod", "ReadOnlyMany"]) == "ROX,RWOP"
    assert access_modes_text(None) == ""


def test_the_newest_class_marked_default_is_the_default() -> None:
    assert default_class_name([_class("plain")]) is None
    classes = [_class("old", default=True, created="2026-01-01T00:00:00Z"),
               _class("new", default=True, created="2026-01-02T00:00:00Z"), _class("plain")]
    assert default_class_name(classes) == "new"
    beta = _class("beta")
    beta["metadata"]["annotations"] = {"storageclass.beta.kubernetes.io/is-default-class":
                                       "true"}
    assert default_class_name([beta]) == "beta"


# -- defaulting and admission --------------------------------------------------------------------
def test_claim_defaults_name_the_default_class_unless_a_class_was_chosen() -> None:
    claim: dict[str, Any] = {"metadata": {"name": "c"}, "spec": {}}
    default_claim(claim, "standard")
    assert claim["spec"] == {"volumeMode": "Filesystem", "storageClassName": "standard"}
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert claim["status"] == {"phase": "Pending"}
    explicit_none: dict[str, Any] = {"metadata": {"name": "c"}, "spec": {"storageClassName": ""}}
    default_claim(explicit_none, "standard")
    assert explicit_none["spec"]["storageClassName"] == ""
    beta: dict[str, Any] = {"metadata": {"name": "c", "annotations": {
        "volume.beta.kubernetes.io/storage-class": "fast"}}, "spec": {}}
    default_claim(beta, "standard")
    assert "storageClassName" not in beta["spec"]
    no_default: dict[str, Any] = {"metadata": {"name": "c"}, "spec": {}}
    default_claim(no_default, None)
    assert "storageClassName" not in no_default["spec"]


def test_volume_and_class_defaults() -> None:
    volume: dict[str, Any] = {"metadata": {"name": "v"}, "spec": {}}
    default_volume(volume, "2026-01-01T00:00:00Z")
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["volumeMode"] == "Filesystem"
    assert volume["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    assert volume["status"]["phase"] == "Pending"
    sc: dict[str, Any] = {"provisioner": "x"}
    default_storage_class(sc)
    assert sc["reclaimPolicy"] == "Delete" and sc["volumeBindingMode"] == "Immediate"


def _operations() -> Operations:
    ops = Operations(Store(), Registry(), Authenticator("admin"), service_network="10.0.0.0/24",
                     clock=lambda: NOW)
    ops.bootstrap()
    return ops


def test_admission_defaults_the_class_and_adds_protection_finalizers() -> None:
    ops = _operations()
    registry = ops.registry
    classes, claims, volumes = (registry.for_key(k) for k in (
        STORAGE_CLASSES_KEY, CLAIMS_KEY, VOLUMES_KEY))
    assert classes is not None and claims is not None and volumes is not None
    created = ops.create(classes, "", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER})
    assert created["reclaimPolicy"] == "Delete"
    claim = ops.create(claims, "default", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {
            "storage": "1Gi"}}},
        "status": {"phase": "Bound"}})
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["status"] == {"phase": "Pending"}
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    volume = ops.create(volumes, "", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": "/tmp/v"}}})
    assert volume["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"

    # A PUT that leaves the defaulted volumeMode out is not a change of the spec.
    body = ops.get(claims, "default", "c")
    del body["spec"]["volumeMode"]
    body["spec"]["volumeName"] = "v"
    assert ops.update(claims, "default", "c", body)["spec"]["volumeMode"] == "Filesystem"
    with pytest.raises(ApiError) as refused:
        ops.patch(claims, "default", "c", "application/merge-patch+json",
                  {"spec": {"accessModes": ["ReadWriteMany"]}})
    assert refused.value.code == 422
    assert "spec.accessModes" in refused.value.message

    # Deleting leaves the claim Terminating while its finalizer is there.
    outcome = ops.delete(claims, "default", "c", DeleteOptions())
    assert not outcome.deleted
    assert outcome.object["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as invalid_class:
        ops.patch(classes, "", "standard", "application/merge-patch+json",
                  {"provisioner": "other"})
    assert invalid_class.value.code == 422


# -- validation ----------------------------------------------------------------------------------
def _fields(causes: list) -> list[str]:
    return [field for _, field, _ in causes]


def test_claim_needs_access_modes_and_a_positive_size() -> None:
    assert claim_causes(_claim()) == []
    empty = _claim()
    empty["spec"] = {}
    assert _fields(claim_causes(empty)) == ["spec.accessModes", "spec.resources[storage]"]
    assert _fields(claim_causes(_claim(size="0"))) == ["spec.resources[storage]"]
    assert _fields(claim_causes(_claim(modes=("WriteSometimes",)))) == ["spec.accessModes"]


def test_claim_spec_is_immutable_but_binding_and_growth_are_allowed() -> None:
    pending = _claim()
    bind = _claim(volume="pv-1")
    assert claim_update_causes(pending, bind) == []  # volumeName set once, by the binder
    bound = _claim(volume="pv-1", phase="Bound")
    for change, field in ((_claim(volume="pv-2", phase="Bound"), "spec.volumeName"),
                          (_claim(volume="pv-1", phase="Bound", cls="fast"),
                           "spec.storageClassName"),
                          (_claim(volume="pv-1", phase="Bound", modes=("ReadWriteMany",)),
                           "spec.accessModes")):
        causes = claim_update_causes(bound, change)
        assert _fields(causes) == ["spec"]
        assert field in causes[0][2]
    assert claim_update_causes(bound, _claim(volume="pv-1", phase="Bound", size="2Gi")) == []
    assert _fields(claim_update_causes(pending, _claim(size="2Gi"))) == ["spec"]
    assert _fields(claim_update_causes(bound, _claim(volume="pv-1", phase="Bound",
                                                     size="512Mi"))) == [
        "spec.resources.requests.storage"]
    unset = _claim(cls=None)
    assert claim_update_causes(unset, _claim(cls="standard")) == []  # retroactive default


def test_volume_and_class_validation() -> None:
    assert volume_causes(_volume("v")) == []
    bare = _volume("v")
    bare["spec"] = {"accessModes": ["ReadWriteOnce"]}
    assert _fields(volume_causes(bare)) == ["spec.capacity", "spec"]
    assert _fields(storage_class_causes({"reclaimPolicy": "Recycle"}, None)) == [
        "provisioner", "reclaimPolicy"]
    old = _class()
    changed = {**old, "provisioner": "other", "volumeBindingMode": "WaitForFirstConsumer"}
    assert _fields(storage_class_causes(changed, old)) == ["provisioner", "volumeBindingMode"]


# -- printer columns -----------------------------------------------------------------------------
def _cells(kind: str, item: dict[str, Any]) -> list[Any]:
    table = table_for([item], None, kind=kind, include_object="None", resource_version="1",
                      now=NOW)
    return [table["columnDefinitions"], table["rows"][0]["cells"]]


def test_claim_columns_show_capacity_only_once_bound() -> None:
    columns, cells = _cells("PersistentVolumeClaim", _claim())
    assert [c["name"] for c in columns] == [
        "Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass",
        "VolumeAttributesClass", "Age", "VolumeMode"]
    assert columns[-1]["priority"] == 1
    assert cells == ["data", "Pending", "", "", "", "standard", "<unset>", "10m", "Filesystem"]
    bound = _claim(volume="pv-1", phase="Bound")
    bound["status"].update(capacity={"storage": "1Gi"}, accessModes=["ReadWriteOnce"])
    assert _cells("PersistentVolumeClaim", bound)[1][:5] == ["data", "Bound", "pv-1", "1Gi",
                                                             "RWO"]
    named = _claim(volume="pv-1")  # the binder named the volume, status not written yet
    assert _cells("PersistentVolumeClaim", named)[1][2:5] == ["pv-1", "0", ""]
    deleting = _claim(deleting=True, phase="Bound")
    assert _cells("PersistentVolumeClaim", deleting)[1][1] == "Terminating"


def test_volume_and_class_columns() -> None:
    columns, cells = _cells("PersistentVolume", _volume("pv-1", claim=_claim(), phase="Bound"))
    assert [c["name"] for c in columns] == [
        "Name", "Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim",
        "StorageClass", "VolumeAttributesClass", "Reason", "Age", "VolumeMode"]
    assert cells == ["pv-1", "1Gi", "RWO", "Delete", "Bound", "default/data", "standard",
                     "<unset>", "", "10m", "Filesystem"]
    columns, cells = _cells("StorageClass", _class(default=True))
    assert [c["name"] for c in columns] == ["Name", "Provisioner", "ReclaimPolicy",
                                            "VolumeBindingMode", "AllowVolumeExpansion", "Age"]
    assert cells == ["standard (default)", LOCAL_PATH_PROVISIONER, "Delete", "Immediate",
                     False, "10m"]


# -- the kubelet's view of a claim ---------------------------------------------------------------
def test_claim_host_path_explains_why_a_claim_cannot_be_mounted() -> None:
    with pytest.raises(ContainerConfigError, match='persistentvolumeclaim "data" not found'):
        claim_host_path("data", None, None)
    with pytest.raises(ContainerConfigError, match="unbound immediate PersistentVolumeClaims"):
        claim_host_path("data", _claim(), None)
    with pytest.raises(ContainerConfigError, match="being deleted"):
        claim_host_path("data", _claim(deleting=True), None)
    bound = _claim(volume="pv-1", phase="Bound")
    with pytest.raises(ContainerConfigError, match='persistentvolume "pv-1"'):
        claim_host_path("data", bound, None)
    assert claim_host_path("data", bound, _volume("pv-1")) == VOLUMES_DIR / "pv-1"
    local = _volume("pv-1")
    local["spec"] = {"local": {"path": "/mnt/disk"}}
    assert claim_host_path("data", bound, local) == Path("/mnt/disk")


def test_claim_mounts_translate_to_the_volume_directory() -> None:
    container = {"volumeMounts": [{"name": "data", "mountPath": "/var/lib/app"},
                                  {"name": "data", "mountPath": "/logs", "subPath": "logs"}]}
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]
    env = mount_env(container, volumes, Path("/pod/volumes"), None,
                    {"data": VOLUMES_DIR / "pv-1"})
    assert env["GENCLUSTER_DEV_MOUNT_VAR_LIB_APP"] == str(VOLUMES_DIR / "pv-1")
    assert env["GENCLUSTER_DEV_MOUNT_LOGS"] == str(VOLUMES_DIR / "pv-1" / "logs")
    with pytest.raises(ContainerConfigError):
        mount_env(container, volumes, Path("/pod/volumes"), None, {})


# -- plan_bindings -------------------------------------------------------------------------------
def test_a_pending_claim_of_a_local_path_class_is_provisioned() -> None:
    actions = _plan([_claim()], [])
    assert [type(a) for a in actions] == [Provision, Event]
    provision = actions[0]
    assert isinstance(provision, Provision)
    volume = provision.volume
    assert volume["metadata"]["name"] == "pvc-uid-data"
    assert provision.directory == str(VOLUMES_DIR / "pvc-uid-data")
    assert volume["spec"]["hostPath"]["path"] == provision.directory
    assert volume["spec"]["claimRef"]["uid"] == "uid-data"
    assert volume["spec"]["capacity"] == {"storage": "1Gi"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert volume["spec"]["storageClassName"] == "standard"
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == \
        LOCAL_PATH_PROVISIONER
    event = actions[1]
    assert isinstance(event, Event) and event.reason == "ProvisioningSucceeded"
    retain = _plan([_claim()], [], [_class(policy="Retain")])[0]
    assert isinstance(retain, Provision)
    assert retain.volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_claims_that_cannot_be_provisioned_here_get_an_event() -> None:
    reasons = {
        "none": _plan([_claim(cls="")], []),
        "missing": _plan([_claim(cls="fast")], []),
        "external": _plan([_claim(cls="ebs")], [], [_class("ebs", provisioner="ebs.csi")]),
    }
    assert [(type(a), a.reason) for a in reasons["none"]] == [(Event, "FailedBinding")]
    assert [(type(a), a.reason) for a in reasons["missing"]] == [(Event, "ProvisioningFailed")]
    assert [(type(a), a.reason) for a in reasons["external"]] == [
        (Event, "ExternalProvisioning")]


def test_wait_for_first_consumer_provisions_once_a_pod_uses_the_claim() -> None:
    wffc = [_class(mode="WaitForFirstConsumer")]
    waiting = _plan([_claim()], [], wffc)
    assert [(type(a), a.reason) for a in waiting if isinstance(a, Event)] == [
        (Event, "WaitForFirstConsumer")]
    assert not any(isinstance(a, Provision) for a in waiting)
    assert isinstance(_plan([_claim()], [], wffc, [_pod("data")])[0], Provision)
    assert not any(isinstance(a, Provision)
                   for a in _plan([_claim()], [], wffc, [_pod("data", phase="Succeeded")]))


def test_a_provisioned_volume_completes_the_bind_on_both_sides() -> None:
    claim = _claim()
    volume = _volume("pvc-uid-data", claim=claim, phase="Pending", provisioned=True)
    actions = _plan([claim], [volume])
    assert actions == [
        BindClaim("default", "data", "pvc-uid-data", {"storage": "1Gi"}, ("ReadWriteOnce",),
                  bound_by_controller=True),
        SetVolumePhase("pvc-uid-data", "Bound"),
    ]
    done_claim = _claim(volume="pvc-uid-data", phase="Bound")
    done_volume = _volume("pvc-uid-data", claim=done_claim, phase="Bound")
    assert _plan([done_claim], [done_volume]) == []


def test_static_volumes_bind_by_best_fit() -> None:
    claim = _claim(cls="", size="2Gi")
    small = _volume("small", cls="", size="1Gi")
    big = _volume("big", cls="", size="10Gi")
    fit = _volume("fit", cls="", size="3Gi")
    other_class = _volume("classy", cls="standard", size="2Gi")
    read_only = _volume("ro", cls="", size="2Gi", modes=("ReadOnlyMany",))
    actions = _plan([claim], [small, big, fit, other_class, read_only])
    claims_of = [a for a in actions if isinstance(a, ClaimVolume)]
    assert [a.volume for a in claims_of] == ["fit"]
    assert claims_of[0].claim_ref["uid"] == "uid-data"
    # Unclaimed volumes are made Available, except the one just promised.
    assert {a.volume for a in actions if isinstance(a, SetVolumePhase)} == set()
    pending = _volume("new", cls="", phase="Pending")
    assert SetVolumePhase("new", "Available") in _plan([], [pending])


def test_a_claim_naming_its_volume_gets_that_one() -> None:
    claim = _claim(cls="", volume="chosen")
    actions = _plan([claim], [_volume("other", cls=""), _volume("chosen", cls="")])
    assert [a.volume for a in actions if isinstance(a, ClaimVolume)] == ["chosen"]
    bound_elsewhere = _volume("chosen", cls="", phase="Bound", claim=_claim("someone"))
    actions = _plan([claim, _claim("someone", volume="chosen", phase="Bound")],
                    [bound_elsewhere])
    assert any(isinstance(a, Event) and a.reason == "FailedBinding" for a in actions)


def test_a_volume_whose_claim_is_gone_is_released_then_reclaimed() -> None:
    gone = _claim("gone")
    provisioned = _volume("pvc-uid-gone", claim=gone, phase="Bound", provisioned=True)
    assert _plan([], [provisioned]) == [SetVolumePhase("pvc-uid-gone", "Released")]
    released = _volume("pvc-uid-gone", claim=gone, phase="Released", provisioned=True)
    assert _plan([], [released]) == [
        DeleteVolume("pvc-uid-gone", str(VOLUMES_DIR / "pvc-uid-gone"))]
    foreign = _volume("manual", claim=gone, phase="Released", path="/srv/data")
    assert _plan([], [foreign]) == [DeleteVolume("manual", None)]  # not our directory
    kept = _volume("pvc-uid-gone", claim=gone, phase="Released", policy="Retain")
    assert _plan([], [kept]) == []
    deleting = _volume("pvc-uid-gone", claim=gone, phase="Released", deleting=True)
    assert _plan([], [deleting]) == [RemoveFinalizer(
        "persistentvolumes", "", "pvc-uid-gone", "kubernetes.io/pv-protection", (), "9")]


def test_a_deleted_claim_keeps_its_finalizer_while_a_pod_uses_it() -> None:
    claim = _claim(volume="pv-1", phase="Bound", deleting=True)
    volume = _volume("pv-1", claim=claim, phase="Bound")
    assert _plan([claim], [volume], pods=[_pod("data")]) == []
    assert _plan([claim], [volume], pods=[_pod("data", phase="Failed")]) == [RemoveFinalizer(
        "persistentvolumeclaims", "default", "data", "kubernetes.io/pvc-protection", (), "7")]
    in_use_volume = _volume("pv-1", claim=claim, phase="Bound", deleting=True)
    assert _plan([claim], [in_use_volume], pods=[_pod("data")]) == []  # pv-protection holds


def test_a_bound_claim_whose_volume_vanished_is_lost() -> None:
    claim = _claim(volume="pv-1", phase="Bound")
    actions = _plan([claim], [])
    assert actions[0] == SetClaimPhase("default", "data", "Lost")
    assert isinstance(actions[1], Event) and actions[1].reason == "ClaimLost"


def test_growing_a_claim_needs_a_bound_claim_and_an_expandable_class() -> None:
    growable = _class("growable")
    growable["allowVolumeExpansion"] = True
    bound = _claim(volume="pv-1", phase="Bound", cls="growable")
    bigger = _claim(volume="pv-1", phase="Bound", cls="growable", size="2Gi")
    assert resize_refusal(bound, bigger, [growable]) is None
    assert resize_refusal(bound, bound, []) is None  # no growth, nothing to admit
    assert "must support resize" in (resize_refusal(bound, bigger, [_class("growable")]) or "")
    assert "must support resize" in (resize_refusal(bound, bigger, []) or "")
    pending, pending_bigger = _claim(cls="growable"), _claim(cls="growable", size="2Gi")
    assert resize_refusal(pending, pending_bigger, [growable]) == \
        "Only bound persistent volume claims can be expanded"


def test_a_local_path_volume_grows_with_its_claim() -> None:
    growable = _class("growable")
    growable["allowVolumeExpansion"] = True
    claim = _claim(volume="pvc-uid-data", phase="Bound", cls="growable", size="2Gi")
    claim["status"]["capacity"] = {"storage": "1Gi"}
    volume = _volume("pvc-uid-data", claim=claim, phase="Bound", cls="growable",
                     provisioned=True)
    actions = _plan([claim], [volume], [growable])
    assert actions[0] == ExpandVolume("pvc-uid-data", "default", "data", "2Gi")
    assert isinstance(actions[1], Event) and actions[1].reason == "VolumeResizeSuccessful"
    assert _plan([claim], [volume], [_class("growable")]) == []  # the class does not allow it
    claim["status"]["capacity"] = {"storage": "2Gi"}
    volume["spec"]["capacity"] = {"storage": "2Gi"}
    assert _plan([claim], [volume], [growable]) == []
