"""Client-call counters and latency histograms of one runtime process (`/metrics`).

Kept apart from the servicers so the servicers stay about the protocol: `measured(kind)` wraps
one Call or Cast, counts its outcome and records how long the caller waited, including the wait
for standby acknowledgements in Sync mode (which is what a client experiences).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

CALLS = Counter(
    "gencluster_calls",
    "client requests handled by this replica, by kind (call, cast) and outcome: ok, "
    "error (the handler raised; state unchanged), rejected (not answered: not the active, "
    "bad input, or the caller left)",
    ["kind", "outcome"],
)
CALL_DURATION = Histogram(
    "gencluster_call_duration_seconds",
    "time from receiving a client request to answering it, by kind",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


@dataclass
class CallOutcome:
    """Set by the caller once it knows whether the handler raised."""

    handler_raised: bool = False


@asynccontextmanager
async def measured(kind: str) -> AsyncIterator[CallOutcome]:
    outcome = CallOutcome()
    started = time.perf_counter()
    try:
        yield outcome
    except BaseException:
        CALLS.labels(kind, "rejected").inc()
        raise
    else:
        CALLS.labels(kind, "error" if outcome.handler_raised else "ok").inc()
        CALL_DURATION.labels(kind).observe(time.perf_counter() - started)
