"""Failsafe serving: keep a Fenced active serving through a control-plane outage on the
strength of time-bounded promises from every pod that could take its Lease (pure rules).

The Lease is how a Fenced cluster keeps two actives apart; when the API server is unreachable
(a managed control plane's upgrade, an etcd hiccup) nobody can renew it, and under the plain
rule the active stops at its renew deadline: the data plane is exactly as available as the
API server. Patroni met the same problem with its DCS and added `failsafe_mode`; this is the
same idea with a timing rule that does not compare clocks across machines.

**Who could take the Lease.** By `election.candidacy`, while the Lease carries a non-empty
in-sync set only its members may take it (a replica with state outside it, a replica without
state, a new pod: never, because an active's writes always carry `gencluster.io/initialized`).
The active does not know which of its in-sync writes landed when one timed out, so the pods
that could take over are every member of every set the Lease may carry: the one last known
published plus those being written (`AckTracker.lease_may_name`). An empty set means any
replica with state may take the Lease: no failsafe then.

**A promise.** The active asks each of those pods (`Peer.Promise`, naming its epoch). A pod
that follows that epoch (it has seen no higher one, is not active and is not in the middle of
taking the Lease) grants: *I will not take the Lease until `g + promise_duration` on my own
monotonic clock*, `g` being when it grants. It keeps that promise even if it sees the Lease
expire, be cleared or be handed to it. It grants only when asked, so it renews the promise
only while it hears the active.

**The timing rule.** The active records `s`, its own monotonic time just *before* it sent the
request. The grant happens after the request was sent (`g >= s` in real time), so the promise
lasts at least until `s + promise_duration` in real time, up to the clocks' rate difference.
The active counts on it until `s + promise_duration * (1 - PROMISE_MARGIN)` by its own clock.
With clock rates within `1 +- r` of real time, that is safe when `PROMISE_MARGIN >= 2r/(1+r)`;
`PROMISE_MARGIN = 0.05` covers r = 2.5%, thousands of times real monotonic clocks' drift (parts
per million), and matches the ±2% of the simulation in the unit tests. No clock offset is
compared, only intervals on one clock each.

**Serving.** A Fenced active may serve while its last successful renewal is younger than the
renew deadline (the plain rule), *or* while it holds an unexpired promise from every pod that
could take over. So if any of them stops answering (partitioned, paused, restarted), the
active stops at most `promise_duration` after it last sent that pod a request that was
answered, as it would stop at the renew deadline without failsafe; `promise_duration` is the
renew deadline, so writes stop "within the renew deadline" of losing a pod.

**Why two actives never serve at once** (docs/partitions.md, "Failsafe" has the full proof):
a pod `B` that serves as active took the Lease at some time `t_a`, so `B` was a candidate,
so `B` was in a set the Lease carried, so the active `A` needs `B`'s promise. If `B` granted
at `g <= t_a`, it kept the promise: `t_a >= g + promise_duration`, after `A` stopped counting
on it. If `B` was asked after `t_a`, it was active (or had seen the higher epoch): it refused.
So whenever `A` serves on promises, no pod it needs has taken the Lease, and no other pod may.

A promise is only asked for when it may be needed: once a renewal is overdue (`wants_promises`)
— never in normal operation, so failover after a SIGKILL is not delayed by promises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from gencluster.election import ElectionConfig, Leadership

PROMISE_MARGIN = 0.05
"""The fraction of a promise's duration the active gives up, so that clocks running at rates
up to 2.5% apart never make it count on a promise the standby no longer keeps."""


def promise_duration(config: ElectionConfig) -> float:
    """How long a standby promises not to take the Lease: the renew deadline, so that losing a
    pod stops the active's writes within the renew deadline, as a lost renewal does."""
    return config.renew_deadline


def counted_until(sent_at: float, duration: float) -> float:
    """Until when (the active's monotonic clock) a promise of `duration` seconds, asked for at
    `sent_at`, is counted. `duration` is what the pod said it promised (pods of one cluster
    may briefly run different Lease timings during a rollout)."""
    return sent_at + max(0.0, duration) * (1.0 - PROMISE_MARGIN)


