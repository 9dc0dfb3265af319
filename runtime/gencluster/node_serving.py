"""The active's concerns of the node: the call path, the term's life, pause and handover.

Part of the `node.Node` façade (see node_state.py for how it is spread over files).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from gencluster import roles
from gencluster.acks import AckTracker, ReplicationMode
from gencluster.election import Leadership, LeaseRecord
from gencluster.elector import ServerInitFailed
from gencluster.failsafe import Granted, Refused
from gencluster.handler_watchdog import HandlerWatchdog
from gencluster.log import CommandKind
from gencluster.machine import Outcome
from gencluster.node_state import KnownActive, NodeState
from gencluster.replica import Replica
from gencluster.resume import LastEvent
from gencluster.roles import Active, PartitionPolicy, Stopped, Writes
from gencluster.term import CodecMismatch, EventFeed, NotServing, Term
from gencluster.wellknown import ROLE_ACTIVE

log = logging.getLogger(__name__)

MAX_LAG_ENTRIES = 10_000


def state_lost_message(cluster: str) -> str:
    """What a client (and the log) is told while the cluster's state is lost."""
    return (
        f"the state of ClusteredServer {cluster} was lost: every replica restarted without it "
        "(no persistence, or every volume lost), and init is never run again by itself. "
        f"Restore a backup (`kubectl gencluster restore {cluster} FILE`) or start afresh "
        f"from init (`kubectl annotate csrv {cluster} gencluster.io/reinitialize=<reason>`); "
        "see docs/durability.md"
    )


