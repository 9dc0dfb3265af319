"""What to do next for one ClusteredServer: `plan(observed) -> list[Action]`, a pure function.

The shell calls it on every event and on a short timer, performs the actions, and calls it
again; so each call only takes the *next* safe step and relies on being called again for the
one after. The rules, in priority order (the first that applies supplies the one disruptive
action of the plan; later ones wait for a later pass):

1. **Failover assist.** The Lease holder's pod is gone, its container is not running, or it
   restarted after taking the Lease (`assessment.holder_loss`) → ClearLease, so an in-sync
   standby takes over now instead of after `lease.durationSeconds`. A holder whose process
   runs is never cleared, however silent it is: that is the Lease expiry's job.
2. **Split brain** (two pods report active). Seen first by `status_for` (the SplitBrain
   condition and a SplitBrainDetected Event); once the previous status already says so, the
   loser is demoted (Fenced) or merged into the winner (Available), the latter only once the
   loser shows that connectivity returned (`assessment.reconnected`): until then it still
   serves the clients of its side. Winner: higher epoch; at equal epochs the Lease holder,
   then more applied entries, then the lower ordinal. Failed merges are retried with
   exponential back-off. Nothing else disruptive meanwhile.
3. **In flight** — a handover the shell started that the Lease has not yet reflected (for up
   to one lease duration), a pod still terminating, or a pod other than the holder still
   saying it is active: wait.
4. **Switchover request** (annotation `gencluster.io/switchover-to` on the ClusteredServer):
   to a Ready, running, in-sync standby of the wanted ordinals → Switchover; anything else →
   a SwitchoverRejected Event saying why, and the annotation is removed. The annotation is
   also removed once the target is the active.
5. **Failed pods** (terminal phase) → delete (a later pass creates the pod again).
6. **Scale down**, only while an active serves (without one, a surplus standby may hold the
   only copy of the state): ordinals >= replicas go, highest first, one at a time; if the
   active is among them, first a switchover to the best settled standby of the wanted ordinals.
7. **Rolling update** (template hash differs), only while an active serves and the pod count
   is at spec, once every updated pod is settled (Ready and in sync): outdated standbys first
   (unhealthy ones, then highest ordinal), then a switchover to the best updated settled
   standby, then the old active goes as a standby.
   A single replica has no standby to hand over to: its pod is replaced (a Warning says its
   in-memory state is lost, as at any restart of a one-pod cluster).

While the cluster is StateLost (`Assessment.state_lost`) only failed pods are replaced and
switchover requests are rejected: there is no state to hand over, and a restore or a
reinitialize request is what moves it on.

Not disruptive, so alongside any of the above: creating the pods of missing ordinals (lowest
first) and rejecting invalid switchover requests. With `spec.persistence`, each wanted
ordinal's claim is created when missing, before its pod and in the same pass; a pod whose
claim is still being deleted waits. Claims are never deleted (scale-down and rolling updates
keep them, as a StatefulSet's); their owner reference follows `retainOnDelete`.

**Reinitialize request** (annotation `gencluster.io/reinitialize` on the ClusteredServer,
any value): while the cluster is StateLost (`Assessment.state_lost`) the Lease's
`gencluster.io/initialized` annotation is removed, so that the next active runs `init` again,
with a Reinitialized Warning naming the value; otherwise a ReinitializeRejected Warning says
why. Either way the annotation is removed, so one request is acted on at most once.

**Invalid spec** (`spec.spec_problems`: `replicas` outside the CRD's range, `args` too large
for the pods' environment; an object admitted by an older CRD can carry these): no action at
all, so nothing is ever sized from such a spec; the status reports InvalidSpec.

Output order is fixed: the disruptive action and its Event, then annotation handling, then
claim ownership, claim and pod creations and their Event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from gencluster_operator import names
from gencluster_operator.actions import (
    Action,
    ClearLease,
    CreateClaim,
    CreatePod,
    DeletePod,
    Demote,
    MergeStates,
    RecordEvent,
    RemoveAnnotation,
    RemoveLeaseAnnotation,
    SetClaimOwnership,
    Switchover,
)
from gencluster_operator.assessment import Assessment, assess
from gencluster_operator.events import ConditionType, EventReason, EventType, FailoverReason
from gencluster_operator.observed import Observed, ObservedPod
from gencluster_operator.spec import AVAILABLE, cluster_spec, spec_problems

MAX_MERGE_BACKOFF_SECONDS = 300

Step = list[Action]
"""At most one disruptive action, followed by the Event that reports it (if any)."""


def plan(observed: Observed) -> list[Action]:
    """The next actions for `observed`, deterministic for equal input."""
    if observed.resource["metadata"].get("deletionTimestamp"):
        return []  # garbage collection removes the children; nothing to hand over to
    if spec_problems(cluster_spec(observed.resource)):
        return []  # never act on an unusable spec (the status says why: InvalidSpec)
    facts = assess(observed)
    if facts.paused:
        return []  # maintenance by hand: the status still follows, nothing else
    if facts.hibernating:
        return _hibernate(facts)
    step, annotation = _disruptive_step(observed, facts)
    return [
        *step, *annotation, *_reinitialize_request(observed, facts),
        *_claim_ownership(observed, facts), *_creations(observed, facts),
    ]


def _hibernate(facts: Assessment) -> list[Action]:
    """Delete every pod, the standbys first and the active last, one at a time, so that the
    active never hands over to a pod about to go; nothing is created meanwhile. The claims,
    the Lease and the Services stay: waking up is whole-cluster recovery from the volumes."""
    if facts.terminating:
        return []  # the previous deletion is still under way
    remaining = [p for p in facts.pods if not p.deleting]
    if not remaining:
        return []
    pod = max(remaining, key=lambda p: (p is not facts.active, p.ordinal or 0))
    return [
        DeletePod(pod.name, pod.uid, "hibernation"),
        RecordEvent(EventReason.HIBERNATING,
                    f"deleting {pod.name} ({len(remaining) - 1} more to go); the claims keep "
                    "the state"),
    ]


def _disruptive_step(observed: Observed, facts: Assessment) -> tuple[Step, Step]:
    """The disruptive step of this pass (maybe empty) and the annotation handling."""
    failover = _failover_assist(observed, facts)
    if failover:
        return failover, []
    if facts.split_brain:
        return _split_brain(observed, facts), []
    annotation, switchover = _switchover_request(observed, facts)
    if facts.handover_pending or facts.terminating or _stray_active(facts):
        return [], annotation
    if switchover:
        return switchover, annotation
    if facts.state_lost:
        # Nothing to hand over or roll: only a restore or a reinitialize request moves on.
        return _replace_failed(observed, facts), annotation
    for rule in (_replace_failed, _update_before_shrinking_to_one, _scale_down, _rolling_update):
        step = rule(observed, facts)
        if step:
            return step, annotation
    return [], annotation


def _stray_active(facts: Assessment) -> bool:
    """A pod other than the Lease holder still says it is active (a handover's source that
    has not stepped down yet): wait, never delete or hand over around it."""
    return any(p.reports_active and p is not facts.active for p in facts.pods)


# -- 1. failover assist ------------------------------------------------------------------------


def _failover_assist(observed: Observed, facts: Assessment) -> Step:
    lease = observed.lease
    if facts.holder_lost is None or lease is None:
        return []
    return [
        ClearLease(lease.holder, lease.resource_version, facts.holder_lost),
        RecordEvent(
            EventReason.FAILOVER_STARTED,
            f"active pod {lease.holder} (epoch {lease.transitions}) is lost "
            f"({facts.holder_lost}); cleared the Lease so that an in-sync standby takes over",
            EventType.WARNING,
        ),
    ]


# -- 2. split brain --------------------------------------------------------------------------


def _split_brain_recorded(observed: Observed) -> bool:
    """Whether the previous status already reports the split brain (detect, record, act)."""
    conditions = observed.previous_status.get("conditions") or []
    return any(
        c.get("type") == ConditionType.SPLIT_BRAIN and c.get("status") == "True"
        for c in conditions
    )


def merge_backoff(consecutive_failures: int, retry_period_seconds: int) -> timedelta:
    """Wait after the n-th failed merge in a row: retry period x 2^(n-1), at most 5 minutes."""
    if consecutive_failures <= 0:
        return timedelta(0)
    seconds = retry_period_seconds * 2 ** min(consecutive_failures - 1, 16)
    return timedelta(seconds=min(seconds, MAX_MERGE_BACKOFF_SECONDS))


def _split_brain(observed: Observed, facts: Assessment) -> Step:
    if not _split_brain_recorded(observed) or facts.split_pair is None:
        return []
    winner, loser = facts.split_pair
    assert winner.runtime is not None and loser.runtime is not None
    if facts.spec.partition_policy != AVAILABLE:
        return [Demote(loser.name, loser.runtime.epoch, winner.name)]
    if not facts.loser_reconnected:
        return []  # the partition has not healed: the loser still serves its side
    last = observed.last_merge
    if (
        last is not None and not last.succeeded
        and (last.winner, last.loser) == (winner.name, loser.name)
        and observed.now - last.finished_at
        < merge_backoff(last.consecutive_failures, facts.spec.lease.retry_period_seconds)
    ):
        return []
    return [MergeStates(winner.name, loser.name, winner.runtime.epoch, loser.runtime.epoch)]


# -- 4. switchover on request -----------------------------------------------------------------


def switchover_rejection(facts: Assessment, target: str) -> str | None:
    """Why `target` cannot take over now, or None when it can."""
    pod = next((p for p in facts.pods if p.name == target), None)
    if facts.state_lost:
        return "the cluster lost its state (StateLost): restore a backup or reinitialize first"
    if facts.active is None:
        return "no active pod to hand over from (a failover may be under way)"
    if pod is None:
        return f"{target} is not a pod of ClusteredServer {facts.spec.name}"
    if pod.deleting or (pod.ordinal or 0) >= facts.spec.replicas:
        return f"{target} is being removed"
    if not pod.running or not pod.ready:
        return f"{target} is not Ready"
    if pod.runtime is not None and pod.runtime.role != names.ROLE_STANDBY:
        return f"{target} reports role {pod.runtime.role!r}, not standby"
    if target not in facts.in_sync:
        return f"{target} is not in the in-sync set published by the active {facts.active.name}"
    return None


def _switchover_request(observed: Observed, facts: Assessment) -> tuple[Step, Step]:
    """(annotation handling, switchover step) for a `gencluster.io/switchover-to` request."""
    target = observed.annotations.get(names.SWITCHOVER_TO_ANNOTATION)
    if target is None:
        return [], []
    remove = RemoveAnnotation(names.SWITCHOVER_TO_ANNOTATION)
    if facts.active is not None and facts.active.name == target:
        return [remove], []
    handover = observed.handover
    if facts.handover_pending and handover is not None and handover.to_pod == target:
        return [], []
    reason = switchover_rejection(facts, target)
    if reason is not None:
        message = f"switchover to {target} rejected: {reason}"
        rejected = RecordEvent(EventReason.SWITCHOVER_REJECTED, message, EventType.WARNING)
        return [rejected, remove], []
    assert facts.active is not None
    return [], _switchover(facts.active, target, FailoverReason.SWITCHOVER, "requested")


def _switchover(active: ObservedPod, target: str, reason: FailoverReason, why: str) -> Step:
    """The Event first: the Switchover call can fail after the Lease already moved (the
    target confirmed late), and actions stop at the first failure, so an Event placed after
    it would be lost although the switchover happened."""
    return [
        RecordEvent(
            EventReason.SWITCHOVER_STARTED,
            f"handing the active role from {active.name} to {target} ({why})",
        ),
        Switchover(active.name, target, reason),
    ]


# -- 5. failed pods ------------------------------------------------------------------------------


def _replace_failed(observed: Observed, facts: Assessment) -> Step:
    if not facts.failed:
        return []
    pod = facts.failed[0]
    return [
        DeletePod(pod.name, pod.uid, f"pod phase {pod.phase}"),
        RecordEvent(
            EventReason.POD_REPLACED,
            f"deleting pod {pod.name} (phase {pod.phase}) to create it again",
            EventType.WARNING,
        ),
    ]


# -- 6. scale down ---------------------------------------------------------------------------


def best_standby(facts: Assessment, candidates: Sequence[ObservedPod]) -> ObservedPod | None:
    """The settled standby to hand over to: updated pods first, then the least lag, then the
    lowest ordinal."""
    settled = [p for p in candidates if facts.is_settled_standby(p)]

    def key(pod: ObservedPod) -> tuple[int, int, int]:
        applied = pod.runtime.applied_sequence if pod.runtime else 0
        return (0 if pod.template_hash == facts.desired_hash else 1, -applied, pod.ordinal or 0)

    return min(settled, key=key, default=None)


def _update_before_shrinking_to_one(observed: Observed, facts: Assessment) -> Step:
    """Scaling down to one pod whose template is outdated (a changed spec, or
    `minSyncStandbys` left out, which becomes 0 at one replica): replace that pod while the
    surplus standbys still hold the state. Scaling down first would leave one outdated pod
    with nobody to hand over to, and replacing it would lose an in-memory state."""
    active = facts.active
    if facts.spec.replicas != 1 or not facts.surplus or active is None:
        return []
    kept = next(iter(facts.wanted), None)
    if kept is None or kept.template_hash == facts.desired_hash:
        return []  # being created, or already current: scaling down goes on
    if kept is active:
        target = best_standby(facts, facts.surplus)
        if target is None:
            return []  # wait until a surplus standby is in sync
        return _switchover(active, target.name, FailoverReason.ROLLING_UPDATE,
                           "rolling update before scaling down to one pod")
    return [
        DeletePod(kept.name, kept.uid, "rolling update"),
        RecordEvent(
            EventReason.ROLLING_UPDATE,
            f"replacing {kept.name} with the current spec before scaling down to one pod, "
            "while the other pods still hold the state",
        ),
    ]


def _scale_down(observed: Observed, facts: Assessment) -> Step:
    active = facts.active
    if not facts.surplus or active is None:
        return []  # without an active, a surplus standby may hold the only copy of the state
    if active in facts.surplus:
        target = best_standby(facts, facts.wanted)
        if target is None:
            return []  # wait until a wanted standby is in sync
        return _switchover(active, target.name, FailoverReason.SCALED_DOWN, "scaling down")
    pod = facts.surplus[0]
    return [
        DeletePod(pod.name, pod.uid, "scaling down"),
        RecordEvent(
            EventReason.SCALED_DOWN,
            f"deleting standby {pod.name} (scaling down to {facts.spec.replicas} pods)",
        ),
    ]


# -- 7. rolling update --------------------------------------------------------------------------


def _rolling_update(observed: Observed, facts: Assessment) -> Step:
    active = facts.active
    if not facts.outdated or active is None or facts.missing_ordinals or facts.surplus:
        return []
    updated = [p for p in facts.wanted if p.template_hash == facts.desired_hash]
    if any(p is not active and not facts.is_settled_standby(p) for p in updated):
        return []  # the last replacement has not caught up yet
    standbys = [p for p in facts.outdated if p is not active]
    if standbys:
        pod = min(standbys, key=lambda p: (facts.is_settled_standby(p), -(p.ordinal or 0)))
        return [
            DeletePod(pod.name, pod.uid, "rolling update"),
            RecordEvent(
                EventReason.ROLLING_UPDATE,
                f"replacing standby {pod.name} with the current spec "
                f"({len(facts.outdated)} pods to update)",
            ),
        ]
    if facts.spec.replicas == 1:
        return [
            DeletePod(active.name, active.uid, "rolling update"),
            RecordEvent(
                EventReason.ROLLING_UPDATE,
                f"replacing the only pod {active.name}: with one replica there is no standby "
                "to hand over to, so its in-memory state is lost",
                EventType.WARNING,
            ),
        ]
    target = best_standby(facts, updated)
    if target is None:
        return []
    return _switchover(active, target.name, FailoverReason.ROLLING_UPDATE, "rolling update")


# -- reinitialize on request ----------------------------------------------------------------------


def reinitialize_rejection(facts: Assessment) -> str | None:
    """Why a reinitialize request cannot be acted on now, or None when it can."""
    if facts.state_lost:
        return None
    active = next((p for p in facts.pods if p.reports_active), None)
    if active is not None:
        return f"{active.name} is active and serves the cluster's state"
    return ("no pod reports lost state (state_lost); the annotation only applies to a cluster "
            "whose Ready condition says StateLost")


def _reinitialize_request(observed: Observed, facts: Assessment) -> Step:
    value = observed.annotations.get(names.REINITIALIZE_ANNOTATION)
    if value is None:
        return []
    remove = RemoveAnnotation(names.REINITIALIZE_ANNOTATION)
    request = f"{names.REINITIALIZE_ANNOTATION}={value!r}"
    reason = reinitialize_rejection(facts)
    if reason is not None:
        return [
            RecordEvent(EventReason.REINITIALIZE_REJECTED,
                        f"{request} refused, nothing changed: {reason}", EventType.WARNING),
            remove,
        ]
    lease = names.lease_name(facts.spec.name)
    return [
        RemoveLeaseAnnotation(names.INITIALIZED_ANNOTATION),
        remove,
        RecordEvent(
            EventReason.REINITIALIZED,
            f"{request}: removed {names.INITIALIZED_ANNOTATION} from Lease {lease}; the next "
            "active runs init(spec.args) and starts from a new state (the lost state is gone)",
            EventType.WARNING,
        ),
    ]


# -- claims ---------------------------------------------------------------------------------------


def _claim_ownership(observed: Observed, facts: Assessment) -> Step:
    """Claims whose owner reference does not follow `retainOnDelete`: retained claims lose
    the ClusteredServer's controller reference, kept ones get it (unless something else
    controls them, which is left alone)."""
    persistence = facts.spec.persistence
    if not persistence.enabled:
        return []
    uid = facts.spec.uid
    steps: Step = []
    for claim in observed.claims:
        if claim.ordinal is None or claim.deleting:
            continue
        if persistence.retain_on_delete and claim.controller_uid == uid:
            steps.append(SetClaimOwnership(claim.name, retained=True))
        elif not persistence.retain_on_delete and claim.controller_uid is None:
            steps.append(SetClaimOwnership(claim.name, retained=False))
    return steps


def _claims_blocking(observed: Observed, ordinal: int) -> bool:
    """The ordinal's claim is still being deleted: its pod would wait for a claim that goes."""
    claim = observed.claim(names.claim_name(observed.name, ordinal))
    return claim is not None and claim.deleting


# -- creations ------------------------------------------------------------------------------------


def _creations(observed: Observed, facts: Assessment) -> list[Action]:
    spec = facts.spec
    claims: list[Action] = [
        CreateClaim(names.claim_name(spec.name, ordinal), ordinal)
        for ordinal in facts.missing_claims
    ]
    ordinals = [
        o for o in facts.missing_ordinals
        if not (spec.persistence.enabled and _claims_blocking(observed, o))
    ]
    if not ordinals:
        return claims
    creations: list[Action] = [
        *claims, *(CreatePod(names.pod_name(spec.name, o), o) for o in ordinals)
    ]
    created = ", ".join(names.pod_name(spec.name, o) for o in ordinals)
    previous = observed.previous_status
    before = int(previous.get("replicas") or 0)
    spec_changed = previous.get("observedGeneration") != spec.generation
    if spec_changed and spec.replicas > before:
        event = RecordEvent(
            EventReason.SCALED_UP,
            f"scaling up from {before} to {spec.replicas} pods: creating {created}",
        )
    else:
        # A pod this operator deleted (rolling update, failed pod: that Event said why) or
        # one that went away by itself.
        event = RecordEvent(EventReason.POD_REPLACED, f"creating {created} again")
    return [*creations, event]
