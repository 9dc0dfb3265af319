"""End to end: `partitionPolicy: Available` through real faults, with the operator.

An id_server (3 replicas, Async, leases 4/3/1 s) on the local control plane; the active is
cut off (nftables rules keyed on its uid), cut from the API server only, or paused with
SIGSTOP. Clients pinned to it and clients pinned to the other pods keep calling. The
operator reaches every pod even during the split (on this control plane it always does),
so these tests pin the rule that matters: it reports the split at once but merges only once
the loser shows it reaches the API server again (`assessment.reconnected`); until then the
loser serves its side. After the heal: one merge, one active, every pod at the merged state,
and the counter continues above every value either side handed out.

Each test checks that its fault took effect (a connection attempt as the pod's uid, the
pod's own Lease view, the process state), since a fault that silently did nothing would
make every assertion after it vacuous.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from gencluster.client import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster_operator.names import metrics_port_for
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess, condition, namespace_for
from gencluster_testing.partitions.available_run import (
    CALLS_PER_PHASE,
    DEADLINE,
    ISOLATED,
    OTHERS,
    POLL,
    RETRY_PERIOD,
    AvailableIdServer,
    SplitRun,
    run_split,
)
from gencluster_testing.partitions.checkers import counter_linearizable, no_lost_acknowledged
from gencluster_testing.partitions.cluster import PORT
from gencluster_testing.partitions.history import LoadRecorder
from gencluster_testing.partitions.merge_checks import (
    all_available_checks,
    each_term_is_a_counter,
)
from gencluster_testing.waiting import wait_for

from tests.partitions.merge_servers import SWITCH_VARIABLE

pytestmark = pytest.mark.fault

PROJECT = Path(__file__).resolve().parents[2]
RETRIED_REQUEST = "applied-on-the-loser-during-the-split"
OPERATOR_PASSES_WHILE_SPLIT = 3
"""Operator passes, after it recorded the split, during which it must not merge a loser that
is still cut off (passes come every Lease renewal while split, so this takes seconds)."""


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return namespace_for(request.node.name)


@pytest.fixture
def heal_afterwards(dev_cluster: DevClusterProcess, namespace: str) -> Iterator[None]:
    """Whatever happens, the instance's rules are removed and the test's pods resumed, and the
    namespace goes (its pods would otherwise keep running beside the next test's)."""
    yield
    AvailableIdServer(dev_cluster, namespace).heal()
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def server(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
    heal_afterwards: None,
) -> AvailableIdServer:
    return AvailableIdServer.start(dev_cluster, namespace)


# -- what every split must show -----------------------------------------------------------------


def reconcile_passes(operator: OperatorProcess, namespace: str) -> int:
    """Reconcile passes the operator made for `namespace` (its Prometheus counter)."""
    pattern = re.compile(
        r'^gencluster_operator_reconciles_total\{([^}]*)\}\s+([0-9.e+]+)$', re.MULTILINE)
    return int(sum(float(value) for labels, value in pattern.findall(operator.metrics())
                   if f'namespace="{namespace}"' in labels))


def not_merged_while_split(
    server: AvailableIdServer, operator: OperatorProcess, loser: str, loser_epoch: int
) -> dict[str, Any]:
    """The operator reports the split (condition and one Event) and then passes over the
    cluster several times without merging: the loser still reports active at its own epoch
    and still answers its clients."""
    split = wait_for(lambda: (c := server.split_condition()).get("status") == "True" and c,
                     DEADLINE, interval=POLL,
                     message=lambda: f"SplitBrain=True\n{operator.output()[-3000:]}")
    assert split["reason"] == "SplitBrainDetected", split
    assert f"{loser} keeps serving its side" in split["message"], split
    passes = reconcile_passes(operator, server.namespace)
    wait_for(lambda: reconcile_passes(operator, server.namespace)
             >= passes + OPERATOR_PASSES_WHILE_SPLIT, DEADLINE, interval=POLL,
             message="more operator passes while split")
    assert server.merges() == 0
    assert server.events("StatesMerged") == []
    (detected,) = server.events("SplitBrainDetected")
    assert detected["type"] == "Warning" and loser in detected["message"], detected
    status = server.admin_status(loser)
    assert status is not None and (status.role, status.epoch) == (pb.ROLE_ACTIVE, loser_epoch)
    with Client(f"{server.ip(loser)}:{PORT}", timeout=5) as client:
        answered = client.call_with_details("next_value")
    assert answered.epoch == loser_epoch  # it serves its side, with its own term
    return {"split_condition": split}


def lease_reads_fail(server: AvailableIdServer, loser: str) -> pb.StatusReply:
    """Evidence from the loser's own Status that it cannot read the Lease: its last successful
    read ages past two retry periods (and named itself, from before the cut)."""
    def stale() -> pb.StatusReply | None:
        status = server.admin_status(loser)
        fresh_limit = 2 * RETRY_PERIOD
        if status is not None and status.lease_read_age_seconds > fresh_limit:
            return status
        return None

    status = wait_for(stale, DEADLINE, interval=POLL, message=f"{loser}'s Lease reads fail")
    assert status.lease_holder == loser, status
    return status


def assert_merged(server: AvailableIdServer, run: SplitRun, *, groups: list[str]) -> None:
    """After the heal: one merge recorded as such, one active (the winner), every pod at the
    same state, and a history that is exactly what Available promises."""
    violations = all_available_checks(run.history, groups=groups)
    assert not violations, "\n".join(violations) + "\n" + run.history.summary()
    resource = server.resource()
    status = resource["status"]
    assert status["merges"] == 1
    split = condition(resource, "SplitBrain")
    assert (split["status"], split["reason"]) == ("False", "StatesMerged"), split
    assert f"merged {run.loser} (epoch {run.loser_epoch})" in split["message"], split
    assert f"into {run.winner} (epoch {run.winner_epoch})" in split["message"], split
    (detected,) = server.events("SplitBrainDetected")
    assert run.loser in detected["message"] and run.winner in detected["message"]
    (merged,) = server.events("StatesMerged")
    assert (merged["type"], merged["message"]) == ("Normal", split["message"])
    settled = server.settled()
    assert settled is not None, server.diagnostics()
    actives = [pod for pod, s in settled.items() if s.role == pb.ROLE_ACTIVE]
    assert actives == [run.winner] and status["activePod"] == run.winner
    epoch, applied, final = server.state(run.winner) or (0, 0, None)
    assert all(server.state(pod) == (epoch, applied, final) for pod in settled)
    handed_out = [op.value for op in run.history.ok()]
    assert final >= max(handed_out)


# -- scenarios ----------------------------------------------------------------------------------


def test_isolated_active_serves_its_side_and_is_merged_after_the_heal(
    server: AvailableIdServer, operator: OperatorProcess
) -> None:
    def while_split(server: AvailableIdServer, loser: str, winner: str) -> dict[str, Any]:
        api_host, api_port = server.api_server()
        assert server.probe_as(loser, api_host, api_port) == "timeout"
        assert server.probe_as(loser, server.ip(winner), PORT) == "timeout"
        assert server.probe_as(winner, server.ip(loser), PORT) == "timeout"
        lease_reads_fail(server, loser)
        observed = not_merged_while_split(server, operator, loser, loser_epoch(server, loser))
        # A call the loser applies during the split, whose client never learns the outcome
        # and retries it after the merge on the winner (below), with the same request id.
        with Client(f"{server.ip(loser)}:{PORT}", timeout=5) as client:
            applied = client.call_with_details("next_value", request_id=RETRIED_REQUEST)
        return observed | {"applied_on_loser": applied}

    run = run_split(server, "isolate", while_split=while_split)
    assert_merged(server, run, groups=[ISOLATED, OTHERS])
    # The merge carried the loser's reply table: the retry gets the loser's outcome, marked
    # as a duplicate, instead of a second application (a new value).
    original = run.during_split["applied_on_loser"]
    with Client(f"{server.ip(run.winner)}:{PORT}", timeout=10) as client:
        retried = client.call_with_details("next_value", request_id=RETRIED_REQUEST)
    assert (retried.value, retried.duplicate) == (original.value, True), (original, retried)
    assert retried.epoch == run.winner_epoch
    # The demoted loser followed the winner because the operator named it; from then on it
    # must follow whoever holds the Lease. A planned switchover to the third pod (neither
    # the loser nor the winner) converges only if it does.
    third = next(p for p in server.pod_names() if p not in (run.loser, run.winner))
    server.dev.kubectl("annotate", "csrv", server.name, "-n", server.namespace,
                       f"gencluster.io/switchover-to={third}")
    wait_for(lambda: (s := server.admin_status(third)) and s.role == pb.ROLE_ACTIVE,
             DEADLINE, interval=POLL, message=f"{third} active")
    with Client(f"{server.ip(third)}:{PORT}", timeout=10) as client:
        written = client.call("next_value")  # an entry every pod must receive from `third`
    after = server.wait_settled(DEADLINE)
    assert after[third].role == pb.ROLE_ACTIVE and after[run.loser].role == pb.ROLE_STANDBY
    assert server.state(run.loser) == server.state(third) and server.state(third)[2] == written
    print(f"converged {run.convergence_seconds:.2f}s after the heal; {run.history.summary()}")


def test_active_cut_from_the_api_server_keeps_serving_and_is_merged_after_the_heal(
    server: AvailableIdServer, operator: OperatorProcess
) -> None:
    def while_split(server: AvailableIdServer, loser: str, winner: str) -> dict[str, Any]:
        api_host, api_port = server.api_server()
        assert server.probe_as(loser, api_host, api_port) == "timeout"
        assert server.probe_as(loser, server.ip(winner), PORT) == "ok"  # only the API is cut
        lease_reads_fail(server, loser)
        return not_merged_while_split(server, operator, loser, loser_epoch(server, loser))

    run = run_split(server, "cut-apiserver", while_split=while_split)
    assert_merged(server, run, groups=[ISOLATED, OTHERS])


def test_active_paused_past_its_lease_wakes_up_and_is_merged(
    server: AvailableIdServer, operator: OperatorProcess
) -> None:
    """The SIGSTOP case: the paused active cannot answer anyone (so the split is seen only
    once it wakes up); it wakes up holding an old epoch, reads the Lease at once (nothing
    cuts it off), so the operator merges it right away."""
    def while_split(server: AvailableIdServer, loser: str, winner: str) -> dict[str, Any]:
        assert server.process_state(loser) == "T"
        assert server.admin_status(loser) is None  # stopped: it cannot even report
        assert server.merges() == 0
        return {}

    run = run_split(server, "pause", while_split=while_split)
    # The paused side served nobody during the pause: both sides served is not the claim
    # here; every other Available check is.
    assert_merged(server, run, groups=[OTHERS])
    woke = [op for op in run.history.ok() if op.group == ISOLATED
            and op.completed_at >= run.history.marker("heal").at]
    assert all(op.epoch == run.winner_epoch or op.epoch == run.loser_epoch for op in woke)


def test_a_merge_that_raises_changes_neither_side_and_is_retried_until_it_succeeds(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
    heal_afterwards: None, tmp_path: Path,
) -> None:
    switch = tmp_path / "refuse-merge"
    switch.touch()
    server = AvailableIdServer.start(
        dev_cluster, namespace,
        server="tests.partitions.merge_servers:MergeRefusingIdServer",
        env={"PYTHONPATH": str(PROJECT), SWITCH_VARIABLE: str(switch)},
    )
    before_attempts: dict[str, Any] = {}

    def while_split(server: AvailableIdServer, loser: str, winner: str) -> dict[str, Any]:
        lease_reads_fail(server, loser)
        return not_merged_while_split(server, operator, loser, loser_epoch(server, loser))

    def after_heal(server: AvailableIdServer, loser: str, winner: str) -> dict[str, Any]:
        # The loads stopped at the heal: each side's state is now fixed, except by merges.
        before_attempts.update({pod: server.state(pod) for pod in (loser, winner)})
        degraded = wait_for(
            lambda: (c := condition(server.resource(), "Degraded")).get("reason")
            == "MergeFailed" and "(3 in a row)" in c["message"] and c,
            DEADLINE, interval=POLL,
            message=lambda: f"3 failed merges\n{operator.output()[-3000:]}")
        assert f"merge refused while {switch} exists" in degraded["message"], degraded
        assert degraded["status"] == "True"
        failures = sorted(server.events("MergeFailed"), key=lambda e: e["firstTimestamp"])
        assert len(failures) >= 3 and all(e["type"] == "Warning" for e in failures)
        assert "RuntimeError: merge refused" in failures[0]["message"]
        spacing = (event_time(failures[2]) - event_time(failures[0])).total_seconds()
        assert spacing >= 2, "retried with back-off: 1 s, then 2 s (times have whole seconds)"
        assert server.merges() == 0
        # Neither side changed: the loser still active at its epoch with its state, the
        # winner's state the same value (its log holds the failed MERGE entries, which
        # changed nothing), and the loser serves its clients again after each attempt.
        loser_now, winner_now = server.state(loser), server.state(winner)
        # (GetState's epoch is the highest this pod has seen: the loser saw the winner's.)
        assert loser_now is not None and loser_now[1:] == before_attempts[loser][1:]
        assert winner_now is not None and before_attempts[winner] is not None
        assert winner_now[2] == before_attempts[winner][2]
        status = server.admin_status(loser)
        assert status is not None and status.role == pb.ROLE_ACTIVE
        with Client(f"{server.ip(loser)}:{PORT}", timeout=5) as client:
            served = client.call_with_details("next_value")
        assert (served.epoch, served.value) == (status.epoch, loser_now[2] + 1)
        switch.unlink()  # no MERGE entry is in flight: every failed one has been applied
        return {"last_loser_value": served.value, "winner_value": winner_now[2]}

    run = run_split(server, "isolate", while_split=while_split, after_heal=after_heal,
                    load_after_heal=False)
    assert server.merges() == 1
    assert condition(server.resource(), "Degraded")["reason"] != "MergeFailed"
    expected = max(run.during_split["last_loser_value"], run.during_split["winner_value"])
    _, _, merged_value = server.state(run.winner) or (0, 0, None)
    assert merged_value == expected  # merged exactly once: max of the two sides
    with Client(",".join(f"{server.ip(p)}:{PORT}" for p in server.pod_names()),
                timeout=10) as client:
        assert client.call("next_value") == expected + 1
    assert not each_term_is_a_counter(run.history)


def test_default_sync_replication_serves_both_sides_and_degrades_visibly(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
    heal_afterwards: None,
) -> None:
    """Issue #13, "Available means available": the user's manifest names no `replication`
    (so Sync, minSyncStandbys 1). The isolated active cannot get a standby's acknowledgement;
    after the renew deadline it answers without one and says so (its Status, its metric, the
    operator's Degraded condition and a SyncDegraded Event), while the other side elects its
    own active; after the heal and the merge every id is above every id of both sides."""
    server = AvailableIdServer.start(dev_cluster, namespace, default_replication=True)
    assert server.resource()["spec"]["replication"] == {"mode": "Sync"}  # the CRD's default
    settled = server.wait_settled(DEADLINE)
    assert all(s.mode == pb.REPLICATION_MODE_SYNC for s in settled.values())

    def while_split(server: AvailableIdServer, loser: str, winner: str) -> dict[str, Any]:
        api_host, api_port = server.api_server()
        assert server.probe_as(loser, api_host, api_port) == "timeout"
        assert server.probe_as(loser, server.ip(winner), PORT) == "timeout"
        assert server.probe_as(winner, server.ip(loser), PORT) == "timeout"
        lease_reads_fail(server, loser)
        status = wait_for(
            lambda: (s := server.admin_status(loser)) is not None
            and s.HasField("sync_degraded_seconds") and s.unsynced_entries > 0 and s,
            DEADLINE, interval=POLL, message=f"{loser} reports degraded Sync")
        assert status.role == pb.ROLE_ACTIVE
        assert metric(server, loser, "gencluster_runtime_sync_degraded") == 1.0
        assert metric(server, loser, "gencluster_runtime_sync_unsynced_entries") > 0
        winner_status = server.admin_status(winner)
        assert winner_status is not None and not winner_status.HasField("sync_degraded_seconds")
        assert metric(server, winner, "gencluster_runtime_sync_degraded") == 0.0
        degraded = wait_for(
            lambda: (c := condition(server.resource(), "Degraded")).get("reason")
            == "SyncDegraded" and c,
            DEADLINE, interval=POLL,
            message=lambda: f"Degraded=SyncDegraded\n{operator.output()[-3000:]}")
        assert degraded["status"] == "True" and loser in degraded["message"], degraded
        recorded = server.resource()["status"]["syncDegraded"]
        assert [entry["pod"] for entry in recorded] == [loser], recorded
        (event,) = server.events("SyncDegraded")
        assert event["type"] == "Warning" and loser in event["message"], event
        return not_merged_while_split(server, operator, loser, loser_epoch(server, loser))

    run = run_split(server, "isolate", while_split=while_split)
    assert_merged(server, run, groups=[ISOLATED, OTHERS])
    # The isolated side was answered at its own epoch with Sync replication, i.e. in degraded
    # Sync: it had no standby to acknowledge anything.
    split, heal = run.history.marker("split").at, run.history.marker("heal").at
    isolated = [op for op in run.history.ok() if op.group == ISOLATED
                and split <= op.invoked_at and op.completed_at <= heal]
    assert isolated and {op.epoch for op in isolated} == {run.loser_epoch}
    # Merged and demoted: nobody answers without standbys any more, and the operator says so.
    wait_for(lambda: not server.resource()["status"].get("syncDegraded"), DEADLINE,
             interval=POLL, message="status.syncDegraded cleared")
    assert condition(server.resource(), "Degraded")["reason"] != "SyncDegraded"
    (restored,) = wait_for(lambda: server.events("SyncRestored"), DEADLINE, interval=POLL,
                           message="a SyncRestored Event")
    assert run.loser in restored["message"], restored
    assert all(not s.HasField("sync_degraded_seconds")
               for s in (server.wait_settled(DEADLINE)).values())
    print(f"converged {run.convergence_seconds:.2f}s after the heal; {run.history.summary()}")


def test_an_active_cut_from_its_standbys_only_degrades_then_is_synchronous_again(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
    heal_afterwards: None,
) -> None:
    """The other half of degraded Sync: the active is cut from both standbys but still
    reaches the API server, so it keeps renewing the Lease and nobody else may take it (no
    split, nothing to merge). It answers its clients without standbys, and once the
    partition heals its standbys catch up and it is strict Sync again: SyncRestored, one
    linearizable counter throughout, every acknowledged id kept."""
    server = AvailableIdServer.start(dev_cluster, namespace, default_replication=True)
    settled = server.wait_settled(DEADLINE)
    active = next(p for p, s in settled.items() if s.role == pb.ROLE_ACTIVE)
    epoch = settled[active].epoch
    standbys = [p for p in server.pod_names() if p != active]
    load = LoadRecorder(groups={ISOLATED: [f"{server.ip(active)}:{PORT}"]}, clients=2)
    with load:
        load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE)
        load.mark("split")
        for standby in standbys:
            server.fault("partition", active, standby)
        assert server.probe_as(active, server.ip(standbys[0]), PORT) == "timeout"
        api_host, api_port = server.api_server()
        assert server.probe_as(active, api_host, api_port) == "ok"
        wait_for(lambda: (s := server.admin_status(active)) is not None
                 and s.HasField("sync_degraded_seconds"), DEADLINE, interval=POLL,
                 message=f"{active} reports degraded Sync")
        load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE)  # served without its standbys
        wait_for(lambda: condition(server.resource(), "Degraded").get("reason")
                 == "SyncDegraded", DEADLINE, interval=POLL,
                 message=lambda: f"Degraded=SyncDegraded\n{operator.output()[-3000:]}")
        (entered,) = server.events("SyncDegraded")
        assert active in entered["message"], entered
        lease = server.admin_status(standbys[0])
        assert lease is not None and lease.role == pb.ROLE_STANDBY
        assert (lease.lease_holder, lease.lease_epoch) == (active, epoch)  # it renews
        server.dev.gencluster("dev", "fault", "--dir", str(server.dev.dir), "heal")
        load.mark("heal")
        wait_for(lambda: (s := server.admin_status(active)) is not None
                 and not s.HasField("sync_degraded_seconds"), DEADLINE, interval=POLL,
                 message=f"{active} synchronous again")
        load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE)
    history = load.stop()
    (restored,) = wait_for(lambda: server.events("SyncRestored"), DEADLINE, interval=POLL,
                           message="a SyncRestored Event")
    assert f"{active} is acknowledged by its in-sync standbys again" in restored["message"]
    assert not server.resource()["status"].get("syncDegraded")
    assert server.merges() == 0
    assert condition(server.resource(), "SplitBrain")["reason"] == "NoSplitBrain"
    after = server.wait_settled(DEADLINE)
    assert [p for p, s in after.items() if s.role == pb.ROLE_ACTIVE] == [active]
    assert after[active].epoch == epoch
    final = server.state(active)
    assert final is not None
    violations = counter_linearizable(history) + no_lost_acknowledged(history, final[2])
    assert not violations, "\n".join(violations) + "\n" + history.summary()
    print(history.summary())


# -- helpers ------------------------------------------------------------------------------------


def loser_epoch(server: AvailableIdServer, loser: str) -> int:
    status = server.admin_status(loser)
    assert status is not None and status.role == pb.ROLE_ACTIVE, status
    return status.epoch


def metric(server: AvailableIdServer, pod: str, name: str) -> float:
    """One sample of the pod's `/metrics` (read from the test process, which every fault
    leaves reaching the pod)."""
    url = f"http://{server.ip(pod)}:{metrics_port_for(PORT)}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in {url}"
    return float(match.group(1))


def event_time(event: dict[str, Any]) -> datetime:
    stamp = event.get("firstTimestamp") or event.get("eventTime") or ""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
