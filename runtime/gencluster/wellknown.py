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

CLUSTER_LABEL = "gencluster.io/cluster"
"""On every object the operator creates for a ClusteredServer (pods included): its name."""

SWITCHOVER_TO_ANNOTATION = "gencluster.io/switchover-to"
"""On the ClusteredServer: asks the operator to hand the active role to this pod; the operator
removes it once the switchover is done or rejected."""

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


def peer_token_secret_name(cluster: str) -> str:
    """The Secret holding the token peers and Admin callers authenticate with."""
    return f"{cluster}-peer-token"
