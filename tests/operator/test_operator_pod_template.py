"""A ClusteredServer on a real cluster's terms (#15): the pod template fields a private
registry, a zone spread and default requests need reach the pods, and one replica works
with the defaults, scaled up and back down without losing the state."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    create_namespace,
    get_json,
    namespace_for,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "id-server"
DEADLINE = 90.0
SPREAD = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
          "whenUnsatisfiable": "ScheduleAnyway",
          "labelSelector": {"matchLabels": {"gencluster.io/cluster": NAME}}}


def apply(dev_cluster: DevClusterProcess, namespace: str, **spec: Any) -> None:
    manifest = yaml.safe_load(ID_SERVER.read_text())
    manifest["spec"].update(spec)
    create_namespace(dev_cluster, namespace)
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def ready(dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str,
          replicas: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        resource = serving(dev_cluster, namespace, NAME)
        if resource is None or resource["status"].get("readyReplicas") != replicas:
            return None
        return resource if len(pod_names(dev_cluster, namespace, NAME)) == replicas else None

    return wait_for(check, DEADLINE, message=lambda: f"{replicas} pods serving in {namespace}\n"
                    f"{operator.output()[-3000:]}")


def next_value(dev_cluster: DevClusterProcess, namespace: str) -> int:
    return int(json.loads(dev_cluster.gencluster("call", NAME, '"next_value"', "-n",
                                                 namespace).stdout))


def test_pull_secret_spread_and_default_requests_reach_every_pod(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    apply(dev_cluster, namespace, template={"spec": {
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "topologySpreadConstraints": [SPREAD],
        "resources": {"limits": {"memory": "1Gi"}},
    }})
    ready(dev_cluster, operator, namespace, 3)
    for pod in pod_names(dev_cluster, namespace, NAME):
        spec = get_json(dev_cluster, "pod", pod, "-n", namespace)["spec"]
        assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert spec["topologySpreadConstraints"] == [SPREAD]
        server = spec["containers"][0]
        assert server["resources"]["limits"] == {"memory": "1Gi"}
        requests = server["resources"]["requests"]
        assert requests["cpu"] == "100m", "the default request where the user set nothing"
        # The operator leaves memory to its limit (kube-apiserver then defaults the request
        # to the limit; the local control plane does not default it).
        assert requests.get("memory", "1Gi") == "1Gi"
    assert next_value(dev_cluster, namespace) == 1


def test_one_replica_with_the_defaults_serves_and_scales_without_losing_the_state(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest,
) -> None:
    namespace = namespace_for(request.node.name)
    apply(dev_cluster, namespace, replicas=1)
    resource = ready(dev_cluster, operator, namespace, 1)
    assert "minSyncStandbys" not in resource["spec"]["replication"]
    assert next_value(dev_cluster, namespace) == 1

    dev_cluster.kubectl("scale", "csrv", NAME, "-n", namespace, "--replicas=3")
    ready(dev_cluster, operator, namespace, 3)
    assert next_value(dev_cluster, namespace) == 2, "the state survived scaling up"

    dev_cluster.kubectl("scale", "csrv", NAME, "-n", namespace, "--replicas=1")
    ready(dev_cluster, operator, namespace, 1)
    assert next_value(dev_cluster, namespace) == 3, "the state survived scaling down to one"
    warnings = get_json(dev_cluster, "events", "-n", namespace,
                        "--field-selector", "type=Warning")["items"]
    assert not [e for e in warnings if "state is lost" in e.get("message", "")], warnings
