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
    "CompiledExpression",
    "CompiledRule",
    "compile_expression",
    "compile_rule",
    "evaluation_message",
    "result_as_message",
    "result_is_true",
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
        except CelEvaluationError:
            raise
        except Exception as error:  # a user's rule must never turn into a 500
            raise CelEvaluationError(_evaluation_message(error)) from None
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
    """cel-go words errors differently from celpy; translate the common ones.

    celpy's CELEvalError carries (message, Python exception class, exception args).
    """
    arguments: tuple[Any, ...] = getattr(error, "args", ())
    text = str(arguments[0]) if arguments else str(error)
    cause = arguments[1] if len(arguments) > 1 else None
    cause_arguments = arguments[2] if len(arguments) > 2 else ()
    if text.startswith("no such member in mapping: "):
        key = text[len("no such member in mapping: "):].strip("'\"")
        return f"no such key: {key}"
    if text == "no such key" and cause_arguments:
        return f"no such key: {cause_arguments[0]}"
    if cause is IndexError or "index out of range" in text:
        return "index out of bounds"
    if "divide by zero" in text:
        return "division by zero"
    if text.startswith("no such overload") or "no matching overload" in text:
        return "no such overload"
    if "empty sequence" in text:
        return "list argument must not be empty"
    if cause is ValueError and text == "return error for overflow":
        return "type conversion error"
    return text


def evaluation_message(error: Any) -> str:
    """cel-go's wording of a celpy evaluation error (for other users of CEL than CRD rules,
    such as ValidatingAdmissionPolicy)."""
    return _evaluation_message(error)


def _string_index_of(text: Any, needle: Any, start: Any = 0) -> Any:
    if isinstance(text, celtypes.ListType):
        return celtypes.IntType(next((i for i, item in enumerate(text) if item == needle), -1))
    return celtypes.IntType(str(text).find(str(needle), int(start)))


def _string_last_index_of(text: Any, needle: Any, end: Any = None) -> Any:
    if isinstance(text, celtypes.ListType):
        matches = [index for index, item in enumerate(text) if item == needle]
        return celtypes.IntType(matches[-1] if matches else -1)
    limit = len(str(text)) if end is None else int(end) + len(str(needle))
    return celtypes.IntType(str(text).rfind(str(needle), 0, limit))


def _split(text: Any, separator: Any, limit: Any = -1) -> Any:
    count = int(limit)
    if count == 0:
        return celtypes.ListType([])
    parts = str(text).split(str(separator)) if str(separator) else list(str(text))
    if count > 0 and len(parts) > count:
        parts = [*parts[: count - 1], str(separator).join(parts[count - 1:])]
    return celtypes.ListType([celtypes.StringType(part) for part in parts])


def _replace(text: Any, old: Any, new: Any, limit: Any = -1) -> Any:
    return celtypes.StringType(str(text).replace(str(old), str(new), int(limit)))


def _substring(text: Any, start: Any, end: Any = None) -> Any:
    stop = len(str(text)) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(str(text)):
        raise CelEvaluationError(f"index out of range: {int(start)}")
    return celtypes.StringType(str(text)[int(start):stop])


def _numeric_aggregate(values: Any, pick: Any) -> Any:
    if not values:
        raise CelEvaluationError("min/max of an empty list")
    return pick(values)


# The Kubernetes CEL libraries (strings extension, lists) that cel-python lacks.
_KUBERNETES_FUNCTIONS: dict[str, Any] = {
    "lowerAscii": lambda text: celtypes.StringType(str(text).lower()),
    "upperAscii": lambda text: celtypes.StringType(str(text).upper()),
    "trim": lambda text: celtypes.StringType(str(text).strip()),
    "charAt": lambda text, index: celtypes.StringType(str(text)[int(index):int(index) + 1]),
    "indexOf": _string_index_of,
    "lastIndexOf": _string_last_index_of,
    "split": _split,
    "replace": _replace,
    "substring": _substring,
    "join": lambda values, separator="": celtypes.StringType(
        str(separator).join(str(value) for value in values)
    ),
    "isSorted": lambda values: celtypes.BoolType(list(values) == sorted(values)),
    "sum": lambda values: sum(values[1:], values[0]) if values else celtypes.IntType(0),
    "min": lambda values: _numeric_aggregate(values, min),
    "max": lambda values: _numeric_aggregate(values, max),
}


def compile_expression(source: str) -> CompiledExpression:
    """Parse ``source``; CelCompileError carries the parser's pointer at the bad column."""
    try:
        tree = _ENVIRONMENT.compile(source)
        program = _ENVIRONMENT.program(tree, functions=_KUBERNETES_FUNCTIONS)
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
