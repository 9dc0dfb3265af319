"""Operator HA: two operator processes with `--leader-election` against one control plane.

Exactly one leads (metric `gencluster_operator_leader`, the Lease's holder, a LeaderElection
Event); the standby acts on nothing. SIGKILL the leader while clients call the id-server
through its Service: the standby takes the Lease once it expires by its own clock (the figure is
printed), and a SIGKILL of the server's active after that still fails over with the new
leader's help (its FailoverStarted Event: it cleared the dead active's Lease), losing no
acknowledged call. A SIGTERM ends a standby's wait and makes a leader release the Lease, which
the next candidate takes at its first look.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    cluster_client,
    events,
    free_port,
    get_json,
    kill_active_and_wait,
    start_id_server,
)
from gencluster_testing.waiting import wait_for

from tests.operator.test_operator_under_load import Load, assert_nothing_lost

pytestmark = pytest.mark.integration

NAME = "id-server"
NAMESPACE = "operator-ha"
LEASE_NAMESPACE = "default"
LEASE = "gencluster-operator"
DEADLINE = 60.0
ELECTION = ("--leader-election", "--leader-election-namespace", LEASE_NAMESPACE)
LIVENESS: dict[OperatorProcess, str] = {}
"""Each operator's `--liveness` URL."""
LEADER_SERIES = re.compile(r'^gencluster_operator_leader\{identity="([^"]+)"\} (\S+)$', re.M)


def leader_metric(operator: OperatorProcess) -> tuple[str, bool] | None:
    """(identity, leads) from the operator's /metrics; None while it does not answer."""
    try:
        text = operator.metrics()
    except OSError:
        return None
    found = LEADER_SERIES.search(text)
    return (found.group(1), float(found.group(2)) == 1.0) if found else None


def leading(operators: list[OperatorProcess]) -> OperatorProcess | None:
    """The one operator whose metric says it leads, when exactly one does and the other (if
    alive) says it waits."""
    reports = [(op, leader_metric(op)) for op in operators]
    if any(report is None for _, report in reports):
        return None
    leads = [op for op, report in reports if report and report[1]]
    return leads[0] if len(leads) == 1 else None


def lease_holder(cluster: DevClusterProcess) -> str:
    lease = get_json(cluster, "lease", LEASE, "-n", LEASE_NAMESPACE)
    return lease["spec"].get("holderIdentity") or ""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def operators(dev_cluster: DevClusterProcess) -> Iterator[list[OperatorProcess]]:
    """Two operators with leader election, each with a liveness URL (`LIVENESS`): the
    standby answers it itself, kopf takes the port over once it leads."""
    started: list[OperatorProcess] = []
    try:
        for _ in range(2):
            liveness = f"http://127.0.0.1:{free_port()}/healthz"
            operator = OperatorProcess(dev_cluster, extra=(*ELECTION, "--liveness", liveness))
            LIVENESS[operator] = liveness
            started.append(operator)
        yield started
    finally:
        for operator in started:
            operator.stop()


def test_the_standby_leads_after_a_sigkill_and_failover_assist_resumes(
    dev_cluster: DevClusterProcess, operators: list[OperatorProcess]
) -> None:
    first = wait_for(lambda: leading(operators), DEADLINE, message="one operator leading")
    standby = next(op for op in operators if op is not first)
    first_id = leader_metric(first)
    standby_id = leader_metric(standby)
    assert first_id is not None and standby_id is not None
    assert standby_id[1] is False
    assert lease_holder(dev_cluster) == first_id[0]
    assert "waiting to lead" in standby.output()
    assert "kopf" not in standby.output(), "a standby runs nothing of kopf"
    wait_for(lambda: healthy(LIVENESS[standby]), DEADLINE, message="the standby's /healthz")
    elected = get_json(dev_cluster, "events", "-n", LEASE_NAMESPACE,
                       "--field-selector", "reason=LeaderElection")["items"]
    assert any(e["message"].startswith(f"{first_id[0]} became leader") for e in elected)

    server = start_id_server(dev_cluster, first, NAMESPACE, DEADLINE)
    service = get_json(dev_cluster, "service", NAME, "-n", NAMESPACE)
    load = Load(cluster_client(
        dev_cluster, NAMESPACE, NAME,
        f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}", timeout=30.0))
    try:
        wait_for(lambda: load.answered(20), DEADLINE, message="calls through the Service")
        killed_at = time.monotonic()
        first.process.kill()
        first.process.wait()
        wait_for(lambda: leading([standby]), DEADLINE,
                 message=lambda: f"the standby leading\n{standby.output()[-3000:]}")
        took = time.monotonic() - killed_at
        print(f"\nstandby operator leads {took:.1f} s after the leader's SIGKILL "
              "(lease 15 s, retry 2 s)")
        assert lease_holder(dev_cluster) == standby_id[0]
        wait_for(lambda: healthy(LIVENESS[standby]), DEADLINE,
                 message=lambda: f"kopf's /healthz on the new leader\n{standby.output()[-2000:]}")

        assisted_before = len(events(dev_cluster, NAMESPACE, "FailoverStarted"))
        calls_before = len(load.values)
        kill_active_and_wait(dev_cluster, NAMESPACE, NAME, server["status"], DEADLINE,
                             "a new active after the operator's takeover")
        wait_for(lambda: load.answered(calls_before + 20), DEADLINE,
                 message="calls after the failover")
        assert_nothing_lost(load)
        assert len(events(dev_cluster, NAMESPACE, "FailoverStarted")) > assisted_before, \
            "the new leader cleared the dead active's Lease"
    finally:
        load.stop()


def test_a_stopped_standby_and_a_stopped_leader_exit_cleanly_and_free_the_lease(
    dev_cluster: DevClusterProcess, operators: list[OperatorProcess]
) -> None:
    first = wait_for(lambda: leading(operators), DEADLINE, message="one operator leading")
    standby = next(op for op in operators if op is not first)
    assert standby.stop() == 0, "SIGTERM ends the wait"
    assert "became leader" not in standby.output()
    assert first.stop() == 0
    assert "released the Lease" in first.output()
    assert lease_holder(dev_cluster) == ""
    newcomer = OperatorProcess(dev_cluster, extra=ELECTION)
    try:
        wait_for(lambda: leading([newcomer]), DEADLINE, message="a new operator leading")
        identity = leader_metric(newcomer)
        assert identity is not None and lease_holder(dev_cluster) == identity[0]
    finally:
        assert newcomer.stop() == 0
