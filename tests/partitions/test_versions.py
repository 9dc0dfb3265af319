"""End to end: a server class's version changing through a rolling update, with the operator
on the local control plane (docs/partitions.md, "Versions across merge and upgrade").

`tests.partitions.versioned_servers`: version 1 keeps the counter in an int, version 2 in a
dict, and version 2's handlers and `merge` raise on an int, so a state that skipped
`code_change` (a join, a merge) cannot pass unnoticed. The cluster is the partitions suite's
id_server (3 replicas, `partitionPolicy: Available`, Async, short leases).

- A rolling update from version 1 to 2 under load through the client Service: no call fails,
  the values stay increasing, and every replica ends with the converted state (GetState).
- A split during that rolling update (the v1 active isolated once a v2 standby is in sync):
  both sides serve, the heal merges (the loser's v1 state through `code_change` before the
  v2 `merge` on every v2 replica), the roll completes, and the counter continues above every
  value either side handed out.
- A rollback from version 2 to 1: the first v1 pod refuses the v2 state; the resource says
  Degraded=True, reason DowngradeRefused, with an Event, and the active keeps serving.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gencluster.client import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    condition,
    events,
    get_json,
    namespace_for,
)
from gencluster_testing.partitions.available_run import DEADLINE, POLL, AvailableIdServer
from gencluster_testing.partitions.cluster import PORT
from gencluster_testing.partitions.history import LoadRecorder
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.fault

PROJECT = Path(__file__).resolve().parents[2]
V1 = "tests.partitions.versioned_servers:VersionedIdServerV1"
V2 = "tests.partitions.versioned_servers:VersionedIdServerV2"
ROLL_DEADLINE = 180.0
"""A rolling update of three pods on a loaded two-core box: each pod starts, joins by
snapshot and gets in sync before the next goes."""


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return namespace_for(request.node.name)


@pytest.fixture
def cleanup(dev_cluster: DevClusterProcess, namespace: str) -> Iterator[None]:
    yield
    AvailableIdServer(dev_cluster, namespace).heal()
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def start(dev: DevClusterProcess, namespace: str, server: str) -> AvailableIdServer:
    return AvailableIdServer.start(dev, namespace, server=server,
                                   env={"PYTHONPATH": str(PROJECT)})


def switch_server(server: AvailableIdServer, spec_server: str) -> None:
    server.dev.kubectl("patch", "csrv", server.name, "-n", server.namespace, "--type=merge",
                       "-p", json.dumps({"spec": {"server": spec_server}}))


class ServiceLoad:
    """Clients calling `next_value` back to back through the client Service with the client
    library's retries (`Client.call`), recording every value and every failure."""

    def __init__(self, address: str, clients: int = 2) -> None:
        self.address = address
        self.values: list[list[int]] = [[] for _ in range(clients)]
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        with Client(self.address, timeout=30.0) as client:
            while not self._stop.is_set():
                try:
                    self.values[index].append(client.call("next_value"))
                except Exception as error:  # every failure counts, whatever it is
                    self.failures.append(repr(error))

    def count(self) -> int:
        return sum(len(values) for values in self.values)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40.0)


def service_address(server: AvailableIdServer) -> str:
    service = get_json(server.dev, "service", server.name, "-n", server.namespace)
    return f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def template_hashes(server: AvailableIdServer) -> dict[str, str]:
    return {name: pod["metadata"]["annotations"]["gencluster.io/template-hash"]
            for name, pod in server.pods().items()}


def rolled(server: AvailableIdServer, old_hash: str) -> bool:
    """Every pod replaced by one of the new spec, and every one at version 2."""
    hashes = template_hashes(server)
    if len(hashes) != 3 or old_hash in hashes.values():
        return False
    statuses = server.status()  # `gencluster status`: pods that moved are found again
    return len(statuses) == 3 and all(s.get("serverVersion") == 2 for s in statuses)


def reconcile_paused(server: AvailableIdServer, paused: bool) -> None:
    annotation = "gencluster.io/reconcile-paused" + ("=true" if paused else "-")
    server.dev.kubectl("annotate", "csrv", server.name, "-n", server.namespace, annotation,
                       "--overwrite")


def fresh(server: AvailableIdServer) -> AvailableIdServer:
    """The same cluster without the cached pod addresses: replaced pods have new IPs."""
    return AvailableIdServer(server.dev, server.namespace)


