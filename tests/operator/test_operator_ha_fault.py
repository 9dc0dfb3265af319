"""Operator HA's safety rule under a real network fault: a leader that can no longer renew its
Lease stops acting (exits) *before* the standby may take the Lease, so two operators never act
at once. The leader runs as a uid of its own whose packets to the API server are dropped
(nftables, `FaultInjector.cut_client_from_apiserver`); the standby runs as root.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from gencluster_dev.network.faults import UID_BASE, FaultInjector
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess
from gencluster_testing.waiting import wait_for

from tests.operator.test_operator_ha import ELECTION, leader_metric, leading, lease_holder

pytestmark = pytest.mark.fault

DEADLINE = 60.0


@pytest.fixture
def injector(dev_cluster: DevClusterProcess) -> Iterator[FaultInjector]:
    faults = FaultInjector(dev_cluster.dir)
    try:
        yield faults
    finally:
        faults.heal()


def test_a_leader_cut_from_the_api_server_exits_before_the_standby_takes_over(
    dev_cluster: DevClusterProcess, injector: FaultInjector
) -> None:
    uid = UID_BASE - 100 - int(dev_cluster.instance["slot"])
    # As the local kubelet runs pods: another uid, CAP_DAC_READ_SEARCH to read the venv, and
    # USER set (kopf names itself after the login name, which a bare uid does not have).
    setpriv = (shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
               "--clear-groups", "--inh-caps=+dac_read_search",
               "--ambient-caps=+dac_read_search", "--", "env", "USER=gencluster-test")
    leader = OperatorProcess(dev_cluster, extra=ELECTION, prefix=setpriv)
    started = [leader]
    try:
        wait_for(lambda: leading([leader]), DEADLINE, message="the first operator leading")
        standby = OperatorProcess(dev_cluster, extra=ELECTION)
        started.append(standby)
        wait_for(lambda: leader_metric(standby) is not None, DEADLINE,
                 message="the standby's metrics")
        leader_id = leader_metric(leader)
        assert leader_id is not None and lease_holder(dev_cluster) == leader_id[0]

        injector.cut_client_from_apiserver(uid)
        cut_at = time.monotonic()
        exited = wait_for(lambda: leader.process.poll() is not None or None, DEADLINE,
                          interval=0.05, message="the cut-off leader to stop")
        exited_at = time.monotonic()
        assert exited
        assert leader.process.returncode == 1
        assert "lost the leadership" in leader.output()
        # The standby may take the Lease only a lease duration after it last changed; the
        # leader stopped a renew deadline after its last renewal, so it was gone first.
        current = leader_metric(standby)
        assert current is not None and current[1] is False, "standby led while leader acted"
        wait_for(lambda: leading([standby]), DEADLINE,
                 message=lambda: f"the standby leading\n{standby.output()[-2000:]}")
        led_at = time.monotonic()
        print(f"\nleader stopped {exited_at - cut_at:.1f} s after the cut, the standby led "
              f"{led_at - cut_at:.1f} s after it (renew deadline 10 s, lease 15 s)")
        assert exited_at < led_at
    finally:
        injector.heal()
        for operator in started:
            operator.stop()
