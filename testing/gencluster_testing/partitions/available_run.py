"""One Available split, run for real: the shared body of `test_available.py` and
`bench/merge.py`.

An id_server with `partitionPolicy: Available` (Async replication: an active cut off from
every standby must still answer) runs on the local control plane beside the operator. A
`LoadRecorder` pinned to the active's address runs from the start; the active is faulted
(`isolate`, `cut-apiserver` or `pause`); once the other side has its own active, a second
recorder pinned to the other pods runs too (started only then: before, the standbys would
redirect its clients to the faulted active, which the test process can always reach, and
they would stay there). Then the fault is healed, the operator merges, and the run records
when everything converged.

Admin calls go straight to the pods with the cluster's peer token, so polling is cheap
enough to time convergence to a few tens of milliseconds.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import PEER_TOKEN_METADATA

from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import condition, create_namespace, get_json
from gencluster_testing.partitions.cluster import LEASE, PORT, IdServerUnderTest, id_server_manifest
from gencluster_testing.partitions.history import History, LoadRecorder, Marker
from gencluster_testing.partitions.merge_checks import combine
from gencluster_testing.waiting import wait_for

ISOLATED, OTHERS = "isolated", "others"
"""Client groups: pinned to the faulted active / to every other pod."""
RETRY_PERIOD = LEASE["retryPeriodSeconds"]
DEADLINE = 60.0
POLL = 0.05
CALLS_PER_PHASE = 15
"""Ok calls each side must get in each phase: enough to show it serves, few enough to be fast."""
ASYNC = {"mode": "Async"}
REPLICAS = 3

FAULTS = ("isolate", "cut-apiserver", "pause")


def available_manifest(
    *, server: str | None = None, env: dict[str, str] | None = None,
    default_replication: bool = False,
) -> str:
    """The partitions suite's id_server, Available and Async; optionally another server class,
    extra container variables, or (`default_replication`) no `replication` field at all, so
    the CRD's defaults apply as they do for a user's manifest (Sync, minSyncStandbys 1)."""
    resource = json.loads(id_server_manifest("Available", ASYNC))
    if default_replication:
        del resource["spec"]["replication"]
    if server is not None:
        resource["spec"]["server"] = server
    if env:
        resource["spec"]["template"] = {"spec": {"env": [
            {"name": key, "value": value} for key, value in sorted(env.items())
        ]}}
    return json.dumps(resource)


PROBE = """
import socket
try:
    socket.create_connection(({host!r}, {port}), timeout=1).close()
    print("ok")
except socket.timeout:
    print("timeout")
except OSError as error:
    print(type(error).__name__)
