"""Label and field selectors with Kubernetes syntax, semantics and error wording.

The API server turns ``labelSelector`` / ``fieldSelector`` query parameters into the objects
below, and the garbage collector, Services and PodDisruptionBudgets use
:func:`label_selector_from_object` on ``metav1.LabelSelector`` values.  Error messages follow
``k8s.io/apimachinery/pkg/labels`` and ``pkg/fields`` word for word because they reach users
through ``kubectl`` as the text of a 400 BadRequest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelRequirement",
    "LabelSelector",
    "SelectorError",
    "field_selector_fields",
    "is_qualified_name",
    "is_valid_label_value",
    "label_selector_from_object",
    "label_selector_from_set",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector that Kubernetes would refuse; the message is the one Kubernetes gives."""


# --- Kubernetes name validation (k8s.io/apimachinery/pkg/util/validation) -----------------

_QUALIFIED_NAME_FORMAT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME_FORMAT}$")
_QUALIFIED_NAME_MESSAGE = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_QUALIFIED_NAME_MAX_LENGTH = 63
_LABEL_VALUE_FORMAT = f"({_QUALIFIED_NAME_FORMAT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FORMAT}$")
_LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MAX_LENGTH = 63
_DNS1123_LABEL_FORMAT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FORMAT = f"{_DNS1123_LABEL_FORMAT}(\\.{_DNS1123_LABEL_FORMAT})*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FORMAT}$")
_DNS1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MAX_LENGTH = 253


def _regex_error(message: str, regex: str, *examples: str) -> str:
    """validation.RegexError: the message, examples, and the regex, as Kubernetes prints them."""
    if not examples:
        return f"{message} (regex used for validation is '{regex}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{regex}')"


