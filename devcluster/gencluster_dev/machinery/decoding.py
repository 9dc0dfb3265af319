"""Request bodies (JSON or YAML) to plain JSON values, bounded the way kube-apiserver bounds them.

A body is at most 3 MiB when it reaches this module (the REST shell refuses longer ones with
413), but 3 MiB can still describe far more than 3 MiB of data, or data no later step can walk:

- **YAML aliases** (the "billion laughs" of CVE-2019-11253): PyYAML shares the object an alias
  names, so loading is cheap, but every later step (deep copies, patches, the JSON written to
  the store and to every watcher) expands it: a 360-byte body becomes tens of MB. Like
  go-yaml since v2.2.4 (what kube-apiserver uses), a document is refused when the share of
  nodes reached through aliases is too high (`allowed_alias_ratio`); the answer is kube's
  `error converting YAML to JSON: yaml: document contains excessive aliasing`. On top of the
  node count, which go-yaml stops at, aliases may repeat at most `MAX_ALIAS_BYTES` of scalar
  text, because one alias of a long string costs as much as a million nodes would.
  An anchor whose value contains itself is refused as go-yaml refuses it.
- **Nesting**: the API server's own walkers (validation, defaulting, patches, CEL, copies) are
  recursive Python, so a value nested deeper than `MAX_DEPTH` objects and lists is refused
  before any of them runs. kube-apiserver's JSON decoder stops at 10,000 levels; Kubernetes
  objects need a few dozen, so 100 keeps every walker far from Python's recursion limit.
- **Values JSON cannot carry**: YAML timestamps become the text that was written (as
  sigs.k8s.io/yaml gives them), mapping keys become strings, `!!set` a mapping to nulls;
  NaN, infinities, `!!binary` and unhashable keys are refused. JSON's own `NaN` and
  `Infinity` literals, which Python accepts and Go does not, are refused too.

The result never shares an object between two places (aliases are copied once they passed the
limits), so no later mutation in one place shows up in another. Pure: bytes in, value or
`DecodeError` out.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import yaml

MAX_DEPTH = 100
"""Deepest nesting of objects and lists in a body (a scalar at the top level is depth 0)."""

ALIAS_RATIO_RANGE_LOW = 400_000
"""go-yaml's `alias_ratio_range_low`: up to this many decoded nodes, 99 % may come from
aliases."""
ALIAS_RATIO_RANGE_HIGH = 4_000_000
"""go-yaml's `alias_ratio_range_high`: from this many decoded nodes on, only 10 % may."""
MIN_ALIAS_NODES = 100
MIN_DECODED_NODES = 1000
"""go-yaml checks the ratio only past 100 aliased and 1,000 decoded nodes."""
MAX_ALIAS_BYTES = 3 * 1024 * 1024
"""Scalar text that aliases may repeat in one document (the size of the largest body)."""

EXCESSIVE_ALIASING = "error converting YAML to JSON: yaml: document contains excessive aliasing"

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader (libyaml's parser when PyYAML was built with it, which also stops
    at 1,000 nesting levels), except that timestamps stay the text that was written: go-yaml
    gives them to sigs.k8s.io/yaml as strings, and JSON has no date type."""


Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


class DecodeError(ValueError):
    """A body that cannot be accepted; the message is what the client is told (400)."""


def decode(raw: bytes, *, yaml_allowed: bool) -> Any:
    """A JSON body, or when `yaml_allowed` a YAML one (JSON is YAML too), as plain JSON values.

    Raises `DecodeError` with kube-apiserver's wording for anything unparsable or over a limit.
    """
    try:
        value = decode_json(raw)
    except DecodeError as json_error:
        if not yaml_allowed:
            raise
        if not isinstance(json_error.__cause__, ValueError) or isinstance(
            json_error.__cause__, _Refused
        ):
            raise  # valid JSON, but over a limit: YAML would not read it differently
        return decode_yaml(raw)
    return value


class _Refused(ValueError):
    """A JSON document that parsed but carries a value Go's decoder would refuse."""


def _refuse_constant(name: str) -> float:
    raise _Refused(f"invalid character '{name[0]}' looking for beginning of value")


def _parse_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _Refused(f"cannot unmarshal number {text} into a float64")
    return number


