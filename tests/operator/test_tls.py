"""TLS end to end, with the operator under the Helm chart's RBAC: ClusteredServers A and B in
one namespace, their certificates issued by the operator.

- a plaintext client of a pod is refused (the health port answers health checks only);
- a pod of B, with the certificate the operator gave it, cannot call A's Peer or Admin
  service (A trusts its own CA only), nor can a client without a certificate; a pod of A may
  read A's status but not steer it (Demote, Merge, PauseWrites, Switchover are the operator's);
- a pod of B mounts B's Secrets only;
- certificates are renewed under load (a lifetime of 90 s: renewed after 60) and every pod
  serves its new certificate, with no failed call and no acknowledged value lost.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml
from gencluster import Client
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.tls_identity import peer_server_name
from gencluster.wellknown import PEER_TOKEN_METADATA
from gencluster_operator.certificates import Facts, facts
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    cluster_client,
    create_namespace,
    get_json,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "tls"
A, B = "id-a", "id-b"
PORT, PEER_PORT, HEALTH_PORT = 50051, 50052, 50053
LIFETIME = 90
DEADLINE = 120.0


@pytest.fixture(scope="module")
def clusters(dev_cluster: DevClusterProcess, operator: OperatorProcess) -> Iterator[None]:
    create_namespace(dev_cluster, NAMESPACE)
    for name, replicas in ((A, 3), (B, 2)):
        manifest = yaml.safe_load(ID_SERVER.read_text())
        manifest["metadata"]["name"] = name
        manifest["spec"]["replicas"] = replicas
        manifest["spec"]["tls"] = {"certificateLifetimeSeconds": LIFETIME}
        dev_cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(manifest))
    for name in (A, B):
        wait_for(lambda name=name: serving(dev_cluster, NAMESPACE, name), DEADLINE,
                 message=lambda name=name: f"{name} Ready\n{operator.output()[-3000:]}")
    yield


def secret(cluster: DevClusterProcess, name: str) -> dict[str, bytes]:
    data = get_json(cluster, "secret", name, "-n", NAMESPACE)["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


def pod_ip(cluster: DevClusterProcess, pod: str) -> str:
    return str(get_json(cluster, "pod", pod, "-n", NAMESPACE)["status"]["podIP"])


def active_of(cluster: DevClusterProcess, name: str) -> str:
    return str(get_json(cluster, "csrv", name, "-n", NAMESPACE)["status"]["activePod"])


def code_of(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_a_plaintext_client_of_a_pod_is_refused(
    dev_cluster: DevClusterProcess, clusters: None
) -> None:
    ip = pod_ip(dev_cluster, active_of(dev_cluster, A))
    for port in (PORT, PEER_PORT):
        with grpc.insecure_channel(f"{ip}:{port}") as channel:
            code = code_of(lambda channel=channel: pb_grpc.ClientStub(channel).Call(
                pb.CallRequest(request_id="plain", payload=b'"current"', codec="json"),
                timeout=5))
        assert code is grpc.StatusCode.UNAVAILABLE, port  # no TLS handshake, no call
    # The plaintext health port serves grpc.health.v1 alone.
    with grpc.insecure_channel(f"{ip}:{HEALTH_PORT}") as channel:
        code = code_of(lambda: pb_grpc.ClientStub(channel).Call(
            pb.CallRequest(request_id="plain", payload=b'"current"', codec="json"), timeout=5))
        assert code is grpc.StatusCode.UNIMPLEMENTED
    with cluster_client(dev_cluster, NAMESPACE, A, f"{ip}:{PORT}", timeout=20) as client:
        assert isinstance(client.call("current"), int)


def test_a_pod_of_b_cannot_call_a_peer_or_admin_service(
    dev_cluster: DevClusterProcess, clusters: None
) -> None:
    b_pod = secret(dev_cluster, f"{B}-0-tls")  # what the operator gave B's pod
    # Even with A's peer token (it leaked), B's certificate opens nothing of A's.
    md = ((PEER_TOKEN_METADATA, secret(dev_cluster, f"{A}-peer-token")["token"].decode()),)
    a_bundle = secret(dev_cluster, f"{A}-ca")["ca.crt"]
    ip = pod_ip(dev_cluster, active_of(dev_cluster, A))
    as_b = grpc.ssl_channel_credentials(a_bundle, b_pod["tls.key"], b_pod["tls.crt"])
    options = [("grpc.ssl_target_name_override", peer_server_name(f"{A}-peers", NAMESPACE))]
    with grpc.secure_channel(f"{ip}:{PEER_PORT}", as_b, options=options) as channel:
        peer = pb_grpc.PeerStub(channel)
        admin = pb_grpc.AdminStub(channel)
        # A verifies client certificates against its own CA only: the handshake fails.
        assert code_of(lambda: peer.Promise(pb.PromiseRequest(identity=f"{B}-0", epoch=99),
                                            timeout=5, metadata=md)) is \
            grpc.StatusCode.UNAVAILABLE
        assert code_of(lambda: admin.Status(pb.StatusRequest(), timeout=5, metadata=md)) is \
            grpc.StatusCode.UNAVAILABLE
        assert code_of(lambda: admin.Demote(pb.DemoteRequest(), timeout=5, metadata=md)) is \
            grpc.StatusCode.UNAVAILABLE
    # On A's client port (TLS, no client certificate asked): the gate refuses Peer and Admin.
    with grpc.secure_channel(f"{ip}:{PORT}", grpc.ssl_channel_credentials(a_bundle),
                             options=[("grpc.ssl_target_name_override",
                                       f"{A}.{NAMESPACE}.svc")]) as channel:
        assert code_of(lambda: pb_grpc.AdminStub(channel).Status(
            pb.StatusRequest(), timeout=5, metadata=md)) is grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: pb_grpc.PeerStub(channel).Promise(
            pb.PromiseRequest(identity="x", epoch=99), timeout=5, metadata=md)) is \
            grpc.StatusCode.PERMISSION_DENIED
    assert serving(dev_cluster, NAMESPACE, A) is not None


def test_a_pod_of_a_reads_a_status_but_only_the_operator_steers(
    dev_cluster: DevClusterProcess, clusters: None
) -> None:
    active = active_of(dev_cluster, A)
    standby = next(p for p in pod_names(dev_cluster, NAMESPACE, A) if p != active)
    a_pod = secret(dev_cluster, f"{standby}-tls")
    ip = pod_ip(dev_cluster, active)
    credentials = grpc.ssl_channel_credentials(a_pod["ca.crt"], a_pod["tls.key"],
                                               a_pod["tls.crt"])
    options = [("grpc.ssl_target_name_override", peer_server_name(f"{A}-peers", NAMESPACE))]
    md = ((PEER_TOKEN_METADATA, secret(dev_cluster, f"{A}-peer-token")["token"].decode()),)
    with grpc.secure_channel(f"{ip}:{PEER_PORT}", credentials, options=options) as channel:
        admin = pb_grpc.AdminStub(channel)
        assert code_of(lambda: admin.Status(pb.StatusRequest(), timeout=5, metadata=md)) is \
            grpc.StatusCode.OK
        for name, request in (("Demote", pb.DemoteRequest()),
                              ("PauseWrites", pb.PauseWritesRequest(seconds=60)),
                              ("Switchover", pb.SwitchoverRequest(target=standby))):
            code = code_of(lambda name=name, request=request: getattr(admin, name)(
                request, timeout=5, metadata=md))
            assert code is grpc.StatusCode.PERMISSION_DENIED, name
        merge = code_of(lambda: admin.Merge(iter([pb.MergeChunk()]), timeout=5, metadata=md))
        assert merge is grpc.StatusCode.PERMISSION_DENIED
    assert active_of(dev_cluster, A) == active


def test_a_pod_of_b_mounts_b_secrets_only(dev_cluster: DevClusterProcess, clusters: None) -> None:
    for pod in pod_names(dev_cluster, NAMESPACE, B):
        spec = get_json(dev_cluster, "pod", pod, "-n", NAMESPACE)["spec"]
        mounted = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        referenced = {e["valueFrom"]["secretKeyRef"]["name"]
                      for c in spec["containers"] for e in c.get("env") or []
                      if "secretKeyRef" in (e.get("valueFrom") or {})}
        assert mounted == {f"{pod}-tls"}
        assert referenced == {f"{B}-peer-token"}


def served(ip: str) -> Facts:
    """The certificate the pod's client port presents now (not verified: only read)."""
    return facts(ssl.get_server_certificate((ip, PORT), timeout=5).encode())


