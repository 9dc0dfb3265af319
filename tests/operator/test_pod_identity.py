"""No moving into a neighbour, end to end on the local control plane with RBAC and admission
enforced (the operator runs with the chart's RBAC, and the chart's ValidatingAdmissionPolicy is
applied with it): a pod of ClusteredServer B, with its own ServiceAccount token, cannot relabel
itself into A (kube-apiserver's denial); a pod that carries A's label without being A's is never
called by the operator (so never receives A's token) and is reported; and users get what
their roles say, through the real kubectl, including the chart's ClusterRoles aggregated into
Kubernetes' `view` and `edit`."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    clustered_server,
    create_namespace,
    events,
    get_json,
    serving,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "pod-identity"
POLICY = "gencluster-pod-labels"


def clustered(name: str, replicas: int) -> str:
    return json.dumps({
        "apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"server": "gencluster_examples.id_server:IdServer", "replicas": replicas}})


@pytest.fixture(scope="module")
def two_clusters(dev_cluster: DevClusterProcess,
                 operator: OperatorProcess) -> Iterator[DevClusterProcess]:
    create_namespace(dev_cluster, NAMESPACE)
    for name in ("a", "b"):
        dev_cluster.kubectl("apply", "-f", "-", input=clustered(name, 1))
    for name in ("a", "b"):
        wait_for(lambda name=name: serving(dev_cluster, NAMESPACE, name), 90,
                 message=lambda: f"a and b serving\n{operator.output()[-3000:]}")
    yield dev_cluster


def pod_token(cluster: DevClusterProcess, name: str) -> str:
    """The token pod `<name>-0` itself holds (its ServiceAccount's, as the kubelet mounted it
    at /var/run/secrets/kubernetes.io/serviceaccount/token)."""
    pod = get_json(cluster, "pod", f"{name}-0", "-n", NAMESPACE)
    assert pod["spec"]["serviceAccountName"] == f"{name}-gencluster"
    metadata = pod["metadata"]
    directory = cluster.dir / "pods" / f"{NAMESPACE}_{metadata['name']}_{metadata['uid']}"
    return (directory / "serviceaccount" / "token").read_text().strip()


def test_a_pod_of_b_cannot_relabel_itself_into_a(two_clusters: DevClusterProcess) -> None:
    cluster = two_clusters
    token = pod_token(cluster, "b")
    # its role label it may set (a server-side dry run passes through admission, stores
    # nothing)
    role = cluster.kubectl("label", "pod", "b-0", "-n", NAMESPACE, "--token", token,
                           "--overwrite", "--dry-run=server", "gencluster.io/role=standby",
                           check=False)
    assert role.returncode == 0, role.stderr
    moved = cluster.kubectl("label", "pod", "b-0", "-n", NAMESPACE, "--token", token,
                            "--overwrite", "gencluster.io/cluster=a", check=False)
    assert moved.returncode != 0
    assert moved.stderr.strip() == (
        f'Error from server (Forbidden): pods "b-0" is forbidden: ValidatingAdmissionPolicy '
        f"'{POLICY}' with binding '{POLICY}' denied request: "
        f"system:serviceaccount:{NAMESPACE}:b-gencluster may change only the "
        "gencluster.io/role label of pod b-0")
    disowned = cluster.kubectl("patch", "pod", "b-0", "-n", NAMESPACE, "--token", token,
                               "--type=json", "-p",
                               '[{"op": "remove", "path": "/metadata/ownerReferences"}]',
                               check=False)
    assert "may not change the ownerReferences of pod b-0" in disowned.stderr
    pod = get_json(cluster, "pod", "b-0", "-n", NAMESPACE)
    assert pod["metadata"]["labels"]["gencluster.io/cluster"] == "b"
    assert pod["metadata"]["ownerReferences"][0]["name"] == "b"
    # RBAC keeps it off A's pods altogether
    other = cluster.kubectl("label", "pod", "a-0", "-n", NAMESPACE, "--token", token,
                            "--overwrite", "gencluster.io/role=standby", check=False)
    assert (f'pods "a-0" is forbidden: User "system:serviceaccount:{NAMESPACE}:b-gencluster" '
            f'cannot patch resource "pods" in API group "" in the namespace "{NAMESPACE}"'
            ) in other.stderr


SPY = """
import os, socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((os.environ["POD_IP"], 50051))
listener.listen(16)
print("listening", flush=True)
count = 0
while True:
    connection, _ = listener.accept()
    count += 1
    print(f"connection {count}", flush=True)
    connection.close()
