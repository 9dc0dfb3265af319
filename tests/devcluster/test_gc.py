"""Garbage collection: the pure plan, then background/foreground/orphan through the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from gencluster_dev.apiserver.gc import (
    DeleteObject,
    FinalizeNamespace,
    RemoveFinalizer,
    RemoveOwnerReferences,
    expired_events,
    plan_collection,
)
from gencluster_testing.waiting import wait_for

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration

CM = ("", "configmaps")
NS = ("", "namespaces")


def obj(name: str, uid: str, owners: list[dict[str, Any]] | None = None,
        namespace: str = "ns", **meta: Any) -> dict[str, Any]:
    metadata = {"name": name, "uid": uid, "namespace": namespace, **meta}
    if owners:
        metadata["ownerReferences"] = owners
    return {"metadata": metadata}


def owner(uid: str, block: bool = False) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": uid,
            "blockOwnerDeletion": block}


def test_plan_deletes_dependents_whose_owners_are_all_gone() -> None:
    objects = [(CM, obj("d", "d1", [owner("gone")]))]
    assert [type(a) for a in plan_collection(objects, {CM})] == [DeleteObject]


def test_plan_drops_only_dangling_references_when_an_owner_remains() -> None:
    objects = [(CM, obj("o", "o1")), (CM, obj("d", "d1", [owner("o1"), owner("gone")]))]
    actions = plan_collection(objects, {CM})
    assert actions == [RemoveOwnerReferences(actions[0].target, frozenset({"gone"}))]


def test_plan_foreground_waits_for_blocking_dependents() -> None:
    deleting = obj("o", "o1", deletionTimestamp="now", finalizers=["foregroundDeletion"])
    blocking = obj("d", "d1", [owner("o1", block=True)], deletionTimestamp="now",
                   finalizers=["x"])
    actions = plan_collection([(CM, deleting), (CM, blocking)], {CM})
    assert actions == []  # the dependent is already deleting; the owner keeps its finalizer
    actions = plan_collection([(CM, deleting)], {CM})
    assert [type(a) for a in actions] == [RemoveFinalizer]


def test_plan_orphan_removes_references_then_the_finalizer() -> None:
    deleting = obj("o", "o1", deletionTimestamp="now", finalizers=["orphan"])
    dependent = obj("d", "d1", [owner("o1")])
    actions = plan_collection([(CM, deleting), (CM, dependent)], {CM})
    assert [type(a) for a in actions] == [RemoveOwnerReferences]
    assert [type(a) for a in plan_collection([(CM, deleting), (CM, obj("d", "d1"))], {CM})] \
        == [RemoveFinalizer]


def test_plan_terminating_namespace_empties_then_finalizes() -> None:
    ns = {"metadata": {"name": "ns", "uid": "n1", "deletionTimestamp": "now"},
          "spec": {"finalizers": ["kubernetes"]}}
    actions = plan_collection([(NS, ns), (CM, obj("c", "c1"))], {CM})
    assert [type(a) for a in actions] == [DeleteObject]
    assert [type(a) for a in plan_collection([(NS, ns)], {CM})] == [FinalizeNamespace]


# -- through the API -------------------------------------------------------------------------

def create_cm(server: RunningApiServer, namespace: str, name: str,
              owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owners:
        meta["ownerReferences"] = owners
    status, body = server.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})
    assert status == 201, body
    return body


def ref_to(parent: dict[str, Any], block: bool = False) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": parent["metadata"]["name"],
            "uid": parent["metadata"]["uid"], "blockOwnerDeletion": block}


def exists(server: RunningApiServer, namespace: str, name: str) -> bool:
    return server.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")[0] == 200


def test_background_deletion_collects_dependents(
    apiserver: RunningApiServer, namespace: str
) -> None:
    parent = create_cm(apiserver, namespace, "parent")
    child = create_cm(apiserver, namespace, "child", [ref_to(parent)])
    create_cm(apiserver, namespace, "grandchild", [ref_to(child)])
    apiserver.request("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/parent")
    wait_for(lambda: not exists(apiserver, namespace, "grandchild"), 10, message="cascade")
    assert not exists(apiserver, namespace, "child")


def test_foreground_deletion_keeps_the_owner_until_blocking_dependents_are_gone(
    apiserver: RunningApiServer, namespace: str
) -> None:
    parent = create_cm(apiserver, namespace, "parent")
    create_cm(apiserver, namespace, "child", [ref_to(parent, block=True)])
    apiserver.request("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/child",
                      {"metadata": {"finalizers": ["example.com/hold"]}},
                      content_type="application/merge-patch+json")
    status, body = apiserver.request(
        "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/parent",
        {"propagationPolicy": "Foreground"})
    assert status in (200, 202)
    assert "foregroundDeletion" in body["metadata"]["finalizers"]
    wait_for(lambda: apiserver.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/child")[1]["metadata"].get(
        "deletionTimestamp"), 10, message="child deleting")
    assert exists(apiserver, namespace, "parent")
    apiserver.request("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/child",
                      {"metadata": {"finalizers": None}},
                      content_type="application/merge-patch+json")
    wait_for(lambda: not exists(apiserver, namespace, "parent"), 10, message="owner deleted")
    assert not exists(apiserver, namespace, "child")


def test_orphan_deletion_keeps_dependents_without_the_reference(
    apiserver: RunningApiServer, namespace: str
) -> None:
    parent = create_cm(apiserver, namespace, "parent")
    create_cm(apiserver, namespace, "child", [ref_to(parent)])
    apiserver.request("DELETE",
                      f"/api/v1/namespaces/{namespace}/configmaps/parent?propagationPolicy=Orphan")
    wait_for(lambda: not exists(apiserver, namespace, "parent"), 10, message="owner deleted")
    _, child = apiserver.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/child")
    assert "ownerReferences" not in child["metadata"]


def test_finalizers_hold_deletion_and_cannot_be_added_while_deleting(
    apiserver: RunningApiServer, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/held"
    create_cm(apiserver, namespace, "held")
    apiserver.request("PATCH", path, {"metadata": {"finalizers": ["a.io/x"]}},
                      content_type="application/merge-patch+json")
    status, body = apiserver.request("DELETE", path)
    assert status == 202
    assert body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["deletionGracePeriodSeconds"] == 0
    status, error = apiserver.request(
        "PATCH", path, {"metadata": {"finalizers": ["a.io/x", "b.io/y"]}},
        content_type="application/merge-patch+json")
    assert status == 422 and "no new finalizers" in error["message"]
    apiserver.request("PATCH", path, {"metadata": {"finalizers": []}},
                      content_type="application/merge-patch+json")
    assert apiserver.request("GET", path)[0] == 404


def test_events_expire_an_hour_after_they_last_happened() -> None:
    def event(name: str, last: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "uid": name,
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "lastTimestamp": last}

    now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    events = [event("old", "2026-01-01T00:30:00Z"), event("recent", "2026-01-01T01:30:00Z")]
    assert [r.name for r in expired_events(events, now)] == ["old"]
