"""A typed, read-only view of a ClusteredServer's spec.

The API server applies the CRD's defaults before anyone sees an object, so every field is
normally present; the fallbacks below repeat the CRD's defaults only so that an object built
by hand (a test, a dry run) reads the same. `tests/operator/test_desired.py` checks that they
equal the defaults in `crds/clusteredservers.gencluster.io.yaml`, the single source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gencluster.wellknown import default_min_sync_standbys

DEFAULT_IMAGE = "ghcr.io/gencluster/gencluster:0.1.0"
DEFAULT_REPLICAS = 3
DEFAULT_PORT = 50051
DEFAULT_REPLICATION_MODE = "Sync"
DEFAULT_PARTITION_POLICY = "Fenced"
DEFAULT_LEASE_DURATION_SECONDS = 15
DEFAULT_RENEW_DEADLINE_SECONDS = 10
DEFAULT_RETRY_PERIOD_SECONDS = 2
DEFAULT_PERSISTENCE_ENABLED = False
DEFAULT_PERSISTENCE_SIZE = "1Gi"
DEFAULT_RETAIN_ON_DELETE = False
DEFAULT_DEDUPLICATION_WINDOW_SECONDS = 300

MAX_REPLICAS = 9
"""The CRD's `spec.replicas` maximum (docs/limits.md says why 9)."""
MAX_ARGS_BYTES = 65536
"""Largest `spec.args` as compact JSON: it travels in one environment variable
(GENCLUSTER_ARGS), and Linux refuses to start a process with one over 128 KiB."""

SYNC = "Sync"
ASYNC = "Async"
FENCED = "Fenced"
AVAILABLE = "Available"


@dataclass(frozen=True)
class LeaseTimings:
    duration_seconds: int
    renew_deadline_seconds: int
    retry_period_seconds: int


@dataclass(frozen=True)
class Persistence:
    """`spec.persistence`: one PersistentVolumeClaim per ordinal when `enabled`.

    `storage_class` None means the cluster's default StorageClass (the claim leaves
    `storageClassName` out, which is not the same as an empty string: that asks for no class).
    """

    enabled: bool = DEFAULT_PERSISTENCE_ENABLED
    size: str = DEFAULT_PERSISTENCE_SIZE
    storage_class: str | None = None
    retain_on_delete: bool = DEFAULT_RETAIN_ON_DELETE


DEFAULT_POD_MONITOR_ENABLED = False
DEFAULT_POD_MONITOR_INTERVAL = "30s"


@dataclass(frozen=True)
class PodMonitorSpec:
    """`spec.monitoring.podMonitor`: a prometheus-operator PodMonitor for the pods."""

    enabled: bool = DEFAULT_POD_MONITOR_ENABLED
    interval: str = DEFAULT_POD_MONITOR_INTERVAL
    labels: Mapping[str, str] = field(default_factory=dict)


DEFAULT_NETWORK_POLICY_ENABLED = True


@dataclass(frozen=True)
class NetworkPolicySpec:
    """`spec.networkPolicy`: the pods' NetworkPolicy (desired_network.py)."""

    enabled: bool = DEFAULT_NETWORK_POLICY_ENABLED
    metrics_namespace: str | None = None


@dataclass(frozen=True)
class ClusterSpec:
    """What one ClusteredServer asks for. `template` is the raw `spec.template` mapping."""

    name: str
    namespace: str
    uid: str
    generation: int
    server: str
    image: str
    replicas: int
    args: Any
    port: int
    replication_mode: str
    min_sync_standbys: int
    partition_policy: str
    lease: LeaseTimings
    template: Mapping[str, Any]
    persistence: Persistence = Persistence()
    deduplication_window_seconds: int = DEFAULT_DEDUPLICATION_WINDOW_SECONDS
    max_message_bytes: int | None = None
    """`spec.runtime.maxMessageBytes`; None: the runtime's default (docs/limits.md)."""
    reply_table_max_bytes: int | None = None
    """`spec.runtime.replyTableMaxBytes`; None: the runtime's default."""
    pod_monitor: PodMonitorSpec = PodMonitorSpec()
    network_policy: NetworkPolicySpec = NetworkPolicySpec()

    @property
    def template_labels(self) -> Mapping[str, str]:
        return (self.template.get("metadata") or {}).get("labels") or {}

    @property
    def template_annotations(self) -> Mapping[str, str]:
        return (self.template.get("metadata") or {}).get("annotations") or {}

    @property
    def pod_overrides(self) -> Mapping[str, Any]:
        """`spec.template.spec`: resources, env, nodeSelector, tolerations, affinity."""
        return self.template.get("spec") or {}

    @property
    def sync_standbys_required(self) -> int:
        """Standbys that must acknowledge a write before the active answers (0 in Async)."""
        return self.min_sync_standbys if self.replication_mode == SYNC else 0


