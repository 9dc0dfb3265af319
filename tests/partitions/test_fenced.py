"""`partitionPolicy: Fenced` under real faults, judged from recorded histories.

A 3-replica id_server (`Sync`, `minSyncStandbys: 1`, lease 4/3/1 s) runs under concurrent
clients (`LoadRecorder`): the "majority" clients know every pod (the client library follows
the active), the "minority" clients know only the pod the fault hits. Each test injects one
fault with `gencluster dev fault`, keeps the load through it, heals, waits until the cluster
converged (one active holding the Lease, every pod in sync at the same applied sequence), reads
the counter, and runs every checker (`checkers.all_fenced_checks`). On failure the history is
written to `history.jsonl` in the test's tmp directory.

What each fault must show is in docs/partitions.md ("What clients see, by fault").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import ACTIVE_ADDRESS_METADATA
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess, namespace_for
from gencluster_testing.partitions.checkers import all_fenced_checks, unavailability_by_group
from gencluster_testing.partitions.cluster import IdServerUnderTest
from gencluster_testing.partitions.history import History, LoadRecorder, Operation, Outcome
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]

READY_DEADLINE = 90.0
PROGRESS_DEADLINE = 30.0
FAILOVER_DEADLINE = 30.0
CONVERGE_DEADLINE = 60.0
OK_CALLS = 15
"""ok calls that show progress: before the fault, under it (on the majority side) and after
the heal."""


@pytest.fixture
def ids(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, healed: None,
    request: pytest.FixtureRequest,
) -> Iterator[IdServerUnderTest]:
    """A fresh Fenced id_server in a namespace of the test's own; healed (nftables rules gone,
    paused pods resumed) and deleted afterwards, so the next test has the CPU."""
    namespace = namespace_for(request.node.name)
    try:
        server = IdServerUnderTest.create(dev_cluster, namespace, deadline=READY_DEADLINE)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- operator\n{operator.output()[-3000:]}") from None
    yield server
    server.heal()
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def pod_of(server: IdServerUnderTest, identity: str) -> str:
    """The pod name of a replica identity (the runtime's identity is its pod name)."""
    assert identity in server.pods(), (identity, list(server.pods()))
    return identity


def judge(server: IdServerUnderTest, history: History, tmp_path: Path) -> int:
    """Converge, read the counter, run every Fenced checker; fail with the violations (and the
    history on disk). Returns the final counter."""
    try:
        server.wait_converged(CONVERGE_DEADLINE)
    except AssertionError as error:
        path = history.to_jsonl(tmp_path / "history.jsonl")
        raise AssertionError(f"{error}\nhistory: {path}\n{server.diagnostics()}") from None
    final = server.read_counter()
    violations = all_fenced_checks(history, final)
    if violations:
        path = history.to_jsonl(tmp_path / "history.jsonl")
        pytest.fail(f"{len(violations)} violations ({history.summary()}; final counter "
                    f"{final}; history in {path}):\n" + "\n".join(violations[:30]))
    print(f"{history.summary()}; final {final}; unavailability "
          f"{unavailability_by_group(history, 'fault', 'heal')}")
    return final


def recorder(server: IdServerUnderTest, faulted_pod: str) -> LoadRecorder:
    return LoadRecorder(
        groups={"majority": server.addresses, "minority": [server.address(faulted_pod)]},
        clients=3, call_timeout=5.0,
    )


def ok_after(history: History, label: str) -> list[Operation]:
    return [op for op in history.after(label) if op.ok]


def test_sigkill_of_the_active(ids: IdServerUnderTest, tmp_path: Path) -> None:
    """A crash: an in-sync standby takes over with a higher epoch (the operator clears the
    Lease of the dead holder, or it expires), no acknowledged value is lost, and the restarted
    pod rejoins as a standby."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = pod_of(ids, active["identity"])
    with recorder(ids, old) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        ids.fault("kill", old)
        new = ids.wait_new_active(active["epoch"], FAILOVER_DEADLINE)
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE, group="majority",
                               epoch_above=active["epoch"])
        load.mark("heal")  # nothing to heal: the kubelet restarts the killed container
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)
    # Everything served after the fault came from the new term, on the new active's address.
    late = ok_after(history, "heal")
    assert late and {op.epoch for op in late} == {new["epoch"]}, history.summary()
    assert {op.served_by for op in late} == {ids.address(new["identity"])}


def raw_next_value(address: str, timeout: float = 3.0) -> tuple[Operation, grpc.RpcError | None]:
    """One `next_value` straight to `address` with a fresh request id, no retry, no redirect
    following: what the woken pod itself does with a write."""
    request_id = uuid.uuid4().hex
    invoked = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        try:
            reply = pb_grpc.ClientStub(channel).Call(
                pb.CallRequest(request_id=request_id, payload=b'"next_value"', codec="json"),
                timeout=timeout,
            )
        except grpc.RpcError as error:
            # Not an answer: it may have been appended to the stale log (never acknowledged),
            # so for the checkers it is an operation of unknown outcome.
            return Operation(
                client=-1, request_id=request_id, request="next_value", invoked_at=invoked,
                completed_at=time.monotonic(), outcome=Outcome.UNKNOWN, value=None,
                epoch=None, served_by=None, error=f"{error.code().name}: {error.details()}",
                group="probe",
            ), error
    return Operation(
        client=-1, request_id=request_id, request="next_value", invoked_at=invoked,
        completed_at=time.monotonic(), outcome=Outcome.OK, value=json.loads(reply.reply),
        epoch=reply.epoch, served_by=address, group="probe", duplicate=reply.duplicate,
    ), None


def test_sigstop_past_the_lease_then_the_woken_active_refuses_writes(
    ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """A hung active (SIGSTOP) loses the Lease to a standby; woken up (SIGCONT) it must not
    accept a single write with its old epoch: its clock moved past the renew deadline while it
    slept, so it answers UNAVAILABLE (redirecting to the new active once it knows it), and it
    rejoins as a standby of the new epoch."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = pod_of(ids, active["identity"])
    old_address = ids.address(old)
    with recorder(ids, old) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        ids.fault("pause", old)
        new = ids.wait_new_active(active["epoch"], FAILOVER_DEADLINE, not_pod=old)
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE, group="majority",
                               epoch_above=active["epoch"])
        # "A standby takes over after D" (docs/partitions.md) must mean writes, not only the
        # Lease: the new active needs its in-sync standby, which must follow the new Lease
        # holder while the old active is still paused, not keep reconnecting to the paused
        # pod. (How long writes stopped is bench/partitions.py's `pause` figure.)
        wait_for(lambda: remaining_standby_in_sync(ids, new["identity"], active["identity"]),
                 FAILOVER_DEADLINE, 0.3,
                 "the remaining standby in sync with the new active while the old one sleeps")
        load.mark("heal")
        ids.fault("resume", old)
        # At once, while it may still believe it is active:
        probes = [raw_next_value(old_address) for _ in range(5)]
        for probe, _ in probes:
            load.record(probe)
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    for probe, error in probes:
        assert not probe.ok, f"the woken stale active accepted a write: {probe}"
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, probe
    # Once it follows the new active it redirects there.
    def redirected() -> str:
        _, error = raw_next_value(old_address)
        return dict(error.trailing_metadata() or ()).get(ACTIVE_ADDRESS_METADATA, "") \
            if error is not None else "accepted!"
    target = wait_for(redirected, CONVERGE_DEADLINE, 0.3, "the woken pod redirects")
    assert target == ids.address(new["identity"]), target
    judge(ids, history, tmp_path)
    statuses = {r["identity"]: r for r in ids.status()}
    assert statuses[old]["role"] == "standby" and statuses[old]["epoch"] == new["epoch"]


