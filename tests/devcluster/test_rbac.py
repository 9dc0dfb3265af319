"""RBAC enforced by the local control plane, through the real kubectl: a user bound to a Role
with only get/list on clusteredservers gets kube-apiserver's 403 on create, `kubectl auth
can-i` answers as kube-apiserver does, a ServiceAccount token holds exactly what its bindings
grant, impersonation needs the `impersonate` verb, and nobody grants what they do not hold."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess

pytestmark = pytest.mark.integration

NAMESPACE = "rbac-test"
CLUSTERED_SERVER = json.dumps({
    "apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
    "metadata": {"name": "ids", "namespace": NAMESPACE},
    "spec": {"server": "gencluster_examples.id_server:IdServer"},
})


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> Iterator[DevClusterProcess]:
    dev_cluster.kubectl("create", "namespace", NAMESPACE)
    dev_cluster.kubectl("create", "role", "csrv-reader", "-n", NAMESPACE, "--verb=get,list",
                        "--resource=clusteredservers.gencluster.io")
    dev_cluster.kubectl("create", "rolebinding", "jane-reads", "-n", NAMESPACE,
                        "--role=csrv-reader", "--user=jane")
    yield dev_cluster


def can_i(cluster: DevClusterProcess, *args: str) -> tuple[int, str]:
    result = cluster.kubectl("auth", "can-i", *args, check=False)
    return result.returncode, result.stdout.strip()


def test_a_reader_is_refused_create_with_kube_apiservers_message(
    cluster: DevClusterProcess,
) -> None:
    listed = cluster.kubectl("get", "csrv", "-n", NAMESPACE, "--as", "jane", check=False)
    assert listed.returncode == 0, listed.stderr
    created = cluster.kubectl("create", "-f", "-", "--as", "jane", input=CLUSTERED_SERVER,
                              check=False)
    assert created.returncode != 0
    assert created.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": '
        'clusteredservers.gencluster.io is forbidden: User "jane" cannot create resource '
        '"clusteredservers" in API group "gencluster.io" in the namespace "rbac-test"')
    other = cluster.kubectl("get", "csrv", "-n", "default", "--as", "jane", check=False)
    assert "cannot list resource" in other.stderr and 'namespace "default"' in other.stderr


def test_auth_can_i_answers_as_kube_apiserver_does(cluster: DevClusterProcess) -> None:
    assert can_i(cluster, "list", "clusteredservers.gencluster.io", "-n", NAMESPACE,
                 "--as", "jane") == (0, "yes")
    assert can_i(cluster, "create", "clusteredservers.gencluster.io", "-n", NAMESPACE,
                 "--as", "jane") == (1, "no")
    assert can_i(cluster, "get", "pods", "-n", NAMESPACE, "--as", "jane") == (1, "no")
    assert can_i(cluster, "create", "pods", "-n", NAMESPACE) == (0, "yes"), "the admin"
    listing = cluster.kubectl("auth", "can-i", "--list", "-n", NAMESPACE, "--as", "jane")
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert ["clusteredservers.gencluster.io", "[]", "[]", "[get", "list]"] in rows, rows
    assert any(row[0] == "selfsubjectaccessreviews.authorization.k8s.io" for row in rows)


def test_a_service_account_token_holds_only_what_is_bound(cluster: DevClusterProcess) -> None:
    cluster.kubectl("create", "serviceaccount", "bot", "-n", NAMESPACE)
    token = cluster.kubectl("create", "token", "bot", "-n", NAMESPACE).stdout.strip()
    secrets = cluster.kubectl("get", "secrets", "-n", NAMESPACE, "--token", token, check=False)
    assert secrets.returncode != 0
    assert ('secrets is forbidden: User "system:serviceaccount:rbac-test:bot" cannot list '
            'resource "secrets" in API group "" in the namespace "rbac-test"') in secrets.stderr
    cluster.kubectl("create", "rolebinding", "bot-reads", "-n", NAMESPACE,
                    "--role=csrv-reader", f"--serviceaccount={NAMESPACE}:bot")
    listed = cluster.kubectl("get", "csrv", "-n", NAMESPACE, "--token", token, check=False)
    assert listed.returncode == 0, listed.stderr
    impersonating = cluster.kubectl("get", "csrv", "-n", NAMESPACE, "--token", token,
                                    "--as", "admin", check=False)
    assert ('users "admin" is forbidden: User "system:serviceaccount:rbac-test:bot" cannot '
            'impersonate resource "users" in API group "" at the cluster scope'
            ) in impersonating.stderr


def test_nobody_grants_a_permission_they_do_not_hold(cluster: DevClusterProcess) -> None:
    cluster.kubectl("create", "role", "role-writer", "-n", NAMESPACE,
                    "--verb=create,get", "--resource=roles.rbac.authorization.k8s.io,pods")
    cluster.kubectl("create", "rolebinding", "alex-writes-roles", "-n", NAMESPACE,
                    "--role=role-writer", "--user=alex")
    held = cluster.kubectl("create", "role", "pod-creator", "-n", NAMESPACE, "--verb=create",
                           "--resource=pods", "--as", "alex", check=False)
    assert held.returncode == 0, held.stderr
    escalated = cluster.kubectl("create", "role", "pod-deleter", "-n", NAMESPACE,
                                "--verb=delete", "--resource=pods", "--as", "alex", check=False)
    assert escalated.returncode != 0
    assert "is attempting to grant RBAC permissions not currently held" in escalated.stderr
    assert cluster.kubectl("get", "role", "pod-deleter", "-n", NAMESPACE,
                           check=False).returncode != 0, "nothing was created"
