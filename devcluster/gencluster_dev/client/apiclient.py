"""A small asyncio client of the Kubernetes REST API, plus a list+watch cache (informer).

The kubelet and the Service proxy are ordinary API clients: they go through HTTP with a bearer
token like any controller, so they exercise the same surface `kubectl` and kopf do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `body` the decoded Status (if any)."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status
        self.body = body


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): the caller must list again."""


class ApiClient:
    """Bearer-token REST calls returning decoded JSON."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One call; raises `ApiError` on a non-2xx answer."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self._http().request(
            method, self.base_url + path, params=_params(params), data=data, headers=headers,
            timeout=timeout,
        ) as response:
            text = await response.text()
            try:
                decoded = json.loads(text) if text else None
            except ValueError:
                decoded = text
            if response.status >= 300:
                raise ApiError(response.status, decoded, method, path)
            return decoded

    async def get(self, path: str, params: dict | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Any:
        """The object, or None when it does not exist (404)."""
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: dict) -> Any:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: dict) -> Any:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, body: dict) -> Any:
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def delete(self, path: str, body: dict | None = None) -> Any:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self, path: str, *, resource_version: str, params: dict | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict]]:
        """Stream (type, object) watch events from `resource_version`, bookmarks included.

        Raises `WatchExpired` on 410 (as an HTTP status or an ERROR event).
        """
        query = dict(params or {})
        query.update(watch="true", resourceVersion=resource_version,
                     allowWatchBookmarks="true", timeoutSeconds=str(timeout_seconds))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout,
                                        sock_read=timeout_seconds + 30)
        async with self._http().get(
            self.base_url + path, params=_params(query), timeout=timeout
        ) as response:
            if response.status == 410:
                raise WatchExpired(path)
            if response.status >= 300:
                text = await response.text()
                raise ApiError(response.status, text, "WATCH", path)
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired(path)
                        raise ApiError(obj.get("code", 500), obj, "WATCH", path)
                    yield kind, obj


def _params(params: dict | None) -> dict | None:
    if not params:
        return None
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel a background task and wait until it has finished unwinding, so nothing it does
    (a request, a cache write) outlives the `stop` that cancelled it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def object_key(obj: dict) -> tuple[str, str]:
    """(namespace, name) of an object."""
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


class Informer:
    """A list+watch cache of one resource that calls `handler(type, obj)` on every change.

    It resumes the watch from the last resourceVersion seen after a disconnect and, on 410
    Gone, lists again and synthesizes DELETED for objects that vanished meanwhile, so the
    handler sees a consistent stream whatever happened to the connection.
    """

    def __init__(
        self,
        api: ApiClient,
        path: str,
        handler: Callable[[str, dict], None],
        *,
        params: dict | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self.api = api
        self.path = path
        self.handler = handler
        self.params = params or {}
        self.retry_delay = retry_delay
        self.cache: dict[tuple[str, str], dict] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer {self.path}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def _emit(self, kind: str, obj: dict) -> None:
        try:
            self.handler(kind, obj)
        except Exception:
            log.exception("informer %s: handler failed on %s", self.path, kind)

    async def _relist(self) -> str:
        listed = await self.api.get(self.path, self.params)
        fresh = {object_key(item): item for item in listed.get("items") or []}
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self._emit("DELETED", old)
        for key, item in fresh.items():
            old = self.cache.get(key)
            self.cache[key] = item
            if old is not None and old["metadata"].get("uid") != item["metadata"].get("uid"):
                self._emit("DELETED", old)  # deleted and re-created while we were away
                old = None
            if old is None:
                self._emit("ADDED", item)
            elif old.get("metadata", {}).get("resourceVersion") != item["metadata"].get(
                "resourceVersion"
            ):
                self._emit("MODIFIED", item)
        self.synced.set()
        return listed.get("metadata", {}).get("resourceVersion", "0")

    async def _run(self) -> None:
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._relist()
                async for kind, obj in self.api.watch(
                    self.path, resource_version=resource_version, params=self.params
                ):
                    resource_version = obj.get("metadata", {}).get(
                        "resourceVersion", resource_version
                    )
                    if kind == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if kind == "DELETED":
                        self.cache.pop(key, None)
                    else:
                        self.cache[key] = obj
                    self._emit(kind, obj)
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("informer %s: watch expired, relisting", self.path)
                resource_version = None
            except Exception as exc:
                log.warning("informer %s: %s; retrying", self.path, exc)
                await asyncio.sleep(self.retry_delay)
