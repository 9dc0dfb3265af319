"""Pure builders: the objects one ClusteredServer should own, as Kubernetes JSON dicts.

Each builder takes the ClusteredServer (the dict the API returns, defaults applied) and returns
a fresh dict the shell can create or compare; none reads a clock, a file or the network. The
peer token is an argument (the shell draws it once, with `secrets`, when the Secret does not
exist yet) so that building stays deterministic.

The pod is the contract with the runtime: docs/runtime-config.md says what every variable,
port, probe and volume means to `gencluster run`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from gencluster_operator import names
from gencluster_operator.names import RuntimeEnv
from gencluster_operator.spec import ClusterSpec, cluster_spec, encode_args

POD_SHAPE_VERSION = 3
"""2: GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS on every pod (durable state, #11).
3: default resource requests on the server container (#15).

Part of every template hash. Raise it when this module changes the pods it builds in a way
running pods must pick up (a new variable, probe or volume): the next operator rolls them."""

DEFAULT_REQUESTS = {"cpu": "100m", "memory": "128Mi"}
"""What the server container asks for when `template.spec.resources` does not say: a pod
without requests is BestEffort, the first evicted under memory pressure, and it holds state.
About what an idle runtime uses; size real servers by their state."""

POD_FIELDS_AS_WRITTEN = (
    "topologySpreadConstraints", "priorityClassName", "imagePullSecrets", "initContainers",
)
"""`template.spec` fields copied to the pod spec unchanged."""

TEMPLATE_HASH_LENGTH = 16
MIN_PEER_TOKEN_LENGTH = 32

READINESS_PERIOD_SECONDS = 2
READINESS_FAILURE_THRESHOLD = 2
LIVENESS_PERIOD_SECONDS = 10
LIVENESS_FAILURE_THRESHOLD = 3
STARTUP_PERIOD_SECONDS = 2
STARTUP_FAILURE_THRESHOLD = 90
"""Startup may take three minutes (image start, module import) before liveness applies."""

MIN_TERMINATION_GRACE_SECONDS = 30


def owner_reference(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference every child carries: garbage collection deletes the children
    with the ClusteredServer, and `blockOwnerDeletion` keeps a foreground delete waiting."""
    metadata = resource["metadata"]
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def common_labels(cluster: str) -> dict[str, str]:
    """Labels on every child: the recommended app.kubernetes.io set and the cluster label."""
    return {
        names.APP_NAME_LABEL: names.APP_NAME,
        names.APP_INSTANCE_LABEL: cluster,
        names.APP_MANAGED_BY_LABEL: names.MANAGED_BY,
        names.CLUSTER_LABEL: cluster,
    }


def _metadata(resource: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = cluster_spec(resource)
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": common_labels(spec.name),
        "ownerReferences": [owner_reference(resource)],
    }


# -- the pod ----------------------------------------------------------------------------------


def template_hash(resource: Mapping[str, Any]) -> str:
    """A digest of everything that, when changed, needs the pods replaced.

    It covers the spec fields that reach the pod (server, image, args, port, replication,
    partition policy, lease timings, persistence, the runtime settings, template) and
    `POD_SHAPE_VERSION`, and leaves out `replicas` (scaling never restarts a pod) and
    `persistence.retainOnDelete` (it changes the claims' owner, not the pods). JSON with
    sorted keys makes equal specs hash equal whatever their key order.
    """
    spec = cluster_spec(resource)
    inputs = {
        "server": spec.server,
        "image": spec.image,
        "args": spec.args,
        "port": spec.port,
        "replication": {"mode": spec.replication_mode, "minSyncStandbys": spec.min_sync_standbys},
        "partitionPolicy": spec.partition_policy,
        "lease": {
            "durationSeconds": spec.lease.duration_seconds,
            "renewDeadlineSeconds": spec.lease.renew_deadline_seconds,
            "retryPeriodSeconds": spec.lease.retry_period_seconds,
        },
        "persistence": {
            "enabled": spec.persistence.enabled,
            "size": spec.persistence.size,
            "storageClassName": spec.persistence.storage_class,
        },
        "runtime": _runtime_inputs(spec),
        "template": spec.template,
        "podShape": POD_SHAPE_VERSION,
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:TEMPLATE_HASH_LENGTH]


def _runtime_inputs(spec: ClusterSpec) -> dict[str, Any]:
    """`spec.runtime` as the template hash sees it: the optional limits only when set, so a
    cluster that does not set them keeps the hash (and its pods) of before they existed."""
    inputs: dict[str, Any] = {"deduplicationWindowSeconds": spec.deduplication_window_seconds}
    if spec.max_message_bytes is not None:
        inputs["maxMessageBytes"] = spec.max_message_bytes
    if spec.reply_table_max_bytes is not None:
        inputs["replyTableMaxBytes"] = spec.reply_table_max_bytes
    return inputs


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def runtime_env(spec: ClusterSpec) -> list[dict[str, Any]]:
    """The variables of docs/runtime-config.md, in the order they are defined there.

    The pod's own identity comes first so that later values may refer to it with `$(POD_IP)`.
    """
    value_env = {
        RuntimeEnv.LISTEN_HOST: f"$({RuntimeEnv.POD_IP})",
        RuntimeEnv.SERVER: spec.server,
        RuntimeEnv.ARGS: encode_args(spec.args),
        RuntimeEnv.PORT: str(spec.port),
        RuntimeEnv.METRICS_PORT: str(names.metrics_port_for(spec.port)),
        RuntimeEnv.CLUSTER: spec.name,
        RuntimeEnv.POD_SELECTOR: names.selector_string(spec.name),
        RuntimeEnv.PEER_SERVICE: names.peer_service_name(spec.name),
        RuntimeEnv.LEASE_NAME: names.lease_name(spec.name),
        RuntimeEnv.LEASE_DURATION_SECONDS: str(spec.lease.duration_seconds),
        RuntimeEnv.RENEW_DEADLINE_SECONDS: str(spec.lease.renew_deadline_seconds),
        RuntimeEnv.RETRY_PERIOD_SECONDS: str(spec.lease.retry_period_seconds),
        RuntimeEnv.REPLICATION_MODE: spec.replication_mode,
        RuntimeEnv.MIN_SYNC_STANDBYS: str(spec.min_sync_standbys),
        RuntimeEnv.PARTITION_POLICY: spec.partition_policy,
        RuntimeEnv.DEDUPLICATION_WINDOW_SECONDS: str(spec.deduplication_window_seconds),
    }
    if spec.max_message_bytes is not None:
        value_env[RuntimeEnv.MAX_MESSAGE_BYTES] = str(spec.max_message_bytes)
    if spec.reply_table_max_bytes is not None:
        value_env[RuntimeEnv.REPLY_TABLE_MAX_BYTES] = str(spec.reply_table_max_bytes)
    if spec.persistence.enabled:
        value_env[RuntimeEnv.DATA_DIR] = names.DATA_DIR
    return [
        _field_env(RuntimeEnv.POD_NAME, "metadata.name"),
        _field_env(RuntimeEnv.POD_NAMESPACE, "metadata.namespace"),
        _field_env(RuntimeEnv.POD_UID, "metadata.uid"),
        _field_env(RuntimeEnv.POD_IP, "status.podIP"),
        *({"name": key, "value": value} for key, value in value_env.items()),
        {
            "name": RuntimeEnv.PEER_TOKEN,
            "valueFrom": {
                "secretKeyRef": {
                    "name": names.peer_token_secret_name(spec.name),
                    "key": names.PEER_TOKEN_KEY,
                }
            },
        },
    ]


def container_env(spec: ClusterSpec) -> list[dict[str, Any]]:
    """The runtime's variables, then the user's (`template.spec.env`) minus any that would
    shadow one of ours: ours win, and the user's may refer to ours with `$(NAME)`."""
    ours = runtime_env(spec)
    reserved = {item["name"] for item in ours}
    users = [copy.deepcopy(item) for item in spec.pod_overrides.get("env") or []]
    return ours + [item for item in users if item.get("name") not in reserved]


def _grpc_probe(
    spec: ClusterSpec, service: str, period: int, failures: int, timeout: int
) -> dict[str, Any]:
    return {
        "grpc": {"port": spec.port, "service": service},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
        "successThreshold": 1,
    }


def termination_grace_seconds(spec: ClusterSpec) -> int:
    """Time for a graceful stop before the kubelet's SIGKILL: the runtime waits up to a renew
    deadline for the most up-to-date standby to take the Lease, then drains in-flight calls;
    a lease duration on top keeps a slow handover from ever being cut short, since a killed
    active costs a full failover. Never below Kubernetes' usual 30 s."""
    lease = spec.lease
    return max(MIN_TERMINATION_GRACE_SECONDS, lease.duration_seconds + lease.renew_deadline_seconds)


def default_affinity(cluster: str) -> dict[str, Any]:
    """Best-effort spreading of the pods over nodes: losing one node should not take the
    active and its in-sync standbys at once. Preferred, not required, so that a one-node
    cluster (or `gencluster dev`) still runs every replica."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": names.cluster_selector(cluster)},
                    },
                }
            ]
        }
    }


def _without_reserved(values: Mapping[str, str]) -> dict[str, str]:
    """User labels or annotations minus the `gencluster.io/` keys the operator owns."""
    return {key: value for key, value in values.items() if not key.startswith(names.PREFIX)}


def pod_labels(spec: ClusterSpec, ordinal: int) -> dict[str, str]:
    return {
        **_without_reserved(spec.template_labels),
        **common_labels(spec.name),
        names.APP_COMPONENT_LABEL: names.COMPONENT_SERVER,
        names.ORDINAL_LABEL: str(ordinal),
        names.ROLE_LABEL: names.ROLE_STANDBY,
    }


def _volume_mounts(spec: ClusterSpec) -> list[dict[str, Any]]:
    """Ours, then the user's (`template.spec.volumeMounts`; the CRD refuses our paths)."""
    mounts = [{"name": names.TMP_VOLUME, "mountPath": "/tmp"}]
    if spec.persistence.enabled:
        mounts.append({"name": names.DATA_VOLUME, "mountPath": names.DATA_DIR})
    return mounts + copy.deepcopy(list(spec.pod_overrides.get("volumeMounts") or []))


def container_resources(spec: ClusterSpec) -> dict[str, Any]:
    """The user's resources, with DEFAULT_REQUESTS for each resource they set neither a
    request nor a limit for (a limit alone is the request, as Kubernetes defaults it)."""
    resources = copy.deepcopy(dict(spec.pod_overrides.get("resources") or {}))
    limits = resources.get("limits") or {}
    requests = dict(resources.get("requests") or {})
    for resource, quantity in DEFAULT_REQUESTS.items():
        if resource not in requests and resource not in limits:
            requests[resource] = quantity
    if requests:
        resources["requests"] = requests
    return resources


def _pod_security(spec: ClusterSpec) -> dict[str, Any]:
    """Non-root with the runtime default seccomp profile; with persistence, the volume is
    given the runtime image's group (`fsGroup`), so that its non-root user may write a fresh
    volume, and ownership is fixed only when the volume's root does not match already (a large
    volume is not walked at every start)."""
    security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if spec.persistence.enabled:
        security["fsGroup"] = names.RUNTIME_GID
        security["fsGroupChangePolicy"] = "OnRootMismatch"
    return security


def _volumes(spec: ClusterSpec, ordinal: int) -> list[dict[str, Any]]:
    """`tmp` (the root filesystem is read-only) and, with persistence, the ordinal's claim: a
    pod recreated under the same name mounts the same data again."""
    volumes: list[dict[str, Any]] = [{"name": names.TMP_VOLUME, "emptyDir": {}}]
    if spec.persistence.enabled:
        volumes.append({
            "name": names.DATA_VOLUME,
            "persistentVolumeClaim": {"claimName": names.claim_name(spec.name, ordinal)},
        })
    return volumes + copy.deepcopy(list(spec.pod_overrides.get("volumes") or []))


def pod_service_account(spec: ClusterSpec) -> str:
    """The user's own ServiceAccount (`template.spec.serviceAccountName`), else ours."""
    return str(spec.pod_overrides.get("serviceAccountName")
               or names.service_account_name(spec.name))


def pod(resource: Mapping[str, Any], ordinal: int) -> dict[str, Any]:
    """The pod of `ordinal`, created as a standby (the runtime relabels itself when it takes
    the Lease). Restart policy Always: a crashed process restarts in place with the same name
    and address, and rejoins as a standby by snapshot."""
    spec = cluster_spec(resource)
    overrides = spec.pod_overrides
    name = names.pod_name(spec.name, ordinal)
    container_security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container: dict[str, Any] = {
        "name": names.CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["gencluster", "run"],
        "ports": [
            {"name": names.GRPC_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"},
            {
                "name": names.METRICS_PORT_NAME,
                "containerPort": names.metrics_port_for(spec.port),
                "protocol": "TCP",
            },
        ],
        "env": container_env(spec),
        "startupProbe": _grpc_probe(
            spec, names.LIVENESS_HEALTH_SERVICE, STARTUP_PERIOD_SECONDS,
            STARTUP_FAILURE_THRESHOLD, 1,
        ),
        "livenessProbe": _grpc_probe(
            spec, names.LIVENESS_HEALTH_SERVICE, LIVENESS_PERIOD_SECONDS,
            LIVENESS_FAILURE_THRESHOLD, 5,
        ),
        "readinessProbe": _grpc_probe(
            spec, names.READINESS_HEALTH_SERVICE, READINESS_PERIOD_SECONDS,
            READINESS_FAILURE_THRESHOLD, 1,
        ),
        "securityContext": container_security,
        "volumeMounts": _volume_mounts(spec),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    container["resources"] = container_resources(spec)
    pod_spec: dict[str, Any] = {
        "containers": [container, *copy.deepcopy(list(overrides.get("containers") or []))],
        "serviceAccountName": pod_service_account(spec),
        "automountServiceAccountToken": True,
        "hostname": name,
        "subdomain": names.peer_service_name(spec.name),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        "enableServiceLinks": False,
        "securityContext": _pod_security(spec),
        "volumes": _volumes(spec, ordinal),
        "affinity": copy.deepcopy(overrides.get("affinity")) or default_affinity(spec.name),
    }
    if overrides.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(overrides["nodeSelector"])
    if overrides.get("tolerations"):
        pod_spec["tolerations"] = copy.deepcopy(overrides["tolerations"])
    for field in POD_FIELDS_AS_WRITTEN:
        if overrides.get(field):
            pod_spec[field] = copy.deepcopy(overrides[field])
    annotations = {
        **_without_reserved(spec.template_annotations),
        names.TEMPLATE_HASH_ANNOTATION: template_hash(resource),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": pod_labels(spec, ordinal),
            "annotations": annotations,
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": pod_spec,
    }


# -- durable storage ------------------------------------------------------------------------------


def claim(resource: Mapping[str, Any], ordinal: int) -> dict[str, Any]:
    """The PersistentVolumeClaim of `ordinal` (spec.persistence), created before its pod.

    Never deleted by the operator: scale-down, rolling updates and pod restarts leave it, so a
    pod of the same ordinal finds its log and snapshots again (a StatefulSet's claims behave
    alike). It carries the controller reference unless `retainOnDelete`, so garbage collection
    removes it with the ClusteredServer only when the user did not ask to keep the data.
    Filesystem mode, ReadWriteOnce: one pod writes it.
    """
    spec = cluster_spec(resource)
    persistence = spec.persistence
    if not persistence.enabled:
        raise ValueError(f"ClusteredServer {spec.name} does not ask for persistence")
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": persistence.size}},
    }
    if persistence.storage_class is not None:
        claim_spec["storageClassName"] = persistence.storage_class
    metadata = _metadata(resource, names.claim_name(spec.name, ordinal))
    metadata["labels"][names.ORDINAL_LABEL] = str(ordinal)
    if persistence.retain_on_delete:
        del metadata["ownerReferences"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": claim_spec,
    }


def claim_ownership_patch(
    resource: Mapping[str, Any], existing: Mapping[str, Any], retained: bool
) -> dict[str, Any] | None:
    """The merge patch that makes an existing claim follow `retainOnDelete`: without our
    controller reference when `retained`, with it otherwise; None when it already does, or
    when another object controls the claim (a claim has one controller; taking it over would
    let two owners' garbage collection fight over the data).

    Other owner references are kept (a merge patch replaces the whole list)."""
    references = list((existing.get("metadata") or {}).get("ownerReferences") or [])
    uid = resource["metadata"].get("uid")
    ours = [r for r in references if r.get("uid") == uid]
    others = [r for r in references if r.get("uid") != uid]
    if retained:
        if not ours:
            return None
        return {"metadata": {"ownerReferences": others or None}}
    if ours or any(r.get("controller") for r in others):
        return None
    return {"metadata": {"ownerReferences": [*others, owner_reference(resource)]}}


# -- Services -----------------------------------------------------------------------------------


def client_service(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The Service clients call. It selects the active pod only (the runtime labels it), so a
    failover re-routes new connections as soon as the new active labels itself."""
    spec = cluster_spec(resource)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource, names.client_service_name(spec.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": {**names.cluster_selector(spec.name), names.ROLE_LABEL: names.ROLE_ACTIVE},
            "ports": [
                {
                    "name": names.GRPC_PORT_NAME,
                    "port": spec.port,
                    "targetPort": names.GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }


def peer_service(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The headless Service giving each pod a DNS name for peer traffic and scraping.

    It publishes not-ready pods too: a standby that is catching up is not Ready yet but must
    be reachable by the active that streams to it."""
    spec = cluster_spec(resource)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource, names.peer_service_name(spec.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": names.cluster_selector(spec.name),
            "ports": [
                {
                    "name": names.GRPC_PORT_NAME,
                    "port": spec.port,
                    "targetPort": names.GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {
                    "name": names.METRICS_PORT_NAME,
                    "port": names.metrics_port_for(spec.port),
                    "targetPort": names.METRICS_PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }


# -- identity and RBAC -------------------------------------------------------------------------


def service_account(resource: Mapping[str, Any]) -> dict[str, Any]:
    spec = cluster_spec(resource)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(resource, names.service_account_name(spec.name)),
    }


def role(resource: Mapping[str, Any], pod_ordinals: Iterable[int] | None = None) -> dict[str, Any]:
    """What a pod of this cluster may do, and nothing more.

    - its own Lease: get, list and watch (a watch or list is allowed by `resourceNames` only
      with a `metadata.name` field selector, which the runtime uses), update and patch to
      acquire, renew, hand over and release. No `create`: the operator creates the Lease, so a
      pod cannot create Leases under other names.
    - pods of the namespace: get, list, watch (peer discovery by the cluster label; RBAC cannot
      restrict a list by label, so a pod can see the other pods of its namespace).
    - patch on its cluster's pods, by name (`resourceNames`): the runtime sets its own role
      label. RBAC cannot restrict a patch to one label, so a compromised pod could change other
      fields of its siblings; the names keep it away from every other pod of the namespace.
      `pod_ordinals` lists the ordinals to allow: the shell passes the desired ones and those
      of pods still running (a surplus pod being scaled down still removes its label); by
      default `0 .. replicas-1`.
    """
    spec = cluster_spec(resource)
    ordinals = sorted(set(range(spec.replicas) if pod_ordinals is None else pod_ordinals))
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(resource, names.role_name(spec.name)),
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [names.lease_name(spec.name)],
                "verbs": ["get", "list", "watch", "update", "patch"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": [names.pod_name(spec.name, ordinal) for ordinal in ordinals],
                "verbs": ["patch"],
            },
        ],
    }


def role_binding(resource: Mapping[str, Any]) -> dict[str, Any]:
    spec = cluster_spec(resource)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(resource, names.role_binding_name(spec.name)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": names.role_name(spec.name),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": pod_service_account(spec),
                "namespace": spec.namespace,
            }
        ],
    }


# -- availability, election and peer authentication -------------------------------------------


def pod_disruption_budget(resource: Mapping[str, Any]) -> dict[str, Any]:
    """At most one pod voluntarily disrupted (drain, eviction) at a time.

    `maxUnavailable: 1` rather than `minAvailable: replicas - 1`: it needs no update when the
    cluster scales, and since a pod that is not Ready already counts as unavailable, no
    eviction happens while a standby is still catching up, so an eviction never takes the
    last in-sync standby. Evicting the active is a graceful stop, which hands the Lease over.
    With one replica it still allows the eviction (nothing could keep serving anyway, and a
    budget that never allows one blocks node drains forever). `AlwaysAllow` lets a
    crash-looping pod be evicted: keeping it helps no one.
    """
    spec = cluster_spec(resource)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(resource, names.pdb_name(spec.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.cluster_selector(spec.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def lease(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The Lease, created empty (no holder, transitions 0): the first pod to start takes it.

    The operator creates it so that the pods need no `create` permission on Leases."""
    spec = cluster_spec(resource)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _metadata(resource, names.lease_name(spec.name)),
        "spec": {"leaseDurationSeconds": spec.lease.duration_seconds, "leaseTransitions": 0},
    }


def peer_token_secret(resource: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The shared token peers present on every Peer and Admin call.

    Immutable: every pod reads it at start, so a changed token would split the cluster into
    pods that cannot talk to each other; rotate by deleting the Secret and rolling the pods."""
    if len(token) < MIN_PEER_TOKEN_LENGTH:
        raise ValueError(
            f"the peer token must have at least {MIN_PEER_TOKEN_LENGTH} characters, got "
            f"{len(token)}"
        )
    spec = cluster_spec(resource)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(resource, names.peer_token_secret_name(spec.name)),
        "type": "Opaque",
        "immutable": True,
        "data": {names.PEER_TOKEN_KEY: base64.b64encode(token.encode()).decode("ascii")},
    }


POD_MONITOR_API_VERSION = "monitoring.coreos.com/v1"


def pod_monitor(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A prometheus-operator PodMonitor for the pods' metrics port, named like the cluster.

    prometheus-operator labels every series with the target's `namespace` and `pod`; the
    relabeling adds `cluster` (the runtime's own series carry it, the call meters do not), so
    one dashboard query can select a ClusteredServer's pods. `honorLabels` keeps the runtime's
    own `cluster` and `pod` labels (equal to the target's) instead of `exported_*` copies."""
    spec = cluster_spec(resource)
    metadata = _metadata(resource, spec.name)
    metadata["labels"] = {**spec.pod_monitor.labels, **metadata["labels"]}
    return {
        "apiVersion": POD_MONITOR_API_VERSION,
        "kind": "PodMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": names.cluster_selector(spec.name)},
            "podMetricsEndpoints": [{
                "port": names.METRICS_PORT_NAME,
                "path": "/metrics",
                "interval": spec.pod_monitor.interval,
                "honorLabels": True,
                "relabelings": [{
                    "sourceLabels": ["__meta_kubernetes_pod_label_gencluster_io_cluster"],
                    "targetLabel": "cluster",
                }],
            }],
        },
    }


def static_children(
    resource: Mapping[str, Any], token: str, pod_ordinals: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """Every child except the pods, in the order to create them: identity and RBAC before the
    Lease and Secret the pods will use, the Services and the budget last."""
    return [
        service_account(resource),
        role(resource, pod_ordinals),
        role_binding(resource),
        lease(resource),
        peer_token_secret(resource, token),
        peer_service(resource),
        client_service(resource),
        pod_disruption_budget(resource),
    ]


# -- keeping children as built ------------------------------------------------------------------

MANAGED_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ServiceAccount": (),
    "Role": (("rules",),),
    "RoleBinding": (("subjects",),),
    "Lease": (),
    "Secret": (),
    "Service": (("spec", "selector"), ("spec", "ports")),
    "PodDisruptionBudget": (("spec", "maxUnavailable"), ("spec", "selector")),
    "PodMonitor": (("spec",),),
    "NetworkPolicy": (("spec", "podSelector"), ("spec", "policyTypes"), ("spec", "ingress")),
}
"""Per kind, the fields the operator keeps equal to what it builds once the object exists.

The Role follows the pods (its `resourceNames` grow with a scale-up), the Services follow
`spec.port`; the Lease belongs to the runtime once created (holder, renewals, in-sync set) and
the Secret is immutable, so both are only ever created. Fields the API server fills in
(`clusterIP`, defaults) are not compared: only what the builder sets."""


def controlled_by(child: Mapping[str, Any], resource: Mapping[str, Any]) -> bool:
    """Whether `child` names the ClusteredServer (by uid) as its controller. The operator never
    changes an object it does not control: a same-named object left by someone else is
    reported, not taken over."""
    uid = resource["metadata"].get("uid")
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in (child.get("metadata") or {}).get("ownerReferences") or []
    )


def _covers(actual: Any, wanted: Any) -> bool:
    """`actual` holds everything `wanted` says (extra fields defaulted by the API are fine)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and _covers(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list) and len(actual) == len(wanted)
            and all(_covers(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def drift_patch(wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch that brings `actual` back to `wanted` on the kind's managed fields
    (and the common labels), or None when nothing drifted. A managed map (a selector) is
    replaced whole: keys `wanted` lacks are removed."""
    patch: dict[str, Any] = {}
    labels = (wanted.get("metadata") or {}).get("labels") or {}
    actual_labels = (actual.get("metadata") or {}).get("labels") or {}
    if not _covers(actual_labels, labels):
        patch["metadata"] = {"labels": dict(labels)}
    for path in MANAGED_FIELDS.get(wanted["kind"], ()):
        want, have = _get(wanted, path), _get(actual, path)
        if _covers(have, want) and not _extra_keys(have, want):
            continue
        value: Any = copy.deepcopy(want)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            value = {**{key: None for key in _extra_keys(have, want)}, **value}
        target = patch
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return patch or None


def _get(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _extra_keys(actual: Any, wanted: Any) -> list[str]:
    if isinstance(actual, Mapping) and isinstance(wanted, Mapping):
        return sorted(key for key in actual if key not in wanted)
    return []
