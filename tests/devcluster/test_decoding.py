"""Request body decoding: alias bombs, nesting and non-JSON values are refused with kube's words,
and ordinary YAML and JSON come through unchanged."""

from __future__ import annotations

import json

import pytest
from gencluster_dev.machinery import decoding
from gencluster_dev.machinery.decoding import DecodeError, decode

pytestmark = pytest.mark.unit

LAUGHS = "\n".join(
    ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}", "data:",
     '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"  {c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi",
                                                                  strict=True)]
).encode()
"""CVE-2019-11253's ConfigMap: about 420 bytes that expand to 9**9 strings."""


def test_the_billion_laughs_body_is_refused_as_excessive_aliasing() -> None:
    assert len(LAUGHS) < 500
    with pytest.raises(DecodeError) as refused:
        decode(LAUGHS, yaml_allowed=True)
    assert str(refused.value) == decoding.EXCESSIVE_ALIASING


def test_few_levels_of_laughs_are_refused_long_before_they_grow() -> None:
    """Four levels (6,561 strings from 130 aliases) already pass go-yaml's ratio: refused."""
    four = b"\n".join(LAUGHS.splitlines()[:8])
    with pytest.raises(DecodeError, match="excessive aliasing"):
        decode(four, yaml_allowed=True)


def test_moderate_aliasing_is_accepted_and_expanded_into_independent_copies() -> None:
    body = b"base: &base {image: busybox, args: [a, b]}\none: *base\ntwo: {<<: *base, x: 1}\n"
    value = decode(body, yaml_allowed=True)
    assert value == {"base": {"image": "busybox", "args": ["a", "b"]},
                     "one": {"image": "busybox", "args": ["a", "b"]},
                     "two": {"image": "busybox", "args": ["a", "b"], "x": 1}}
    value["one"]["args"].append("c")
    assert value["base"]["args"] == ["a", "b"]  # no object is shared between two places


def test_aliases_of_long_strings_are_bounded_in_bytes() -> None:
    """40 aliases of a 100 kB string pass go-yaml's node ratio but would repeat 4 MB."""
    body = ('text: &t "' + "x" * 100_000 + '"\ncopies: [' + ", ".join(["*t"] * 40) + "]")
    with pytest.raises(DecodeError, match="excessive aliasing"):
        decode(body.encode(), yaml_allowed=True)
    fine = ('text: &t "' + "x" * 100_000 + '"\ncopies: [' + ", ".join(["*t"] * 5) + "]")
    assert len(decode(fine.encode(), yaml_allowed=True)["copies"]) == 5


def test_an_anchor_that_contains_itself_is_refused() -> None:
    with pytest.raises(DecodeError, match="contains itself"):
        decode(b"a: &a [1, *a]", yaml_allowed=True)


@pytest.mark.parametrize("yaml_allowed", [False, True])
def test_nesting_deeper_than_the_limit_is_refused(yaml_allowed: bool) -> None:
    limit = decoding.MAX_DEPTH
    assert decode(b"[" * limit + b"]" * limit, yaml_allowed=yaml_allowed) is not None
    for depth in (limit + 1, 5000, 200_000):
        with pytest.raises(DecodeError, match="exceeded max depth"):
            decode(b"[" * depth + b"]" * depth, yaml_allowed=yaml_allowed)


def test_aliases_cannot_build_nesting_past_the_limit() -> None:
    """Each anchor nests 60 levels: fine alone, 120 through one alias."""
    deep = "[" * 60 + "1" + "]" * 60
    with pytest.raises(DecodeError, match="exceeded max depth"):
        decode(f"a: &a {deep}\nb: [{'[' * 59} *a {']' * 59}]".encode(), yaml_allowed=True)


def test_block_yaml_nesting_is_refused_too() -> None:
    body = "".join(" " * i + "a:\n" for i in range(150)) + " " * 150 + "a: 1\n"
    with pytest.raises(DecodeError, match="exceeded max depth"):
        decode(body.encode(), yaml_allowed=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": NaN}', "invalid character 'N'"),
        (b'{"a": Infinity}', "invalid character 'I'"),
        (b'{"a": 1e999}', "cannot unmarshal number 1e999"),
        (b'{"a": ', "json parse error"),
        (b'{"a": ' + b"9" * 5000 + b"}", "json parse error"),
        (b"\xff\xfe\x00", "json parse error"),
    ],
)
def test_json_that_go_would_not_read_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(body, yaml_allowed=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a: .nan", "unsupported value"),
        (b"a: -.inf", "unsupported value"),
        (b"a: !!binary aGVsbG8=", "cannot be represented in JSON"),
        (b"? [a]\n: 1", "unhashable key"),
        (b"a: " + b"9" * 5000, "digits"),
        (b"a: 1\n---\nb: 2", "expected a single document"),
        (b"a: [1", "error converting YAML to JSON"),
        (b"a: !!python/object:os.system {}", "could not determine a constructor"),
    ],
)
def test_yaml_that_json_cannot_carry_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(body, yaml_allowed=True)


def test_yaml_scalars_become_json_values_as_sigs_k8s_io_yaml_gives_them() -> None:
    value = decode(b"when: 2001-12-14\nat: 2001-12-14t21:59:43.10-05:00\n"
                   b"keys: {1: one, null: none, 1.5: x}\nset: !!set {a}\n", yaml_allowed=True)
    assert value == {"when": "2001-12-14", "at": "2001-12-14t21:59:43.10-05:00",
                     "keys": {"1": "one", "null": "none", "1.5": "x"}, "set": {"a": None}}
    json.dumps(value, allow_nan=False)


def test_yaml_is_only_read_when_allowed() -> None:
    with pytest.raises(DecodeError, match="json parse error"):
        decode(b"a: 1", yaml_allowed=False)
    assert decode(b"a: 1", yaml_allowed=True) == {"a": 1}


def test_go_yaml_alias_ratio_curve() -> None:
    assert decoding.allowed_alias_ratio(1000) == 0.99
    assert decoding.allowed_alias_ratio(4_000_000) == pytest.approx(0.10)
    middle = decoding.allowed_alias_ratio(2_200_000)
    assert 0.10 < middle < 0.99
    assert not decoding.excessive_aliasing(1000, 100)  # below both thresholds
    assert decoding.excessive_aliasing(100_000, 99_500)
    assert not decoding.excessive_aliasing(100_000, 98_000)
