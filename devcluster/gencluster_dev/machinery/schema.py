"""Structural OpenAPI v3 schemas of CustomResourceDefinitions: prune, default, validate.

The API server runs every custom resource through the same steps as kube-apiserver: drop the
fields the schema does not know (pruning), fill in ``default`` values, then validate the types,
value constraints and ``x-kubernetes-validations`` CEL rules.  Field errors carry the field path
and the detail text Kubernetes produces (kube-openapi's messages wrapped the way
apiextensions-apiserver wraps them) because users read them in ``kubectl`` output and
operators match on them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gencluster_dev.machinery.cel import (
    CelCompileError,
    CelEvaluationError,
    CompiledRule,
    compile_rule,
    result_as_message,
    result_is_true,
    to_cel,
)

__all__ = ["RULES_NOT_CHECKED", "FieldError", "Schema", "SchemaError", "admit"]

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TYPE_INVALID = "FieldValueTypeInvalid"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
DUPLICATE = "FieldValueDuplicate"

# The root of a resource always keeps these; the API server validates metadata itself.
_RESOURCE_ROOT_FIELDS = ("apiVersion", "kind", "metadata")
# field.Path.String() of the nil path, which is what errors of root-level rules carry.
ROOT_PATH = "<nil>"
# Schema errors after which kube-apiserver does not run CEL rules (hasBlockingErr).
_BLOCKING_REASONS = frozenset({NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID})


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 Invalid Status: the field path and Kubernetes' detail text."""

    field: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


RULES_NOT_CHECKED = FieldError(
    ROOT_PATH,
    INVALID,
    'Invalid value: "null": some validation rules were not checked because the object was '
    "invalid; correct the existing errors to complete validation",
)


class SchemaError(ValueError):
    """The schema itself is unusable (a CEL rule does not compile, a pattern is invalid)."""


def _go_quote(text: str) -> str:
    """Go's %q, close enough for the strings users put in objects."""
    return json.dumps(text, ensure_ascii=False)


def _go_number(number: float) -> str:
    """Go's %v of a float64: integral values print without a fraction."""
    if isinstance(number, bool):
        return "true" if number else "false"
    if isinstance(number, int):
        return str(number)
    if math.isfinite(number) and number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}e{sign}{exponent.lstrip('+-').zfill(2)}"
    return text


def _go_value(value: Any) -> str:
    """How field.Error prints a bad value: %q strings, %v numbers, else a literal."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _go_quote(value)
    if isinstance(value, bool | int | float):
        return _go_number(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_go_quote(str(k))}:{_go_value(v)}" for k, v in value.items())
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_value(item) for item in value) + "}"
    return str(value)


def _json_type(value: Any) -> str:
    """The JSON type name kube-openapi reports for a value it did not expect."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches_type(value: Any, type_name: str) -> bool:
    if type_name == "object":
        return isinstance(value, Mapping)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if type_name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _json_equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_count(
    schema: Mapping[str, Any], keyword: str, noun: str, count: int, path: str,
    errors: list[FieldError],
) -> None:
    """`maxItems`/`minItems` or `maxProperties`/`minProperties`, worded as the Kubernetes API
    server words them (its "at most" message says "items" for both, its "at least" message
    names the noun)."""
    most = schema.get(f"max{keyword}")
    if most is not None and count > most:
        errors.append(
            FieldError(path, TOO_MANY, f"Too many: {count}: must have at most {most} items")
        )
    least = schema.get(f"min{keyword}")
    if least is not None and count < least:
        errors.append(
            FieldError(
                path, INVALID,
                f"Invalid value: {count}: {path} in body should have at least {least} {noun}",
            )
        )


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+$")
_HOSTNAME = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$"
)


def _valid_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _valid_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _valid_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


_STRING_FORMATS = {
    "date-time": lambda text: bool(_DATE_TIME.match(text)),
    "datetime": lambda text: bool(_DATE_TIME.match(text)),
    "date": lambda text: bool(_DATE.match(text)),
    "uuid": lambda text: bool(_UUID.match(text)),
    "duration": lambda text: bool(_DURATION.match(text)),
    "hostname": lambda text: bool(_HOSTNAME.match(text)) and len(text) <= 255,
    "ipv4": lambda text: _valid_ip(text, 4),
    "ipv6": lambda text: _valid_ip(text, 6),
    "cidr": _valid_cidr,
    "byte": _valid_base64,
}

