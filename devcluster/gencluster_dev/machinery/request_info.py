"""What a request asks for, in authorization terms: kube-apiserver's RequestInfoFactory.

RBAC decides on these attributes, so they must be derived exactly as kube-apiserver does:
the verb from the method (`get` without a name is `list` or `watch`, `delete` without a name
is `deletecollection`), the namespace, resource, subresource and name from the path, and the
name of a list or watch from an exact `metadata.name` field selector (which is how a Role
with `resourceNames` can allow watching one Lease).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

API_PREFIXES = ("api", "apis")
GROUPLESS_PREFIXES = ("api",)
SPECIAL_VERBS = ("proxy", "watch")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
METHOD_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class RequestInfo:
    """The attributes an authorizer sees (authorizer.AttributesRecord)."""

    verb: str
    path: str
    is_resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        """`pods` or `pods/log`: what a rule's `resources` entry is compared with."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _exact_name(field_selector: str | None) -> str:
    """`metadata.name=x` (or `==`) as the only requirement on that field: x."""
    if not field_selector:
        return ""
    for term in field_selector.split(","):
        key, operator, value = _split_term(term.strip())
        if key == "metadata.name" and operator in ("=", "=="):
            return value if _valid_path_segment(value) else ""
    return ""


def _split_term(term: str) -> tuple[str, str, str]:
    for operator in ("!=", "==", "="):
        key, found, value = term.partition(operator)
        if found:
            return key.strip(), operator, value.strip()
    return term, "", ""


def _valid_path_segment(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "%" not in name


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """The attributes of `method path?query`, as kube-apiserver computes them."""
    verb = method.lower()
    parts = [p for p in path.strip("/").split("/") if p]
    non_resource = RequestInfo(verb=verb, path=path)
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts and parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            return RequestInfo(verb=verb, path=path)
        verb, parts = parts[0], parts[1:]
    else:
        verb = METHOD_VERBS.get(method.upper(), verb)
    namespace = ""
    if len(parts) > 1 and parts[0] == "namespaces":
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = subresource = name = ""
    if len(parts) >= 3 and verb != "proxy":
        subresource = parts[2]
    if len(parts) >= 2:
        name = parts[1]
    if parts:
        resource = parts[0]
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
        name = _exact_name(query.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(verb=verb, path=path, is_resource_request=True, api_group=group,
                       api_version=version, namespace=namespace, resource=resource,
                       subresource=subresource, name=name)
