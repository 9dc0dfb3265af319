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
