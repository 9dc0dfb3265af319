"""The election loop: read the Lease, `election.decide`, write, and the fence watchdog.

Every retry period (with client-go's jitter), and at once whenever something changed that the
Lease must carry (the in-sync set) or a replication stream ended (the active may be gone),
the `Elector` reads the Lease and performs what `election.decide` says. It owns the Lease's
last read and the object to write it back with (optimistic concurrency); what the outcome
means for the replica's role it reports to its `ElectionHost` (the node), which runs the role
transition.

Fencing (`Fenced` policy): every call checks `election.may_serve` itself, so the active stops
answering exactly at its renew deadline even if this loop is stuck in an API call; the
watchdog then reports the lost Lease. `lease_duration >= renew_deadline + retry_period`
guarantees this happens before anyone else may take the Lease.

Failsafe (`failsafe.py`, Fenced policy): once a renewal is overdue, a `PromiseCollector` asks
every pod that could take the Lease over for a promise; while all of them promised, the active
keeps serving past its renew deadline (the checks above use `failsafe.may_serve`), and renews
as usual once the API server answers again. On the standby's side this loop keeps the
promises it gave: it takes no Lease (acquire or handover) before they run out, and a promise
is never granted while it is taking the Lease (`taking_over`, set in the same synchronous
stretch as the check, so a grant and a take never interleave).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from typing import Any, Protocol

from gencluster import election, failsafe
from gencluster.election import (
    Acquire,
    Leadership,
    LeaseRecord,
    Observation,
    Release,
    Renew,
    StandBy,
    StepDown,
)
from gencluster.failsafe import Granted, Refused
from gencluster.leases import KubernetesApi, KubernetesError, LeaseConflict, LeaseMissing
from gencluster.node_config import NodeConfig
from gencluster.promises import PromiseCollector
from gencluster.replica import Replica
from gencluster.roles import Active, PartitionPolicy, Role, Stopped, follows
from gencluster.wakeups import set_within

log = logging.getLogger(__name__)

FAILOVER_POLL_DIVISOR = 5
"""A standby that lost its stream from the active reads the Lease this many times per retry
period until it reaches an active again: failover then waits less for the next read."""


class ServerInitFailed(Exception):
    """The user's `init(args)` raised: the configuration cannot run (exit code 78)."""


class ElectionHost(Protocol):
    """What the election loop asks of, and reports to, the replica it belongs to."""

    @property
    def role(self) -> Role: ...

    def holds_state(self) -> bool: ...

    def holds_restored_state(self) -> bool:
        """The state came from Admin.Restore into a cluster without an active."""
        ...

    def active_reachable(self) -> bool: ...

    def in_sync_to_publish(self) -> tuple[str, ...] | None:
        """As active: the in-sync set to write with the next renewal (None otherwise)."""
        ...

    def publish_due(self) -> bool: ...

    def lease_read(self, record: LeaseRecord | None) -> None: ...

    async def may_recover(self, record: LeaseRecord) -> bool:
        """False while whole-cluster recovery says another replica restored from its
        volume should lead (or must be waited for); True when this replica did not restart
        from its volume."""
        ...

    async def prepare_to_lead(self) -> Replica | None:
        """Stop following before the Lease write; returns the state from `init(args)` when
        this replica holds none (raises `ServerInitFailed`)."""
        ...

    def lease_won(
        self, leadership: Leadership, record: LeaseRecord, initial: Replica | None
    ) -> None: ...

    def lead_refused(self) -> None: ...

    def renewed(self, renewed_at: float, members: tuple[str, ...]) -> None: ...

    def lease_lost(self, reason: str) -> None: ...

    def standing_by(self) -> None: ...

    def may_serve(self) -> bool: ...

    def failsafe_candidates(self) -> frozenset[str]:
        """As active: the pods the Lease may name as in sync (failsafe needs their promises)."""
        ...

    def standby_address(self, member: str) -> str | None: ...


