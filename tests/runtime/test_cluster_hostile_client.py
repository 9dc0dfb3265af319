"""A hostile client against three real replicas while a well-behaved client keeps calling
(issue #12, the end-to-end check): oversized request ids, a poison request (a handler that
raises SystemExit), request ids reused with other requests, and 1,000 subscribers held open.
Every well-behaved call succeeds (the client's own retries allowed), at most one failover
happens, no pod restarts, and every pod's resident memory stays under RSS_BOUND.

A request that ends its process (`os._exit`, a crash in C code) is the other kind of poison:
it may take down two actives before the quarantine refuses it, and is checked on its own in
test_cluster_poison.py."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from gencluster import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster_dev.network.faults import FaultInjector
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster

pytestmark = pytest.mark.integration

POD_SERVERS = Path(__file__).parent / "pod_servers"
SUBSCRIBERS = 1000
RSS_BOUND = 512 * 1024 * 1024
"""Per pod (every process of its container), in bytes: an idle replica here is ~60-90 MiB;
a reply table or subscriber list growing without bound would pass this quickly."""


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    env = [{"name": "PYTHONPATH", "value": str(POD_SERVERS)}]
    group = IdCluster(dev_cluster, "hostile", secrets.token_urlsafe(32), 3,
                      server="poison_server:PoisonServer",
                      extra_spec={"template": {"spec": {"env": env}}})
    group.create()
    group.ready_cluster()
    yield group


def restarts(cluster: IdCluster) -> int:
    counts = cluster.dev.kubectl(
        "get", "pods", "-l", "gencluster.io/cluster=hostile", "-o",
        "jsonpath={.items[*].status.containerStatuses[*].restartCount}",
    ).stdout.split()
    return sum(int(count) for count in counts)


def resident_bytes(cluster: IdCluster) -> dict[str, int]:
    """Each pod's resident memory: the sum of VmRSS over its container's processes."""
    found: dict[str, int] = {}
    for pod in FaultInjector(cluster.dev.dir).pods():
        if not pod.name.startswith("hostile-"):
            continue
        total = 0
        for pid in pod.pids.values():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        if total:
            found[pod.name] = max(total, found.get(pod.name, 0))
    return found


def call(stub: pb_grpc.ClientStub, request_id: str, payload: object) -> grpc.StatusCode:
    """One raw Call; the gRPC code it ended with (OK when answered)."""
    try:
        stub.Call(pb.CallRequest(request_id=request_id, payload=json.dumps(payload).encode()),
                  timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_a_hostile_client_cannot_hurt_a_well_behaved_one(cluster: IdCluster) -> None:
    active = cluster.ready_cluster()
    transitions = cluster.lease()["spec"].get("leaseTransitions", 0)
    values: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def well_behaved() -> None:
        with Client(cluster.addresses(), timeout=60) as client:
            while not stop.is_set():
                try:
                    values.append(client.call("next_value"))
                except Exception as error:
                    failures.append(error)
                    return

    caller = threading.Thread(target=well_behaved, daemon=True)
    caller.start()
    wait_for(lambda: len(values) >= 50 or failures, 60, 0.05, "well-behaved calls")

    channel = grpc.insecure_channel(cluster.address(active), options=[
        ("grpc.max_send_message_length", 8 * 1024 * 1024)])
    stub = pb_grpc.ClientStub(channel)
    outcomes: dict[str, list[grpc.StatusCode]] = {
        "oversized id": [], "poison": [], "reused id": []}
    subscriptions = [stub.Subscribe(pb.SubscribeRequest(topic=f"t{n % 10}"))
                     for n in range(SUBSCRIBERS)]
    try:
        for round_number in range(20):
            outcomes["oversized id"].append(call(stub, "x" * (1024 * 1024), "next_value"))
            outcomes["poison"].append(call(stub, str(uuid.uuid4()), "exit"))
            reused = f"reused-{round_number}"
            call(stub, reused, "next_value")
            outcomes["reused id"].append(call(stub, reused, "current"))
        count = len(values)
        wait_for(lambda: len(values) >= count + 50 or failures, 60, 0.05,
                 "well-behaved calls while 1,000 subscribers are held")
        memory = resident_bytes(cluster)
        held = sum(1 for subscription in subscriptions if subscription.is_active())
    finally:
        for subscription in subscriptions:
            subscription.cancel()
        channel.close()
        stop.set()
        caller.join(90)

    assert not failures, failures
    assert held == SUBSCRIBERS, f"{held} subscriptions still open"
    assert len(values) == len(set(values)) and values == sorted(values)
    assert set(outcomes["oversized id"]) == {grpc.StatusCode.INVALID_ARGUMENT}
    # SystemExit in the handler fails that call only: answered (a handler error), no failover.
    assert set(outcomes["poison"]) == {grpc.StatusCode.OK}
    assert set(outcomes["reused id"]) == {grpc.StatusCode.FAILED_PRECONDITION}
    taken_over = cluster.lease()["spec"].get("leaseTransitions", 0) - transitions
    assert taken_over <= 1, f"{taken_over} failovers"
    assert restarts(cluster) == 0, "no pod restarted"
    assert len(memory) == 3, memory
    print(f"\nresident memory per pod: {({k: v >> 20 for k, v in memory.items()})} MiB; "
          f"{len(values)} well-behaved calls")
    assert max(memory.values()) < RSS_BOUND, memory
