"""RBAC as kube-apiserver enforces it (rbac.authorization.k8s.io/v1), as pure functions.

`authorize` walks the ClusterRoleBindings, then the RoleBindings of the request's namespace,
and allows the request when a rule of a bound role covers it: the matching of verbs, API
groups, resources (`*`, `resource/subresource`, `*/subresource`), resource names and
non-resource URLs (a trailing `*` is a prefix) is the one in kube-apiserver's
`rbac/v1` helpers. `forbidden` words the 403 exactly as kube-apiserver does, since clients
and people read it. `covers` is the escalation check: a user may grant only what they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gencluster_dev.machinery.errors import ApiError, qualified_resource
from gencluster_dev.machinery.request_info import RequestInfo
from gencluster_dev.machinery.selectors import label_selector_from_object

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Rbac:
    """The RBAC objects the decision reads (as stored: dicts)."""

    roles: Sequence[Mapping[str, Any]] = ()
    cluster_roles: Sequence[Mapping[str, Any]] = ()
    role_bindings: Sequence[Mapping[str, Any]] = ()
    cluster_role_bindings: Sequence[Mapping[str, Any]] = ()

    def role(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return next((r for r in self.roles if r["metadata"]["name"] == name
                     and r["metadata"].get("namespace") == namespace), None)

    def cluster_role(self, name: str) -> Mapping[str, Any] | None:
        return next((r for r in self.cluster_roles if r["metadata"]["name"] == name), None)


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED)


# -- matching ---------------------------------------------------------------------------------


def _verb_matches(rule: Mapping[str, Any], verb: str) -> bool:
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def _group_matches(rule: Mapping[str, Any], group: str) -> bool:
    groups = rule.get("apiGroups") or []
    return "*" in groups or group in groups


def _resource_matches(rule: Mapping[str, Any], combined: str, subresource: str) -> bool:
    for resource in rule.get("resources") or []:
        if resource == "*" or resource == combined:
            return True
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def _name_matches(rule: Mapping[str, Any], name: str) -> bool:
    names = rule.get("resourceNames") or []
    return not names or name in names


def _url_matches(rule: Mapping[str, Any], path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], request: RequestInfo) -> bool:
    if not _verb_matches(rule, request.verb):
        return False
    if not request.is_resource_request:
        return _url_matches(rule, request.path)
    return (_group_matches(rule, request.api_group)
            and _resource_matches(rule, request.combined_resource, request.subresource)
            and _name_matches(rule, request.name))


def _applies_to(subject: Mapping[str, Any], username: str, groups: Iterable[str],
                namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == username
    if kind == "Group":
        return name in set(groups)
    if kind == "ServiceAccount":
        account_namespace = subject.get("namespace") or namespace
        return bool(account_namespace) and (
            service_account_username(account_namespace, str(name)) == username)
    return False


def bound(binding: Mapping[str, Any], username: str, groups: Iterable[str],
           namespace: str) -> bool:
    groups = tuple(groups)
    return any(_applies_to(s, username, groups, namespace) for s in binding.get("subjects") or [])


def rules_for(username: str, groups: Iterable[str], namespace: str,
              rbac: Rbac) -> list[Mapping[str, Any]]:
    """Every rule that applies to the user in `namespace` ("" = cluster-scoped requests only):
    the ClusterRoles of the ClusterRoleBindings, then the roles of the namespace's
    RoleBindings (a RoleBinding to a ClusterRole grants it in that namespace only)."""
    groups = tuple(groups)
    rules: list[Mapping[str, Any]] = []
    for binding in rbac.cluster_role_bindings:
        if bound(binding, username, groups, ""):
            role = rbac.cluster_role(binding["roleRef"]["name"])
            rules += (role or {}).get("rules") or []
    if not namespace:
        return rules
    for binding in rbac.role_bindings:
        if binding["metadata"].get("namespace") != namespace:
            continue
        if not bound(binding, username, groups, namespace):
            continue
        reference = binding["roleRef"]
        role = (rbac.role(namespace, reference["name"]) if reference["kind"] == "Role"
                else rbac.cluster_role(reference["name"]))
        rules += (role or {}).get("rules") or []
    return rules


def authorize(username: str, groups: Iterable[str], request: RequestInfo, rbac: Rbac) -> bool:
    groups = tuple(groups)
    if MASTERS in groups:
        return True
    return any(rule_allows(rule, request)
               for rule in rules_for(username, groups, request.namespace, rbac))


# -- the 403 ----------------------------------------------------------------------------------


def forbidden_reason(username: str, request: RequestInfo) -> str:
    """authorization/filters' forbiddenMessage."""
    if not request.is_resource_request:
        return f'User "{username}" cannot {request.verb} path "{request.path}"'
    resource = request.combined_resource
    where = (f'in the namespace "{request.namespace}"' if request.namespace
             else "at the cluster scope")
    return (f'User "{username}" cannot {request.verb} resource "{resource}" in API group '
            f'"{request.api_group}" {where}')


