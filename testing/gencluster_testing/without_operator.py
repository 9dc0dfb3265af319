"""A ClusteredServer's children built by the operator's own pure builders, for tests and
benchmarks that run the runtime without the operator.

Runtime tests and `bench/replication.py` want real pods with the Lease, the peer-token Secret
and the ServiceAccount, but no reconciler that would heal a killed pod or clear a Lease behind
the test's back. Building those objects with `gencluster_operator.desired` (instead of a hand
written copy) keeps them identical to what the operator creates: same env contract, probes,
ports and labels.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from typing import Any

from gencluster_operator import desired

from gencluster_testing.devcluster_process import DevClusterProcess


def clustered_server(
    name: str,
    *,
    server: str = "gencluster_examples.id_server:IdServer",
    replicas: int = 3,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    """A ClusteredServer object as the API would return it (with a uid, never stored)."""
    return {
        "apiVersion": "gencluster.io/v1alpha1",
        "kind": "ClusteredServer",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                     "generation": 1},
        # Plaintext unless the test asks for TLS (`tls={"enabled": True}`): the operator issues
        # the certificates, and these tests run without it.
        "spec": {"server": server, "replicas": replicas, "tls": {"enabled": False}, **spec},
    }


def without_owner(child: Mapping[str, Any]) -> dict[str, Any]:
    """`child` minus its ownerReferences: the owner is never created, so the garbage collector
    would otherwise delete the child at once."""
    result = copy.deepcopy(dict(child))
    result["metadata"].pop("ownerReferences", None)
    return result


def pod(resource: Mapping[str, Any], ordinal: int) -> dict[str, Any]:
    return without_owner(desired.pod(resource, ordinal))


def children(resource: Mapping[str, Any], token: str) -> list[dict[str, Any]]:
    """Everything the operator would create for `resource`, pods last (after their
    PersistentVolumeClaims, with `spec.persistence.enabled`)."""
    replicas = int(resource["spec"]["replicas"])
    static = desired.static_children(resource, token, range(replicas))
    claims = []
    if (resource["spec"].get("persistence") or {}).get("enabled"):
        claims = [desired.claim(resource, ordinal) for ordinal in range(replicas)]
    return [without_owner(child) for child in [*static, *claims]] + [
        pod(resource, ordinal) for ordinal in range(replicas)
    ]


def create(dev: DevClusterProcess, resource: Mapping[str, Any], token: str) -> None:
    """Apply every child in one `kubectl apply` of a List."""
    items = {"apiVersion": "v1", "kind": "List", "items": children(resource, token)}
    dev.kubectl("apply", "-n", resource["metadata"]["namespace"], "-f", "-",
                input=json.dumps(items))
