"""Every label, annotation, key and name rule the operator uses, in one place.

The pods, the runtime (`gencluster.wellknown`), the chart, the kubectl plugin and the tests must
spell these exactly alike; a test checks that the keys shared with the runtime agree with
`gencluster.wellknown`. Names of child objects are functions of the ClusteredServer's name so
that the operator can find every child again after a restart without keeping any state.
"""

from __future__ import annotations

import re

from gencluster import wellknown

GROUP = "gencluster.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ClusteredServer"
PLURAL = "clusteredservers"

PREFIX = f"{GROUP}/"
"""Labels and annotations with this prefix belong to the operator and the runtime."""

# -- labels ---------------------------------------------------------------------------------

CLUSTER_LABEL = f"{GROUP}/cluster"
"""On every child object: the ClusteredServer's name. Pods are listed by this label."""

ROLE_LABEL = f"{GROUP}/role"
"""On a pod: `active` or `standby`. The runtime sets it (it knows first when its role changes);
the operator creates pods as `standby`. The client Service selects `active`."""

ROLE_ACTIVE = "active"
ROLE_STANDBY = "standby"

ORDINAL_LABEL = f"{GROUP}/ordinal"
"""On a pod: its ordinal as a decimal string, for selecting one pod (`kubectl -l`)."""

APP_NAME_LABEL = "app.kubernetes.io/name"
APP_INSTANCE_LABEL = "app.kubernetes.io/instance"
APP_COMPONENT_LABEL = "app.kubernetes.io/component"
APP_MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_NAME = "gencluster"
MANAGED_BY = "gencluster-operator"
COMPONENT_SERVER = "server"

# -- annotations ----------------------------------------------------------------------------

SWITCHOVER_TO_ANNOTATION = f"{GROUP}/switchover-to"
"""On the ClusteredServer: a user asks for the active role to move to this pod. The operator
removes it once the switchover is done or rejected (with a SwitchoverRejected Event)."""

IN_SYNC_ANNOTATION = f"{GROUP}/in-sync"
"""On the Lease: a JSON list of the names of the standby pods holding every acknowledged entry,
published by the active before it relies on them (docs/runtime-config.md)."""

INITIALIZED_ANNOTATION = f"{GROUP}/initialized"
"""On the Lease: written by the first active when it runs `init`, atomically with taking the
Lease. While it is present a replica without state never runs `init` (it reports
`state_lost`); the operator removes it only on a `gencluster.io/reinitialize` request."""

REINITIALIZE_ANNOTATION = f"{GROUP}/reinitialize"
"""On the ClusteredServer: a user allows a cluster that lost its state (StateLost) to run `init`
again. Any value; the operator removes the annotation once it acted on it or refused it (with
a Reinitialized or ReinitializeRejected Event)."""

RECONCILE_PAUSED_ANNOTATION = wellknown.RECONCILE_PAUSED_ANNOTATION
HIBERNATION_ANNOTATION = wellknown.HIBERNATION_ANNOTATION

TEMPLATE_HASH_ANNOTATION = f"{GROUP}/template-hash"
"""On a pod: the hash of the spec parts it was built from; a pod whose hash differs from the
current spec's is replaced by the rolling update."""

# -- the runtime's health services, ports and container -----------------------------------

CONTAINER_NAME = "server"
GRPC_PORT_NAME = "grpc"
METRICS_PORT_NAME = "metrics"
DEFAULT_METRICS_PORT = 9090
"""The runtime's Prometheus port, unless the gRPC port is this number (then the next one)."""

READINESS_HEALTH_SERVICE = ""
"""grpc.health.v1 service for readiness: SERVING on the active and on in-sync standbys."""

LIVENESS_HEALTH_SERVICE = "gencluster.liveness"
"""grpc.health.v1 service for liveness and startup: SERVING while the process's event loop
runs, whatever the role and however far behind (a catching-up standby must not be killed)."""

