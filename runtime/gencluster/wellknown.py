"""Names shared by the runtime and whoever talks to it: annotations, labels, gRPC metadata.

One place for each key, so the operator, the pods and the tests never spell one differently.
"""

from __future__ import annotations

IN_SYNC_ANNOTATION = "gencluster.io/in-sync"
"""On the Lease: JSON list of the standbys holding every acknowledged entry (see election)."""

ROLE_LABEL = "gencluster.io/role"
"""On a pod: `active` on the pod that serves; the client Service selects it."""

ROLE_ACTIVE = "active"

PEER_TOKEN_METADATA = "gencluster-peer-token"
"""gRPC metadata key carrying the shared secret on Peer and Admin calls."""

EPOCH_METADATA = "gencluster-epoch"
"""gRPC trailing metadata: the epoch of the replica that answered (also on error replies)."""

ACTIVE_ADDRESS_METADATA = "gencluster-active-address"
"""gRPC trailing metadata on UNAVAILABLE from a standby: where the active can be reached."""
