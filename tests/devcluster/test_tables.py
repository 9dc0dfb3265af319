"""Table responses: the columns and cells kubectl prints, ages, and the JSONPath subset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gencluster_dev.machinery.tables import (
    JsonPathError,
    evaluate_jsonpath,
    human_duration,
    table_for,
)
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 6, 12, 0, 0, tzinfo=UTC)
CREATED = "2024-05-06T11:55:00Z"  # five minutes before NOW


def _table(items: list[dict[str, Any]], kind: str, columns: Any = None, **kw: Any) -> dict:
    options = {"include_object": "None", "resource_version": "42", "now": NOW, **kw}
    return table_for(items, columns, kind=kind, **options)


def _names(table: dict[str, Any]) -> list[str]:
    return [column["name"] for column in table["columnDefinitions"]]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (303, "5m3s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (7 * 3600 + 59 * 60, "7h59m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (3 * 86400, "3d"),
        (3 * 86400 + 5 * 3600, "3d5h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (9 * 365 * 86400 + 10 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubernetes(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


# Deadlines flake on a shared, loaded machine; correctness is what is tested.
@settings(deadline=None)
@given(st.integers(0, 20 * 365 * 86400))
def test_human_duration_never_empty_and_uses_known_units(seconds: int) -> None:
    text = human_duration(timedelta(seconds=seconds))
    assert text and text[0].isdigit() and text[-1] in "smhdy"


def test_table_shape_and_include_object_modes() -> None:
    item = {"metadata": {"name": "a", "creationTimestamp": CREATED, "uid": "u"}, "data": {}}
    table = _table([item], "Widget")
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    assert _names(table) == ["Name", "Age"]
    assert table["columnDefinitions"][0]["format"] == "name"
    assert set(table["columnDefinitions"][0]) == {
        "name", "type", "format", "description", "priority"
    }
    assert table["rows"] == [{"cells": ["a", "5m"]}]
    metadata_row = _table([item], "Widget", include_object="Metadata")["rows"][0]
    assert metadata_row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": item["metadata"],
    }
    assert _table([item], "Widget", include_object="Object")["rows"][0]["object"] == item


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-0", "creationTimestamp": CREATED},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": "127.2.64.3", **status},
    }


def test_pod_columns_and_running_row() -> None:
    pod = _pod(
        conditions=[{"type": "Ready", "status": "True"}],
        containerStatuses=[
            {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
            {
                "name": "b",
                "ready": True,
                "restartCount": 2,
                "state": {"running": {}},
                "lastState": {"terminated": {"finishedAt": "2024-05-06T11:58:00Z"}},
            },
        ],
    )
    table = _table([pod], "Pod")
    assert _names(table) == [
        "Name", "Ready", "Status", "Restarts", "Age",
        "IP", "Node", "Nominated Node", "Readiness Gates",
    ]
    assert [c["priority"] for c in table["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert table["rows"][0]["cells"] == [
        "web-0", "2/2", "Running", "2 (2m ago)", "5m",
        "127.2.64.3", "node-1", "<none>", "<none>",
    ]


@pytest.mark.parametrize(
    ("status", "deleting", "expected"),
    [
        ({"phase": "Pending"}, False, "Pending"),
        (
            {
                "containerStatuses": [
                    {"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            },
            False,
            "CrashLoopBackOff",
        ),
        (
            {"containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137}}}]},
            False,
            "ExitCode:137",
        ),
        (
            {"containerStatuses": [{"name": "a", "state": {"terminated": {"signal": 9}}}]},
            False,
            "Signal:9",
        ),
        ({"phase": "Succeeded", "reason": "Evicted"}, False, "Evicted"),
        ({"phase": "Running"}, True, "Terminating"),
        ({"phase": "Succeeded"}, True, "Succeeded"),
    ],
)
def test_pod_status_column(status: dict[str, Any], deleting: bool, expected: str) -> None:
    pod = _pod(**status)
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2024-05-06T11:59:00Z"
    assert _table([pod], "Pod")["rows"][0]["cells"][2] == expected


def test_pod_init_containers_and_readiness_gates() -> None:
    pod = _pod(
        initContainerStatuses=[{"name": "init", "state": {"running": {}}}],
        conditions=[{"type": "example.com/gate", "status": "True"}],
    )
    pod["spec"]["initContainers"] = [{"name": "init"}]
    pod["spec"]["readinessGates"] = [
        {"conditionType": "example.com/gate"},
        {"conditionType": "example.com/other"},
    ]
    cells = _table([pod], "Pod")["rows"][0]["cells"]
    assert cells[2] == "Init:0/1"
    assert cells[8] == "1/2"


def test_succeeded_pod_row_carries_completed_condition() -> None:
    row = _table([_pod(phase="Succeeded")], "Pod")["rows"][0]
    assert row["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]


def test_service_row() -> None:
    service = {
        "metadata": {"name": "kv", "creationTimestamp": CREATED},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "127.2.128.1",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 50051, "nodePort": 30001}],
            "selector": {"role": "primary", "app": "kv"},
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.2.128.1"}]}},
    }
    table = _table([service], "Service")
    assert _names(table) == [
        "Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"
    ]
    assert table["rows"][0]["cells"] == [
        "kv", "LoadBalancer", "127.2.128.1", "127.2.128.1", "80/TCP,50051:30001/TCP", "5m",
        "app=kv,role=primary",
    ]
    pending = {"metadata": {"name": "p"}, "spec": {"type": "LoadBalancer"}}
    assert _table([pending], "Service")["rows"][0]["cells"][3:5] == ["<pending>", "<none>"]
    proxied = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "ClusterIP", "clusterIP": "127.2.128.1"},
        "status": {"loadBalancer": {"ingress": [{"ip": "127.2.128.1"}]}},
    }
    # The local proxy's address is shown for ClusterIP Services too (see _service_external_ip).
    assert _table([proxied], "Service")["rows"][0]["cells"][3] == "127.2.128.1"
    plain = {"metadata": {"name": "c"}, "spec": {"clusterIP": "None"}}
    plain_cells = _table([plain], "Service")["rows"][0]["cells"]
    assert plain_cells[:4] == ["c", "ClusterIP", "None", "<none>"]


def test_node_namespace_lease_and_config_rows() -> None:
    node = {
        "metadata": {
            "name": "node-1",
            "creationTimestamp": CREATED,
            "labels": {"node-role.kubernetes.io/control-plane": ""},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"kubeletVersion": "v1.30.0"},
            "addresses": [{"type": "InternalIP", "address": "127.2.0.1"}],
        },
    }
    node_table = _table([node], "Node")
    assert _names(node_table)[:5] == ["Name", "Status", "Roles", "Age", "Version"]
    assert node_table["rows"][0]["cells"][:6] == [
        "node-1", "Ready,SchedulingDisabled", "control-plane", "5m", "v1.30.0", "127.2.0.1"
    ]
    namespace = {"metadata": {"name": "default", "creationTimestamp": CREATED},
                 "status": {"phase": "Active"}}
    assert _table([namespace], "Namespace")["rows"][0]["cells"] == ["default", "Active", "5m"]
    lease = {"metadata": {"name": "kv", "creationTimestamp": CREATED},
             "spec": {"holderIdentity": "kv-0"}}
    lease_table = _table([lease], "Lease")
    assert _names(lease_table) == ["Name", "Holder", "Age"]
    assert lease_table["rows"][0]["cells"] == ["kv", "kv-0", "5m"]
    config_map = {"metadata": {"name": "c", "creationTimestamp": CREATED},
                  "data": {"a": "1"}, "binaryData": {"b": "AA=="}}
    assert _table([config_map], "ConfigMap")["rows"][0]["cells"] == ["c", 2, "5m"]
    secret = {"metadata": {"name": "s", "creationTimestamp": CREATED},
              "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}
    secret_table = _table([secret], "Secret")
    assert _names(secret_table) == ["Name", "Type", "Data", "Age"]
    assert secret_table["rows"][0]["cells"] == ["s", "kubernetes.io/tls", 2, "5m"]
    account = {"metadata": {"name": "default", "creationTimestamp": CREATED}}
    assert _table([account], "ServiceAccount")["rows"][0]["cells"] == ["default", 0, "5m"]


def test_endpoints_row_shows_three_then_more() -> None:
    endpoints = {
        "metadata": {"name": "kv", "creationTimestamp": CREATED},
        "subsets": [
            {
                "addresses": [{"ip": f"127.2.64.{n}"} for n in range(1, 5)],
                "ports": [{"port": 50051}],
            }
        ],
    }
    assert _table([endpoints], "Endpoints")["rows"][0]["cells"] == [
        "kv", "127.2.64.1:50051,127.2.64.2:50051,127.2.64.3:50051 + 1 more...", "5m"
    ]
    empty = {"metadata": {"name": "e", "creationTimestamp": CREATED}}
    assert _table([empty], "Endpoints")["rows"][0]["cells"][1] == "<none>"


def test_event_row() -> None:
    event = {
        "metadata": {"name": "web-0.17a", "creationTimestamp": CREATED},
        "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{a}"},
        "reason": "Started",
        "type": "Normal",
        "message": " Started container a \n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2024-05-06T11:50:00Z",
        "lastTimestamp": "2024-05-06T11:59:00Z",
        "count": 3,
    }
    table = _table([event], "Event")
    assert _names(table) == [
        "Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message",
        "First Seen", "Count", "Name",
    ]
    assert table["rows"][0]["cells"] == [
        "60s", "Normal", "Started", "pod/web-0", "spec.containers{a}", "kubelet, node-1",
        "Started container a", "10m", 3, "web-0.17a",
    ]


def test_deployment_pdb_and_created_at_rows() -> None:
    deployment = {
        "metadata": {"name": "d", "creationTimestamp": CREATED},
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "d"},
                "matchExpressions": [{"key": "a", "operator": "Exists"}],
            },
            "template": {"spec": {"containers": [{"name": "c", "image": "python:3.11"}]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    table = _table([deployment], "Deployment")
    assert _names(table)[:5] == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert table["rows"][0]["cells"] == ["d", "2/3", 3, 2, "5m", "c", "python:3.11", "a,app=d"]
    budget = {"metadata": {"name": "kv", "creationTimestamp": CREATED},
              "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}
    pdb = _table([budget], "PodDisruptionBudget")
    assert _names(pdb) == ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
    assert pdb["rows"][0]["cells"] == ["kv", "50%", "N/A", 1, "5m"]
    crd = {"metadata": {"name": "clusteredservers.gencluster.dev",
                        "creationTimestamp": "2024-05-06T11:55:00+00:00"}}
    crd_table = _table([crd], "CustomResourceDefinition")
    assert _names(crd_table) == ["Name", "Created At"]
    assert crd_table["rows"][0]["cells"] == [
        "clusteredservers.gencluster.dev", "2024-05-06T11:55:00Z"
    ]


SERVER = {
    "metadata": {"name": "kv", "creationTimestamp": "2024-05-03T12:00:00Z"},
    "spec": {"replicas": 3, "ratio": 0.5, "paused": False, "labels": {"a": "b"}},
    "status": {
        "primary": "kv-1",
        "conditions": [
            {"type": "Available", "status": "True", "reason": "QuorumUp"},
            {"type": "Ready", "status": "False", "reason": "Electing"},
        ],
        "since": "2024-05-06T11:00:00Z",
        "bad": "not a time",
    },
}


def test_custom_printer_columns() -> None:
    columns = [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Primary", "type": "string", "jsonPath": ".status.primary", "priority": 1},
        {"name": "Ready", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
        {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"},
        {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
        {"name": "Missing", "type": "string", "jsonPath": ".status.nothing"},
        {"name": "Labels", "type": "string", "jsonPath": ".spec.labels"},
        {"name": "Since", "type": "date", "jsonPath": ".status.since"},
        {"name": "Bad", "type": "date", "jsonPath": ".status.bad"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    table = _table([SERVER], "ClusteredServer", columns)
    definitions = table["columnDefinitions"]
    assert [d["name"] for d in definitions] == ["Name"] + [c["name"] for c in columns]
    assert definitions[1] == {
        "name": "Replicas",
        "type": "integer",
        "format": "",
        "description": "Custom resource definition column (in JSONPath format): .spec.replicas",
        "priority": 0,
    }
    assert definitions[2]["priority"] == 1
    assert table["rows"][0]["cells"] == [
        "kv", 3, "kv-1", "Electing", 0.5, False, None, "map[a:b]", "60m", "<invalid>", "3d"
    ]


def test_crd_without_printer_columns_shows_name_and_age() -> None:
    table = _table([SERVER], "ClusteredServer", [])
    assert _names(table) == ["Name", "Age"]
    assert table["columnDefinitions"][1]["type"] == "date"
    assert table["rows"][0]["cells"] == ["kv", "3d"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.replicas", [3]),
        ("{.spec.replicas}", [3]),
        ("$.status.primary", ["kv-1"]),
        (".status.conditions[0].type", ["Available"]),
        (".status.conditions[-1].type", ["Ready"]),
        (".status.conditions[*].status", ["True", "False"]),
        (".status.conditions[0:1].reason", ["QuorumUp"]),
        ('.status.conditions[?(@.type=="Ready")].reason', ["Electing"]),
        (".status.conditions[?(@.status!='True')].type", ["Ready"]),
        (".status.conditions[?(@.reason)].type", ["Available", "Ready"]),
        ("..primary", ["kv-1"]),
        (".spec.labels['a']", ["b"]),
        (".spec.missing.deeper", []),
        (".status.conditions[7]", []),
    ],
)
def test_jsonpath_subset(path: str, expected: list[Any]) -> None:
    assert evaluate_jsonpath(SERVER, path) == expected


def test_jsonpath_escaped_dots_in_keys() -> None:
    obj = {"metadata": {"labels": {"app.kubernetes.io/name": "kv"}}}
    assert evaluate_jsonpath(obj, r".metadata.labels.app\.kubernetes\.io/name") == ["kv"]


def test_jsonpath_malformed_is_an_error() -> None:
    with pytest.raises(JsonPathError):
        evaluate_jsonpath(SERVER, ".status.conditions[?(@.type==")
    with pytest.raises(JsonPathError):
        evaluate_jsonpath(SERVER, ".status.conditions[abc]")


def test_bad_include_object_is_refused() -> None:
    with pytest.raises(ValueError, match="includeObject"):
        _table([], "Pod", include_object="Everything")
