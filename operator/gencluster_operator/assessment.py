"""The facts `plan` and `status_for` both decide from, derived once from an `Observed`.

Keeping them in one place means the status never tells a different story from the plan: the
pod the plan treats as the active is the pod the status names, the pods it will replace are
the pods the status counts as updating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from gencluster_operator import desired, names
from gencluster_operator.events import FailoverReason
from gencluster_operator.observed import Observed, ObservedPod
from gencluster_operator.spec import ClusterSpec, cluster_spec

CRASH_LOOP_REASON = "CrashLoopBackOff"


@dataclass(frozen=True)
class Assessment:
    spec: ClusterSpec
    desired_hash: str
    pods: tuple[ObservedPod, ...]
    """The pods with an ordinal (named `<name>-<n>`), in ordinal order; others are ignored."""
    active: ObservedPod | None
    """The Lease holder's pod while its server process runs."""
    holder_lost: FailoverReason | None
    """Set when the Lease names a holder whose process the kubelet reports dead or gone."""
    in_sync: frozenset[str]
    """Pods in the in-sync set the active published (never the active itself)."""
    missing_ordinals: tuple[int, ...]
    surplus: tuple[ObservedPod, ...]
    """Pods whose ordinal is >= spec.replicas and that are not yet deleting, highest first."""
    outdated: tuple[ObservedPod, ...]
    """Wanted pods (ordinal < replicas, not deleting) built from an older spec."""
    failed: tuple[ObservedPod, ...]
    """Pods in a terminal phase that are not deleting yet."""
    terminating: tuple[ObservedPod, ...]
    reporting_active: tuple[ObservedPod, ...]
    """Pods whose runtime says it is active, best claim first (see `claim_order`)."""
    not_runnable: tuple[tuple[str, str], ...]
    """(pod, message) for pods whose server cannot run (exit code 78)."""
    handover_pending: bool
    state_lost_pods: tuple[ObservedPod, ...] = ()
    """Running pods whose runtime reports `state_lost`."""
    missing_claims: tuple[int, ...] = ()
    """With persistence: wanted ordinals without a claim (deleting claims count as present:
    the name is taken until they are gone)."""
    waiting_for_claims: tuple[tuple[str, str, str], ...] = ()
    """(pod, claim, claim phase) for wanted pods that do not run yet while their claim is not
    Bound (or is missing, phase "Missing")."""
    paused: bool = False
    """`gencluster.io/reconcile-paused` is set: the plan changes nothing."""
    hibernation_requested: bool = False
    """`gencluster.io/hibernation: on` is set (honoured only with persistence)."""
    downgrade_refused: tuple[tuple[str, str], ...] = ()
    """(pod, the runtime's message) for running pods of the current spec that refuse the
    cluster's state because it was written by a newer server class version (a downgrade the
    class does not accept). An outdated pod refusing is not listed: that is the old active
    of a rolling upgrade, demoted and about to be replaced by a pod of the new version."""

    @property
    def hibernating(self) -> bool:
        """Hibernation asked for and possible: the state is on the claims, so the pods go."""
        return self.hibernation_requested and self.spec.persistence.enabled

    @property
    def hibernation_refused(self) -> bool:
        """Hibernation asked for a cluster in memory: deleting its pods would lose the state."""
        return self.hibernation_requested and not self.spec.persistence.enabled

    @property
    def state_lost(self) -> bool:
        """The cluster lost its state: a pod reports `state_lost` and no pod serves as active.
        Only a restore or a reinitialize request ends it; the runtime never runs `init`."""
        return bool(self.state_lost_pods) and not any(p.reports_active for p in self.pods)

    @property
    def sync_degraded(self) -> tuple[ObservedPod, ...]:
        """Pods acting as active that answer calls without enough standby acknowledgements
        (degraded Sync under partitionPolicy Available), in claim order."""
        return tuple(
            p for p in self.reporting_active
            if p.runtime is not None and p.runtime.sync_degraded_seconds is not None
        )

    @property
    def split_brain(self) -> bool:
        return len(self.reporting_active) > 1

    @property
    def split_pair(self) -> tuple[ObservedPod, ObservedPod] | None:
        """(winner, loser) of a split brain: the best and the worst claim (`claim_order`); a
        third active, if any, is handled in a later pass."""
        if not self.split_brain:
            return None
        return self.reporting_active[0], self.reporting_active[-1]

    @property
    def loser_reconnected(self) -> bool:
        """Whether the split brain's loser shows that connectivity returned (`reconnected`)."""
        pair = self.split_pair
        return pair is not None and reconnected(pair[1], self.spec.lease.retry_period_seconds)

    @property
    def wanted(self) -> tuple[ObservedPod, ...]:
        """Pods that should stay: ordinal below spec.replicas and not deleting."""
        return tuple(
            p for p in self.pods if not p.deleting and p.ordinal is not None
            and p.ordinal < self.spec.replicas
        )

    @property
    def standbys(self) -> tuple[ObservedPod, ...]:
        """Every pod that is not deleting and not the active."""
        active = self.active.name if self.active else None
        return tuple(p for p in self.pods if not p.deleting and p.name != active)

    def is_settled_standby(self, pod: ObservedPod) -> bool:
        """Ready, running and in the published in-sync set: it could take over right now."""
        return (
            pod.running and pod.ready and not pod.deleting and pod.name in self.in_sync
            and (pod.runtime is None or pod.runtime.role != names.ROLE_ACTIVE)
        )

    @property
    def settled_standbys(self) -> tuple[ObservedPod, ...]:
        return tuple(p for p in self.standbys if self.is_settled_standby(p))

    @property
    def ordinals_in_use(self) -> list[int]:
        """The wanted ordinals and those of pods that still exist: the pods the Role must let
        patch their own label (`desired.role(..., pod_ordinals=...)`)."""
        return sorted(set(range(self.spec.replicas)) | {p.ordinal or 0 for p in self.pods})

    def crash_looping(self, pod: ObservedPod) -> bool:
        return pod.container.reason == CRASH_LOOP_REASON