def converted_everywhere(server: AvailableIdServer) -> dict[str, Any]:
    """Wait until every pod holds the same state, and return it: a version 2 dict."""
    server = fresh(server)
    server.wait_settled(DEADLINE)
    states = {pod: server.state(pod) for pod in server.pod_names()}
    for pod, state in states.items():
        assert state is not None, pod
        assert isinstance(state[2], dict) and state[2].get("format") == 2, (pod, state)
    (state,) = {json.dumps(s[2], sort_keys=True) for s in states.values() if s is not None}
    return dict(json.loads(state))


def test_a_rolling_update_to_a_new_state_format_converts_every_replica_under_load(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str, cleanup: None,
) -> None:
    server = start(dev_cluster, namespace, V1)
    (old_hash,) = set(template_hashes(server).values())
    assert isinstance(server.state(server.pod_names()[0])[2], int)  # type: ignore[index]
    load = ServiceLoad(service_address(server))
    try:
        wait_for(lambda: load.count() > 20, DEADLINE, message="calls through the Service")
        switch_server(server, V2)
        wait_for(lambda: rolled(server, old_hash), ROLL_DEADLINE, interval=POLL,
                 message=lambda: f"every pod at version 2\n{server.diagnostics()}")
        calls = load.count()
        wait_for(lambda: load.count() > calls + 20, DEADLINE, message="calls after the roll")
    finally:
        load.stop()
    assert load.failures == []
    for values in load.values:
        assert all(a < b for a, b in itertools.pairwise(values)), values
    state = converted_everywhere(server)
    assert state["last"] == max(max(values) for values in load.values)
    assert events(dev_cluster, namespace, "SwitchoverCompleted")
    assert not events(dev_cluster, namespace, "DowngradeRefused")
    assert condition(server.resource(), "Degraded").get("reason") != "DowngradeRefused"


def _v2_standby_in_sync(server: AvailableIdServer) -> tuple[str, int] | None:
    """(the v1 active, its epoch) once a version 2 standby is in its in-sync set."""
    replicas = {r["identity"]: r for r in server.status() if "error" not in r}
    for pod, status in replicas.items():
        if status["role"] != "active":
            continue
        if status["serverVersion"] != 1:
            raise AssertionError(f"the roll switched over before the split: {pod} runs v2")
        in_sync = {s["identity"] for s in status["standbys"] if s["inSync"]}
        for standby in in_sync:
            other = replicas.get(standby)
            if other is not None and other["serverVersion"] == 2:
                return pod, int(status["epoch"])
    return None


def _other_active(server: AvailableIdServer, loser: str, loser_epoch: int) -> str | None:
    """A pod other than `loser` active above its epoch (Admin.Status straight to the pods,
    read afresh: the roll may replace a standby meanwhile)."""
    current = fresh(server)
    for pod in current.pod_names():
        if pod == loser:
            continue
        status = current.admin_status(pod)
        if status is not None and status.role == pb.ROLE_ACTIVE and status.epoch > loser_epoch:
            return pod
    return None


def _evidence(server: AvailableIdServer, operator: OperatorProcess) -> str:
    current = fresh(server)
    statuses = {pod: current.admin_status(pod) for pod in current.pod_names()}
    lines = [f"{pod}: {s.role if s else None} epoch {s.epoch if s else None} "
             f"v{s.server_version if s else None} {s.downgrade_refused if s else ''}"
             for pod, s in statuses.items()]
    resource_status = json.dumps(current.resource().get("status"), indent=1)
    logs = "\n".join(f"--- {pod}\n{current.pod_log(pod)[-2500:]}" for pod in statuses)
    return "\n".join([*lines, resource_status, logs, operator.output()[-4000:]])


