"""The operator's Prometheus metrics, served on `--metrics-port` at `/metrics`.

Cluster metrics are derived from the status the operator has just written, so a dashboard
never disagrees with `kubectl get csrv`:

- `gencluster_operator_active{namespace, cluster, pod}` (gauge): 1 for the pod that holds the
  Lease and serves, 0 for the other pods;
- `gencluster_operator_epoch{namespace, cluster}` (gauge): the Lease's leaseTransitions;
- `gencluster_operator_failovers_total{namespace, cluster, kind}` (counter): moves of the
  active role this operator saw, by `lastFailoverReason` (ActivePodDeleted, Switchover, ...);
- `gencluster_operator_last_failover_timestamp_seconds{namespace, cluster}` (gauge):
  `status.lastFailoverTime` as a Unix time;
- `gencluster_operator_replication_lag{namespace, cluster, pod}` (gauge): entries a standby is
  behind, as the active reports it;
- `gencluster_operator_reconciles_total{namespace, cluster, result}` (counter): reconcile
  passes, `ok`, `conflict` (409: planned again) or `error`;
- `gencluster_operator_reconcile_duration_seconds` (histogram): one pass (observe, act, write);
- `gencluster_operator_condition{namespace, cluster, type, status, reason}` (gauge): 1 for each
  condition of the status as it is now (one series per type; the series of a condition's
  previous status or reason is removed), as kube-state-metrics exports pod conditions: what
  the alert rules of the chart read (`StateLost`, `SplitBrain`, a failed merge);
- `gencluster_operator_leader{identity}` (gauge): 1 on the operator replica that holds the
  leader-election Lease, 0 on a standby; `gencluster_operator_leader_acquisitions_total`
  (counter): times this process took it (`leader_election.py`).

Series of pods that are gone, and of deleted clusters, are removed so that they do not linger
with their last value. Every name starts with `gencluster_operator_`, and the runtime pods'
with `gencluster_runtime_`: the operator's view of a cluster (`gencluster_operator_epoch`, from
the status) and a pod's own (`gencluster_runtime_epoch`, the highest it has seen) differ during
a failover, so one Prometheus scraping both must never merge them into one series. The metrics
live in a registry of their own so that a process that also imports the runtime's metrics
exports only these.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gencluster_operator.observed import parse_time

REGISTRY = CollectorRegistry()

CLUSTER_LABELS = ("namespace", "cluster")
POD_LABELS = ("namespace", "cluster", "pod")

ACTIVE = Gauge(
    "gencluster_operator_active",
    "1 for the pod that holds the Lease and serves client calls, 0 for the other pods.",
    POD_LABELS,
    registry=REGISTRY,
)
EPOCH = Gauge(
    "gencluster_operator_epoch",
    "The Lease's leaseTransitions: +1 at every failover or switchover.",
    CLUSTER_LABELS,
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "gencluster_operator_failovers",
    "Moves of the active role seen by this operator, by reason (status.lastFailoverReason).",
    (*CLUSTER_LABELS, "kind"),
    registry=REGISTRY,
)
LAST_FAILOVER = Gauge(
    "gencluster_operator_last_failover_timestamp_seconds",
    "When the active role last moved (status.lastFailoverTime), as a Unix time.",
    CLUSTER_LABELS,
    registry=REGISTRY,
)
REPLICATION_LAG = Gauge(
    "gencluster_operator_replication_lag",
    "Log entries a standby has not acknowledged yet, as the active reports it.",
    POD_LABELS,
    registry=REGISTRY,
)
RECONCILES = Counter(
    "gencluster_operator_reconciles",
    "Reconcile passes by result: ok, conflict (409, planned again at once) or error.",
    (*CLUSTER_LABELS, "result"),
    registry=REGISTRY,
)
LEADER = Gauge(
    "gencluster_operator_leader",
    "1 while this operator process holds the leader-election Lease and acts, 0 while it "
    "waits as a standby (only with --leader-election).",
    ("identity",),
    registry=REGISTRY,
)
LEADER_TRANSITIONS = Counter(
    "gencluster_operator_leader_acquisitions",
    "Times this operator process took the leader-election Lease.",
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "gencluster_operator_reconcile_duration_seconds",
    "Time of one reconcile pass: observe, plan, act, write the status.",
    registry=REGISTRY,
)

CONDITION = Gauge(
    "gencluster_operator_condition",
    "1 for each condition of the ClusteredServer's status, labelled with its type, status "
    "(True, False, Unknown) and reason.",
    (*CLUSTER_LABELS, "type", "status", "reason"),
    registry=REGISTRY,
)

_lock = threading.Lock()
_pod_series: dict[tuple[str, str], set[str]] = {}
"""Per cluster, the pods that have series, so that the series of a pod that is gone go too."""
_condition_series: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
"""Per cluster, the (type, status, reason) series set, so that a changed condition's old
series goes."""


def serve(port: int, host: str = "") -> None:
    """Serve `/metrics` over HTTP in a background thread."""
    start_http_server(port, addr=host or "0.0.0.0", registry=REGISTRY)


def record_status(
    namespace: str,
    cluster: str,
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    pods: Iterable[str],
) -> None:
    """Update the cluster's series from the status just written (`previous` is the one it
    replaced: a new `lastFailoverTime` counts one failover of kind `lastFailoverReason`)."""
    active = status.get("activePod")
    lags = {
        entry["pod"]: entry["lag"] for entry in status.get("standbys") or [] if "lag" in entry
    }
    current = set(pods)
    with _lock:
        stale = _pod_series.get((namespace, cluster), set()) - current
        _pod_series[(namespace, cluster)] = current
    for pod in stale:
        _remove(ACTIVE, namespace, cluster, pod)
        _remove(REPLICATION_LAG, namespace, cluster, pod)
    for pod in current:
        ACTIVE.labels(namespace, cluster, pod).set(1 if pod == active else 0)
        if pod in lags:
            REPLICATION_LAG.labels(namespace, cluster, pod).set(lags[pod])
        else:
            _remove(REPLICATION_LAG, namespace, cluster, pod)
    if status.get("epoch") is not None:
        EPOCH.labels(namespace, cluster).set(status["epoch"])
    _record_conditions(namespace, cluster, status.get("conditions") or [])
    moved = status.get("lastFailoverTime")
    moment = parse_time(moved)
    if moment is not None:
        LAST_FAILOVER.labels(namespace, cluster).set(moment.timestamp())
        if moved != previous.get("lastFailoverTime"):
            kind = status.get("lastFailoverReason") or "Unknown"
            FAILOVERS.labels(namespace, cluster, kind).inc()


def _record_conditions(
    namespace: str, cluster: str, conditions: Iterable[Mapping[str, Any]]
) -> None:
    current = {
        (str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""))
        for c in conditions if c.get("type")
    }
    with _lock:
        stale = _condition_series.get((namespace, cluster), set()) - current
        _condition_series[(namespace, cluster)] = current
    for labels in stale:
        _remove(CONDITION, namespace, cluster, *labels)
    for labels in current:
        CONDITION.labels(namespace, cluster, *labels).set(1)


def record_reconcile(namespace: str, cluster: str, result: str, seconds: float) -> None:
    RECONCILES.labels(namespace, cluster, result).inc()
    RECONCILE_DURATION.observe(seconds)


def forget_cluster(namespace: str, cluster: str) -> None:
    """Remove every series of a deleted ClusteredServer."""
    with _lock:
        pods = _pod_series.pop((namespace, cluster), set())
    for pod in pods:
        _remove(ACTIVE, namespace, cluster, pod)
        _remove(REPLICATION_LAG, namespace, cluster, pod)
    _remove(EPOCH, namespace, cluster)
    _remove(LAST_FAILOVER, namespace, cluster)
    with _lock:
        conditions = _condition_series.pop((namespace, cluster), set())
    for labels in conditions:
        _remove(CONDITION, namespace, cluster, *labels)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
