"""CRD structural schemas: pruning, defaulting and validation with Kubernetes' wording."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from gencluster_dev.machinery.schema import (
    RULES_NOT_CHECKED,
    FieldError,
    Schema,
    SchemaError,
    admit,
)
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def _server_schema() -> dict[str, Any]:
    """Shaped like the ClusteredServer CRD: nested defaults and cross-field CEL rules."""
    return {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["image"],
                "x-kubernetes-validations": [
                    {
                        "rule": "self.replication.minSyncStandbys < self.replicas",
                        "message": "replication.minSyncStandbys must be less than replicas",
                    }
                ],
                "properties": {
                    "image": {"type": "string", "minLength": 1},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 9, "default": 3},
                    "mode": {"type": "string", "enum": ["Sync", "Async"], "default": "Sync"},
                    "replication": {
                        "type": "object",
                        "default": {},
                        "properties": {
                            "minSyncStandbys": {"type": "integer", "minimum": 0, "default": 1}
                        },
                    },
                    "lease": {
                        "type": "object",
                        "default": {},
                        "x-kubernetes-validations": [
                            {
                                "rule": "self.durationSeconds > self.renewDeadlineSeconds && "
                                "self.renewDeadlineSeconds > self.retryPeriodSeconds"
                            }
                        ],
                        "properties": {
                            "durationSeconds": {"type": "integer", "default": 15},
                            "renewDeadlineSeconds": {"type": "integer", "default": 10},
                            "retryPeriodSeconds": {"type": "integer", "default": 2},
                        },
                    },
                    "ports": {
                        "type": "array",
                        "maxItems": 3,
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "pattern": "^[a-z]+$"},
                                "port": {"type": "integer", "format": "int32", "default": 80},
                            },
                        },
                    },
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "target": {"x-kubernetes-int-or-string": True},
                    "note": {"type": "string", "nullable": True},
                    "startedAt": {"type": "string", "format": "date-time"},
                    "ratio": {"type": "number", "exclusiveMaximum": True, "maximum": 1},
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


def _server(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gencluster.dev/v1",
        "kind": "ClusteredServer",
        "metadata": {"name": "kv", "namespace": "default", "labels": {"a": "b"}},
        "spec": {"image": "python:3.11", **spec},
    }


def _details(errors: list[FieldError]) -> list[str]:
    return [str(error) for error in errors]


def test_prune_drops_unknown_fields_but_keeps_root_and_preserved_ones() -> None:
    schema = Schema(_server_schema())
    obj = _server(bogus=1, config={"anything": {"goes": True}}, ports=[{"name": "a", "x": 1}])
    obj["extra"] = True
    obj["status"] = {"free": "form"}
    pruned = schema.prune(obj)
    assert "extra" not in pruned
    assert "bogus" not in pruned["spec"]
    assert pruned["spec"]["config"] == {"anything": {"goes": True}}
    assert pruned["spec"]["ports"] == [{"name": "a"}]
    assert pruned["metadata"] == obj["metadata"]
    assert pruned["status"] == {"free": "form"}
    assert schema.unknown_fields(obj) == ["spec.bogus", "spec.ports[0].x", "extra"]


def test_defaults_apply_recursively_to_existing_objects_only() -> None:
    schema = Schema(_server_schema())
    defaulted = schema.default(_server(ports=[{"name": "http"}]))
    spec = defaulted["spec"]
    assert spec["replicas"] == 3
    assert spec["mode"] == "Sync"
    assert spec["replication"] == {"minSyncStandbys": 1}
    assert spec["lease"] == {
        "durationSeconds": 15,
        "renewDeadlineSeconds": 10,
        "retryPeriodSeconds": 2,
    }
    assert spec["ports"] == [{"name": "http", "port": 80}]
    assert "status" not in defaulted


def test_default_replaces_non_nullable_null_and_drops_null_without_default() -> None:
    schema = Schema(_server_schema())
    defaulted = schema.default(_server(replicas=None, image=None, note=None))
    assert defaulted["spec"]["replicas"] == 3
    assert "image" not in defaulted["spec"]
    assert defaulted["spec"]["note"] is None


def test_default_does_not_mutate_input() -> None:
    schema = Schema(_server_schema())
    obj = _server()
    before = copy.deepcopy(obj)
    schema.default(obj)
    schema.prune(obj)
    schema.validate(obj)
    assert obj == before


def test_valid_object_has_no_errors() -> None:
    schema = Schema(_server_schema())
    obj, errors = admit(
        schema,
        _server(
            target="50%",
            env={"A": "1"},
            startedAt="2024-01-02T03:04:05Z",
            ratio=0.5,
            note=None,
        ),
    )
    assert errors == []
    assert obj["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"replicas": 0},
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or "
            "equal to 1",
        ),
        (
            {"replicas": 10},
            "spec.replicas: Invalid value: 10: spec.replicas in body should be less than or "
            "equal to 9",
        ),
        (
            {"replicas": "string"},
            'spec.replicas: Invalid value: "string": spec.replicas in body must be of type '
            'integer: "string"',
        ),
        (
            {"replicas": 1.5},
            'spec.replicas: Invalid value: "number": spec.replicas in body must be of type '
            'integer: "number"',
        ),
        (
            {"mode": "Foo"},
            'spec.mode: Unsupported value: "Foo": supported values: "Sync", "Async"',
        ),
        (
            {"image": ""},
            'spec.image: Invalid value: "": spec.image in body should be at least 1 chars long',
        ),
        (
            {"ports": [{"name": "HTTP"}]},
            "spec.ports[0].name: Invalid value: \"HTTP\": spec.ports[0].name in body should "
            "match '^[a-z]+$'",
        ),
        ({"ports": [{"port": 1}]}, "spec.ports[0].name: Required value"),
        (
            {"ports": [{"name": "a"}] * 4},
            "spec.ports: Too many: 4: must have at most 3 items",
        ),
        (
            {"ports": [{"name": "a", "port": 2**31}]},
            "spec.ports[0].port: Invalid value: 2147483648: spec.ports[0].port in body must be "
            "of type int32",
        ),
        (
            {"env": {"A": 1}},
            'spec.env.A: Invalid value: "integer": spec.env.A in body must be of type string: '
            '"integer"',
        ),
        (
            {"target": True},
            'spec.target: Invalid value: "boolean": spec.target in body must be of type '
            'integer-or-string: "boolean"',
        ),
        (
            {"startedAt": "yesterday"},
            'spec.startedAt: Invalid value: "yesterday": spec.startedAt in body must be of '
            'type date-time: "yesterday"',
        ),
        (
            {"ratio": 1},
            "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1",
        ),
    ],
)
def test_validation_errors_read_like_kubernetes(spec: dict[str, Any], expected: str) -> None:
    _, errors = admit(Schema(_server_schema()), _server(**spec))
    assert expected in _details(errors)


def test_missing_required_field_is_reported_with_its_path() -> None:
    obj = _server()
    del obj["spec"]["image"]
    _, errors = admit(Schema(_server_schema()), obj)
    assert errors == [
        FieldError("spec.image", "FieldValueRequired", "Required value"),
        RULES_NOT_CHECKED,
    ]
    assert str(errors[0]) == "spec.image: Required value"


def test_null_in_nullable_field_is_valid_and_in_other_field_is_not() -> None:
    schema = Schema(_server_schema())
    assert schema.validate(schema.default(_server(note=None))) == []
    spec_schema = {"type": "object", "properties": {"durationSeconds": {"type": "integer"}}}
    plain = Schema({"type": "object", "properties": {"spec": spec_schema}})
    errors = plain.validate({"spec": {"durationSeconds": None}})
    assert _details(errors) == [
        'spec.durationSeconds: Invalid value: "null": spec.durationSeconds in body must be of '
        'type integer: "null"'
    ]


def test_cel_rules_run_after_defaults() -> None:
    schema = Schema(_server_schema())
    _, errors = admit(schema, _server(replicas=1))
    assert _details(errors) == [
        'spec: Invalid value: "object": replication.minSyncStandbys must be less than replicas'
    ]
    _, errors = admit(schema, _server(lease={"durationSeconds": 5}))
    assert _details(errors) == [
        'spec.lease: Invalid value: "object": failed rule: self.durationSeconds > '
        "self.renewDeadlineSeconds && self.renewDeadlineSeconds > self.retryPeriodSeconds"
    ]
    assert errors[0].reason == "FieldValueInvalid"


def test_metadata_is_neither_pruned_nor_validated() -> None:
    schema = Schema(
        {
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "properties": {"name": {"type": "string"}}}
            },
        }
    )
    obj = {"metadata": {"name": "x", "labels": {"a": "b"}, "generation": 3}}
    assert schema.prune(obj) == obj
    assert schema.validate(obj) == []


def test_embedded_resources_keep_their_type_and_metadata() -> None:
    schema = Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "template": {
                            "type": "object",
                            "x-kubernetes-embedded-resource": True,
                            "properties": {"spec": {"type": "object"}},
                        }
                    },
                }
            },
        }
    )
    template = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "x": 1}
    pruned = schema.prune({"spec": {"template": template}})
    assert pruned["spec"]["template"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {},
    }


def test_list_set_and_map_duplicates() -> None:
    schema = Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "tags": {
                            "type": "array",
                            "x-kubernetes-list-type": "set",
                            "items": {"type": "string"},
                        },
                        "members": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {
                                "type": "object",
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                }
            },
        }
    )
    errors = schema.validate(
        {"spec": {"tags": ["a", "b", "a"], "members": [{"name": "x"}, {"name": "x"}]}}
    )
    assert _details(errors) == [
        'spec.tags[2]: Duplicate value: "a"',
        'spec.members[1]: Duplicate value: map[string]interface {}{"name":"x"}',
    ]


def test_min_and_max_properties() -> None:
    schema = Schema(
        {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "minProperties": 1, "maxProperties": 2,
                         "additionalProperties": {"type": "string"}}
            },
        }
    )
    assert _details(schema.validate({"spec": {}})) == [
        "spec: Invalid value: 0: spec in body should have at least 1 properties"
    ]
    assert _details(schema.validate({"spec": {"a": "1", "b": "2", "c": "3"}})) == [
        "spec: Too many: 3: must have at most 2 items"
    ]


def test_schema_with_a_rule_that_does_not_compile_is_refused() -> None:
    with pytest.raises(SchemaError) as caught:
        Schema(
            {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}
                },
            }
        )
    message = str(caught.value)
    assert message.startswith(
        "openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: "
        'Invalid value: "self.a >": compilation failed: Syntax error'
    )


def test_schema_with_an_invalid_pattern_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"openAPIV3Schema\.properties\[a\]\.pattern"):
        Schema({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}})


small_ints = st.integers(-3, 12)


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "replicas": small_ints,
            "mode": st.sampled_from(["Sync", "Async"]),
            "replication": st.fixed_dictionaries({}, optional={"minSyncStandbys": small_ints}),
            "lease": st.fixed_dictionaries(
                {},
                optional={
                    "durationSeconds": small_ints,
                    "renewDeadlineSeconds": small_ints,
                    "retryPeriodSeconds": small_ints,
                },
            ),
            "unknown": st.integers(),
        },
    )
)
def test_admit_is_idempotent_and_agrees_with_the_rules(spec: dict[str, Any]) -> None:
    schema = Schema(_server_schema())
    admitted, errors = admit(schema, _server(**spec))
    again, errors_again = admit(schema, admitted)
    assert again == admitted
    assert errors_again == errors
    assert schema.unknown_fields(admitted) == []
    final = admitted["spec"]
    lease = final["lease"]
    lease_ok = (
        lease["durationSeconds"] > lease["renewDeadlineSeconds"] > lease["retryPeriodSeconds"]
    )
    assert any(error.field == "spec.lease" for error in errors) is not lease_ok
    sync_ok = final["replication"]["minSyncStandbys"] < final["replicas"]
    assert any(error.field == "spec" for error in errors) is not sync_ok


def _combinator_schema(**combinators: Any) -> Schema:
    return Schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    **combinators,
                }
            },
        }
    )


def test_one_of_required_fields() -> None:
    schema = _combinator_schema(oneOf=[{"required": ["a"]}, {"required": ["b"]}])
    assert schema.validate({"spec": {"a": "x"}}) == []
    assert _details(schema.validate({"spec": {}})) == [
        '<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf). '
        "Found none valid",
        "spec.a: Required value",
    ]
    assert _details(schema.validate({"spec": {"a": "x", "b": "y"}})) == [
        '<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf). '
        "Found 2 valid alternatives"
    ]


def test_any_of_all_of_and_not() -> None:
    any_of = _combinator_schema(anyOf=[{"required": ["a"]}, {"required": ["b"]}])
    assert any_of.validate({"spec": {"b": "y"}}) == []
    assert _details(any_of.validate({"spec": {}}))[0] == (
        '<nil>: Invalid value: "": "spec" must validate at least one schema (anyOf)'
    )
    all_of = _combinator_schema(allOf=[{"required": ["a"]}, {"required": ["b"]}])
    assert _details(all_of.validate({"spec": {"a": "x"}})) == [
        '<nil>: Invalid value: "": "spec" must validate all the schemas (allOf)',
        "spec.b: Required value",
    ]
    negated = _combinator_schema(**{"not": {"required": ["a"]}})
    assert negated.validate({"spec": {"b": "y"}}) == []
    assert _details(negated.validate({"spec": {"a": "x"}})) == [
        '<nil>: Invalid value: "": "spec" must not validate the schema (not)'
    ]
