"""Object-meta validation rules that every kube-apiserver applies (names, namespaces).

Kept apart from the request flow so the messages match the API server word for word: users
paste them into searches, and tests compare them.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from gencluster_dev.machinery.storage import (
    ACCESS_MODES,
    BINDING_MODES,
    RECLAIM_POLICIES,
    VOLUME_MODES,
    QuantityError,
    parse_quantity,
    requested_storage,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME_RESOURCES = {"namespaces", "services"}
# Names that may contain almost anything (path-segment names), as in Kubernetes.
PATH_SEGMENT_NAME_RESOURCES = {"roles", "rolebindings", "clusterroles", "clusterrolebindings"}

Cause = tuple[str, str, str]  # (reason, field, message)


def name_causes(plural: str, name: str, field: str = "metadata.name") -> list[Cause]:
    """422 causes for an invalid object name (empty list when valid)."""
    if plural in PATH_SEGMENT_NAME_RESOURCES:
        if name in (".", "..") or "/" in name or "%" in name:
            return [("FieldValueInvalid", field,
                     f'Invalid value: "{name}": may not contain \'/\' or \'%\'')]
        return []
    if plural in LABEL_NAME_RESOURCES:
        if len(name) > 63:
            return [("FieldValueInvalid", field,
                     f'Invalid value: "{name}": must be no more than 63 characters')]
        if not DNS1123_LABEL.match(name):
            return [("FieldValueInvalid", field,
                     f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower '
                     "case alphanumeric characters or '-', and must start and end with an "
                     "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")]
        return []
    if len(name) > 253:
        return [("FieldValueInvalid", field,
                 f'Invalid value: "{name}": must be no more than 253 characters')]
    if not DNS1123_SUBDOMAIN.match(name):
        return [("FieldValueInvalid", field,
                 f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                 "case alphanumeric characters, '-' or '.', and must start and end with an "
                 "alphanumeric character (e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")]
    return []


def metadata_causes(meta: dict[str, Any]) -> list[Cause]:
    """Type checks of labels and annotations (string maps), as k8s decodes them."""
    causes: list[Cause] = []
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            causes.append(("FieldValueTypeInvalid", f"metadata.{field}",
                           "Invalid value: must be a map of strings"))
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
    ):
        causes.append(("FieldValueTypeInvalid", "metadata.finalizers",
                       "Invalid value: must be a list of strings"))
    return causes


# -- structural decoding of built-in kinds ------------------------------------------------------
# kube-apiserver decodes bodies into Go structs, so a field of the wrong JSON type is a 400
# ("cannot unmarshal ...") before any defaulting. These are the fields this server reads.
OBJECT, ARRAY, STRING, INTEGER, BOOLEAN = "object", "array", "string", "integer", "boolean"
INT_OR_STRING = "int-or-string"
COMMON_SHAPE: dict[str, str] = {
    "spec": OBJECT, "status": OBJECT,
    "metadata.ownerReferences": ARRAY, "metadata.ownerReferences[]": OBJECT,
    "metadata.ownerReferences[].uid": STRING, "metadata.ownerReferences[].name": STRING,
    "metadata.ownerReferences[].kind": STRING, "metadata.ownerReferences[].apiVersion": STRING,
    "metadata.ownerReferences[].blockOwnerDeletion": BOOLEAN,
    "metadata.ownerReferences[].controller": BOOLEAN,
    "metadata.generateName": STRING, "metadata.name": STRING, "metadata.namespace": STRING,
    "metadata.resourceVersion": STRING, "metadata.uid": STRING,
}
CONTAINER_SHAPE = {
    "[]": OBJECT, "[].name": STRING, "[].image": STRING, "[].ports": ARRAY,
    "[].ports[]": OBJECT, "[].env": ARRAY, "[].env[]": OBJECT, "[].command": ARRAY,
    "[].args": ARRAY,
}
KIND_SHAPES: dict[str, dict[str, str]] = {
    "Pod": {
        "spec.containers": ARRAY, "spec.initContainers": ARRAY, "spec.volumes": ARRAY,
        "spec.volumes[]": OBJECT, "spec.nodeName": STRING,
        "spec.terminationGracePeriodSeconds": INTEGER, "spec.serviceAccountName": STRING,
        "spec.restartPolicy": STRING, "status.phase": STRING, "status.conditions": ARRAY,
        "status.conditions[]": OBJECT,
        **{f"spec.containers{k}": v for k, v in CONTAINER_SHAPE.items()},
        **{f"spec.initContainers{k}": v for k, v in CONTAINER_SHAPE.items()},
    },
    "Service": {
        "spec.ports": ARRAY, "spec.ports[]": OBJECT, "spec.ports[].port": INTEGER,
        "spec.ports[].targetPort": INT_OR_STRING, "spec.clusterIP": STRING,
        "spec.clusterIPs": ARRAY, "spec.clusterIPs[]": STRING, "spec.selector": OBJECT,
        "spec.type": STRING,
    },
    "Namespace": {"spec.finalizers": ARRAY, "spec.finalizers[]": STRING},
    "ConfigMap": {"data": OBJECT, "binaryData": OBJECT},
    "Secret": {"data": OBJECT, "stringData": OBJECT, "type": STRING},
    "Event": {"involvedObject": OBJECT, "reason": STRING, "message": STRING},
    "Lease": {"spec.holderIdentity": STRING, "spec.leaseDurationSeconds": INTEGER,
              "spec.leaseTransitions": INTEGER, "spec.acquireTime": STRING,
              "spec.renewTime": STRING},
    "Role": {"rules": ARRAY, "rules[]": OBJECT},
    "ClusterRole": {"rules": ARRAY, "rules[]": OBJECT},
    "RoleBinding": {"subjects": ARRAY, "subjects[]": OBJECT, "roleRef": OBJECT},
    "ClusterRoleBinding": {"subjects": ARRAY, "subjects[]": OBJECT, "roleRef": OBJECT},
    "Deployment": {"spec.replicas": INTEGER, "spec.selector": OBJECT, "spec.template": OBJECT,
                   "status.replicas": INTEGER},
    "PodDisruptionBudget": {"spec.selector": OBJECT, "spec.minAvailable": INT_OR_STRING,
                            "spec.maxUnavailable": INT_OR_STRING},
    "NetworkPolicy": {"spec": OBJECT, "spec.podSelector": OBJECT, "spec.ingress": ARRAY,
                      "spec.ingress[]": OBJECT, "spec.egress": ARRAY, "spec.egress[]": OBJECT,
                      "spec.policyTypes": ARRAY, "spec.policyTypes[]": STRING},
    "Binding": {"target": OBJECT, "target.name": STRING},
    "PersistentVolumeClaim": {
        "spec.accessModes": ARRAY, "spec.accessModes[]": STRING, "spec.resources": OBJECT,
        "spec.resources.requests": OBJECT, "spec.storageClassName": STRING,
        "spec.volumeName": STRING, "spec.volumeMode": STRING, "spec.selector": OBJECT,
        "status.phase": STRING, "status.capacity": OBJECT, "status.accessModes": ARRAY,
    },
    "PersistentVolume": {
        "spec.accessModes": ARRAY, "spec.accessModes[]": STRING, "spec.capacity": OBJECT,
        "spec.claimRef": OBJECT, "spec.hostPath": OBJECT, "spec.hostPath.path": STRING,
        "spec.local": OBJECT, "spec.local.path": STRING, "spec.storageClassName": STRING,
        "spec.persistentVolumeReclaimPolicy": STRING, "status.phase": STRING,
    },
    "StorageClass": {"provisioner": STRING, "parameters": OBJECT, "reclaimPolicy": STRING,
                     "volumeBindingMode": STRING, "allowVolumeExpansion": BOOLEAN,
                     "mountOptions": ARRAY, "allowedTopologies": ARRAY},
    "Endpoints": {"subsets": ARRAY, "subsets[]": OBJECT},
    "CustomResourceDefinition": {
        "spec.group": STRING, "spec.scope": STRING, "spec.names": OBJECT,
        "spec.names.plural": STRING, "spec.names.kind": STRING, "spec.names.singular": STRING,
        "spec.names.shortNames": ARRAY, "spec.names.shortNames[]": STRING,
        "spec.names.categories": ARRAY, "spec.names.categories[]": STRING,
        "spec.versions": ARRAY, "spec.versions[]": OBJECT, "spec.versions[].name": STRING,
        "spec.versions[].served": BOOLEAN, "spec.versions[].storage": BOOLEAN,
        "spec.versions[].schema": OBJECT, "spec.versions[].schema.openAPIV3Schema": OBJECT,
        "spec.versions[].subresources": OBJECT,
        "spec.versions[].subresources.scale": OBJECT,
        "spec.versions[].additionalPrinterColumns": ARRAY,
        "spec.versions[].additionalPrinterColumns[]": OBJECT,
    },
}
_GO_TYPES = {OBJECT: "object", ARRAY: "array", STRING: "string", INTEGER: "number",
             BOOLEAN: "bool"}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fits(value: Any, expected: str) -> bool:
    if expected == OBJECT:
        return isinstance(value, dict)
    if expected == ARRAY:
        return isinstance(value, list)
    if expected == STRING:
        return isinstance(value, str)
    if expected == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == BOOLEAN:
        return isinstance(value, bool)
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def shape_error(kind: str, obj: Any, *, builtin: bool = True) -> str | None:
    """Why an object cannot be decoded (Go's unmarshal message), or None. A custom resource
    (`builtin` False) has its metadata decoded into ObjectMeta as well; the rest is its
    schema's business."""
    shape = {**COMMON_SHAPE, **KIND_SHAPES.get(kind, {})} if builtin else {
        path: expected for path, expected in COMMON_SHAPE.items()
        if path.startswith("metadata.")}
    for path, expected in sorted(shape.items(), key=lambda item: item[0].count(".")):
        for location, value in _values_at(obj, path):
            if value is None:
                continue
            if not _fits(value, expected):
                go_type = _GO_TYPES.get(expected, "intstr.IntOrString")
                return (f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                        f"{kind}.{location} of type {go_type}")
    return None


def _values_at(obj: Any, path: str) -> list[tuple[str, Any]]:
    """Every (location, value) a `a.b[].c` path reaches; missing parts reach nothing."""
    current: list[tuple[str, Any]] = [("", obj)]
    for part in path.split("."):
        many = part.endswith("[]")
        name = part[:-2] if many else part
        following: list[tuple[str, Any]] = []
        for location, value in current:
            if name:
                if not isinstance(value, dict) or name not in value:
                    continue
                location = f"{location}.{name}" if location else name
                value = value[name]
            if many:
                if isinstance(value, list):
                    following.extend((location, item) for item in value)
            else:
                following.append((location, value))
        current = following
    return current


# -- unknown fields ----------------------------------------------------------------------------
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
})
_TYPED = ("apiVersion", "kind", "metadata")
TOP_LEVEL_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset((*_TYPED, *fields)) for kind, fields in {
        "Namespace": ("spec", "status"),
        "Node": ("spec", "status"),
        "Pod": ("spec", "status"),
        "Service": ("spec", "status"),
        "Endpoints": ("subsets",),
        "ConfigMap": ("data", "binaryData", "immutable"),
        "Secret": ("data", "stringData", "type", "immutable"),
        "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
        "Event": ("involvedObject", "reason", "message", "source", "firstTimestamp",
                  "lastTimestamp", "count", "type", "eventTime", "series", "action",
                  "related", "reportingComponent", "reportingInstance",
                  # events.k8s.io/v1
                  "regarding", "note", "reportingController", "deprecatedSource",
                  "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"),
        "Lease": ("spec",),
        "Role": ("rules",),
        "ClusterRole": ("rules", "aggregationRule"),
        "RoleBinding": ("subjects", "roleRef"),
        "ClusterRoleBinding": ("subjects", "roleRef"),
        "PodDisruptionBudget": ("spec", "status"),
        "NetworkPolicy": ("spec",),
        "Deployment": ("spec", "status"),
        "PersistentVolumeClaim": ("spec", "status"),
        "PersistentVolume": ("spec", "status"),
        "StorageClass": ("provisioner", "parameters", "reclaimPolicy", "mountOptions",
                         "allowVolumeExpansion", "volumeBindingMode", "allowedTopologies"),
        "CustomResourceDefinition": ("spec", "status"),
    }.items()
}


