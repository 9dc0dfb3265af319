"""CEL for CRD ``x-kubernetes-validations``, on top of cel-python (``celpy``).

Kubernetes binds ``self`` (and ``oldSelf`` in transition rules) to the value of the schema
node that holds the rule, typed by that node's schema, and reports failures with fixed
wording.  This module compiles rules once, converts JSON values the way the API server does
(``number`` fields are doubles even when written as ``1``), and turns celpy's evaluation
errors into the messages cel-go gives (``no such key: x``), so ``schema`` can phrase the field
errors exactly like Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from lark import Token

__all__ = [
    "CelCompileError",
    "CelEvaluationError",
    "CompiledRule",
    "compile_expression",
    "compile_rule",
    "to_cel",
]

_ENVIRONMENT = celpy.Environment()


class CelCompileError(ValueError):
    """A rule or messageExpression that does not parse; the message points at the column."""


class CelEvaluationError(RuntimeError):
    """A rule that failed while running (missing key, division by zero, bad overload...)."""


@dataclass(frozen=True)
class CompiledExpression:
    """One parsed CEL expression ready to evaluate against ``self``/``oldSelf``."""

    source: str
    program: Any
    references_old_self: bool

    def evaluate(self, self_value: Any, old_value: Any | None, has_old: bool) -> Any:
        """Run the expression; raises CelEvaluationError with cel-go's wording on failure."""
        activation: dict[str, Any] = {"self": self_value}
        if has_old:
            activation["oldSelf"] = old_value
        try:
            result = self.program.evaluate(activation)
        except celpy.CELEvalError as error:
            raise CelEvaluationError(_evaluation_message(error)) from None
        except (TypeError, ValueError, KeyError, ZeroDivisionError, IndexError) as error:
            raise CelEvaluationError(str(error)) from None
        if isinstance(result, celpy.CELEvalError):
            raise CelEvaluationError(_evaluation_message(result))
        return result


@dataclass(frozen=True)
class CompiledRule:
    """A compiled ``x-kubernetes-validations`` entry."""

    rule: str
    message: str
    message_expression: CompiledExpression | None
    field_path: str
    reason: str
    expression: CompiledExpression

    @property
    def is_transition_rule(self) -> bool:
        """Rules that mention ``oldSelf`` only run on update, when an old value exists."""
        return self.expression.references_old_self

    def default_message(self) -> str:
        """ruleMessageOrDefault: the message, else ``failed rule: <rule>``."""
        if self.message.strip():
            return self.message.strip()
        return f"failed rule: {self.rule.strip()}"

    def error_string(self) -> str:
        """ruleErrorString: the message if any, else the rule text."""
        return self.message.strip() or self.rule.strip()


def _evaluation_message(error: Any) -> str:
    """cel-go words errors differently from celpy; translate the common ones."""
    arguments = getattr(error, "args", ())
    text = str(arguments[0]) if arguments else str(error)
    if text.startswith("no such member in mapping: "):
        key = text[len("no such member in mapping: "):].strip("'\"")
        return f"no such key: {key}"
    if "divide by zero" in text:
        return "division by zero"
    if text.startswith("no such overload") or "no matching overload" in text:
        return "no such overload"
    if "index" in text.lower() and "range" in text.lower():
        return "index out of bounds"
    return text


def compile_expression(source: str) -> CompiledExpression:
    """Parse ``source``; CelCompileError carries the parser's pointer at the bad column."""
    try:
        tree = _ENVIRONMENT.compile(source)
        program = _ENVIRONMENT.program(tree)
    except celpy.CELParseError as error:
        pointer = str(error.args[0]) if error.args else str(error)
        raise CelCompileError(f"Syntax error: {pointer.rstrip()}") from None
    except Exception as error:  # celpy raises assorted errors for odd programs
        raise CelCompileError(str(error)) from None
    references_old_self = any(
        token == "oldSelf"
        for token in tree.scan_values(lambda value: isinstance(value, Token))
        if token.type == "IDENT"
    )
    return CompiledExpression(source, program, references_old_self)


def compile_rule(rule: Mapping[str, Any]) -> CompiledRule:
    """Compile one ``x-kubernetes-validations`` entry (``rule`` plus optional extras)."""
    source = rule.get("rule")
    if not isinstance(source, str) or not source.strip():
        raise CelCompileError("rule is required")
    message_expression_source = rule.get("messageExpression")
    message_expression = (
        compile_expression(message_expression_source)
        if isinstance(message_expression_source, str) and message_expression_source.strip()
        else None
    )
    return CompiledRule(
        rule=source,
        message=str(rule.get("message") or ""),
        message_expression=message_expression,
        field_path=str(rule.get("fieldPath") or ""),
        reason=str(rule.get("reason") or "FieldValueInvalid"),
        expression=compile_expression(source),
    )


def _schema_type(schema: Mapping[str, Any] | None) -> str | None:
    return schema.get("type") if schema else None


def to_cel(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """A JSON value as the CEL value Kubernetes binds: typed by the schema where it matters.

    ``number`` fields become doubles even when the JSON holds an integer, so ``self.x == 1.5``
    and ``self.x > 1`` behave the same whatever the client wrote.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        properties = (schema or {}).get("properties") or {}
        additional = (schema or {}).get("additionalProperties")
        converted = {}
        for key, item in value.items():
            child_schema = properties.get(key)
            if child_schema is None and isinstance(additional, Mapping):
                child_schema = additional
            converted[celtypes.StringType(key)] = to_cel(item, child_schema)
        return celtypes.MapType(converted)
    if isinstance(value, list):
        items = (schema or {}).get("items")
        return celtypes.ListType([to_cel(item, items) for item in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        if _schema_type(schema) == "number":
            return celtypes.DoubleType(float(value))
        return celtypes.IntType(value)
    if isinstance(value, float):
        if _schema_type(schema) == "integer" and value.is_integer():
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    raise CelEvaluationError(f"unsupported value of type {type(value).__name__}")


def result_is_true(result: Any) -> bool:
    """Only the boolean ``true`` passes a rule (a non-boolean result fails, like cel-go)."""
    return isinstance(result, celtypes.BoolType | bool) and bool(result)


def result_as_message(result: Any) -> str:
    """messageExpression results must be strings (cel-go's wording otherwise)."""
    if not isinstance(result, celtypes.StringType | str):
        raise CelEvaluationError("messageExpression failed to convert to string")
    return str(result)