PEER_PORT_NAME = "peer"
"""With TLS: the container port of the Peer and Admin services (mutual TLS)."""

HEALTH_PORT_NAME = "health"
"""With TLS: the container port of plaintext grpc.health.v1, for the kubelet's probes."""

TLS_VOLUME = "tls"
TLS_DIR = "/etc/gencluster/tls"
"""Where the pod's TLS Secret is mounted and `GENCLUSTER_TLS_DIR` points."""

CONFIG_ERROR_EXIT_CODE = 78
"""Exit code (sysexits EX_CONFIG) of `gencluster run` when the server cannot run: module not
importable, class without the API, invalid configuration. The operator reports it as
Degraded/ServerNotRunnable instead of letting it crash-loop silently."""

PEER_TOKEN_KEY = "token"
"""Key of the peer token in the `<name>-peer-token` Secret."""

TMP_VOLUME = "tmp"

DATA_VOLUME = "data"
"""The pod volume backed by the ordinal's PersistentVolumeClaim (spec.persistence)."""

RUNTIME_GID = 65532
"""The group of the runtime image's user (Dockerfile): the data volume's `fsGroup`."""

DATA_DIR = "/var/lib/gencluster"
"""Where the data volume is mounted and `GENCLUSTER_DATA_DIR` points."""

# -- names of child objects -------------------------------------------------------------------

_ORDINAL_SUFFIX = re.compile(r"^(0|[1-9][0-9]*)$")


def pod_name(cluster: str, ordinal: int) -> str:
    """The pod of `ordinal`: `<name>-<ordinal>` (one name per ordinal, like a StatefulSet)."""
    if ordinal < 0:
        raise ValueError(f"ordinal must be >= 0, got {ordinal}")
    return f"{cluster}-{ordinal}"


def ordinal_of(cluster: str, pod: str) -> int | None:
    """The ordinal in a pod name built by `pod_name`, or None for any other name."""
    prefix = f"{cluster}-"
    if not pod.startswith(prefix):
        return None
    suffix = pod[len(prefix) :]
    return int(suffix) if _ORDINAL_SUFFIX.match(suffix) else None


def client_service_name(cluster: str) -> str:
    """The Service clients call; it selects the active pod only."""
    return cluster


def peer_service_name(cluster: str) -> str:
    """The headless Service giving every pod a DNS name (`<pod>.<name>-peers`)."""
    return f"{cluster}-peers"


def lease_name(cluster: str) -> str:
    """The Lease whose holder is the active pod."""
    return cluster


def service_account_name(cluster: str) -> str:
    """The pods' ServiceAccount; the Role and RoleBinding carry the same name."""
    return f"{cluster}-gencluster"


def role_name(cluster: str) -> str:
    return service_account_name(cluster)


def role_binding_name(cluster: str) -> str:
    return service_account_name(cluster)


def pdb_name(cluster: str) -> str:
    return cluster


def peer_token_secret_name(cluster: str) -> str:
    """The Secret holding the shared token peers authenticate each other with."""
    return f"{cluster}-peer-token"


def claim_name(cluster: str, ordinal: int) -> str:
    """The PersistentVolumeClaim of `ordinal`: `<name>-data-<ordinal>`. Like a pod name, a
    function of the ordinal only, so a recreated pod finds its data again."""
    if ordinal < 0:
        raise ValueError(f"ordinal must be >= 0, got {ordinal}")
    return f"{cluster}-data-{ordinal}"


def claim_ordinal_of(cluster: str, claim: str) -> int | None:
    """The ordinal in a claim name built by `claim_name`, or None for any other name."""
    prefix = f"{cluster}-data-"
    if not claim.startswith(prefix):
        return None
    suffix = claim[len(prefix) :]
    return int(suffix) if _ORDINAL_SUFFIX.match(suffix) else None


def cluster_selector(cluster: str) -> dict[str, str]:
    """Labels matching every pod of a ClusteredServer (and nothing else)."""
    return {CLUSTER_LABEL: cluster}