def remaining_standby_in_sync(ids: IdServerUnderTest, new: str, old: str) -> bool:
    """True when `new` answers as the active and lists every other answering replica but `old`
    (the remaining standby) as in sync."""
    replicas = [r for r in ids.status() if "error" not in r]
    leader = next((r for r in replicas if r["identity"] == new), None)
    if leader is None or leader["role"] != "active":
        return False
    others = {r["identity"] for r in replicas} - {new, old}
    in_sync = {s["identity"] for s in leader["standbys"] if s["inSync"]}
    return bool(others) and others <= in_sync


def uid_of(dev: DevClusterProcess, namespace: str, pod: str) -> int:
    (state,) = [json.loads(path.read_text()) for path in (dev.dir / "pods").glob(
        f"{namespace}_{pod}_*/state.json")]
    return int(state["runAsUser"])


def connects_as(uid: int, host: str, port: int, timeout: float = 1.0) -> str:
    """Connect to host:port as `uid` (what the pod's own sockets are): "ok", "timeout" or the
    error. The nftables rules match the socket owner, so this is the pod's view."""
    script = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
        "    print('ok')\n"
        "except socket.timeout:\n    print('timeout')\n"
        "except OSError as e:\n    print(e)\n"
    )
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable,
         "-c", script], capture_output=True, text=True, timeout=30, check=False,
    )
    return result.stdout.strip() or result.stderr.strip()


def api_endpoint(dev: DevClusterProcess) -> tuple[str, int]:
    server = dev.instance["server"]
    host, port = server.split("://", 1)[-1].rsplit(":", 1)
    return host, int(port)