"""


@dataclass
class AvailableIdServer(IdServerUnderTest):
    """`IdServerUnderTest` plus direct Admin calls (Status, GetState) with the peer token."""

    _token: str = field(default="", init=False)
    _ips: dict[str, str] = field(default_factory=dict, init=False)
    _stubs: dict[str, pb_grpc.AdminStub] = field(default_factory=dict, init=False)

    @classmethod
    def start(
        cls, dev: DevClusterProcess, namespace: str, *, server: str | None = None,
        env: dict[str, str] | None = None, default_replication: bool = False,
    ) -> AvailableIdServer:
        create_namespace(dev, namespace)
        dev.kubectl("apply", "-n", namespace, "-f", "-",
                    input=available_manifest(server=server, env=env,
                                             default_replication=default_replication))
        started = cls(dev, namespace)
        started.wait_settled(90.0)
        return started

    def token(self) -> str:
        if not self._token:
            secret = get_json(self.dev, "secret", f"{self.name}-peer-token", "-n", self.namespace)
            self._token = base64.b64decode(secret["data"]["token"]).decode()
        return self._token

    def ip(self, pod: str) -> str:
        if pod not in self._ips:  # a pod keeps its IP across container restarts
            self._ips[pod] = self.address(pod).rsplit(":", 1)[0]
        return self._ips[pod]

    def pod_names(self) -> list[str]:
        return sorted(self.pods())

    def _admin(self, pod: str) -> pb_grpc.AdminStub:
        """One channel per pod, reused by every poll (a channel reconnects by itself)."""
        if pod not in self._stubs:
            self._stubs[pod] = pb_grpc.AdminStub(grpc.insecure_channel(f"{self.ip(pod)}:{PORT}"))
        return self._stubs[pod]

    def admin_status(self, pod: str, timeout: float = 1.0) -> pb.StatusReply | None:
        """The pod's Admin.Status, or None when it does not answer in time (paused, gone)."""
        try:
            return self._admin(pod).Status(
                pb.StatusRequest(), timeout=timeout,
                metadata=((PEER_TOKEN_METADATA, self.token()),))
        except grpc.RpcError:
            return None

    def state(self, pod: str) -> tuple[int, int, Any] | None:
        """(epoch, applied seq, decoded state) from Admin.GetState, or None."""
        try:
            reply = self._admin(pod).GetState(
                pb.GetStateRequest(), timeout=1.0,
                metadata=((PEER_TOKEN_METADATA, self.token()),))
        except grpc.RpcError:
            return None
        return reply.epoch, reply.applied_seq, json.loads(reply.state)

    def settled(self) -> dict[str, pb.StatusReply] | None:
        """Every pod's Status when the cluster has converged: exactly one active, every other
        pod its standby at the same epoch and applied sequence, and the same state on every
        pod (GetState); else None."""
        pods = self.pod_names()
        statuses = {pod: self.admin_status(pod) for pod in pods}
        if len(pods) != REPLICAS or any(s is None for s in statuses.values()):
            return None
        actives = [p for p, s in statuses.items() if s and s.role == pb.ROLE_ACTIVE]
        standbys = [p for p, s in statuses.items() if s and s.role == pb.ROLE_STANDBY]
        if len(actives) != 1 or len(standbys) != len(pods) - 1:
            return None
        positions = {(s.epoch, s.applied_seq) for s in statuses.values() if s}
        states = {json.dumps(st[2]) if (st := self.state(p)) else None for p in pods}
        if len(positions) != 1 or len(states) != 1 or None in states:
            return None
        return statuses  # type: ignore[return-value]

    def wait_settled(self, deadline: float) -> dict[str, pb.StatusReply]:
        return wait_for(self.settled, deadline, interval=POLL,
                        message=f"{self.namespace}: one active, every pod at the same state")

    def merges(self) -> int:
        return int((self.resource().get("status") or {}).get("merges") or 0)

    def split_condition(self) -> dict[str, Any]:
        return condition(self.resource(), "SplitBrain")

    def events(self, reason: str) -> list[dict[str, Any]]:
        listing = get_json(self.dev, "events", "-n", self.namespace, "--field-selector",
                           f"involvedObject.kind=ClusteredServer,reason={reason}")
        return listing["items"]

    # -- evidence that a fault took effect --------------------------------------------------

    def run_as(self, pod: str) -> int:
        """The uid the kubelet runs `pod` as (its state.json), which the nftables rules key on."""
        (state,) = (self.dev.dir / "pods").glob(f"{self.namespace}_{pod}_*/state.json")
        return int(json.loads(state.read_text())["runAsUser"])

    def main_pid(self, pod: str) -> int:
        (state,) = (self.dev.dir / "pods").glob(f"{self.namespace}_{pod}_*/state.json")
        return int(json.loads(state.read_text())["containers"]["server"]["pid"])

    def probe_as(self, pod: str, host: str, port: int) -> str:
        """Connect to host:port as `pod`'s uid (what the fault rules match): "ok", "timeout"
        or "refused"/other error text. System Python, so the probe needs no project files."""
        uid = self.run_as(pod)
        code = PROBE.format(host=host, port=port)
        result = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c", code],
            capture_output=True, text=True, timeout=10, check=False,
        )
        return result.stdout.strip() or result.stderr.strip()

    def api_server(self) -> tuple[str, int]:
        host_port = self.dev.instance["server"].split("//", 1)[1]
        host, port = host_port.rsplit(":", 1)
        return host, int(port)

    def process_state(self, pod: str) -> str:
        """The pod's main process state letter from /proc (T: stopped by SIGSTOP)."""
        stat = open(f"/proc/{self.main_pid(pod)}/stat").read()  # noqa: SIM115
        return stat.rsplit(")", 1)[1].split()[0]


@dataclass
class SplitRun:
    """What one split produced: the combined history and the moments that matter."""

    history: History
    loser: str
    winner: str
    loser_epoch: int
    winner_epoch: int
    fault: str
    healed_at: float
    """Monotonic time of the heal (the "heal" marker)."""
    merged_seen_at: float
    """When `status.merges` was first seen incremented (the "merged" marker)."""
    converged_at: float | None = None
    """When every pod was first seen at one state with one active (after the loads stopped;
    None when the run did not wait for it)."""
    during_split: dict[str, Any] = field(default_factory=dict)
    """What `while_split` and `after_heal` returned (observations, evidence)."""

    @property
    def convergence_seconds(self) -> float | None:
        return None if self.converged_at is None else self.converged_at - self.healed_at


