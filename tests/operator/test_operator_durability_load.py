"""Durable state (#11) under concurrent load, with the operator: a persistent Sync id-server
loses every pod at once while six clients call `next_value` through the client Service, by
SIGKILL of all three pods within 100 ms, by `kubectl delete pods --all --grace-period=0
--force`, and both again with the operator stopped. Each time every acknowledged id stays
unique and the cluster resumes above the largest acknowledged id.

The clients go through the client Service (`status.loadBalancer.ingress`), as a user outside
the pod network does: a forced delete re-creates the pods with new addresses, and with the
operator stopped the Service still follows the active, which labels its own pod."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from gencluster import Client, ClientTls
from gencluster_dev.network.faults import FaultInjector
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    client_service_address,
    cluster_tls,
    create_namespace,
    get_json,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import Load

pytestmark = pytest.mark.integration

NAME = "id-server"
NAMESPACE = "durable-load"
DEADLINE = 120.0
CLIENTS = 6
# Long enough for a whole-cluster restart (the kubelet's back-off, the Lease's expiry, the
# recovery probe's wait for unreachable members): a call that gives up is a failed call.
CALL_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def operator_slot(dev_cluster: DevClusterProcess) -> Iterator[list[OperatorProcess]]:
    """The module's operator, replaceable: a test stops it and starts a new one."""
    slot = [OperatorProcess(dev_cluster)]
    yield slot
    slot[0].stop()


@pytest.fixture(scope="module")
def service_address(
    dev_cluster: DevClusterProcess, operator_slot: list[OperatorProcess]
) -> str:
    """A persistent id-server (3 replicas, Sync, minSyncStandbys 1) serving in NAMESPACE; its
    client Service's address."""
    manifest = yaml.safe_load(ID_SERVER.read_text())
    manifest["spec"]["persistence"] = {"enabled": True, "size": "64Mi"}
    create_namespace(dev_cluster, NAMESPACE)
    dev_cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(manifest))
    ready(dev_cluster, operator_slot[0])

    return client_service_address(dev_cluster, NAMESPACE, NAME, DEADLINE)


def ready(dev_cluster: DevClusterProcess, operator: OperatorProcess) -> dict[str, Any]:
    return wait_for(lambda: serving(dev_cluster, NAMESPACE, NAME), DEADLINE,
                    message=lambda: f"id-server Ready\n{operator.output()[-3000:]}")


def kill_every_pod(dev_cluster: DevClusterProcess) -> float:
    """SIGKILL every pod's processes back to back; returns how long that took."""
    faults = FaultInjector(dev_cluster.dir)
    pods = pod_names(dev_cluster, NAMESPACE, NAME)
    assert len(pods) == 3, pods
    started = time.monotonic()
    for pod in pods:
        faults.kill(f"{NAMESPACE}/{pod}")
    return time.monotonic() - started


def force_delete_every_pod(dev_cluster: DevClusterProcess) -> None:
    dev_cluster.kubectl("delete", "pods", "--all", "-n", NAMESPACE, "--grace-period=0",
                        "--force", "--wait=false")


def survive(address: str, tls: ClientTls | None, fault: Any,
            recover: Any = None) -> tuple[list[int], int]:
    """Run `fault` under load, then `recover` (if any) while the clients keep retrying; return
    every value acknowledged and the value a new call gets after the load stopped."""
    with Client(address, timeout=CALL_TIMEOUT, attempt_timeout=1.0, tls=tls) as probe:
        before = probe.call("current")
        with Load(address, CLIENTS, call_timeout=CALL_TIMEOUT, attempt_timeout=1.0,
                  tls=tls) as load:
            load.wait_for_more(200, DEADLINE)
            fault()
            if recover is not None:
                recover()
            # Every client is answered again: the cluster resumed for all of them.
            load.wait_for_more(200 + CLIENTS, DEADLINE)
        acknowledged = list(load.values)
        assert not load.failures, load.failures
        assert len(acknowledged) == len(set(acknowledged)), "an id was handed out twice"
        assert min(acknowledged) > before
        return acknowledged, probe.call("next_value")


def test_sigkill_of_every_pod_within_100ms_under_load(
    dev_cluster: DevClusterProcess, operator_slot: list[OperatorProcess], service_address: str,
) -> None:
    spreads: list[float] = []
    acknowledged, after = survive(service_address, cluster_tls(dev_cluster, NAMESPACE, NAME),
                                  lambda: spreads.append(kill_every_pod(dev_cluster)))
    assert spreads[0] < 0.1, f"the kills took {spreads[0]:.3f}s"
    assert after > max(acknowledged), (
        f"resumed at {after}, but {max(acknowledged)} was acknowledged before the crash")
    ready(dev_cluster, operator_slot[0])


def test_forced_delete_of_every_pod_under_load(
    dev_cluster: DevClusterProcess, operator_slot: list[OperatorProcess], service_address: str,
) -> None:
    uids = {get_json(dev_cluster, "pod", pod, "-n", NAMESPACE)["metadata"]["uid"]
            for pod in pod_names(dev_cluster, NAMESPACE, NAME)}
    acknowledged, after = survive(service_address, cluster_tls(dev_cluster, NAMESPACE, NAME),
                                  lambda: force_delete_every_pod(dev_cluster))
    assert after > max(acknowledged)
    ready(dev_cluster, operator_slot[0])
    now = {get_json(dev_cluster, "pod", pod, "-n", NAMESPACE)["metadata"]["uid"]
           for pod in pod_names(dev_cluster, NAMESPACE, NAME)}
    assert not uids & now, "every pod was re-created, on its old claim"


def test_every_pod_lost_while_the_operator_is_stopped(
    dev_cluster: DevClusterProcess, operator_slot: list[OperatorProcess], service_address: str,
) -> None:
    """Stopped before the kill: the SIGKILLed pods restart in place (the kubelet) and recover
    by the Lease rules alone; force-deleted pods stay gone until an operator runs again, and
    the calls made meanwhile are answered once it does."""
    ready(dev_cluster, operator_slot[0])
    operator_slot[0].stop()

    spreads: list[float] = []
    acknowledged, after = survive(service_address, cluster_tls(dev_cluster, NAMESPACE, NAME),
                                  lambda: spreads.append(kill_every_pod(dev_cluster)))
    assert spreads[0] < 0.1, f"the kills took {spreads[0]:.3f}s"
    assert after > max(acknowledged), "resumed without the operator, above every ack"

    def restart_operator() -> None:
        wait_for(lambda: not pod_names(dev_cluster, NAMESPACE, NAME) or None, DEADLINE, 0.1,
                 "every pod gone, none re-created while the operator is stopped")
        operator_slot[0] = OperatorProcess(dev_cluster)

    acknowledged, after = survive(service_address, cluster_tls(dev_cluster, NAMESPACE, NAME),
                                  lambda: force_delete_every_pod(dev_cluster),
                                  restart_operator)
    assert after > max(acknowledged), "resumed after the operator came back, above every ack"
    ready(dev_cluster, operator_slot[0])
