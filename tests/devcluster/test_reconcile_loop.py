"""ReconcileLoop, the loop the proxy and the controllers share: passes on wake and on resync, a
logged retry after a pass that raises, a first pass in start when asked, and a clean stop.

No informers and no server: the loop's own behaviour, with an ApiClient that is never used
(closing it without a session is a no-op)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from gencluster_dev.client.apiclient import ApiClient
from gencluster_dev.client.reconcile_loop import ReconcileLoop

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

log = logging.getLogger("test_reconcile_loop")


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_passes_on_wake_and_on_resync() -> None:
    async def main() -> None:
        passes: list[int] = []

        async def reconcile() -> None:
            passes.append(1)

        loop = ReconcileLoop(ApiClient("http://127.0.0.1:9", "t"), reconcile, name="test",
                             log=log, resync_seconds=0.05)
        await loop.start()
        assert passes == []  # no first pass in start unless asked
        await _until(lambda: len(passes) >= 2)  # resync periods, without a wake
        loop.wake()
        await _until(lambda: len(passes) >= 3)
        await loop.stop()

    asyncio.run(main())


def test_first_pass_in_start_and_only_on_wake_without_resync() -> None:
    async def main() -> None:
        passes: list[int] = []

        async def reconcile() -> None:
            passes.append(1)

        loop = ReconcileLoop(ApiClient("http://127.0.0.1:9", "t"), reconcile, name="test",
                             log=log, reconcile_in_start=True)
        await loop.start()
        assert passes == [1]
        await asyncio.sleep(0.1)
        assert passes == [1]  # no resync period: nothing without a change
        loop.wake()
        await _until(lambda: len(passes) == 2)
        await loop.stop()

    asyncio.run(main())


def test_a_failing_pass_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        attempts: list[int] = []

        async def reconcile() -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("boom")

        loop = ReconcileLoop(ApiClient("http://127.0.0.1:9", "t"), reconcile, name="test",
                             log=log, error_delay=0.01)
        await loop.start()
        loop.wake()
        await _until(lambda: len(attempts) >= 2)  # retried without another wake
        await loop.stop()

    with caplog.at_level(logging.ERROR, logger=log.name):
        asyncio.run(main())
    assert any("test: reconcile failed" in r.getMessage() and r.exc_info for r in caplog.records)
