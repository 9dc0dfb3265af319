"""One runtime process: the façade the services talk to, and the executor of role transitions.

A replica's role is a value (`roles.Role`) changed only by `roles.transition`. `Node` turns
what its pieces report into role events, asks for the next role, and performs what the change
implies, nothing else:

- `elector.Elector`: the election loop and the fence watchdog (the Lease);
- `follower.Follower`: the standby side of replication (a stream from the active);
- `term.Term`: the active side of replication for one term, and the call path (`submit`);
- `handover.Handover`: switchover and graceful stop.

The pieces never touch each other or the node's fields: each gets the node as a small
protocol (`ElectionHost`, `FollowerHost`, `HandoverHost`) and reports through it. What a
change of role implies:

- **standby → active**: stop following, write the Lease (epoch = leaseTransitions), build a
  `Term`, serve, label the pod `active`.
- **active → standby** (Lease lost under `Fenced`, handed over, demoted): close the term
  (waiting callers get UNAVAILABLE and retry elsewhere), label the pod `standby`, follow.
- **SIGTERM**: an active hands over (or releases) first; then nothing follows or serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from gencluster import election, roles
from gencluster.acks import AckTracker
from gencluster.codec import Codec, get_codec
from gencluster.election import Leadership, LeaseRecord
from gencluster.elector import Elector, ServerInitFailed
from gencluster.follower import Follower
from gencluster.handover import Handover
from gencluster.leases import KubernetesApi, KubernetesError
from gencluster.log import CommandKind, Retention, Snapshot
from gencluster.machine import Outcome
from gencluster.node_config import NodeConfig
from gencluster.replica import Replica
from gencluster.replication import HighestEpoch
from gencluster.roles import Active, Joining, PartitionPolicy, Role, Standby, Stopped, Writes
from gencluster.server import GenServer
from gencluster.term import CodecMismatch, NotServing, Term
from gencluster.wellknown import ROLE_ACTIVE

log = logging.getLogger(__name__)

ROLE_STANDBY_LABEL = "standby"
MAX_LAG_ENTRIES = 10_000
LABEL_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class KnownActive:
    """Who this replica believes is active, for redirects and Admin Status. `reachable`:
    a stream from it works right now (during a failover the last known address is the dead
    active's, and a client sent there would only bounce back)."""

    identity: str = ""
    address: str = ""
    reachable: bool = False


class Node:
    """One replica: its role, its state, and the pieces that keep them true."""

    def __init__(self, config: NodeConfig, server: GenServer, api: KubernetesApi) -> None:
        self.config = config
        self.server = server
        self.codec: Codec = get_codec(config.codec)
        self._api = api
        self._retention = Retention()
        self.epochs = HighestEpoch()
        self._role: Role = Joining()
        self._replica: Replica | None = None
        self._term: Term | None = None
        self.in_sync_members: tuple[str, ...] = ()
        self.known_active = KnownActive()
        self._pause: object | None = None
        """The latest Admin.PauseWrites, so an earlier pause's timer does not end a later one."""
        self._background: set[asyncio.Task[Any]] = set()
        self._role_listeners: list[Callable[[], object]] = []
        self.elector = Elector(config=config, api=api, host=self)
        self._follower = Follower(config=config, api=api, host=self, epochs=self.epochs)
        self._handover = Handover(config=config, api=api, host=self)

    # -- what services ask --------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> Term | None:
        return self._term

    @property
    def replica(self) -> Replica | None:
        return self._replica

    @property
    def epoch(self) -> int:
        """The highest epoch seen (Lease transitions, entries, snapshots)."""
        return self.epochs.value

    def may_serve(self) -> bool:
        """Active, accepting, and (Fenced) within the renew deadline."""
        role = self._role
        if not isinstance(role, Active) or role.writes is not Writes.OPEN:
            return False
        if self._term is None or self._term.closed:
            return False
        if self.config.partition_policy is PartitionPolicy.AVAILABLE:
            return True
        return election.may_serve(role.leadership, time.monotonic(), self.config.election)

    def ready(self) -> bool:
        """Readiness: the serving active, or a caught-up standby in the in-sync set."""
        if isinstance(self._role, Active):
            return self.may_serve()
        return (
            isinstance(self._role, Standby)
            and self._replica is not None
            and self.config.identity in self.in_sync_members
        )

    def submit(
        self, kind: CommandKind, request_id: str, payload: bytes, codec_name: str = ""
    ) -> Awaitable[tuple[Outcome, int]]:
        """The call path: `Term.submit` of the serving term (see term.py for its errors)."""
        term = self._term
        if term is None:
            return self._refuse(codec_name)
        return term.submit(kind, request_id, payload, codec_name)

    async def _refuse(self, codec_name: str) -> tuple[Outcome, int]:
        if codec_name and codec_name != self.codec.name:
            raise CodecMismatch(
                f"payload encoded with {codec_name!r}, this cluster uses {self.codec.name!r}"
            )
        raise NotServing(f"{self.config.identity} is not the serving active")

    def on_role_change(self, listener: Callable[[], object]) -> None:
        """Call `listener` whenever role, readiness or the known active may have changed."""
        self._role_listeners.append(listener)

    def wake_election(self) -> None:
        self.elector.wake()

    @property
    def lease_record(self) -> LeaseRecord | None:
        """The Lease as last read (Admin Status)."""
        observation = self.elector.observation
        return observation.record if observation is not None else None

    @property
    def lease_read_at(self) -> float | None:
        return self.elector.read_at

    # -- admin --------------------------------------------------------------------------------

    def demote(self, follow_address: str | None) -> None:
        """Admin.Demote: stop serving and replicate from `follow_address` (or the Lease
        holder), in one transition; the override ends once a stream from there delivered."""
        if isinstance(self._role, Stopped):
            return
        was_active = isinstance(self._role, Active)
        self._become(roles.Demoted(follow_address))
        if follow_address:
            # Redirect this side's clients there as soon as the stream from it works (the
            # Lease, read again after a partition, names the holder but not its address).
            self.known_active = replace(self.known_active, address=follow_address)
        if not was_active:
            self._follower.retarget()

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

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Label the pod standby (a restart must clear a stale `active`), then elect forever."""
        self._spawn(self._set_label(ROLE_STANDBY_LABEL))
        self._follower.start()
        await self.elector.run()

    async def shutdown(self) -> None:
        """SIGTERM: hand over (or release), then stop every task."""
        if isinstance(self._role, Stopped):
            return
        self._become(roles.SigTerm())
        await self._follower.stop()
        if self._term is not None:
            handed = await self.hand_over(None, self.config.election.renew_deadline)
            if handed is None and self._term is not None:
                await self._handover.release()
        self._become(roles.Halted())
        with contextlib.suppress(KubernetesError):
            await self._api.set_role_label(self.config.identity, ROLE_STANDBY_LABEL)
        for task in list(self._background):
            task.cancel()

    # -- reports of the pieces (ElectionHost, FollowerHost, HandoverHost) ---------------------

    def holds_state(self) -> bool:
        return self._replica is not None

    def active_reachable(self) -> bool:
        return self.known_active.reachable

    def in_sync_to_publish(self) -> tuple[str, ...] | None:
        return self._term.tracker.begin_publish() if self._term is not None else None

    def publish_due(self) -> bool:
        return self._term is not None and self._term.tracker.publish_needed()

    def lease_read(self, record: LeaseRecord | None) -> None:
        if record is not None:
            self.epochs.saw(record.transitions)
            self.in_sync_members = record.in_sync or ()
            if record.holder and record.holder != self.known_active.identity:
                self.known_active = KnownActive(record.holder)
                self._follower.holder_changed()
            self._role_changed()

    async def prepare_to_lead(self) -> Replica | None:
        initial = self._initial_replica() if self._replica is None else None
        await self._follower.stop()
        return initial

    def lease_won(self, leadership: Leadership, record: LeaseRecord, initial: Replica | None
                  ) -> None:
        before = self._role
        if isinstance(before, Stopped):
            log.warning("took the Lease while stopping; it expires or the operator clears it")
            return
        self._become(roles.LeaseWon(leadership))
        if self._replica is None:
            self._replica = initial or self._initial_replica()
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

    def lead_refused(self) -> None:
        if roles.follows(self._role):
            self._follower.start()

    def renewed(self, renewed_at: float, members: tuple[str, ...]) -> None:
        role = self._role
        if not isinstance(role, Active) or role.leadership is None or self._term is None:
            return
        self._become(roles.Renewed(renewed_at))
        self._term.tracker.published(members)
        self.in_sync_members = members
        self._term.tracker_changed()

    def lease_lost(self, reason: str) -> None:
        if not isinstance(self._role, Active):
            return
        if self.config.partition_policy is PartitionPolicy.AVAILABLE:
            # Keep state and keep reporting ROLE_ACTIVE until the operator's ExportState and
            # Demote (docs/runtime-config.md): resyncing alone would drop acknowledged writes.
            log.warning("lost the Lease (%s); staying active until demoted", reason)
        else:
            log.warning("stepping down: %s", reason)
        self._become(roles.LeaseLost(reason))

    def standing_by(self) -> None:
        if roles.follows(self._role):
            self._follower.start()

    def follows(self) -> bool:
        return roles.follows(self._role)

    def follow_override(self) -> str | None:
        return roles.follow_override(self._role)

    def lease_holder(self) -> str:
        holder = self.elector.holder
        return "" if holder == self.config.identity else holder

    def joined(self, snapshot: Snapshot) -> Replica:
        self._replica = Replica.from_snapshot(
            self.server, self.codec, snapshot, retention=self._retention
        )
        return self._replica

    def snapshot_needed(self) -> None:
        if roles.follows(self._role):
            self._become(roles.SnapshotNeeded())

    def batch_applied(self, source: str, caught_up: bool) -> None:
        if not self.known_active.reachable:
            self.known_active = replace(self.known_active, reachable=True)
        if roles.follows(self._role):
            self._become(roles.BatchApplied(source, caught_up))

    def source_refused(self, address: str) -> None:
        if roles.follows(self._role):
            self._become(roles.SourceRefused(address))

    def stream_ended(self) -> None:
        self.known_active = replace(self.known_active, reachable=False)
        self.elector.wake()

    def holder_located(self, holder: str, address: str) -> None:
        if holder == self.known_active.identity:
            self.known_active = replace(self.known_active, address=address)

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

    # -- executing transitions ----------------------------------------------------------------

    def _become(self, event: roles.Event) -> None:
        """Run `event` through `roles.transition` and perform what the new role implies.
        (Stopping the follower is `shutdown`'s, which awaits it; the loop also ends by
        itself once the role no longer follows.)"""
        before = self._role
        after = roles.transition(before, event, policy=self.config.partition_policy)
        if after == before:
            return
        self._role = after
        if isinstance(before, Active) and not isinstance(after, Active):
            self._close_term()
            self.elector.wake()  # read the Lease at once: whom to follow now
        if roles.follows(after) and not roles.follows(before):
            self.known_active = replace(self.known_active, reachable=False)
            self._follower.start()
        self._role_changed()

    def _close_term(self) -> None:
        term, self._term = self._term, None
        if term is not None:
            term.close()
        self._server_terminate("stepped down")
        self._spawn(self._set_label(ROLE_STANDBY_LABEL))

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
        )

    def _tracker_changed(self) -> None:
        if self._term is not None and self._term.tracker.publish_needed():
            self.elector.wake()

    def _initial_replica(self) -> Replica:
        try:
            return Replica.from_init(
                self.server, self.codec, self.config.args, retention=self._retention
            )
        except Exception as error:
            raise ServerInitFailed(
                f"GENCLUSTER_ARGS: {self.config.server_spec} init(args) raised "
                f"{type(error).__name__}: {error}"
            ) from error

    def _server_terminate(self, reason: str) -> None:
        if self._replica is not None:
            error = self._replica.machine.terminate(reason)
            if error is not None:
                log.warning("terminate(%r) raised %s: %s", reason, error.type, error.message)

    def _role_changed(self) -> None:
        for listener in self._role_listeners:
            listener()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _set_label(self, role: str) -> None:
        """Keep the pod's role label true; retried until it lands or the role changed."""
        for _ in range(LABEL_ATTEMPTS):
            wanted_now = ROLE_ACTIVE if isinstance(self._role, Active) else ROLE_STANDBY_LABEL
            if wanted_now != role:
                return
            try:
                await self._api.set_role_label(self.config.identity, role)
                return
            except KubernetesError as error:
                log.warning("cannot label pod %s %s: %s", self.config.identity, role, error)
                await asyncio.sleep(self.config.election.retry_period / 2)