def forbidden(username: str, request: RequestInfo) -> ApiError:
    """apierrors.NewForbidden for the request's group and resource (not the subresource)."""
    reason = forbidden_reason(username, request)
    if not request.is_resource_request or not request.resource:
        return ApiError(403, "Forbidden", f"forbidden: {reason}")
    what = qualified_resource(request.resource, request.api_group)
    subject = f'{what} "{request.name}"' if request.name else what
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {reason}",
                    name=request.name or None, group=request.api_group or None,
                    kind=request.resource)


# -- escalation -------------------------------------------------------------------------------


def _expand(rule: Mapping[str, Any]) -> Iterable[RequestInfo]:
    """Each (verb, group, resource, name) or (verb, URL) a rule grants, as requests."""
    for verb in rule.get("verbs") or []:
        for url in rule.get("nonResourceURLs") or []:
            yield RequestInfo(verb=verb, path=url)
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                base, _, sub = resource.partition("/")
                for name in rule.get("resourceNames") or [""]:
                    yield RequestInfo(verb=verb, path="", is_resource_request=True,
                                      api_group=group, resource=base, subresource=sub,
                                      name=name)


def _held(owned: Sequence[Mapping[str, Any]], wanted: RequestInfo) -> bool:
    """Whether `owned` rules grant `wanted`, wildcards compared as written (a `*` is held
    only through a `*`), as kube-apiserver's Covers does."""
    for rule in owned:
        if not _verb_matches(rule, wanted.verb):
            continue
        if not wanted.is_resource_request:
            if _url_matches(rule, wanted.path):
                return True
            continue
        if not _group_matches(rule, wanted.api_group):
            continue
        if not _resource_matches(rule, wanted.combined_resource, wanted.subresource):
            continue
        if wanted.name and _name_matches(rule, wanted.name):
            return True
        if not wanted.name and not rule.get("resourceNames"):
            return True
    return False


def uncovered(owned: Sequence[Mapping[str, Any]],
              wanted_rules: Iterable[Mapping[str, Any]]) -> list[str]:
    """The permissions of `wanted_rules` that `owned` does not grant, described; empty when
    the owner may grant all of them."""
    missing = []
    for rule in wanted_rules:
        for wanted in _expand(rule):
            if not _held(owned, wanted):
                missing.append(
                    f"{{verbs: [{wanted.verb}], URL: {wanted.path}}}" if not
                    wanted.is_resource_request else
                    f"{{APIGroups: [{wanted.api_group!r}], Resources: "
                    f"[{wanted.combined_resource!r}]"
                    + (f", ResourceNames: [{wanted.name!r}]" if wanted.name else "")
                    + f", Verbs: [{wanted.verb!r}]}}")
    return missing


# -- ClusterRole aggregation ------------------------------------------------------------------


def aggregated_rules(role: Mapping[str, Any],
                     cluster_roles: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """The rules kube-controller-manager's clusterrole-aggregation controller writes into a
    ClusterRole with an `aggregationRule`: for each selector in order, the ClusterRoles it
    selects (by name, the role itself skipped), each rule once. None for a role without an
    aggregationRule (its rules are its own)."""
    aggregation = role.get("aggregationRule")
    if not isinstance(aggregation, Mapping):
        return None
    name = role["metadata"]["name"]
    rules: list[dict[str, Any]] = []
    for selector in aggregation.get("clusterRoleSelectors") or []:
        matches = label_selector_from_object(selector)
        for other in sorted(cluster_roles, key=lambda r: r["metadata"]["name"]):
            if other["metadata"]["name"] == name:
                continue
            if not matches.matches(other["metadata"].get("labels") or {}):
                continue
            for rule in other.get("rules") or []:
                if dict(rule) not in rules:
                    rules.append(dict(rule))
    return rules
