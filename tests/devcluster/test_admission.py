"""ValidatingAdmissionPolicy served and enforced by the local control plane, through the real
kubectl: discovery and tables, policies that do not compile refused, a denial worded as
kube-apiserver words it, Warn as a Warning header, policies never applied to the control
plane's own writes or to the policy objects; and ClusterRole aggregation into the bootstrap
view/edit/admin roles as kube-controller-manager fills them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from gencluster_testing.devcluster_process import DevClusterProcess

pytestmark = pytest.mark.integration

NAMESPACE = "admission-test"
POLICY = {
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "small-configmaps"},
    "spec": {
        "matchConstraints": {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
            "resources": ["configmaps"]}]},
        "matchConditions": [{"name": "not-admins", "expression":
                             "!('system:masters' in request.userInfo.groups)"}],
        "validations": [
            {"expression": "!has(object.data) || object.data.size() <= 1",
             "messageExpression": "'at most one key, ' + request.userInfo.username + "
                                  "' wrote ' + string(object.data.size())"},
            {"expression": "oldObject == null || !has(oldObject.data) || "
                           "!('frozen' in oldObject.data)",
             "message": "frozen", "reason": "Forbidden"}]},
}


def binding(name: str, actions: list[str]) -> dict:
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": "small-configmaps", "validationActions": actions,
                     "matchResources": {"namespaceSelector": {"matchLabels": {
                         "kubernetes.io/metadata.name": NAMESPACE}}}}}


def configmap(name: str, **data: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": NAMESPACE}, "data": data})


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[DevClusterProcess]:
    dev_cluster.kubectl("create", "namespace", NAMESPACE)
    dev_cluster.kubectl("create", "role", "cm-writer", "-n", NAMESPACE,
                        "--verb=get,list,create,update,patch", "--resource=configmaps")
    dev_cluster.kubectl("create", "rolebinding", "sam-writes", "-n", NAMESPACE,
                        "--role=cm-writer", "--user=sam")
    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    yield dev_cluster


def test_the_api_is_discovered_and_printed(cluster: DevClusterProcess) -> None:
    resources = cluster.kubectl("api-resources", "--api-group=admissionregistration.k8s.io")
    rows = [line.split() for line in resources.stdout.splitlines()[1:]]
    assert ["validatingadmissionpolicies", "admissionregistration.k8s.io/v1", "false",
            "ValidatingAdmissionPolicy"] in rows
    assert ["validatingadmissionpolicybindings", "admissionregistration.k8s.io/v1", "false",
            "ValidatingAdmissionPolicyBinding"] in rows
    table = cluster.kubectl("get", "validatingadmissionpolicies", "small-configmaps")
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"]
    assert row.split()[:3] == ["small-configmaps", "2", "<unset>"]
    stored = json.loads(cluster.kubectl("get", "validatingadmissionpolicy", "small-configmaps",
                                        "-o", "json").stdout)
    assert stored["spec"]["failurePolicy"] == "Fail"


def test_a_policy_that_does_not_compile_is_refused(cluster: DevClusterProcess) -> None:
    bad = {**POLICY, "metadata": {"name": "broken"},
           "spec": {**POLICY["spec"], "validations": [{"expression": "object.data.("}]}}
    created = cluster.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert created.returncode != 0
    assert created.stderr.startswith(
        'The ValidatingAdmissionPolicy "broken" is invalid: spec.validations[0].expression: '
        'Invalid value: "object.data.(": compilation failed: ')
    missing = cluster.kubectl("get", "validatingadmissionpolicy", "broken", check=False)
    assert missing.returncode != 0


def test_a_denial_is_worded_as_kube_apiserver_words_it(cluster: DevClusterProcess) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(binding("deny", ["Deny"])))
    try:
        created = cluster.kubectl("create", "-f", "-", "--as", "sam",
                                  input=configmap("two", a="1", b="2"), check=False)
        assert created.returncode != 0
        # kubectl prints a 422 with causes this way (the Kubernetes documentation shows the
        # same `is invalid: : ValidatingAdmissionPolicy ...` for a real cluster)
        assert created.stderr.strip() == (
            'The configmaps "two" is invalid: : ValidatingAdmissionPolicy \'small-configmaps\' '
            "with binding 'deny' denied request: at most one key, sam wrote 2")
        # the admin is outside the policy's matchConditions
        cluster.kubectl("create", "-f", "-", input=configmap("frozen", frozen="yes"))
        updated = cluster.kubectl("patch", "configmap", "frozen", "-n", NAMESPACE, "--as",
                                  "sam", "-p", '{"data":{"frozen":"no"}}', check=False)
        assert updated.stderr.strip() == (
            'Error from server (Forbidden): configmaps "frozen" is forbidden: '
            "ValidatingAdmissionPolicy 'small-configmaps' with binding 'deny' denied "
            "request: frozen")
        assert cluster.kubectl("get", "configmap", "frozen", "-n", NAMESPACE, "-o",
                               "jsonpath={.data.frozen}").stdout == "yes"
        one = cluster.kubectl("create", "-f", "-", "--as", "sam", input=configmap("one", a="1"),
                              check=False)
        assert one.returncode == 0, one.stderr
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", "deny")


def test_warn_lets_the_request_through_with_a_warning(cluster: DevClusterProcess) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(binding("warn", ["Warn"])))
    try:
        created = cluster.kubectl("create", "-f", "-", "--as", "sam",
                                  input=configmap("three", a="1", b="2", c="3"))
        assert ("Warning: Validation failed for ValidatingAdmissionPolicy 'small-configmaps' "
                "with binding 'warn': at most one key, sam wrote 3") in created.stderr
        assert "configmap/three created" in created.stdout
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", "warn")


def test_cluster_role_aggregation_fills_view_edit_and_admin(cluster: DevClusterProcess) -> None:
    extra = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "csrv-view", "labels": {
                 "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
             "rules": [{"apiGroups": ["gencluster.io"], "resources": ["clusteredservers"],
                        "verbs": ["get", "list"]}]}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(extra))

    def rules(name: str) -> list[dict]:
        role = json.loads(cluster.kubectl("get", "clusterrole", name, "-o", "json").stdout)
        return role.get("rules") or []

    for name in ("view", "edit", "admin"):  # view feeds edit, edit feeds admin
        assert extra["rules"][0] in rules(name), name
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": [
        "create", "delete", "deletecollection", "patch", "update"]} not in rules("view")
    cluster.kubectl("create", "rolebinding", "vic-views", "-n", NAMESPACE,
                    "--clusterrole=view", "--user=vic")
    can = cluster.kubectl("auth", "can-i", "list", "clusteredservers.gencluster.io", "-n",
                          NAMESPACE, "--as", "vic", check=False)
    assert can.stdout.strip() == "yes"
    # gathering roles takes cluster-admin: `create clusterroles` is not enough
    cluster.kubectl("create", "clusterrole", "role-maker", "--verb=create",
                    "--resource=clusterroles.rbac.authorization.k8s.io")
    cluster.kubectl("create", "clusterrolebinding", "mallory-makes-roles",
                    "--clusterrole=role-maker", "--user=mallory")
    gatherer = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "gatherer"}, "aggregationRule": {"clusterRoleSelectors": [
                    {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}]}}
    refused = cluster.kubectl("create", "-f", "-", "--as", "mallory",
                              input=json.dumps(gatherer), check=False)
    assert refused.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": clusterroles.rbac.'
        'authorization.k8s.io "gatherer" is forbidden: must have cluster-admin privileges to '
        "use the aggregationRule")
    cluster.kubectl("delete", "clusterrole", "csrv-view")
    for name in ("view", "edit", "admin"):
        assert extra["rules"][0] not in rules(name), name
    cannot = cluster.kubectl("auth", "can-i", "list", "clusteredservers.gencluster.io", "-n",
                             NAMESPACE, "--as", "vic", check=False)
    assert (cannot.returncode, cannot.stdout.strip()) == (1, "no")
