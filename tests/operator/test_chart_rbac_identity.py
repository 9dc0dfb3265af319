"""The operator of every operator test runs as the Helm chart's ServiceAccount, with exactly
the chart's RBAC, on a control plane that enforces it: what it may and may not do."""

from __future__ import annotations

import pytest
from gencluster_testing.chart_rbac import NAMESPACE, operator_kubeconfig
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess

pytestmark = pytest.mark.integration


def can_i(cluster: DevClusterProcess, *args: str) -> str:
    return cluster.kubectl("auth", "can-i", *args, "--kubeconfig",
                           str(operator_kubeconfig(cluster)), check=False).stdout.strip()


def test_the_operator_runs_with_the_charts_permissions_and_no_more(
    dev_cluster: DevClusterProcess, operator: OperatorProcess,
) -> None:
    assert str(operator_kubeconfig(dev_cluster)) in operator.process.args
    assert can_i(dev_cluster, "patch", "clusteredservers.gencluster.io", "-A") == "yes"
    assert can_i(dev_cluster, "create", "pods", "-n", "default") == "yes"
    assert can_i(dev_cluster, "create", "leases.coordination.k8s.io", "-n", "default") == "yes"
    assert can_i(dev_cluster, "list", "secrets", "-n", "default") == "no"
    assert can_i(dev_cluster, "delete", "secrets", "-n", "default") == "no"
    assert can_i(dev_cluster, "create", "clusterroles.rbac.authorization.k8s.io") == "no"
    assert can_i(dev_cluster, "delete", "namespaces") == "no"
    assert can_i(dev_cluster, "get", "pods", "-n", NAMESPACE) == "yes"
