"""What `plan` asks the shell to do: small frozen values, one class per kind of side effect.

The shell performs them in the order given and stops at the first failure (the next pass
plans again from fresh observations). Disruptive actions (those that can move the active role
or take a pod away) appear at most once per plan; see `DISRUPTIVE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gencluster_operator.events import EventReason, EventType, FailoverReason


@dataclass(frozen=True)
class CreatePod:
    """Create `desired.pod(resource, ordinal)` (named `pod`)."""

    pod: str
    ordinal: int


@dataclass(frozen=True)
class CreateClaim:
    """Create `desired.claim(resource, ordinal)` (named `claim`): before the pod of that
    ordinal, in the same pass (a WaitForFirstConsumer StorageClass binds it only once the
    pod is scheduled)."""

    claim: str
    ordinal: int


@dataclass(frozen=True)
class SetClaimOwnership:
    """Make the existing claim follow `persistence.retainOnDelete`: `retained` removes the
    ClusteredServer's ownerReference (the data outlives it), otherwise it is added
    (`desired.claim_ownership_patch`)."""

    claim: str
    retained: bool


@dataclass(frozen=True)
class DeletePod:
    """Delete the pod with a `uid` precondition, so that a pod recreated under the same name
    in the meantime is never the one deleted. `reason` is for logs."""

    pod: str
    uid: str
    reason: str

    def delete_options(self) -> dict[str, Any]:
        """The DeleteOptions body: the uid precondition (409 if the name now has another pod)."""
        return {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": self.uid}}


@dataclass(frozen=True)
class ClearLease:
    """Free the Lease held by a dead `holder`: write `holderIdentity` empty (as client-go's
    release does), keep `leaseTransitions` and the in-sync annotation, with `resourceVersion`
    as precondition so that a Lease taken over meanwhile is left alone (409: plan again)."""

    holder: str
    resource_version: str
    reason: FailoverReason

    def lease_patch(self) -> dict[str, Any]:
        """The JSON merge patch for the Lease: the resourceVersion makes it conditional."""
        return {
            "metadata": {"resourceVersion": self.resource_version},
            "spec": {"holderIdentity": None},
        }


@dataclass(frozen=True)
class Switchover:
    """Ask the active `from_pod` (admin Switchover RPC) to hand the Lease to `to_pod`. The shell
    remembers it as an `observed.Handover` until the Lease moves."""

    from_pod: str
    to_pod: str
    reason: FailoverReason


@dataclass(frozen=True)
class MergeStates:
    """Partition recovery (partitionPolicy Available): export `loser`'s state, run the user's
    merge on `winner` as a replicated command, then demote `loser`
    (`runtime_admin.RuntimeAdmin.merge_states`)."""

    winner: str
    loser: str
    winner_epoch: int
    loser_epoch: int


@dataclass(frozen=True)
class Demote:
    """Ask a stale active (a lower epoch than the Lease's, partitionPolicy Fenced) to step
    down through the admin Demote RPC and follow `follow` (the winner; the shell passes its
    `podIP:port` as `follow_address`). Fencing already keeps it from acknowledging writes."""

    pod: str
    epoch: int
    follow: str


@dataclass(frozen=True)
class RemoveAnnotation:
    """Remove an annotation from the ClusteredServer (a handled switchover or reinitialize
    request)."""

    key: str

    def resource_patch(self) -> dict[str, Any]:
        """The JSON merge patch for the ClusteredServer (null removes the key)."""
        return {"metadata": {"annotations": {self.key: None}}}


@dataclass(frozen=True)
class RemoveLeaseAnnotation:
    """Remove an annotation from the cluster's Lease (`gencluster.io/initialized` on a
    reinitialize request). Unconditional: a merge patch touches that key only, and a runtime
    writing the Lease meanwhile with an older resourceVersion gets a conflict and re-reads."""

    key: str

    def lease_patch(self) -> dict[str, Any]:
        return {"metadata": {"annotations": {self.key: None}}}


@dataclass(frozen=True)
class RecordEvent:
    """A Kubernetes Event regarding the ClusteredServer."""

    reason: EventReason
    message: str
    type: EventType = EventType.NORMAL


Action = (
    CreateClaim | SetClaimOwnership | CreatePod | DeletePod | ClearLease | Switchover
    | MergeStates | Demote | RemoveLeaseAnnotation | RemoveAnnotation | RecordEvent
)

DISRUPTIVE = (DeletePod, ClearLease, Switchover, MergeStates, Demote)
"""Actions that may move the active role or remove a pod: never more than one per plan."""