def unknown_fields(kind: str, obj: dict[str, Any], builtin: bool) -> list[str]:
    """Fields a typed decoder would not know: top level of built-ins, and object metadata."""
    unknown = [f"metadata.{k}" for k in obj.get("metadata") or {} if k not in
               OBJECT_META_FIELDS]
    known = TOP_LEVEL_FIELDS.get(kind)
    if builtin and known is not None:
        unknown += [k for k in obj if k not in known]
    return sorted(unknown)


def drop_fields(obj: dict[str, Any], paths: list[str]) -> None:
    """Remove the (top-level or metadata.) fields that `unknown_fields` reported."""
    for path in paths:
        if path.startswith("metadata."):
            obj.get("metadata", {}).pop(path[len("metadata."):], None)
        else:
            obj.pop(path, None)


# -- storage: claims, volumes, classes ---------------------------------------------------------
def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    supported = ", ".join(f'"{v}"' for v in sorted(allowed))
    return ("FieldValueNotSupported", field,
            f'Unsupported value: "{value}": supported values: {supported}')


def _access_mode_causes(modes: Any, field: str, message: str) -> list[Cause]:
    if not isinstance(modes, list) or not modes:
        return [("FieldValueRequired", field, message)]
    return [_unsupported(field, m, ACCESS_MODES) for m in modes if m not in ACCESS_MODES]


