"""One runtime process: election, replication, services and role transitions, wired together.

The decisions are the pure core's (`election.decide`, `AckTracker`, `Replica`); this module
performs them and keeps the process's role consistent with them:

- **election loop**: read the Lease, `observe`/`decide`, write, every retry period (with
  client-go's jitter), and at once whenever something changed that the Lease must carry (the
  in-sync set) or a replication stream ended (the active may be gone).
- **standby → active**: stop following, write the Lease (epoch = leaseTransitions), build a
  `Term`, serve, label the pod `active`.
- **active → standby**: close the term (waiting callers get UNAVAILABLE and retry elsewhere),
  label the pod `standby`, follow the new active.
- **fencing** (`Fenced` policy): every write and read checks `election.may_serve` itself, so
  the active stops answering exactly at its renew deadline even if the election loop is stuck
  in an API call; a watchdog then steps it down. `lease_duration >= renew_deadline +
  retry_period` guarantees this happens before anyone else may take the Lease.
- **graceful stop** (SIGTERM) and **switchover**: stop accepting writes, wait until the target
  standby acknowledged every entry, hand the Lease over (`election.handover`), close the
  streams (the target notices and confirms by renewing), wait for the confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc

from gencluster import election
from gencluster.acks import AckTracker, ReplicationMode
from gencluster.codec import Codec, get_codec
from gencluster.election import (
    Acquire,
    ElectionConfig,
    Leadership,
    LeaseRecord,
    Observation,
    Release,
    Renew,
    StandBy,
    StepDown,
)
from gencluster.leases import KubernetesApi, KubernetesError, LeaseConflict, LeaseMissing
from gencluster.log import Retention
from gencluster.replica import Replica
from gencluster.replication import StaleEpochRejected, Term, follow
from gencluster.server import GenServer
from gencluster.wellknown import ROLE_ACTIVE

log = logging.getLogger(__name__)

ROLE_STANDBY_LABEL = "standby"
MAX_LAG_ENTRIES = 10_000
FAILOVER_POLL_DIVISOR = 5
"""A standby that lost its stream from the active reads the Lease this many times per retry
period until it reaches an active again: failover then waits less for the next read."""


async def set_within(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set (True) or `timeout` passed (False).

    `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11, wait_for swallows a
    cancellation that arrives as the event is set. That happens when a replica reads the Lease
    in its own name (setting `_holder_changed`) and `_acquire` cancels the follower at once:
    the follower then looped on and `_acquire` waited for it forever (graceful handovers
    stalled until the Lease expired). Every wait of this module goes through here."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class ServerInitFailed(Exception):
    """The user's `init(args)` raised: the configuration cannot run (exit code 78)."""


class Role(StrEnum):
    ACTIVE = "active"
    STANDBY = "standby"
    JOINING = "joining"
    STOPPED = "stopped"


