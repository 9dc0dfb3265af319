"""The operator's condition series: one per condition type, following the status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gencluster_operator import metrics

pytestmark = pytest.mark.unit

NAMESPACE, CLUSTER = "conditions-ns", "conditions"


def series() -> set[tuple[str, str, str]]:
    found = set()
    for family in metrics.REGISTRY.collect():
        if family.name != "gencluster_operator_condition":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (labels["namespace"], labels["cluster"]) == (NAMESPACE, CLUSTER):
                assert sample.value == 1
                found.add((labels["type"], labels["status"], labels["reason"]))
    return found


@pytest.fixture(autouse=True)
def forget() -> Iterator[None]:
    yield
    metrics.forget_cluster(NAMESPACE, CLUSTER)


def record(*conditions: tuple[str, str, str]) -> None:
    status = {"conditions": [{"type": t, "status": s, "reason": r} for t, s, r in conditions]}
    metrics.record_status(NAMESPACE, CLUSTER, {}, status, [])


def test_each_condition_is_one_series_and_a_change_replaces_it() -> None:
    record(("Ready", "True", "Serving"), ("SplitBrain", "False", "NoSplitBrain"))
    assert series() == {("Ready", "True", "Serving"), ("SplitBrain", "False", "NoSplitBrain")}
    record(("Ready", "False", "StateLost"), ("SplitBrain", "True", "SplitBrainDetected"))
    assert series() == {("Ready", "False", "StateLost"),
                        ("SplitBrain", "True", "SplitBrainDetected")}


def test_a_deleted_cluster_leaves_no_condition_series() -> None:
    record(("Ready", "True", "Serving"))
    metrics.forget_cluster(NAMESPACE, CLUSTER)
    assert series() == set()
