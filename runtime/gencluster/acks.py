"""The active's bookkeeping of standby acknowledgements and of the in-sync set.

Two questions the replication shell asks after every ack, append or (dis)connection:

1. Up to which sequence number may the active answer clients? (`acknowledged_seq`)
2. Which standbys may take the Lease if the active dies? (`desired_in_sync`, to publish in the
   Lease annotation; see election.py)

The rule that ties them together: **every published in-sync member holds every acknowledged
entry.** So in Sync mode an entry is acknowledged once *every* member whose acks are required
has applied it, and the Lease must already name at least `min_sync_standbys` members
(publish before relying on it: until then a successor could be anyone):

- A connected standby that holds every acknowledged entry joins the required set at once
  (requiring more acks is always safe), and is published with the next Lease write (the
  shell writes at once when `publish_needed()`, rather than waiting for the next renewal).
- A member that disconnects or lags by more than `max_lag_entries` is dropped from the set
  to publish, but its acks stay required until a Lease write without it succeeded
  (`published`): until then it may still take over, so it must still hold everything.
- A set being written (`begin_publish`) stays required until the Lease is known to carry
  another one: a write that timed out may still have landed.
- In Sync mode a member is never dropped below `min_sync_standbys`: writes then wait (the
  price of not losing acknowledged requests) until another standby catches up and replaces it.

In Async mode clients are answered at once (`acknowledged_seq` is the last appended entry);
the in-sync set lists the connected standbys within `max_lag_entries`, so failover loses as
little as possible.

**Degraded Sync (partitionPolicy `Available` only).** Like Patroni's non-strict synchronous
mode, an `Available` active whose callers waited a bounded time without acknowledgements
(the shell decides when: `term.Term`) calls `relax`: from then on every appended entry is
acknowledged at once, as in Async, and `degraded` is True. The rule above then holds only up
to `durable_seq` (entries every published member holds, as the strict rule counts them):
entries between `durable_seq` and `acknowledged_seq` were answered but live only on this
replica (and its disk) until a standby catches up or the operator merges this side. While
relaxed, the in-sync set is not emptied: members are still never dropped below
`min_sync_standbys` and a standby joins only once it holds every *durable* entry, so whoever
the Lease names still holds everything acknowledged before the degradation. The tracker
tightens again (strict Sync for new entries) as soon as enough published members are
connected, within `max_lag_entries`, and have acknowledged the entries that were waiting when
it relaxed; it stops being `degraded` once `durable_seq` reaches `acknowledged_seq` (the
first strict acknowledgement after that proves it, acks being cumulative).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from gencluster.election import normalize_members


class ReplicationMode(StrEnum):
    SYNC = "Sync"
    ASYNC = "Async"


@dataclass(frozen=True, slots=True)
class StandbyProgress:
    """One standby as `Admin.Status` reports it."""

    identity: str
    acked_seq: int
    lag: int
    connected: bool
    in_sync: bool


class AckTracker:
    """Acknowledgements from standbys, and the in-sync set derived from them."""

    def __init__(
        self,
        *,
        me: str,
        mode: ReplicationMode,
        min_sync_standbys: int,
        max_lag_entries: int,
        last_seq: int,
        published: Iterable[str] = (),
    ) -> None:
        """`last_seq` is the log's end when this replica became active (everything before it
        counts as acknowledged: the previous active acknowledged it, or nobody was told), and
        `published` the in-sync set found in the Lease (`me`, this replica, is ignored)."""
        if min_sync_standbys < 0 or max_lag_entries < 0:
            raise ValueError("min_sync_standbys and max_lag_entries must not be negative")
        self.me = me
        self.mode = mode
        self.min_sync_standbys = min_sync_standbys
        self.max_lag_entries = max_lag_entries
        self._last_seq = last_seq
        self._acknowledged = last_seq
        self._published = frozenset(published) - {me}
        self._in_flight: frozenset[str] = frozenset()
        self._desired = set(self._published)
        self._acked: dict[str, int] = dict.fromkeys(self._published, 0)
        self._connected: set[str] = set()
        self._required: frozenset[str] | None = None
        self._durable = last_seq
        self._relaxed_from: int | None = None
        """While relaxed: the last entry appended when `relax` was called."""

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def acknowledged_seq(self) -> int:
        """Entries up to here may be answered to clients (never decreases)."""
        return self._acknowledged

    @property
    def durable_seq(self) -> int:
        """Entries up to here are held by every member whose acks the strict rule requires
        (equal to `acknowledged_seq` unless `degraded`; never decreases)."""
        return self._durable

    @property
    def relaxed(self) -> bool:
        """New entries are acknowledged at once, without standbys (`relax`)."""
        return self._relaxed_from is not None

    @property
    def degraded(self) -> bool:
        """Some acknowledged entry is not yet held by the members the strict rule requires:
        relaxed, or tightened but not yet caught up with what was acknowledged meanwhile."""
        return self._relaxed_from is not None or self._acknowledged > self._durable

    @property
    def unsynced_entries(self) -> int:
        """Acknowledged entries the in-sync members may lack (0 unless `degraded`)."""
        return self._acknowledged - self._durable

    def relax(self) -> bool:
        """Acknowledge without standbys from now on (degraded Sync: the shell calls it for
        the Available policy only, after callers waited its bound). Returns whether this
        started relaxing (False in Async mode, or when already relaxed)."""
        if self.mode is ReplicationMode.ASYNC or self._relaxed_from is not None:
            return False
        self._relaxed_from = self._last_seq
        self._update()
        return True

    @property
    def published_in_sync(self) -> tuple[str, ...]:
        return normalize_members(self._published)

    @property
    def lease_may_name(self) -> frozenset[str]:
        """Every standby the Lease's in-sync annotation may name now: the set last known
        published and those being written (a write that timed out may have landed). They are
        the pods that could take the Lease over, whose promises failsafe needs (failsafe.py)."""
        return self._published | self._in_flight

    @property
    def required(self) -> frozenset[str]:
        """Standbys whose acks gate acknowledgement: published, being published, or added.

        Cached between changes of those sets: it is read after every append and ack."""
        if self._required is None:
            if self.mode is ReplicationMode.ASYNC:
                self._required = frozenset()
            else:
                self._required = self._published | self._in_flight | frozenset(self._desired)
        return self._required

    def desired_in_sync(self) -> tuple[str, ...]:
        """The in-sync set the Lease should carry."""
        return normalize_members(self._desired)

    def publish_needed(self) -> bool:
        return self._desired != self._published

    def begin_publish(self) -> tuple[str, ...]:
        """The set to write into the Lease now; its members stay required until `published`
        reports what the Lease carries."""
        members = self.desired_in_sync()
        self._in_flight |= frozenset(members)
        self._required = None
        return members

    def appended(self, seq: int) -> None:
        """The active appended entries up to `seq`."""
        if seq < self._last_seq:
            raise ValueError(f"the log cannot move back from {self._last_seq} to {seq}")
        self._last_seq = seq
        self._update()

    def connected(self, standby: str, acked_seq: int) -> None:
        """A standby (re)connected, positioned at `acked_seq` in the active's log."""
        self._connected.add(standby)
        self._acked[standby] = acked_seq
        self._update()

    def disconnected(self, standby: str) -> None:
        self._connected.discard(standby)
        self._update()

    def acked(self, standby: str, seq: int) -> None:
        """A cumulative ack: `standby` applied every entry up to `seq`."""
        if seq > self._last_seq:
            raise ValueError(f"{standby!r} acked {seq}, beyond the last entry {self._last_seq}")
        self._acked[standby] = max(self._acked.get(standby, 0), seq)
        self._update()

    def acked_by(self, standby: str) -> int:
        """The last entry `standby` acknowledged (its position when it connected, before any
        ack): the one record of it, which the active's sender and handover read too."""
        return self._acked.get(standby, 0)

    def published(self, members: Iterable[str]) -> None:
        """The Lease is known to carry `members`: a write of them succeeded, or the active
        read its own Lease. (Lease writes are serialized by resourceVersion, so what was read
        or written last is what the Lease holds.)"""
        self._published = frozenset(members) - {self.me}
        self._in_flight = frozenset()
        self._required = None
        self._update()

    def standbys(self) -> list[StandbyProgress]:
        known = sorted(self._connected | self._published | self._desired)
        return [
            StandbyProgress(
                identity=name,
                acked_seq=self._acked.get(name, 0),
                lag=self._last_seq - self._acked.get(name, 0),
                connected=name in self._connected,
                in_sync=name in self._published,
            )
            for name in known
        ]

    def _update(self) -> None:
        # Runs after every append and ack: the usual case (every member keeps up, nobody
        # joins) allocates and sorts nothing.
        joining = self._connected - self._desired
        if joining:
            for standby in sorted(joining):
                if self._may_join(standby):
                    self._desired.add(standby)
                    self._required = None
        laggards = [member for member in self._desired if not self._keeps_up(member)]
        for member in sorted(laggards):
            if self.mode is ReplicationMode.ASYNC or len(self._desired) > self.min_sync_standbys:
                self._desired.discard(member)
                self._required = None
        acknowledgeable = self._acknowledgeable()
        if acknowledgeable > self._durable:
            self._durable = acknowledgeable
        if self._relaxed_from is not None and self._may_tighten(self._relaxed_from):
            self._relaxed_from = None
        if self._relaxed_from is not None:
            acknowledgeable = self._last_seq
        if acknowledgeable > self._acknowledged:
            self._acknowledged = acknowledgeable

    def _may_join(self, standby: str) -> bool:
        """Sync: it holds every durable entry (every acknowledged one, unless degraded).
        Async: nothing is guaranteed anyway, so it is enough to be within `max_lag_entries`
        (failover then loses the least)."""
        if self.mode is ReplicationMode.ASYNC:
            return self._keeps_up(standby)
        return self._acked.get(standby, 0) >= self._durable

    def _may_tighten(self, relaxed_from: int) -> bool:
        """Relaxed: strict Sync can resume, because the Lease names enough members and each
        member whose acks are required is connected, keeps up, and has acknowledged every
        entry that was waiting when the tracker relaxed (proof that it is really back, not a
        stream that still looks open)."""
        if len(self._published) < self.min_sync_standbys:
            return False
        acked = self._acked
        return all(
            self._keeps_up(member) and acked.get(member, 0) >= relaxed_from
            for member in self.required
        )

    def _keeps_up(self, member: str) -> bool:
        lag = self._last_seq - self._acked.get(member, 0)
        return member in self._connected and lag <= self.max_lag_entries

    def _acknowledgeable(self) -> int:
        if self.mode is ReplicationMode.ASYNC:
            return self._last_seq
        if len(self._published) < self.min_sync_standbys:
            # Until the Lease names enough members, a successor could be anyone with state.
            return self._durable
        required = self.required
        if not required:
            return self._last_seq
        acked = self._acked
        return min([acked.get(member, 0) for member in required])
