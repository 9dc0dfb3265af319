"""x-kubernetes-validations: what CRD rules need from CEL, and how failures are worded."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_dev.machinery.cel import (
    CelCompileError,
    CelEvaluationError,
    compile_expression,
    compile_rule,
    to_cel,
)
from gencluster_dev.machinery.schema import RULES_NOT_CHECKED, FieldError, Schema, admit

pytestmark = pytest.mark.unit


def _schema_with_rules(rules: list[dict[str, Any]], **extra: Any) -> Schema:
    return Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": rules,
                    "properties": {
                        "a": {"type": "integer"},
                        "b": {"type": "integer"},
                        "name": {"type": "string"},
                        "items": {"type": "array", "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "ratio": {"type": "number"},
                        "mode": {"type": "string"},
                    },
                    **extra,
                }
            },
        }
    )


SPEC = {
    "a": 3,
    "b": 2,
    "name": "web-primary",
    "items": ["x1", "x2"],
    "labels": {"tier": "db"},
    "ratio": 1,
    "mode": "Sync",
}


@pytest.mark.parametrize(
    "rule",
    [
        "self.a > self.b",
        "has(self.name) && !has(self.missing)",
        "self.items.size() == 2 && size(self.items) == 2",
        "'x1' in self.items && 'tier' in self.labels",
        "self.a > self.b || self.a < 0",
        "!(self.a < self.b)",
        "(self.a > 2 ? 'big' : 'small') == 'big'",
        "self.items.all(i, i.startsWith('x'))",
        "self.items.exists(i, i == 'x2')",
        "self.items.exists_one(i, i.endsWith('1'))",
        "self.name.matches('^[a-z-]+$')",
        "self.name.contains('prim')",
        "self.labels.tier == 'db'",
        "self.ratio == 1.0 && self.ratio > 0",
        "self.mode in ['Sync', 'Async']",
        "self.items.map(i, i + '!').exists(i, i == 'x1!')",
        "self.items.filter(i, i == 'x2').size() == 1",
        "int('5') + self.a == 8",
        "string(self.a) == '3'",
        "self.name.lowerAscii() == 'web-primary' && self.mode.upperAscii() == 'SYNC'",
        "self.name.split('-') == ['web', 'primary'] && self.items.join(',') == 'x1,x2'",
        "self.name.indexOf('-') == 3 && self.name.substring(4) == 'primary'",
        "self.name.replace('-', '_') == 'web_primary' && ' a '.trim() == 'a'",
        "self.items.isSorted() && [3, 1, 2].sum() == 6 && [3, 1, 2].max() == 3",
    ],
)
def test_rules_crds_use_pass(rule: str) -> None:
    assert _schema_with_rules([{"rule": rule}]).validate({"spec": SPEC}) == []


def test_failing_rule_without_message_says_failed_rule() -> None:
    errors = _schema_with_rules([{"rule": "self.a < self.b"}]).validate({"spec": SPEC})
    assert errors == [
        FieldError(
            "spec", "FieldValueInvalid", 'Invalid value: "object": failed rule: self.a < self.b'
        )
    ]


def test_message_message_expression_field_path_and_reason() -> None:
    schema = _schema_with_rules(
        [
            {"rule": "self.a < self.b", "message": "a must be below b"},
            {
                "rule": "self.a < self.b",
                "messageExpression": "'a is ' + string(self.a) + ', b is ' + string(self.b)",
            },
            {"rule": "self.a < 0", "message": "a is positive", "fieldPath": ".a"},
            {"rule": "self.a < 0", "message": "no", "reason": "FieldValueForbidden"},
            {"rule": "self.a < 0", "message": "need", "reason": "FieldValueRequired",
             "fieldPath": ".labels['tier']"},
        ]
    )
    assert [str(error) for error in schema.validate({"spec": SPEC})] == [
        'spec: Invalid value: "object": a must be below b',
        'spec: Invalid value: "object": a is 3, b is 2',
        'spec.a: Invalid value: "object": a is positive',
        "spec: Forbidden: no",
        "spec.labels[tier]: Required value: need",
    ]


def test_evaluation_error_reads_like_kubernetes() -> None:
    errors = _schema_with_rules([{"rule": "self.missing > 1"}]).validate({"spec": SPEC})
    assert [str(error) for error in errors] == [
        'spec: Invalid value: "object": no such key: missing evaluating rule: self.missing > 1'
    ]


def test_transition_rules_only_run_with_an_old_object() -> None:
    schema = _schema_with_rules(
        [{"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"}]
    )
    changed = {"spec": {**SPEC, "mode": "Async"}}
    assert schema.validate(changed) == []
    assert schema.validate(changed, {"spec": SPEC}) == [
        FieldError("spec", "FieldValueInvalid", 'Invalid value: "object": mode is immutable')
    ]
    assert schema.validate({"spec": SPEC}, {"spec": SPEC}) == []


def test_transition_rule_skipped_when_the_old_object_lacks_the_field() -> None:
    schema = _schema_with_rules([{"rule": "self == oldSelf"}])
    assert schema.validate({"spec": SPEC}, {"metadata": {"name": "x"}}) == []


def test_rules_on_scalars_report_their_type() -> None:
    schema = Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "size": {
                            "type": "integer",
                            "x-kubernetes-validations": [{"rule": "self % 2 == 0"}],
                        },
                        "tags": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "x-kubernetes-validations": [
                                    {"rule": "self != 'bad'", "message": "bad tag"}
                                ],
                            },
                        },
                    },
                }
            },
        }
    )
    errors = schema.validate({"spec": {"size": 3, "tags": ["ok", "bad"]}})
    assert [str(error) for error in errors] == [
        'spec.size: Invalid value: "integer": failed rule: self % 2 == 0',
        'spec.tags[1]: Invalid value: "string": bad tag',
    ]


def test_root_rules_see_name_and_report_at_the_nil_path() -> None:
    schema = Schema(
        {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.metadata.name.size() <= 5", "message": "name too long"}
            ],
            "properties": {"spec": {"type": "object"}},
        }
    )
    assert schema.validate({"metadata": {"name": "short"}, "spec": {}}) == []
    assert [str(error) for error in schema.validate({"metadata": {"name": "toolong"}})] == [
        '<nil>: Invalid value: "object": name too long'
    ]


def test_rules_see_defaults_when_admitted() -> None:
    schema = Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.replication.minSyncStandbys < self.replicas"}
                    ],
                    "properties": {
                        "replicas": {"type": "integer", "default": 3},
                        "replication": {
                            "type": "object",
                            "default": {},
                            "properties": {"minSyncStandbys": {"type": "integer", "default": 1}},
                        },
                    },
                }
            },
        }
    )
    assert admit(schema, {"spec": {}})[1] == []
    assert len(admit(schema, {"spec": {"replicas": 1}})[1]) == 1


def test_compile_errors_point_at_the_column() -> None:
    with pytest.raises(CelCompileError) as caught:
        compile_expression("self.a >")
    assert str(caught.value).startswith("Syntax error: self.a >")
    with pytest.raises(CelCompileError, match="rule is required"):
        compile_rule({"message": "x"})


def test_transition_detection_ignores_string_literals() -> None:
    assert compile_rule({"rule": "self.a == oldSelf.a"}).is_transition_rule
    assert not compile_rule({"rule": "self.a == 'oldSelf'"}).is_transition_rule


def test_number_fields_are_doubles_even_when_written_as_integers() -> None:
    value = to_cel({"ratio": 1}, {"type": "object", "properties": {"ratio": {"type": "number"}}})
    assert compile_expression("self.ratio == 1.0").evaluate(value, None, False)


def test_rules_are_skipped_on_values_of_the_wrong_type() -> None:
    errors = _schema_with_rules([{"rule": "self.a > self.b"}]).validate({"spec": "oops"})
    assert [str(error) for error in errors] == [
        'spec: Invalid value: "string": spec in body must be of type object: "string"',
        '<nil>: Invalid value: "null": some validation rules were not checked because the '
        "object was invalid; correct the existing errors to complete validation",
    ]


def test_blocking_schema_errors_skip_every_rule_but_plain_invalid_values_do_not() -> None:
    schema = _schema_with_rules([{"rule": "self.a > self.b"}])
    blocked = schema.validate({"spec": {**SPEC, "a": "three"}})
    assert blocked[-1] == RULES_NOT_CHECKED
    assert not any("no such overload" in error.detail for error in blocked)
    bounded = Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [{"rule": "self.a > 5"}],
                    "properties": {"a": {"type": "integer", "minimum": 3}},
                }
            },
        }
    )
    assert [error.field for error in bounded.validate({"spec": {"a": 1}})] == [
        "spec.a",
        "spec",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("self.missing == 1", "no such key: missing"),
        ("self['missing'] == 1", "no such key: missing"),
        ("self.items[5] == 'x'", "index out of bounds"),
        ("self.a / 0 == 1", "division by zero"),
        ("self.name + 1 == 2", "no such overload"),
        ("int(self.name) == 1", "type conversion error"),
    ],
)
def test_evaluation_errors_use_cel_go_words(expression: str, message: str) -> None:
    value = to_cel(SPEC, None)
    with pytest.raises(CelEvaluationError) as caught:
        compile_expression(expression).evaluate(value, None, False)
    assert str(caught.value) == message


def test_overload_errors_are_explained_like_kubernetes() -> None:
    errors = _schema_with_rules([{"rule": "self.name + 1 == 2"}]).validate({"spec": SPEC})
    assert [str(error) for error in errors] == [
        "spec: Invalid value: \"object\": 'no such overload': call arguments did not match a "
        "supported operator, function or macro signature for rule: self.name + 1 == 2"
    ]
