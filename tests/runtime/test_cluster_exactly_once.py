"""Exactly-once on a real runtime cluster (issue #11 part 5): a retry with a fixed request id
after 20,000 other calls, within the deduplication window, gets the original reply; after the
window it is refused (FAILED_PRECONDITION, raised as `RetryWindowExpired`) and never applied
again; and a new active after a SIGKILL failover answers both retries the same way.

The window comes from `spec.runtime.deduplicationWindowSeconds`, as the operator passes it
(GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS); it is long enough for the 20,000 calls on a loaded
machine, and the module waits it out once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from gencluster import AsyncClient, Client, RetryWindowExpired
from gencluster.replies import MAX_CLOCK_SKEW_SECONDS
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 50
OTHER_CALLS = 20_000
CONCURRENT_CALLS = 64


@dataclass(frozen=True)
class FirstCall:
    request_id: str
    first_attempt: float
    value: int


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    group = IdCluster(dev_cluster, "once", secrets.token_urlsafe(32), 3,
                      extra_spec={"runtime": {"deduplicationWindowSeconds": WINDOW_SECONDS}})
    group.create()
    group.ready_cluster()
    yield group


@pytest.fixture(scope="module")
def first_call(cluster: IdCluster) -> FirstCall:
    with Client(cluster.addresses(), timeout=20) as client:
        request_id = f"fixed-{uuid.uuid4().hex}"
        first_attempt = time.time()
        details = client.call_with_details(
            "next_value", request_id=request_id, first_attempt=first_attempt
        )
    assert not details.duplicate
    return FirstCall(request_id, first_attempt, details.value)


def retry(cluster: IdCluster, call: FirstCall) -> tuple[int, bool]:
    with Client(cluster.addresses(), timeout=30) as client:
        details = client.call_with_details(
            "next_value", request_id=call.request_id, first_attempt=call.first_attempt
        )
    return details.value, details.duplicate


def current(cluster: IdCluster) -> int:
    with Client(cluster.addresses(), timeout=30) as client:
        value: int = client.call("current")
        return value


async def other_calls(addresses: str, count: int) -> list[int]:
    """`count` next_value calls, `CONCURRENT_CALLS` at a time (each with its own id)."""
    remaining = iter(range(count))
    values: list[int] = []
    async with AsyncClient(addresses, timeout=30) as client:
        async def worker() -> None:
            for _ in remaining:
                values.append(await client.call("next_value"))
        await asyncio.gather(*(worker() for _ in range(CONCURRENT_CALLS)))
    return values


def test_a_retry_after_twenty_thousand_calls_within_the_window_gets_the_original_reply(
    cluster: IdCluster, first_call: FirstCall
) -> None:
    values = asyncio.run(other_calls(cluster.addresses(), OTHER_CALLS))
    assert len(set(values)) == OTHER_CALLS
    elapsed = time.time() - first_call.first_attempt
    assert elapsed < WINDOW_SECONDS, f"the calls took {elapsed:.0f} s, past the window"
    before = current(cluster)
    assert retry(cluster, first_call) == (first_call.value, True)
    assert current(cluster) == before


def kill_the_active(cluster: IdCluster) -> None:
    """SIGKILL the active's process (as a crash would) and wait for another to take over."""
    old_active = cluster.ready_cluster()
    cluster.dev.gencluster("dev", "fault", "--dir", str(cluster.dev.dir), "kill", old_active)
    wait_for(lambda: cluster.holder() not in ("", old_active), 20, 0.1, "a new holder")


def test_a_new_active_after_a_sigkill_answers_a_retry_within_the_window_the_same_way(
    cluster: IdCluster,
) -> None:
    cluster.ready_cluster()
    with Client(cluster.addresses(), timeout=20) as client:
        recent = FirstCall(f"recent-{uuid.uuid4().hex}", time.time(), 0)
        value = client.call_with_details(
            "next_value", request_id=recent.request_id, first_attempt=recent.first_attempt
        ).value
    kill_the_active(cluster)
    before = current(cluster)
    assert retry(cluster, recent) == (value, True)
    assert current(cluster) == before
    cluster.ready_cluster()


def test_after_the_window_a_retry_is_refused_never_applied_again_also_after_failover(
    cluster: IdCluster, first_call: FirstCall
) -> None:
    # The table keeps records for the window plus the tolerated clock skew, and expires
    # them as later entries are applied: wait that long, then apply one entry.
    expired_at = first_call.first_attempt + WINDOW_SECONDS + MAX_CLOCK_SKEW_SECONDS + 1
    wait_for(lambda: time.time() > expired_at, WINDOW_SECONDS + 60, 0.5, "the window to pass")
    with Client(cluster.addresses(), timeout=20) as client:
        client.call("next_value")
    for round_ in ("on the active", "on a new active after SIGKILL"):
        before = current(cluster)
        with pytest.raises(RetryWindowExpired) as refused:
            retry(cluster, first_call)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION, round_
        assert "older than what the cluster remembers" in refused.value.details(), round_
        assert "may or may not have been applied" in refused.value.details(), round_
        assert current(cluster) == before, f"the refused retry changed the state {round_}"
        if round_ == "on the active":
            kill_the_active(cluster)
    cluster.ready_cluster()
