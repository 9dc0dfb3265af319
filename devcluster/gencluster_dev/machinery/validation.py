"""Object-meta validation rules that every kube-apiserver applies (names, namespaces).

Kept apart from the request flow so the messages match the API server word for word: users
paste them into searches, and tests compare them.
"""

from __future__ import annotations

import re
from typing import Any

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
    "metadata.ownerReferences[].kind": STRING,
    "metadata.ownerReferences[].blockOwnerDeletion": BOOLEAN,
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
    "Binding": {"target": OBJECT, "target.name": STRING},
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


def shape_error(kind: str, obj: Any) -> str | None:
    """Why a built-in object cannot be decoded (Go's unmarshal message), or None."""
    shape = {**COMMON_SHAPE, **KIND_SHAPES.get(kind, {})}
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
        "Deployment": ("spec", "status"),
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
