"""Controllers ride out the API errors a controller expects (403 from a terminating namespace,
404 and 409 from a cache that is behind) in one log line, and never die on an API refusal."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from gencluster_dev.client import writes
from gencluster_dev.client.apiclient import ApiClient, ApiError
from gencluster_dev.client.reconcile_loop import ReconcileLoop

from tests.devcluster.conftest import ADMIN_TOKEN, RunningApiServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
       "spec": {"containers": [{"name": "c", "image": "x"}]}}


def _terminating_namespace(apiserver: RunningApiServer, name: str) -> None:
    status, _ = apiserver.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert status == 201
    status, _ = apiserver.request("POST", f"/api/v1/namespaces/{name}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    assert status == 201
    status, _ = apiserver.request("DELETE", f"/api/v1/namespaces/{name}")
    assert status in (200, 202)


def test_expected_refusals_are_one_line_and_not_raised(
        apiserver: RunningApiServer, caplog: pytest.LogCaptureFixture) -> None:
    _terminating_namespace(apiserver, "going")

    async def scenario() -> list[Any]:
        api = ApiClient(apiserver.url, ADMIN_TOKEN)
        try:
            refused = await writes.create(api, "/api/v1/namespaces/going/pods", POD, who="t")
            gone = await writes.delete(api, "/api/v1/namespaces/default/pods/nope",
                                       {"metadata": {"name": "nope", "uid": "u"}}, who="t")
            created = await writes.create(api, "/api/v1/namespaces/default/pods", POD, who="t")
            again = await writes.create(api, "/api/v1/namespaces/default/pods", POD, who="t")
            try:
                await writes.create(api, "/api/v1/namespaces/default/pods",
                                    {**POD, "metadata": {"name": "Bad_Name"}}, who="t")
            except ApiError as error:
                invalid = error.status
            return [refused, gone, created is not None, again, invalid]
        finally:
            await api.close()

    with caplog.at_level(logging.INFO, logger="gencluster_dev.client.writes"):
        assert apiserver.call(scenario()) == [None, None, True, None, 422]
    lines = [r for r in caplog.records if r.name == "gencluster_dev.client.writes"]
    assert len(lines) == 3, [r.getMessage() for r in lines]
    assert "403" in lines[0].getMessage() and "being terminated" in lines[0].getMessage()
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in lines)


def test_a_pass_refused_by_the_api_is_logged_in_one_line_and_retried(
        apiserver: RunningApiServer, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> int:
        api = ApiClient(apiserver.url, ADMIN_TOKEN)
        passes = 0
        done = asyncio.Event()

        async def reconcile() -> None:
            nonlocal passes
            passes += 1
            if passes == 1:
                await api.create("/api/v1/namespaces/no-such-namespace/pods", POD)
            done.set()

        loop = ReconcileLoop(api, reconcile, name="test loop",
                             log=logging.getLogger("test.loop"), error_delay=0.05)
        await loop.start()
        loop.wake()
        await asyncio.wait_for(done.wait(), 20)
        await loop.stop()
        return passes

    with caplog.at_level(logging.INFO, logger="test.loop"):
        assert apiserver.call(scenario()) == 2
    warnings = [r for r in caplog.records if r.name == "test.loop"
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "404" in warnings[0].getMessage()
    assert any("passes again" in r.getMessage() for r in caplog.records
               if r.name == "test.loop")


def test_one_refused_object_is_held_back_without_holding_up_the_others(
        apiserver: RunningApiServer, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> dict[str, int]:
        api = ApiClient(apiserver.url, ADMIN_TOKEN)
        calls = {"bad": 0, "good": 0}

        async def reconcile(obj: dict[str, Any]) -> None:
            name = obj["metadata"]["name"]
            calls[name] += 1
            if name == "bad":
                await api.create("/api/v1/namespaces/no-such-namespace/pods", POD)

        loop = ReconcileLoop(api, lambda: asyncio.sleep(0), name="each loop",
                             log=logging.getLogger("test.each"), error_delay=30)
        bad = {"metadata": {"namespace": "n", "name": "bad", "resourceVersion": "1"}}
        good = {"metadata": {"namespace": "n", "name": "good", "resourceVersion": "1"}}
        for _ in range(3):
            await loop.each([bad, good], reconcile)
        changed = {"metadata": {**bad["metadata"], "resourceVersion": "2"}}
        await loop.each([changed, good], reconcile)  # a changed object is tried at once
        await api.close()
        return calls

    with caplog.at_level(logging.INFO, logger="test.each"):
        assert apiserver.call(scenario()) == {"bad": 2, "good": 4}
    warnings = [r for r in caplog.records if r.name == "test.each"]
    assert len(warnings) == 1 and "n/bad" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
