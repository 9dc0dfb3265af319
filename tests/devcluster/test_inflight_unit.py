"""Which requests kube-apiserver's max-in-flight filter counts, and in which pool."""

from __future__ import annotations

import pytest
from gencluster_dev.machinery.inflight import InflightLimits, Pool, pool_of
from gencluster_dev.machinery.request_info import request_info

pytestmark = pytest.mark.unit

USER = ("system:authenticated",)


@pytest.mark.parametrize(
    ("method", "path", "query", "pool"),
    [
        ("GET", "/api/v1/namespaces/a/pods", {}, Pool.READ_ONLY),
        ("GET", "/api/v1/namespaces/a/pods/p", {}, Pool.READ_ONLY),
        ("GET", "/apis", {}, Pool.READ_ONLY),
        ("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}, Pool.UNLIMITED),
        ("GET", "/api/v1/namespaces/a/pods/p/log", {}, Pool.UNLIMITED),
        ("POST", "/api/v1/namespaces/a/pods/p/exec", {}, Pool.UNLIMITED),
        ("GET", "/api/v1/namespaces/a/pods/p/portforward", {}, Pool.UNLIMITED),
        ("GET", "/api/v1/namespaces/a/pods/p:8080/proxy/metrics", {}, Pool.UNLIMITED),
        ("POST", "/api/v1/namespaces/a/configmaps", {}, Pool.MUTATING),
        ("PATCH", "/api/v1/namespaces/a/pods/p/status", {}, Pool.MUTATING),
        ("DELETE", "/api/v1/namespaces/a/pods", {}, Pool.MUTATING),
    ],
)
def test_pools_follow_kube_apiservers_long_running_check(
    method: str, path: str, query: dict[str, str], pool: Pool
) -> None:
    assert pool_of(request_info(method, path, query), USER) is pool


def test_system_masters_is_never_counted() -> None:
    info = request_info("POST", "/api/v1/namespaces/a/configmaps", {})
    assert pool_of(info, ("system:masters", "system:authenticated")) is Pool.UNLIMITED


def test_each_pool_has_its_own_limit_and_zero_means_none() -> None:
    limits = InflightLimits(max_read_only=1, max_mutating=2)
    assert limits.enter(Pool.MUTATING) and limits.enter(Pool.MUTATING)
    assert not limits.enter(Pool.MUTATING)
    assert limits.enter(Pool.READ_ONLY) and not limits.enter(Pool.READ_ONLY)
    assert limits.refused == 2
    limits.leave(Pool.MUTATING)
    assert limits.enter(Pool.MUTATING)
    assert all(limits.enter(Pool.UNLIMITED) for _ in range(1000))
    unbounded = InflightLimits(max_read_only=0, max_mutating=0)
    assert all(unbounded.enter(Pool.MUTATING) for _ in range(1000))
