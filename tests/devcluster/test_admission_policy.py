"""ValidatingAdmissionPolicy decisions (machinery.admission_policy): matching, CEL over
object/oldObject/request, messages and the denial worded as kube-apiserver's validating
dispatcher words it; and the chart's own policy against the relabelling it exists to stop."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from gencluster_dev.machinery import admission_policy as vap
from gencluster_dev.machinery import rbac

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "gencluster"
POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "b-0", "namespace": "apps", "uid": "u-b0",
                 "labels": {"gencluster.io/cluster": "b", "gencluster.io/role": "standby"},
                 "ownerReferences": [{"apiVersion": "gencluster.io/v1alpha1",
                                      "kind": "ClusteredServer", "name": "b", "uid": "uid-b",
                                      "controller": True}]},
    "spec": {"containers": [{"name": "server", "image": "x"}]},
}
POD_ACCOUNT = vap.UserInfo("system:serviceaccount:apps:b-gencluster",
                           ("system:serviceaccounts", "system:serviceaccounts:apps",
                            "system:authenticated"))
NAMESPACE = {"metadata": {"name": "apps", "labels": {"kubernetes.io/metadata.name": "apps"}}}


def update(new: dict[str, Any], old: dict[str, Any] = POD, user: vap.UserInfo = POD_ACCOUNT,
           ) -> vap.Attributes:
    return vap.Attributes(operation="UPDATE", group="", version="v1", resource="pods",
                          kind="Pod", namespace="apps", name=new["metadata"]["name"],
                          user=user, object=new, old_object=old, namespace_object=NAMESPACE)


def relabelled(**labels: str) -> dict[str, Any]:
    pod = copy.deepcopy(POD)
    pod["metadata"]["labels"].update(labels)
    return pod


def policy(validations: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    body = {"metadata": {"name": "p"}, "spec": {
        "matchConstraints": {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
            "resources": ["pods"]}]},
        "validations": validations, **spec}}
    vap.default_policy(body)
    return body


def binding(actions: tuple[str, ...] = ("Deny",), **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "b"},
            "spec": {"policyName": "p", "validationActions": list(actions), **spec}}


# -- the denial -------------------------------------------------------------------------------


def test_a_failed_validation_is_denied_with_kube_apiservers_message_and_code() -> None:
    outcome = vap.admit([policy([{"expression": "object.metadata.name == 'other'"}])],
                        [binding()], update(POD))
    assert outcome.denial is not None
    text = ("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: failed expression: "
            "object.metadata.name == 'other'")
    assert outcome.denial.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'pods "b-0" is forbidden: {text}', "reason": "Invalid",
        "details": {"name": "b-0", "kind": "pods", "causes": [{"message": text}]},
        "code": 422}


def test_the_validation_reason_sets_the_code_and_message_expression_the_message() -> None:
    outcome = vap.admit([policy([{
        "expression": "false", "reason": "Forbidden", "message": "static",
        "messageExpression": "request.userInfo.username + ' asked ' + request.operation"}])],
        [binding()], update(POD))
    assert outcome.denial is not None and outcome.denial.code == 403
    assert outcome.denial.reason == "Forbidden"
    assert outcome.denial.message.endswith(
        "denied request: system:serviceaccount:apps:b-gencluster asked UPDATE")


@pytest.mark.parametrize("message_expression", ["''", "'two\\nlines'", "1 + 1", "object.nope"])
def test_an_unusable_message_expression_falls_back_to_the_message(
    message_expression: str,
) -> None:
    outcome = vap.admit([policy([{"expression": "false", "message": "static",
                                  "messageExpression": message_expression}])],
                        [binding()], update(POD))
    assert outcome.denial is not None
    assert outcome.denial.message.endswith("denied request: static")


def test_warn_and_audit_actions_admit_with_a_warning() -> None:
    outcome = vap.admit([policy([{"expression": "false", "message": "no"}])],
                        [binding(("Warn", "Audit"))], update(POD))
    assert outcome.denial is None
    assert outcome.warnings == [
        "Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': no"]
    assert outcome.audit == ["p/b: no"]


def test_an_expression_error_is_decided_by_the_failure_policy() -> None:
    failing = [{"expression": "object.spec.missing == 1"}]
    denied = vap.admit([policy(failing)], [binding()], update(POD)).denial
    assert denied is not None
    assert ("denied request: expression 'object.spec.missing == 1' resulted in error: "
            "no such key: missing") in denied.message
    assert vap.admit([policy(failing, failurePolicy="Ignore")], [binding()],
                     update(POD)).denial is None


# -- matching ---------------------------------------------------------------------------------


def test_operations_resources_and_selectors_limit_what_is_validated() -> None:
    deny = [{"expression": "false"}]
    request = update(POD)
    create = vap.Attributes(**{**request.__dict__, "operation": "CREATE", "old_object": None})
    assert vap.admit([policy(deny)], [binding()], create).denial is None
    status = vap.Attributes(**{**request.__dict__, "subresource": "status"})
    assert vap.admit([policy(deny)], [binding()], status).denial is None
    elsewhere = binding(matchResources={"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "other"}}})
    assert vap.admit([policy(deny)], [elsewhere], request).denial is None
    by_label = policy(deny, matchConstraints={
        **policy(deny)["spec"]["matchConstraints"],
        "objectSelector": {"matchLabels": {"gencluster.io/cluster": "a"}}})
    assert vap.admit([by_label], [binding()], request).denial is None
    # the selector matches the new object or the old one: relabelling into "a" is seen
    assert vap.admit([by_label], [binding()], update(relabelled(
        **{"gencluster.io/cluster": "a"}))).denial is not None
    excluded = policy(deny, matchConstraints={
        **policy(deny)["spec"]["matchConstraints"],
        "excludeResourceRules": [{"apiGroups": [""], "apiVersions": ["*"],
                                  "operations": ["*"], "resources": ["pods"],
                                  "resourceNames": ["b-0"]}]})
    assert vap.admit([excluded], [binding()], request).denial is None
    assert vap.admit([policy(deny)], [binding()], request).denial is not None
    assert vap.admit([], [binding()], request).denial is None, "a binding without its policy"


def test_match_conditions_gate_the_policy() -> None:
    deny = [{"expression": "false"}]
    admin = vap.UserInfo("admin", ("system:masters",))
    gated = policy(deny, matchConditions=[{
        "name": "service-accounts",
        "expression": "request.userInfo.username.startsWith('system:serviceaccount:')"}])
    assert vap.admit([gated], [binding()], update(POD, user=admin)).denial is None
    assert vap.admit([gated], [binding()], update(POD)).denial is not None


# -- the objects themselves -------------------------------------------------------------------


def test_bad_policies_and_bindings_are_refused_with_field_errors() -> None:
    bad = policy([{"expression": "object.("}, {"expression": "true", "reason": "Teapot"}],
                 paramKind={"apiVersion": "v1", "kind": "ConfigMap"}, failurePolicy="Maybe")
    fields = [field for _, field, _ in vap.policy_causes(bad)]
    assert fields == ["spec.paramKind", "spec.failurePolicy", "spec.validations[0].expression",
                      "spec.validations[1].reason"]
    assert [field for _, field, _ in vap.binding_causes(
        {"spec": {"policyName": "", "validationActions": ["Deny", "Warn", "Shout"]}})] == [
        "spec.policyName", "spec.validationActions[2]", "spec.validationActions"]
    assert vap.policy_causes(policy([{"expression": "true"}])) == []


# -- the chart's policy -----------------------------------------------------------------------


def chart_policy() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    chart = helm.Chart.load(str(CHART))
    try:
        rendered = chart.render({}, name="gencluster", namespace="gencluster-system",
                                is_install=True)
    finally:
        chart.close()
    text = rendered["gencluster/templates/admission-policy.yaml"]
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    policies = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"]
    bindings = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    for obj in policies:
        assert vap.policy_causes(obj) == []
        vap.default_policy(obj)
    assert all(vap.binding_causes(obj) == [] for obj in bindings)
    return policies, bindings


def test_the_charts_policy_stops_a_pod_relabelling_itself_into_a_neighbour() -> None:
    policies, bindings = chart_policy()
    outcome = vap.admit(policies, bindings, update(relabelled(**{"gencluster.io/cluster": "a"})))
    assert outcome.denial is not None and outcome.denial.code == 403
    assert outcome.denial.message == (
        "pods \"b-0\" is forbidden: ValidatingAdmissionPolicy 'gencluster-pod-labels' with "
        "binding 'gencluster-pod-labels' denied request: system:serviceaccount:apps:"
        "b-gencluster may change only the gencluster.io/role label of pod b-0")
    for changed in (relabelled(extra="x"), copy.deepcopy(POD)):
        if "extra" not in changed["metadata"]["labels"]:
            del changed["metadata"]["labels"]["gencluster.io/cluster"]
        assert vap.admit(policies, bindings, update(changed)).denial is not None
    orphaned = copy.deepcopy(POD)
    orphaned["metadata"]["ownerReferences"][0]["uid"] = "uid-a"
    denied = vap.admit(policies, bindings, update(orphaned)).denial
    assert denied is not None and "may not change the ownerReferences" in denied.message


def test_the_charts_policy_lets_the_pod_set_its_role_and_others_do_their_work() -> None:
    policies, bindings = chart_policy()
    promoted = relabelled(**{"gencluster.io/role": "active"})
    assert vap.admit(policies, bindings, update(promoted)).denial is None
    unlabelled = copy.deepcopy(promoted)
    del unlabelled["metadata"]["labels"]["gencluster.io/role"]
    assert vap.admit(policies, bindings, update(unlabelled)).denial is None
    into_a = relabelled(**{"gencluster.io/cluster": "a"})
    operator = vap.UserInfo("system:serviceaccount:gencluster-system:gencluster")
    admin = vap.UserInfo("admin", ("system:masters",))
    other_namespace = vap.UserInfo("system:serviceaccount:ci:deployer")
    for user in (operator, admin, other_namespace):
        assert vap.admit(policies, bindings, update(into_a, user=user)).denial is None, user


# -- ClusterRole aggregation ------------------------------------------------------------------


def test_aggregated_rules_follow_the_selectors_each_rule_once() -> None:
    view = {"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}
    read = {"apiGroups": ["gencluster.io"], "resources": ["clusteredservers"],
            "verbs": ["get"]}
    roles = [view,
             {"metadata": {"name": "b", "labels": {
                 "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
              "rules": [read, {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
             {"metadata": {"name": "a", "labels": {
                 "rbac.authorization.k8s.io/aggregate-to-view": "true"}}, "rules": [read]},
             {"metadata": {"name": "unlabelled"}, "rules": [{"verbs": ["*"]}]}]
    assert rbac.aggregated_rules(view, roles) == [
        read, {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    assert rbac.aggregated_rules(roles[1], roles) is None


def test_an_object_selector_never_matches_a_missing_object() -> None:
    """kube's matcher: the new object on DELETE (and the old on CREATE) is nil and matches
    no non-empty selector, even one that an object without labels would satisfy."""
    deny = [{"expression": "false"}]
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "DELETE"],
              "resources": ["pods"]}]
    unlabelled_only = policy(deny, matchConstraints={
        "resourceRules": rules,
        "objectSelector": {"matchExpressions": [{"key": "gencluster.io/cluster",
                                                 "operator": "DoesNotExist"}]}})
    labelled = update(POD)
    delete = vap.Attributes(**{**labelled.__dict__, "operation": "DELETE", "object": None})
    assert vap.admit([unlabelled_only], [binding()], delete).denial is None
    bare = copy.deepcopy(POD)
    del bare["metadata"]["labels"]
    create = vap.Attributes(**{**labelled.__dict__, "operation": "CREATE", "object": bare,
                               "old_object": None})
    assert vap.admit([unlabelled_only], [binding()], create).denial is not None


@pytest.mark.parametrize(("resource", "subresource", "matched"), [
    ("pods", "", True), ("pods", "status", False), ("pods/*", "", True),
    ("pods/*", "status", True), ("*", "status", False), ("*/status", "status", True),
    ("*/status", "", False), ("*/*", "status", True), ("pods/status", "status", True),
])
def test_resource_rules_match_as_admissions_rules_do(
    resource: str, subresource: str, matched: bool,
) -> None:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
              "resources": [resource]}]
    request = vap.Attributes(**{**update(POD).__dict__, "subresource": subresource})
    denial = vap.admit([policy([{"expression": "false"}],
                               matchConstraints={"resourceRules": rules})],
                       [binding()], request).denial
    assert (denial is not None) == matched


def test_a_false_match_condition_wins_over_a_failing_one() -> None:
    failing = {"name": "broken", "expression": "object.spec.nope == 1"}
    deny = [{"expression": "false"}]
    both = policy(deny, matchConditions=[failing, {"name": "no", "expression": "false"}])
    assert vap.admit([both], [binding()], update(POD)).denial is None
    only_failing = policy(deny, matchConditions=[failing])
    denied = vap.admit([only_failing], [binding()], update(POD)).denial
    assert denied is not None and "matchCondition 'broken'" in denied.message
    ignored = policy(deny, matchConditions=[failing], failurePolicy="Ignore")
    assert vap.admit([ignored], [binding()], update(POD)).denial is None