def _size_causes(value: Any, field: str) -> list[Cause]:
    if value is None:
        return [("FieldValueRequired", field, "Required value")]
    try:
        size = parse_quantity(value)
    except QuantityError as error:
        return [("FieldValueInvalid", field, f'Invalid value: "{value}": {error}')]
    if size <= 0:
        return [("FieldValueInvalid", field, f'Invalid value: "{value}": must be greater than '
                 "zero")]
    return []


def claim_causes(claim: dict[str, Any]) -> list[Cause]:
    """ValidatePersistentVolumeClaim: access modes, a positive `resources.requests.storage`,
    a known volumeMode."""
    spec = claim.get("spec") or {}
    causes = _access_mode_causes(spec.get("accessModes"), "spec.accessModes",
                                 "Required value: at least 1 access mode is required")
    causes += _size_causes(requested_storage(claim), "spec.resources[storage]")
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        causes.append(_unsupported("spec.volumeMode", mode, VOLUME_MODES))
    return causes


def _spec_diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in sorted(set(old) | set(new)):
            lines += _spec_diff(old.get(key), new.get(key), f"{path}.{key}")
        return lines
    if old == new:
        return []
    return [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def claim_update_causes(old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    """ValidatePersistentVolumeClaimUpdate: a claim's spec is immutable after creation, except
    that `volumeName` and `storageClassName` may each be set once while empty (the binder and
    the retroactive default class do that), and `resources.requests` may grow once the claim
    is bound (expansion), never shrink. The message lists what changed, so the field that was
    refused is named."""
    causes = claim_causes(new)
    old_spec = copy.deepcopy(old.get("spec") or {})
    new_spec = copy.deepcopy(new.get("spec") or {})
    if not old_spec.get("volumeName"):
        old_spec["volumeName"] = new_spec.get("volumeName")
    if old_spec.get("storageClassName") is None:
        old_spec["storageClassName"] = new_spec.get("storageClassName")
    old_size, new_size = requested_storage(old), requested_storage(new)
    bound = (old.get("status") or {}).get("phase") == "Bound"
    if bound and isinstance(new_spec.get("resources"), dict):
        requests = new_spec["resources"].get("requests")
        if isinstance(requests, dict) and "storage" in requests:
            requests["storage"] = old_size
    changed = _spec_diff(old_spec, new_spec, "spec")
    if changed:
        causes.append(("FieldValueForbidden", "spec",
                       "Forbidden: spec is immutable after creation except resources.requests "
                       "and volumeAttributesClassName for bound claims\n" + "\n".join(changed)))
    try:
        shrinks = parse_quantity(new_size) < parse_quantity(old_size)
    except (QuantityError, TypeError):
        shrinks = False
    if shrinks:
        causes.append(("FieldValueForbidden", "spec.resources.requests.storage",
                       "Forbidden: field can not be less than previous value"))
    return causes


VOLUME_SOURCES = ("hostPath", "local", "nfs", "csi", "iscsi", "fc", "rbd", "cephfs",
                  "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "azureFile")


def volume_causes(volume: dict[str, Any]) -> list[Cause]:
    """ValidatePersistentVolume: capacity, access modes, reclaim policy, one volume source."""
    spec = volume.get("spec") or {}
    causes: list[Cause] = []
    capacity = spec.get("capacity")
    if not isinstance(capacity, dict) or not capacity:
        causes.append(("FieldValueRequired", "spec.capacity", "Required value"))
    else:
        causes += _size_causes(capacity.get("storage"), "spec.capacity[storage]")
    causes += _access_mode_causes(spec.get("accessModes"), "spec.accessModes",
                                  "Required value")
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy is not None and policy not in RECLAIM_POLICIES:
        causes.append(_unsupported("spec.persistentVolumeReclaimPolicy", policy,
                                   RECLAIM_POLICIES))
    sources = [s for s in VOLUME_SOURCES if spec.get(s) is not None]
    if not sources:
        causes.append(("FieldValueRequired", "spec", "Required value: must specify a volume "
                       "type"))
    elif len(sources) > 1:
        causes.append(("FieldValueForbidden", f"spec.{sources[1]}",
                       "Forbidden: may not specify more than 1 volume type"))
    for source in ("hostPath", "local"):
        path = (spec.get(source) or {}).get("path") if isinstance(spec.get(source), dict) \
            else None
        if source in sources and not (isinstance(path, str) and path):
            causes.append(("FieldValueRequired", f"spec.{source}.path", "Required value"))
    return causes


def storage_class_causes(sc: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """ValidateStorageClass(Update): a provisioner, known policy and binding mode; provisioner,
    parameters, reclaimPolicy and volumeBindingMode never change."""
    causes: list[Cause] = []
    if not sc.get("provisioner"):
        causes.append(("FieldValueRequired", "provisioner", "Required value"))
    if sc.get("reclaimPolicy") not in (None, "Retain", "Delete"):
        causes.append(_unsupported("reclaimPolicy", sc["reclaimPolicy"], ("Delete", "Retain")))
    if sc.get("volumeBindingMode") not in (None, *BINDING_MODES):
        causes.append(_unsupported("volumeBindingMode", sc["volumeBindingMode"],
                                   BINDING_MODES))
    if old is not None:
        for field in ("provisioner", "parameters", "reclaimPolicy"):
            if sc.get(field) != old.get(field):
                causes.append(("FieldValueForbidden", field,
                               f"Forbidden: updates to {field} are forbidden."))
        if sc.get("volumeBindingMode") != old.get("volumeBindingMode"):
            causes.append(("FieldValueInvalid", "volumeBindingMode",
                           f'Invalid value: "{sc.get("volumeBindingMode")}": field is '
                           "immutable"))
    return causes