_INTEGER_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class Schema:
    """One CRD version's ``openAPIV3Schema``, with its CEL rules compiled once."""

    def __init__(self, open_api_v3_schema: Mapping[str, Any]) -> None:
        if not isinstance(open_api_v3_schema, Mapping):
            raise SchemaError("openAPIV3Schema must be an object")
        self._root: dict[str, Any] = copy.deepcopy(dict(open_api_v3_schema))
        self._rules: dict[int, list[CompiledRule]] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}
        for node, location in _schema_nodes(self._root, "openAPIV3Schema"):
            self._compile_node(node, location)

    @property
    def raw(self) -> dict[str, Any]:
        """A copy of the schema as given (for discovery and OpenAPI publishing)."""
        return copy.deepcopy(self._root)

    def _compile_node(self, node: Mapping[str, Any], location: str) -> None:
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern not in self._patterns:
            try:
                self._patterns[pattern] = re.compile(pattern)
            except re.error as error:
                raise SchemaError(
                    f"{location}.pattern: Invalid value: {_go_quote(pattern)}: {error}"
                ) from None
        rules = node.get("x-kubernetes-validations")
        if not rules:
            return
        compiled: list[CompiledRule] = []
        for index, rule in enumerate(rules):
            rule_location = f"{location}.x-kubernetes-validations[{index}]"
            if not isinstance(rule, Mapping):
                raise SchemaError(f"{rule_location}: Invalid value: must be an object")
            try:
                compiled.append(compile_rule(rule))
            except CelCompileError as error:
                raise SchemaError(
                    f"{rule_location}.rule: Invalid value: {_go_quote(str(rule.get('rule')))}: "
                    f"compilation failed: {error}"
                ) from None
        self._rules[id(node)] = compiled

    # --- pruning -----------------------------------------------------------------------------

    def prune(self, obj: Any) -> Any:
        """Drop fields the schema does not describe (the root keeps apiVersion/kind/metadata)."""
        return self._prune_root(obj, None)

    def unknown_fields(self, obj: Any) -> list[str]:
        """The paths :meth:`prune` would drop, as fieldValidation=Strict reports them."""
        unknown: list[str] = []
        self._prune_root(obj, unknown)
        return unknown

    def _prune_root(self, obj: Any, unknown: list[str] | None) -> Any:
        if not isinstance(obj, Mapping):
            return copy.deepcopy(obj)
        result: dict[str, Any] = {}
        properties = self._root.get("properties") or {}
        for key, value in obj.items():
            if (key in _RESOURCE_ROOT_FIELDS and key not in properties) or key == "metadata":
                result[key] = copy.deepcopy(value)
            else:
                pruned = self._prune_field(self._root, key, value, key, unknown)
                if pruned is not _DROPPED:
                    result[key] = pruned
        return result

    def _prune_field(
        self, schema: Mapping[str, Any], key: str, value: Any, path: str,
        unknown: list[str] | None,
    ) -> Any:
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        if key in properties:
            return self._prune_value(properties[key], value, path, unknown)
        if isinstance(additional, Mapping):
            return self._prune_value(additional, value, path, unknown)
        if (
            additional is True
            or schema.get("x-kubernetes-preserve-unknown-fields")
            or (schema.get("x-kubernetes-embedded-resource") and key in _RESOURCE_ROOT_FIELDS)
        ):
            return copy.deepcopy(value)
        if unknown is not None:
            unknown.append(path)
        return _DROPPED

    def _prune_value(
        self, schema: Mapping[str, Any], value: Any, path: str, unknown: list[str] | None
    ) -> Any:
        if isinstance(value, Mapping):
            result: dict[str, Any] = {}
            for key, item in value.items():
                pruned = self._prune_field(schema, key, item, _child(path, key), unknown)
                if pruned is not _DROPPED:
                    result[key] = pruned
            return result
        if isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, Mapping):
                return [
                    self._prune_value(items, item, _index(path, index), unknown)
                    for index, item in enumerate(value)
                ]
            return copy.deepcopy(value)
        return value

    # --- defaulting --------------------------------------------------------------------------

    def default(self, obj: Any) -> Any:
        """Apply ``default`` values to absent fields of objects that exist, recursively.

        Like kube-apiserver, a null in a non-nullable field is replaced by its default or
        removed, and defaults are applied inside defaulted values too.
        """
        result = copy.deepcopy(obj)
        if isinstance(result, dict):
            self._default_object(self._root, result, skip=_RESOURCE_ROOT_FIELDS)
        return result

    def _default_object(
        self, schema: Mapping[str, Any], value: dict[str, Any], skip: tuple[str, ...] = ()
    ) -> None:
        properties = schema.get("properties") or {}
        for key, child_schema in properties.items():
            if key in skip:
                continue
            if key not in value or (value[key] is None and not child_schema.get("nullable")):
                if "default" in child_schema:
                    value[key] = copy.deepcopy(child_schema["default"])
                elif key in value:
                    del value[key]
        additional = schema.get("additionalProperties")
        for key in list(value):
            if key in skip:
                continue
            if key in properties:
                child_schema = properties[key]
            elif isinstance(additional, Mapping):
                child_schema = additional
                if value[key] is None and not child_schema.get("nullable"):
                    del value[key]
                    continue
            else:
                continue
            self._default_value(child_schema, value[key])

    def _default_value(self, schema: Mapping[str, Any], value: Any) -> None:
        if isinstance(value, dict):
            self._default_object(schema, value)
        elif isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, Mapping):
                for item in value:
                    self._default_value(items, item)

    # --- validation --------------------------------------------------------------------------

    def validate(self, obj: Any, old: Any | None = None) -> list[FieldError]:
        """Schema constraints first, then CEL rules (transition rules only when ``old``).

        Like kube-apiserver, CEL rules are not run at all when the schema checks found a
        blocking error (wrong type, missing required field, unsupported enum value, too long,
        too many): one extra cause says so (only if the schema has rules) instead of rules
        failing on malformed input.
        """
        errors: list[FieldError] = []
        if not isinstance(obj, Mapping):
            errors.append(
                FieldError(
                    "", TYPE_INVALID,
                    f'Invalid value: {_go_quote(_json_type(obj))}: '
                    f'body must be of type object: {_go_quote(_json_type(obj))}',
                )
            )
            return errors
        self._validate_object_members(self._root, obj, "", errors, skip=_RESOURCE_ROOT_FIELDS)
        if not self._rules:
            return errors
        if any(error.reason in _BLOCKING_REASONS for error in errors):
            errors.append(RULES_NOT_CHECKED)
            return errors
        self._validate_rules(self._root, obj, old, old is not None, ROOT_PATH, errors, root=True)
        return errors

    def _validate_value(
        self, schema: Mapping[str, Any], value: Any, path: str, errors: list[FieldError]
    ) -> None:
        type_name = schema.get("type")
        if value is None:
            if schema.get("nullable") or not type_name:
                return
            errors.append(self._type_error(path, type_name, value))
            return
        if schema.get("x-kubernetes-int-or-string"):
            if not (_matches_type(value, "integer") or isinstance(value, str)):
                errors.append(self._type_error(path, "integer-or-string", value))
                return
        elif type_name and not _matches_type(value, type_name):
            errors.append(self._type_error(path, type_name, value))
            return
        self._validate_combinators(schema, value, path, errors)
        self._validate_enum(schema, value, path, errors)
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            self._validate_number(schema, value, path, errors)
        elif isinstance(value, str):
            self._validate_string(schema, value, path, errors)
        elif isinstance(value, list):
            self._validate_array(schema, value, path, errors)
        elif isinstance(value, Mapping):
            self._validate_object(schema, value, path, errors)

    def _branch_errors(self, schema: Mapping[str, Any], value: Any, path: str) -> list[FieldError]:
        branch: list[FieldError] = []
        self._validate_value(schema, value, path, branch)
        return branch

    def _validate_combinators(
        self, schema: Mapping[str, Any], value: Any, path: str, errors: list[FieldError]
    ) -> None:
        """allOf / anyOf / oneOf / not, worded as kube-openapi words them.

        kube-apiserver reports the composite failure without a field (``<nil>``) and with an
        empty value, followed by the errors of the branch that came closest (fewest errors).
        """
        quoted = _go_quote(path)

        def composite(message: str) -> FieldError:
            return FieldError(ROOT_PATH, INVALID, f'Invalid value: "": {quoted} {message}')

        all_of = [self._branch_errors(sub, value, path) for sub in schema.get("allOf") or []]
        if any(all_of):
            errors.append(composite("must validate all the schemas (allOf)"))
            errors.extend(error for branch in all_of for error in branch)
        any_of = [self._branch_errors(sub, value, path) for sub in schema.get("anyOf") or []]
        if any_of and all(any_of):
            errors.append(composite("must validate at least one schema (anyOf)"))
            closest = min(any_of, key=len)
            errors.extend(closest)
        one_of = [self._branch_errors(sub, value, path) for sub in schema.get("oneOf") or []]
        if one_of:
            passing = sum(1 for branch in one_of if not branch)
            if passing == 0:
                errors.append(
                    composite("must validate one and only one schema (oneOf). Found none valid")
                )
                closest = min(one_of, key=len)
                errors.extend(closest)
            elif passing > 1:
                errors.append(
                    composite(
                        "must validate one and only one schema (oneOf). "
                        f"Found {passing} valid alternatives"
                    )
                )
        negated = schema.get("not")
        if isinstance(negated, Mapping) and not self._branch_errors(negated, value, path):
            errors.append(composite("must not validate the schema (not)"))

    @staticmethod
    def _type_error(path: str, type_name: str, value: Any) -> FieldError:
        actual = _json_type(value)
        return FieldError(
            path, TYPE_INVALID,
            f"Invalid value: {_go_quote(actual)}: {path or 'body'} in body must be of type "
            f"{type_name}: {_go_quote(actual)}",
        )

    @staticmethod
    def _validate_enum(
        schema: Mapping[str, Any], value: Any, path: str, errors: list[FieldError]
    ) -> None:
        allowed = schema.get("enum")
        if allowed is None or any(_json_equal(value, option) for option in allowed):
            return
        rendered = ", ".join(
            _go_quote(option if isinstance(option, str) else json.dumps(option))
            for option in allowed
        )
        errors.append(
            FieldError(
                path, NOT_SUPPORTED,
                f"Unsupported value: {_go_value(value)}: supported values: {rendered}",
            )
        )

    @staticmethod
    def _validate_number(
        schema: Mapping[str, Any], value: float, path: str, errors: list[FieldError]
    ) -> None:
        def invalid(message: str) -> None:
            errors.append(
                FieldError(path, INVALID, f"Invalid value: {_go_number(value)}: {path} {message}")
            )

        maximum = schema.get("maximum")
        if maximum is not None:
            if schema.get("exclusiveMaximum") and value >= maximum:
                invalid(f"in body should be less than {_go_number(maximum)}")
            elif value > maximum:
                invalid(f"in body should be less than or equal to {_go_number(maximum)}")
        minimum = schema.get("minimum")
        if minimum is not None:
            if schema.get("exclusiveMinimum") and value <= minimum:
                invalid(f"in body should be greater than {_go_number(minimum)}")
            elif value < minimum:
                invalid(f"in body should be greater than or equal to {_go_number(minimum)}")
        multiple_of = schema.get("multipleOf")
        if multiple_of:
            quotient = value / multiple_of
            if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
                invalid(f"in body should be a multiple of {_go_number(multiple_of)}")
        format_name = schema.get("format")
        if format_name in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[format_name]
            if not low <= value <= high:
                errors.append(
                    FieldError(
                        path, TYPE_INVALID,
                        f"Invalid value: {_go_number(value)}: {path} in body must be of type "
                        f"{format_name}",
                    )
                )

    def _validate_string(
        self, schema: Mapping[str, Any], value: str, path: str, errors: list[FieldError]
    ) -> None:
        max_length = schema.get("maxLength")
        if max_length is not None and len(value) > max_length:
            unit = "byte" if max_length == 1 else "bytes"
            errors.append(
                FieldError(path, TOO_LONG, f"Too long: may not be more than {max_length} {unit}")
            )
        min_length = schema.get("minLength")
        if min_length is not None and len(value) < min_length:
            errors.append(
                FieldError(
                    path, INVALID,
                    f"Invalid value: {_go_quote(value)}: {path} in body should be at least "
                    f"{min_length} chars long",
                )
            )
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and not self._patterns[pattern].search(value):
            errors.append(
                FieldError(
                    path, INVALID,
                    f"Invalid value: {_go_quote(value)}: {path} in body should match '{pattern}'",
                )
            )
        format_name = schema.get("format")
        check = _STRING_FORMATS.get(format_name) if isinstance(format_name, str) else None
        if check is not None and not check(value):
            errors.append(
                FieldError(
                    path, TYPE_INVALID,
                    f"Invalid value: {_go_quote(value)}: {path} in body must be of type "
                    f"{format_name}: {_go_quote(value)}",
                )
            )

    def _validate_array(
        self, schema: Mapping[str, Any], value: list[Any], path: str, errors: list[FieldError]
    ) -> None:
        _check_count(schema, "Items", "items", len(value), path, errors)
        list_type = schema.get("x-kubernetes-list-type")
        if schema.get("uniqueItems") or list_type == "set":
            seen: list[Any] = []
            for index, item in enumerate(value):
                if any(_json_equal(item, earlier) for earlier in seen):
                    errors.append(
                        FieldError(
                            _index(path, index), DUPLICATE, f"Duplicate value: {_go_value(item)}"
                        )
                    )
                else:
                    seen.append(item)
        elif list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen_keys: list[dict[str, Any]] = []
            for index, item in enumerate(value):
                if not isinstance(item, Mapping):
                    continue
                identity = {key: item[key] for key in keys if key in item}
                if identity in seen_keys:
                    errors.append(
                        FieldError(
                            _index(path, index), DUPLICATE,
                            f"Duplicate value: {_go_value(identity)}",
                        )
                    )
                else:
                    seen_keys.append(identity)
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                self._validate_value(items, item, _index(path, index), errors)

    def _validate_object(
        self, schema: Mapping[str, Any], value: Mapping[str, Any], path: str,
        errors: list[FieldError],
    ) -> None:
        _check_count(schema, "Properties", "properties", len(value), path, errors)
        skip = _RESOURCE_ROOT_FIELDS if schema.get("x-kubernetes-embedded-resource") else ()
        self._validate_object_members(schema, value, path, errors, skip=skip)

    def _validate_object_members(
        self, schema: Mapping[str, Any], value: Mapping[str, Any], path: str,
        errors: list[FieldError], skip: tuple[str, ...] = (),
    ) -> None:
        for key in schema.get("required") or []:
            if key not in value and key not in skip:
                errors.append(FieldError(_child(path, key), REQUIRED, "Required value"))
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in skip and key not in properties:
                continue
            if path == "" and key == "metadata":
                continue
            if key in properties:
                self._validate_value(properties[key], item, _child(path, key), errors)
            elif isinstance(additional, Mapping):
                self._validate_value(additional, item, _child(path, key), errors)
            elif additional is False and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(
                    FieldError(
                        _child(path, key), FORBIDDEN, "Forbidden: additional property not allowed"
                    )
                )

    # --- CEL ---------------------------------------------------------------------------------

    def _validate_rules(
        self, schema: Mapping[str, Any], value: Any, old: Any, has_old: bool, path: str,
        errors: list[FieldError], *, root: bool = False,
    ) -> None:
        if value is None:
            return
        type_name = schema.get("type")
        wrong_type = type_name and not _matches_type(value, type_name)
        if wrong_type and not schema.get("x-kubernetes-int-or-string"):
            # Already reported as a type error; rules would only add noise about it.
            return
        for rule in self._rules.get(id(schema), ()):
            if rule.is_transition_rule and not has_old:
                continue
            errors.extend(self._evaluate_rule(rule, schema, value, old, has_old, path, root))
        if isinstance(value, Mapping):
            properties = schema.get("properties") or {}
            additional = schema.get("additionalProperties")
            old_map = old if isinstance(old, Mapping) else {}
            for key, item in value.items():
                if root and key in _RESOURCE_ROOT_FIELDS and key not in properties:
                    continue
                if root and key == "metadata":
                    continue
                old_item = old_map.get(key)
                if key in properties:
                    child_path = key if path == ROOT_PATH else _child(path, key)
                    self._validate_rules(
                        properties[key], item, old_item, old_item is not None, child_path, errors
                    )
                elif isinstance(additional, Mapping):
                    base = "" if path == ROOT_PATH else path
                    self._validate_rules(
                        additional, item, old_item, old_item is not None, f"{base}[{key}]", errors
                    )
        elif isinstance(value, list):
            items = schema.get("items")
            if not isinstance(items, Mapping):
                return
            old_items = _correlate_list(schema, value, old)
            base = "" if path == ROOT_PATH else path
            for index, item in enumerate(value):
                old_item = old_items[index]
                self._validate_rules(
                    items, item, old_item, old_item is not None, _index(base, index), errors
                )

    def _evaluate_rule(
        self, rule: CompiledRule, schema: Mapping[str, Any], value: Any, old: Any,
        has_old: bool, path: str, root: bool,
    ) -> list[FieldError]:
        type_name = str(schema.get("type") or "")
        cel_schema = _with_root_fields(schema) if root else schema
        self_value = to_cel(_root_view(value) if root else value, cel_schema)
        old_value = None
        if has_old:
            old_value = to_cel(_root_view(old) if root else old, cel_schema)
        try:
            result = rule.expression.evaluate(self_value, old_value, has_old)
        except CelEvaluationError as error:
            text = str(error)
            if text.startswith("no such overload"):
                detail = (
                    f"'{text}': call arguments did not match a supported operator, function or "
                    f"macro signature for rule: {rule.error_string()}"
                )
            else:
                detail = f"{text} evaluating rule: {rule.error_string()}"
            return [FieldError(path, INVALID, f"Invalid value: {_go_quote(type_name)}: {detail}")]
        if result_is_true(result):
            return []
        message = rule.default_message()
        if rule.message_expression is not None:
            try:
                evaluated = result_as_message(
                    rule.message_expression.evaluate(self_value, old_value, has_old)
                ).strip()
                if evaluated and "\n" not in evaluated:
                    message = evaluated
            except CelEvaluationError:
                message = rule.default_message()
        error_path = _apply_field_path(path, rule.field_path)
        if rule.reason == REQUIRED:
            return [FieldError(error_path, REQUIRED, f"Required value: {message}")]
        if rule.reason == FORBIDDEN:
            return [FieldError(error_path, FORBIDDEN, f"Forbidden: {message}")]
        if rule.reason == DUPLICATE:
            return [FieldError(error_path, DUPLICATE, f"Duplicate value: {_go_quote(type_name)}")]
        return [
            FieldError(error_path, INVALID, f"Invalid value: {_go_quote(type_name)}: {message}")
        ]


