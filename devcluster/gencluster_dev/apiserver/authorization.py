"""The API server's authorization shell: RBAC on every request, impersonation, the access
reviews `kubectl auth can-i` sends, the escalation check on RBAC writes, and the bootstrap
ClusterRoles every cluster has.

The decisions are `machinery.rbac`'s (pure); this module reads the RBAC objects from the
store and knows who the current request is (a context variable set per request, so that the
escalation check deep in a write sees the writer without threading it through every call).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import Any

from gencluster_dev.apiserver.auth import Identity
from gencluster_dev.machinery import rbac
from gencluster_dev.machinery.errors import ApiError, bad_request
from gencluster_dev.machinery.request_info import RequestInfo
from gencluster_dev.machinery.resources import ResourceKey, ResourceType
from gencluster_dev.machinery.store import Store

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES: ResourceKey = (RBAC_GROUP, "roles")
CLUSTER_ROLES: ResourceKey = (RBAC_GROUP, "clusterroles")
ROLE_BINDINGS: ResourceKey = (RBAC_GROUP, "rolebindings")
CLUSTER_ROLE_BINDINGS: ResourceKey = (RBAC_GROUP, "clusterrolebindings")
REVIEW_GROUP = "authorization.k8s.io"

CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "gencluster_dev_identity", default=None)
"""Who the request being served is (None: the API server itself, or a controller of the
local control plane writing through the store: always allowed)."""

BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
BOOTSTRAP_CLUSTER_ROLES: tuple[dict[str, Any], ...] = (
    {"metadata": {"name": "cluster-admin"}, "rules": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]}]},
    {"metadata": {"name": "system:discovery"}, "rules": [
        {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                             "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
         "verbs": ["get"]}]},
    {"metadata": {"name": "system:basic-user"}, "rules": [
        {"apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
         "verbs": ["create"]}]},
    {"metadata": {"name": "system:public-info-viewer"}, "rules": [
        {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
         "verbs": ["get"]}]},
)
FULL_AUTHORITY = ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                  {"nonResourceURLs": ["*"], "verbs": ["*"]})
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
# The user-facing roles and what kube-apiserver's bootstrap policy aggregates into them
# (the resources this control plane serves, and the usual others, as in policy.go).
BOOTSTRAP_CLUSTER_ROLES += (
    {"metadata": {"name": "admin"},
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {f"{AGGREGATE_TO}admin": "true"}}]}},
    {"metadata": {"name": "edit", "labels": {f"{AGGREGATE_TO}admin": "true"}},
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {f"{AGGREGATE_TO}edit": "true"}}]}},
    {"metadata": {"name": "view", "labels": {f"{AGGREGATE_TO}edit": "true"}},
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {f"{AGGREGATE_TO}view": "true"}}]}},
    {"metadata": {"name": "system:aggregate-to-admin",
                  "labels": {f"{AGGREGATE_TO}admin": "true"}}, "rules": [
        {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"],
         "verbs": ["create"]},
        {"apiGroups": [RBAC_GROUP], "resources": ["rolebindings", "roles"],
         "verbs": [*_WRITE, *_READ]}]},
    {"metadata": {"name": "system:aggregate-to-edit",
                  "labels": {f"{AGGREGATE_TO}edit": "true"}}, "rules": [
        {"apiGroups": [""], "resources": ["pods/attach", "pods/exec", "pods/portforward",
                                          "pods/proxy", "secrets", "services/proxy"],
         "verbs": _READ},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
        {"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec",
                                          "pods/portforward", "pods/proxy"], "verbs": _WRITE},
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps", "events", "persistentvolumeclaims",
                                          "replicationcontrollers",
                                          "replicationcontrollers/scale", "secrets",
                                          "serviceaccounts", "services", "services/proxy"],
         "verbs": _WRITE},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments",
                                              "deployments/rollback", "deployments/scale",
                                              "replicasets", "replicasets/scale",
                                              "statefulsets", "statefulsets/scale"],
         "verbs": _WRITE},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
         "verbs": _WRITE},
        {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": _WRITE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"],
         "verbs": _WRITE},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _WRITE}]},
    {"metadata": {"name": "system:aggregate-to-view",
                  "labels": {f"{AGGREGATE_TO}view": "true"}}, "rules": [
        {"apiGroups": [""], "resources": [
            "configmaps", "endpoints", "persistentvolumeclaims",
            "persistentvolumeclaims/status", "pods", "replicationcontrollers",
            "replicationcontrollers/scale", "serviceaccounts", "services", "services/status"],
         "verbs": _READ},
        {"apiGroups": [""], "resources": [
            "bindings", "events", "limitranges", "namespaces/status", "pods/log",
            "pods/status", "replicationcontrollers/status", "resourcequotas",
            "resourcequotas/status"], "verbs": _READ},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
        {"apiGroups": ["apps"], "resources": [
            "controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
            "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
            "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"],
         "verbs": _READ},
        {"apiGroups": ["autoscaling"], "resources": [
            "horizontalpodautoscalers", "horizontalpodautoscalers/status"], "verbs": _READ},
        {"apiGroups": ["batch"], "resources": ["cronjobs", "cronjobs/status", "jobs",
                                               "jobs/status"], "verbs": _READ},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets",
                                                "poddisruptionbudgets/status"],
         "verbs": _READ},
        {"apiGroups": ["networking.k8s.io"], "resources": [
            "ingresses", "ingresses/status", "networkpolicies"], "verbs": _READ}]},
)
BOOTSTRAP_BINDINGS: tuple[tuple[str, str], ...] = (
    ("cluster-admin", "system:masters"),
    ("system:discovery", rbac.AUTHENTICATED),
    ("system:basic-user", rbac.AUTHENTICATED),
    ("system:public-info-viewer", rbac.AUTHENTICATED),
)


def bootstrap_objects() -> list[tuple[ResourceKey, dict[str, Any]]]:
    """kube-apiserver's bootstrap policy, the part clients rely on: discovery and self
    reviews for every authenticated user, cluster-admin for system:masters."""
    objects: list[tuple[ResourceKey, dict[str, Any]]] = []
    for role in BOOTSTRAP_CLUSTER_ROLES:
        body: dict[str, Any] = {
            "apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
            "metadata": {**role["metadata"],
                         "labels": {**BOOTSTRAP_LABELS, **role["metadata"].get("labels", {})},
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": role.get("rules") or []}
        if "aggregationRule" in role:
            body["aggregationRule"] = role["aggregationRule"]
        objects.append((CLUSTER_ROLES, body))
    for role_name, group in BOOTSTRAP_BINDINGS:
        objects.append((CLUSTER_ROLE_BINDINGS, {
            "apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role_name, "labels": dict(BOOTSTRAP_LABELS),
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role_name},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}]}))
    return objects


def aggregate(store: Store) -> None:
    """kube-controller-manager's clusterrole-aggregation controller, run after every
    ClusterRole write or delete: each ClusterRole with an `aggregationRule` gets the rules of
    the ClusterRoles its selectors pick, until nothing changes (`edit` feeds `admin`). Done
    synchronously, so a new aggregated permission holds as soon as the write is answered."""
    for _ in range(16):  # aggregation chains are short; a cycle must not spin forever
        changed = False
        roles = store.list(CLUSTER_ROLES)
        for role in roles:
            rules = rbac.aggregated_rules(role, roles)
            if rules is None or rules == (role.get("rules") or []):
                continue
            store.update(CLUSTER_ROLES, {**role, "rules": rules})
            changed = True
        if not changed:
            return


def snapshot(store: Store) -> rbac.Rbac:
    return rbac.Rbac(
        roles=store.list(ROLES), cluster_roles=store.list(CLUSTER_ROLES),
        role_bindings=store.list(ROLE_BINDINGS),
        cluster_role_bindings=store.list(CLUSTER_ROLE_BINDINGS),
    )


def is_admin(identity: Identity) -> bool:
    return rbac.MASTERS in identity.groups


def check(identity: Identity, info: RequestInfo, store: Store) -> None:
    """Raise kube-apiserver's 403 unless RBAC allows `info` for `identity`."""
    if is_admin(identity):
        return
    if not rbac.authorize(identity.username, identity.groups, info, snapshot(store)):
        raise rbac.forbidden(identity.username, info)


