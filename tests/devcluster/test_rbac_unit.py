"""RBAC decisions and request attributes, as kube-apiserver makes them (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_dev.machinery import rbac
from gencluster_dev.machinery.request_info import RequestInfo, request_info

pytestmark = pytest.mark.unit

SA = rbac.service_account_username("apps", "server")
SA_GROUPS = rbac.service_account_groups("apps")


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/apps/pods", {}, ("list", "", "apps", "pods", "", "")),
    ("GET", "/api/v1/namespaces/apps/pods", {"watch": "true"},
     ("watch", "", "apps", "pods", "", "")),
    ("GET", "/api/v1/namespaces/apps/pods/p-0", {}, ("get", "", "apps", "pods", "", "p-0")),
    ("GET", "/api/v1/namespaces/apps/pods/p-0/log", {},
     ("get", "", "apps", "pods", "log", "p-0")),
    ("DELETE", "/api/v1/namespaces/apps/pods", {},
     ("deletecollection", "", "apps", "pods", "", "")),
    ("PATCH", "/apis/coordination.k8s.io/v1/namespaces/apps/leases/l",
     {}, ("patch", "coordination.k8s.io", "apps", "leases", "", "l")),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/apps/leases",
     {"watch": "1", "fieldSelector": "metadata.name=l"},
     ("watch", "coordination.k8s.io", "apps", "leases", "", "l")),
    ("GET", "/api/v1/namespaces/apps", {}, ("get", "", "apps", "namespaces", "", "apps")),
    ("PUT", "/api/v1/namespaces/apps/finalize", {},
     ("update", "", "apps", "namespaces", "finalize", "apps")),
    ("POST", "/api/v1/namespaces/apps/serviceaccounts/sa/token", {},
     ("create", "", "apps", "serviceaccounts", "token", "sa")),
    ("GET", "/api/v1/namespaces/apps/pods/p-0:8080/proxy/metrics", {},
     ("get", "", "apps", "pods", "proxy", "p-0:8080")),
    ("GET", "/apis/gencluster.io/v1alpha1/clusteredservers", {},
     ("list", "gencluster.io", "", "clusteredservers", "", "")),
])
def test_request_attributes_are_derived_as_kube_apiserver_does(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    info = request_info(method, path, query)
    assert info.is_resource_request
    assert (info.verb, info.api_group, info.namespace, info.resource, info.subresource,
            info.name) == expected


@pytest.mark.parametrize("path", ["/api", "/apis", "/apis/apps", "/healthz", "/version"])
def test_discovery_and_health_paths_are_non_resource_requests(path: str) -> None:
    info = request_info("GET", path, {})
    assert not info.is_resource_request and info.verb == "get" and info.path == path


def role(namespace: str, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "rules": list(rules)}


def binding(namespace: str, role_kind: str, role_name: str,
            *subjects: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": f"{role_name}-binding"},
            "roleRef": {"kind": role_kind, "name": role_name}, "subjects": list(subjects)}


SERVER_ROLE = role("apps", "server",
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "resourceNames": ["l"], "verbs": ["get", "list", "watch", "update"]},
                   {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]})
STATE = rbac.Rbac(
    roles=[SERVER_ROLE],
    role_bindings=[binding("apps", "Role", "server",
                           {"kind": "ServiceAccount", "name": "server"})],
    cluster_roles=[{"metadata": {"name": "reader"}, "rules": [
        {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["get"]},
        {"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]}],
    cluster_role_bindings=[{"metadata": {"name": "readers"}, "roleRef": {
        "kind": "ClusterRole", "name": "reader"}, "subjects": [
        {"kind": "Group", "name": "system:serviceaccounts:apps"}]}],
)


@pytest.mark.parametrize(("method", "path", "query", "allowed"), [
    ("GET", "/api/v1/namespaces/apps/pods", {}, True),
    ("DELETE", "/api/v1/namespaces/apps/pods/p", {}, False),
    ("GET", "/api/v1/namespaces/other/pods", {}, False),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/apps/leases/l", {}, True),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/apps/leases/m", {}, False),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/apps/leases",
     {"watch": "true", "fieldSelector": "metadata.name=l"}, True),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/apps/leases", {"watch": "true"}, False),
    ("GET", "/api/v1/namespaces/other/pods/x/status", {}, True),
    ("GET", "/api/v1/namespaces/other/pods/x/log", {}, False),
    ("GET", "/metrics", {}, True),
    ("GET", "/debug/pprof", {}, True),
    ("POST", "/metrics", {}, False),
])
def test_rules_bindings_and_subjects(method: str, path: str, query: dict[str, str],
                                     allowed: bool) -> None:
    info = request_info(method, path, query)
    assert rbac.authorize(SA, SA_GROUPS, info, STATE) is allowed
    assert rbac.authorize("someone", ("system:authenticated",), info, STATE) is False
    assert rbac.authorize("admin", (rbac.MASTERS,), info, STATE) is True


def test_forbidden_bodies_are_worded_as_kube_apiserver_words_them() -> None:
    named = rbac.forbidden(SA, request_info("DELETE", "/api/v1/namespaces/apps/pods/p", {}))
    assert named.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "p" is forbidden: User "system:serviceaccount:apps:server" cannot '
                   'delete resource "pods" in API group "" in the namespace "apps"',
        "reason": "Forbidden", "details": {"name": "p", "kind": "pods"}, "code": 403,
    }
    listed = rbac.forbidden("jane", request_info(
        "GET", "/apis/gencluster.io/v1alpha1/clusteredservers", {}))
    assert listed.message == ('clusteredservers.gencluster.io is forbidden: User "jane" cannot '
                              'list resource "clusteredservers" in API group "gencluster.io" '
                              "at the cluster scope")
    sub = rbac.forbidden("jane", request_info("GET", "/api/v1/namespaces/a/pods/p/log", {}))
    assert 'cannot get resource "pods/log"' in sub.message
    path = rbac.forbidden("jane", RequestInfo(verb="get", path="/metrics"))
    assert path.message == 'forbidden: User "jane" cannot get path "/metrics"'


def test_escalation_lists_what_the_writer_does_not_hold() -> None:
    owned = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"],
              "verbs": ["delete"]}]
    assert rbac.uncovered(owned, [{"apiGroups": [""], "resources": ["pods"],
                                   "verbs": ["get"]}]) == []
    assert rbac.uncovered(owned, [{"apiGroups": [""], "resources": ["pods"],
                                   "resourceNames": ["p"], "verbs": ["delete"]}]) == []
    missing = rbac.uncovered(owned, [{"apiGroups": [""], "resources": ["pods", "secrets"],
                                      "verbs": ["delete"]}])
    assert len(missing) == 2 and all("'delete'" in m for m in missing)
    assert rbac.uncovered(owned, [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])