class PartitionPolicy(StrEnum):
    FENCED = "Fenced"
    AVAILABLE = "Available"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything `gencluster run` validated (docs/runtime-config.md)."""

    identity: str
    namespace: str
    pod_ip: str
    listen_host: str
    port: int
    metrics_port: int
    server_spec: str
    args: Any
    cluster: str
    pod_selector: str
    peer_token: str
    lease_name: str
    election: ElectionConfig
    mode: ReplicationMode
    min_sync_standbys: int
    partition_policy: PartitionPolicy
    kubeconfig: str | None
    codec: str = "json"

    @property
    def advertise_address(self) -> str:
        return host_port(self.pod_ip, self.port)


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


class Node:
    """The state of one runtime process and the tasks that keep it true."""

    def __init__(self, config: NodeConfig, server: GenServer, api: KubernetesApi) -> None:
        self.config = config
        self.server = server
        self.codec: Codec = get_codec(config.codec)
        self.api = api
        self.retention = Retention()
        self.replica: Replica | None = None
        self.role = Role.JOINING
        self.epoch = 0
        """Highest epoch seen (Lease transitions, entries, snapshots)."""
        self.term: Term | None = None
        self.leadership: Leadership | None = None
        self.observation: Observation | None = None
        self.lease_object: dict[str, Any] | None = None
        self.lease_read_at: float | None = None
        """Monotonic time of the last successful Lease read (Admin Status reports its age)."""
        self._pause: object | None = None
        """The latest Admin.PauseWrites, so an earlier pause's timer does not end a later one."""
        self.in_sync_members: tuple[str, ...] = ()
        self.needs_snapshot = False
        self.follow_override: str | None = None
        self.active_identity = ""
        self.active_address = ""
        self.accepting = True
        self.stopping = False
        self.leaving = False
        """Set by SIGTERM: after the handover this replica only redirects, never follows."""
        self._publish_now = False
        self.active_reachable = False
        """False while a standby has no working stream from the active: it then reads the
        Lease more often, to see the holder's release (or a new holder) sooner."""
        self._wake = asyncio.Event()
        self._holder_changed = asyncio.Event()
        """Set when a Lease read names a new holder: ends the follow loop's back-off at once,
        so a standby that was retrying a dead active connects to its successor without
        waiting out a back-off grown while the old holder was unreachable."""
        self._follower: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._pod_addresses: dict[str, str] = {}
        self._role_listeners: list[Callable[[], object]] = []
        self.heartbeat_interval = max(0.1, config.election.retry_period / 2)

    # -- what services ask --------------------------------------------------------------------

    @property
    def following(self) -> bool:
        return self.term is None and not self.stopping and not self.leaving

    def may_serve(self) -> bool:
        """Active, accepting, and (Fenced) within the renew deadline."""
        if self.term is None or self.term.closed or not self.accepting:
            return False
        if self.config.partition_policy is PartitionPolicy.AVAILABLE:
            return True
        return election.may_serve(self.leadership, time.monotonic(), self.config.election)

    def ready(self) -> bool:
        """Readiness: the serving active, or a caught-up standby in the in-sync set."""
        if self.role is Role.ACTIVE:
            return self.may_serve()
        return (
            self.role is Role.STANDBY
            and self.replica is not None
            and self.config.identity in self.in_sync_members
        )

    def on_role_change(self, listener: Callable[[], object]) -> None:
        """Call `listener` whenever role, readiness or the known active may have changed."""
        self._role_listeners.append(listener)

    def _role_changed(self) -> None:
        for listener in self._role_listeners:
            listener()

    def joining(self) -> None:
        self.role = Role.JOINING
        self._role_changed()

    def standby_caught_up(self, caught_up: bool) -> None:
        """A batch arrived from the active (`caught_up`: this replica has its last entry)."""
        self.active_reachable = True
        if caught_up and self.role is Role.JOINING:
            self.role = Role.STANDBY
            self._role_changed()

    def wake_election(self) -> None:
        self._wake.set()

    def tracker_changed(self) -> None:
        if self.term is not None and self.term.tracker.publish_needed():
            self._wake.set()

    # -- main loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Label the pod standby (a restart must clear a stale `active`), then elect forever."""
        self._spawn(self._set_label(ROLE_STANDBY_LABEL))
        self._start_following()
        while not self.stopping:
            # Cleared before the step, so a wake-up that arrives during it is not lost.
            self._wake.clear()
            try:
                delay = await self._election_step()
            except ServerInitFailed:
                raise
            except Exception:
                log.exception("election step failed")
                delay = self.config.election.retry_period
            if self.stopping:
                break
            if self._publish_now or (self.term is not None and self.term.tracker.publish_needed()):
                delay = 0.0
            await set_within(self._wake, delay)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _read_lease(self) -> LeaseRecord | None:
        try:
            record, raw = await self.api.get_lease(self.config.lease_name)
        except LeaseMissing:
            record, raw = None, None
        self.lease_read_at = time.monotonic()
        self.observation = election.observe(self.observation, record, self.lease_read_at)
        self.lease_object = raw
        if record is not None:
            self.epoch = max(self.epoch, record.transitions)
            self.in_sync_members = record.in_sync or ()
            if record.holder and record.holder != self.active_identity:
                self.active_identity = record.holder
                self.active_address = ""
                self._holder_changed.set()
            self._role_changed()
        return record

    async def _election_step(self) -> float:
        retry = self.config.election.retry_period
        jittered = election.jittered(retry, random.random())
        try:
            record = await self._read_lease()
        except KubernetesError as error:
            log.warning("cannot read the Lease: %s", error)
            self._check_fence()
            return min(jittered, retry / 2)
        term = self.term
        candidate = election.candidacy(
            record, self.config.identity, holds_state=self.replica is not None
        )
        in_sync = term.tracker.begin_publish() if term is not None else None
        action = election.decide(
            self.observation,
            now=time.monotonic(),
            wall_time=time.time(),
            config=self.config.election,
            me=self.config.identity,
            candidate=candidate,
            leadership=self.leadership,
            in_sync=in_sync,
        )
        if isinstance(action, Renew):
            return await self._renew(action, in_sync or (), jittered)
        if isinstance(action, Acquire):
            if record is None:
                # Never create it: the pod's Role cannot, and the operator creates it first.
                log.warning("Lease %s not found; waiting for it", self.config.lease_name)
                return jittered
            return await self._acquire(action, jittered)
        if isinstance(action, StepDown):
            self._lease_lost(action.reason)
            return 0.0
        if isinstance(action, Release):
            await self._write_release(action.record, action.reason)
            return 0.0
        assert isinstance(action, StandBy)
        if self.term is None:
            self._start_following()
        delay = election.jittered(action.retry_after, random.random())
        if not self.active_reachable:
            delay = min(delay, retry / FAILOVER_POLL_DIVISOR)
        return delay

    async def _renew(self, action: Renew, members: tuple[str, ...], retry: float) -> float:
        sent_at = time.monotonic()
        assert self.lease_object is not None
        try:
            _, raw = await self.api.update_lease(
                self.config.lease_name, self.lease_object, action.record
            )
        except LeaseConflict:
            return 0.0
        except KubernetesError as error:
            log.warning("cannot renew the Lease: %s", error)
            self._check_fence()
            return min(retry, self.config.election.retry_period / 2)
        self.lease_object = raw
        self._publish_now = False
        if self.term is not None and self.leadership is not None:
            self.leadership = Leadership(self.leadership.epoch, sent_at)
            self.term.tracker.published(members)
            self.in_sync_members = members
            self.term.tracker_changed()
        return retry

    async def _acquire(self, action: Acquire, retry: float) -> float:
        # The first active of a cluster without state runs init(args) before taking the
        # Lease, so that a server whose init refuses its args never holds it. The result is
        # kept only if the Lease is won: until then this replica holds no state.
        initial = self._initial_replica() if self.replica is None else None
        await self._stop_following()
        sent_at = time.monotonic()
        assert self.lease_object is not None
        try:
            record, raw = await self.api.update_lease(
                self.config.lease_name, self.lease_object, action.record
            )
        except KubernetesError as error:
            if not isinstance(error, LeaseConflict):
                log.warning("cannot take the Lease: %s", error)
            self._start_following()
            return 0.0 if isinstance(error, LeaseConflict) else retry
        self.lease_object = raw
        if self.replica is None:
            self.replica = initial
        self._become_active(action.epoch, sent_at, record)
        return 0.0

    async def _write_release(self, record: LeaseRecord, reason: str) -> None:
        assert self.lease_object is not None
        log.info("releasing the Lease: %s", reason)
        with contextlib.suppress(KubernetesError):
            _, self.lease_object = await self.api.update_lease(
                self.config.lease_name, self.lease_object, record
            )

    def _check_fence(self) -> None:
        if self.term is not None and not self.may_serve():
            self._lease_lost("no successful renewal within the renew deadline")

    def _lease_lost(self, reason: str) -> None:
        if self.term is None:
            return
        if self.config.partition_policy is PartitionPolicy.AVAILABLE and not self.stopping:
            # Keep state and keep reporting ROLE_ACTIVE until the operator's ExportState and
            # Demote (docs/runtime-config.md): resyncing alone would drop acknowledged writes.
            log.warning("lost the Lease (%s); staying active until demoted", reason)
            self.leadership = None
            return
        log.warning("stepping down: %s", reason)
        self.step_down()

    # -- role transitions ---------------------------------------------------------------------

    def _initial_replica(self) -> Replica:
        try:
            return Replica.from_init(
                self.server, self.codec, self.config.args, retention=self.retention
            )
        except Exception as error:
            raise ServerInitFailed(
                f"GENCLUSTER_ARGS: {self.config.server_spec} init(args) raised "
                f"{type(error).__name__}: {error}"
            ) from error

    def _become_active(self, epoch: int, sent_at: float, record: LeaseRecord) -> None:
        if self.replica is None:
            self.replica = self._initial_replica()
        self.epoch = max(self.epoch, epoch)
        tracker = AckTracker(
            me=self.config.identity,
            mode=self.config.mode,
            min_sync_standbys=self.config.min_sync_standbys,
            max_lag_entries=MAX_LAG_ENTRIES,
            last_seq=self.replica.log.last_seq,
            published=record.in_sync or (),
        )
        self.leadership = Leadership(epoch, sent_at)
        self.term = Term(
            replica=self.replica,
            tracker=tracker,
            epoch=epoch,
            heartbeat_interval=self.heartbeat_interval,
            on_change=self.tracker_changed,
        )
        self.follow_override = None
        self.needs_snapshot = False
        self.accepting = True
        self.active_identity = self.config.identity
        self.active_address = self.config.advertise_address
        self.active_reachable = False
        self._publish_now = True
        self.role = Role.ACTIVE
        log.info("active at epoch %d from seq %d", epoch, self.replica.applied_seq)
        self._role_changed()
        self._spawn(self._set_label(ROLE_ACTIVE))
        self._spawn(self._fence_watchdog(self.term))
        self._wake.set()

    def pause_writes(self, seconds: float) -> bool:
        """Partition recovery (Admin.PauseWrites): an active stops accepting client calls for
        `seconds`, so that the state the operator exports next is final (a call acknowledged
        after the export would vanish when this replica resyncs from the winner); `seconds`
        <= 0 resumes. The pause ends by itself after `seconds`, so an operator that dies
        mid-merge cannot leave this side paused for good. Returns whether it is paused."""
        term = self.term
        if term is None or self.leaving or self.stopping:
            return False
        self._pause = pause = object()
        self.accepting = seconds <= 0
        self._role_changed()
        if seconds > 0:

            async def resume_later() -> None:
                await asyncio.sleep(seconds)
                if self.term is term and self._pause is pause and not self.leaving:
                    log.warning("no merge followed the pause of %.1fs; accepting calls again",
                                seconds)
                    self.accepting = True
                    self._role_changed()

            self._spawn(resume_later())
        return not self.accepting

    def step_down(self, *, follow_address: str | None = None) -> None:
        """Stop serving at once and follow the Lease holder (or `follow_address`)."""
        term = self.term
        if term is None:
            return
        self.term = None
        self.leadership = None
        term.close()
        self.server_terminate("stepped down")
        self.follow_override = follow_address
        self.role = Role.STOPPED if self.stopping or self.leaving else Role.STANDBY
        self._role_changed()
        self._spawn(self._set_label(ROLE_STANDBY_LABEL))
        if not self.stopping and not self.leaving:
            self._start_following()
        self._wake.set()

    def server_terminate(self, reason: str) -> None:
        if self.replica is not None:
            error = self.replica.machine.terminate(reason)
            if error is not None:
                log.warning("terminate(%r) raised %s: %s", reason, error.type, error.message)

    async def _fence_watchdog(self, term: Term) -> None:
        """Step down once the renew deadline passed without a renewal (Fenced policy)."""
        while self.term is term and not term.closed:
            leadership = self.leadership
            if leadership is None:
                return
            deadline = leadership.renewed_at + self.config.election.renew_deadline
            await asyncio.sleep(max(0.01, deadline - time.monotonic()))
            fenced = self.config.partition_policy is PartitionPolicy.FENCED
            now = time.monotonic()
            if (
                self.term is term
                and fenced
                and not election.may_serve(self.leadership, now, self.config.election)
            ):
                self._lease_lost("renew deadline passed without a successful renewal")

    async def _set_label(self, role: str) -> None:
        """Keep the pod's role label true; retried until it lands or the role changed."""
        for _ in range(20):
            wanted_now = ROLE_ACTIVE if self.role is Role.ACTIVE else ROLE_STANDBY_LABEL
            if wanted_now != role:
                return
            try:
                await self.api.set_role_label(self.config.identity, role)
                return
            except KubernetesError as error:
                log.warning("cannot label pod %s %s: %s", self.config.identity, role, error)
                await asyncio.sleep(self.config.election.retry_period / 2)

    # -- following ----------------------------------------------------------------------------

    def _start_following(self) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._follow_loop())

    def follow_instead(self, address: str) -> None:
        """Replicate from `address` from now on (Admin.Demote after a partition): the current
        stream is dropped at once. The override ends once a stream from `address` delivered
        (from then on the Lease says whom to follow, as for any standby: a later failover or
        merge must not leave this replica following an address that is no longer the
        active), or when this replica becomes active or the address turns out stale."""
        self.follow_override = address

        async def restart() -> None:
            await self._stop_following()
            if self.term is not None or self.stopping:
                return
            self.active_reachable = False
            self._start_following()
            poll = self.config.election.retry_period / FAILOVER_POLL_DIVISOR
            while self.follow_override == address and self.term is None and not self.stopping:
                if self.active_reachable:
                    self.follow_override = None
                    return
                await asyncio.sleep(poll)

        self._spawn(restart())

    async def _stop_following(self) -> None:
        follower = self._follower
        self._follower = None
        if follower is not None and not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower

    async def _follow_loop(self) -> None:
        backoff = 0.05
        while self.following:
            self._holder_changed.clear()  # from here on, a new holder ends the back-off below
            address = self.follow_override or await self._active_address()
            if not address:
                await set_within(self._holder_changed, self.config.election.retry_period / 2)
                continue
            try:
                await follow(self, address)
                backoff = 0.05
            except StaleEpochRejected as error:
                log.warning("%s", error)
                self.follow_override = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The holder's pod may have been recreated with another IP: list pods again.
                self._pod_addresses.clear()
                log.info("replication from %s ended: %s", address, _describe(error))
            self.active_reachable = False
            if self.role is Role.STANDBY and self.term is None:
                self.role = Role.JOINING if self.needs_snapshot else Role.STANDBY
            self._wake.set()
            if await set_within(self._holder_changed, backoff):
                backoff = 0.05
            else:
                backoff = min(backoff * 2, self.config.election.retry_period / 2)

    async def _active_address(self) -> str:
        """The Lease holder's `podIP:port`, from the pod list (no DNS on the dev cluster)."""
        record = self.observation.record if self.observation is not None else None
        holder = record.holder if record is not None else ""
        if not holder or holder == self.config.identity:
            return ""
        address = self._pod_addresses.get(holder)
        if address is None:
            try:
                pods = await self.api.list_pods(self.config.pod_selector)
            except KubernetesError as error:
                log.warning("cannot list pods: %s", error)
                return ""
            self._pod_addresses = {
                pod.name: host_port(pod.ip, self.config.port) for pod in pods if pod.ip
            }
            address = self._pod_addresses.get(holder, "")
        if holder == self.active_identity:
            self.active_address = address
        return address

    # -- handover -----------------------------------------------------------------------------

    async def hand_over(self, target: str | None, timeout: float) -> tuple[str, int] | None:
        """Give the Lease to `target` (default: the most up-to-date in-sync standby).

        Stops accepting writes, waits until the target acknowledged every entry, writes the
        handover, closes the streams and waits (at most `timeout`) until the target renewed.
        Returns (target, epoch), or None when no standby could take it (writes resume).
        """
        term = self.term
        if term is None or self.replica is None:
            return None
        deadline = time.monotonic() + timeout
        members = term.tracker.published_in_sync
        acked = {s.identity: s.acked_seq for s in term.tracker.standbys() if s.connected}
        if target is None:
            target = election.choose_handover_target(acked, members)
        if target is None or target not in members or target not in acked:
            return None
        self.accepting = False
        wake = term.acknowledged.listen()
        try:
            while True:
                progress = {s.identity: s.acked_seq for s in term.tracker.standbys()}
                if progress.get(target, 0) >= self.replica.log.last_seq:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or term.closed:
                    self.accepting = not term.closed
                    return None
                wake.clear()
                await set_within(wake, remaining)
        finally:
            term.acknowledged.forget(wake)
        target_address = term.standby_addresses.get(target, "")
        written = await self._write_handover(target, deadline)
        if written is None:
            self.accepting = self.term is term
            return None
        self.epoch = max(self.epoch, written.transitions)
        self.step_down()
        self.active_identity = target
        self.active_address = target_address
        self.active_reachable = bool(target_address)  # redirect clients there at once
        await self._await_confirmation(written, deadline)
        return target, written.transitions

    async def _write_handover(self, target: str, deadline: float) -> LeaseRecord | None:
        while time.monotonic() < deadline:
            try:
                record, raw = await self.api.get_lease(self.config.lease_name)
                if record.holder != self.config.identity:
                    return None
                new_record = election.handover(record, self.config.identity, target, time.time())
                written, self.lease_object = await self.api.update_lease(
                    self.config.lease_name, raw, new_record
                )
                log.info("handed the Lease to %s (epoch %d)", target, written.transitions)
                return written
            except LeaseConflict:
                continue
            except (KubernetesError, ValueError) as error:
                log.warning("handover to %s failed: %s", target, error)
                return None
        return None

    async def _await_confirmation(self, written: LeaseRecord, deadline: float) -> None:
        """The target confirms by renewing: the record changes from what we wrote."""
        while time.monotonic() < deadline:
            try:
                record, _ = await self.api.get_lease(self.config.lease_name)
            except KubernetesError:
                record = None
            if record is not None and record != written:
                return
            await asyncio.sleep(0.02)

    async def shutdown(self) -> None:
        """SIGTERM: hand over (or release), then stop every task."""
        renew_deadline = self.config.election.renew_deadline
        self.leaving = True
        await self._stop_following()
        if self.term is not None:
            handed = await self.hand_over(None, renew_deadline)
            if handed is None and self.term is not None:
                await self._release_own_lease()
        self.stopping = True
        self.step_down()
        self.role = Role.STOPPED
        self._role_changed()
        self._wake.set()
        await self._stop_following()
        with contextlib.suppress(KubernetesError):
            await self.api.set_role_label(self.config.identity, ROLE_STANDBY_LABEL)
        for task in list(self._background):
            task.cancel()

    async def _release_own_lease(self) -> None:
        self.accepting = False
        try:
            record, raw = await self.api.get_lease(self.config.lease_name)
            if record.holder == self.config.identity:
                await self.api.update_lease(
                    self.config.lease_name, raw, election.release(record, time.time())
                )
        except KubernetesError as error:
            log.warning("cannot release the Lease: %s", error)


def _describe(error: BaseException) -> str:
    """One line for logs (an AioRpcError's own text spans several)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
