"""Whole-cluster recovery: which replica restored from its volume may lead, as a pure rule.

When every pod restarts at once (a node failure, `kubectl delete pods --all --force`), each
replica with persistence comes back with the state of its own volume, at its own durable
position `(applied_epoch, applied_seq)`. Exactly one must lead, and never one that lacks an
acknowledged write. The Lease alone says who could have them (no operator needed):

- **In-sync set published** (Sync mode with standbys): by the rule of `acks.AckTracker`,
  every published member holds every acknowledged entry, durably (a standby acknowledges only
  what it has fsynced), and only members may lead (`election.candidacy`; the last holder is
  not a member). So any member is *safe*; the rule still prefers the most advanced
  reachable member (it loses the fewest applied-but-unacknowledged entries, which nobody was
  told about) and waits up to `patience` (one lease duration) for members that do not answer
  yet, then leads with what it has: that loses nothing acknowledged.
- **Empty in-sync set** (Async mode, `minSyncStandbys: 0`, or every standby lagging): only the
  last holder is sure to hold every acknowledged entry, and the operator's failover assist may
  have cleared its name from the Lease. Every replica with a volume is in the electorate; the
  most advanced reachable one leads once all answered, or after `patience`. With `strict`
  (Sync mode: an acknowledgement promised durability) it waits for every replica instead, as
  Patroni's strict synchronous mode waits for its sync standby: the price is availability
  when a volume is gone for good (then a restore or reinitialize is the way out).

Ties are broken by identity (the smallest name leads), so two replicas at the same position
never both decide to lead. The shell asks each peer's `Admin.Status` (`applied_epoch`,
`applied_seq`; None when it does not answer or holds no state) and calls `recover` again on
every Lease read until it says `Lead`, then takes the Lease with `election.decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A replica's durable position; compares as (epoch, seq), as the log orders entries."""

    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Lead:
    reason: str


@dataclass(frozen=True, slots=True)
class Defer:
    """Another replica leads: it is more advanced, or as advanced with a smaller name."""

    to: str
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Peers that may be more advanced have not answered yet; ask again later."""

    unreachable: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Abstain:
    """This replica may not lead: it is outside the set that holds every acknowledged entry."""

    reason: str


Verdict = Lead | Defer | Wait | Abstain


def electorate(in_sync: tuple[str, ...] | None, replicas: tuple[str, ...]) -> tuple[str, ...]:
    """Who may lead: the published in-sync set (each member holds every acknowledged entry;
    the last holder is not among them, and `election.candidacy` does not let it lead: what
    it holds beyond them was never acknowledged), or every replica when the set is empty or
    absent (then only the last holder, whose name the Lease may no longer carry, is sure to
    hold every acknowledged entry)."""
    if in_sync:
        return tuple(sorted(set(in_sync)))
    return tuple(sorted(set(replicas)))


def recover(
    me: str,
    mine: Position,
    *,
    in_sync: tuple[str, ...] | None,
    replicas: tuple[str, ...],
    peers: Mapping[str, Position | None],
    waited: float,
    patience: float,
    strict: bool,
) -> Verdict:
    """May `me`, restored from its volume at `mine`, lead now?

    `peers` maps each other replica to its reported position (None: no answer, or no state);
    `waited` is how long this replica has been asking (seconds, its own monotonic clock).
    """
    voters = electorate(in_sync, (*replicas, me))
    if me not in voters:
        return Abstain(f"{me} is not in the last in-sync set {list(voters)}")
    unreachable = []
    for peer in voters:
        if peer == me:
            continue
        position = peers.get(peer)
        if position is None:
            unreachable.append(peer)
        elif position > mine or (position == mine and peer < me):
            return Defer(peer, f"{peer} is at {_show(position)}, {me} at {_show(mine)}")
    if not unreachable:
        return Lead(f"the most advanced of {list(voters)} at {_show(mine)}")
    missing = tuple(unreachable)
    if waited < patience:
        return Wait(missing, f"waiting up to {patience:.0f}s for {list(missing)}")
    if in_sync:
        return Lead(
            f"{list(missing)} did not answer within {patience:.0f}s; {me} is in the in-sync "
            "set, so it holds every acknowledged entry"
        )
    if strict:
        return Wait(
            missing,
            f"no in-sync set: {list(missing)} may hold acknowledged entries nobody else has; "
            "waiting for them (restore or reinitialize if their volumes are gone)",
        )
    return Lead(
        f"{list(missing)} did not answer within {patience:.0f}s; leading at {_show(mine)} "
        "(Async: what only they held is lost)"
    )


def _show(position: Position) -> str:
    return f"(epoch {position.epoch}, seq {position.seq})"
