"""A replica's role as an immutable value, and the one pure function that changes it.

The runtime's shell (`node.Node` and its pieces) never sets a role field by hand: it turns
what happened (a Lease won or lost, a batch applied, an admin call, SIGTERM) into an event,
asks `transition` for the next role, and then performs what the change of role implies
(open or close a term, start the follower, relabel the pod). Keeping the rules here makes
every role change testable without sockets, and makes an impossible sequence (renewing a
Lease this replica does not hold, handing over twice) an error instead of a silent mix of
flags.

Roles:

- `Joining`: holds no usable state yet (or the active asked for a snapshot): follows the
  active and takes a snapshot first.
- `Standby`: holds the state up to (at least) the last batch it was sent, and follows.
- `Active`: serves calls and replicates them for its `epoch`. `leadership` is its view of
  its own Lease (None once it lost the Lease under the `Available` policy: it keeps its state
  and serves until the operator merges and demotes it; resyncing alone would drop
  acknowledged writes). `writes` says whether client calls are accepted now.
- `Stopped`: after SIGTERM; never follows or serves again.

"Fenced" is deliberately not a role: an `Active` past its renew deadline stops answering by
the clock (`election.may_serve`, checked on every call), before any event could arrive; the
fence watchdog's `LeaseLost` then makes it a `Standby`.

A standby's `follow` is the address an `Admin.Demote` told it to replicate from (a partition
left the Lease naming a holder whose address it cannot know); it ends once a stream from there
delivered, or when that address proves stale, after which the Lease says whom to follow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from gencluster.election import Leadership


class PartitionPolicy(StrEnum):
    """What an active does when it loses the Lease (spec.partitionPolicy)."""

    FENCED = "Fenced"
    AVAILABLE = "Available"


class Writes(StrEnum):
    """Whether an active accepts client calls."""

    OPEN = "open"
    PAUSED = "paused"
    """Admin.PauseWrites: the operator exports this side's final state for a merge."""
    SWITCHING_OVER = "switching over"
    """Admin.Switchover: waiting for the target to catch up, then writing the handover."""
    LEAVING = "leaving"
    """SIGTERM: handing the Lease over (or releasing it), then stopping."""


@dataclass(frozen=True, slots=True)
class Joining:
    follow: str | None = None


@dataclass(frozen=True, slots=True)
class Standby:
    follow: str | None = None


@dataclass(frozen=True, slots=True)
class Active:
    epoch: int
    leadership: Leadership | None
    writes: Writes = Writes.OPEN

    @property
    def accepting(self) -> bool:
        return self.writes is Writes.OPEN


@dataclass(frozen=True, slots=True)
class Stopped:
    pass


Role = Joining | Standby | Active | Stopped


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotNeeded:
    """The active asked for a snapshot, or refused this replica's position."""


@dataclass(frozen=True, slots=True)
class BatchApplied:
    """A batch from `source` was applied; `caught_up`: this replica has the active's last
    entry."""

    source: str
    caught_up: bool


@dataclass(frozen=True, slots=True)
class SourceRefused:
    """The stream from `address` came from a deposed active (a lower epoch)."""

    address: str


@dataclass(frozen=True, slots=True)
class LeaseWon:
    leadership: Leadership


