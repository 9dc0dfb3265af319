"""Pure builder of a ClusteredServer's NetworkPolicy, and who the operator's pods are.

What the policy can and cannot separate follows from the pod's ports (docs/runtime-config.md):

- `grpc` (`spec.port`) carries the Client, Peer and Admin services together. Clients in any
  namespace must reach it (kube-proxy keeps their pod address, so a policy sees them), so it is
  open to every source: a NetworkPolicy works per port, and cannot tell a Peer call from a
  Client call on the same port. Peer and Admin calls on it are guarded by the runtime's
  authentication, not by this policy;
- `metrics` serves `/metrics` and the Admin service bridged to HTTP (docs/tooling.md), so it is
  an admin port: only the ClusteredServer's own pods, the operator's pods (by the chart's
  selector labels, in the operator's namespace) and, when `spec.networkPolicy.metricsNamespace`
  is set, every pod of that namespace (a Prometheus) may open connections to it;
- everything else a pod might listen on is closed to other pods (the policy isolates the pods
  for ingress). The node itself (kubelet probes, the API server's pods/proxy on most
  clusters) is not restricted by NetworkPolicy semantics of common CNIs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gencluster_operator import names
from gencluster_operator.desired import common_labels, owner_reference
from gencluster_operator.spec import cluster_spec

API_VERSION = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (since Kubernetes 1.21): selects one by name."""

OPERATOR_LABELS_ENV = "GENCLUSTER_OPERATOR_POD_LABELS"
"""`key=value,key=value`: the operator pods' selector labels (the chart sets it)."""
OPERATOR_NAMESPACE_ENV = "POD_NAMESPACE"


@dataclass(frozen=True)
class OperatorPods:
    """The operator's pods as a NetworkPolicy peer: their namespace and selector labels."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)


def operator_pods_from_env(env: Mapping[str, str]) -> OperatorPods | None:
    """The operator's own pods, from the variables the chart's Deployment sets; None when the
    operator does not run as labelled pods (a local process: its traffic is the node's).

    A malformed label list is an error, not a guess: a wrong selector would cut the operator
    off every pod's admin port."""
    text = env.get(OPERATOR_LABELS_ENV, "").strip()
    namespace = env.get(OPERATOR_NAMESPACE_ENV, "").strip()
    if not text:
        return None
    if not namespace:
        raise ValueError(f"{OPERATOR_LABELS_ENV} is set but {OPERATOR_NAMESPACE_ENV} is not: "
                         "the operator's pods are selected in their namespace")
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{OPERATOR_LABELS_ENV}: {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return OperatorPods(namespace=namespace, labels=labels)


def _namespace(name: str) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_NAME_LABEL: name}}


def network_policy(resource: Mapping[str, Any],
                   operator: OperatorPods | None) -> dict[str, Any]:
    """The NetworkPolicy of one ClusteredServer (module docstring), named like it."""
    spec = cluster_spec(resource)
    own_pods = {"matchLabels": names.cluster_selector(spec.name)}
    trusted: list[dict[str, Any]] = [{"podSelector": own_pods}]
    if operator is not None:
        trusted.append({"namespaceSelector": _namespace(operator.namespace),
                        "podSelector": {"matchLabels": dict(operator.labels)}})
    metrics_port = [{"protocol": "TCP", "port": names.METRICS_PORT_NAME}]
    ingress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "TCP", "port": names.GRPC_PORT_NAME}]},
        {"from": trusted, "ports": metrics_port},
    ]
    if spec.network_policy.metrics_namespace:
        ingress.append({"from": [{"namespaceSelector": _namespace(
            spec.network_policy.metrics_namespace)}], "ports": metrics_port})
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": common_labels(spec.name),
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": {"podSelector": own_pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }
