"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) as kube-apiserver evaluates
it, as pure functions over the stored policies and bindings.

For each binding whose policy exists, the request must fall inside the policy's
`matchConstraints` and the binding's `matchResources` (resource rules with operations,
exclusions, namespace and object selectors); then the policy's `matchConditions` (CEL) must
all be true; then each `validations` expression is evaluated over `object`, `oldObject`,
`request`, `namespaceObject` and `variables`. A false validation is a denial worded as
kube-apiserver's validating dispatcher words it (`ValidatingAdmissionPolicy 'P' with binding
'B' denied request: MSG`, 422 Invalid unless the validation names another `reason`), or a
warning (`validationActions: [Warn]`), or an audit note. An expression that fails to run
(or a policy that cannot be configured) is decided by `failurePolicy` (Fail denies, Ignore
admits), as in kube-apiserver.

Not served: `paramKind` / `paramRef` (a policy that sets `paramKind` is refused at write
time, see `policy_causes`) and the `authorizer` CEL library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes

from gencluster_dev.machinery.cel import (
    CelCompileError,
    CelEvaluationError,
    CompiledExpression,
    compile_expression,
    evaluation_message,
    result_is_true,
    to_cel,
)
from gencluster_dev.machinery.errors import ApiError, qualified_resource
from gencluster_dev.machinery.selectors import SelectorError, label_selector_from_object

GROUP = "admissionregistration.k8s.io"
POLICIES = "validatingadmissionpolicies"
BINDINGS = "validatingadmissionpolicybindings"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
ACTIONS = ("Deny", "Warn", "Audit")
REASON_CODES = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422,
                "RequestEntityTooLarge": 413}
MAX_MESSAGE_BYTES = 5 * 1024  # celconfig.MaxEvaluatedMessageExpressionSizeBytes


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""


@dataclass(frozen=True)
class Attributes:
    """admission.Attributes: what is being done, to what, by whom."""

    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    resource: str
    kind: str
    namespace: str
    name: str
    user: UserInfo
    subresource: str = ""
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    namespace_object: Mapping[str, Any] | None = None
    dry_run: bool = False


@dataclass
class Outcome:
    """What the policies decided: `denial` is the error to return (None: admitted);
    `warnings` go out as Warning headers, `audit` as audit annotations would."""

    denial: ApiError | None = None
    warnings: list[str] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)


_compiled = lru_cache(maxsize=1024)(compile_expression)
"""Policies are evaluated on every matching write: parse each expression once."""


# -- validation of the objects themselves -----------------------------------------------------


def _compiles(path: str, expression: Any) -> list[tuple[str, str, str]]:
    if not isinstance(expression, str) or not expression.strip():
        return [("FieldValueRequired", path, "Required value")]
    try:
        compile_expression(expression)
    except CelCompileError as error:
        return [("FieldValueInvalid", path,
                 f"Invalid value: {_go_quote(expression)}: compilation failed: {error}")]
    return []


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rules_causes(path: str, rules: Any) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    if rules is None:
        return causes
    if not isinstance(rules, list):
        return [("FieldValueInvalid", path, "Invalid value: must be a list")]
    for i, rule in enumerate(rules):
        where = f"{path}[{i}]"
        if not isinstance(rule, Mapping):
            causes.append(("FieldValueInvalid", where, "Invalid value: must be an object"))
            continue
        for key in ("apiGroups", "apiVersions", "resources", "operations"):
            if not rule.get(key):
                causes.append(("FieldValueRequired", f"{where}.{key}", "Required value"))
        for j, operation in enumerate(rule.get("operations") or []):
            if operation != "*" and operation not in OPERATIONS:
                causes.append(("FieldValueNotSupported", f"{where}.operations[{j}]",
                               f"Unsupported value: {_go_quote(str(operation))}: supported "
                               'values: "*", "CONNECT", "CREATE", "DELETE", "UPDATE"'))
    return causes


def _selector_causes(path: str, selector: Any) -> list[tuple[str, str, str]]:
    if selector is None:
        return []
    try:
        label_selector_from_object(selector)
    except (SelectorError, AttributeError, TypeError) as error:
        return [("FieldValueInvalid", path, f"Invalid value: {error}")]
    return []


def policy_causes(policy: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The field errors of a ValidatingAdmissionPolicy (reason, field, message), empty when
    it can be stored: every expression compiles, enums are known, and `paramKind`, which
    this control plane does not serve, is refused rather than silently ignored."""
    spec = policy.get("spec")
    if not isinstance(spec, Mapping):
        return [("FieldValueRequired", "spec", "Required value")]
    causes: list[tuple[str, str, str]] = []
    if spec.get("paramKind") is not None:
        causes.append(("FieldValueForbidden", "spec.paramKind",
                       "Forbidden: parameter resources are not supported by the gencluster "
                       "local control plane"))
    if spec.get("failurePolicy") not in (None, "Fail", "Ignore"):
        causes.append(("FieldValueNotSupported", "spec.failurePolicy",
                       f"Unsupported value: {_go_quote(str(spec.get('failurePolicy')))}: "
                       'supported values: "Fail", "Ignore"'))
    constraints = spec.get("matchConstraints")
    if not isinstance(constraints, Mapping) or not constraints.get("resourceRules"):
        causes.append(("FieldValueRequired", "spec.matchConstraints.resourceRules",
                       "Required value"))
    else:
        causes += _match_resources_causes("spec.matchConstraints", constraints)
    validations = spec.get("validations") or []
    if not validations and not spec.get("auditAnnotations"):
        causes.append(("FieldValueRequired", "spec.validations",
                       "Required value: validations or auditAnnotations must contain at least "
                       "one item"))
    for i, validation in enumerate(validations):
        where = f"spec.validations[{i}]"
        causes += _compiles(f"{where}.expression", (validation or {}).get("expression"))
        if (validation or {}).get("messageExpression"):
            causes += _compiles(f"{where}.messageExpression", validation["messageExpression"])
        reason = (validation or {}).get("reason")
        if reason is not None and reason not in REASON_CODES:
            causes.append(("FieldValueNotSupported", f"{where}.reason",
                           f"Unsupported value: {_go_quote(str(reason))}: supported values: "
                           '"Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized"'))
    for i, condition in enumerate(spec.get("matchConditions") or []):
        causes += _compiles(f"spec.matchConditions[{i}].expression",
                            (condition or {}).get("expression"))
    for i, variable in enumerate(spec.get("variables") or []):
        causes += _compiles(f"spec.variables[{i}].expression", (variable or {}).get("expression"))
    return causes


def _match_resources_causes(
    where: str, resources: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """The field errors of a MatchResources (a policy's matchConstraints, a binding's
    matchResources: one type in kube-apiserver)."""
    return [
        *_rules_causes(f"{where}.resourceRules", resources.get("resourceRules")),
        *_rules_causes(f"{where}.excludeResourceRules", resources.get("excludeResourceRules")),
        *_selector_causes(f"{where}.namespaceSelector", resources.get("namespaceSelector")),
        *_selector_causes(f"{where}.objectSelector", resources.get("objectSelector")),
    ]


def binding_causes(binding: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The field errors of a ValidatingAdmissionPolicyBinding."""
    spec = binding.get("spec")
    if not isinstance(spec, Mapping):
        return [("FieldValueRequired", "spec", "Required value")]
    causes: list[tuple[str, str, str]] = []
    if not spec.get("policyName"):
        causes.append(("FieldValueRequired", "spec.policyName", "Required value"))
    actions = spec.get("validationActions") or []
    if not actions:
        causes.append(("FieldValueRequired", "spec.validationActions", "Required value"))
    for i, action in enumerate(actions):
        if action not in ACTIONS:
            causes.append(("FieldValueNotSupported", f"spec.validationActions[{i}]",
                           f"Unsupported value: {_go_quote(str(action))}: supported values: "
                           '"Audit", "Deny", "Warn"'))
    if "Deny" in actions and "Warn" in actions:
        causes.append(("FieldValueInvalid", "spec.validationActions",
                       "Invalid value: must not contain both Deny and Warn (repeating the "
                       "same validation failure information in the API response and headers "
                       "serves no purpose)"))
    if len(set(actions)) != len(actions):
        causes.append(("FieldValueDuplicate", "spec.validationActions", "Duplicate value"))
    resources = spec.get("matchResources")
    if isinstance(resources, Mapping):
        causes += _match_resources_causes("spec.matchResources", resources)
    return causes


def default_policy(policy: dict[str, Any]) -> None:
    """The defaults kube-apiserver fills in (so `kubectl get -o yaml` shows the same)."""
    spec = policy.setdefault("spec", {})
    spec.setdefault("failurePolicy", "Fail")
    constraints = spec.get("matchConstraints")
    if isinstance(constraints, dict):
        _default_match(constraints)


def default_binding(binding: dict[str, Any]) -> None:
    resources = binding.setdefault("spec", {}).get("matchResources")
    if isinstance(resources, dict):
        _default_match(resources)


def _default_match(match: dict[str, Any]) -> None:
    match.setdefault("matchPolicy", "Equivalent")
    match.setdefault("namespaceSelector", {})
    match.setdefault("objectSelector", {})
    for key in ("resourceRules", "excludeResourceRules"):
        for rule in match.get(key) or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


# -- matching ---------------------------------------------------------------------------------


def _rule_matches(rule: Mapping[str, Any], request: Attributes) -> bool:
    operations = rule.get("operations") or []
    if "*" not in operations and request.operation not in operations:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and request.group not in groups:
        return False
    versions = rule.get("apiVersions") or []
    if "*" not in versions and request.version not in versions:
        return False
    scope = rule.get("scope") or "*"
    if scope == "Namespaced" and not request.namespace:
        return False
    if scope == "Cluster" and request.namespace:
        return False
    names = rule.get("resourceNames") or []
    if names and request.name not in names:
        return False
    for resource in rule.get("resources") or []:  # rules.go: resource() (`pods/*` has pods)
        base, _, sub = resource.partition("/")
        if base in ("*", request.resource) and sub in ("*", request.subresource):
            return True
    return False


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def _selected(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    return label_selector_from_object(selector).matches(labels)


def _match_resources(match: Mapping[str, Any] | None, request: Attributes) -> bool:
    """kube-apiserver's matching: namespace selector (cluster-scoped objects other than
    namespaces always pass), object selector on the new or the old object, resource rules,
    and exclusions."""
    if match is None:
        return True
    if request.namespace or request.resource == "namespaces":
        target = (request.namespace_object if request.resource != "namespaces"
                  else request.object or request.old_object)
        if not _selected(match.get("namespaceSelector"), _labels(target)):
            return False
    object_selector = match.get("objectSelector")
    if object_selector and not any(
            obj is not None and _selected(object_selector, _labels(obj))
            for obj in (request.object, request.old_object)):
        return False  # a missing object (old on CREATE, new on DELETE) matches nothing
    rules = match.get("resourceRules")
    if rules is not None and not any(_rule_matches(r, request) for r in rules):
        return False
    return not any(_rule_matches(r, request) for r in match.get("excludeResourceRules") or [])


# -- evaluation -------------------------------------------------------------------------------


def _request_value(request: Attributes) -> dict[str, Any]:
    """admissionv1.AdmissionRequest as CEL sees it."""
    kind = {"group": request.group, "version": request.version, "kind": request.kind}
    resource = {"group": request.group, "version": request.version,
                "resource": request.resource}
    return {
        "kind": kind, "resource": resource, "subResource": request.subresource,
        "requestKind": kind, "requestResource": resource,
        "requestSubResource": request.subresource,
        "name": request.name, "namespace": request.namespace,
        "operation": request.operation,
        "userInfo": {"username": request.user.username, "uid": request.user.uid,
                     "groups": list(request.user.groups)},
        "dryRun": request.dry_run,
    }


def _activation(request: Attributes) -> dict[str, Any]:
    return {
        "object": to_cel(request.object, None),
        "oldObject": to_cel(request.old_object, None),
        "request": to_cel(_request_value(request), None),
        "namespaceObject": to_cel(request.namespace_object, None),
        "params": None,
    }


class _ExpressionError(Exception):
    pass


def _run(expression: CompiledExpression, activation: Mapping[str, Any]) -> Any:
    try:
        result = expression.program.evaluate(dict(activation))
    except Exception as error:  # a user's expression must never become a 500
        raise _ExpressionError(
            f"expression '{expression.source}' resulted in error: "
            f"{_message_of(error)}") from None
    if _is_error(result):
        raise _ExpressionError(
            f"expression '{expression.source}' resulted in error: {_message_of(result)}")
    return result


def _is_error(value: Any) -> bool:
    return isinstance(value, celpy.CELEvalError)


def _message_of(error: Any) -> str:
    if isinstance(error, CelEvaluationError):
        return str(error)
    return evaluation_message(error)


def _bool(expression: CompiledExpression, activation: Mapping[str, Any]) -> bool:
    result = _run(expression, activation)
    if not isinstance(result, bool | celtypes.BoolType):
        raise _ExpressionError(
            f"expression '{expression.source}' resulted in error: no such overload "
            "(the expression must evaluate to a bool)")
    return result_is_true(result)


def _map(values: Mapping[str, Any]) -> Any:
    return celtypes.MapType({celtypes.StringType(k): v for k, v in values.items()})


@dataclass(frozen=True)
class _Decision:
    message: str
    reason: str


def _evaluate_policy(policy: Mapping[str, Any],
                     request: Attributes) -> tuple[list[_Decision], list[_Decision]]:
    """(failed validations, errors): a failed validation is decided by the binding's
    actions; an error by the failure policy."""
    spec = policy["spec"]
    activation = _activation(request)
    failures: list[_Decision] = []
    errors: list[_Decision] = []
    condition_errors: list[_Decision] = []
    for condition in spec.get("matchConditions") or []:
        try:
            if not _bool(_compiled(condition["expression"]), activation):
                return [], []  # a false condition wins over errors of the others
        except (_ExpressionError, CelCompileError) as error:
            condition_errors.append(_Decision(
                f"matchCondition '{condition.get('name', '')}': {error}", "Invalid"))
    if condition_errors:
        return [], condition_errors[:1]
    try:
        variables: dict[str, Any] = {}
        for variable in spec.get("variables") or []:
            activation["variables"] = _map(variables)  # each sees the ones before it
            variables[str(variable["name"])] = _run(
                _compiled(variable["expression"]), activation)
        activation["variables"] = _map(variables)
    except (_ExpressionError, CelCompileError) as error:
        return [], [_Decision(str(error), "Invalid")]
    for validation in spec.get("validations") or []:
        try:
            passed = _bool(_compiled(validation["expression"]), activation)
        except (_ExpressionError, CelCompileError) as error:
            errors.append(_Decision(str(error), "Invalid"))
            continue
        if passed:
            continue
        failures.append(_Decision(_failure_message(validation, activation),
                                  str(validation.get("reason") or "Invalid")))
    return failures, errors


def _failure_message(validation: Mapping[str, Any], activation: Mapping[str, Any]) -> str:
    """messageExpression when it yields a usable string, else message, else
    `failed expression: EXPR` (validator.go's fallbackValidationMessage)."""
    source = validation.get("messageExpression")
    if source:
        try:
            result = _run(_compiled(source), activation)
        except (_ExpressionError, CelCompileError):
            result = None
        if isinstance(result, str) and result.strip() and "\n" not in result and len(
                result.encode()) <= MAX_MESSAGE_BYTES:
            return str(result)
    if validation.get("message"):
        return str(validation["message"])
    return f"failed expression: {str(validation['expression']).strip()}"


def admit(policies: Sequence[Mapping[str, Any]], bindings: Sequence[Mapping[str, Any]],
          request: Attributes) -> Outcome:
    """Every binding's policy over `request`; the first denial (bindings in name order) is
    the answer, as kube-apiserver returns the first denied decision."""
    by_name = {p["metadata"]["name"]: p for p in policies}
    outcome = Outcome()
    denied: list[tuple[str, str, _Decision]] = []
    for binding in sorted(bindings, key=lambda b: b["metadata"]["name"]):
        spec = binding.get("spec") or {}
        policy = by_name.get(spec.get("policyName"))
        if policy is None:
            continue
        if not _match_resources((policy.get("spec") or {}).get("matchConstraints"), request):
            continue
        if not _match_resources(spec.get("matchResources"), request):
            continue
        failures, errors = _evaluate_policy(policy, request)
        if errors and (policy["spec"].get("failurePolicy") or "Fail") == "Fail":
            failures = [*failures, *errors]
        actions = spec.get("validationActions") or []
        policy_name, binding_name = policy["metadata"]["name"], binding["metadata"]["name"]
        for decision in failures:
            if "Deny" in actions:
                denied.append((policy_name, binding_name, decision))
            if "Warn" in actions:
                outcome.warnings.append(
                    f"Validation failed for ValidatingAdmissionPolicy '{policy_name}' with "
                    f"binding '{binding_name}': {decision.message}")
            if "Audit" in actions:
                outcome.audit.append(
                    f"{policy_name}/{binding_name}: {decision.message}")
    if denied:
        policy_name, binding_name, decision = denied[0]
        outcome.denial = denial(request, policy_name, binding_name, decision.message,
                                decision.reason)
    return outcome


def denial(request: Attributes, policy: str, binding: str, message: str,
           reason: str = "Invalid") -> ApiError:
    """admission.NewForbidden's message with the validation's reason and its code
    (dispatcher.go: reasonToCode; Invalid, 422, unless the validation says otherwise), and
    the message again as the one cause."""
    text = (f"ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: "
            f"{message}")
    what = qualified_resource(request.resource, request.group)
    subject = f'{what} "{request.name}"' if request.name else what
    return ApiError(REASON_CODES.get(reason, 422), reason, f"{subject} is forbidden: {text}",
                    name=request.name or None, group=request.group or None,
                    kind=request.resource, causes=[{"message": text}])
