"""Failsafe (docs/partitions.md, "Failsafe"): a Fenced id_server keeps serving through a
Kubernetes control-plane outage on its standbys' promises, and stops within the renew
deadline once it loses one of them.

The 3-replica id_server of test_fenced.py (`Sync`, `minSyncStandbys: 1`, lease 4/3/1 s),
under concurrent clients that know every pod, with real nftables rules
(`gencluster dev fault cut-apiserver`). The main outage lasts `GENCLUSTER_FAILSAFE_SECONDS`
(default 120, as in issue 19; set it higher for a longer run), the variants
`VARIANT_SECONDS`. The outage's length is the scenario's input, not a synchronisation: what
must happen is checked on the recorded history, and every wait has a deadline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess, events, namespace_for
from gencluster_testing.partitions.checkers import unavailability
from gencluster_testing.partitions.cluster import LEASE, IdServerUnderTest
from gencluster_testing.partitions.history import History, LoadRecorder, Operation
from gencluster_testing.waiting import wait_for

from tests.partitions.test_fenced import (
    CONVERGE_DEADLINE,
    OK_CALLS,
    PROGRESS_DEADLINE,
    READY_DEADLINE,
    api_endpoint,
    connects_as,
    judge,
    uid_of,
)


def outage_seconds() -> float:
    return float(os.environ.get("GENCLUSTER_FAILSAFE_SECONDS", "120"))


pytestmark = [pytest.mark.fault, pytest.mark.timeout(outage_seconds() + 300)]

VARIANT_SECONDS = 20.0
RENEW_DEADLINE = float(LEASE["renewDeadlineSeconds"])
SLACK = 1.0
"""For a reply in flight and this process's scheduling when comparing a call's completion
with a marker (test_fenced.py uses the same second)."""


@pytest.fixture
def ids(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, healed: None,
    request: pytest.FixtureRequest,
) -> Iterator[IdServerUnderTest]:
    namespace = namespace_for(request.node.name)
    try:
        server = IdServerUnderTest.create(dev_cluster, namespace, deadline=READY_DEADLINE)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- operator\n{operator.output()[-3000:]}") from None
    yield server
    server.heal()
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def cut_from_the_api_server(ids: IdServerUnderTest, pods: list[str]) -> None:
    """Cut `pods` from the API server, and check that the rule took effect for each."""
    for pod in pods:
        ids.fault("cut-apiserver", pod)
    host, port = api_endpoint(ids.dev)
    for pod in pods:
        assert connects_as(uid_of(ids.dev, ids.namespace, pod), host, port) == "timeout"


def failed_between(history: History, start: str, end: str) -> list[Operation]:
    """Calls invoked in the window that did not complete ok (retries are inside a call)."""
    start_at, end_at = history.marker(start).at, history.marker(end).at
    return [op for op in history.operations
            if start_at <= op.invoked_at <= end_at and not op.ok]


def in_failsafe(ids: IdServerUnderTest, pod: str) -> dict[str, object] | None:
    replica = {r.get("identity"): r for r in ids.status()}.get(pod)
    if replica and replica.get("role") == "active" and "failsafeSeconds" in replica:
        return replica
    return None


def serve_through_an_outage(
    ids: IdServerUnderTest, tmp_path: Path, cut: list[str], seconds: float
) -> History:
    """Cut `cut` from the API server for `seconds` under load; every call invoked meanwhile
    must succeed, in the same term, and the active must say it serves in failsafe."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    with LoadRecorder(ids.addresses, clients=4, call_timeout=5.0) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        cut_from_the_api_server(ids, cut)
        load.mark("cut")
        status = wait_for(lambda: in_failsafe(ids, active["identity"]), 3 * RENEW_DEADLINE + 10,
                          0.5, "the active to report failsafe")
        ends = history_time = time.monotonic() + seconds
        while (history_time := time.monotonic()) < ends:
            # The outage's length is the scenario: while it lasts, the active keeps reporting
            # failsafe (checked every few seconds, not a synchronisation).
            assert in_failsafe(ids, active["identity"]), ids.status()
            time.sleep(min(5.0, max(0.0, ends - history_time)))
        load.mark("heal")
        ids.heal()
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)
    failed = failed_between(history, "cut", "heal")
    assert failed == [], f"{len(failed)} calls failed during the outage: {failed[:3]}"
    assert {op.epoch for op in history.ok()} == {active["epoch"]}, "no failover expected"
    assert ids.converged()["identity"] == active["identity"]  # type: ignore[index]
    replica = {r["identity"]: r for r in ids.status()}[active["identity"]]
    # The operator reaches the API server here (only the pods are cut): it announced it.
    announced = wait_for(lambda: events(ids.dev, ids.namespace, "ServedInFailsafe"),
                         PROGRESS_DEADLINE, 0.5, "a ServedInFailsafe Event")
    assert active["identity"] in announced[0]["message"]
    print(f"failsafe: reported {status['failsafeSeconds']:.1f}s after the cut; "
          f"outage {seconds:g}s; longest write outage during it "
          f"{unavailability(history, 'fault', 'heal'):.2f}s; "
          f"episodes {replica.get('failsafeEpisodes')}, last "
          f"{replica.get('lastFailsafeSeconds', 0):.1f}s; {history.summary()}")
    return history


