"""The state of one runtime process, and the one place its role changes (`_become`).

`NodeState` is the base of `node.Node`, the façade spread over files by concern (as
CloudNativePG spreads its instance manager): this file holds what every concern reads (role,
replica, term, the known active) and executes role transitions; `node_serving` holds the
active's concerns, `node_following` the standby's reports, `node` the wiring, the election's
reports and the lifecycle. The pieces (`Elector`, `Follower`, `Handover`, `Term`) never see
these fields: they talk to the node through their host protocols.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gencluster import election, failsafe, roles, storage
from gencluster.codec import Codec, get_codec
from gencluster.election import LeaseRecord
from gencluster.elector import Elector
from gencluster.follower import Follower
from gencluster.handler_watchdog import HandlerWatchdog
from gencluster.handover import Handover
from gencluster.journal import Journal
from gencluster.leases import KubernetesApi, KubernetesError
from gencluster.log import Retention
from gencluster.machine import MachineLimits
from gencluster.node_config import NodeConfig
from gencluster.replica import Replica
from gencluster.replication import HighestEpoch
from gencluster.roles import Active, Joining, PartitionPolicy, Role, Standby, Writes
from gencluster.server import GenServer
from gencluster.term import Term
from gencluster.wellknown import ROLE_ACTIVE

log = logging.getLogger(__name__)

ROLE_STANDBY_LABEL = "standby"
LABEL_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class KnownActive:
    """Who this replica believes is active, for redirects and Admin Status. `reachable`:
    a stream from it works right now (during a failover the last known address is the dead
    active's, and a client sent there would only bounce back)."""

    identity: str = ""
    address: str = ""
    reachable: bool = False


class NodeState:
    """Role, state and term of one replica; `_become` is the only writer of the role."""

    elector: Elector
    _follower: Follower
    _handover: Handover

    def __init__(self, config: NodeConfig, server: GenServer, api: KubernetesApi) -> None:
        self.config = config
        self.server = server
        self.watchdog: HandlerWatchdog | None = None
        """The active's handler watchdog (node_serving), once a term opened."""
        self.codec: Codec = get_codec(config.codec, config.max_message_bytes)
        self._api = api
        self._retention = Retention()
        self._limits = MachineLimits(
            deduplication_window=config.deduplication_window,
            max_reply_bytes=config.reply_table_max_bytes,
        )
        self.epochs = HighestEpoch()
        self._role: Role = Joining()
        self._replica: Replica | None = None
        self.downgrade_refused = ""
        """Why this replica refuses the active's state or entries (a newer server class
        version: `versions.downgrade_refusal`); "" while it follows. Admin Status reports it."""
        self._restored = False
        """The state came from Admin.Restore into a cluster without an active: this replica
        may lead whatever the lost cluster's in-sync set says (until it leads once)."""
        self._restore_id = ""
        """The request id of the restore that loaded the state (a retry is answered, not
        refused as a restore into a replica with state)."""
        self._term: Term | None = None
        self.journal: Journal | None = None
        self.recovered_from_disk = False
        """The state came from this replica's volume at start, and it has neither led nor
        followed an active since: whole-cluster recovery decides whether it may lead."""
        if config.data_dir is not None:
            self._replica = self._recover(Path(config.data_dir))
        self.in_sync_members: tuple[str, ...] = ()
        self.known_active = KnownActive()
        self._background: set[asyncio.Task[Any]] = set()
        self._role_listeners: list[Callable[[], object]] = []

    def _recover(self, directory: Path) -> Replica | None:
        """The state of this replica's volume: newest snapshot, then the log after it."""
        recovered = storage.recover(directory)
        for note in recovered.notes:
            log.warning("%s: %s", directory, note)
        if recovered.snapshot is None:
            self.journal = Journal(directory, segment=None, position=0)
            log.info("no state in %s", directory)
            return None
        replica = Replica.from_snapshot(
            self.server, self.codec, recovered.snapshot, retention=self._retention
        )
        for entry in recovered.entries:
            replica.receive(entry)
        self.journal = Journal(directory, segment=recovered.segment, position=replica.applied_seq)
        replica.journal = self.journal
        self.epochs.saw(replica.applied_epoch)
        self.recovered_from_disk = True
        log.info(
            "recovered from %s: snapshot at seq %d, %d entries after it, at (epoch %d, seq %d)",
            directory, recovered.snapshot.applied_seq, len(recovered.entries),
            replica.applied_epoch, replica.applied_seq,
        )
        return replica

    def _persisted(self, replica: Replica) -> Replica:
        """`replica` is this replica's new state (init, a join, a restore): with persistence
        it replaces what the volume held, and its entries are journaled from here on."""
        if self.journal is not None:
            # Unencoded: the journal encodes it off the event loop (state_encoding).
            self.journal.install(replica.machine.snapshot_parts())
            replica.journal = self.journal
        return replica

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
        return failsafe.may_serve(
            role.leadership, time.monotonic(), self.config.election,
            self.elector.failsafe_until(),
        )

    def failsafe_seconds(self) -> float | None:
        """While serving in failsafe (failsafe.py): seconds since the last successful Lease
        renewal; None otherwise."""
        return self.elector.failsafe_seconds(time.monotonic())

    def failsafe_episodes(self) -> tuple[int, float]:
        """Failsafe stretches served by this process, and the length of the last ended one."""
        return self.elector.failsafe_episodes, self.elector.last_failsafe_seconds

    def ready(self) -> bool:
        """Readiness: the serving active, or a caught-up standby in the in-sync set."""
        if isinstance(self._role, Active):
            return self.may_serve()
        return (
            isinstance(self._role, Standby)
            and self._replica is not None
            and self.config.identity in self.in_sync_members
        )

    def state_lost(self) -> bool:
        """This replica holds no state while the Lease says the cluster had one, and nobody
        holds the Lease to join from: every replica lost it (docs/durability.md, StateLost).
        A replica merely joining a live active is not lost: it gets a snapshot. With
        persistence, only after twice the lease duration without a holder: replicas restored
        from their volumes may still be agreeing on who leads (`election.state_lost`)."""
        grace = 2.0 * self.config.election.lease_duration if self.journal is not None else 0.0
        return election.state_lost(
            self.elector.observation,
            self.config.identity,
            time.monotonic(),
            holds_state=self._replica is not None,
            grace=grace,
        )

    def on_role_change(self, listener: Callable[[], object]) -> None:
        """Call `listener` whenever role, readiness or the known active may have changed."""
        self._role_listeners.append(listener)

    @property
    def lease_record(self) -> LeaseRecord | None:
        """The Lease as last read (Admin Status)."""
        observation = self.elector.observation
        return observation.record if observation is not None else None

    @property
    def lease_read_at(self) -> float | None:
        return self.elector.read_at

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
