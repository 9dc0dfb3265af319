"""Server-side apply and keyed lists: what an applier drops from a list it applied before is
removed (what `helm upgrade` relies on to remove a port, a container or a variable), and server-set
subfields of the items it keeps survive."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gencluster_dev.machinery.apply import prune_list_items
from gencluster_dev.machinery.patch import list_merge_key

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration


def _deployment_keys(path: tuple[str, ...]) -> str | None:
    return list_merge_key("Deployment", path)


CONTAINERS = ("spec", "template", "spec", "containers")


def test_prune_drops_items_left_out_and_recurses_into_kept_ones() -> None:
    current = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "x", "terminationMessagePolicy": "File",
         "env": [{"name": "KEEP", "value": "1"}, {"name": "GONE", "value": "2"}]},
        {"name": "b", "image": "y"}]}}}}
    applied = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "x2", "env": [{"name": "KEEP", "value": "1"}]}]}}}}
    pruned = prune_list_items(current, applied, {CONTAINERS}, _deployment_keys)
    (container,) = pruned["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "a"
    assert container["env"] == [{"name": "KEEP", "value": "1"}]
    assert container["terminationMessagePolicy"] == "File"  # not the applier's to remove
    assert current["spec"]["template"]["spec"]["containers"][1]["name"] == "b"  # not mutated


def test_prune_leaves_lists_the_manager_never_applied() -> None:
    current = {"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}}
    applied = {"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}
    assert prune_list_items(current, applied, set(), _deployment_keys) == current
    atomic = {"spec": {"args": ["1", "2"]}}
    assert prune_list_items(atomic, {"spec": {"args": ["1"]}}, {("spec", "args")},
                            _deployment_keys) == atomic  # replaced whole by the merge anyway


def _apply(apiserver: RunningApiServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, result = apiserver.request(
        "PATCH", f"{path}?fieldManager=helm", raw=json.dumps(body).encode(),
        content_type="application/apply-patch+yaml")
    assert status in (200, 201), result
    return result


def test_reapplying_a_service_and_a_deployment_removes_dropped_items(
    apiserver: RunningApiServer, namespace: str
) -> None:
    service_path = f"/api/v1/namespaces/{namespace}/services/metrics"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics"},
               "spec": {"selector": {"app": "x"}, "ports": [{"name": "metrics", "port": 8080}]}}
    first = _apply(apiserver, service_path, service)
    assert first["spec"]["ports"][0]["protocol"] == "TCP"  # server default
    service["spec"]["ports"] = [{"name": "metrics", "port": 9300}]
    second = _apply(apiserver, service_path, service)
    assert [p["port"] for p in second["spec"]["ports"]] == [9300]
    assert second["spec"]["clusterIP"] == first["spec"]["clusterIP"]

    deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/op"
    container = {"name": "op", "image": "x:1",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"name": "metrics", "containerPort": 8080},
                           {"name": "health", "containerPort": 8081}]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "op"},
                  "spec": {"selector": {"matchLabels": {"app": "op"}},
                           "template": {"metadata": {"labels": {"app": "op"}},
                                        "spec": {"containers": [container]}}}}
    _apply(apiserver, deployment_path, deployment)
    container["env"] = [{"name": "A", "value": "1"}]
    container["ports"] = [{"name": "metrics", "containerPort": 9300},
                          {"name": "health", "containerPort": 8081}]
    result = _apply(apiserver, deployment_path, deployment)
    (applied,) = result["spec"]["template"]["spec"]["containers"]
    assert applied["env"] == [{"name": "A", "value": "1"}]
    assert sorted(p["containerPort"] for p in applied["ports"]) == [8081, 9300]