def wants_promises(leadership: Leadership | None, now: float, config: ElectionConfig) -> bool:
    """Whether the active should ask for promises now: a renewal is overdue (the last success
    is at least a retry period old), so the API server may be out of reach. Asking only then
    keeps promises from delaying an ordinary failover."""
    return leadership is not None and now - leadership.renewed_at >= config.retry_period


def may_take_over(members: Iterable[str], me: str) -> frozenset[str]:
    """The pods other than `me` that the Lease may name as in sync: the ones whose promises
    failsafe needs (empty: failsafe is impossible, anyone with state could take the Lease)."""
    return frozenset(members) - {me}


@dataclass(frozen=True, slots=True)
class Promises:
    """The active's record of promises granted to it in this term (local monotonic times)."""

    until: Mapping[str, float] = field(default_factory=dict)
    """Per pod, until when the newest granted promise is counted (`counted_until`)."""

    def granted(self, member: str, sent_at: float, duration: float) -> Promises:
        """`member` granted a promise of `duration` seconds, asked for at `sent_at`; a late
        answer to an older request never shortens a newer promise."""
        until = max(self.until.get(member, -math.inf), counted_until(sent_at, duration))
        return replace(self, until={**self.until, member: until})

    def failsafe_until(self, required: frozenset[str]) -> float | None:
        """Until when every pod in `required` has promised (None when `required` is empty:
        there is no failsafe without a non-empty in-sync set)."""
        if not required:
            return None
        return min(self.until.get(member, -math.inf) for member in required)


def may_serve(
    leadership: Leadership | None,
    now: float,
    config: ElectionConfig,
    failsafe_until: float | None,
) -> bool:
    """The Fenced active's serving check: within the renew deadline of its last successful
    renewal, or before the promises of every pod that could take over run out."""
    if leadership is None:
        return False
    if now - leadership.renewed_at < config.renew_deadline:
        return True
    return failsafe_until is not None and now < failsafe_until


def in_failsafe(
    leadership: Leadership | None,
    now: float,
    config: ElectionConfig,
    failsafe_until: float | None,
) -> bool:
    """Serving only on promises: past the renew deadline, still within the promises."""
    return (
        leadership is not None
        and now - leadership.renewed_at >= config.renew_deadline
        and may_serve(leadership, now, config, failsafe_until)
    )


def serving_deadline(
    leadership: Leadership, config: ElectionConfig, failsafe_until: float | None
) -> float:
    """When the active stops serving unless something changes: the later of the renew
    deadline and the promises' end (the fence watchdog sleeps until then)."""
    deadline = leadership.renewed_at + config.renew_deadline
    if failsafe_until is not None:
        deadline = max(deadline, failsafe_until)
    return deadline


# -- the standby's side ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Granted:
    """The promise is given: no Lease taking before `until` (this pod's monotonic clock)."""

    until: float


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


def grant(
    *,
    request_epoch: int,
    highest_epoch: int,
    following: bool,
    taking_over: bool,
    promised_until: float,
    now: float,
    config: ElectionConfig,
) -> Granted | Refused:
    """Whether a pod promises the active of `request_epoch` not to take the Lease.

    It refuses when it has seen a higher epoch (the requester may be deposed; a promise would
    let it serve beside the new active), when it is not following (it is active itself, or
    stopping), and while it is taking the Lease (the shell sets that flag in the same step
    that checks `blocks_taking`, so a grant and a take never overlap). A grant extends the
    promise, never shortens one given before."""
    if request_epoch < highest_epoch:
        return Refused(f"epoch {request_epoch} is below the highest seen ({highest_epoch})")
    if not following:
        return Refused("not a standby")
    if taking_over:
        return Refused("taking the Lease")
    return Granted(max(promised_until, now + promise_duration(config)))


def blocks_taking(promised_until: float, now: float) -> bool:
    """A promise given earlier forbids taking the Lease (acquiring it, or confirming a
    handover) until it ends, whatever the Lease now says."""
    return now < promised_until