class _Dropped:
    """Marker for a pruned field (None is a legitimate JSON value)."""


_DROPPED = _Dropped()


def _schema_nodes(
    schema: Mapping[str, Any], location: str
) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Every schema node with its location, for compiling rules and patterns up front."""
    yield schema, location
    for key, child in (schema.get("properties") or {}).items():
        if isinstance(child, Mapping):
            yield from _schema_nodes(child, f"{location}.properties[{key}]")
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _schema_nodes(items, f"{location}.items")
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from _schema_nodes(additional, f"{location}.additionalProperties")
    for combinator in ("allOf", "anyOf", "oneOf"):
        for index, child in enumerate(schema.get(combinator) or []):
            if isinstance(child, Mapping):
                yield from _schema_nodes(child, f"{location}.{combinator}[{index}]")
    negated = schema.get("not")
    if isinstance(negated, Mapping):
        yield from _schema_nodes(negated, f"{location}.not")


def _root_view(obj: Any) -> Any:
    """``self`` at the root sees only metadata.name and metadata.generateName (like k8s)."""
    if not isinstance(obj, Mapping):
        return obj
    view = dict(obj)
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        view["metadata"] = {
            key: metadata[key] for key in ("name", "generateName") if key in metadata
        }
    return view


def _with_root_fields(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = dict(schema.get("properties") or {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties.setdefault("metadata", {"type": "object"})
    return {**schema, "properties": properties}


def _correlate_list(schema: Mapping[str, Any], value: list[Any], old: Any) -> list[Any]:
    """Old items of a ``listType: map`` list matched by their keys; other lists don't match."""
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
        return [None] * len(value)
    keys = schema.get("x-kubernetes-list-map-keys") or []

    def identity(item: Any) -> str | None:
        if not isinstance(item, Mapping):
            return None
        return json.dumps([item.get(key) for key in keys], sort_keys=True)

    by_identity = {identity(item): item for item in old if identity(item) is not None}
    return [by_identity.get(identity(item)) for item in value]


_FIELD_PATH_PART = re.compile(r"\.([A-Za-z_$][A-Za-z0-9_$-]*)|\[['\"]([^'\"]*)['\"]\]|\[(\d+)\]")


def _apply_field_path(path: str, field_path: str) -> str:
    """Append a rule's ``fieldPath`` (``.a.b``, ``['k']``, ``[0]``) to the node's path."""
    if not field_path:
        return path
    result = "" if path == ROOT_PATH else path
    position = 0
    while position < len(field_path):
        match = _FIELD_PATH_PART.match(field_path, position)
        if match is None:
            return path
        name, key, index = match.groups()
        if name is not None:
            result = _child(result, name)
        elif key is not None:
            result = f"{result}[{key}]"
        else:
            result = f"{result}[{index}]"
        position = match.end()
    return result or path


def admit(
    schema: Schema, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[FieldError]]:
    """Prune, default, then validate a custom resource, as the API server does on write."""
    pruned = schema.prune(obj)
    defaulted = schema.default(pruned)
    return defaulted, schema.validate(defaulted, old)
