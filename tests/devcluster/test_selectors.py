"""Label and field selectors: Kubernetes semantics and the exact words of its errors."""

from __future__ import annotations

import pytest
from gencluster_dev.machinery.selectors import (
    SelectorError,
    label_selector_from_object,
    label_selector_from_set,
    parse_field_selector,
    parse_label_selector,
)
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

KEY_REGEX_HINT = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("", None, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app=web", {}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("app in (web,db)", {"app": "db"}, True),
        ("app in (web,db)", {}, False),
        ("app notin (web,db)", {}, True),
        ("app notin (web,db)", {"app": "web"}, False),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,tier", {"app": "web"}, False),
        ("app=web,tier", {"app": "web", "tier": "x"}, True),
        ("app=", {"app": ""}, True),
        ("app in ()", {"app": ""}, True),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas<2", {"replicas": "3"}, False),
        ("replicas>2", {"replicas": "many"}, False),
        ("example.com/role in (primary)", {"example.com/role": "primary"}, True),
        ("x in (in,notin)", {"x": "notin"}, True),
    ],
)
def test_label_selector_matches_like_kubernetes(
    text: str, labels: dict[str, str] | None, expected: bool
) -> None:
    assert parse_label_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("  b = 2 , a == 1 ", "a==1,b=2"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("!a, b notin (z, y)", "!a,b notin (y,z)"),
        ("n>3", "n>3"),
    ],
)
def test_str_is_the_canonical_kubernetes_text(text: str, canonical: str) -> None:
    assert str(parse_label_selector(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a,", "found '', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a=(b", "unable to parse requirement: found '(', expected: identifier"),
        ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
        ("!!a", "unable to parse requirement: found '!', expected: identifier"),
        ("a in (,,)", "unable to parse requirement: found ')', expected: ',', or identifier"),
        ("a$b=c", f'unable to parse requirement: <nil>: Invalid value: "a$b": {KEY_REGEX_HINT}'),
        (
            "a>b",
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' "
            "operators, the value must be an integer",
        ),
        (
            "a=-x",
            'unable to parse requirement: values[0][a]: Invalid value: "-x": a valid label must '
            "be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyValue',  or "
            "'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
    ],
)
def test_parse_errors_read_like_kubernetes(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    assert str(caught.value) == message


def test_selector_error_is_a_value_error() -> None:
    assert issubclass(SelectorError, ValueError)


def test_prefixed_key_with_bad_prefix_is_refused() -> None:
    with pytest.raises(SelectorError, match="prefix part a lowercase RFC 1123 subdomain"):
        parse_label_selector("Example.com/a=b")


def test_too_long_value_is_refused() -> None:
    with pytest.raises(SelectorError, match="must be no more than 63 characters"):
        parse_label_selector("a=" + "b" * 64)


def test_nil_selector_object_selects_nothing_and_empty_selects_everything() -> None:
    assert not label_selector_from_object(None).matches({"a": "b"})
    assert label_selector_from_object({}).matches({"a": "b"})
    assert label_selector_from_object({"matchLabels": {}, "matchExpressions": []}).matches({})


def test_selector_object_combines_labels_and_expressions() -> None:
    selector = label_selector_from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
            ],
        }
    )
    assert selector.matches({"app": "web", "tier": "a", "zone": "z"})
    assert not selector.matches({"app": "web", "tier": "a", "zone": "z", "canary": "1"})
    assert not selector.matches({"app": "web", "tier": "c", "zone": "z"})
    assert not selector.matches({"app": "web", "tier": "a", "zone": "z", "env": "prod"})
    assert str(selector) == "app=web,canary,env notin (prod),tier in (a,b),zone".replace(
        "canary", "!canary"
    )


def test_selector_object_errors_read_like_kubernetes() -> None:
    with pytest.raises(SelectorError) as caught:
        label_selector_from_object({"matchExpressions": [{"key": "a", "operator": "Foo"}]})
    assert str(caught.value) == '"Foo" is not a valid label selector operator'
    with pytest.raises(SelectorError) as caught:
        label_selector_from_object({"matchExpressions": [{"key": "a", "operator": "In"}]})
    assert str(caught.value) == (
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
    )
    with pytest.raises(SelectorError) as caught:
        label_selector_from_object(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}
        )
    assert str(caught.value) == (
        'values: Invalid value: []string{"x"}: '
        "values set must be empty for exists and does not exist"
    )


def test_selector_from_plain_map() -> None:
    selector = label_selector_from_set({"role": "primary", "app": "kv"})
    assert str(selector) == "app=kv,role=primary"
    assert selector.matches({"app": "kv", "role": "primary", "x": "y"})
    assert not selector.matches({"app": "kv"})
    assert label_selector_from_set(None).matches({})


