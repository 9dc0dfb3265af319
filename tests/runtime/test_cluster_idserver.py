"""Three id_server replicas as real pods on the local control plane: Lease election,
replication, failover by SIGKILL and by graceful stop, rejoin by snapshot, bad input.

Every replica is a Pod running `gencluster run` (the process kubelet starts it on its own
loopback address); the test creates what the operator would: the Lease (empty), the peer-token
Secret and the ServiceAccount. Lease timings are 3/2/1 s (the contract's integer minimum
that passes the timing rules), so a crash failover without the operator takes about 3-4 s.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from gencluster import Client, ClientTls, RemoteError
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import PEER_TOKEN_METADATA
from gencluster.wire import snapshot_from_chunks, snapshot_to_chunks
from gencluster_testing import without_operator
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

PORT = 50051
LEASE = {"duration": 3, "renew": 2, "retry": 1}


@dataclass
class IdCluster:
    """The pods of one ClusteredServer, created without the operator: its own builders make
    them (gencluster_testing.without_operator), but nothing heals a killed pod or clears the
    Lease."""

    dev: DevClusterProcess
    name: str
    token: str
    replicas: int
    server: str = "gencluster_examples.id_server:IdServer"
    args: dict[str, Any] = field(default_factory=dict)
    extra_spec: dict[str, Any] = field(default_factory=dict)
    """More of the ClusteredServer's spec (e.g. `persistence`), as the operator would read it."""
    resource: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.resource = without_operator.clustered_server(
            self.name,
            server=self.server,
            replicas=self.replicas,
            args=self.args,
            port=PORT,
            replication={"mode": "Sync", "minSyncStandbys": 1},
            lease={"durationSeconds": LEASE["duration"], "renewDeadlineSeconds": LEASE["renew"],
                   "retryPeriodSeconds": LEASE["retry"]},
            **self.extra_spec,
        )

    def pod_name(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    def create(self) -> None:
        without_operator.create(self.dev, self.resource, self.token)

    def pod(self, ordinal: int) -> dict[str, Any]:
        return without_operator.pod(self.resource, ordinal)

    def pod_ip(self, pod: str) -> str:
        return self.dev.kubectl("get", "pod", pod, "-o", "jsonpath={.status.podIP}").stdout

    def address(self, pod: str) -> str:
        return f"{self.pod_ip(pod)}:{PORT}"

    def addresses(self) -> str:
        return ",".join(self.address(self.pod_name(i)) for i in range(self.replicas))

    def lease(self) -> dict[str, Any]:
        return json.loads(self.dev.kubectl("get", "lease", self.name, "-o", "json").stdout)

    def holder(self) -> str:
        return self.lease()["spec"].get("holderIdentity") or ""

    def status(self, pod: str) -> pb.StatusReply | None:
        try:
            with grpc.insecure_channel(self.address(pod)) as channel:
                return pb_grpc.AdminStub(channel).Status(
                    pb.StatusRequest(), metadata=((PEER_TOKEN_METADATA, self.token),), timeout=2
                )
        except grpc.RpcError:
            return None

    def ready_cluster(self) -> str:
        """Wait until one active has every other replica in sync; return the active."""
        def settled() -> str:
            holder = self.holder()
            if not holder:
                return ""
            status = self.status(holder)
            if status is None or status.role != pb.ROLE_ACTIVE:
                return ""
            in_sync = [s.identity for s in status.standbys if s.in_sync]
            return holder if len(in_sync) == self.replicas - 1 else ""
        try:
            return wait_for(settled, 30, 0.2, "an active with every standby in sync")
        except AssertionError:
            for ordinal in range(self.replicas):
                pod = self.pod_name(ordinal)
                print(f"--- {pod}: {self.status(pod)}\n{self.logs(pod)[-6000:]}")
            raise

    def logs(self, pod: str) -> str:
        return self.dev.kubectl("logs", pod, check=False).stdout


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    group = IdCluster(dev_cluster, "ids", secrets.token_urlsafe(32), 3)
    group.create()
    group.ready_cluster()
    yield group


def test_three_replicas_elect_one_active(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    client = Client(cluster.addresses(), timeout=20)
    assert client.call("next_value") >= 1
    labels = cluster.dev.kubectl("get", "pods", "-l", "gencluster.io/role=active", "-o",
                                 "jsonpath={.items[*].metadata.name}").stdout.split()
    assert labels == [active]
    # A client that knows only a standby is redirected to the active.
    standby = next(cluster.pod_name(i) for i in range(cluster.replicas)
                   if cluster.pod_name(i) != active)
    with Client(cluster.address(standby), timeout=20) as redirected:
        assert redirected.call("current") >= 1


class Load:
    """Clients calling next_value in threads, recording every reply and every failure."""

    def __init__(self, addresses: str, clients: int = 6, *, call_timeout: float = 20,
                 attempt_timeout: float | None = None, tls: ClientTls | None = None) -> None:
        """`call_timeout`: how long one call may retry before it counts as failed (long enough
        to outlast a whole-cluster restart, for tests that make one); `tls`: for a cluster
        with TLS (`gencluster_testing.operator_process.cluster_tls`)."""
        self.addresses = addresses
        self.tls = tls
        self.call_timeout = call_timeout
        self.attempt_timeout = attempt_timeout
        self.values: list[int] = []
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.call_timeout + 30)

    def _run(self) -> None:
        options = {} if self.attempt_timeout is None else {"attempt_timeout": self.attempt_timeout}
        with Client(self.addresses, timeout=self.call_timeout, tls=self.tls,
                    **options) as client:
            while not self._stop.is_set():
                try:
                    value = client.call("next_value")
                except Exception as error:
                    with self._lock:
                        self.failures.append(error)
                    return
                with self._lock:
                    self.values.append(value)

    def count(self) -> int:
        with self._lock:
            return len(self.values)

    def wait_for_more(self, replies: int, timeout: float = 30) -> None:
        target = self.count() + replies
        wait_for(lambda: self.count() >= target or self.failures, timeout, 0.05,
                 f"{replies} more replies")
        assert not self.failures, self.failures


def current_value(client: Client) -> int:
    return client.call("current")


def assert_no_gap(values: list[int], before: int) -> None:
    """Every call was answered (retries included), so the answers are exactly before+1..max."""
    assert len(values) == len(set(values)), "a value was handed out twice"
    assert sorted(values) == list(range(before + 1, before + 1 + len(values)))


def test_sigkill_of_the_active_under_load_loses_no_acknowledged_value(
    cluster: IdCluster,
) -> None:
    old_active = cluster.ready_cluster()
    probe = Client(cluster.addresses(), timeout=20)
    before = current_value(probe)
    with Load(cluster.addresses()) as load:
        load.wait_for_more(200)
        cluster.dev.gencluster("dev", "fault", "--dir", str(cluster.dev.dir), "kill", old_active)
        wait_for(lambda: cluster.holder() not in ("", old_active), 20, 0.1, "a new holder")
        load.wait_for_more(200)
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    # The new active continues right after the last value any client was given.
    assert probe.call("next_value") == max(load.values) + 1
    # The killed pod restarts without state and rejoins by snapshot.
    new_active = cluster.ready_cluster()
    assert new_active != old_active
    wait_for(lambda: "joined by snapshot" in cluster.logs(old_active), 30, 0.2,
             "the restarted replica to join by snapshot")
    active_state = state_of(cluster, new_active)
    wait_for(lambda: state_of(cluster, old_active) == active_state, 20, 0.1,
             "the rejoined replica to hold the active's state")


def state_of(cluster: IdCluster, pod: str) -> Any:
    with grpc.insecure_channel(cluster.address(pod)) as channel:
        reply = pb_grpc.AdminStub(channel).GetState(
            pb.GetStateRequest(), metadata=((PEER_TOKEN_METADATA, cluster.token),), timeout=5
        )
    return json.loads(reply.state)


def test_graceful_stop_of_the_active_hands_over_without_a_failed_call(
    cluster: IdCluster,
) -> None:
    old_active = cluster.ready_cluster()
    probe = Client(cluster.addresses(), timeout=20)
    before = current_value(probe)
    old_epoch = cluster.lease()["spec"]["leaseTransitions"]
    with Load(cluster.addresses()) as load:
        load.wait_for_more(200)
        cluster.dev.kubectl("delete", "pod", old_active, "--wait=false")
        wait_for(lambda: cluster.holder() not in ("", old_active), 20, 0.05, "the handover")
        load.wait_for_more(200)
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    lease = cluster.lease()
    assert lease["spec"]["leaseTransitions"] == old_epoch + 1
    # Put the deleted replica back (no operator here) for the tests that follow.
    wait_for(lambda: cluster.dev.kubectl("get", "pod", old_active, check=False).returncode != 0,
             30, 0.2, "the old pod to be gone")
    cluster.dev.kubectl("apply", "-f", "-",
                        input=json.dumps(cluster.pod(int(old_active.rsplit("-", 1)[1]))))
    cluster.ready_cluster()


def test_bad_input_gets_clear_errors_and_changes_nothing(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    address = cluster.address(active)
    client = Client(address, timeout=20)
    before = current_value(client)
    peer_token = ((PEER_TOKEN_METADATA, cluster.token),)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ClientStub(channel)
        cases = [
            (pb.CallRequest(request_id="bad-1", payload=b"\xff{not json"),
             grpc.StatusCode.INVALID_ARGUMENT, "cannot decode request as json"),
            (pb.CallRequest(request_id="bad-2", payload=b'"' + b"a" * (4 * 1024 * 1024) + b'"'),
             grpc.StatusCode.RESOURCE_EXHAUSTED, "over the json codec limit"),
            (pb.CallRequest(request_id="bad-3", payload=b'"next_value"', codec="msgpack"),
             grpc.StatusCode.INVALID_ARGUMENT, "this cluster uses 'json'"),
        ]
        for request, code, words in cases:
            with pytest.raises(grpc.RpcError) as raised:
                stub.Call(request, timeout=10)
            assert raised.value.code() == code
            assert words in raised.value.details()
        unknown_method = channel.unary_unary("/gencluster.v1.Client/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as raised:
            unknown_method(b"", timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Peer and Admin calls need the peer token.
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.AdminStub(channel).Demote(pb.DemoteRequest(), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A peer claiming a higher epoch than the active's is refused.
        replicate = pb_grpc.PeerStub(channel).Replicate(
            iter([pb.ReplicateUp(hello=pb.Hello(identity="intruder", epoch=10**6))]),
            metadata=peer_token, timeout=5,
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(replicate)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A request the handler has no clause for raises in the handler: an error reply.
    with pytest.raises(RemoteError) as handler_error:
        client.call(["no", "such", "request"])
    assert handler_error.value.type == "UnknownRequest"
    # Nothing changed, and the server is alive and still the active.
    assert current_value(client) == before
    assert client.call("next_value") == before + 1
    assert cluster.holder() == active


class StaleActive(pb_grpc.PeerServicer):
    """A deposed active that still streams entries from an old epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.hellos: list[pb.Hello] = []
        self.release = threading.Event()
        """Set by the test once it saw the outcome: until then the stream stays open, so the
        standby judges the entries themselves, not a stream that ended."""

    def Replicate(self, request_iterator: Any, context: Any) -> Iterator[pb.ReplicateDown]:
        hello = next(request_iterator).hello
        self.hellos.append(hello)
        entry = pb.LogEntry(
            seq=hello.applied_seq + 1,
            epoch=self.epoch,
            command=pb.Command(
                kind=pb.COMMAND_KIND_CALL, request_id="stale", payload=b'"next_value"'
            ),
        )
        yield pb.ReplicateDown(
            entries=pb.EntryBatch(epoch=self.epoch, entries=[entry], last_seq=entry.seq)
        )
        self.release.wait(60)


def test_standby_refuses_replication_from_a_stale_epoch(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    standby = next(cluster.pod_name(i) for i in range(cluster.replicas)
                   if cluster.pod_name(i) != active)
    epoch = cluster.lease()["spec"]["leaseTransitions"]
    before = state_of(cluster, standby)
    stale = StaleActive(epoch - 1)
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(4))
    pb_grpc.add_PeerServicer_to_server(stale, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(cluster.address(standby)) as channel:
            pb_grpc.AdminStub(channel).Demote(
                pb.DemoteRequest(follow_address=f"127.0.0.1:{port}", reason="test"),
                metadata=((PEER_TOKEN_METADATA, cluster.token),), timeout=5,
            )
        wait_for(lambda: stale.hellos, 20, 0.05, "the standby to connect to the stale active")
        wait_for(lambda: "refused: this replica has seen epoch" in cluster.logs(standby), 20, 0.2,
                 "the standby to refuse the stale entries")
    finally:
        stale.release.set()
        server.stop(0)
    assert stale.hellos[0].epoch >= epoch
    assert state_of(cluster, standby) == before
    cluster.ready_cluster()  # back in sync with the real active


def test_active_cut_off_from_the_api_server_and_one_standby_stops_before_its_lease_expires(
    cluster: IdCluster,
) -> None:
    """Without the promise of every pod that could take over (one standby is partitioned from
    it), the active cut off from the API server has no failsafe: it stops at its renew
    deadline, before anyone may take the Lease."""
    old_active = cluster.ready_cluster()
    lost = next(cluster.pod_name(i) for i in range(cluster.replicas)
                if cluster.pod_name(i) != old_active)
    directory = str(cluster.dev.dir)
    last_ok = 0.0
    with grpc.insecure_channel(cluster.address(old_active)) as channel:
        stub = pb_grpc.ClientStub(channel)
        cluster.dev.gencluster("dev", "fault", "--dir", directory, "partition", old_active, lost)
        cluster.dev.gencluster("dev", "fault", "--dir", directory, "cut-apiserver", old_active)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    stub.Call(pb.CallRequest(payload=b'"next_value"'), timeout=1)
                    last_ok = time.time()
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        break
                time.sleep(0.02)
            else:
                raise AssertionError("the cut-off active kept serving")
            stopped_serving = time.time()
            wait_for(lambda: cluster.holder() not in ("", old_active), 20, 0.1, "a new holder")
            acquired = cluster.lease()["spec"]["acquireTime"]
        finally:
            cluster.dev.gencluster("dev", "fault", "--dir", directory, "heal")
    from datetime import datetime

    acquired_at = datetime.fromisoformat(acquired.replace("Z", "+00:00")).timestamp()
    assert last_ok < stopped_serving < acquired_at
    print(f"fenced {acquired_at - stopped_serving:.3f}s before the new active took the Lease")
    cluster.ready_cluster()  # the old active rejoins as a standby


def test_active_cut_off_from_the_api_server_serves_in_failsafe(cluster: IdCluster) -> None:
    """Cut off from the API server but reaching both standbys, the active keeps serving on
    their promises well past its renew deadline (2 s) and lease duration (3 s), says so in its
    Status, keeps the Lease after the heal, and reports the episode."""
    active = cluster.ready_cluster()
    directory = str(cluster.dev.dir)
    before = cluster.status(active)
    assert before is not None and not before.HasField("failsafe_seconds")
    with grpc.insecure_channel(cluster.address(active)) as channel:
        stub = pb_grpc.ClientStub(channel)
        cluster.dev.gencluster("dev", "fault", "--dir", directory, "cut-apiserver", active)
        try:
            cut_at = time.monotonic()
            served_late = 0
            while time.monotonic() < cut_at + 3 * LEASE["duration"]:
                stub.Call(pb.CallRequest(payload=b'"next_value"'), timeout=5)
                if time.monotonic() > cut_at + LEASE["duration"] + LEASE["retry"]:
                    served_late += 1
                time.sleep(0.05)
            status = cluster.status(active)
            assert status is not None and status.role == pb.ROLE_ACTIVE
            assert status.HasField("failsafe_seconds"), status
            assert status.failsafe_seconds > LEASE["renew"]
            assert status.failsafe_episodes == before.failsafe_episodes + 1
        finally:
            cluster.dev.gencluster("dev", "fault", "--dir", directory, "heal")
    assert served_late > 0
    assert cluster.ready_cluster() == active  # no failover happened
    after = wait_for(
        lambda: (s := cluster.status(active)) is not None and not s.HasField("failsafe_seconds")
        and s, 10, 0.1, "the renewed Lease to end failsafe")
    assert after.last_failsafe_seconds > 0
    print(f"served {served_late} calls in failsafe; failsafe lasted "
          f"{after.last_failsafe_seconds:.1f}s")


def admin(cluster: IdCluster, pod: str) -> pb_grpc.AdminStub:
    return pb_grpc.AdminStub(grpc.insecure_channel(cluster.address(pod)))


def test_switchover_to_a_named_standby_under_load(cluster: IdCluster) -> None:
    old_active = cluster.ready_cluster()
    target = next(cluster.pod_name(i) for i in range(cluster.replicas)
                  if cluster.pod_name(i) != old_active)
    probe = Client(cluster.addresses(), timeout=20)
    before = current_value(probe)
    epoch = cluster.lease()["spec"]["leaseTransitions"]
    token = ((PEER_TOKEN_METADATA, cluster.token),)
    with Load(cluster.addresses()) as load:
        load.wait_for_more(100)
        reply = admin(cluster, old_active).Switchover(
            pb.SwitchoverRequest(target=target), metadata=token, timeout=10
        )
        load.wait_for_more(100)
    assert not load.failures, load.failures
    assert (reply.active, reply.epoch) == (target, epoch + 1)
    assert cluster.holder() == target
    assert_no_gap(load.values, before)
    # The old active follows the new one as a standby and comes back in sync.
    assert cluster.ready_cluster() == target
    old_status = cluster.status(old_active)
    assert old_status is not None and old_status.role == pb.ROLE_STANDBY
    # A switchover to a pod that is not an in-sync standby is refused, and changes nothing.
    with pytest.raises(grpc.RpcError) as raised:
        admin(cluster, target).Switchover(
            pb.SwitchoverRequest(target="no-such-pod"), metadata=token, timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert cluster.holder() == target
    assert probe.call("next_value") == max(load.values) + 1


def test_export_state_and_merge_go_through_the_servers_merge(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    token = ((PEER_TOKEN_METADATA, cluster.token),)
    client = Client(cluster.addresses(), timeout=20)
    current = current_value(client)
    exported = list(admin(cluster, active).ExportState(
        pb.ExportStateRequest(), metadata=token, timeout=10
    ))
    snapshot, _ = snapshot_from_chunks(exported)
    assert json.loads(snapshot.state) == current
    other_side = dataclasses.replace(snapshot, state=json.dumps(current + 1000).encode())
    chunks = [pb.MergeChunk(origin=pb.MergeOrigin(request_id="merge-1", source="other"))]
    chunks += [pb.MergeChunk(snapshot=chunk)
               for chunk in snapshot_to_chunks(other_side, epoch=1)]
    stub = admin(cluster, active)
    first = stub.Merge(iter(chunks), metadata=token, timeout=10)
    again = stub.Merge(iter(chunks), metadata=token, timeout=10)
    assert not first.HasField("error") and not first.duplicate
    assert again.duplicate and again.seq == first.seq  # a retried merge applies once
    assert client.call("next_value") == current + 1001  # IdServer.merge is max()


def test_health_and_reflection(cluster: IdCluster) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    active = cluster.ready_cluster()
    for ordinal in range(cluster.replicas):
        pod = cluster.pod_name(ordinal)
        with grpc.insecure_channel(cluster.address(pod)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "gencluster.liveness"):
                # A standby learns that it is in the in-sync set from its next Lease read.
                wait_for(lambda health=health, service=service: health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5
                ).status == health_pb2.HealthCheckResponse.SERVING, 10, 0.1,
                    f"{pod} to report {service or 'readiness'} SERVING")
    with grpc.insecure_channel(cluster.address(active)) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"gencluster.v1.Client", "gencluster.v1.Peer", "gencluster.v1.Admin",
            "grpc.health.v1.Health"} <= names
    # Prometheus text format on the metrics port of the pod's own address.
    import urllib.request

    metrics_url = f"http://{cluster.pod_ip(active)}:9090/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            return response.read().decode()

    def sample(text: str, series: str) -> float:
        values = [
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series)
        ]
        return values[0] if values else 0.0

    before = scrape()
    ours = {line.split("{")[0].split(" ")[0] for line in before.splitlines()
            if line.startswith("gencluster_")}
    assert ours and all(name.startswith("gencluster_runtime_") for name in ours), ours
    assert f'gencluster_runtime_active{{cluster="{cluster.name}",pod="{active}"}} 1.0' in before
    # Client calls are counted by outcome and timed, on the replica that answered them.
    with Client(cluster.address(active), timeout=20) as direct:
        direct.call("next_value")
        with pytest.raises(RemoteError):
            direct.call("no such request")
    after = scrape()
    for series in ('gencluster_runtime_calls_total{kind="call",outcome="ok"}',
                   'gencluster_runtime_calls_total{kind="call",outcome="error"}',
                   'gencluster_runtime_call_duration_seconds_count{kind="call"}'):
        assert sample(after, series) >= sample(before, series) + 1, series


def test_killed_standby_rejoins_by_snapshot_while_the_active_keeps_serving(
    cluster: IdCluster,
) -> None:
    active = cluster.ready_cluster()
    standby = next(cluster.pod_name(i) for i in range(cluster.replicas)
                   if cluster.pod_name(i) != active)
    restarts_before = restart_count(cluster, standby)
    probe = Client(cluster.addresses(), timeout=20)
    before = current_value(probe)
    with Load(cluster.addresses()) as load:
        load.wait_for_more(100)
        cluster.dev.gencluster("dev", "fault", "--dir", str(cluster.dev.dir), "kill", standby)
        load.wait_for_more(300)
        wait_for(lambda: restart_count(cluster, standby) > restarts_before, 20, 0.1,
                 "the kubelet to restart the standby")
        wait_for(lambda: "joined by snapshot" in cluster.logs(standby), 20, 0.1,
                 "the restarted standby to join by snapshot")
        load.wait_for_more(100)
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    assert cluster.ready_cluster() == active  # no failover happened
    assert state_of(cluster, standby) == state_of(cluster, active)


def restart_count(cluster: IdCluster, pod: str) -> int:
    statuses = json.loads(cluster.dev.kubectl("get", "pod", pod, "-o", "json").stdout)
    return sum(c.get("restartCount", 0) for c in statuses["status"].get("containerStatuses", []))


def test_cli_call_and_status_through_the_client_service(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": cluster.name},
        "spec": {"selector": {"gencluster.io/cluster": cluster.name,
                              "gencluster.io/role": "active"},
                 "ports": [{"name": "grpc", "port": PORT, "targetPort": "grpc"}]},
    }
    cluster.dev.kubectl("apply", "-f", "-", input=json.dumps(service))
    wait_for(lambda: cluster.dev.kubectl(
        "get", "service", cluster.name, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"
    ).stdout, 20, 0.1, "the Service proxy to publish the Service")
    before = current_value(Client(cluster.addresses(), timeout=20))
    # The Service routes to the pod labelled active (the proxy needs it Ready first).
    def call_through_the_service() -> str:
        result = cluster.dev.gencluster("call", cluster.name, '"next_value"', check=False)
        return result.stdout if result.returncode == 0 else ""

    assert json.loads(wait_for(call_through_the_service, 20, 0.2, "gencluster call")) == (
        before + 1
    )
    status = json.loads(cluster.dev.gencluster("status", cluster.name).stdout)
    roles = {replica["identity"]: replica["role"] for replica in status["replicas"]}
    assert roles == {cluster.pod_name(i): "active" if cluster.pod_name(i) == active
                     else "standby" for i in range(cluster.replicas)}
    failed = cluster.dev.gencluster("call", cluster.name, "{not json", check=False)
    assert failed.returncode == 1 and "REQUEST is not valid JSON" in failed.stderr


def test_init_refusing_its_args_exits_78_without_taking_the_lease(
    dev_cluster: DevClusterProcess,
) -> None:
    broken = IdCluster(dev_cluster, "badargs", secrets.token_urlsafe(32), 1,
                       args={"start": -1})
    broken.create()
    pod = broken.pod_name(0)

    def exit_code() -> int | None:
        status = json.loads(dev_cluster.kubectl("get", "pod", pod, "-o", "json").stdout)
        for container in status["status"].get("containerStatuses", []):
            state = container.get("lastState", {}).get("terminated") or container.get(
                "state", {}).get("terminated")
            if state:
                return state["exitCode"]
        return None

    assert wait_for(exit_code, 30, 0.2, "the container to exit") == 78
    logs = dev_cluster.kubectl("logs", pod, check=False).stdout + dev_cluster.kubectl(
        "logs", pod, "--previous", check=False).stdout
    assert "GENCLUSTER_ARGS: gencluster_examples.id_server:IdServer init(args) raised " \
           "ValueError: args.start must be a non-negative integer" in logs
    assert not broken.holder()
    dev_cluster.kubectl("delete", "pod", pod, "--wait=false")
    wait_for(lambda: dev_cluster.kubectl("get", "pod", pod, check=False).returncode != 0,
             30, 0.2, "the crash-looping pod to be deleted")