# -- impersonation ----------------------------------------------------------------------------


def impersonate(identity: Identity, headers: Mapping[str, str], group_headers: Sequence[str],
                store: Store) -> Identity:
    """`Impersonate-User` / `Impersonate-Group` (kubectl --as / --as-group): allowed when the
    caller may `impersonate` the user (or service account) and each group."""
    user = headers.get("Impersonate-User")
    if not user:
        if group_headers:
            raise ApiError(500, "InternalError", "Internal error occurred: requested "
                           "[Impersonate-Group] without impersonating a user")
        return identity
    if user.startswith(rbac.SERVICE_ACCOUNT_PREFIX):
        namespace, _, name = user[len(rbac.SERVICE_ACCOUNT_PREFIX):].partition(":")
        target = RequestInfo(verb="impersonate", path="", is_resource_request=True,
                             namespace=namespace, resource="serviceaccounts", name=name)
        groups: tuple[str, ...] = rbac.service_account_groups(namespace)
    else:
        target = RequestInfo(verb="impersonate", path="", is_resource_request=True,
                             resource="users", name=user)
        groups = (rbac.AUTHENTICATED,)
    _impersonation_allowed(identity, target, store)
    for group in group_headers:
        _impersonation_allowed(identity, RequestInfo(
            verb="impersonate", path="", is_resource_request=True, resource="groups",
            name=group), store)
    return Identity(user, tuple(dict.fromkeys((*group_headers, *groups))))