"""


def test_a_pod_wearing_as_label_is_never_called_and_is_reported(
    two_clusters: DevClusterProcess, operator: OperatorProcess,
) -> None:
    """What admission prevents, done by an admin: a pod controlled by B but labelled as A's
    (active, even). The operator of A ignores it: no connection ever reaches its gRPC port,
    so A's token is never sent to it; a ForeignPodIgnored Event names it."""
    cluster = two_clusters
    b = clustered_server(cluster, NAMESPACE, "b")
    spy = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "spy", "namespace": NAMESPACE,
                     "labels": {"gencluster.io/cluster": "a", "gencluster.io/role": "active",
                                "app.kubernetes.io/managed-by": "gencluster-operator"},
                     "ownerReferences": [{
                         "apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
                         "name": "b", "uid": b["metadata"]["uid"], "controller": True}]},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "server", "image": "python:3", "command": ["python", "-c", SPY],
            "env": [{"name": "POD_IP",
                     "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(spy))

    def spy_log() -> str:
        return cluster.kubectl("logs", "spy", "-n", NAMESPACE, check=False).stdout

    wait_for(lambda: "listening" in spy_log(), 60, message="the spy pod listening")
    address = get_json(cluster, "pod", "spy", "-n", NAMESPACE)["status"]["podIP"]
    with socket.create_connection((address, 50051), timeout=10):
        pass  # the spy sees connections: this one must be its only one
    wait_for(lambda: "connection 1" in spy_log(), 30, message="the spy counting")
    reported = wait_for(lambda: [e for e in events(cluster, NAMESPACE, "ForeignPodIgnored")
                                 if e["involvedObject"]["name"] == "a"], 60,
                        message=lambda: f"ForeignPodIgnored\n{operator.output()[-3000:]}")
    assert reported[0]["type"] == "Warning"
    assert reported[0]["message"] == (
        "pod spy carries this ClusteredServer's label and is ignored: its controller is "
        f"ClusteredServer b (uid {b['metadata']['uid']}), not this ClusteredServer")
    # Passes that call every pod A owns, several times: a scale-up to two in-sync pods.
    cluster.kubectl("scale", "csrv", "a", "-n", NAMESPACE, "--replicas=2")
    wait_for(lambda: serving(cluster, NAMESPACE, "a"), 90,
             message=lambda: f"a serving with 2 pods\n{operator.output()[-3000:]}")
    status = clustered_server(cluster, NAMESPACE, "a")["status"]
    assert status["activePod"] != "spy"
    assert "spy" not in json.dumps(status.get("standbys"))
    assert "connection 2" not in spy_log(), spy_log()
    assert len(events(cluster, NAMESPACE, "ForeignPodIgnored")) == 1, "reported once"
    cluster.kubectl("delete", "pod", "spy", "-n", NAMESPACE)


def can_i(cluster: DevClusterProcess, *args: str) -> tuple[int, str]:
    result = cluster.kubectl("auth", "can-i", *args, check=False)
    return result.returncode, result.stdout.strip()


def test_users_get_what_their_roles_say(two_clusters: DevClusterProcess) -> None:
    cluster = two_clusters
    cluster.kubectl("create", "role", "csrv-reader", "-n", NAMESPACE, "--verb=get,list",
                    "--resource=clusteredservers.gencluster.io")
    cluster.kubectl("create", "rolebinding", "jane-reads", "-n", NAMESPACE,
                    "--role=csrv-reader", "--user=jane")
    created = cluster.kubectl("create", "-f", "-", "--as", "jane", input=clustered("c", 1),
                              check=False)
    assert created.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": '
        'clusteredservers.gencluster.io is forbidden: User "jane" cannot create resource '
        f'"clusteredservers" in API group "gencluster.io" in the namespace "{NAMESPACE}"')
    assert can_i(cluster, "create", "clusteredservers", "-n", NAMESPACE, "--as", "jane") == (
        1, "no")
    assert can_i(cluster, "list", "clusteredservers", "-n", NAMESPACE, "--as", "jane") == (
        0, "yes")
    # Kubernetes' view and edit, with the chart's ClusterRoles aggregated into them
    cluster.kubectl("create", "rolebinding", "vic-views", "-n", NAMESPACE,
                    "--clusterrole=view", "--user=vic")
    cluster.kubectl("create", "rolebinding", "ed-edits", "-n", NAMESPACE,
                    "--clusterrole=edit", "--user=ed")
    got = cluster.kubectl("get", "csrv", "a", "-n", NAMESPACE, "--as", "vic", check=False)
    assert got.returncode == 0, got.stderr
    assert can_i(cluster, "create", "clusteredservers", "-n", NAMESPACE, "--as", "vic") == (
        1, "no")
    assert can_i(cluster, "get", "clusteredservers", "-n", "default", "--as", "vic") == (
        1, "no"), "a RoleBinding grants view in its namespace only"
    assert can_i(cluster, "create", "clusteredservers", "-n", NAMESPACE, "--as", "ed") == (
        0, "yes")
    assert can_i(cluster, "patch", "clusteredservers/scale", "-n", NAMESPACE,
                 "--as", "ed") == (0, "yes")