def decode_json(raw: bytes) -> Any:
    """Parse a JSON body (no NaN or Infinity) and check its depth."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_parse_float)
    except RecursionError:
        raise DecodeError(_too_deep()) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise DecodeError(
            "the object provided is unrecognized: couldn't get version/kind; json parse "
            f"error: {error}") from error
    if json_depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise DecodeError(_too_deep())
    return value


def decode_yaml(raw: bytes) -> Any:
    """Parse one YAML document: compose the node graph, check aliases and depth on it, then
    build plain JSON values."""
    loader = Loader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_node_graph(node)
        value = loader.construct_document(node)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError(_too_deep()) from None
    except yaml.YAMLError as error:
        raise DecodeError(f"error converting YAML to JSON: {error}") from None
    except (ValueError, TypeError) as error:  # e.g. an integer with too many digits
        raise DecodeError(f"error converting YAML to JSON: {error}") from None
    finally:
        loader.dispose()
    return to_json(value)


def _too_deep() -> str:
    return (f"the object provided is unrecognized: json: exceeded max depth (this API server "
            f"accepts at most {MAX_DEPTH} levels of nested objects and lists)")


def allowed_alias_ratio(decoded: int) -> float:
    """The share of decoded nodes that may come from aliases (go-yaml's `allowedAliasRatio`):
    99 % for small documents, sliding down to 10 % for very large ones."""
    if decoded <= ALIAS_RATIO_RANGE_LOW:
        return 0.99
    if decoded >= ALIAS_RATIO_RANGE_HIGH:
        return 0.10
    span = ALIAS_RATIO_RANGE_HIGH - ALIAS_RATIO_RANGE_LOW
    return 0.99 - 0.89 * ((decoded - ALIAS_RATIO_RANGE_LOW) / span)


def excessive_aliasing(decoded: int, aliased: int) -> bool:
    """go-yaml's rule, checked after every node it decodes."""
    return (aliased > MIN_ALIAS_NODES and decoded > MIN_DECODED_NODES
            and aliased / decoded > allowed_alias_ratio(decoded))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_node_graph(root: yaml.Node) -> None:
    """Walk the composed document in order, as go-yaml decodes it, without expanding it.

    A node met a second time is an alias: it counts as many decoded (and aliased) nodes as its
    expansion holds, and its height adds to the depth where it is used. Sizes are memoised per
    node, so the walk costs one visit per node of the body, whatever the expansion.
    Iterative, so a deep body cannot exhaust the stack here.
    """
    size: dict[int, int] = {}  # id(node) -> nodes in its expansion
    text: dict[int, int] = {}  # id(node) -> scalar characters in its expansion
    height: dict[int, int] = {}  # id(node) -> deepest nesting below it, itself included
    open_nodes: set[int] = set()
    decoded = aliased = aliased_text = 0
    # Frames: (node, depth, children iterator, decoded at entry, text at entry, max height).
    stack: list[list[Any]] = []

    def enter(node: yaml.Node, depth: int) -> None:
        nonlocal decoded, aliased, aliased_text
        key = id(node)
        if key in open_nodes:
            raise DecodeError(
                "error converting YAML to JSON: yaml: an anchor's value contains itself")
        if key in size:  # an alias of a node already decoded
            decoded += size[key]
            aliased += size[key]
            aliased_text += text[key]
            if excessive_aliasing(decoded, aliased) or aliased_text > MAX_ALIAS_BYTES:
                raise DecodeError(EXCESSIVE_ALIASING)
            if depth + height[key] > MAX_DEPTH:
                raise DecodeError(_too_deep())
            if stack:
                stack[-1][5] = max(stack[-1][5], height[key])
            return
        decoded += 1
        nested = isinstance(node, yaml.SequenceNode | yaml.MappingNode)
        if nested and depth + 1 > MAX_DEPTH:
            raise DecodeError(_too_deep())
        open_nodes.add(key)
        chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        stack.append([node, depth, iter(_children(node)), decoded - 1, chars, 0])

    enter(root, 0)
    while stack:
        frame = stack[-1]
        node, depth, children = frame[0], frame[1], frame[2]
        child: yaml.Node | None = next(children, None)
        if child is not None:
            enter(child, depth + (1 if _is_collection(node) else 0))
            continue
        stack.pop()
        key = id(node)
        open_nodes.discard(key)
        own = 1 if _is_collection(node) else 0
        size[key] = decoded - frame[3]
        height[key] = frame[5] + own
        text[key] = frame[4] + sum(text[id(child)] for child in _children(node))
        if stack:
            stack[-1][5] = max(stack[-1][5], height[key])


def _is_collection(node: yaml.Node) -> bool:
    return isinstance(node, yaml.SequenceNode | yaml.MappingNode)


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value (objects and lists), counted up to `limit + 1` at most.

    Iterative, so a value built from a deep body cannot exhaust the stack here."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def to_json(value: Any) -> Any:
    """A fresh tree of JSON values from what PyYAML's safe constructor built (depth already
    checked, so the recursion is bounded)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise DecodeError(
                f"error converting YAML to JSON: json: unsupported value: {value!r}")
        return value
    if isinstance(value, dict):
        return {_key(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set):
        return {_key(k): None for k in value}
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise DecodeError(
        f"error converting YAML to JSON: values of type {type(value).__name__} (for example "
        "!!binary) cannot be represented in JSON")


def _key(key: Any) -> str:
    """A mapping key as JSON has it: a string (YAML's `true`, `1`, `null` keys become text)."""
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return json.dumps(key)
    if isinstance(key, datetime.date):
        return str(to_json(key))
    raise DecodeError(
        f"error converting YAML to JSON: mapping keys must be scalars, not {type(key).__name__}")
