"""Garbage collection: ownerReferences, deletion finalizers, namespace and CRD cleanup.

`plan_collection` is the pure decision (what to delete, which owner references or finalizers
to drop, given every object); `GarbageCollector` is the controller that runs it whenever
something is deleted or starts deleting, and applies the actions through the same operations
a client would use, so finalizers and graceful pod deletion are honoured on dependents too.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gencluster_dev.apiserver.operations import (
    CRD_CLEANUP_FINALIZER,
    FOREGROUND,
    NAMESPACE_FINALIZER,
    ORPHAN,
    DeleteOptions,
    Operations,
)
from gencluster_dev.machinery.errors import ApiError
from gencluster_dev.machinery.resources import CRD_KEY, NAMESPACES_KEY, ResourceKey
from gencluster_dev.machinery.store import StoreEvent

log = logging.getLogger(__name__)
EVENT_SWEEP_INTERVAL = 60.0


@dataclass(frozen=True)
class ObjectRef:
    key: ResourceKey
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class DeleteObject:
    target: ObjectRef


@dataclass(frozen=True)
class RemoveOwnerReferences:
    target: ObjectRef
    owner_uids: frozenset[str]


@dataclass(frozen=True)
class RemoveFinalizer:
    target: ObjectRef
    finalizer: str


@dataclass(frozen=True)
class FinalizeNamespace:
    target: ObjectRef


Action = DeleteObject | RemoveOwnerReferences | RemoveFinalizer | FinalizeNamespace


def _ref(key: ResourceKey, obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef(key, meta.get("namespace", ""), meta["name"], meta["uid"])


def plan_collection(
    objects: Iterable[tuple[ResourceKey, Mapping[str, Any]]],
    namespaced_keys: set[ResourceKey],
) -> list[Action]:
    """What the garbage collector should do next, given every object in the cluster.

    - a dependent none of whose owners exists any more is deleted (background propagation);
      references to owners that are gone are dropped when other owners remain;
    - an owner deleting with `orphan` loses its dependents' references, then the finalizer;
    - an owner deleting with `foregroundDeletion` has its dependents deleted and keeps the
      finalizer until no dependent with `blockOwnerDeletion` remains;
    - a terminating namespace has its objects deleted, then its `kubernetes` finalizer removed;
    - a deleting CRD has its custom objects deleted, then its cleanup finalizer removed.
    """
    everything = list(objects)
    by_uid = {obj["metadata"]["uid"]: (key, obj) for key, obj in everything}
    dependents: dict[str, list[tuple[ResourceKey, Mapping[str, Any], Mapping[str, Any]]]] = {}
    for key, obj in everything:
        for owner in obj["metadata"].get("ownerReferences") or []:
            dependents.setdefault(owner.get("uid", ""), []).append((key, obj, owner))
    actions: list[Action] = []
    for key, obj in everything:
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        if not refs:
            continue
        absent = {r.get("uid", "") for r in refs if r.get("uid") not in by_uid}
        orphaning = {
            r.get("uid", "") for r in refs if r.get("uid") in by_uid
            and ORPHAN in (by_uid[r["uid"]][1]["metadata"].get("finalizers") or [])
            and by_uid[r["uid"]][1]["metadata"].get("deletionTimestamp")
        }
        foreground = [
            r for r in refs if r.get("uid") in by_uid
            and FOREGROUND in (by_uid[r["uid"]][1]["metadata"].get("finalizers") or [])
            and by_uid[r["uid"]][1]["metadata"].get("deletionTimestamp")
        ]
        if orphaning:
            actions.append(RemoveOwnerReferences(_ref(key, obj), frozenset(orphaning)))
            continue
        if len(absent) == len(refs) or foreground:
            if not meta.get("deletionTimestamp"):
                actions.append(DeleteObject(_ref(key, obj)))
            continue
        if absent:
            actions.append(RemoveOwnerReferences(_ref(key, obj), frozenset(absent)))
    for key, obj in everything:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            continue
        finalizers = meta.get("finalizers") or []
        uid = meta["uid"]
        if ORPHAN in finalizers and not dependents.get(uid):
            actions.append(RemoveFinalizer(_ref(key, obj), ORPHAN))
        if FOREGROUND in finalizers and not any(
            owner.get("blockOwnerDeletion") for _, _, owner in dependents.get(uid, [])
        ):
            actions.append(RemoveFinalizer(_ref(key, obj), FOREGROUND))
        if key == NAMESPACES_KEY and NAMESPACE_FINALIZER in (
            (obj.get("spec") or {}).get("finalizers") or []
        ):
            contents = [(k, o) for k, o in everything
                        if k in namespaced_keys and o["metadata"].get("namespace") == meta["name"]]
            for k, o in contents:
                if not o["metadata"].get("deletionTimestamp"):
                    actions.append(DeleteObject(_ref(k, o)))
            if not contents:
                actions.append(FinalizeNamespace(_ref(key, obj)))
        if key == CRD_KEY and CRD_CLEANUP_FINALIZER in finalizers:
            spec = obj.get("spec") or {}
            custom_key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            contents = [(k, o) for k, o in everything if k == custom_key]
            for k, o in contents:
                if not o["metadata"].get("deletionTimestamp"):
                    actions.append(DeleteObject(_ref(k, o)))
            if not contents:
                actions.append(RemoveFinalizer(_ref(key, obj), CRD_CLEANUP_FINALIZER))
    return actions


EVENT_TTL = timedelta(hours=1)  # kube-apiserver's default --event-ttl
EVENTS_KEY: ResourceKey = ("", "events")


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    """When an Event last happened: the newest of its timestamps."""
    candidates = [
        event.get("lastTimestamp"), event.get("eventTime"), event.get("firstTimestamp"),
        (event.get("series") or {}).get("lastObservedTime")
        if isinstance(event.get("series"), Mapping) else None,
        event["metadata"].get("creationTimestamp"),
    ]
    moments = []
    for text in candidates:
        if isinstance(text, str) and text:
            try:
                moments.append(datetime.fromisoformat(text.replace("Z", "+00:00")))
            except ValueError:
                continue
    return max(moments) if moments else None


def expired_events(
    events: Iterable[Mapping[str, Any]], now: datetime, ttl: timedelta = EVENT_TTL
) -> list[ObjectRef]:
    """Events older than the TTL (Kubernetes lets etcd expire them; here the GC deletes them)."""
    expired = []
    for event in events:
        moment = _event_time(event)
        if moment is not None and now - moment > ttl:
            expired.append(_ref(EVENTS_KEY, event))
    return expired


class GarbageCollector:
    """Runs `plan_collection` after relevant changes and applies its actions."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        operations.store.listeners.append(self._on_event)

    def _on_event(self, event: StoreEvent) -> None:
        if event.type == "DELETED" or event.object["metadata"].get("deletionTimestamp") or (
            event.object["metadata"].get("ownerReferences") and event.type == "ADDED"
        ):
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        next_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that
            # races the wake, and `stop` then waits for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EVENT_SWEEP_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + EVENT_SWEEP_INTERVAL
                self.expire_events()
            for _ in range(100):  # bounded passes to a fixpoint; the next wake continues
                try:
                    changed = self.run_once()
                except Exception:  # a bug or a malformed object: log it, never stop collecting
                    log.exception("garbage collector: a pass failed")
                    break
                if not changed:
                    break
                await asyncio.sleep(0)

    def expire_events(self) -> None:
        ops = self.operations
        events = ops.registry.for_key(EVENTS_KEY)
        assert events is not None
        for ref in expired_events(ops.store.list(EVENTS_KEY), ops.clock()):
            with contextlib.suppress(ApiError):
                ops.delete(events, ref.namespace, ref.name,
                           DeleteOptions(precondition_uid=ref.uid))

    def run_once(self) -> bool:
        """One planning pass; True when it changed something."""
        registry = self.operations.registry
        namespaced = {t.key for t in registry.all() if t.namespaced}
        actions = plan_collection(self.operations.store.all_objects(), namespaced)
        changed = False
        for action in actions:
            try:
                changed |= self._apply(action)
            except ApiError as error:
                if error.code not in (404, 409):
                    log.warning("garbage collector: %s failed: %s", action, error.message)
        return changed

    def _apply(self, action: Action) -> bool:
        ops = self.operations
        target = action.target
        t = ops.registry.for_key(target.key)
        store = ops.store
        current = store.get(target.key, target.namespace, target.name)
        if t is None or current is None or current["metadata"]["uid"] != target.uid:
            return False
        if isinstance(action, DeleteObject):
            ops.delete(t, target.namespace, target.name,
                       DeleteOptions(propagation_policy="Background",
                                     precondition_uid=target.uid))
            return True
        obj = copy.deepcopy(current)
        meta = obj["metadata"]
        if isinstance(action, RemoveOwnerReferences):
            meta["ownerReferences"] = [r for r in meta.get("ownerReferences") or []
                                       if r.get("uid") not in action.owner_uids]
            if not meta["ownerReferences"]:
                del meta["ownerReferences"]
        elif isinstance(action, RemoveFinalizer):
            meta["finalizers"] = [f for f in meta.get("finalizers") or []
                                  if f != action.finalizer]
        elif isinstance(action, FinalizeNamespace):
            spec = obj.setdefault("spec", {})
            spec["finalizers"] = [f for f in spec.get("finalizers") or []
                                  if f != NAMESPACE_FINALIZER]
        updated = store.update(target.key, obj, int(current["metadata"]["resourceVersion"]))
        if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get(
            "finalizers"
        ) and not (target.key == NAMESPACES_KEY and (updated.get("spec") or {}).get(
            "finalizers"
        )):
            ops.remove_object(t, updated)
        return True
