"""Watch streams: store events turned into the JSON lines of a Kubernetes watch.

The pure part decides what a watcher sees (`translate`: selector transitions become ADDED /
DELETED like the watch cache does, Table rendering per event); the streaming part writes the
lines, bookmarks and the timeout, and ends promptly when the server stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gencluster_dev.machinery.errors import ApiError
from gencluster_dev.machinery.resources import ResourceType
from gencluster_dev.machinery.store import Store, StoreEvent

CLIENT_CHECK_INTERVAL = 5.0
Matcher = Callable[[Mapping[str, Any]], bool]
Render = Callable[[dict[str, Any]], dict[str, Any]]


def translate(event: StoreEvent, matches: Matcher) -> str | None:
    """The event type a filtered watcher sees, or None when it sees nothing.

    An object that starts matching the selectors is ADDED for this watcher; one that stops
    matching is DELETED, as kube-apiserver's watch cache reports it.
    """
    now = matches(event.object)
    if event.type == "ADDED":
        return "ADDED" if now else None
    if event.type == "DELETED":
        return "DELETED" if (event.previous is None or matches(event.previous) or now) else None
    before = event.previous is not None and matches(event.previous)
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    if before:
        return "DELETED"
    return None


@dataclass
class WatchRequest:
    resource: ResourceType
    namespace: str | None
    since: int | None  # None: start with synthetic ADDED for the current objects
    timeout_seconds: float | None
    bookmarks: bool
    matches: Matcher
    render: Render  # object -> what goes in the event (object at the served version, Table)
    bookmark_interval: float
    initial_events_end: bool = False  # sendInitialEvents: mark the end of the initial ADDEDs


def error_line(error: ApiError) -> bytes:
    return (json.dumps({"type": "ERROR", "object": error.status()}) + "\n").encode()


async def stream(
    request: web.Request, store: Store, spec: WatchRequest, present: Render
) -> web.StreamResponse:
    """Serve one watch until timeout, client disconnect or server stop."""
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "application/json",
        "Cache-Control": "no-cache, private",
    })
    response.enable_chunked_encoding()
    try:
        if spec.since is None:
            watcher = store.watch(spec.resource.key, spec.namespace, store.resource_version)
            initial = [o for o in store.list(spec.resource.key, spec.namespace)
                       if spec.matches(o)]
        else:
            watcher = store.watch(spec.resource.key, spec.namespace, spec.since)
            initial = []
    except ApiError as error:
        await response.prepare(request)
        await response.write(error_line(error))
        await response.write_eof()
        return response
    await response.prepare(request)
    deadline = time.monotonic() + spec.timeout_seconds if spec.timeout_seconds else None
    next_bookmark = time.monotonic() + spec.bookmark_interval

    async def send(event_type: str, obj: dict[str, Any]) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n"
        await response.write(line.encode())

    async def bookmark(initial_events_end: bool = False) -> None:
        metadata: dict[str, Any] = {"resourceVersion": str(store.resource_version)}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        await send("BOOKMARK", {
            "kind": spec.resource.kind,
            "apiVersion": spec.resource.group_version,
            "metadata": metadata,
        })

    try:
        for obj in initial:
            await send("ADDED", spec.render(present(obj)))
        if spec.initial_events_end:
            await bookmark(initial_events_end=True)
        while True:
            now = time.monotonic()
            waits = [next_bookmark - now] if spec.bookmarks else []
            if deadline is not None:
                waits.append(deadline - now)
            # wake up now and then to notice a client that went away without a word
            wait = max(0.0, min([*waits, CLIENT_CHECK_INTERVAL]))
            try:
                event = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    if spec.bookmarks:
                        await bookmark()
                    break
                if spec.bookmarks and now >= next_bookmark:
                    if watcher.queue.empty():
                        await bookmark()
                    next_bookmark = now + spec.bookmark_interval
                continue
            if event is None:  # server stopping
                if spec.bookmarks:
                    await bookmark()
                break
            seen_as = translate(event, spec.matches)
            if seen_as is not None:
                try:
                    rendered = spec.render(present(event.object))
                except ApiError as error:  # e.g. a Table column that cannot be rendered
                    await response.write(error_line(error))
                    break
                await send(seen_as, rendered)
        await response.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away; nothing left to tell it
    finally:
        store.stop_watch(watcher)
    return response