def test_active_cut_from_the_api_server_stops_before_a_new_one_is_elected(
    ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """The active cannot renew, and one standby (which could take over) is partitioned from
    it, so it has no failsafe (test_failsafe.py covers the active that reaches every standby):
    it stops serving at its renew deadline (3 s), a standby takes the Lease after the lease
    duration (4 s), so the two terms never overlap; after the heal the old active rejoins as
    a standby."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = pod_of(ids, active["identity"])
    uid = uid_of(ids.dev, ids.namespace, old)
    api_host, api_port = api_endpoint(ids.dev)
    assert connects_as(uid, api_host, api_port) == "ok"
    with recorder(ids, old) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        ids.fault("partition", old, sorted(pod for pod in ids.pods() if pod != old)[0])
        ids.fault("cut-apiserver", old)
        load.mark("cut")  # the rule is in place (the command took a moment after "fault")
        # The fault took effect: the pod's own uid can no longer reach the API server.
        assert connects_as(uid, api_host, api_port) == "timeout"
        new = ids.wait_new_active(active["epoch"], FAILOVER_DEADLINE, not_pod=old)
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE, group="majority",
                               epoch_above=active["epoch"])
        old_status = {r["identity"]: r for r in ids.status()}[old]
        assert old_status["role"] != "active", old_status
        load.mark("heal")
        ids.heal()
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)
    old_term = [op for op in history.ok() if op.epoch == active["epoch"]]
    new_term = [op for op in history.ok() if op.epoch == new["epoch"]]
    assert old_term and new_term
    cut_at = history.marker("cut").at
    # The old term stopped within its renew deadline of the cut (its last renewal was sent
    # before the cut; one second of slack for the reply in flight and this process's
    # scheduling), and the new term began after it stopped.
    assert max(op.completed_at for op in old_term) < cut_at + 3 + 1
    assert max(op.completed_at for op in old_term) < min(op.completed_at for op in new_term)
    assert {r["identity"]: r["role"] for r in ids.status()}[old] == "standby"


def test_active_partitioned_from_both_standbys_blocks_sync_writes(
    ids: IdServerUnderTest, tmp_path: Path
) -> None:
    """The active still renews its Lease but no standby can acknowledge: in Sync mode with
    `minSyncStandbys: 1` no write is answered ok while the partition lasts (the calls wait and
    fail at their deadline, outcome unknown), no standby takes over (the Lease is renewed), and
    after the heal the standbys catch up, the blocked entries are acknowledged and the same
    term carries on."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = pod_of(ids, active["identity"])
    standbys = [pod for pod in ids.pods() if pod != old]
    with recorder(ids, old) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        for standby in standbys:
            ids.fault("partition", old, standby)
        load.mark("partitioned")  # from here no standby can receive an entry
        # Every client has had a call time out against the partitioned active: the writes
        # are blocked, not slow.
        wait_for(lambda: len({op.client for op in load.operations()
                              if op.outcome is Outcome.UNKNOWN}) >= 6,
                 PROGRESS_DEADLINE, 0.2, "every client's call to time out")
        load.mark("heal")
        ids.heal()
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)
    partitioned_at, heal_at = history.marker("partitioned").at, history.marker("heal").at
    during = [op for op in history.ok() if op.invoked_at > partitioned_at
              and op.completed_at < heal_at]
    assert during == [], f"writes acknowledged without a standby: {during[:3]}"
    assert {op.epoch for op in history.ok()} == {active["epoch"]}, "no failover expected"
    assert ids.converged()["identity"] == old


def test_isolated_standby_does_not_stop_writes(ids: IdServerUnderTest, tmp_path: Path) -> None:
    """One standby cut from everything: the other standby's acknowledgements are enough
    (`minSyncStandbys: 1`), so writes continue in the same term; after the heal the isolated
    standby catches up and is in sync again."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = pod_of(ids, active["identity"])
    standby = sorted(pod for pod in ids.pods() if pod != old)[0]
    with recorder(ids, standby) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        ids.fault("isolate", standby)
        # The active noticed: the standby left the in-sync set (so it may not take over)...
        wait_for(lambda: standby_out_of_sync(ids, old, standby), FAILOVER_DEADLINE, 0.2,
                 f"{standby} out of the in-sync set")
        # ... and writes acknowledged by the other standby alone go on.
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE, group="majority")
        load.mark("heal")
        ids.heal()
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)
    assert {op.epoch for op in history.ok()} == {active["epoch"]}, "no failover expected"


def standby_out_of_sync(server: IdServerUnderTest, active: str, standby: str) -> bool:
    statuses = {r["identity"]: r for r in server.status()}
    listed = {s["identity"]: s for s in statuses.get(active, {}).get("standbys", [])}
    return standby not in listed or not listed[standby]["inSync"]


def test_isolated_active_is_replaced_and_rejoins(ids: IdServerUnderTest, tmp_path: Path) -> None:
    """The active cut from its standbys and the API server: it fences itself at the renew
    deadline, a standby takes the Lease, and after the heal the old active rejoins as a
    standby of the new term."""
    active = ids.wait_converged(CONVERGE_DEADLINE)
    old = pod_of(ids, active["identity"])
    with recorder(ids, old) as load:
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
        load.mark("fault")
        ids.fault("isolate", old)
        new = ids.wait_new_active(active["epoch"], FAILOVER_DEADLINE, not_pod=old)
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE, group="majority",
                               epoch_above=active["epoch"])
        load.mark("heal")
        ids.heal()
        load.wait_for_ok_calls(OK_CALLS, PROGRESS_DEADLINE)
    history = load.stop()
    judge(ids, history, tmp_path)
    statuses: dict[str, Any] = {r["identity"]: r for r in ids.status()}
    assert statuses[old]["role"] == "standby" and statuses[old]["epoch"] == new["epoch"]
