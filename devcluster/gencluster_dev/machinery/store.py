"""Object storage with one global resourceVersion, a bounded event history and watchers.

Pure core: no I/O, no clock. Every write bumps a single counter shared by all objects (like
etcd's revision), records the change in a bounded history, and hands the event to every
watcher's queue. A watch can resume from any resourceVersion still in the history; below it
the store answers 410 Expired, exactly the signal informers use to relist.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gencluster_dev.machinery.errors import ApiError, already_exists, conflict, expired, not_found
from gencluster_dev.machinery.resources import ResourceKey

ObjectId = tuple[ResourceKey, str, str]  # (resource key, namespace or "", name)


@dataclass(frozen=True)
class StoreEvent:
    """One committed change. `previous` is the object before a MODIFIED or DELETED."""

    type: str  # ADDED | MODIFIED | DELETED
    key: ResourceKey
    object: dict[str, Any]
    previous: dict[str, Any] | None
    resource_version: int


@dataclass
class Watcher:
    """A consumer of events for one resource key (optionally one namespace).

    Events are queued as they commit; `closed` is set when the store stops so streams end
    promptly.
    """

    key: ResourceKey
    namespace: str | None
    queue: asyncio.Queue[StoreEvent | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: StoreEvent) -> bool:
        if event.key != self.key:
            return False
        if self.namespace is None:
            return True
        return (event.object.get("metadata") or {}).get("namespace") == self.namespace


def parse_resource_version(text: str | None, plural: str = "", group: str = "") -> int:
    """A resourceVersion as the integer the store uses; 400 for garbage (like k8s)."""
    if text in (None, ""):
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid resource version: "{text}"') from None
    if value < 0:
        raise ApiError(400, "BadRequest", f'invalid resource version: "{text}"')
    return value


class Store:
    """All objects of the cluster, keyed by (resource key, namespace, name)."""

    def __init__(self, history_limit: int = 10_000) -> None:
        # objects per resource, so a list reads one resource's objects, not every object
        self._objects: dict[ResourceKey, dict[tuple[str, str], dict[str, Any]]] = {}
        self._history: deque[StoreEvent] = deque(maxlen=max(1, history_limit))
        self._compacted_rv = 0  # highest resourceVersion no longer in the history
        self._resource_version = 0
        self._watchers: list[Watcher] = []
        self.listeners: list[Callable[[StoreEvent], None]] = []

    # -- reads -------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._resource_version

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def get(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself: callers must not mutate it (use `copy.deepcopy`)."""
        return self._objects.get(key, {}).get((namespace, name))

    def list(self, key: ResourceKey, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects of one resource, sorted by namespace and name (the order k8s lists)."""
        found = [
            obj
            for (ns, _), obj in self._objects.get(key, {}).items()
            if namespace is None or ns == namespace
        ]
        found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return found

    def all_objects(self) -> Iterator[tuple[ResourceKey, dict[str, Any]]]:
        for key, objects in list(self._objects.items()):
            for obj in list(objects.values()):
                yield key, obj

    def keys(self) -> set[ResourceKey]:
        return {k for k, objects in self._objects.items() if objects}

    # -- writes ------------------------------------------------------------------------
    def create(self, key: ResourceKey, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        oid = (key, meta.get("namespace", ""), meta["name"])
        if self.get(*oid) is not None:
            raise already_exists(key[1], key[0], meta["name"])
        stored = copy.deepcopy(obj)
        self._commit("ADDED", key, oid, stored, None)
        return stored

    def update(
        self, key: ResourceKey, obj: dict[str, Any], expected_rv: int | None = None
    ) -> dict[str, Any]:
        """Replace an object; `expected_rv` (when given) must equal the stored one (else 409)."""
        meta = obj["metadata"]
        oid = (key, meta.get("namespace", ""), meta["name"])
        current = self.get(*oid)
        if current is None:
            raise not_found(key[1], key[0], meta["name"])
        if expected_rv is not None and expected_rv != int(
            current["metadata"]["resourceVersion"]
        ):
            raise conflict(key[1], key[0], meta["name"])
        stored = copy.deepcopy(obj)
        self._commit("MODIFIED", key, oid, stored, current)
        return stored

    def delete(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any]:
        oid = (key, namespace, name)
        current = self.get(*oid)
        if current is None:
            raise not_found(key[1], key[0], name)
        final = copy.deepcopy(current)
        self._commit("DELETED", key, oid, final, current)
        return final

    def _commit(
        self,
        event_type: str,
        key: ResourceKey,
        oid: ObjectId,
        obj: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> None:
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)
        if event_type == "DELETED":
            del self._objects[key][oid[1:]]
        else:
            self._objects.setdefault(key, {})[oid[1:]] = obj
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].resource_version
        event = StoreEvent(event_type, key, obj, previous, self._resource_version)
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.wants(event):
                watcher.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)

    def restore(self, objects: Iterable[tuple[ResourceKey, dict[str, Any]]], resource_version: int
                ) -> None:
        """Load persisted objects; the (empty) history starts at `resource_version`, so a
        watch from an older version gets 410 and relists, as after an etcd compaction."""
        for key, obj in objects:
            meta = obj["metadata"]
            self._objects.setdefault(key, {})[(meta.get("namespace", ""), meta["name"])] = obj
        self._resource_version = max(self._resource_version, resource_version)
        self._compacted_rv = self._resource_version

    # -- watches -----------------------------------------------------------------------
    def watch(
        self, key: ResourceKey, namespace: str | None, since_rv: int
    ) -> Watcher:
        """A watcher that first receives every retained event after `since_rv`.

        Raises 410 Expired when events after `since_rv` were already dropped from the history.
        A `since_rv` in the future simply yields nothing until the counter passes it.
        """
        if since_rv < self._compacted_rv:
            raise expired(since_rv, self._compacted_rv + 1)
        watcher = Watcher(key, namespace)
        for event in self._history:
            if event.resource_version > since_rv and watcher.wants(event):
                watcher.queue.put_nowait(event)
        self._watchers.append(watcher)
        return watcher

    def stop_watch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def close_watches(self, key: ResourceKey) -> None:
        """End the watches of one resource (its CRD is gone)."""
        for watcher in [w for w in self._watchers if w.key == key]:
            watcher.queue.put_nowait(None)
            self._watchers.remove(watcher)

    def close_all_watches(self) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        self._watchers.clear()
