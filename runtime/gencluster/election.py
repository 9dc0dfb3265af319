"""Who is active: the client-go Lease leader-election rules, as pure functions.

The shell (`leases.py`) reads the Lease, calls `observe` and `decide`, performs the returned
action with optimistic concurrency (the write carries the resourceVersion it read; a 409 means
"read again and decide again"), and repeats every `retry_period` (plus jitter) or on a watch
event. Nothing here reads a clock: `now` is the local *monotonic* clock, `wall_time` the wall
clock used only for the informational acquireTime/renewTime fields.

The rules, as in client-go's `tryAcquireOrRenew`:

- A record is *held* while `holderIdentity` is set and the observer has not seen it change for
  `leaseDurationSeconds`, measured on the observer's own clock from when it last saw the record
  change. No one compares its clock with the renewTime written by someone else, so clock
  offsets between nodes do not matter, only clock rates.
- A free or expired record may be taken: holder = me, leaseTransitions + 1. The epoch of an
  active is the leaseTransitions of the record it wrote; every replication message and reply
  carries it, and replicas reject lower epochs.
- The holder renews (same transitions, new renewTime) every retry period. If it has not
  renewed successfully within `renew_deadline` of the start of its last successful write, it
  must stop serving (fencing). Because `lease_duration >= renew_deadline + retry_period`, it
  stops at least a retry period before any observer can consider the lease expired.

gencluster adds, in the spirit of Patroni's sync key:

- The active publishes its in-sync set (the standbys holding every acknowledged entry) in the
  `gencluster.io/in-sync` annotation (a JSON list of identities) *before* relying on it for an
  acknowledgement. Only members that hold the replicated state may take the lease; when the set
  is published empty (no standby was in sync, as in Async mode with lagging standbys), a
  replica with state may take it, and a replica without state only after one more lease
  duration, so that any surviving state wins over a fresh start.
- Graceful handover: the active stops accepting writes, waits until the target has everything,
  then writes the record with holder = target and transitions + 1 (`handover`). The target sees
  itself as holder and confirms by renewing, without waiting for any expiry.
- A replica that finds the lease held in its own name without being active (it restarted and
  lost its state, or it was fenced) releases the lease at once unless it may lead, so a
  standby takes over without waiting for the lease to expire.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from gencluster.wellknown import IN_SYNC_ANNOTATION, INITIALIZED_ANNOTATION

JITTER_FACTOR = 1.2
"""client-go's jitter factor: the renew deadline must exceed this many retry periods."""


class ElectionConfigError(ValueError):
    """Lease timings that cannot give safe fencing; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    """Lease timings, in seconds. The Lease stores `lease_duration` as whole seconds."""

    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        problems = lease_timing_problems(
            self.lease_duration, self.renew_deadline, self.retry_period
        )
        if problems:
            raise ElectionConfigError("; ".join(problems))


def lease_timing_problems(duration: Any, deadline: Any, retry: Any) -> list[str]:
    """Every reason these timings are unsafe, worded for a user editing the spec's `lease`
    field (the operator reports them in its Degraded condition)."""
    problems = []
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 1:
        problems.append(
            f"lease.durationSeconds must be a whole number of seconds >= 1, got {duration!r}"
        )
    if not retry > 0:
        problems.append(f"lease.retryPeriodSeconds must be positive, got {retry!r}")
    if not deadline > JITTER_FACTOR * retry:
        problems.append(
            f"lease.renewDeadlineSeconds ({deadline}) must be greater than {JITTER_FACTOR} x "
            f"lease.retryPeriodSeconds ({retry}), so that a renewal can be retried before "
            "the deadline"
        )
    if isinstance(duration, int | float) and not duration >= deadline + retry:
        problems.append(
            f"lease.durationSeconds ({duration}) must be at least lease.renewDeadlineSeconds + "
            f"lease.retryPeriodSeconds ({deadline} + {retry}), so that a fenced active stops "
            "serving before anyone else can take the lease"
        )
    return problems


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The parts of a Lease that election reads and writes.

    Times are the Lease's MicroTime strings, kept verbatim so that comparing two reads is
    exact; `resource_version` is excluded from comparison (as client-go compares records).
    `in_sync` is None when the annotation is absent (no active ever published one).
    """

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    in_sync: tuple[str, ...] | None = None
    initialized: str | None = None
    """The `gencluster.io/initialized` annotation (who first ran init), None when absent:
    the cluster never had state, or the operator carried out a reinitialize request."""
    resource_version: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Observation:
    """A record and when (local monotonic clock) this observer last saw it change."""

    record: LeaseRecord | None
    observed_at: float


