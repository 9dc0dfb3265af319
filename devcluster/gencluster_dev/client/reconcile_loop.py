"""The informer-driven reconcile loop every controller of the local control plane runs.

Every controller (workloads, Endpoints, volumes) and the Service proxy work the same way,
like client-go's controllers: informers keep caches of what they read, any change to them marks
the controller dirty, and one task reconciles the whole desired state from the caches whenever
it is dirty (and, for some, every resync period, so a missed or ignored change heals). It lives
here, in `client/`, beside `Informer`, because `network/` and `controllers/` may both import the
client but not each other.

What differs between them stays with them: which informers wake the loop, the resync period,
whether `start` waits for a first pass, and any finer error handling inside their `reconcile`
(per object, per action). An exception that escapes `reconcile` is logged on the controller's
own logger and the pass is retried after `error_delay`, so a persistent failure cannot spin: an
API answer (`ApiError`: a refusal, not a bug of the controller) in one line, anything else with
its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gencluster_dev.client.apiclient import ApiClient, ApiError, Informer, cancel_and_wait

SYNC_TIMEOUT = 30.0
"""How long `start` waits for the informers' first list before giving up (TimeoutError)."""

ERROR_DELAY = 1.0
"""The pause before retrying a pass that raised: long enough not to spin on a persistent
failure, short enough that a transient one (API server restarting) heals at once."""


class ReconcileLoop:
    """Informers, a dirty flag and the task that runs `reconcile` whenever the flag is set.

    It owns the API client and the informers it made (`informer`): `stop` stops them and
    closes the client, so a controller's own `stop` only has its own resources left to free.
    """

    def __init__(
        self,
        api: ApiClient,
        reconcile: Callable[[], Awaitable[None]],
        *,
        name: str,
        log: logging.Logger,
        resync_seconds: float | None = None,
        reconcile_in_start: bool = False,
        error_delay: float = ERROR_DELAY,
    ) -> None:
        """`resync_seconds=None`: run only on changes; `reconcile_in_start`: `start` returns
        after a first pass (its errors raised to the caller), so what it sets up is there."""
        self.api = api
        self.name = name
        self._reconcile = reconcile
        self._log = log
        self._resync_seconds = resync_seconds
        self._reconcile_in_start = reconcile_in_start
        self._error_delay = error_delay
        self._informers: list[Informer] = []
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None

    def informer(self, path: str, *, wakes: bool = True) -> Informer:
        """An informer of `path`, started, synced and stopped with the loop. `wakes=False` for
        a cache that is only read (at pass time or live), whose changes need no pass."""
        handler = self._changed if wakes else _ignore
        informer = Informer(self.api, path, handler)
        self._informers.append(informer)
        return informer

    def wake(self) -> None:
        """Ask for another pass (after a change, or to look again once the caches caught up)."""
        self._dirty.set()

    def _changed(self, kind: str, obj: dict) -> None:
        self.wake()

    async def start(self) -> None:
        """Start the informers, wait for their caches (`SYNC_TIMEOUT`), then start the loop."""
        for informer in self._informers:
            informer.start()
        await asyncio.wait_for(
            asyncio.gather(*(informer.synced.wait() for informer in self._informers)),
            SYNC_TIMEOUT,
        )
        if self._reconcile_in_start:
            await self._reconcile()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop, stop the informers, close the API client."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for informer in self._informers:
            await informer.stop()
        await self.api.close()

    async def _run(self) -> None:
        while True:
            # a resync period elapsing means a pass even without a change (None: no timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._resync_seconds)
            self._dirty.clear()
            try:
                await self._reconcile()
            except ApiError as error:
                self._log.warning("%s: %s; again in %.1fs", self.name, error,
                                  self._error_delay)
                await asyncio.sleep(self._error_delay)
                self.wake()
            except Exception:
                self._log.exception("%s: reconcile failed; again in %.1fs", self.name,
                                    self._error_delay)
                await asyncio.sleep(self._error_delay)
                self.wake()


def _ignore(kind: str, obj: dict) -> None:
    """The handler of an informer whose changes need no pass."""