def _max_length_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _dns1123_subdomain_errors(value: str) -> list[str]:
    errors: list[str] = []
    if len(value) > _DNS1123_SUBDOMAIN_MAX_LENGTH:
        errors.append(_max_length_error(_DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errors.append(
            _regex_error(_DNS1123_SUBDOMAIN_MESSAGE, _DNS1123_SUBDOMAIN_FORMAT, "example.com")
        )
    return errors


def is_qualified_name(value: str) -> list[str]:
    """validation.IsQualifiedName: the reasons ``value`` is not a valid label key (empty if ok)."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend(f"prefix part {message}" for message in _dns1123_subdomain_errors(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MESSAGE, _QUALIFIED_NAME_FORMAT, "MyName", "my.name",
                           "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > _QUALIFIED_NAME_MAX_LENGTH:
        errors.append("name part " + _max_length_error(_QUALIFIED_NAME_MAX_LENGTH))
    if not _QUALIFIED_NAME_RE.match(name):
        errors.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MESSAGE, _QUALIFIED_NAME_FORMAT, "MyName", "my.name",
                           "123-abc")
        )
    return errors


def is_valid_label_value(value: str) -> list[str]:
    """validation.IsValidLabelValue: the reasons ``value`` is not a valid label value."""
    errors: list[str] = []
    if len(value) > _LABEL_VALUE_MAX_LENGTH:
        errors.append(_max_length_error(_LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE_RE.match(value):
        errors.append(
            _regex_error(_LABEL_VALUE_MESSAGE, _LABEL_VALUE_FORMAT, "MyValue", "my_value", "12345")
        )
    return errors


def _go_quote(value: str) -> str:
    """Go's %q for the plain strings selectors carry (enough for error messages)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'


def _go_string_slice(values: Iterable[str]) -> str:
    """Go's %#v of a []string, as field.Invalid prints a bad list of values."""
    return "[]string{" + ", ".join(_go_quote(value) for value in values) + "}"


def _aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message alone, several in brackets."""
    unique = list(dict.fromkeys(messages))
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


# --- label selectors -------------------------------------------------------------------------


class Operator(StrEnum):
    """selection.Operator values, spelled as Kubernetes spells them."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"


def _parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), or None when Go would refuse it."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    number = int(text)
    if not -(2**63) <= number < 2**63:
        return None
    return number


@dataclass(frozen=True)
class LabelRequirement:
    """One ``key op values`` term; build it with :meth:`create` so it is validated."""

    key: str
    operator: Operator
    values: tuple[str, ...]

    @classmethod
    def create(
        cls, key: str, operator: Operator, values: Iterable[str], *, path: str = ""
    ) -> LabelRequirement:
        """labels.NewRequirement: validate like Kubernetes and raise one aggregated error."""
        values = tuple(values)
        errors: list[str] = []
        key_errors = is_qualified_name(key)
        prefix = f"{path}." if path else ""
        if key_errors:
            errors.append(
                f"{prefix}key: Invalid value: {_go_quote(key)}: {'; '.join(key_errors)}"
            )
        values_path = f"{prefix}values"
        if operator in (Operator.IN, Operator.NOT_IN):
            if not values:
                errors.append(
                    f"{values_path}: Invalid value: {_go_string_slice(values)}: "
                    "for 'in', 'notin' operators, values set can't be empty"
                )
        elif operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
            if len(values) != 1:
                errors.append(
                    f"{values_path}: Invalid value: {_go_string_slice(values)}: "
                    "exact-match compatibility requires one single value"
                )
        elif operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            if values:
                errors.append(
                    f"{values_path}: Invalid value: {_go_string_slice(values)}: "
                    "values set must be empty for exists and does not exist"
                )
        else:
            if len(values) != 1:
                errors.append(
                    f"{values_path}: Invalid value: {_go_string_slice(values)}: "
                    "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            for index, value in enumerate(values):
                if _parse_int64(value) is None:
                    errors.append(
                        f"{values_path}[{index}]: Invalid value: {_go_quote(value)}: "
                        "for 'Gt', 'Lt' operators, the value must be an integer"
                    )
        for index, value in enumerate(values):
            value_errors = is_valid_label_value(value)
            if value_errors:
                errors.append(
                    f"{values_path}[{index}][{key}]: Invalid value: {_go_quote(value)}: "
                    + "; ".join(value_errors)
                )
        if errors:
            raise SelectorError(_aggregate(errors))
        return cls(key, operator, values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Requirement.Matches: absent keys satisfy only !=, notin and !key."""
        present = self.key in labels
        if self.operator in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if self.operator in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if self.operator is Operator.EXISTS:
            return present
        if self.operator is Operator.DOES_NOT_EXIST:
            return not present
        if not present or len(self.values) != 1:
            return False
        actual = _parse_int64(labels[self.key])
        wanted = _parse_int64(self.values[0])
        if actual is None or wanted is None:
            return False
        if self.operator is Operator.GREATER_THAN:
            return actual > wanted
        return actual < wanted

    def __str__(self) -> str:
        """Requirement.String: values sorted, so equal selectors print equally."""
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator is Operator.EXISTS:
            return self.key
        values = ",".join(sorted(self.values)) if len(self.values) > 1 else "".join(self.values)
        if self.operator is Operator.IN:
            return f"{self.key} in ({values})"
        if self.operator is Operator.NOT_IN:
            return f"{self.key} notin ({values})"
        symbol = {
            Operator.EQUALS: "=",
            Operator.DOUBLE_EQUALS: "==",
            Operator.NOT_EQUALS: "!=",
            Operator.GREATER_THAN: ">",
            Operator.LESS_THAN: "<",
        }[self.operator]
        return f"{self.key}{symbol}{values}"


@dataclass(frozen=True)
class LabelSelector:
    """An AND of requirements; ``selects_nothing`` models labels.Nothing() (a nil selector)."""

    requirements: tuple[LabelRequirement, ...] = ()
    selects_nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.selects_nothing:
            return False
        present = labels or {}
        return all(requirement.matches(present) for requirement in self.requirements)

    def is_empty(self) -> bool:
        """True when the selector does not restrict anything (labels.Selector.Empty)."""
        return not self.selects_nothing and not self.requirements

    def requires_exact_match(self, key: str) -> str | None:
        """The value ``key`` must have to match (lets a store index by label), else None."""
        for requirement in self.requirements:
            if requirement.key == key:
                exact = (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN)
                if requirement.operator in exact and len(requirement.values) == 1:
                    return requirement.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


# Lexer tokens of the label selector grammar.
_END = "end"
_CLOSE = ")"
_COMMA = ","
_NOT = "!"
_DOUBLE_EQUALS = "=="
_EQUALS = "="
_GREATER = ">"
_IDENTIFIER = "identifier"
_IN = "in"
_LESS = "<"
_NOT_EQUALS = "!="
_NOT_IN = "notin"
_OPEN = "("
_ERROR = "error"

_SYMBOL_TOKENS = {
    ")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DOUBLE_EQUALS, "=": _EQUALS, ">": _GREATER,
    "<": _LESS, "!=": _NOT_EQUALS, "(": _OPEN,
}
_KEYWORD_TOKENS = {"in": _IN, "notin": _NOT_IN}
_SPECIAL_CHARACTERS = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens as labels.Lexer produces them, ending with the end-of-string token."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while True:
        while position < len(text) and text[position] in _WHITESPACE:
            position += 1
        if position >= len(text):
            tokens.append((_END, ""))
            return tokens
        if text[position] in _SPECIAL_CHARACTERS:
            buffer = ""
            last: tuple[str, str] | None = None
            while position < len(text) and text[position] in _SPECIAL_CHARACTERS:
                candidate = buffer + text[position]
                if candidate in _SYMBOL_TOKENS:
                    buffer = candidate
                    last = (_SYMBOL_TOKENS[candidate], candidate)
                    position += 1
                elif last is not None:
                    break
                else:
                    buffer = candidate
                    position += 1
            if last is None:
                tokens.append((_ERROR, f"error expected: keyword found '{buffer}'"))
            else:
                tokens.append(last)
            continue
        start = position
        while (
            position < len(text)
            and text[position] not in _SPECIAL_CHARACTERS
            and text[position] not in _WHITESPACE
        ):
            position += 1
        word = text[start:position]
        tokens.append((_KEYWORD_TOKENS.get(word, _IDENTIFIER), word))


class _LabelParser:
    """The recursive descent parser of labels.Parse, with its error messages."""

    def __init__(self, text: str) -> None:
        self._tokens = _lex(text)
        self._position = 0

    def _peek(self, values_context: bool = True) -> tuple[str, str]:
        token, literal = self._tokens[self._position]
        if values_context and token in (_IN, _NOT_IN):
            token = _IDENTIFIER
        return token, literal

    def _take(self, values_context: bool = True) -> tuple[str, str]:
        item = self._peek(values_context)
        self._position += 1
        return item

    def parse(self) -> list[LabelRequirement]:
        requirements: list[LabelRequirement] = []
        while True:
            token, literal = self._peek()
            if token in (_IDENTIFIER, _NOT):
                try:
                    requirements.append(self._requirement())
                except SelectorError as error:
                    raise SelectorError(f"unable to parse requirement: {error}") from None
                token, literal = self._take()
                if token == _END:
                    return requirements
                if token == _COMMA:
                    next_token, next_literal = self._peek()
                    if next_token not in (_IDENTIFIER, _NOT):
                        raise SelectorError(
                            f"found '{next_literal}', expected: identifier after ','"
                        )
                    continue
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            if token == _END:
                return requirements
            raise SelectorError(f"found '{literal}', expected: !, identifier, or 'end of string'")

    def _requirement(self) -> LabelRequirement:
        key, inferred = self._key_and_inferred_operator()
        if inferred is not None:
            return LabelRequirement.create(key, inferred, ())
        operator = self._operator()
        if operator in (Operator.IN, Operator.NOT_IN):
            values = self._values()
        else:
            values = self._exact_value()
        return LabelRequirement.create(key, operator, sorted(values))

    def _key_and_inferred_operator(self) -> tuple[str, Operator | None]:
        operator: Operator | None = None
        token, literal = self._take()
        if token == _NOT:
            operator = Operator.DOES_NOT_EXIST
            token, literal = self._take()
        if token != _IDENTIFIER:
            raise SelectorError(f"found '{literal}', expected: identifier")
        key_errors = is_qualified_name(literal)
        if key_errors:
            # The parser validates with a nil field.Path, which Go prints as "<nil>".
            raise SelectorError(
                f"<nil>: Invalid value: {_go_quote(literal)}: {'; '.join(key_errors)}"
            )
        next_token, _ = self._peek()
        if next_token in (_END, _COMMA) and operator is None:
            operator = Operator.EXISTS
        return literal, operator

    def _operator(self) -> Operator:
        token, literal = self._take(values_context=False)
        operators = {
            _IN: Operator.IN, _EQUALS: Operator.EQUALS, _DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
            _GREATER: Operator.GREATER_THAN, _LESS: Operator.LESS_THAN,
            _NOT_IN: Operator.NOT_IN, _NOT_EQUALS: Operator.NOT_EQUALS,
        }
        if token not in operators:
            raise SelectorError(f"found '{literal}', expected: {_BINARY_OPERATORS}")
        return operators[token]

    def _values(self) -> set[str]:
        token, literal = self._take()
        if token != _OPEN:
            raise SelectorError(f"found '{literal}' expected: '('")
        token, literal = self._peek()
        if token in (_IDENTIFIER, _COMMA):
            values = self._identifier_list()
            closing, _ = self._take()
            if closing != _CLOSE:
                raise SelectorError(f"found '{literal}', expected: ')'")
            return values
        if token == _CLOSE:
            self._take()
            return {""}
        raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")

    def _identifier_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            token, literal = self._take()
            if token == _IDENTIFIER:
                values.add(literal)
                next_token, next_literal = self._peek()
                if next_token == _COMMA:
                    continue
                if next_token == _CLOSE:
                    return values
                raise SelectorError(f"found '{next_literal}', expected: ',' or ')'")
            if token == _COMMA:
                if not values:
                    values.add("")
                next_token, _ = self._peek()
                if next_token == _CLOSE:
                    values.add("")
                    return values
                if next_token == _COMMA:
                    self._take()
                    values.add("")
                continue
            raise SelectorError(f"found '{literal}', expected: ',', or identifier")

    def _exact_value(self) -> set[str]:
        token, _ = self._peek()
        if token in (_END, _COMMA):
            return {""}
        token, literal = self._take()
        if token == _IDENTIFIER:
            return {literal}
        raise SelectorError(f"found '{literal}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """labels.Parse: ``""`` selects everything; requirements are sorted by key like Kubernetes."""
    requirements = _LabelParser(text).parse()
    requirements.sort(key=lambda requirement: requirement.key)
    return LabelSelector(tuple(requirements))


_OBJECT_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def label_selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector: None selects nothing, ``{}`` selects everything."""
    if selector is None:
        return LabelSelector(selects_nothing=True)
    match_labels = selector.get("matchLabels") or {}
    match_expressions = selector.get("matchExpressions") or []
    requirements: list[LabelRequirement] = []
    for key, value in match_labels.items():
        requirements.append(LabelRequirement.create(str(key), Operator.EQUALS, [str(value)]))
    for expression in match_expressions:
        operator_name = expression.get("operator")
        if operator_name not in _OBJECT_OPERATORS:
            raise SelectorError(
                f"{_go_quote(str(operator_name or ''))} is not a valid label selector operator"
            )
        values = [str(value) for value in expression.get("values") or []]
        requirements.append(
            LabelRequirement.create(
                str(expression.get("key", "")), _OBJECT_OPERATORS[operator_name], values
            )
        )
    requirements.sort(key=lambda requirement: requirement.key)
    return LabelSelector(tuple(requirements))


def label_selector_from_set(labels: Mapping[str, str] | None) -> LabelSelector:
    """labels.SelectorFromSet (a Service's or ReplicaSet's plain map): empty selects all."""
    requirements = sorted(
        (LabelRequirement(str(key), Operator.EQUALS, (str(value),))
         for key, value in (labels or {}).items()),
        key=lambda requirement: requirement.key,
    )
    return LabelSelector(tuple(requirements))


# --- field selectors -------------------------------------------------------------------------

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")

_FIELDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "Pod": (
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
        "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    ),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
}

# Fields whose object path differs from the selector name (Event "source" is source.component).
_FIELD_OBJECT_PATHS = {("Event", "source"): ("source", "component")}


def field_selector_fields(kind: str) -> tuple[str, ...]:
    """The field labels a field selector on ``kind`` may name, as the API server allows."""
    return _COMMON_FIELDS + _FIELDS_BY_KIND.get(kind, ())


def _field_value(obj: Mapping[str, Any], kind: str, field: str) -> str:
    """The string the API server compares: missing fields are "", booleans "true"/"false"."""
    path = _FIELD_OBJECT_PATHS.get((kind, field), tuple(field.split(".")))
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            current = None
            break
        current = current[part]
    if kind == "Event" and field == "source" and not current:
        current = obj.get("reportingComponent")
    if current is None:
        if kind == "Node" and field == "spec.unschedulable":
            return "false"
        if kind == "Pod" and field == "spec.hostNetwork":
            return "false"
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


@dataclass(frozen=True)
class FieldRequirement:
    """``field=value`` (``==`` is the same) or ``field!=value``."""

    field: str
    value: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{_escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """An AND of field requirements over one kind's selectable fields."""

    kind: str
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for requirement in self.requirements:
            equal = _field_value(obj, self.kind, requirement.field) == requirement.value
            if equal == requirement.negated:
                return False
        return True

    def is_empty(self) -> bool:
        return not self.requirements

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must have (e.g. metadata.name), else None."""
        for requirement in self.requirements:
            if requirement.field == field and not requirement.negated:
                return requirement.value
        return None

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(value: str) -> str:
    """fields.UnescapeValue: ``\\\\``, ``\\,`` and ``\\=`` only; bare ``=`` is refused."""
    if "\\" not in value and "=" not in value and "," not in value:
        return value
    result: list[str] = []
    escaped = False
    for character in value:
        if escaped:
            if character not in "\\,=":
                raise SelectorError(
                    f"invalid field selector: invalid escape sequence: \\{character}"
                )
            result.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character in ",=":
            # Go formats the rune with %v, which prints its code point (61 for "=").
            raise SelectorError(
                f"invalid field selector: unescaped character in value: {ord(character)}"
            )
        else:
            result.append(character)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(result)


def _split_field_terms(text: str) -> list[str]:
    """fields.splitTerms: split on commas that are not escaped by a backslash."""
    if not text:
        return []
    terms: list[str] = []
    start = 0
    escaped = False
    for index, character in enumerate(text):
        if escaped:
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ",":
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _split_field_term(term: str) -> tuple[str, str, str] | None:
    """fields.splitTerm: the first ``!=``, ``==`` or ``=`` from the left splits the term."""
    for index in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, index):
                return term[:index], operator, term[index + len(operator):]
    return None


def parse_field_selector(text: str, kind: str) -> FieldSelector:
    """fields.ParseSelector plus the API server's per-kind field label check."""
    supported = field_selector_fields(kind)
    requirements: list[FieldRequirement] = []
    for term in sorted(_split_field_terms(text)):
        if not term:
            continue
        split = _split_field_term(term)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field, operator, raw_value = split
        value = _unescape_field_value(raw_value)
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, value, negated=operator == "!="))
    return FieldSelector(kind, tuple(requirements))
