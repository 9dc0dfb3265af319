"""Each ClusteredServer's NetworkPolicy, enforced by the local control plane (nftables keyed on
per-pod uids): a pod of ClusteredServer B cannot open a connection to A's peer port (Peer and
Admin over mutual TLS) nor to its metrics port (which carries the Admin HTTP bridge) while A's
grpc (client) port stays open to it and A's own pods keep replicating (over that peer port);
disabling the policy gives B's pod its reach back.

B's pod connects from inside itself (`kubectl exec`, which runs as the pod's uid, like its
container), the same path a compromised server pod would take."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    get_json,
    namespace_for,
    serving,
    start_id_server,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.fault

if os.geteuid() != 0 or shutil.which("nft") is None:
    pytest.skip("NetworkPolicy enforcement needs root and nft", allow_module_level=True)

NAME = "id-server"
DEADLINE = 90.0
METRICS_PORT = 9090
PEER_PORT = 50052
PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error", exc)
"""


def probe_from(cluster: DevClusterProcess, namespace: str, pod: str, ip: str, port: int) -> str:
    """What a TCP connection opened inside `pod` to ip:port gives: open, timeout or error."""
    result = cluster.kubectl("exec", "-n", namespace, pod, "--", sys.executable, "-c", PROBE,
                             ip, str(port), check=False)
    return result.stdout.strip() or f"exec failed: {result.stderr.strip()}"


def pod_ips(cluster: DevClusterProcess, namespace: str) -> dict[str, str]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"gencluster.io/cluster={NAME}")
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods["items"]
            if (p.get("status") or {}).get("podIP")}


def test_foreign_pod_is_kept_off_the_admin_port_until_the_policy_goes(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest
) -> None:
    base = namespace_for(request.node.name)[:40]
    ns_a, ns_b = f"{base}-a", f"{base}-b"
    a = start_id_server(dev_cluster, operator, ns_a, DEADLINE)
    start_id_server(dev_cluster, operator, ns_b, DEADLINE)

    policy = wait_for(lambda: get_json(dev_cluster, "networkpolicy", "-n", ns_a)
                      ["items"], DEADLINE, message="A's NetworkPolicy")[0]
    (owner,) = policy["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ClusteredServer", NAME,
                                                            a["metadata"]["uid"])
    active_a = a["status"]["activePod"]
    ip_a = pod_ips(dev_cluster, ns_a)[active_a]
    stranger = f"{NAME}-0"  # a pod of B

    def from_b(port: int) -> str:
        return probe_from(dev_cluster, ns_b, stranger, ip_a, port)

    wait_for(lambda: from_b(METRICS_PORT) == "timeout", DEADLINE,
             message=lambda: f"B's pod cut off A's metrics port: {from_b(METRICS_PORT)}")
    assert from_b(PEER_PORT) == "timeout"  # Peer and Admin: dropped, not just refused by TLS
    assert from_b(a["spec"]["port"]) == "open"  # the client port is for everyone
    standby = next(p for p in pod_ips(dev_cluster, ns_a) if p != active_a)
    assert probe_from(dev_cluster, ns_a, standby, ip_a, METRICS_PORT) == "open"
    assert probe_from(dev_cluster, ns_a, standby, ip_a, PEER_PORT) == "open"
    # A still replicates under its policy: Ready, every standby in sync
    assert wait_for(lambda: serving(dev_cluster, ns_a, NAME), DEADLINE, message="A serving")

    dev_cluster.kubectl("patch", "csrv", NAME, "-n", ns_a, "--type", "merge", "-p",
                        '{"spec": {"networkPolicy": {"enabled": false}}}')

    def gone() -> bool:
        listing: dict[str, Any] = get_json(dev_cluster, "networkpolicy", "-n", ns_a)
        return not listing["items"]

    wait_for(gone, DEADLINE, message="A's NetworkPolicy deleted once disabled")
    wait_for(lambda: from_b(METRICS_PORT) == "open", DEADLINE,
             message=lambda: f"B's pod reaches A's metrics port again: {from_b(METRICS_PORT)}")
    assert from_b(PEER_PORT) == "open"  # the network no longer stops it; mutual TLS still does