def test_requires_exact_match() -> None:
    selector = parse_label_selector("app=web,tier in (a,b)")
    assert selector.requires_exact_match("app") == "web"
    assert selector.requires_exact_match("tier") is None
    assert selector.requires_exact_match("other") is None


label_keys = st.from_regex(
    r"\A([a-z0-9]{1,8}(\.[a-z0-9]{1,5})?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?\Z"
)
nonempty_label_values = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?\Z")
label_values = st.one_of(st.just(""), nonempty_label_values)


@st.composite
def requirement_texts(draw: st.DrawFn) -> str:
    key = draw(label_keys)
    form = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]))
    if form == "exists":
        return key
    if form == "!":
        return f"!{key}"
    if form in ("in", "notin"):
        # Kubernetes' grammar accepts at most one empty value per set ("(,,)" is an error).
        values = draw(st.lists(nonempty_label_values, min_size=1, max_size=3, unique=True))
        return f"{key} {form} ({','.join(values)})"
    return f"{key}{form}{draw(label_values)}"


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(st.lists(requirement_texts(), max_size=4))
def test_str_round_trips_through_parse(requirements: list[str]) -> None:
    selector = parse_label_selector(",".join(requirements))
    reparsed = parse_label_selector(str(selector))
    assert reparsed == selector
    assert str(reparsed) == str(selector)


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(
    st.lists(requirement_texts(), max_size=4),
    st.dictionaries(label_keys, label_values, max_size=4),
)
def test_selector_is_the_and_of_its_requirements(
    requirements: list[str], labels: dict[str, str]
) -> None:
    whole = parse_label_selector(",".join(requirements)).matches(labels)
    parts = [parse_label_selector(requirement).matches(labels) for requirement in requirements]
    assert whole == all(parts)


# --- field selectors -------------------------------------------------------------------------

POD = {
    "metadata": {"name": "web-0", "namespace": "default"},
    "spec": {"nodeName": "node-1", "restartPolicy": "Always", "hostNetwork": True},
    "status": {"phase": "Running", "podIP": "127.2.64.1"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("metadata.name=web-0", True),
        ("metadata.name==web-0", True),
        ("metadata.name!=web-0", False),
        ("metadata.namespace=default,status.phase=Running", True),
        ("status.phase=Pending", False),
        ("spec.nodeName=", False),
        ("spec.hostNetwork=true", True),
        ("status.nominatedNodeName=", True),
        ("status.podIP=127.2.64.1", True),
    ],
)
def test_pod_field_selector(text: str, expected: bool) -> None:
    assert parse_field_selector(text, "Pod").matches(POD) is expected


def test_empty_node_name_selects_unscheduled_pods() -> None:
    selector = parse_field_selector("spec.nodeName=", "Pod")
    assert selector.matches({"metadata": {"name": "p"}, "spec": {}})
    assert not selector.matches(POD)


def test_field_selector_for_other_kinds() -> None:
    event = {
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod", "name": "web-0", "uid": "u1"},
        "reason": "Started",
        "type": "Normal",
        "source": {"component": "kubelet"},
    }
    assert parse_field_selector(
        "involvedObject.kind=Pod,involvedObject.name=web-0,source=kubelet,type=Normal", "Event"
    ).matches(event)
    assert parse_field_selector("type=kubernetes.io/tls", "Secret").matches(
        {"type": "kubernetes.io/tls"}
    )
    assert parse_field_selector("spec.unschedulable=false", "Node").matches({"spec": {}})
    assert parse_field_selector("status.phase=Active", "Namespace").matches(
        {"status": {"phase": "Active"}}
    )
    assert parse_field_selector("metadata.name=x", "ClusteredServer").matches(
        {"metadata": {"name": "x"}}
    )


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("spec.foo=1", "Pod", "field label not supported: spec.foo"),
        ("status.phase=Running", "ConfigMap", "field label not supported: status.phase"),
        (
            "metadata.name",
            "Pod",
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
        ),
        ("metadata.name=a\\b", "Pod", "invalid field selector: invalid escape sequence: \\b"),
        ("metadata.name=a=b", "Pod", "invalid field selector: unescaped character in value: 61"),
    ],
)
def test_field_selector_errors_read_like_kubernetes(text: str, kind: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text, kind)
    assert str(caught.value) == message


def test_field_selector_escapes_and_canonical_text() -> None:
    selector = parse_field_selector("metadata.name=a\\,b,metadata.namespace!=x", "Pod")
    assert selector.matches({"metadata": {"name": "a,b", "namespace": "y"}})
    assert str(selector) == "metadata.name=a\\,b,metadata.namespace!=x"
    assert parse_field_selector(str(selector), "Pod") == selector
    assert selector.requires_exact_match("metadata.name") == "a,b"
