"""Client-call counters and latency histograms of one runtime process (`/metrics`).

Kept apart from the servicers so the servicers stay about the protocol: a `CallMeter` per kind
counts each Call or Cast's outcome and records how long the caller waited, including the wait
for standby acknowledgements in Sync mode (which is what a client experiences).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

CALLS = Counter(
    "gencluster_runtime_calls",
    "client requests handled by this replica, by kind (call, cast) and outcome: ok, "
    "error (the handler raised; state unchanged), rejected (not answered: not the active, "
    "bad input, or the caller left)",
    ["kind", "outcome"],
)
CALL_DURATION = Histogram(
    "gencluster_runtime_call_duration_seconds",
    "time from receiving a client request to answering it, by kind",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class CallMeter:
    """The metric children of one kind (call, cast), resolved once: `labels()` takes a lock
    and validates its arguments, a measurable share of a replicated call's cost when done on
    every call. The servicer reads the clock itself and reports the outcome."""

    def __init__(self, kind: str) -> None:
        self._ok = CALLS.labels(kind, "ok")
        self._error = CALLS.labels(kind, "error")
        self._rejected = CALLS.labels(kind, "rejected")
        self._duration = CALL_DURATION.labels(kind)

    @staticmethod
    def start() -> float:
        return time.perf_counter()

    def answered(self, started: float, *, handler_raised: bool) -> None:
        """Answered: counted as ok or error, and how long the caller waited (including the
        wait for standby acknowledgements in Sync mode)."""
        (self._error if handler_raised else self._ok).inc()
        self._duration.observe(time.perf_counter() - started)

    def rejected(self) -> None:
        """Not answered: not the active, bad input, or the caller left."""
        self._rejected.inc()
