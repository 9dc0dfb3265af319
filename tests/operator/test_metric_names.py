"""Runtime pods and the operator never export the same metric name.

Both describe the same clusters (an active pod, an epoch) from different vantage points: a pod
its own, the operator the status it wrote. Sharing a name would make a Prometheus that scrapes
both merge the two into one series. Each component's names carry its prefix
(`gencluster_runtime_`, `gencluster_operator_`); this reads what each one exposes, in the
Prometheus text format a scrape returns, with every labelled series populated.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import prometheus_client
import pytest
from gencluster.call_metrics import CallMeter
from gencluster.node import Node, NodeConfig
from gencluster.run import NodeCollector
from gencluster_operator import metrics as operator_metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.unit

CLUSTER = ("metric-names-ns", "metric-names")


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every family and sample name a scrape of `registry` shows."""
    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def library_collector_names() -> set[str]:
    """What prometheus_client's default registry exports by itself (process_*, python_*)."""
    registry = CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    return exposed_names(registry)


def runtime_names() -> set[str]:
    """What a pod's `/metrics` serves: the default registry (call meters, process collectors)
    and the node collector `start_http` registers, here over a stand-in node."""
    import gencluster.services  # noqa: F401  (every servicer module's metrics registered)

    CallMeter("call")
    CallMeter("cast")
    stand_in = SimpleNamespace(
        may_serve=lambda: True, ready=lambda: True, epoch=3,
        failsafe_seconds=lambda: None, failsafe_episodes=lambda: (0, 0.0),
        sync_degraded=lambda: None,
        replica=SimpleNamespace(applied_seq=5),
    )
    config = SimpleNamespace(cluster=CLUSTER[1], identity=f"{CLUSTER[1]}-0")
    node_registry = CollectorRegistry()
    node_registry.register(NodeCollector(cast(Node, stand_in), cast(NodeConfig, config)))
    return exposed_names(prometheus_client.REGISTRY) | exposed_names(node_registry)


@pytest.fixture
def operator_names() -> Iterator[set[str]]:
    """What the operator's `/metrics` serves once it has seen a cluster with a failover."""
    namespace, cluster = CLUSTER
    status = {
        "activePod": f"{cluster}-0",
        "epoch": 2,
        "standbys": [{"pod": f"{cluster}-1", "lag": 0}],
        "lastFailoverTime": "2026-12-01T10:00:00Z",
        "lastFailoverReason": "ActivePodDeleted",
    }
    operator_metrics.record_status(
        namespace, cluster, {}, status, [f"{cluster}-0", f"{cluster}-1"]
    )
    operator_metrics.record_reconcile(namespace, cluster, "ok", 0.01)
    try:
        yield exposed_names(operator_metrics.REGISTRY)
    finally:
        operator_metrics.forget_cluster(namespace, cluster)
        operator_metrics.RECONCILES.remove(namespace, cluster, "ok")
        operator_metrics.FAILOVERS.remove(namespace, cluster, "ActivePodDeleted")


def test_each_component_exports_only_names_under_its_prefix(operator_names: set[str]) -> None:
    ours = runtime_names() - library_collector_names()
    assert "gencluster_runtime_epoch" in ours and "gencluster_runtime_calls_total" in ours
    assert {name for name in ours if not name.startswith("gencluster_runtime_")} == set()
    assert "gencluster_operator_epoch" in operator_names
    assert "gencluster_operator_failovers_total" in operator_names
    assert {n for n in operator_names if not n.startswith("gencluster_operator_")} == set()


def test_no_name_is_exported_by_both_components(operator_names: set[str]) -> None:
    assert runtime_names() & operator_names == set()
