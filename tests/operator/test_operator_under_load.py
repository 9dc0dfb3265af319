"""End to end under continuous client load through the client Service: a rolling update of
`args` and a SIGKILL of the active. No call may fail and no acknowledged `next_value` may be
lost (every value the clients saw is greater than the one before: Sync replication means a
new active continues from the last acknowledged value)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gencluster.client import Client
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    cluster_client,
    events,
    get_json,
    kill_active_and_wait,
    serving,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "id-server"
DEADLINE = 60.0


class Load:
    """One thread calling `next_value` back to back through the client Service."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.values: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.values.append(self.client.call("next_value"))
            except Exception as error:  # every failure counts, whatever it is
                self.failures.append(repr(error))

    def answered(self, more_than: int) -> bool:
        return len(self.values) > more_than

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(40.0)
        self.client.close()


@pytest.fixture
def load(dev_cluster: DevClusterProcess, id_server: dict[str, Any]) -> Iterator[Load]:
    namespace = id_server["metadata"]["namespace"]
    service = get_json(dev_cluster, "service", NAME, "-n", namespace)
    running = Load(cluster_client(
        dev_cluster, namespace, NAME,
        f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}", timeout=30.0))
    try:
        wait_for(lambda: running.answered(20), DEADLINE, message="calls through the Service")
        yield running
    finally:
        running.stop()


def assert_nothing_lost(load: Load) -> None:
    load.stop()
    assert load.failures == []
    assert all(a < b for a, b in zip(load.values, load.values[1:], strict=False)), load.values


def pods(cluster: DevClusterProcess, namespace: str) -> dict[str, tuple[str, str]]:
    """Pod name -> (uid, template hash)."""
    listing = get_json(cluster, "pods", "-n", namespace, "-l", f"gencluster.io/cluster={NAME}")
    return {
        p["metadata"]["name"]: (
            p["metadata"]["uid"], p["metadata"]["annotations"]["gencluster.io/template-hash"]
        )
        for p in listing["items"] if not p["metadata"].get("deletionTimestamp")
    }


def test_rolling_update_of_args_fails_no_call(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any], load: Load
) -> None:
    namespace = id_server["metadata"]["namespace"]
    before = pods(dev_cluster, namespace)
    (old_hash,) = {template for _, template in before.values()}
    dev_cluster.kubectl("patch", "csrv", NAME, "-n", namespace, "--type=merge",
                        "-p", '{"spec": {"args": {"start": 1000000000}}}')

    def rolled() -> dict[str, Any] | None:
        now = pods(dev_cluster, namespace)
        replaced = len(now) == 3 and all(
            uid != before[name][0] and template != old_hash
            for name, (uid, template) in now.items()
        )
        return serving(dev_cluster, namespace, NAME) if replaced else None

    calls_before = len(load.values)
    after = wait_for(rolled, DEADLINE, message="every pod replaced, serving again")["status"]
    wait_for(lambda: load.answered(calls_before + 20), DEADLINE, message="calls after the rollout")
    assert_nothing_lost(load)
    assert load.values[-1] < 1_000_000_000, "a changed args never re-initialises the state"
    assert after["lastFailoverReason"] == "RollingUpdate"
    assert after["epoch"] > id_server["status"]["epoch"]
    assert len(events(dev_cluster, namespace, "RollingUpdate")) == 3
    assert events(dev_cluster, namespace, "SwitchoverCompleted")
    assert not events(dev_cluster, namespace, "FailoverStarted")


def test_killed_active_loses_no_acknowledged_call(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any], load: Load
) -> None:
    namespace = id_server["metadata"]["namespace"]
    kill_active_and_wait(dev_cluster, namespace, NAME, id_server["status"], DEADLINE,
                         "a new active")
    calls_before = len(load.values)
    wait_for(lambda: load.answered(calls_before + 20), DEADLINE, message="calls after failover")
    assert_nothing_lost(load)
    assert events(dev_cluster, namespace, "FailoverStarted")
