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
API answer (`ApiError`: a refusal, not a bug of the controller) in one line, once while it stays
the same (retried with a doubling pause up to 30 s), anything else with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gencluster_dev.client.apiclient import ApiClient, ApiError, Informer, cancel_and_wait

SYNC_TIMEOUT = 30.0
"""How long `start` waits for the informers' first list before giving up (TimeoutError)."""

MAX_REFUSAL_DELAY = 30.0
"""The longest pause between passes the API keeps refusing the same way."""

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
        self._refusal: str | None = None
        self._refusal_delay = error_delay
        # key -> (refusal, delay, until, resourceVersion of the refused object)
        self._held: dict[Any, tuple[str, float, float, Any]] = {}

    def informer(self, path: str, *, wakes: bool = True) -> Informer:
        """An informer of `path`, started, synced and stopped with the loop. `wakes=False` for
        a cache that is only read (at pass time or live), whose changes need no pass."""
        handler = self._changed if wakes else _ignore
        informer = Informer(self.api, path, handler)
        self._informers.append(informer)
        return informer

    async def each(self, objects: Iterable[dict], reconcile: Callable[[dict], Awaitable[None]],
                   ) -> None:
        """Reconcile every object on its own: one the API refuses (`ApiError`: an invalid
        template, a quota) is logged once while the refusal stays the same and retried with a
        pause that doubles up to `MAX_REFUSAL_DELAY`, without holding up the others, like
        client-go's per-item rate-limited work queue. A changed object (new resourceVersion)
        is tried again at once."""
        loop = asyncio.get_running_loop()
        for obj in objects:
            key = (obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))
            version = obj["metadata"].get("resourceVersion")
            held = self._held.get(key)
            if held is not None and loop.time() < held[2] and held[3] == version:
                continue
            try:
                await reconcile(obj)
            except ApiError as error:
                message = str(error)
                if held is not None and held[0] == message:
                    delay = min(held[1] * 2, MAX_REFUSAL_DELAY)
                else:
                    delay = self._error_delay
                    self._log.warning("%s: %s/%s: %s; retried until it passes", self.name,
                                      *key, message)
                self._held[key] = (message, delay, loop.time() + delay, version)
                loop.call_later(delay, self.wake)
            else:
                if self._held.pop(key, None) is not None:
                    self._log.info("%s: %s/%s passes again", self.name, *key)

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
                if self._refusal is not None:
                    self._log.info("%s: passes again", self.name)
                    self._refusal = None
            except ApiError as error:
                # The same refusal again (an invalid template, say) is logged once and retried
                # with a doubling pause, as client-go's rate-limited queues do.
                message = str(error)
                if message == self._refusal:
                    self._refusal_delay = min(self._refusal_delay * 2, MAX_REFUSAL_DELAY)
                else:
                    self._refusal, self._refusal_delay = message, self._error_delay
                    self._log.warning("%s: %s; retried until it passes", self.name, message)
                await asyncio.sleep(self._refusal_delay)
                self.wake()
            except Exception:
                self._log.exception("%s: reconcile failed; again in %.1fs", self.name,
                                    self._error_delay)
                await asyncio.sleep(self._error_delay)
                self.wake()


def _ignore(kind: str, obj: dict) -> None:
    """The handler of an informer whose changes need no pass."""
