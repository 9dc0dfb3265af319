"""The operator talks only to pods it owns (observed.owned_pods): a pod that carries a
ClusteredServer's label is its pod only if its controller ownerReference is that
ClusteredServer (by uid) and its name is one the operator gives. Labels are writable by the pods
themselves; the owner's uid is not something a pod of another cluster can take."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_operator import desired
from gencluster_operator.observed import ForeignPod, owned_pods

pytestmark = pytest.mark.unit

A = {"apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
     "metadata": {"name": "a", "namespace": "apps", "uid": "uid-a", "generation": 1},
     "spec": {"server": "gencluster_examples.id_server:IdServer", "replicas": 3}}
B = {**A, "metadata": {**A["metadata"], "name": "b", "uid": "uid-b"}}


def pod_of(resource: dict[str, Any], ordinal: int, **labels: str) -> dict[str, Any]:
    pod = desired.pod(resource, ordinal)
    pod["metadata"]["uid"] = f"pod-{resource['metadata']['name']}-{ordinal}"
    pod["metadata"]["labels"].update(labels)
    return pod


def test_the_operators_own_pods_are_owned() -> None:
    pods = [pod_of(A, 0), pod_of(A, 1), pod_of(A, 2)]
    assert owned_pods(pods, A) == (pods, [])


def test_a_pod_of_another_cluster_relabelled_into_this_one_is_foreign() -> None:
    intruder = pod_of(B, 0, **{"gencluster.io/cluster": "a", "gencluster.io/role": "active"})
    owned, foreign = owned_pods([pod_of(A, 0), intruder], A)
    assert [p["metadata"]["name"] for p in owned] == ["a-0"]
    assert foreign == [ForeignPod(
        "b-0", "pod-b-0", "its controller is ClusteredServer b (uid uid-b), not this "
        "ClusteredServer")]


def test_a_pod_renamed_or_recreated_by_hand_is_foreign() -> None:
    by_hand = pod_of(A, 0)
    by_hand["metadata"]["ownerReferences"] = []
    odd_name = pod_of(A, 1)
    odd_name["metadata"]["name"] = "a-debug"
    same_name_other_kind = pod_of(A, 2)
    same_name_other_kind["metadata"]["ownerReferences"][0]["kind"] = "ReplicaSet"
    owned, foreign = owned_pods([by_hand, odd_name, same_name_other_kind], A)
    assert owned == []
    assert [(f.name, f.reason) for f in foreign] == [
        ("a-0", "it has no controller"),
        ("a-debug", "its name is not one of a's pod names (a-<ordinal>)"),
        ("a-2", "its controller is ReplicaSet a (uid uid-a), not this ClusteredServer")]


def test_pods_of_a_deleted_and_recreated_cluster_of_the_same_name_are_foreign() -> None:
    recreated = {**A, "metadata": {**A["metadata"], "uid": "uid-a-2"}}
    owned, foreign = owned_pods([pod_of(A, 0)], recreated)
    assert owned == [] and [f.name for f in foreign] == ["a-0"]
