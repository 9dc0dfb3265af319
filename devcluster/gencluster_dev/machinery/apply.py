"""Server-side apply, simplified: per-manager field sets recorded in `managedFields`.

Each apply records the set of fields the manager's configuration sets (maps are walked, lists
are atomic values) as a FieldsV1 document. The next apply by the same manager removes the
fields it set before and no longer sets, then merges the new configuration, which is what
`kubectl apply --server-side` relies on to delete a field by dropping it from the file.
Conflict detection between managers is not modelled: the last applier wins.

Keyed lists (containers by name, ports, env, volumes, ...) are recorded as one field, so the
items a manager drops from a list it applied before are removed by `prune_list_items` (real
server-side apply tracks each item's owner; here the applier's list is taken as the truth, and
the items it keeps are merged, so server-set subfields inside them survive). Without it,
`helm upgrade` could never remove a port, a container or an environment variable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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


MergeKeyLookup = Callable[[FieldPath], str | None]


def prune_list_items(
    current: Any, applied: Any, previous: set[FieldPath], merge_key: MergeKeyLookup,
    path: FieldPath = (),
) -> Any:
    """`current` without the items of keyed lists that the manager applied before (their
    path is in `previous`) and leaves out now, recursively inside the items it keeps.

    A merge then brings in the applied items; lists the manager never applied, and every
    list of a first apply, are left alone (they may hold other managers' items).
    """
    if isinstance(current, Mapping) and isinstance(applied, Mapping):
        result = dict(current)
        for key, value in applied.items():
            if key in result:
                result[key] = prune_list_items(result[key], value, previous, merge_key,
                                               (*path, str(key)))
        return result
    if not (isinstance(current, list) and isinstance(applied, list)):
        return current
    key = merge_key(path)
    owned = path in previous or any(path[: len(p)] == p for p in previous if "*" in path)
    if key is None or not owned:
        return current
    applied_by_key = {
        _identity(item, key): item for item in applied if isinstance(item, Mapping)
    }
    kept = []
    for item in current:
        if not isinstance(item, Mapping):
            kept.append(item)
            continue
        counterpart = applied_by_key.get(_identity(item, key))
        if counterpart is not None:
            kept.append(prune_list_items(item, counterpart, previous, merge_key,
                                         (*path, "*")))
    return kept


def _identity(item: Mapping[str, Any], key: str) -> str:
    return json.dumps(item.get(key), sort_keys=True)