def test_every_pod_cut_from_the_api_server_keeps_serving(
    ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """The control plane is gone for every pod (a managed cluster's upgrade): the active
    keeps serving on the promises of both standbys, no call fails, no failover, and the
    history stays linearizable."""
    pods = sorted(ids.pods())
    serve_through_an_outage(ids, tmp_path, pods, outage_seconds())


@pytest.fixture
def async_ids(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, healed: None,
    request: pytest.FixtureRequest,
) -> Iterator[IdServerUnderTest]:
    namespace = namespace_for(request.node.name)
    server = IdServerUnderTest.create(dev_cluster, namespace, deadline=READY_DEADLINE,
                                      replication={"mode": "Async"})
    yield server
    server.heal()
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_async_every_pod_cut_from_the_api_server_keeps_serving(
    async_ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """The same in Async mode: the in-sync set (the standbys that keep up) is what the Lease
    names, and their promises carry the active."""
    serve_through_an_outage(async_ids, tmp_path, sorted(async_ids.pods()), VARIANT_SECONDS)


def test_a_standby_that_still_reaches_the_api_server_keeps_its_promise(
    ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """The active and one standby are cut off; the other standby sees the Lease expire
    through its working API connection but has promised: it never takes the Lease."""
    active = ids.wait_converged(CONVERGE_DEADLINE)["identity"]
    standby = sorted(pod for pod in ids.pods() if pod != active)[0]
    serve_through_an_outage(ids, tmp_path, [active, standby], VARIANT_SECONDS)


def test_losing_a_standby_during_the_outage_stops_writes_within_the_renew_deadline(
    ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """The active and one standby are cut from the API server, the active serves in
    failsafe; then the other standby (which reaches the API server) is partitioned from the
    active: the active's writes stop within the renew deadline of the partition, and the
    standby takes the Lease only after its promise ran out, so two terms never overlap."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = active["identity"]
    cut_standby, lost = sorted(pod for pod in ids.pods() if pod != old)
    with LoadRecorder(ids.addresses, clients=4, call_timeout=5.0) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        cut_from_the_api_server(ids, [old, cut_standby])
        load.mark("cut")
        wait_for(lambda: in_failsafe(ids, old), 3 * RENEW_DEADLINE + 10, 0.5,
                 "the active to report failsafe")
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("partition")
        ids.fault("partition", old, lost)
        load.mark("partitioned")
        new = ids.wait_new_active(active["epoch"], 30 + 2 * VARIANT_SECONDS, not_pod=old)
        assert new["identity"] == lost  # the only pod that reaches the API server
        load.mark("heal")
        ids.heal()
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)  # single writer per instant, terms do not overlap
    partitioned_at = history.marker("partitioned").at
    old_term = [op for op in history.ok() if op.epoch == active["epoch"]]
    assert old_term
    last_old = max(op.completed_at for op in old_term)
    assert last_old < partitioned_at + RENEW_DEADLINE + SLACK
    later = [op for op in history.ok() if (op.epoch or 0) > active["epoch"]]
    assert not later or min(op.completed_at for op in later) > last_old
    print(f"writes of the old term stopped {last_old - partitioned_at:.2f}s after the "
          f"partition (renew deadline {RENEW_DEADLINE:g}s); the new active "
          f"{new['identity']} at epoch {new['epoch']}; {history.summary()}")