@dataclass(frozen=True, slots=True)
class Leadership:
    """The local active's view of its own term.

    `renewed_at` is the local monotonic time at which the last *successful* acquire or renew
    write was sent (not when it returned: the API server may have applied it at any moment in
    between, and observers measure from when they saw it).
    """

    epoch: int
    renewed_at: float


class Candidacy(Enum):
    """Whether a replica may take a free or expired lease."""

    PREFERRED = "preferred"
    FALLBACK = "fallback"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Acquire:
    """Write `record` (create it when `create`); on success, serve as active at `epoch`, with
    `Leadership(epoch, renewed_at=<monotonic time at which the write was sent>)`."""

    record: LeaseRecord
    epoch: int
    create: bool = False


@dataclass(frozen=True, slots=True)
class Renew:
    """Write `record` to extend the current term; on success, update `renewed_at`."""

    record: LeaseRecord


@dataclass(frozen=True, slots=True)
class StandBy:
    """Do not lead; look again after `retry_after` seconds (or on a watch event)."""

    holder: str
    retry_after: float
    reason: str


@dataclass(frozen=True, slots=True)
class StepDown:
    """Stop serving immediately (fence), then stand by; `reason` is for logs and Events."""

    reason: str


@dataclass(frozen=True, slots=True)
class Release:
    """Write `record` (holder cleared) so another replica can take over at once."""

    record: LeaseRecord
    reason: str


Action = Acquire | Renew | StandBy | StepDown | Release


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation:
    """Track when the record last changed: an unchanged record keeps its first sighting."""
    if previous is not None and previous.record == record:
        return Observation(record, previous.observed_at)
    return Observation(record, now)


def candidacy(
    record: LeaseRecord | None, me: str, *, holds_state: bool, restored: bool = False
) -> Candidacy:
    """May `me` take the lease? `holds_state` is False for a replica that never received a
    snapshot (or restarted without a volume: the state lived in memory only); `restored`: it
    holds state loaded by Admin.Restore into a cluster with no active (then it is the one
    replica with state, whatever the in-sync set of the lost cluster said).

    No silent re-initialisation: while the Lease says the cluster was initialized, a replica
    without state never leads (leading would run `init` and serve a fresh state as if nothing
    was lost); it waits for a restore, or for the operator to remove the annotation on a
    reinitialize request. Without the annotation a replica without state is a fallback: it
    leads (running `init`) only after one more lease duration, so any replica with state that
    is still starting wins over a fresh start."""
    if record is None:
        return Candidacy.PREFERRED
    if restored:
        return Candidacy.PREFERRED
    if not holds_state:
        if record.initialized is not None:
            return Candidacy.NONE
        return Candidacy.PREFERRED if record.in_sync is None else Candidacy.FALLBACK
    if record.in_sync:
        return Candidacy.PREFERRED if me in record.in_sync else Candidacy.NONE
    return Candidacy.PREFERRED


def is_held(observation: Observation, now: float) -> bool:
    """Held by someone, and not expired by this observer's clock."""
    record = observation.record
    if record is None or not record.holder:
        return False
    return now < observation.observed_at + record.lease_duration_seconds


def state_lost(
    observation: Observation | None, me: str, now: float, *, holds_state: bool, grace: float
) -> bool:
    """Whether a replica sees the cluster's state lost: it holds none, the Lease says the
    cluster was initialized, and nobody (but possibly itself) has held the Lease for `grace`
    seconds, by this observer's clock. `grace` is 0 without persistence (nothing can bring
    the state back by itself); with persistence it covers whole-cluster recovery (replicas
    restored from their volumes wait up to one lease duration for each other), so an empty
    volume among recovering ones is not reported as a lost cluster."""
    record = observation.record if observation is not None else None
    if holds_state or record is None or record.initialized is None:
        return False
    assert observation is not None
    if record.holder and record.holder != me and is_held(observation, now):
        return False
    return now - observation.observed_at >= grace


def may_serve(leadership: Leadership | None, now: float, config: ElectionConfig) -> bool:
    """Whether the local active may still answer requests (the fencing check)."""
    return leadership is not None and now - leadership.renewed_at < config.renew_deadline


