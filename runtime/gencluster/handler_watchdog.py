"""The active's handler watchdog: a handler over its time budget is reported, and one that
hangs past its hang limit takes its process down so the cluster can go on (docs/poison.md).

A handler is synchronous Python on the event loop: nothing in the process can interrupt it
(a signal's Python handler runs only between bytecodes of the same thread, and a handler
stuck in C code never gets there; killing a thread is not possible). While it runs, the loop
renews no Lease and answers nothing. So the watchdog is a thread that watches the one handler
the active is running:

- over `GenServer.handler_budget_seconds`: a warning in the log naming the request, and
  `gencluster_runtime_slow_handlers_total`. The call itself completes normally: its outcome
  cannot be turned into a failure, because every standby runs the same handler on the same
  entry and would keep the outcome the active dropped.
- over `GenServer.handler_hang_seconds` (None: never): the process exits with
  `EXIT_HANDLER_HUNG` after logging why. Its Lease runs out and a standby takes over; the
  kubelet restarts the container, which rejoins as a standby. The request's entry never left
  this process (a handler runs before its entry is sent), so no standby runs it, and the
  client's retry, being older than the new term, is quarantined ahead of running
  (`quarantine`): a hanging request takes down at most two actives.

The per-call cost is two attribute writes: the thread polls (every quarter budget) instead of
being woken on every call.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

from prometheus_client import Counter

log = logging.getLogger(__name__)

EXIT_HANDLER_HUNG = 75
"""The exit code of a process whose handler ran past its hang limit (EX_TEMPFAIL)."""

SLOW_HANDLERS = Counter(
    "gencluster_runtime_slow_handlers",
    "handlers that ran on the active past GenServer.handler_budget_seconds",
)
QUARANTINE_MARKS = Counter(
    "gencluster_runtime_quarantine_marks",
    "suspect requests (first sent before this term) whose quarantine the active replicated "
    "before running them",
)


def _exit_hung(request_id: str) -> None:  # pragma: no cover - ends the process
    logging.shutdown()
    os._exit(EXIT_HANDLER_HUNG)


class HandlerWatchdog:
    """Watches the handler the active's event loop is running (one at a time)."""

    def __init__(
        self,
        budget: float,
        hang: float | None,
        *,
        on_hung: Callable[[str], None] = _exit_hung,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not budget > 0 or (hang is not None and not hang >= budget):
            raise ValueError(
                f"handler budget must be positive and the hang limit at least the budget: "
                f"budget {budget}, hang {hang}"
            )
        self.budget = budget
        self.hang = hang
        self._on_hung = on_hung
        self._clock = clock
        self._tokens = itertools.count(1)
        self._running: tuple[int, str, float] | None = None
        self._reported = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="handler-watchdog", daemon=True)
        self._thread.start()

    def started(self, request_id: str) -> tuple[int, str, float]:
        """A handler run begins on the loop (cheap: no lock, no wake-up); pass the result to
        `finished` in a `finally`."""
        running = (next(self._tokens), request_id, self._clock())
        self._running = running
        return running

    def finished(self, running: tuple[int, str, float]) -> None:
        self._running = None
        token, request_id, started = running
        took = self._clock() - started
        if took > self.budget and self._reported != token:
            self._report(token, request_id, took)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _report(self, token: int, request_id: str, took: float) -> None:
        self._reported = token
        SLOW_HANDLERS.inc()
        log.warning(
            "the handler of request %r has run %.1f s, over its budget of %.1f s (the event "
            "loop, and with it the Lease renewals, waits for it)", request_id, took, self.budget,
        )

    def _watch(self) -> None:
        interval = self.budget / 4
        while not self._stop.wait(interval):
            running = self._running
            if running is None:
                continue
            token, request_id, started = running
            took = self._clock() - started
            if took > self.budget and self._reported != token:
                self._report(token, request_id, took)
            if self.hang is not None and took > self.hang and self._running is running:
                log.critical(
                    "the handler of request %r has run %.1f s, past its hang limit of %.1f s: "
                    "exiting (code %d) so that a standby takes over; the request will be "
                    "quarantined on retry", request_id, took, self.hang, EXIT_HANDLER_HUNG,
                )
                self._on_hung(request_id)
                return