def test_a_split_during_the_rolling_update_merges_through_code_change(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str, cleanup: None,
) -> None:
    server = start(dev_cluster, namespace, V1)
    (old_hash,) = set(template_hashes(server).values())
    switch_server(server, V2)
    wait_for(lambda: _v2_standby_in_sync(server), ROLL_DEADLINE, interval=POLL,
             message="a version 2 standby in sync")
    # Hold the roll here (the status still follows) so that the v1 active is still the
    # active when it is isolated: on an idle box the next steps take a second or two.
    reconcile_paused(server, True)
    loser, loser_epoch = wait_for(lambda: _v2_standby_in_sync(server), DEADLINE,
                                  interval=POLL, message="a version 2 standby in sync")
    server = fresh(server)
    isolated = LoadRecorder(groups={"isolated": [f"{server.ip(loser)}:{PORT}"]}, clients=2)
    others = LoadRecorder(
        groups={"others": lambda: [a for a in server.addresses()
                                   if not a.startswith(server.ip(loser) + ":")]},
        clients=2)
    with isolated:
        isolated.wait_for_ok_calls(10, DEADLINE)
        server.fault("isolate", loser)
        winner = wait_for(lambda: _other_active(server, loser, loser_epoch), DEADLINE,
                          interval=0.5, message=lambda: _evidence(server, operator))
        with others:
            others.wait_for_ok_calls(10, DEADLINE, epoch_above=loser_epoch)
            isolated.wait_for_ok_calls(10, DEADLINE)
            # A split brain holds every disruptive step (plan rule 2): the roll resumes after
            # the merge.
            reconcile_paused(server, False)
            wait_for(lambda: condition(server.resource(), "SplitBrain").get("status") == "True",
                     DEADLINE, interval=POLL,
                     message=lambda: _evidence(server, operator))
            server.dev.gencluster("dev", "fault", "--dir", str(server.dev.dir), "heal")
            wait_for(lambda: server.merges() >= 1, DEADLINE, interval=POLL,
                     message=lambda: _evidence(server, operator))
            # The winner's own log: the payload carried the loser's version (1).
            logged = f"merging the state of {loser} (epoch {loser_epoch}, server version 1)"
            assert logged in fresh(server).pod_log(winner), _evidence(server, operator)
            others.wait_for_ok_calls(10, DEADLINE, epoch_above=loser_epoch)
        histories = [isolated.stop(), others.stop()]
    handed_out = [op.value for history in histories for op in history.operations
                  if op.ok and isinstance(op.value, int)]
    wait_for(lambda: rolled(server, old_hash), ROLL_DEADLINE, interval=POLL,
             message=lambda: f"the roll completes after the merge\n{server.diagnostics()}")
    state = converted_everywhere(server)
    assert state["last"] >= max(handed_out), (state, max(handed_out))
    assert not events(dev_cluster, namespace, "MergeFailed"), server.diagnostics()
    assert events(dev_cluster, namespace, "StatesMerged")
    merged_into = winner
    with Client(",".join(server.addresses()), timeout=30.0) as client:
        after = client.call("next_value")
    assert after > max(handed_out), (after, max(handed_out), merged_into)


def test_a_rollback_to_an_older_version_is_refused_with_a_condition_and_an_event(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str, cleanup: None,
) -> None:
    server = start(dev_cluster, namespace, V2)
    with Client(",".join(server.addresses()), timeout=30.0) as client:
        for _ in range(5):
            client.call("next_value")
    switch_server(server, V1)

    def refused() -> dict[str, Any] | None:
        degraded = condition(server.resource(), "Degraded")
        return degraded if degraded.get("reason") == "DowngradeRefused" else None

    degraded = wait_for(refused, ROLL_DEADLINE, interval=POLL,
                        message=lambda: f"DowngradeRefused\n{server.diagnostics()}")
    assert degraded["status"] == "True"
    assert "version 2" in degraded["message"] and "version 1" in degraded["message"]
    assert "accepts_downgrade" in degraded["message"]
    (event,) = wait_for(lambda: events(dev_cluster, namespace, "DowngradeRefused"), DEADLINE,
                        interval=POLL, message="a DowngradeRefused Event")
    assert event["type"] == "Warning" and "version 2" in event["message"]
    # The active (version 2) keeps serving its converted state; nothing was downgraded.
    with Client(",".join(server.addresses()), timeout=30.0) as client:
        assert client.call("next_value") == 6
    server = fresh(server)
    statuses = {p: server.admin_status(p) for p in server.pod_names()}
    assert [s.server_version for s in statuses.values()
            if s is not None and s.role == pb.ROLE_ACTIVE] == [2]
    refusing = [s for s in statuses.values() if s is not None and s.downgrade_refused]
    assert refusing and all(s.server_version == 1 for s in refusing)
