"""The store: one global resourceVersion, optimistic concurrency, history, watchers, 410."""

from __future__ import annotations

import pytest
from gencluster_dev.machinery.errors import ApiError
from gencluster_dev.machinery.store import Store, parse_resource_version

pytestmark = pytest.mark.unit

LEASES = ("coordination.k8s.io", "leases")
PODS = ("", "pods")


def lease(name: str, holder: str = "a", rv: str | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder}}


def test_resource_version_is_one_counter_over_all_objects() -> None:
    store = Store()
    a = store.create(LEASES, lease("a"))
    p = store.create(PODS, {"metadata": {"name": "p", "namespace": "default"}})
    b = store.update(LEASES, lease("a", "b"))
    versions = [int(o["metadata"]["resourceVersion"]) for o in (a, p, b)]
    assert versions == [1, 2, 3]
    assert store.resource_version == 3


def test_stale_update_conflicts_with_the_kubernetes_message() -> None:
    store = Store()
    store.create(LEASES, lease("x"))
    store.update(LEASES, lease("x", "b"), expected_rv=1)
    with pytest.raises(ApiError) as caught:
        store.update(LEASES, lease("x", "c"), expected_rv=1)
    error = caught.value
    assert error.code == 409 and error.reason == "Conflict"
    assert error.message == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "x": the object has been '
        "modified; please apply your changes to the latest version and try again")
    assert store.get(LEASES, "default", "x")["spec"]["holderIdentity"] == "b"


def test_create_existing_and_missing_objects() -> None:
    store = Store()
    store.create(LEASES, lease("x"))
    with pytest.raises(ApiError) as caught:
        store.create(LEASES, lease("x"))
    assert (caught.value.code, caught.value.reason) == (409, "AlreadyExists")
    with pytest.raises(ApiError) as caught:
        store.delete(LEASES, "default", "nope")
    assert (caught.value.code, caught.value.reason) == (404, "NotFound")
    assert caught.value.message == 'leases.coordination.k8s.io "nope" not found'


def test_watch_resumes_from_history_and_filters_by_namespace() -> None:
    store = Store()
    store.create(LEASES, lease("a"))
    store.update(LEASES, lease("a", "b"))
    other = lease("o")
    other["metadata"]["namespace"] = "other"
    store.create(LEASES, other)
    watcher = store.watch(LEASES, "default", since_rv=1)
    store.delete(LEASES, "default", "a")
    events = []
    while not watcher.queue.empty():
        events.append(watcher.queue.get_nowait())
    assert [(e.type, e.resource_version) for e in events] == [("MODIFIED", 2), ("DELETED", 4)]
    assert events[1].object["metadata"]["resourceVersion"] == "4"


def test_watch_from_a_compacted_version_is_expired() -> None:
    store = Store(history_limit=3)
    store.create(LEASES, lease("a"))
    for holder in "bcdef":
        store.update(LEASES, lease("a", holder))
    # history holds rv 4, 5, 6: a watch from 3 still sees everything after it
    store.watch(LEASES, None, since_rv=3)
    with pytest.raises(ApiError) as caught:
        store.watch(LEASES, None, since_rv=2)
    assert (caught.value.code, caught.value.reason) == (410, "Expired")
    assert caught.value.message == "too old resource version: 2 (4)"


def test_listing_is_sorted_and_copies_are_independent() -> None:
    store = Store()
    obj = lease("b")
    store.create(LEASES, obj)
    store.create(LEASES, lease("a"))
    obj["spec"]["holderIdentity"] = "mutated by the caller"
    assert [o["metadata"]["name"] for o in store.list(LEASES)] == ["a", "b"]
    assert store.get(LEASES, "default", "b")["spec"]["holderIdentity"] == "a"


def test_close_all_watches_wakes_every_watcher() -> None:
    store = Store()
    watcher = store.watch(LEASES, None, since_rv=0)
    store.close_all_watches()
    assert watcher.queue.get_nowait() is None


@pytest.mark.parametrize("text", ["abc", "-1", "1.5"])
def test_garbage_resource_versions_are_bad_requests(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_resource_version(text)
    assert caught.value.code == 400
