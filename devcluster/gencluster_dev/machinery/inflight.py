"""How many requests may be served at once: kube-apiserver's max-in-flight filter.

kube-apiserver bounds the requests it works on at the same time (`--max-requests-inflight`,
default 400, and `--max-mutating-requests-inflight`, default 200) and answers the rest at once
with 429 and `Retry-After: 1`, which client-go and kubectl honour by retrying. Long-running
requests (watches, proxy, exec, attach, port-forward, logs) are not counted, nor are requests
from `system:masters`; the filter runs after authentication and before authorization
(`genericfilters.WithMaxInFlightLimit`, `BasicLongRunningRequestCheck`). Without such a bound
a flood of slow requests costs the server memory and event-loop time without end.

Priority and fairness, which replaced this filter by default since Kubernetes 1.20, shares the
same total (600) among priority levels; one read-only and one mutating pool are what the
`--enable-priority-and-fairness=false` server does, and what this one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gencluster_dev.machinery.rbac import MASTERS
from gencluster_dev.machinery.request_info import RequestInfo

DEFAULT_MAX_REQUESTS_INFLIGHT = 400
DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT = 200
LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})
READ_ONLY_VERBS = frozenset({"get", "list", "watch"})
RETRY_AFTER_SECONDS = "1"
TOO_MANY_REQUESTS = "Too many requests, please try again later.\n"
"""The plain-text body kube-apiserver's `tooManyRequests` writes (`http.Error`)."""


class Pool(Enum):
    UNLIMITED = "unlimited"
    READ_ONLY = "read-only"
    MUTATING = "mutating"


def pool_of(info: RequestInfo, groups: tuple[str, ...]) -> Pool:
    """The pool a request is counted in (UNLIMITED: not counted)."""
    if MASTERS in groups:
        return Pool.UNLIMITED
    if info.verb in LONG_RUNNING_VERBS or (
        info.is_resource_request and info.subresource in LONG_RUNNING_SUBRESOURCES
    ):
        return Pool.UNLIMITED
    return Pool.READ_ONLY if info.verb in READ_ONLY_VERBS else Pool.MUTATING


@dataclass
class InflightLimits:
    """The two counters; `enter` refuses (False) a request over its pool's limit. A limit of
    0 means no limit, as the kube-apiserver flag does."""

    max_read_only: int = DEFAULT_MAX_REQUESTS_INFLIGHT
    max_mutating: int = DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT
    in_flight: dict[Pool, int] = field(default_factory=lambda: {p: 0 for p in Pool})
    refused: int = 0

    def _limit(self, pool: Pool) -> int:
        if pool is Pool.READ_ONLY:
            return self.max_read_only
        return self.max_mutating if pool is Pool.MUTATING else 0

    def enter(self, pool: Pool) -> bool:
        limit = self._limit(pool)
        if limit and self.in_flight[pool] >= limit:
            self.refused += 1
            return False
        self.in_flight[pool] += 1
        return True

    def leave(self, pool: Pool) -> None:
        self.in_flight[pool] -= 1
