"""The three patch formats of the Kubernetes API: JSON merge, JSON and strategic merge patch.

``kubectl apply``, ``kubectl patch``, kopf and the Python client all send patches; the result
they expect depends on each format's exact semantics (RFC 7386, RFC 6902, and the strategic
merge rules Kubernetes derives from the ``patchStrategy``/``patchMergeKey`` tags of its Go
types).  Every function returns a new value and leaves its arguments untouched, so the store can
hand in the object it holds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PatchError",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "strategic_merge_supported",
]


class PatchError(ValueError):
    """A patch that cannot be applied; the message says which operation, path or directive."""


# --- RFC 7386 JSON merge patch ---------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return {key: copy.deepcopy(value) for key, value in result.items()}


# --- RFC 6902 JSON patch ---------------------------------------------------------------------


def _parse_pointer(pointer: Any) -> list[str]:
    """RFC 6901: "" is the whole document; ``~1`` is ``/`` and ``~0`` is ``~``."""
    if not isinstance(pointer, str):
        raise PatchError(f"invalid JSON pointer {json.dumps(pointer)}: not a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{pointer}": must be empty or start with "/"')
    tokens = pointer[1:].split("/")
    for token in tokens:
        remainder = token.replace("~0", "").replace("~1", "")
        if "~" in remainder:
            raise PatchError(f'invalid JSON pointer "{pointer}": "~" must be followed by 0 or 1')
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def _array_index(token: str, length: int, pointer: str, *, allow_end: bool) -> int:
    """An array index token: decimal without leading zeros, or "-" (one past the end)."""
    if token == "-" and allow_end:
        return length
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f'invalid array index "{token}" in path "{pointer}"')
    index = int(token)
    limit = length if allow_end else length - 1
    if index > limit:
        raise PatchError(f'array index {index} out of range in path "{pointer}"')
    return index


def _resolve(document: Any, tokens: list[str], pointer: str, operation: str) -> Any:
    current = document
    for token in tokens:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(
                    f'{operation} operation does not apply: doc is missing path: "{pointer}"'
                )
            current = current[token]
        elif isinstance(current, list):
            if token == "-":
                raise PatchError(
                    f'{operation} operation does not apply: doc is missing path: "{pointer}"'
                )
            current = current[_array_index(token, len(current), pointer, allow_end=False)]
        else:
            raise PatchError(
                f'{operation} operation does not apply: doc is missing path: "{pointer}"'
            )
    return current


def _parent(document: Any, tokens: list[str], pointer: str, operation: str) -> Any:
    parent = _resolve(document, tokens[:-1], pointer, operation)
    if not isinstance(parent, dict | list):
        raise PatchError(
            f'{operation} operation does not apply: doc is missing path: "{pointer}"'
        )
    return parent


def _add(document: Any, pointer: str, value: Any, operation: str = "add") -> Any:
    tokens = _parse_pointer(pointer)
    if not tokens:
        return value
    parent = _parent(document, tokens, pointer, operation)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    else:
        parent.insert(_array_index(last, len(parent), pointer, allow_end=True), value)
    return document


def _remove(document: Any, pointer: str, operation: str = "remove") -> tuple[Any, Any]:
    """Remove the value at ``pointer``; returns (document, removed value)."""
    tokens = _parse_pointer(pointer)
    if not tokens:
        return None, document
    parent = _parent(document, tokens, pointer, operation)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(
                f'{operation} operation does not apply: doc is missing path: "{pointer}"'
            )
        return document, parent.pop(last)
    if last == "-":
        raise PatchError(
            f'{operation} operation does not apply: doc is missing path: "{pointer}"'
        )
    return document, parent.pop(_array_index(last, len(parent), pointer, allow_end=False))


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality: 1 == 1.0 but True != 1, as JSON has distinct booleans."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(
            _json_equal(left[key], right[key]) for key in left
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            _json_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    return type(left) is type(right) and left == right


def _operation_field(operation: Mapping[str, Any], name: str, index: int) -> Any:
    if name not in operation:
        op = operation.get("op")
        raise PatchError(f'operation {index} ("{op}") is missing required field "{name}"')
    return operation[name]


def apply_json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a deep copy of ``target``; the whole patch fails if one operation fails."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    document = copy.deepcopy(target)
    for index, operation in enumerate(operations):
        if not isinstance(operation, Mapping):
            raise PatchError(f"operation {index} is not an object")
        op = operation.get("op")
        path = _operation_field(operation, "path", index)
        if op == "add":
            value = copy.deepcopy(_operation_field(operation, "value", index))
            document = _add(document, path, value)
        elif op == "remove":
            document, _ = _remove(document, path)
        elif op == "replace":
            value = copy.deepcopy(_operation_field(operation, "value", index))
            tokens = _parse_pointer(path)
            if not tokens:
                document = value
                continue
            _resolve(document, tokens, path, "replace")
            document, _ = _remove(document, path, "replace")
            document = _add(document, path, value, "replace")
        elif op in ("move", "copy"):
            source = _operation_field(operation, "from", index)
            if not isinstance(source, str):
                raise PatchError(f"operation {index} ({op}): \"from\" must be a string")
            if op == "move":
                if path != source and path.startswith(source + "/"):
                    raise PatchError(
                        f'move operation does not apply: "{path}" is a child of "{source}"'
                    )
                document, value = _remove(document, source, "move")
            else:
                value = copy.deepcopy(
                    _resolve(document, _parse_pointer(source), source, "copy")
                )
            document = _add(document, path, value, op)
        elif op == "test":
            expected = _operation_field(operation, "value", index)
            actual = _resolve(document, _parse_pointer(path), path, "test")
            if not _json_equal(actual, expected):
                raise PatchError(
                    f'test operation failed: value at "{path}" is {json.dumps(actual)}, '
                    f"expected {json.dumps(expected)}"
                )
        else:
            raise PatchError(f"unexpected kind of operation: {json.dumps(op)}")
    return document


# --- strategic merge patch -------------------------------------------------------------------

PATCH_DIRECTIVE = "$patch"
RETAIN_KEYS_DIRECTIVE = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST_PREFIX = "$deleteFromPrimitiveList/"
SET_ELEMENT_ORDER_PREFIX = "$setElementOrder/"


@dataclass(frozen=True)
class ListStrategy:
    """How a list field merges: by ``merge_key`` (lists of objects), as a set, or atomically."""

    merge_key: str | None = None
    as_set: bool = False

    @property
    def atomic(self) -> bool:
        return self.merge_key is None and not self.as_set


ATOMIC = ListStrategy()
SET = ListStrategy(as_set=True)


def _by(key: str) -> ListStrategy:
    return ListStrategy(merge_key=key)


# Paths use "*" for "every element of a list".  The tables mirror the Go struct tags.
_METADATA = {
    ("metadata", "ownerReferences"): _by("uid"),
    ("metadata", "finalizers"): SET,
}

_CONTAINER = {
    ("env",): _by("name"),
    ("ports",): _by("containerPort"),
    ("volumeMounts",): _by("mountPath"),
    ("volumeDevices",): _by("devicePath"),
}


def _pod_spec(prefix: tuple[str, ...]) -> dict[tuple[str, ...], ListStrategy]:
    table = {
        (*prefix, "volumes"): _by("name"),
        (*prefix, "imagePullSecrets"): _by("name"),
        (*prefix, "hostAliases"): _by("ip"),
        (*prefix, "topologySpreadConstraints"): _by("topologyKey"),
        (*prefix, "schedulingGates"): _by("name"),
        (*prefix, "resourceClaims"): _by("name"),
    }
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        table[(*prefix, containers)] = _by("name")
        for path, strategy in _CONTAINER.items():
            table[(*prefix, containers, "*", *path)] = strategy
    return table


def _template_metadata(prefix: tuple[str, ...]) -> dict[tuple[str, ...], ListStrategy]:
    return {prefix + path: strategy for path, strategy in _METADATA.items()}


_CONDITIONS: dict[tuple[str, ...], ListStrategy] = {("status", "conditions"): _by("type")}

_STRATEGIES_BY_KIND: dict[str, dict[tuple[str, ...], ListStrategy]] = {
    "Pod": {
        **_pod_spec(("spec",)),
        **_CONDITIONS,
        ("status", "podIPs"): _by("ip"),
        ("status", "hostIPs"): _by("ip"),
    },
    **{kind: {
        **_pod_spec(("spec", "template", "spec")),
        **_template_metadata(("spec", "template")),
        **_CONDITIONS,
    } for kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job")},
    "ControllerRevision": {},
    "Service": {("spec", "ports"): _by("port"), **_CONDITIONS},
    "Node": {
        **_CONDITIONS,
        ("status", "addresses"): _by("type"),
        ("spec", "podCIDRs"): SET,
    },
    "Namespace": dict(_CONDITIONS),
    "ServiceAccount": {("secrets",): _by("name")},
    "PodDisruptionBudget": dict(_CONDITIONS),
    "ConfigMap": {},
    "Secret": {},
    "Lease": {},
    "Endpoints": {},
    "Event": {},
    "Role": {},
    "ClusterRole": {},
    "RoleBinding": {},
    "ClusterRoleBinding": {},
}


def strategic_merge_supported(kind: str) -> bool:
    """Whether ``kind`` is a built-in kind this module knows the merge keys of."""
    return kind in _STRATEGIES_BY_KIND


def _strategy(kind: str, path: tuple[str, ...]) -> ListStrategy:
    if path in _METADATA:
        return _METADATA[path]
    return _STRATEGIES_BY_KIND.get(kind, {}).get(path, ATOMIC)


def list_merge_key(kind: str, path: tuple[str, ...]) -> str | None:
    """The merge key of the list at ``path`` ("*" for list elements) in a built-in ``kind``,
    None when that list is atomic or a set."""
    return _strategy(kind, path).merge_key


def _is_directive(key: str) -> bool:
    return (
        key in (PATCH_DIRECTIVE, RETAIN_KEYS_DIRECTIVE)
        or key.startswith(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
        or key.startswith(SET_ELEMENT_ORDER_PREFIX)
    )


def _strip_directives(value: Any) -> Any:
    """A deep copy of a patch value with every directive removed (directives are never stored).

    Maps marked ``$patch: delete`` inside new values vanish, like Kubernetes does.
    """
    if isinstance(value, Mapping):
        return _strip_map(value)
    if isinstance(value, list):
        return _strip_list(value)
    return copy.deepcopy(value)


def _strip_map(value: Mapping[str, Any]) -> dict[str, Any]:
    """`_strip_directives` of a map (typed as one for the callers that know it is)."""
    return {
        key: _strip_directives(item)
        for key, item in value.items()
        if not _is_directive(key) and item is not None
    }


def _strip_list(value: list[Any]) -> list[Any]:
    """`_strip_directives` of a list (typed as one for the callers that know it is)."""
    return [
        _strip_directives(item)
        for item in value
        if not (isinstance(item, Mapping) and item.get(PATCH_DIRECTIVE) == "delete")
        and not (isinstance(item, Mapping) and item.get(PATCH_DIRECTIVE) == "replace"
                 and len(item) == 1)
    ]


def _path_text(path: tuple[str, ...]) -> str:
    return ".".join(part for part in path if part != "*") or "<root>"


def _merge_map(
    original: Mapping[str, Any], patch: Mapping[str, Any], kind: str, path: tuple[str, ...]
) -> dict[str, Any]:
    directive = patch.get(PATCH_DIRECTIVE)
    if directive is not None:
        if directive == "replace":
            return _strip_map(patch)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(f"unknown patch type: {directive} in map: {_path_text(path)}")
    result = copy.deepcopy(dict(original))

    retain_keys = patch.get(RETAIN_KEYS_DIRECTIVE)
    if retain_keys is not None:
        if not isinstance(retain_keys, list):
            raise PatchError(f"$retainKeys must be a list of strings at {_path_text(path)}")
        for key, value in patch.items():
            if not _is_directive(key) and value is not None and key not in retain_keys:
                raise PatchError(
                    f'the key "{key}" in the patch is not in $retainKeys at {_path_text(path)}'
                )
        result = {key: value for key, value in result.items() if key in retain_keys}

    for key, value in patch.items():
        if not key.startswith(DELETE_FROM_PRIMITIVE_LIST_PREFIX):
            continue
        field = key[len(DELETE_FROM_PRIMITIVE_LIST_PREFIX):]
        if not isinstance(value, list):
            raise PatchError(f"{key} must be a list at {_path_text(path)}")
        current = result.get(field)
        if isinstance(current, list):
            remaining = [item for item in current if item not in value]
            if remaining or field in patch:
                result[field] = remaining
            else:
                result.pop(field)

    for key, value in patch.items():
        if _is_directive(key):
            continue
        child = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            current = result.get(key)
            if value.get(PATCH_DIRECTIVE) == "delete":
                result.pop(key, None)
                continue
            base = current if isinstance(current, Mapping) else {}
            result[key] = _merge_map(base, value, kind, child)
        elif isinstance(value, list):
            current = result.get(key)
            items = current if isinstance(current, list) else []
            result[key] = _merge_list(items, value, kind, child)
        else:
            result[key] = copy.deepcopy(value)

    for key, order in patch.items():
        if not key.startswith(SET_ELEMENT_ORDER_PREFIX):
            continue
        field = key[len(SET_ELEMENT_ORDER_PREFIX):]
        if isinstance(result.get(field), list) and isinstance(order, list):
            result[field] = _apply_element_order(
                result[field], order, _strategy(kind, (*path, field))
            )
    return result


def _element_identity(item: Any, strategy: ListStrategy) -> Any:
    if strategy.merge_key is not None:
        if isinstance(item, Mapping):
            return json.dumps(item.get(strategy.merge_key), sort_keys=True)
        return None
    return json.dumps(item, sort_keys=True)


def _apply_element_order(
    merged: list[Any], order: list[Any], strategy: ListStrategy
) -> list[Any]:
    """Honour ``$setElementOrder``: listed elements take the listed order, in the slots
    the listed elements occupy, so elements the patch does not mention stay where they were."""
    if strategy.atomic:
        return merged
    rank = {_element_identity(item, strategy): position for position, item in enumerate(order)}
    slots = [
        index for index, item in enumerate(merged)
        if _element_identity(item, strategy) in rank
    ]
    ordered = sorted(
        (merged[index] for index in slots),
        key=lambda item: rank[_element_identity(item, strategy)],
    )
    result = list(merged)
    for slot, item in zip(slots, ordered, strict=True):
        result[slot] = item
    return result


def _merge_list(
    original: list[Any], patch: list[Any], kind: str, path: tuple[str, ...]
) -> list[Any]:
    strategy = _strategy(kind, path)
    if strategy.atomic:
        return _strip_list(patch)
    replace_markers = [
        item for item in patch
        if isinstance(item, Mapping) and item.get(PATCH_DIRECTIVE) == "replace"
    ]
    if replace_markers:
        return _strip_list(
            [item for item in patch if not any(item is marker for marker in replace_markers)]
        )
    if strategy.merge_key is None:
        return _merge_primitive_set(original, patch, path)
    return _merge_by_key(original, patch, strategy.merge_key, kind, path)


def _merge_primitive_set(
    original: list[Any], patch: list[Any], path: tuple[str, ...]
) -> list[Any]:
    """Lists of primitives with patchStrategy merge (finalizers): a union, original first."""
    merged = copy.deepcopy(original)
    seen = {json.dumps(item, sort_keys=True) for item in merged}
    for item in patch:
        if isinstance(item, Mapping | list):
            raise PatchError(
                f"{_path_text(path)}: a list of primitives cannot contain {json.dumps(item)}"
            )
        identity = json.dumps(item, sort_keys=True)
        if identity not in seen:
            seen.add(identity)
            merged.append(item)
    return merged


def _merge_by_key(
    original: list[Any], patch: list[Any], merge_key: str, kind: str, path: tuple[str, ...]
) -> list[Any]:
    """Lists of objects with a merge key: patch elements update or add, ``$patch: delete``
    removes the element with that key."""
    merged = copy.deepcopy(original)
    element_path = (*path, "*")
    for item in patch:
        if not isinstance(item, Mapping):
            raise PatchError(
                f"{_path_text(path)}: expected a list of objects merged by {merge_key!r}, "
                f"got {json.dumps(item)}"
            )
        if merge_key not in item:
            raise PatchError(
                f"map: {json.dumps(_strip_directives(item), sort_keys=True)} does not contain "
                f"declared merge key: {merge_key}"
            )
        key_value = item[merge_key]
        position = next(
            (
                index for index, existing in enumerate(merged)
                if isinstance(existing, Mapping) and existing.get(merge_key) == key_value
            ),
            None,
        )
        directive = item.get(PATCH_DIRECTIVE)
        if directive == "delete":
            merged = [
                existing for existing in merged
                if not (isinstance(existing, Mapping) and existing.get(merge_key) == key_value)
            ]
        elif position is None:
            merged.append(_merge_map({}, item, kind, element_path))
        else:
            merged[position] = _merge_map(merged[position], item, kind, element_path)
    return merged


def apply_strategic_merge_patch(
    target: Mapping[str, Any], patch: Mapping[str, Any], kind: str
) -> dict[str, Any]:
    """Kubernetes strategic merge patch of a built-in ``kind``.

    Lists merge by the merge keys Kubernetes declares for them (containers by name, ports by
    containerPort, conditions by type, ...); other lists are replaced whole.  The directives
    ``$patch``, ``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and ``$setElementOrder/<f>``
    are honoured and never end up in the result.  For kinds it does not know (custom
    resources, which kube-apiserver refuses strategic merge for with 415) only the metadata
    lists merge (finalizers, ownerReferences); every other list is atomic.
    """
    if not isinstance(patch, Mapping):
        raise PatchError("a strategic merge patch must be a JSON object")
    if not isinstance(target, Mapping):
        raise PatchError("a strategic merge patch applies to a JSON object")
    return _merge_map(target, patch, kind, ())

