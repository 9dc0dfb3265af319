"""CustomResourceDefinition rules: what makes a CRD servable, and its status.

Pure functions: `validate_crd` rejects (422) a CRD whose names, versions, scope, printer
columns or schema could not be served; `crd_status` reports it accepted and Established at
once, since this server has no name conflicts to negotiate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gencluster_dev.machinery import schema as schemas
from gencluster_dev.machinery.errors import invalid
from gencluster_dev.machinery.resources import resource_types_from_crd
from gencluster_dev.machinery.tables import JsonPathError, evaluate_jsonpath


def crd_status(
    crd: Mapping[str, Any], now: str, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Names accepted and Established at once (no conflicts are possible here); the
    conditions keep their transition time across updates."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    earlier = [c.get("lastTransitionTime") for c in (previous or {}).get("conditions") or []
               if isinstance(c, Mapping)]
    transition_time = earlier[0] if earlier and earlier[0] else now
    return {
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": transition_time},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted",
             "lastTransitionTime": transition_time},
        ],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


def validate_crd(crd: Mapping[str, Any]) -> None:
    """422 for CRDs whose names or schema cannot be served."""
    name = (crd.get("metadata") or {}).get("name", "")
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[tuple[str, str, str]] = []
    group = spec.get("group")
    plural = names.get("plural")
    if not group:
        causes.append(("FieldValueRequired", "spec.group", "Required value"))
    if not plural:
        causes.append(("FieldValueRequired", "spec.names.plural", "Required value"))
    if not names.get("kind"):
        causes.append(("FieldValueRequired", "spec.names.kind", "Required value"))
    if group and plural and name != f"{plural}.{group}":
        causes.append(("FieldValueInvalid", "metadata.name",
                       f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("FieldValueRequired", "spec.versions", "Required value"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("FieldValueInvalid", "spec.versions",
                       "Invalid value: must have exactly one version marked as storage "
                       "version"))
    for i, version in enumerate(versions):
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            where = f"spec.versions[{i}].additionalPrinterColumns[{j}]"
            if column.get("type") not in ("integer", "number", "string", "boolean", "date"):
                causes.append(("FieldValueNotSupported", f"{where}.type",
                               f'Unsupported value: "{column.get("type")}": supported '
                               'values: "boolean", "date", "integer", "number", "string"'))
            try:
                evaluate_jsonpath({}, str(column.get("jsonPath", "")))
            except JsonPathError as e:
                causes.append(("FieldValueInvalid", f"{where}.jsonPath",
                               f'Invalid value: "{column.get("jsonPath")}": {e}'))
            if not column.get("name"):
                causes.append(("FieldValueRequired", f"{where}.name", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("FieldValueNotSupported", "spec.scope",
                       f'Unsupported value: "{spec.get("scope")}": supported values: '
                       '"Cluster", "Namespaced"'))
    if not causes:
        try:
            resource_types_from_crd(crd, schemas.Schema)
        except ValueError as e:
            causes.append(("FieldValueInvalid", "spec.versions[0].schema.openAPIV3Schema",
                           f"Invalid value: {e}"))
    if causes:
        raise invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)