def run_split(
    server: AvailableIdServer,
    fault: str,
    *,
    while_split: Callable[[AvailableIdServer, str, str], dict[str, Any]] | None = None,
    after_heal: Callable[[AvailableIdServer, str, str], dict[str, Any]] | None = None,
    load_after_heal: bool = True,
    wait_converged: bool = True,
) -> SplitRun:
    """Fault the active (`fault` in FAULTS), wait until the other side has its own active and
    both sides served, call `while_split(server, loser, winner)` (assertions and evidence;
    its result is kept), heal, call `after_heal` likewise, wait for the merge, and (with
    `load_after_heal`, else the loads stop at the heal) let both
    groups of clients get answers after it; then stop the loads and wait until every pod
    converged. Faults are healed on every way out."""
    assert fault in FAULTS, fault
    settled = server.wait_settled(DEADLINE)
    merges_before = server.merges()
    loser = next(p for p, s in settled.items() if s.role == pb.ROLE_ACTIVE)
    loser_epoch = settled[loser].epoch
    others = [p for p in server.pod_names() if p != loser]
    loser_address = f"{server.ip(loser)}:{PORT}"
    other_addresses = [f"{server.ip(p)}:{PORT}" for p in others]
    isolated_load = LoadRecorder(groups={ISOLATED: [loser_address]}, clients=2)
    other_load = LoadRecorder(groups={OTHERS: other_addresses}, clients=2)
    healed = False
    try:
        with isolated_load:
            isolated_load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE)
            isolated_load.mark("split")
            server.fault(fault, loser)
            new_active = _wait_other_side_elected(server, loser, loser_epoch)
            winner, winner_epoch = new_active.identity, new_active.epoch
            other_load.start()
            other_load.mark("others-started")
            other_load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE, epoch_above=loser_epoch)
            if fault != "pause":
                isolated_load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE)
            observed = while_split(server, loser, winner) if while_split else {}
            healed_at = _heal(server, fault, loser, isolated_load, other_load)
            healed = True
            if not load_after_heal:
                isolated_load.stop()
                other_load.stop()
            if after_heal is not None:
                observed |= after_heal(server, loser, winner)
            wait_for(lambda: server.merges() > merges_before, DEADLINE, interval=POLL,
                     message=lambda: f"a merge after the heal\n{server.diagnostics()}")
            merged_seen_at = time.monotonic()
            for load in (isolated_load, other_load):
                load.mark("merged")
            if load_after_heal:
                other_load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE, epoch_above=loser_epoch)
                isolated_load.wait_for_ok_calls(CALLS_PER_PHASE, DEADLINE,
                                                epoch_above=loser_epoch)
        history = combine(isolated_load.stop(), other_load.stop())
        if not any(m.label == "merged" for m in history.markers):
            # The loads stopped at the heal: the merge still ends the split for the checks.
            history.markers.append(Marker(merged_seen_at, "merged"))
    finally:
        other_load.stop()
        if not healed:
            server.heal()
    run = SplitRun(history, loser, winner, loser_epoch, winner_epoch, fault, healed_at,
                   merged_seen_at, during_split=observed)
    if wait_converged:
        server.wait_settled(DEADLINE)
        run.converged_at = time.monotonic()
    return run


def _wait_other_side_elected(
    server: AvailableIdServer, loser: str, loser_epoch: int
) -> pb.StatusReply:
    def elected() -> pb.StatusReply | None:
        for pod in server.pod_names():
            if pod == loser:
                continue
            status = server.admin_status(pod)
            if status is not None and status.role == pb.ROLE_ACTIVE and status.epoch > loser_epoch:
                return status
        return None

    winner = wait_for(elected, DEADLINE, interval=POLL,
                      message=lambda: f"the other side elects its own active\n"
                                      f"{server.diagnostics()}")

    # Every other pod follows the winner before the other side's clients start: a standby
    # still streaming from the loser (when only the API is cut, the loser stays reachable)
    # redirects a client there, and the client keeps that redirect while the loser answers,
    # so a client started a moment too early would spend the split on the loser's side.
    def all_follow_winner() -> bool:
        for pod in server.pod_names():
            if pod in (loser, winner.identity):
                continue
            status = server.admin_status(pod)
            if status is None or status.active != winner.identity:
                return False
        return True

    wait_for(all_follow_winner, DEADLINE, interval=POLL,
             message=lambda: f"the other side follows {winner.identity}\n{server.diagnostics()}")
    return winner


def _heal(server: AvailableIdServer, fault: str, loser: str, *loads: LoadRecorder) -> float:
    """Undo the fault, then mark the moment: once the command returned, the rules are gone
    (or the process runs again), which is where convergence is timed from."""
    if fault == "pause":
        server.fault("resume", loser)
    else:
        server.dev.gencluster("dev", "fault", "--dir", str(server.dev.dir), "heal")
    for load in loads:
        load.mark("heal")
    return time.monotonic()