class Elector:
    """The election loop of one replica; owns the Lease's last read (`observation`)."""

    def __init__(self, *, config: NodeConfig, api: KubernetesApi, host: ElectionHost) -> None:
        self._config = config
        self._api = api
        self._host = host
        self.observation: Observation | None = None
        self.read_at: float | None = None
        """Monotonic time of the last successful Lease read (Admin Status reports its age)."""
        self._lease_object: dict[str, Any] | None = None
        self._publish_now = False
        self._wake = asyncio.Event()
        self._watchdogs: set[asyncio.Task[None]] = set()
        self.collector: PromiseCollector | None = None
        """The active's promises for its current term (Fenced policy)."""
        self.promised_until = -math.inf
        """As a standby: the end of the promises this replica gave (monotonic clock)."""
        self.taking_over = False
        self.failsafe_episodes = 0
        self.last_failsafe_seconds = 0.0
        self._failsafe_since: float | None = None

    @property
    def holder(self) -> str:
        record = self.observation.record if self.observation is not None else None
        return record.holder if record is not None else ""

    def wake(self) -> None:
        self._wake.set()

    def publish_soon(self) -> None:
        """A new term must publish its in-sync set before relying on it."""
        self._publish_now = True
        self._wake.set()

    def failsafe_until(self) -> float | None:
        """As active (Fenced): until when every pod that could take over promised."""
        role = self._host.role
        collector = self.collector
        if (
            self._config.partition_policy is not PartitionPolicy.FENCED
            or not isinstance(role, Active)
            or collector is None
            or collector.epoch != role.epoch
        ):
            return None
        return collector.failsafe_until()

    def failsafe_seconds(self, now: float) -> float | None:
        """Seconds since the last successful renewal while serving on promises (else None),
        and the bookkeeping of failsafe episodes for Status and the operator's Event."""
        config = self._config.election
        role = self._host.role
        leadership = role.leadership if isinstance(role, Active) else None
        serving = failsafe.in_failsafe(leadership, now, config, self.failsafe_until())
        if serving and leadership is not None:
            if self._failsafe_since is None:
                self._failsafe_since = leadership.renewed_at + config.renew_deadline
                self.failsafe_episodes += 1
                log.warning(
                    "serving in failsafe: no Lease renewal for %.1fs (the API server is out "
                    "of reach); every pod that could take over promised not to",
                    now - leadership.renewed_at,
                )
            return now - leadership.renewed_at
        if self._failsafe_since is not None:
            self.last_failsafe_seconds = max(0.0, now - self._failsafe_since)
            self._failsafe_since = None
            log.warning("failsafe ended after %.1fs", self.last_failsafe_seconds)
        return None

    def promise(self, epoch: int, highest_epoch: int) -> Granted | Refused:
        """Peer.Promise from the active of `epoch`: grant (and keep) or refuse."""
        now = time.monotonic()
        outcome = failsafe.grant(
            request_epoch=epoch,
            highest_epoch=highest_epoch,
            following=follows(self._host.role),
            taking_over=self.taking_over,
            promised_until=self.promised_until,
            now=now,
            config=self._config.election,
        )
        if isinstance(outcome, Granted):
            self.promised_until = outcome.until
        return outcome

    async def run(self) -> None:
        """Elect until the replica stops (or this task is cancelled)."""
        try:
            while not isinstance(self._host.role, Stopped):
                # Cleared before the step, so a wake-up that arrives during it is not lost.
                self._wake.clear()
                try:
                    delay = await self._step()
                except ServerInitFailed:
                    raise
                except Exception:
                    log.exception("election step failed")
                    delay = self._config.election.retry_period
                if isinstance(self._host.role, Stopped):
                    break
                if self._publish_now or self._host.publish_due():
                    delay = 0.0
                await set_within(self._wake, delay)
        finally:
            for watchdog in self._watchdogs:
                watchdog.cancel()

    async def read(self) -> LeaseRecord | None:
        try:
            record, raw = await self._api.get_lease(self._config.lease_name)
        except LeaseMissing:
            record, raw = None, None
        self.read_at = time.monotonic()
        self.observation = election.observe(self.observation, record, self.read_at)
        self._lease_object = raw
        self._host.lease_read(record)
        return record

    async def _step(self) -> float:
        retry = self._config.election.retry_period
        jittered = election.jittered(retry, random.random())
        try:
            record = await self.read()
        except KubernetesError as error:
            log.warning("cannot read the Lease: %s", error)
            self._check_fence()
            return min(jittered, retry / 2)
        role = self._host.role
        in_sync = self._host.in_sync_to_publish()
        action = election.decide(
            self.observation,
            now=time.monotonic(),
            wall_time=time.time(),
            config=self._config.election,
            me=self._config.identity,
            candidate=election.candidacy(
                record,
                self._config.identity,
                holds_state=self._host.holds_state(),
                restored=self._host.holds_restored_state(),
            ),
            leadership=role.leadership if isinstance(role, Active) else None,
            in_sync=in_sync,
            failsafe_until=self.failsafe_until(),
        )
        if isinstance(action, Renew):
            return await self._renew(action, in_sync or (), jittered)
        if isinstance(action, Acquire):
            if record is None:
                # Never create it: the pod's Role cannot, and the operator creates it first.
                log.warning("Lease %s not found; waiting for it", self._config.lease_name)
                return jittered
            if not await self._host.may_recover(record):
                self._host.standing_by()
                return retry / FAILOVER_POLL_DIVISOR
            now = time.monotonic()
            if failsafe.blocks_taking(self.promised_until, now):
                # A promise given to the active (failsafe) is kept whatever the Lease says.
                self._host.standing_by()
                return min(retry, self.promised_until - now)
            self.taking_over = True  # no await since the check: no grant in between
            try:
                return await self._acquire(action, jittered)
            finally:
                self.taking_over = False
        if isinstance(action, StepDown):
            self._host.lease_lost(action.reason)
            return 0.0
        if isinstance(action, Release):
            await self._write_release(action.record, action.reason)
            return 0.0
        assert isinstance(action, StandBy)
        self._host.standing_by()
        delay = election.jittered(action.retry_after, random.random())
        if not self._host.active_reachable():
            delay = min(delay, retry / FAILOVER_POLL_DIVISOR)
        return delay

    async def _renew(self, action: Renew, members: tuple[str, ...], retry: float) -> float:
        sent_at = time.monotonic()
        assert self._lease_object is not None
        try:
            _, raw = await self._api.update_lease(
                self._config.lease_name, self._lease_object, action.record
            )
        except LeaseConflict:
            return 0.0
        except KubernetesError as error:
            log.warning("cannot renew the Lease: %s", error)
            self._check_fence()
            return min(retry, self._config.election.retry_period / 2)
        self._lease_object = raw
        self._publish_now = False
        if isinstance(self._host.role, Active):
            self._host.renewed(sent_at, members)
            self.failsafe_seconds(sent_at)  # ends a failsafe episode at this renewal
        return retry

    async def _acquire(self, action: Acquire, retry: float) -> float:
        # The first active of a cluster without state runs init(args) before taking the
        # Lease, so that a server whose init refuses its args never holds it. The result is
        # kept only if the Lease is won: until then this replica holds no state.
        initial = await self._host.prepare_to_lead()
        sent_at = time.monotonic()
        assert self._lease_object is not None
        try:
            record, raw = await self._api.update_lease(
                self._config.lease_name, self._lease_object, action.record
            )
        except KubernetesError as error:
            if not isinstance(error, LeaseConflict):
                log.warning("cannot take the Lease: %s", error)
            self._host.lead_refused()
            return 0.0 if isinstance(error, LeaseConflict) else retry
        self._lease_object = raw
        leadership = Leadership(action.epoch, sent_at)
        self._host.lease_won(leadership, record, initial)
        self.publish_soon()
        tasks = [asyncio.create_task(self._fence_watchdog(action.epoch))]
        if self._config.partition_policy is PartitionPolicy.FENCED:
            self.collector = PromiseCollector(
                config=self._config, host=self._host, epoch=action.epoch
            )
            tasks.append(asyncio.create_task(self.collector.run()))
        for task in tasks:
            self._watchdogs.add(task)
            task.add_done_callback(self._watchdogs.discard)
        return 0.0

    async def _write_release(self, record: LeaseRecord, reason: str) -> None:
        assert self._lease_object is not None
        log.info("releasing the Lease: %s", reason)
        with contextlib.suppress(KubernetesError):
            _, self._lease_object = await self._api.update_lease(
                self._config.lease_name, self._lease_object, record
            )

    def _check_fence(self) -> None:
        if isinstance(self._host.role, Active) and not self._host.may_serve():
            self._host.lease_lost("no successful renewal within the renew deadline")

    async def _fence_watchdog(self, epoch: int) -> None:
        """Report the Lease lost once the renew deadline passed without a renewal and no
        failsafe promises cover the moment (Fenced). Wakes at least every retry period, so
        that failsafe episodes are noticed (and logged) while the election loop is stuck in
        an API call."""
        if self._config.partition_policy is not PartitionPolicy.FENCED:
            return
        config = self._config.election
        while True:
            role = self._host.role
            if not isinstance(role, Active) or role.epoch != epoch or role.leadership is None:
                self.failsafe_seconds(time.monotonic())
                return
            deadline = failsafe.serving_deadline(
                role.leadership, config, self.failsafe_until()
            )
            pause = min(config.retry_period, deadline - time.monotonic())
            await asyncio.sleep(max(0.01, pause))
            role = self._host.role
            now = time.monotonic()
            self.failsafe_seconds(now)
            if (
                isinstance(role, Active)
                and role.epoch == epoch
                and not failsafe.may_serve(role.leadership, now, config, self.failsafe_until())
            ):
                self._host.lease_lost(
                    "renew deadline passed without a successful renewal, and no failsafe "
                    "promise from every pod that could take over"
                )