def holder_loss(observed: Observed) -> FailoverReason | None:
    """Why the Lease holder is known dead, from what the kubelet reports; None while it may
    live (or when nobody holds the Lease). Never guesses from silence: an unreachable but
    running holder is left to the Lease's own expiry.

    - its pod is gone → ActivePodDeleted;
    - its pod is in a terminal phase or its server container is not running (terminated,
      waiting to restart, not started) → ActiveContainerTerminated (ActivePodDeleted when the
      pod is being deleted);
    - its container runs but started after the holder acquired the Lease (`startedAt` >
      `acquireTime`): the process that took the Lease died and the kubelet restarted it, and a
      restarted process has lost its in-memory state → ActiveContainerTerminated. `startedAt`
      has whole seconds and is truncated, so this errs on the side of "alive".
    """
    lease = observed.lease
    if lease is None or not lease.holder:
        return None
    pod = observed.pod(lease.holder)
    if pod is None:
        return FailoverReason.ACTIVE_POD_DELETED
    if not pod.running:
        if pod.deleting:
            return FailoverReason.ACTIVE_POD_DELETED
        return FailoverReason.ACTIVE_CONTAINER_TERMINATED
    started, acquired = pod.container.started_at, lease.acquire_time
    if started is not None and acquired is not None and started > acquired:
        return FailoverReason.ACTIVE_CONTAINER_TERMINATED
    return None


RECONNECTED_WITHIN_RETRY_PERIODS = 2
"""How recent (in retry periods) the loser's last successful Lease read must be. A runtime
that reaches the API server reads the Lease at least once per retry period (client-go's
jitter adds up to 20 %; an active that lost the Lease reads five times as often), so two
periods never miss a connected pod, and a pod cut off again stops qualifying two periods
after its last read."""


def reconnected(loser: ObservedPod, retry_period_seconds: int) -> bool:
    """Whether the loser of a split brain shows that connectivity has returned, so that
    merging it (and so demoting it) no longer takes its side's only active away from the
    clients that reach nothing else (`partitionPolicy: Available`).

    The evidence is the loser's own Admin Status: its last successful Lease read is at most
    `RECONNECTED_WITHIN_RETRY_PERIODS` retry periods old (by its own clock) and shows the Lease
    held by another pod, at an epoch not below the loser's (taking a Lease raises its epoch,
    so in practice it is above). A loser still cut off from the API server cannot show that:
    its last successful read is older, and it was made before the other side took the
    Lease, so it names the loser itself. Reaching the API server is the
    signal because it is what the partition took away and what the operator can verify from
    one Status call; the operator itself reaching both pods proves nothing (on the local
    control plane it always does, and on a real cluster it may sit on either side). A runtime
    that does not report its Lease view (None) is never merged automatically.
    """
    runtime = loser.runtime
    if runtime is None or runtime.lease_read_age_seconds is None:
        return False
    return (
        runtime.lease_read_age_seconds <= RECONNECTED_WITHIN_RETRY_PERIODS * retry_period_seconds
        and runtime.lease_holder not in ("", loser.name)
        and runtime.lease_epoch >= runtime.epoch
    )