class Serving(NodeState):
    """The call path, admin pause and switchover, and the `HandoverHost` side of the node,
    plus the election's reports that open, renew and publish a term."""

    _pause: object | None = None
    """The latest Admin.PauseWrites, so an earlier pause's timer does not end a later one."""

    def submit(
        self,
        kind: CommandKind,
        request_id: str,
        payload: bytes,
        codec_name: str = "",
        first_attempt: float = 0.0,
    ) -> Awaitable[tuple[Outcome, int]]:
        """The call path: `Term.submit` of the serving term (see term.py for its errors)."""
        term = self._term
        if term is None:
            return self._refuse(codec_name)
        return term.submit(kind, request_id, payload, codec_name, first_attempt)

    def subscribe(
        self, topic: str, from_event: int | None, *, accept_gap: bool,
        last: LastEvent | None = None,
    ) -> EventFeed:
        """A Subscribe stream from the serving term (see `Term.subscribe`)."""
        if self._term is None:
            raise NotServing(f"{self.config.identity} is not the serving active")
        return self._term.subscribe(topic, from_event, accept_gap=accept_gap, last=last)

    async def _refuse(self, codec_name: str) -> tuple[Outcome, int]:
        if codec_name and codec_name != self.codec.name:
            raise CodecMismatch(
                f"payload encoded with {codec_name!r}, this cluster uses {self.codec.name!r}"
            )
        if self.state_lost():
            raise NotServing(state_lost_message(self.config.cluster or self.config.lease_name))
        raise NotServing(f"{self.config.identity} is not the serving active")

    def pause_writes(self, seconds: float) -> bool:
        """Partition recovery (Admin.PauseWrites): an active stops accepting client calls for
        `seconds`, so that the state the operator exports next is final (a call acknowledged
        after the export would vanish when this replica resyncs from the winner); `seconds`
        <= 0 resumes. The pause ends by itself after `seconds`, so an operator that dies
        mid-merge cannot leave this side paused for good. Returns whether it is paused."""
        role = self._role
        if not isinstance(role, Active) or role.writes not in (Writes.OPEN, Writes.PAUSED):
            return False
        self._pause = pause = object()
        self._become(roles.WritesPaused() if seconds > 0 else roles.WritesResumed())
        if seconds > 0:
            self._spawn(self._resume_later(seconds, self._term, pause))
        return seconds > 0

    async def _resume_later(self, seconds: float, term: Term | None, pause: object) -> None:
        await asyncio.sleep(seconds)
        role = self._role
        if self._term is term and self._pause is pause and isinstance(role, Active) and (
            role.writes is Writes.PAUSED
        ):
            log.warning("no merge followed the pause of %.1fs; accepting calls again", seconds)
            self._become(roles.WritesResumed())

    async def hand_over(self, target: str | None, timeout: float) -> tuple[str, int] | None:
        """Admin.Switchover (and SIGTERM): see handover.py."""
        term = self._term
        role = self._role
        if term is None or not isinstance(role, Active) or role.writes is Writes.SWITCHING_OVER:
            return None
        return await self._handover.hand_over(term, target, timeout)

    # -- reports of the election and the handover -------------------------------------------

    def in_sync_to_publish(self) -> tuple[str, ...] | None:
        return self._term.tracker.begin_publish() if self._term is not None else None

    def failsafe_candidates(self) -> frozenset[str]:
        return self._term.tracker.lease_may_name if self._term is not None else frozenset()

    def standby_address(self, member: str) -> str | None:
        return self._term.standby_addresses.get(member) if self._term is not None else None

    def promise(self, epoch: int) -> Granted | Refused:
        """Peer.Promise: the active of `epoch` asks this replica not to take the Lease."""
        return self.elector.promise(epoch, self.epochs.value)

    def publish_due(self) -> bool:
        return self._term is not None and self._term.tracker.publish_needed()

    def lease_won(
        self, leadership: Leadership, record: LeaseRecord, initial: Replica | None
    ) -> None:
        before = self._role
        if isinstance(before, Stopped):
            log.warning("took the Lease while stopping; it expires or the operator clears it")
            return
        self._become(roles.LeaseWon(leadership))
        if self._replica is None:
            self._replica = self._persisted(initial or self._initial_replica())
        self._restored = False
        self.recovered_from_disk = False
        self.epochs.saw(leadership.epoch)
        if isinstance(before, Active) and before.epoch == leadership.epoch:
            return  # the same term, its Lease regained (Available policy)
        if self._term is not None:
            self._term.close()
        self._term = self._open_term(leadership.epoch, record)
        self._follower.forget_snapshot_need()
        self.known_active = KnownActive(self.config.identity, self.config.advertise_address)
        log.info("active at epoch %d from seq %d", leadership.epoch, self._replica.applied_seq)
        self._role_changed()
        self._spawn(self._set_label(ROLE_ACTIVE))

    def renewed(self, renewed_at: float, members: tuple[str, ...]) -> None:
        role = self._role
        if not isinstance(role, Active) or role.leadership is None or self._term is None:
            return
        self._become(roles.Renewed(renewed_at))
        self._term.tracker.published(members)
        self.in_sync_members = members
        self._term.tracker_changed()

    def handover_started(self) -> None:
        self._become(roles.HandoverStarted())

    def handover_abandoned(self, term: Term) -> None:
        if self._term is term and isinstance(self._role, Active):
            self._become(roles.HandoverAbandoned())

    def handed_over(self, target: str, address: str, epoch: int) -> None:
        self.epochs.saw(epoch)
        if isinstance(self._role, Active):  # else the Lease was lost meanwhile
            self._become(roles.HandedOver(target))
        # Redirect clients to the target at once.
        self.known_active = KnownActive(target, address, reachable=bool(address))

    def _open_term(self, epoch: int, record: LeaseRecord) -> Term:
        assert self._replica is not None
        tracker = AckTracker(
            me=self.config.identity,
            mode=self.config.mode,
            min_sync_standbys=self.config.min_sync_standbys,
            max_lag_entries=MAX_LAG_ENTRIES,
            last_seq=self._replica.log.last_seq,
            published=record.in_sync or (),
        )
        return Term(
            replica=self._replica,
            tracker=tracker,
            epoch=epoch,
            heartbeat_interval=self.config.heartbeat_interval,
            codec_name=self.codec.name,
            identity=self.config.identity,
            may_serve=self.may_serve,
            on_change=self._tracker_changed,
            # Sync: an answer waits for the entry on this replica's disk too (Async answers
            # at once: docs/durability.md says what a crash can lose).
            journal=self.journal if self.config.mode is ReplicationMode.SYNC else None,
            watchdog=self._handler_watchdog(),
            max_subscribers=self.config.max_subscribers,
            relax_after=self._relax_after(),
        )

    def _relax_after(self) -> float | None:
        """Degraded Sync: under the Available policy a Sync active whose callers waited the
        renew deadline without acknowledgements (the time a Fenced active keeps serving
        without its Lease) answers without standbys until they are back; under Fenced it
        never does (docs/partitions.md, "Available and Sync replication")."""
        if (
            self.config.partition_policy is PartitionPolicy.AVAILABLE
            and self.config.mode is ReplicationMode.SYNC
        ):
            return self.config.election.renew_deadline
        return None

    def sync_degraded(self) -> tuple[float, int] | None:
        """(seconds since the active answered without standbys, answered entries the in-sync
        standbys may lack) while degraded Sync lasts; None otherwise."""
        term = self._term
        if term is None:
            return None
        seconds = term.degraded_seconds()
        if seconds is None:
            return None
        return seconds, term.tracker.unsynced_entries

    def _handler_watchdog(self) -> HandlerWatchdog:
        """One per process, started with the first term (docs/poison.md)."""
        if self.watchdog is None:
            server = type(self.server)
            self.watchdog = HandlerWatchdog(
                server.handler_budget_seconds, server.handler_hang_seconds
            )
        return self.watchdog

    def _tracker_changed(self) -> None:
        if self._term is not None and self._term.tracker.publish_needed():
            self.elector.wake()

    def _initial_replica(self) -> Replica:
        try:
            return Replica.from_init(
                self.server, self.codec, self.config.args, retention=self._retention,
                limits=self._limits,
            )
        except Exception as error:
            raise ServerInitFailed(
                f"GENCLUSTER_ARGS: {self.config.server_spec} init(args) raised "
                f"{type(error).__name__}: {error}"
            ) from error
