"""Leader election between operator replicas on a coordination.k8s.io/v1 Lease: the decisions.

The chart runs two operator replicas; exactly one (the holder of the Lease) runs kopf's
handlers and timers, the other waits and takes over when the Lease is released or expires.
This is client-go's leader election, reduced to what the operator needs (no in-sync set, no
epoch fencing of replicated writes, unlike the runtime's election of an active pod):

- a candidate takes the Lease when there is none, when its holder released it (empty
  holderIdentity), or when the record has not changed for `leaseDurationSeconds` *by the
  candidate's own clock* since it last saw the record change (clocks of different machines
  are never compared; `renewTime` is written for humans and for the next leader's record);
- the holder renews every `retry_period`; a holder that has not renewed successfully for
  `renew_deadline` (< lease duration) must stop acting at once, so it is gone before any
  candidate may judge the Lease expired (`must_step_down`);
- every write carries the resourceVersion it was decided on, so two candidates that both saw
  an expired Lease cannot both win: the API server answers the second with 409.

Pure: records, clocks and identities come in as arguments; `leader_election.py` is the shell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


class LeadershipConfigError(ValueError):
    """Timings that cannot elect safely."""


@dataclass(frozen=True)
class LeadershipConfig:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise LeadershipConfigError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period:g} / {self.renew_deadline:g} / {self.lease_duration:g} s"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that elect (and its resourceVersion, for the conditional write)."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str = ""


@dataclass(frozen=True)
class Seen:
    """A record and when (by this process's monotonic clock) it was last seen to change."""

    record: LeaseRecord
    changed_at: float


@dataclass(frozen=True)
class Create:
    """No Lease exists: create it, held by this candidate."""

    record: LeaseRecord


@dataclass(frozen=True)
class Take:
    """The Lease is free or expired: replace it (conditionally), held by this candidate."""

    record: LeaseRecord
    previous_holder: str


@dataclass(frozen=True)
class Renew:
    """This candidate holds the Lease: write a fresh renewTime (conditionally)."""

    record: LeaseRecord


@dataclass(frozen=True)
class Wait:
    """Another live holder: look again after `seconds`."""

    holder: str
    seconds: float


Decision = Create | Take | Renew | Wait


def micro_time(wall_time: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(wall_time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def observe(previous: Seen | None, record: LeaseRecord, now: float) -> Seen:
    """Remember when the record last changed: the expiry clock restarts only on a change of
    holder, renewTime or transitions (not on a re-read of the same record)."""
    if previous is not None and _same(previous.record, record):
        return Seen(record, previous.changed_at)
    return Seen(record, now)


def _same(a: LeaseRecord, b: LeaseRecord) -> bool:
    return (a.holder, a.renew_time, a.transitions) == (b.holder, b.renew_time, b.transitions)


def expired(seen: Seen, now: float) -> bool:
    """True when the holder has not renewed for the record's lease duration, by our clock."""
    return now - seen.changed_at >= seen.record.duration_seconds


def decide(
    seen: Seen | None, me: str, now: float, wall_time: float, config: LeadershipConfig
) -> Decision:
    """What `me` does next, given the Lease as last seen (None: there is no Lease)."""
    stamp = micro_time(wall_time)
    duration = max(1, round(config.lease_duration))
    if seen is None:
        return Create(LeaseRecord(me, duration, stamp, stamp, 0))
    record = seen.record
    if record.holder == me:
        return Renew(replace(record, renew_time=stamp, duration_seconds=duration))
    if not record.holder or expired(seen, now):
        return Take(
            LeaseRecord(me, duration, stamp, stamp, record.transitions + 1,
                        record.resource_version),
            previous_holder=record.holder,
        )
    remaining = seen.changed_at + record.duration_seconds - now
    return Wait(record.holder, max(0.0, min(config.retry_period, remaining)))


def must_step_down(last_renewed: float, now: float, config: LeadershipConfig) -> bool:
    """A leader that could not renew for `renew_deadline` stops acting: it is then still
    `lease_duration - renew_deadline` seconds before any candidate may take the Lease."""
    return now - last_renewed >= config.renew_deadline


def released(record: LeaseRecord, wall_time: float) -> LeaseRecord:
    """The record a leader writes when it stops gracefully: no holder, so a candidate takes
    it at its next look instead of waiting for the lease to expire."""
    return replace(record, holder="", renew_time=micro_time(wall_time), duration_seconds=1)


def record_from_lease(lease: dict[str, Any]) -> LeaseRecord:
    """The election fields of a Lease object (JSON as the API serves it)."""
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
    )


def lease_body(name: str, namespace: str, record: LeaseRecord,
               labels: dict[str, str]) -> dict[str, Any]:
    """The whole Lease to create or replace; a replace carries the resourceVersion it was
    decided on, so a concurrent writer makes it fail with 409 instead of being overwritten."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if record.resource_version:
        metadata["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder or None,
            "leaseDurationSeconds": record.duration_seconds,
            "acquireTime": record.acquire_time,
            "renewTime": record.renew_time,
            "leaseTransitions": record.transitions,
        },
    }