def decide(
    observation: Observation | None,
    *,
    now: float,
    wall_time: float,
    config: ElectionConfig,
    me: str,
    candidate: Candidacy,
    leadership: Leadership | None,
    in_sync: Iterable[str] | None = None,
    failsafe_until: float | None = None,
) -> Action:
    """The next election step for replica `me`.

    `leadership` is set while `me` is active; `in_sync` is the set the active publishes with
    its renewals (ignored for standbys); `failsafe_until`: until when the active serves on
    the promises of every pod that could take over (`failsafe.py`), so that an active past
    its renew deadline but still serving on promises renews instead of stepping down once it
    reaches the API server again.
    """
    record = observation.record if observation is not None else None
    if leadership is not None:
        return _decide_as_active(
            record, now, wall_time, config, me, leadership, in_sync, failsafe_until
        )
    if record is None:
        if candidate is Candidacy.NONE:
            return StandBy("", config.retry_period, "no lease yet, and not a candidate")
        return Acquire(_taken(LeaseRecord(), me, wall_time, config, None), epoch=1, create=True)
    assert observation is not None
    if record.holder == me:
        if candidate is Candidacy.PREFERRED:
            renewed = _renewed(record, wall_time, config, record.in_sync, me)
            return Acquire(renewed, epoch=record.transitions)
        return Release(
            release(record, wall_time),
            "the lease is held in my name but I am not active and may not lead",
        )
    if is_held(observation, now):
        remaining = observation.observed_at + record.lease_duration_seconds - now
        return StandBy(
            record.holder, min(config.retry_period, remaining), f"held by {record.holder!r}"
        )
    if candidate is Candidacy.NONE:
        return StandBy(record.holder, config.retry_period, f"{me!r} is not in the in-sync set")
    if candidate is Candidacy.FALLBACK:
        expiry = record.lease_duration_seconds if record.holder else 0
        ready_at = observation.observed_at + expiry + config.lease_duration
        if now < ready_at:
            return StandBy(
                record.holder,
                min(config.retry_period, ready_at - now),
                "no in-sync standby; waiting one lease duration for a replica with state",
            )
    new_record = _taken(record, me, wall_time, config, record.in_sync)
    return Acquire(new_record, epoch=new_record.transitions)


def _decide_as_active(
    record: LeaseRecord | None,
    now: float,
    wall_time: float,
    config: ElectionConfig,
    me: str,
    leadership: Leadership,
    in_sync: Iterable[str] | None,
    failsafe_until: float | None,
) -> Action:
    on_promises = failsafe_until is not None and now < failsafe_until
    if not may_serve(leadership, now, config) and not on_promises:
        return StepDown(
            f"no successful renewal for {now - leadership.renewed_at:.3f}s, past the renew "
            f"deadline of {config.renew_deadline}s"
        )
    if record is None:
        return StepDown("the lease was deleted")
    if record.holder != me:
        return StepDown(
            f"the lease is now held by {record.holder or 'nobody'!r} (epoch {record.transitions})"
        )
    if record.transitions != leadership.epoch:
        return StepDown(f"the lease moved from epoch {leadership.epoch} to {record.transitions}")
    members = record.in_sync if in_sync is None else normalize_members(in_sync)
    return Renew(_renewed(record, wall_time, config, members, me))


def handover(record: LeaseRecord, me: str, target: str, wall_time: float) -> LeaseRecord:
    """The record that hands the lease from the active `me` to the standby `target`.

    Write it only after `target` acknowledged every entry and `me` stopped accepting writes.
    """
    if record.holder != me:
        raise ValueError(f"{me!r} cannot hand over a lease held by {record.holder!r}")
    if target == me:
        raise ValueError("cannot hand the lease over to its current holder")
    if record.in_sync is not None and target not in record.in_sync:
        raise ValueError(
            f"{target!r} is not in the in-sync set {list(record.in_sync)}: it may lack "
            "acknowledged entries"
        )
    stamp = micro_time(wall_time)
    return replace(
        record,
        holder=target,
        transitions=record.transitions + 1,
        acquire_time=stamp,
        renew_time=stamp,
    )


class HandoverWrite(Enum):
    """What a Lease read back says about a handover write that got no answer."""

    LANDED = "landed"
    """The target holds the Lease at the epoch the handover wrote (or renewed it since)."""
    NOT_LANDED = "not landed"
    """The writer still holds it at the epoch before: the write never reached the store."""
    LOST = "lost"
    """Someone else wrote: the writer holds the Lease no more, whatever became of its write."""


def handover_write_outcome(attempted: LeaseRecord, current: LeaseRecord, me: str) -> HandoverWrite:
    """Whether the handover `attempted` by `me`, which got no answer (a timeout, a reset
    connection), reached the store, judged from `current`, the Lease as read afterwards.

    A write without an answer may have been applied: resuming writes on that guess would make
    two actives (the target takes over as soon as it sees the Lease), so the handover shell
    resumes only on NOT_LANDED, and presumes LANDED while it cannot read the Lease at all.
    """
    if current.holder == attempted.holder and current.transitions >= attempted.transitions:
        return HandoverWrite.LANDED
    if current.holder == me and current.transitions < attempted.transitions:
        return HandoverWrite.NOT_LANDED
    return HandoverWrite.LOST


def release(record: LeaseRecord, wall_time: float) -> LeaseRecord:
    """The record that frees the lease at once (as client-go's ReleaseOnCancel writes it)."""
    return replace(record, holder="", lease_duration_seconds=1, renew_time=micro_time(wall_time))