def selector_string(cluster: str) -> str:
    """`cluster_selector` in string form, for `status.selector` (the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in sorted(cluster_selector(cluster).items()))


def metrics_port_for(grpc_port: int) -> int:
    """The metrics port that cannot collide with the user's gRPC port."""
    return DEFAULT_METRICS_PORT + 1 if grpc_port == DEFAULT_METRICS_PORT else DEFAULT_METRICS_PORT


def tls_ports_for(grpc_port: int) -> tuple[int, int]:
    """(peer port, health port) beside `grpc_port`: the next two numbers that collide with
    neither the gRPC nor the metrics port."""
    taken = {grpc_port, metrics_port_for(grpc_port)}
    free = [p for p in range(grpc_port + 1, grpc_port + 6) if p not in taken and p <= 65535]
    if len(free) < 2:
        free = [p for p in range(1024, 1030) if p not in taken]
    return free[0], free[1]


def ca_secret_name(cluster: str) -> str:
    """The Secret holding the cluster's trust bundle (`ca.crt`) alone: what clients read to
    verify the pods (grant `get` on it by name to whoever calls the cluster)."""
    return wellknown.ca_secret_name(cluster)


def ca_key_secret_name(cluster: str) -> str:
    """The Secret holding the CA's key and the operator's client certificate: read by the
    operator only (no pod mounts it, no client needs it)."""
    return f"{cluster}-ca-key"


def tls_secret_name(pod: str) -> str:
    """The Secret a pod mounts at `TLS_DIR`: its certificate, key and the trust bundle."""
    return f"{pod}-tls"


class RuntimeEnv:
    """Names of the environment variables the pod gives `gencluster run`.

    docs/runtime-config.md is the contract these implement (with the equivalent flags).
    """

    SERVER = "GENCLUSTER_SERVER"
    ARGS = "GENCLUSTER_ARGS"
    PORT = "GENCLUSTER_PORT"
    METRICS_PORT = "GENCLUSTER_METRICS_PORT"
    LISTEN_HOST = "GENCLUSTER_LISTEN_HOST"
    CLUSTER = "GENCLUSTER_CLUSTER"
    POD_SELECTOR = "GENCLUSTER_POD_SELECTOR"
    PEER_SERVICE = "GENCLUSTER_PEER_SERVICE"
    PEER_TOKEN = "GENCLUSTER_PEER_TOKEN"
    LEASE_NAME = "GENCLUSTER_LEASE_NAME"
    LEASE_DURATION_SECONDS = "GENCLUSTER_LEASE_DURATION_SECONDS"
    RENEW_DEADLINE_SECONDS = "GENCLUSTER_RENEW_DEADLINE_SECONDS"
    RETRY_PERIOD_SECONDS = "GENCLUSTER_RETRY_PERIOD_SECONDS"
    REPLICATION_MODE = "GENCLUSTER_REPLICATION_MODE"
    MIN_SYNC_STANDBYS = "GENCLUSTER_MIN_SYNC_STANDBYS"
    PARTITION_POLICY = "GENCLUSTER_PARTITION_POLICY"
    DEDUPLICATION_WINDOW_SECONDS = "GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS"
    MAX_MESSAGE_BYTES = "GENCLUSTER_MAX_MESSAGE_BYTES"
    REPLY_TABLE_MAX_BYTES = "GENCLUSTER_REPLY_TABLE_MAX_BYTES"
    DATA_DIR = "GENCLUSTER_DATA_DIR"
    TLS_DIR = "GENCLUSTER_TLS_DIR"
    PEER_PORT = "GENCLUSTER_PEER_PORT"
    HEALTH_PORT = "GENCLUSTER_HEALTH_PORT"
    CLIENT_AUTH = "GENCLUSTER_CLIENT_AUTH"
    POD_NAME = "POD_NAME"
    POD_NAMESPACE = "POD_NAMESPACE"
    POD_IP = "POD_IP"
    POD_UID = "POD_UID"