@dataclass(frozen=True, slots=True)
class Renewed:
    """A renewal sent at `renewed_at` (monotonic) succeeded."""

    renewed_at: float


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The Lease moved, vanished, or was not renewed within the renew deadline."""

    reason: str


@dataclass(frozen=True, slots=True)
class Demoted:
    """Admin.Demote: stop serving and follow `follow` (or the Lease holder when None)."""

    follow: str | None


@dataclass(frozen=True, slots=True)
class WritesPaused:
    pass


@dataclass(frozen=True, slots=True)
class WritesResumed:
    pass


@dataclass(frozen=True, slots=True)
class HandoverStarted:
    pass


@dataclass(frozen=True, slots=True)
class HandoverAbandoned:
    """No handover was written (the target did not catch up in time, or the write failed)."""


@dataclass(frozen=True, slots=True)
class HandedOver:
    target: str


@dataclass(frozen=True, slots=True)
class SigTerm:
    pass


@dataclass(frozen=True, slots=True)
class Halted:
    """The end of a graceful stop: the Lease is handed over or released (or was never held)."""


Event = (
    SnapshotNeeded
    | BatchApplied
    | SourceRefused
    | LeaseWon
    | Renewed
    | LeaseLost
    | Demoted
    | WritesPaused
    | WritesResumed
    | HandoverStarted
    | HandoverAbandoned
    | HandedOver
    | SigTerm
    | Halted
)


class IllegalTransition(Exception):
    """`event` cannot happen to a replica in `role`: a bug in the shell, never a network
    condition (the shell checks the role before it reports what it saw)."""

    def __init__(self, role: Role, event: Event) -> None:
        super().__init__(f"{type(event).__name__} cannot happen to {role!r}")
        self.role = role
        self.event = event


def transition(role: Role, event: Event, *, policy: PartitionPolicy) -> Role:
    """The role after `event`; raises `IllegalTransition` for an impossible pair."""
    if isinstance(event, Halted):
        return Stopped()
    if isinstance(role, Joining | Standby):
        return _following(role, event)
    if isinstance(role, Active):
        return _active(role, event, policy)
    raise IllegalTransition(role, event)


def _following(role: Joining | Standby, event: Event) -> Role:
    if isinstance(event, SnapshotNeeded):
        return Joining(role.follow)
    if isinstance(event, BatchApplied):
        follow = None if event.source == role.follow else role.follow
        if event.caught_up or isinstance(role, Standby):
            return Standby(follow)
        return Joining(follow)
    if isinstance(event, SourceRefused):
        follow = None if event.address == role.follow else role.follow
        return replace(role, follow=follow)
    if isinstance(event, LeaseWon):
        return Active(event.leadership.epoch, event.leadership)
    if isinstance(event, Demoted):
        return replace(role, follow=event.follow)
    if isinstance(event, SigTerm):
        return Stopped()
    raise IllegalTransition(role, event)


def _active(role: Active, event: Event, policy: PartitionPolicy) -> Role:
    leaving = role.writes is Writes.LEAVING
    if isinstance(event, LeaseWon) and role.leadership is None:
        return Active(event.leadership.epoch, event.leadership, role.writes)
    if isinstance(event, Renewed) and role.leadership is not None:
        return replace(role, leadership=Leadership(role.leadership.epoch, event.renewed_at))
    if isinstance(event, LeaseLost):
        if policy is PartitionPolicy.AVAILABLE:
            return replace(role, leadership=None)
        return Stopped() if leaving else Standby()
    if isinstance(event, Demoted):
        return Stopped() if leaving else Standby(event.follow)
    if isinstance(event, SigTerm):
        return replace(role, writes=Writes.LEAVING)
    writes = _writes_after(role.writes, event)
    if writes is None:
        raise IllegalTransition(role, event)
    if isinstance(event, HandedOver):
        return Stopped() if leaving else Standby()
    return replace(role, writes=writes)


_WRITES: dict[tuple[type, Writes], Writes] = {
    (WritesPaused, Writes.OPEN): Writes.PAUSED,
    (WritesPaused, Writes.PAUSED): Writes.PAUSED,
    (WritesResumed, Writes.OPEN): Writes.OPEN,
    (WritesResumed, Writes.PAUSED): Writes.OPEN,
    (HandoverStarted, Writes.OPEN): Writes.SWITCHING_OVER,
    (HandoverStarted, Writes.PAUSED): Writes.SWITCHING_OVER,
    (HandoverStarted, Writes.LEAVING): Writes.LEAVING,
    (HandoverAbandoned, Writes.SWITCHING_OVER): Writes.OPEN,
    (HandoverAbandoned, Writes.LEAVING): Writes.LEAVING,
    (HandedOver, Writes.SWITCHING_OVER): Writes.SWITCHING_OVER,
    (HandedOver, Writes.LEAVING): Writes.LEAVING,
}
"""How an active's `writes` answer the admin and handover events; a pair missing here is
illegal (a pause during a handover, a second concurrent switchover)."""


def _writes_after(writes: Writes, event: Event) -> Writes | None:
    return _WRITES.get((type(event), writes))


def follows(role: Role) -> bool:
    return isinstance(role, Joining | Standby)


def follow_override(role: Role) -> str | None:
    return role.follow if isinstance(role, Joining | Standby) else None
