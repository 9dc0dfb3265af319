"""One runtime process: the façade the services talk to, wired to the pieces that run it.

A replica's role is a value (`roles.Role`) changed only by `roles.transition`. `Node` turns
what its pieces report into role events, asks for the next role, and performs what the change
implies, nothing else:

- `elector.Elector`: the election loop and the fence watchdog (the Lease);
- `follower.Follower`: the standby side of replication (a stream from the active);
- `term.Term`: the active side of replication for one term, and the call path (`submit`);
- `handover.Handover`: switchover and graceful stop.

The pieces never touch each other or the node's fields: each gets the node as a small
protocol (`ElectionHost`, `FollowerHost`, `HandoverHost`) and reports through it. `Node` is
one type spread over files by concern: `node_state` (role, state, transitions),
`node_serving` (the active), `node_following` (the standby), and this file (wiring, the
election's reports, admin Demote, the lifecycle). What a change of role implies:

- **standby → active**: stop following, write the Lease (epoch = leaseTransitions), build a
  `Term`, serve, label the pod `active`.
- **active → standby** (Lease lost under `Fenced`, handed over, demoted): close the term
  (waiting callers get UNAVAILABLE and retry elsewhere), label the pod `standby`, follow.
- **SIGTERM**: an active hands over (or releases) first; then nothing follows or serves.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from gencluster import election, recovery, roles
from gencluster.election import LeaseRecord
from gencluster.elector import Elector
from gencluster.follower import Follower
from gencluster.handover import Handover
from gencluster.leases import KubernetesApi, KubernetesError
from gencluster.log import Snapshot
from gencluster.node_config import NodeConfig
from gencluster.node_following import FollowingReports
from gencluster.node_serving import Serving
from gencluster.node_state import ROLE_STANDBY_LABEL, KnownActive
from gencluster.recovery_probe import RecoveryProbe
from gencluster.replica import Replica
from gencluster.roles import Active, PartitionPolicy, Stopped
from gencluster.server import GenServer

log = logging.getLogger(__name__)


class RestoreRefused(Exception):
    """Admin.Restore cannot load a backup into this replica now (FAILED_PRECONDITION); the
    message says why and what to do instead."""


class Node(Serving, FollowingReports):
    """One replica: its role, its state, and the pieces that keep them true."""

    def __init__(self, config: NodeConfig, server: GenServer, api: KubernetesApi) -> None:
        super().__init__(config, server, api)
        self.elector = Elector(config=config, api=api, host=self)
        self._follower = Follower(
            config=config, api=api, host=self, epochs=self.epochs, journal=self.journal
        )
        self._handover = Handover(config=config, api=api, host=self)
        self._recovery = RecoveryProbe(config, api)

    def wake_election(self) -> None:
        self.elector.wake()

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
        if self.journal is not None:
            await self.journal.close()

    # -- reports of the election ------------------------------------------------------------

    def holds_state(self) -> bool:
        return self._replica is not None

    def holds_restored_state(self) -> bool:
        return self._restored and self._replica is not None

    def restore(self, snapshot: Snapshot, request_id: str) -> Replica:
        """Admin.Restore without force: load a backup into this replica, which holds no
        state, in a cluster without an active (a new cluster, or one whose state was lost);
        it then takes the Lease (marking the cluster initialized with that write). Raises
        `RestoreRefused` (FAILED_PRECONDITION) otherwise, and the machine's `RestoreError`
        for a backup this server cannot load. A retry with the same `request_id` returns
        the replica it restored."""
        me = self.config.identity
        if self._replica is not None:
            if request_id and request_id == self._restore_id:
                return self._replica
            raise RestoreRefused(
                f"{me} holds a state (seq {self._replica.applied_seq}); a restore replaces a "
                "cluster's state only with force, on its serving active (`kubectl gencluster "
                "restore --force`)"
            )
        observation = self.elector.observation
        if observation is None:
            raise RestoreRefused(f"{me} has not read the Lease yet; retry in a moment")
        record = observation.record
        if record is not None and record.holder not in ("", me) and election.is_held(
            observation, time.monotonic()
        ):
            raise RestoreRefused(
                f"the Lease is held by {record.holder}: the cluster has an active, and {me} "
                "joins it by snapshot; to replace the cluster's state restore with force on "
                "the active"
            )
        transitions = record.transitions if record is not None else 0
        # Positions are per cluster: the backup's epoch may be above this Lease's (a new
        # cluster), and the next term's epoch (transitions + 1) must exceed the restored one.
        rebased = replace(snapshot, applied_epoch=min(snapshot.applied_epoch, transitions))
        self._replica = self._persisted(
            Replica.from_snapshot(self.server, self.codec, rebased, retention=self._retention)
        )
        self._restored = True
        self._restore_id = request_id
        log.warning("restored a backup at seq %d; taking the Lease", snapshot.applied_seq)
        self.elector.wake()
        return self._replica

    def active_reachable(self) -> bool:
        return self.known_active.reachable

    def lease_read(self, record: LeaseRecord | None) -> None:
        if record is not None:
            self.epochs.saw(record.transitions)
            self.in_sync_members = record.in_sync or ()
            if record.holder and record.holder != self.known_active.identity:
                self.known_active = KnownActive(record.holder, "", self.known_active.reachable)
                self._follower.holder_changed()
            self._role_changed()

    async def may_recover(self, record: LeaseRecord) -> bool:
        replica = self._replica
        if not self.recovered_from_disk or replica is None or record.holder == (
            self.config.identity
        ):
            return True
        mine = recovery.Position(replica.applied_epoch, replica.applied_seq)
        verdict = await self._recovery.verdict(record, mine)
        return isinstance(verdict, recovery.Lead)

    async def prepare_to_lead(self) -> Replica | None:
        initial = self._initial_replica() if self._replica is None else None
        await self._follower.stop()
        return initial

    def lead_refused(self) -> None:
        if roles.follows(self._role):
            self._follower.start()

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
