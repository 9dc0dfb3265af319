"""The ClusteredServer's NetworkPolicy: built as designed, and what it allows checked with the
local control plane's NetworkPolicy semantics (the ones its nftables enforcement compiles)."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_dev.machinery.netpol import PodEndpoint, allows, policy_problem
from gencluster_operator import desired, desired_network, names, spec
from gencluster_operator.desired_network import OperatorPods, operator_pods_from_env

from tests.operator.test_desired import crd_spec_schema
from tests.operator.test_plan import resource

pytestmark = pytest.mark.unit

OPERATOR = OperatorPods("gencluster-system", {"app.kubernetes.io/name": "gencluster",
                                              "app.kubernetes.io/component": "operator"})
NAMESPACES = {ns: {"kubernetes.io/metadata.name": ns}
              for ns in ("default", "gencluster-system", "monitoring", "other")}
GRPC, METRICS = 50051, names.metrics_port_for(50051)


def endpoint(namespace: str, name: str, labels: dict[str, str], k: int) -> PodEndpoint:
    pod = {"spec": {"containers": [{"ports": [
        {"name": names.GRPC_PORT_NAME, "containerPort": GRPC},
        {"name": names.METRICS_PORT_NAME, "containerPort": METRICS}]}]}}
    return PodEndpoint(namespace, name, labels, f"127.9.64.{k}", 300 + k, pod)


OWN_0 = endpoint("default", "id-0", names.cluster_selector("id"), 1)
OWN_1 = endpoint("default", "id-1", names.cluster_selector("id"), 2)
FOREIGN = endpoint("default", "b-0", names.cluster_selector("b"), 3)
OPERATOR_POD = endpoint("gencluster-system", "op", dict(OPERATOR.labels), 4)
OPERATOR_LOOKALIKE = endpoint("other", "op", dict(OPERATOR.labels), 5)
PROMETHEUS = endpoint("monitoring", "prom", {"app": "prometheus"}, 6)


def reach(policy: dict[str, Any], source: PodEndpoint, port: int) -> bool:
    return allows([policy], source, OWN_0, "TCP", port, NAMESPACES)


def test_crd_default_and_fields() -> None:
    schema = crd_spec_schema()["properties"]["networkPolicy"]
    assert schema["properties"]["enabled"]["default"] is spec.DEFAULT_NETWORK_POLICY_ENABLED
    assert "metricsNamespace" in schema["properties"]
    parsed = spec.cluster_spec(resource(networkPolicy={"metricsNamespace": "monitoring"}))
    assert parsed.network_policy == spec.NetworkPolicySpec(True, "monitoring")
    assert spec.cluster_spec(resource()).network_policy == spec.NetworkPolicySpec()


def test_policy_object_is_owned_and_valid() -> None:
    policy = desired_network.network_policy(resource(), OPERATOR)
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["name"] == "id" and policy["metadata"]["namespace"] == "default"
    assert policy["metadata"]["ownerReferences"] == [desired.owner_reference(resource())]
    assert policy["spec"]["podSelector"] == {"matchLabels": names.cluster_selector("id")}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy_problem(policy) is None
    assert desired.drift_patch(policy, policy) is None
    drifted = {**policy, "spec": {**policy["spec"], "ingress": [{}]}}
    assert desired.drift_patch(policy, drifted) == {"spec": {"ingress": policy["spec"]["ingress"]}}


def test_grpc_open_metrics_only_for_own_and_operator_pods() -> None:
    policy = desired_network.network_policy(resource(), OPERATOR)
    for source in (OWN_1, FOREIGN, OPERATOR_POD, PROMETHEUS):
        assert reach(policy, source, GRPC), source.name
    assert reach(policy, OWN_1, METRICS)
    assert reach(policy, OPERATOR_POD, METRICS)
    assert not reach(policy, FOREIGN, METRICS)
    assert not reach(policy, OPERATOR_LOOKALIKE, METRICS)  # right labels, wrong namespace
    assert not reach(policy, PROMETHEUS, METRICS)
    assert not reach(policy, OWN_1, 8080)                   # nothing else is open
    assert allows([policy], None, OWN_0, "TCP", METRICS, NAMESPACES)  # the node


def test_metrics_namespace_and_no_operator_pods() -> None:
    policy = desired_network.network_policy(
        resource(networkPolicy={"metricsNamespace": "monitoring"}), None)
    assert reach(policy, PROMETHEUS, METRICS)
    assert not reach(policy, PROMETHEUS, 8080)
    assert not reach(policy, OPERATOR_POD, METRICS)
    assert reach(policy, OWN_1, METRICS)


def test_operator_pods_from_env() -> None:
    assert operator_pods_from_env({}) is None
    assert operator_pods_from_env({"POD_NAMESPACE": "x"}) is None
    found = operator_pods_from_env({
        "POD_NAMESPACE": "gencluster-system",
        "GENCLUSTER_OPERATOR_POD_LABELS": "app.kubernetes.io/name=gencluster, a=b"})
    assert found == OperatorPods("gencluster-system", {"app.kubernetes.io/name": "gencluster",
                                                       "a": "b"})
    with pytest.raises(ValueError, match="POD_NAMESPACE"):
        operator_pods_from_env({"GENCLUSTER_OPERATOR_POD_LABELS": "a=b"})
    with pytest.raises(ValueError, match="not key=value"):
        operator_pods_from_env({"POD_NAMESPACE": "x", "GENCLUSTER_OPERATOR_POD_LABELS": "a"})