def _impersonation_allowed(identity: Identity, target: RequestInfo, store: Store) -> None:
    if is_admin(identity) or rbac.authorize(identity.username, identity.groups, target,
                                            snapshot(store)):
        return
    raise rbac.forbidden(identity.username, target)


# -- access reviews (kubectl auth can-i) ------------------------------------------------------


def _attributes(spec: Mapping[str, Any]) -> RequestInfo:
    resource = spec.get("resourceAttributes")
    if isinstance(resource, Mapping):
        return RequestInfo(
            verb=str(resource.get("verb") or ""), path="", is_resource_request=True,
            api_group=str(resource.get("group") or ""), namespace=str(
                resource.get("namespace") or ""), resource=str(resource.get("resource") or ""),
            subresource=str(resource.get("subresource") or ""),
            name=str(resource.get("name") or ""))
    non_resource = spec.get("nonResourceAttributes")
    if isinstance(non_resource, Mapping):
        return RequestInfo(verb=str(non_resource.get("verb") or ""),
                           path=str(non_resource.get("path") or ""))
    raise bad_request("spec.resourceAttributes or spec.nonResourceAttributes is required")


def _reason(identity: Identity, info: RequestInfo, store: Store) -> tuple[bool, str]:
    """(allowed, reason), the reason worded as the RBAC authorizer words it."""
    if is_admin(identity):
        return True, ""
    state = snapshot(store)
    for binding in state.cluster_role_bindings:
        if not rbac.bound(binding, identity.username, identity.groups, ""):
            continue
        role = state.cluster_role(binding["roleRef"]["name"]) or {}
        if any(rbac.rule_allows(rule, info) for rule in role.get("rules") or []):
            return True, (f'RBAC: allowed by ClusterRoleBinding "{binding["metadata"]["name"]}" '
                          f'of ClusterRole "{binding["roleRef"]["name"]}" to {_who(identity)}')
    for binding in state.role_bindings:
        namespace = binding["metadata"].get("namespace") or ""
        if namespace != info.namespace or not rbac.bound(
                binding, identity.username, identity.groups, namespace):
            continue
        reference = binding["roleRef"]
        role = (state.role(namespace, reference["name"]) if reference["kind"] == "Role"
                else state.cluster_role(reference["name"])) or {}
        if any(rbac.rule_allows(rule, info) for rule in role.get("rules") or []):
            return True, (f'RBAC: allowed by RoleBinding "{binding["metadata"]["name"]}/'
                          f'{namespace}" of {reference["kind"]} "{reference["name"]}" to '
                          f"{_who(identity)}")
    return False, ""


def _who(identity: Identity) -> str:
    if identity.username.startswith(rbac.SERVICE_ACCOUNT_PREFIX):
        namespace, _, name = identity.username[len(rbac.SERVICE_ACCOUNT_PREFIX):].partition(":")
        return f'ServiceAccount "{name}/{namespace}"'
    return f'User "{identity.username}"'


