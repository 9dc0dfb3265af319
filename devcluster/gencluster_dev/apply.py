"""Server-side apply, simplified: per-manager field sets recorded in `managedFields`.

Each apply records the set of fields the manager's configuration sets (maps are walked, lists
are atomic values) as a FieldsV1 document. The next apply by the same manager removes the
fields it set before and no longer sets, then merges the new configuration, which is what
`kubectl apply --server-side` relies on to delete a field by dropping it from the file.
Conflict detection between managers is not modelled: the last applier wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FieldPath = tuple[str, ...]
IDENTITY_FIELDS: frozenset[FieldPath] = frozenset({
    ("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"),
    ("metadata", "resourceVersion"), ("metadata", "uid"),
})


def field_set(config: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """Leaf paths a configuration sets (non-empty maps are walked, everything else is a leaf)."""
    paths: set[FieldPath] = set()
    for key, value in config.items():
        path = (*prefix, str(key))
        if path in IDENTITY_FIELDS or path == ("metadata", "managedFields"):
            continue
        if isinstance(value, Mapping) and value:
            paths |= field_set(value, path)
        else:
            paths.add(path)
    return paths


def encode_fields(paths: set[FieldPath]) -> dict[str, Any]:
    """The FieldsV1 form: {"f:spec": {"f:replicas": {}}}."""
    document: dict[str, Any] = {}
    for path in sorted(paths):
        node = document
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return document


def decode_fields(document: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """Leaf paths of a FieldsV1 document (entries other than `f:` keys are ignored)."""
    paths: set[FieldPath] = set()
    if not isinstance(document, Mapping):
        return paths
    for key, value in document.items():
        if not isinstance(key, str) or not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        children = decode_fields(value, path)
        paths |= children or {path}
    return paths


def removal_patch(previous: set[FieldPath], current: set[FieldPath]) -> dict[str, Any]:
    """A merge patch setting to null every field applied before and not any more."""
    patch: dict[str, Any] = {}
    for path in sorted(previous):
        if path in current or any(c[: len(path)] == path for c in current) or any(
            path[: len(c)] == c for c in current
        ):
            continue
        node = patch
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if node is None:
                break
        else:
            node[path[-1]] = None
    return patch


def previous_fields(meta: Mapping[str, Any], manager: str) -> set[FieldPath]:
    for entry in meta.get("managedFields") or []:
        if isinstance(entry, Mapping) and entry.get("manager") == manager and entry.get(
            "operation"
        ) == "Apply":
            return decode_fields(entry.get("fieldsV1"))
    return set()


def record_apply(
    meta: dict[str, Any], manager: str, api_version: str, paths: set[FieldPath], time: str
) -> None:
    """Replace the manager's Apply entry in `managedFields`."""
    entries = [e for e in meta.get("managedFields") or [] if not (
        isinstance(e, Mapping) and e.get("manager") == manager and e.get("operation") == "Apply")]
    entries.append({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": encode_fields(paths),
    })
    meta["managedFields"] = entries
