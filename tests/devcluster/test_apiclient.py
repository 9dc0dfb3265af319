"""The kubelet's and proxy's REST client and informer against a real in-process ApiServer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from gencluster_dev.apiserver.server import ApiServer
from gencluster_dev.client.apiclient import ApiClient, ApiError, Informer, WatchExpired
from gencluster_testing.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def with_server(tmp_path: Path, body: Callable[[ApiClient], Awaitable[None]],
                watch_history: int = 10_000) -> None:
    async def main() -> None:
        server = ApiServer(host="127.0.0.1", port=0, admin_token="admin",
                           service_network="127.250.128.0/17", pods_dir=tmp_path,
                           watch_history=watch_history)
        await server.start()
        api = ApiClient(server.url, "admin")
        try:
            await body(api)
        finally:
            await api.close()
            await server.stop()

    asyncio.run(main())


def cm(name: str, value: str = "1") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"v": value}}


def test_calls_and_errors(tmp_path: Path) -> None:
    async def body(api: ApiClient) -> None:
        created = await api.create(CONFIGMAPS, cm("a"))
        assert created["metadata"]["uid"]
        with pytest.raises(ApiError) as conflict:
            await api.create(CONFIGMAPS, cm("a"))
        assert conflict.value.status == 409
        patched = await api.merge_patch(f"{CONFIGMAPS}/a", {"data": {"v": "2"}})
        assert patched["data"] == {"v": "2"}
        assert await api.get_or_none(f"{CONFIGMAPS}/missing") is None
        await api.delete(f"{CONFIGMAPS}/a")
        assert await api.get_or_none(f"{CONFIGMAPS}/a") is None
        bad = ApiClient(api.base_url, "wrong")
        with pytest.raises(ApiError) as denied:
            await bad.get(CONFIGMAPS)
        await bad.close()
        assert denied.value.status == 401

    with_server(tmp_path, body)


def test_informer_follows_changes(tmp_path: Path) -> None:
    async def body(api: ApiClient) -> None:
        events: list[tuple[str, str]] = []
        await api.create(CONFIGMAPS, cm("before"))
        informer = Informer(api, CONFIGMAPS,
                            lambda kind, obj: events.append((kind, obj["metadata"]["name"])))
        informer.start()
        await asyncio.wait_for(informer.synced.wait(), 5)
        await api.create(CONFIGMAPS, cm("after"))
        await api.merge_patch(f"{CONFIGMAPS}/before", {"data": {"v": "2"}})
        await api.delete(f"{CONFIGMAPS}/after")
        await wait_for_async(lambda: len(events) >= 4, 5, message=f"four events ({events})")
        await informer.stop()
        assert events == [("ADDED", "before"), ("ADDED", "after"), ("MODIFIED", "before"),
                          ("DELETED", "after")]
        assert set(informer.cache) == {("default", "before")}

    with_server(tmp_path, body)


def test_expired_watch_and_relist_diff(tmp_path: Path) -> None:
    async def body(api: ApiClient) -> None:
        first = await api.create(CONFIGMAPS, cm("old"))
        for index in range(10):
            await api.merge_patch(f"{CONFIGMAPS}/old", {"data": {"v": str(index)}})
        with pytest.raises(WatchExpired):
            async for _ in api.watch(CONFIGMAPS,
                                     resource_version=first["metadata"]["resourceVersion"]):
                pass
        events: list[tuple[str, str, str]] = []
        informer = Informer(api, CONFIGMAPS, lambda kind, obj: events.append(
            (kind, obj["metadata"]["name"], obj["metadata"]["uid"])))
        # what the cache held before losing the watch: "old" (since re-created) and "gone"
        informer.cache[("default", "old")] = first
        informer.cache[("default", "gone")] = {"metadata": {"name": "gone", "uid": "g"}}
        await api.delete(f"{CONFIGMAPS}/old")
        recreated = await api.create(CONFIGMAPS, cm("old"))
        await informer._relist()
        assert events == [
            ("DELETED", "gone", "g"),
            ("DELETED", "old", first["metadata"]["uid"]),
            ("ADDED", "old", recreated["metadata"]["uid"]),
        ]

    with_server(tmp_path, body, watch_history=3)