def review(identity: Identity, t: ResourceType, namespace: str, body: Any,
           store: Store) -> dict[str, Any]:
    """The answer to a SelfSubjectAccessReview, SubjectAccessReview,
    LocalSubjectAccessReview or SelfSubjectRulesReview: the body with `status` filled in."""
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise bad_request(f"a {t.kind} needs a spec")
    answer = {**body, "apiVersion": f"{REVIEW_GROUP}/v1", "kind": t.kind}
    answer.setdefault("metadata", {})
    answer["metadata"].setdefault("creationTimestamp", None)
    spec = body["spec"]
    if t.kind == "SelfSubjectRulesReview":
        scope = str(spec.get("namespace") or "")
        rules = [] if is_admin(identity) else rbac.rules_for(
            identity.username, identity.groups, scope, snapshot(store))
        if is_admin(identity):
            rules = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                     {"nonResourceURLs": ["*"], "verbs": ["*"]}]
        answer["status"] = {
            "resourceRules": [
                {key: list(rule[key]) for key in ("verbs", "apiGroups", "resources",
                                                   "resourceNames") if rule.get(key)}
                for rule in rules if not rule.get("nonResourceURLs")],
            "nonResourceRules": [
                {"verbs": list(rule["verbs"]), "nonResourceURLs": list(rule["nonResourceURLs"])}
                for rule in rules if rule.get("nonResourceURLs")],
            "incomplete": False,
        }
        return answer
    subject = identity
    if t.kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
        subject = Identity(str(spec.get("user") or ""), tuple(spec.get("groups") or ()))
    info = _attributes(spec)
    if t.kind == "LocalSubjectAccessReview":
        info = RequestInfo(**{**info.__dict__, "namespace": namespace})
    allowed, reason = _reason(subject, info, store)
    answer["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
    return answer


# -- escalation -------------------------------------------------------------------------------


def check_escalation(t: ResourceType, obj: Mapping[str, Any], store: Store) -> None:
    """A Role or ClusterRole may be written only with permissions the writer holds (or the
    `escalate` verb on it); a binding only to a role whose permissions the writer holds (or
    with the `bind` verb on it), as kube-apiserver's RBAC storage enforces."""
    identity = CURRENT.get()
    if identity is None or is_admin(identity) or t.group != RBAC_GROUP:
        return
    namespace = obj["metadata"].get("namespace") or ""
    name = obj["metadata"]["name"]
    state = snapshot(store)
    owned = rbac.rules_for(identity.username, identity.groups, namespace, state)
    if t.kind in ("Role", "ClusterRole"):
        special = RequestInfo(verb="escalate", path="", is_resource_request=True,
                              api_group=RBAC_GROUP, namespace=namespace, resource=t.plural,
                              name=name)
        if rbac.authorize(identity.username, identity.groups, special, state):
            return
        missing = rbac.uncovered(owned, obj.get("rules") or [])
        if missing:
            raise ApiError(403, "Forbidden", (
                f'{t.plural}.{RBAC_GROUP} "{name}" is forbidden: user "{identity.username}" '
                f"(groups={list(identity.groups)}) is attempting to grant RBAC permissions "
                f"not currently held:\n" + "\n".join(missing)),
                name=name, group=RBAC_GROUP, kind=t.plural)
        # an aggregationRule can gather anything: it takes * on *.* (policybased storage)
        if t.kind == "ClusterRole" and obj.get("aggregationRule") and rbac.uncovered(
                owned, FULL_AUTHORITY):
            raise ApiError(403, "Forbidden", (
                f'{t.plural}.{RBAC_GROUP} "{name}" is forbidden: must have cluster-admin '
                "privileges to use the aggregationRule"),
                name=name, group=RBAC_GROUP, kind=t.plural)
        return
    reference = obj.get("roleRef") or {}
    role_kind = reference.get("kind")
    special = RequestInfo(verb="bind", path="", is_resource_request=True,
                          api_group=RBAC_GROUP,
                          namespace=namespace if role_kind == "Role" else "",
                          resource="roles" if role_kind == "Role" else "clusterroles",
                          name=str(reference.get("name") or ""))
    if rbac.authorize(identity.username, identity.groups, special, state):
        return
    role = (state.role(namespace, special.name) if role_kind == "Role"
            else state.cluster_role(special.name))
    missing = rbac.uncovered(owned, (role or {}).get("rules") or [])
    if missing:
        raise ApiError(403, "Forbidden", (
            f'{t.plural}.{RBAC_GROUP} "{name}" is forbidden: user "{identity.username}" '
            f"(groups={list(identity.groups)}) is attempting to grant RBAC permissions not "
            f"currently held:\n" + "\n".join(missing)),
            name=name, group=RBAC_GROUP, kind=t.plural)