def cluster_spec(resource: Mapping[str, Any]) -> ClusterSpec:
    """Read a ClusteredServer object (a dict as the API returns it)."""
    metadata = resource.get("metadata") or {}
    spec = resource.get("spec") or {}
    replication = spec.get("replication") or {}
    lease = spec.get("lease") or {}
    persistence = spec.get("persistence") or {}
    runtime = spec.get("runtime") or {}
    pod_monitor = (spec.get("monitoring") or {}).get("podMonitor") or {}
    network_policy = spec.get("networkPolicy") or {}
    replicas = int(spec.get("replicas", DEFAULT_REPLICAS))
    return ClusterSpec(
        name=metadata["name"],
        namespace=metadata.get("namespace") or "default",
        uid=metadata.get("uid") or "",
        generation=int(metadata.get("generation") or 0),
        server=spec["server"],
        image=spec.get("image") or DEFAULT_IMAGE,
        replicas=replicas,
        args=spec.get("args", {}),
        port=int(spec.get("port", DEFAULT_PORT)),
        replication_mode=replication.get("mode", DEFAULT_REPLICATION_MODE),
        min_sync_standbys=int(replication.get(
            "minSyncStandbys", default_min_sync_standbys(replicas)
        )),
        partition_policy=spec.get("partitionPolicy", DEFAULT_PARTITION_POLICY),
        lease=LeaseTimings(
            duration_seconds=int(lease.get("durationSeconds", DEFAULT_LEASE_DURATION_SECONDS)),
            renew_deadline_seconds=int(
                lease.get("renewDeadlineSeconds", DEFAULT_RENEW_DEADLINE_SECONDS)
            ),
            retry_period_seconds=int(lease.get("retryPeriodSeconds", DEFAULT_RETRY_PERIOD_SECONDS)),
        ),
        template=spec.get("template") or {},
        persistence=Persistence(
            enabled=bool(persistence.get("enabled", DEFAULT_PERSISTENCE_ENABLED)),
            size=str(persistence.get("size") or DEFAULT_PERSISTENCE_SIZE),
            storage_class=persistence.get("storageClassName") or None,
            retain_on_delete=bool(persistence.get("retainOnDelete", DEFAULT_RETAIN_ON_DELETE)),
        ),
        deduplication_window_seconds=int(
            runtime.get("deduplicationWindowSeconds", DEFAULT_DEDUPLICATION_WINDOW_SECONDS)
        ),
        max_message_bytes=_optional_int(runtime.get("maxMessageBytes")),
        reply_table_max_bytes=_optional_int(runtime.get("replyTableMaxBytes")),
        pod_monitor=PodMonitorSpec(
            enabled=bool(pod_monitor.get("enabled", DEFAULT_POD_MONITOR_ENABLED)),
            interval=str(pod_monitor.get("interval") or DEFAULT_POD_MONITOR_INTERVAL),
            labels=dict(pod_monitor.get("labels") or {}),
        ),
        network_policy=NetworkPolicySpec(
            enabled=bool(network_policy.get("enabled", DEFAULT_NETWORK_POLICY_ENABLED)),
            metrics_namespace=network_policy.get("metricsNamespace") or None,
        ),
    )


def _optional_int(value: Any) -> int | None:
    """An optional integer field: absent (None) stays absent, so a cluster that never set it
    keeps its pods (and their template hash) as they were."""
    return None if value is None else int(value)


def encode_args(args: Any) -> str:
    """`spec.args` as the pods receive it (GENCLUSTER_ARGS): compact JSON with sorted keys."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def spec_problems(spec: ClusterSpec) -> list[str]:
    """What makes a spec unusable although the API server stored it, each naming its field.

    The CRD refuses these values, but an object admitted by an older CRD (or written around
    validation) may still carry them, and `spec.args` is free-form, so the schema cannot
    measure it. The operator must then refuse the spec rather than act on it: a plan for two
    billion replicas would build two billion ordinals and take down the operator that serves
    every other ClusteredServer, and pods with oversized args cannot start.
    """
    problems = []
    if not 1 <= spec.replicas <= MAX_REPLICAS:
        problems.append(
            f"spec.replicas: Invalid value: {spec.replicas}: must be between 1 and "
            f"{MAX_REPLICAS}")
    size = len(encode_args(spec.args).encode())
    if size > MAX_ARGS_BYTES:
        problems.append(
            f"spec.args: Too long: {size} bytes as compact JSON, at most {MAX_ARGS_BYTES} (the "
            "pods receive it in one environment variable); keep large data in a ConfigMap or "
            "a volume")
    return problems