def choose_handover_target(acked: Mapping[str, int], in_sync: Iterable[str]) -> str | None:
    """The in-sync standby with the most acknowledged entries (ties: smallest name)."""
    members = [name for name in in_sync if name in acked]
    if not members:
        return None
    return min(members, key=lambda name: (-acked[name], name))


def normalize_members(members: Iterable[str]) -> tuple[str, ...]:
    """A canonical (sorted, unique) in-sync tuple, so equal sets compare and print equal."""
    return tuple(sorted(set(members)))


def _taken(
    record: LeaseRecord,
    me: str,
    wall_time: float,
    config: ElectionConfig,
    in_sync: tuple[str, ...] | None,
) -> LeaseRecord:
    stamp = micro_time(wall_time)
    return replace(
        record,
        holder=me,
        lease_duration_seconds=config.lease_duration,
        acquire_time=stamp,
        renew_time=stamp,
        transitions=record.transitions + 1,
        in_sync=in_sync,
        initialized=record.initialized or me,
    )


def _renewed(
    record: LeaseRecord,
    wall_time: float,
    config: ElectionConfig,
    in_sync: tuple[str, ...] | None,
    me: str,
) -> LeaseRecord:
    """A renewal by the holder `me`, which holds state: it also marks the cluster
    initialized if the annotation is missing (a cluster started before the annotation
    existed gets it with its next renewal)."""
    return replace(
        record,
        lease_duration_seconds=config.lease_duration,
        renew_time=micro_time(wall_time),
        in_sync=in_sync,
        initialized=record.initialized or me,
    )


class LeaseFormatError(ValueError):
    """A Lease whose fields or gencluster annotations cannot be read."""


def micro_time(wall_time: float) -> str:
    """A Kubernetes MicroTime string (RFC 3339, microseconds, UTC) for `wall_time`."""
    moment = datetime.fromtimestamp(wall_time, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_in_sync(value: str | None) -> tuple[str, ...] | None:
    """Read the in-sync annotation: None when absent, an error when malformed."""
    if value is None:
        return None
    try:
        members = json.loads(value)
    except ValueError as error:
        raise LeaseFormatError(f"annotation {IN_SYNC_ANNOTATION} is not JSON: {error}") from None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise LeaseFormatError(
            f"annotation {IN_SYNC_ANNOTATION} must be a JSON list of pod names, got {value!r}"
        )
    return normalize_members(members)


def format_in_sync(members: tuple[str, ...]) -> str:
    return json.dumps(list(members), separators=(",", ":"))


def record_from_lease(lease: Mapping[str, Any]) -> LeaseRecord:
    """Read a coordination.k8s.io/v1 Lease (as JSON) into a record."""
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    duration = spec.get("leaseDurationSeconds") or 0
    transitions = spec.get("leaseTransitions") or 0
    if not isinstance(duration, int) or not isinstance(transitions, int):
        raise LeaseFormatError(
            f"leaseDurationSeconds and leaseTransitions must be integers, got {duration!r} "
            f"and {transitions!r}"
        )
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        lease_duration_seconds=duration,
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=transitions,
        in_sync=parse_in_sync(annotations.get(IN_SYNC_ANNOTATION)),
        initialized=annotations.get(INITIALIZED_ANNOTATION),
        resource_version=str(metadata.get("resourceVersion") or ""),
    )


def lease_patch(record: LeaseRecord) -> dict[str, Any]:
    """The Lease body fields that `record` sets: metadata (resourceVersion for optimistic
    concurrency, the in-sync annotation) and spec. Merge it into a full Lease to create one."""
    metadata: dict[str, Any] = {}
    if record.resource_version:
        metadata["resourceVersion"] = record.resource_version
    annotations = {}
    if record.in_sync is not None:
        annotations[IN_SYNC_ANNOTATION] = format_in_sync(record.in_sync)
    if record.initialized is not None:
        annotations[INITIALIZED_ANNOTATION] = record.initialized
    if annotations:
        metadata["annotations"] = annotations
    spec = {
        "holderIdentity": record.holder or None,
        "leaseDurationSeconds": record.lease_duration_seconds,
        "acquireTime": record.acquire_time,
        "renewTime": record.renew_time,
        "leaseTransitions": record.transitions,
    }
    return {"metadata": metadata, "spec": spec}


def jittered(retry_after: float, fraction: float) -> float:
    """`retry_after` stretched by up to JITTER_FACTOR - 1 of itself; `fraction` in [0, 1) is
    the caller's random draw (as client-go's wait.JitterUntil spreads retries)."""
    if not 0 <= fraction < 1 or math.isnan(fraction):
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return retry_after * (1 + (JITTER_FACTOR - 1) * fraction)