def test_certificates_are_renewed_under_load_with_no_failed_call(
    dev_cluster: DevClusterProcess, clusters: None
) -> None:
    pods = pod_names(dev_cluster, NAMESPACE, A)
    ips = {pod: pod_ip(dev_cluster, pod) for pod in pods}
    # The first certificates are reissued once a pod's IP is known (a name they must carry);
    # start from the ones with it, so that what follows is a renewal by age.
    wait_for(lambda: all(ip in served(ip).ip_addresses for ip in ips.values()), DEADLINE,
             message="every pod serving a certificate with its IP")
    first = {pod: served(ip).fingerprint for pod, ip in ips.items()}
    values: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def caller(client: Client) -> None:
        with client:
            while not stop.is_set():
                try:
                    values.append(client.call("next_value"))
                except Exception as error:
                    failures.append(error)
                    return

    thread = threading.Thread(
        target=caller, args=(cluster_client(dev_cluster, NAMESPACE, A, timeout=60),),
        daemon=True)
    thread.start()
    try:
        renewed: dict[str, str] = {}

        def every_pod_serves_a_new_certificate() -> bool:
            assert not failures, failures
            for pod, ip in ips.items():
                if pod not in renewed:
                    try:
                        now = served(ip).fingerprint
                    except OSError:
                        continue
                    if now != first[pod]:
                        renewed[pod] = now
            return len(renewed) == len(ips)

        wait_for(every_pod_serves_a_new_certificate, LIFETIME * 3,
                 message=lambda: f"renewed certificates served (so far: {sorted(renewed)})")
        count = len(values)
        wait_for(lambda: len(values) > count + 20, DEADLINE, message="calls after renewal")
    finally:
        stop.set()
        thread.join(70)
    assert not failures, failures
    assert values == sorted(values) and len(set(values)) == len(values)
    # The peers kept replicating with the renewed certificates: every standby in sync.
    wait_for(lambda: serving(dev_cluster, NAMESPACE, A), DEADLINE, message="A in sync")
    assert json.loads(dev_cluster.gencluster("call", A, '"current"', "-n", NAMESPACE).stdout) \
        >= values[-1]