def claim_order(observed: Observed, pod: ObservedPod) -> tuple[int, int, int, int]:
    """Sort key of an active's claim, best first: the higher epoch wins; at equal epochs the
    pod holding the Lease, then the one with more applied entries, then the lower ordinal."""
    runtime = pod.runtime
    assert runtime is not None
    holds = observed.lease is not None and observed.lease.holder == pod.name
    return (-runtime.epoch, 0 if holds else 1, -runtime.applied_sequence, pod.ordinal or 0)


def assess(observed: Observed) -> Assessment:
    spec = cluster_spec(observed.resource)
    pods = tuple(p for p in observed.pods if p.ordinal is not None)
    lease = observed.lease
    lost = holder_loss(observed)
    holder = observed.pod(lease.holder) if lease and lease.holder else None
    active = holder if holder is not None and lost is None and holder.ordinal is not None else None
    in_sync = frozenset(lease.in_sync or ()) if lease else frozenset()
    if active is not None:
        in_sync -= {active.name}
    present = {p.ordinal for p in pods}
    missing = tuple(o for o in range(spec.replicas) if o not in present)
    surplus = tuple(
        sorted(
            (p for p in pods if not p.deleting and (p.ordinal or 0) >= spec.replicas),
            key=lambda p: -(p.ordinal or 0),
        )
    )
    desired_hash = desired.template_hash(observed.resource)
    outdated = tuple(
        p for p in pods if not p.deleting and (p.ordinal or 0) < spec.replicas
        and p.template_hash != desired_hash
    )
    failed = tuple(p for p in pods if not p.deleting and p.phase in ("Failed", "Succeeded"))
    terminating = tuple(p for p in pods if p.deleting)
    handover = observed.handover
    recent = handover is not None and (
        observed.now - handover.started_at < timedelta(seconds=spec.lease.duration_seconds)
    )
    pending = bool(recent and handover and lease and lease.holder == handover.from_pod)
    # A graceful handover's source may still say "active" for a moment: not a split brain.
    source = handover.from_pod if handover is not None and recent else None
    actives = sorted(
        (p for p in pods if p.reports_active and p.name != source),
        key=lambda p: claim_order(observed, p),
    )
    not_runnable = tuple(
        (p.name, message) for p in pods if (message := p.server_not_runnable) is not None
    )
    state_lost_pods = tuple(
        p for p in pods if p.running and p.runtime is not None and p.runtime.state_lost
    )
    downgrade_refused = tuple(
        (p.name, p.runtime.downgrade_refused) for p in pods
        if p.running and p.runtime is not None and p.runtime.downgrade_refused
        and p not in outdated and not p.deleting
    )
    missing_claims: tuple[int, ...] = ()
    waiting: list[tuple[str, str, str]] = []
    if spec.persistence.enabled:
        claims = {c.name: c for c in observed.claims}
        missing_claims = tuple(
            o for o in range(spec.replicas) if names.claim_name(spec.name, o) not in claims
        )
        for p in pods:
            if p.running or p.deleting or (p.ordinal or 0) >= spec.replicas:
                continue
            claim_name = names.claim_name(spec.name, p.ordinal or 0)
            claim = claims.get(claim_name)
            phase = "Missing" if claim is None else claim.phase
            if claim is None or claim.phase != "Bound" or claim.deleting:
                waiting.append((p.name, claim_name, "Deleting" if claim and claim.deleting
                                else phase))
    return Assessment(
        spec=spec,
        desired_hash=desired_hash,
        pods=pods,
        active=active,
        holder_lost=lost,
        in_sync=in_sync,
        missing_ordinals=missing,
        surplus=surplus,
        outdated=outdated,
        failed=failed,
        terminating=terminating,
        reporting_active=tuple(actives),
        not_runnable=not_runnable,
        handover_pending=pending,
        state_lost_pods=state_lost_pods,
        missing_claims=missing_claims,
        waiting_for_claims=tuple(waiting),
        paused=paused(observed.annotations),
        hibernation_requested=observed.annotations.get(names.HIBERNATION_ANNOTATION) == "on",
        downgrade_refused=downgrade_refused,
    )


def paused(annotations: Mapping[str, str]) -> bool:
    """Any value of the pause annotation but "false" pauses (as with kubectl's own booleans,
    a present annotation is the request; "false" is the way to write it off in a manifest)."""
    value = annotations.get(names.RECONCILE_PAUSED_ANNOTATION)
    return value is not None and value.strip().lower() != "false"
