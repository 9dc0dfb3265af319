"""JSON merge patch, JSON patch and strategic merge patch as the Kubernetes API applies them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from gencluster_dev.machinery.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

scalars = st.one_of(
    st.booleans(), st.integers(-5, 5), st.text("abc", max_size=3)
)
keys = st.text("abcd", min_size=1, max_size=2)
json_values = st.recursive(
    st.one_of(st.none(), scalars),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=12,
)
null_free_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=12,
)
objects = st.dictionaries(keys, json_values, max_size=4)
map_only_values = st.recursive(
    st.one_of(st.none(), scalars),
    lambda children: st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)


# --- merge patch -----------------------------------------------------------------------------


def test_merge_patch_rfc7386_examples() -> None:
    assert apply_merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert apply_merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert apply_merge_patch({"a": "b"}, {"a": None}) == {}
    assert apply_merge_patch({"a": "b", "b": "c"}, {"a": None}) == {"b": "c"}
    assert apply_merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert apply_merge_patch({"a": "c"}, {"a": ["b"]}) == {"a": ["b"]}
    assert apply_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {
        "a": {"b": "d"}
    }
    assert apply_merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert apply_merge_patch(["a", "b"], ["c", "d"]) == ["c", "d"]
    assert apply_merge_patch({"a": "b"}, ["c"]) == ["c"]
    assert apply_merge_patch({"a": "foo"}, None) is None
    assert apply_merge_patch({"a": "foo"}, "bar") == "bar"
    assert apply_merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert apply_merge_patch([1, 2], {"a": "b", "c": None}) == {"a": "b"}
    assert apply_merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(objects, objects)
def test_merge_patch_is_idempotent_and_pure(target: dict[str, Any], patch: dict[str, Any]) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    once = apply_merge_patch(target, patch)
    assert apply_merge_patch(once, patch) == once
    assert target == target_before
    assert patch == patch_before


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(objects, objects)
def test_merge_patch_result_shares_nothing_with_inputs(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    result = apply_merge_patch(target, patch)
    snapshot = copy.deepcopy(result)
    _scribble(result)
    assert apply_merge_patch(target, patch) == snapshot


def _scribble(value: Any) -> None:
    if isinstance(value, dict):
        for key in list(value):
            _scribble(value[key])
        value["__scribbled__"] = True
    elif isinstance(value, list):
        for item in value:
            _scribble(item)
        value.append("__scribbled__")


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(st.dictionaries(keys, null_free_values, max_size=4))
def test_merge_patch_with_itself_is_identity(document: dict[str, Any]) -> None:
    assert apply_merge_patch(document, document) == document


# --- JSON patch ------------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    document = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2, 3]}
    result = apply_json_patch(
        document,
        [
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
            {"op": "remove", "path": "/list/0"},
            {"op": "add", "path": "/list/-", "value": 4},
            {"op": "add", "path": "/list/0", "value": 0},
            {"op": "copy", "from": "/list", "path": "/copy"},
            {"op": "move", "from": "/metadata/labels/b", "path": "/moved"},
            {"op": "test", "path": "/moved", "value": "2"},
        ],
    )
    assert result == {
        "metadata": {"labels": {"a": "x"}},
        "list": [0, 2, 3, 4],
        "copy": [0, 2, 3, 4],
        "moved": "2",
    }
    assert document == {"metadata": {"labels": {"a": "1"}}, "list": [1, 2, 3]}


def test_json_pointer_escaping() -> None:
    document = {"metadata": {"annotations": {"example.com/a~b": "1"}}}
    result = apply_json_patch(
        document,
        [
            {"op": "replace", "path": "/metadata/annotations/example.com~1a~0b", "value": "2"},
            {"op": "add", "path": "/metadata/annotations/x~1y", "value": "3"},
        ],
    )
    assert result == {"metadata": {"annotations": {"example.com/a~b": "2", "x/y": "3"}}}


def test_json_patch_whole_document() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert apply_json_patch({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}]) == {"b": 2}


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        (
            [{"op": "add", "path": "/missing/child", "value": 1}],
            'add operation does not apply: doc is missing path: "/missing/child"',
        ),
        (
            [{"op": "remove", "path": "/missing"}],
            'remove operation does not apply: doc is missing path: "/missing"',
        ),
        (
            [{"op": "replace", "path": "/missing", "value": 1}],
            'replace operation does not apply: doc is missing path: "/missing"',
        ),
        (
            [{"op": "test", "path": "/a", "value": 2}],
            'test operation failed: value at "/a" is 1, expected 2',
        ),
        ([{"op": "frobnicate", "path": "/a"}], 'unexpected kind of operation: "frobnicate"'),
        ([{"op": "add", "value": 1}], 'operation 0 ("add") is missing required field "path"'),
        ([{"op": "add", "path": "/a"}], 'operation 0 ("add") is missing required field "value"'),
        (
            [{"op": "add", "path": "/l/5", "value": 1}],
            'array index 5 out of range in path "/l/5"',
        ),
        ([{"op": "remove", "path": "/l/01"}], 'invalid array index "01" in path "/l/01"'),
        ([{"op": "add", "path": "a", "value": 1}], 'invalid JSON pointer "a"'),
        (
            [{"op": "move", "from": "/l", "path": "/l/0"}],
            'move operation does not apply: "/l/0" is a child of "/l"',
        ),
        ({"op": "add"}, "a JSON patch must be a list of operations"),
    ],
)
def test_json_patch_errors_are_clear(operations: Any, message: str) -> None:
    with pytest.raises(PatchError) as caught:
        apply_json_patch({"a": 1, "l": [1]}, operations)
    assert str(caught.value).startswith(message)


def test_json_patch_test_distinguishes_booleans_from_numbers() -> None:
    with pytest.raises(PatchError):
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": True}])
    assert apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}]) == {"a": 1}


def test_failed_json_patch_leaves_target_untouched() -> None:
    document = {"a": {"b": 1}}
    with pytest.raises(PatchError):
        apply_json_patch(
            document, [{"op": "remove", "path": "/a/b"}, {"op": "remove", "path": "/zzz"}]
        )
    assert document == {"a": {"b": 1}}


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(objects, keys, json_values)
def test_json_patch_add_then_remove_round_trips(
    document: dict[str, Any], key: str, value: Any
) -> None:
    if key in document:
        return
    pointer = "/" + key
    added = apply_json_patch(document, [{"op": "add", "path": pointer, "value": value}])
    assert apply_json_patch(added, [{"op": "test", "path": pointer, "value": value}]) == added
    assert apply_json_patch(added, [{"op": "remove", "path": pointer}]) == document


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(st.lists(scalars, max_size=5), scalars, st.data())
def test_json_patch_list_insert_then_remove_round_trips(
    items: list[Any], value: Any, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(items)))
    inserted = apply_json_patch(
        {"l": items}, [{"op": "add", "path": f"/l/{index}", "value": value}]
    )
    assert inserted["l"][index] == value
    assert apply_json_patch(inserted, [{"op": "remove", "path": f"/l/{index}"}]) == {"l": items}


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(objects, keys, keys)
def test_json_patch_move_there_and_back(document: dict[str, Any], source: str, dest: str) -> None:
    if source not in document or dest in document:
        return
    there = apply_json_patch(document, [{"op": "move", "from": f"/{source}", "path": f"/{dest}"}])
    back = apply_json_patch(there, [{"op": "move", "from": f"/{dest}", "path": f"/{source}"}])
    assert back == document


# --- strategic merge patch -------------------------------------------------------------------


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "labels": {"app": "web", "tier": "a"},
            "finalizers": ["example.com/a"],
            "ownerReferences": [{"uid": "u1", "name": "owner", "kind": "ClusteredServer"}],
        },
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "python:3.11",
                    "args": ["--a"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"},
            ],
        },
    }


def test_containers_merge_by_name_and_nested_lists_by_their_keys() -> None:
    pod = _pod()
    result = apply_strategic_merge_patch(
        pod,
        {
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "python:3.12",
                        "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                        "ports": [{"containerPort": 9090, "name": "grpc"}],
                        "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                    }
                ]
            }
        },
        "Pod",
    )
    server, sidecar = result["spec"]["containers"]
    assert server["image"] == "python:3.12"
    assert server["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert server["ports"] == [
        {"containerPort": 8080, "name": "http"},
        {"containerPort": 9090, "name": "grpc"},
    ]
    assert server["volumeMounts"] == [{"mountPath": "/data", "name": "data", "readOnly": True}]
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert pod == _pod()


def test_atomic_lists_are_replaced() -> None:
    result = apply_strategic_merge_patch(
        _pod(),
        {
            "spec": {
                "containers": [{"name": "server", "args": ["--b"]}],
                "tolerations": [{"key": "b", "operator": "Exists"}],
            }
        },
        "Pod",
    )
    assert result["spec"]["containers"][0]["args"] == ["--b"]
    assert result["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]


def test_conditions_merge_by_type_and_null_deletes() -> None:
    result = apply_strategic_merge_patch(
        _pod(),
        {
            "metadata": {"labels": {"tier": None, "new": "x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        "Pod",
    )
    assert result["metadata"]["labels"] == {"app": "web", "new": "x"}
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "PodScheduled", "status": "True"},
    ]


def test_finalizers_merge_as_a_set_and_delete_from_primitive_list() -> None:
    added = apply_strategic_merge_patch(
        _pod(), {"metadata": {"finalizers": ["example.com/a", "example.com/b"]}}, "Pod"
    )
    assert added["metadata"]["finalizers"] == ["example.com/a", "example.com/b"]
    removed = apply_strategic_merge_patch(
        added, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}}, "Pod"
    )
    assert removed["metadata"]["finalizers"] == ["example.com/b"]
    assert "$deleteFromPrimitiveList/finalizers" not in removed["metadata"]


def test_owner_references_merge_by_uid() -> None:
    result = apply_strategic_merge_patch(
        _pod(),
        {"metadata": {"ownerReferences": [{"uid": "u2", "name": "other", "kind": "X"}]}},
        "Pod",
    )
    assert [reference["uid"] for reference in result["metadata"]["ownerReferences"]] == [
        "u1",
        "u2",
    ]


def test_patch_delete_directive_removes_list_element_and_map() -> None:
    result = apply_strategic_merge_patch(
        _pod(),
        {
            "spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]},
            "status": {"$patch": "delete"},
        },
        "Pod",
    )
    assert [container["name"] for container in result["spec"]["containers"]] == ["server"]
    assert "status" not in result


def test_patch_replace_directive_in_map_and_list() -> None:
    result = apply_strategic_merge_patch(
        _pod(),
        {
            "metadata": {"labels": {"$patch": "replace", "only": "this"}},
            "spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "x"}]},
        },
        "Pod",
    )
    assert result["metadata"]["labels"] == {"only": "this"}
    assert result["spec"]["containers"] == [{"name": "solo", "image": "x"}]


def test_retain_keys_drops_unlisted_keys() -> None:
    result = apply_strategic_merge_patch(
        {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        "Deployment",
    )
    assert result == {"spec": {"strategy": {"type": "Recreate"}}}


def test_set_element_order_is_honoured_and_never_stored() -> None:
    result = apply_strategic_merge_patch(
        _pod(),
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "server"}],
                "containers": [{"name": "sidecar", "image": "busybox:2"}],
            },
            "metadata": {"$setElementOrder/finalizers": ["example.com/a"]},
        },
        "Pod",
    )
    assert [container["name"] for container in result["spec"]["containers"]] == [
        "sidecar",
        "server",
    ]
    assert result["spec"]["containers"][0]["image"] == "busybox:2"
    assert not _has_directive(result)


def test_directives_in_new_values_are_stripped() -> None:
    result = apply_strategic_merge_patch(
        {"metadata": {"name": "x"}},
        {"spec": {"selector": {"$patch": "merge", "app": "web"}, "ports": [{"port": 80}]}},
        "Service",
    )
    assert result["spec"] == {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    assert not _has_directive(result)


def test_service_ports_merge_by_port() -> None:
    service = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}
    result = apply_strategic_merge_patch(
        service, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}, "Service"
    )
    assert result["spec"]["ports"][1] == {"port": 443, "name": "https", "targetPort": 8443}


def test_deployment_template_pod_spec_uses_pod_merge_keys() -> None:
    deployment = {
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]},
            },
        }
    }
    result = apply_strategic_merge_patch(
        deployment,
        {
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{"name": "b", "image": "2"}]}},
            }
        },
        "Deployment",
    )
    assert result["spec"]["replicas"] == 3
    assert result["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "1"},
        {"name": "b", "image": "2"},
    ]


def test_missing_merge_key_is_an_error() -> None:
    with pytest.raises(PatchError, match="does not contain declared merge key: name"):
        apply_strategic_merge_patch(_pod(), {"spec": {"containers": [{"image": "x"}]}}, "Pod")


def test_unknown_patch_directive_is_an_error() -> None:
    with pytest.raises(PatchError, match="unknown patch type: frob"):
        apply_strategic_merge_patch(_pod(), {"spec": {"$patch": "frob"}}, "Pod")


def test_unknown_kinds_treat_lists_atomically() -> None:
    result = apply_strategic_merge_patch(
        {"spec": {"items": [{"name": "a"}]}, "metadata": {"finalizers": ["x"]}},
        {"spec": {"items": [{"name": "b"}]}, "metadata": {"finalizers": ["y"]}},
        "ClusteredServer",
    )
    assert result["spec"]["items"] == [{"name": "b"}]
    assert result["metadata"]["finalizers"] == ["x", "y"]


def _has_directive(value: Any) -> bool:
    if isinstance(value, dict):
        return any(key.startswith("$") or _has_directive(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_directive(item) for item in value)
    return False


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(
    st.dictionaries(keys, map_only_values, max_size=4),
    st.dictionaries(keys, map_only_values, max_size=4),
)
def test_strategic_merge_equals_merge_patch_without_lists(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    before = copy.deepcopy(target)
    assert apply_strategic_merge_patch(target, patch, "ConfigMap") == apply_merge_patch(
        target, patch
    )
    assert target == before


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True))
def test_env_patch_upserts_every_named_entry(names: list[str]) -> None:
    env_patch = [{"name": name, "value": "p"} for name in names]
    patch = {"spec": {"containers": [{"name": "server", "env": env_patch}]}}
    result = apply_strategic_merge_patch(_pod(), patch, "Pod")
    env = {item["name"]: item.get("value") for item in result["spec"]["containers"][0]["env"]}
    for name in names:
        assert env[name] == "p"
    for name, value in (("A", "1"), ("B", "2")):
        assert env[name] == value


env_entries = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["A", "B", "C"])},
        optional={"value": st.sampled_from(["1", "2"]), "$patch": st.just("delete")},
    ),
    max_size=4,
    unique_by=lambda entry: entry["name"],
)


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(
    env_entries,
    st.lists(st.sampled_from(["x", "y", "example.com/a"]), max_size=3),
    st.dictionaries(st.sampled_from(["app", "tier", "new"]), st.one_of(st.none(), scalars)),
)
def test_strategic_merge_patch_is_idempotent(
    env: list[dict[str, Any]], finalizers: list[str], labels: dict[str, Any]
) -> None:
    patch = {
        "metadata": {"finalizers": finalizers, "labels": labels},
        "spec": {"containers": [{"name": "server", "env": env}]},
    }
    once = apply_strategic_merge_patch(_pod(), patch, "Pod")
    assert apply_strategic_merge_patch(once, patch, "Pod") == once
    assert not _has_directive(once)
    names = [entry["name"] for entry in once["spec"]["containers"][0].get("env", [])]
    assert len(names) == len(set(names))
    for entry in env:
        assert (entry["name"] in names) is (entry.get("$patch") != "delete")
