"""Names shared by the runtime and whoever talks to it: annotations, labels, gRPC metadata.

One place for each key, so the operator, the pods and the tests never spell one differently.
"""

from __future__ import annotations

IN_SYNC_ANNOTATION = "gencluster.io/in-sync"
"""On the Lease: JSON list of the standbys holding every acknowledged entry (see election)."""

INITIALIZED_ANNOTATION = "gencluster.io/initialized"
"""On the Lease: present once the first active ran init; a replica without state then never
runs init by itself (it reports state_lost). The operator removes it on a reinitialize request."""

ROLE_LABEL = "gencluster.io/role"
"""On a pod: `active` on the pod that serves; the client Service selects it."""

ROLE_ACTIVE = "active"

PEER_TOKEN_METADATA = "gencluster-peer-token"
"""gRPC metadata key carrying the shared secret on Peer and Admin calls."""

EPOCH_METADATA = "gencluster-epoch"
"""gRPC trailing metadata: the epoch of the replica that answered (also on error replies)."""

ACTIVE_ADDRESS_METADATA = "gencluster-active-address"
"""gRPC trailing metadata on UNAVAILABLE from a standby: where the active can be reached."""

REFUSAL_METADATA = "gencluster-refusal"
"""gRPC trailing metadata on FAILED_PRECONDITION: which refusal it is, so a client tells them
apart without parsing the message (`REFUSAL_REQUEST_ID_REUSED`; absent: a retry older than the
reply table remembers)."""

REFUSAL_REQUEST_ID_REUSED = "request-id-reused"
"""The request id is recorded for a different request (method or payload)."""

CLUSTER_LABEL = "gencluster.io/cluster"
"""On every object the operator creates for a ClusteredServer (pods included): its name."""

SWITCHOVER_TO_ANNOTATION = "gencluster.io/switchover-to"
"""On the ClusteredServer: asks the operator to hand the active role to this pod; the operator
removes it once the switchover is done or rejected."""

RECONCILE_PAUSED_ANNOTATION = "gencluster.io/reconcile-paused"
"""On the ClusteredServer: while present (any value but "false"), the operator changes nothing
(no pod created, deleted, replaced or failed over; no merge) and only writes the status, with
Progressing=False, reason ReconcilePaused. For maintenance by hand."""

HIBERNATION_ANNOTATION = "gencluster.io/hibernation"
"""On the ClusteredServer: "on" deletes every pod (standbys first) and keeps the claims, Lease
and Services; removing it (or "off") creates the pods again, which recover from their volumes.
Only with spec.persistence.enabled: a cluster in memory would lose its state (refused with a
HibernationRefused Event)."""

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
"""In spec.template.metadata.annotations: a new value rolls every pod, as for a Deployment
(`kubectl rollout restart` writes the same key); `kubectl gencluster restart` sets it."""

GRPC_PORT_NAME = "grpc"
"""Name of the container port serving the Client, Peer and Admin services."""

METRICS_PORT_NAME = "metrics"
"""Name of the container port serving `/metrics` and the Admin bridge (`gencluster.admin_http`):
the port tools reach through the API server's `pods/NAME:PORT/proxy`."""

ADMIN_HTTP_PATH = "/admin/v1"
"""Prefix of the Admin bridge's routes on the metrics port: `POST /admin/v1/METHOD`."""

ADMIN_TOKEN_HEADER = "X-Gencluster-Peer-Token"
"""HTTP header carrying the peer token to the Admin bridge (the API server strips
`Authorization` before proxying, so the token cannot ride there)."""

PEER_TOKEN_KEY = "token"
"""Key of the peer token in the cluster's peer-token Secret."""

CRD_GROUP = "gencluster.io"
CRD_VERSION = "v1alpha1"
CRD_PLURAL = "clusteredservers"
"""Where the ClusteredServer resource lives in the API, for clients that read it."""


CA_BUNDLE_KEY = "ca.crt"
"""Key of the trust bundle in the cluster's CA Secret (`ca_secret_name`)."""


def ca_secret_name(cluster: str) -> str:
    """The Secret with the cluster's trust bundle (its CA: clients verify the pods with it)."""
    return f"{cluster}-ca"


def peer_token_secret_name(cluster: str) -> str:
    """The Secret holding the token peers and Admin callers authenticate with."""
    return f"{cluster}-peer-token"


DEFAULT_MIN_SYNC_STANDBYS = 1
"""`spec.replication.minSyncStandbys` when left out, capped by `replicas - 1`."""


def default_min_sync_standbys(replicas: int) -> int:
    """`spec.replication.minSyncStandbys` when the spec leaves it out (the CRD has no default,
    so the operator and `kubectl gencluster status` read it through here): one standby must
    hold every acknowledged write whenever there is one, and a single pod waits for nobody,
    so `replicas: 1` (or `kubectl scale --replicas=1`) works without touching a second field."""
    return max(0, min(DEFAULT_MIN_SYNC_STANDBYS, replicas - 1))
