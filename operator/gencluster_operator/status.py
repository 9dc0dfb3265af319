"""The ClusteredServer's status, and the Events its changes deserve, as pure functions.

`status_for(observed, previous_status, now)` returns the whole status. Fields with nothing to
say are None, which a JSON merge patch turns into a removal (and the API server prunes from a
replace), so a stale `activePod` never survives. `events_between(previous, current)` names the
transitions users want to hear about; the shell records them after the status write succeeds,
so that a failed write does not repeat an Event without the status to match.

Condition reasons and their meaning are the table in docs/clusteredserver.md. Two rules matter
to automation:

- `lastTransitionTime` changes only when a condition's `status` changes (a new reason or
  message alone keeps it), and every condition carries the generation it was computed for.
- The first status written for a new `metadata.generation` has Ready = Unknown/Reconciling,
  whatever the pods look like, so `kubectl wait --for=condition=Ready` after an apply never
  returns on the previous spec's Ready. The next pass computes Ready for real.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gencluster_operator import names
from gencluster_operator.actions import RecordEvent
from gencluster_operator.assessment import Assessment, assess
from gencluster_operator.events import (
    ConditionReason,
    ConditionType,
    EventReason,
    EventType,
    FailoverReason,
)
from gencluster_operator.observed import (
    VOLUME_FAILED_EXIT_CODE,
    Observed,
    ObservedPod,
    format_time,
)
from gencluster_operator.spec import AVAILABLE, cluster_spec, spec_problems

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

PLANNED_HANDOVERS = frozenset(
    {FailoverReason.SWITCHOVER, FailoverReason.ROLLING_UPDATE, FailoverReason.SCALED_DOWN}
)

PHASE_PENDING = "Pending"
PHASE_RUNNING = "Running"
PHASE_UPDATING = "Updating"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"
PHASE_STATE_LOST = "StateLost"
PHASE_HIBERNATED = "Hibernated"


@dataclass(frozen=True)
class Verdict:
    """One condition's value before timestamps are attached."""

    status: str
    reason: str
    message: str


PAUSED_MESSAGE = (
    f"reconciliation paused by the annotation {names.RECONCILE_PAUSED_ANNOTATION}: the operator "
    "creates, deletes, replaces and fails over no pod and merges nothing; remove the "
    "annotation to resume"
)
HIBERNATED_MESSAGE = (
    f"hibernated ({names.HIBERNATION_ANNOTATION}: on): no pods; the claims keep the state. "
    "Remove the annotation to start the pods again"
)
HIBERNATION_REFUSED_MESSAGE = (
    f"{names.HIBERNATION_ANNOTATION}: on is ignored: spec.persistence is not enabled, so "
    "deleting the pods would lose the state (take a backup and use a ClusteredServer with "
    "persistence)"
)


def status_changed(previous_status: Mapping[str, Any] | None, status: Mapping[str, Any]) -> bool:
    """Whether merge-patching `status` onto `previous_status` would change anything: a field
    with a new value, or a None (remove) for a field that is there. The periodic pass of an
    idle cluster usually computes the status it already has; not sending that patch saves one
    write per cluster per pass (and the watch event every operator replica gets for it)."""
    previous = previous_status or {}
    return any(previous.get(key) != value for key, value in status.items())


def status_for(
    observed: Observed, previous_status: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The status to write for `observed`, given the status currently stored."""
    previous = previous_status or {}
    problems = spec_problems(cluster_spec(observed.resource))
    if problems:
        return _invalid_spec_status(observed, previous, problems, now)
    facts = assess(observed)
    active = facts.active
    lease = observed.lease
    had_active = bool(previous.get("epoch")) or bool(lease and lease.transitions > 0)
    progressing = _progressing(observed, facts, had_active)
    last_failover = _last_failover(observed, facts, previous, now)
    split = _split_brain(observed, facts, previous)
    merges = int(previous.get("merges") or 0)
    if split.reason == ConditionReason.STATES_MERGED and _condition_status(
        previous, ConditionType.SPLIT_BRAIN
    ) == TRUE:
        merges += 1
    verdicts = {
        ConditionType.READY: _ready(observed, facts, previous, progressing, had_active),
        ConditionType.AVAILABLE: _available(facts),
        ConditionType.PROGRESSING: progressing,
        ConditionType.DEGRADED: _degraded(observed, facts, progressing),
        ConditionType.SPLIT_BRAIN: split,
    }
    kept = [p for p in facts.pods if not p.deleting]
    return {
        "observedGeneration": facts.spec.generation,
        "phase": _phase(facts, verdicts, had_active),
        "replicas": len(kept),
        "readyReplicas": sum(1 for p in kept if p.ready),
        "selector": names.selector_string(facts.spec.name),
        "activePod": active.name if active else None,
        "epoch": lease.transitions if lease else previous.get("epoch"),
        "standbys": _standbys(facts),
        "lastFailoverTime": last_failover[0],
        "lastFailoverReason": last_failover[1],
        "merges": merges,
        **_failsafe(active, previous),
        "syncDegraded": _sync_degraded(facts, previous, now),
        **_volume_failure(facts.pods, previous),
        "conditions": [
            _condition(kind, verdict, previous, facts.spec.generation, now)
            for kind, verdict in verdicts.items()
        ],
    }


def _invalid_spec_status(
    observed: Observed, previous: Mapping[str, Any], problems: list[str], now: datetime
) -> dict[str, Any]:
    """The status of a spec the operator refuses to act on (`spec_problems`), computed without
    looking at the spec's numbers: the previous status stays (the pods keep serving as they
    are), except that Ready, Progressing and Degraded say why nothing happens."""
    generation = int(observed.resource["metadata"].get("generation") or 0)
    message = "the operator does not act on this spec: " + "; ".join(problems)
    refused = {
        ConditionType.READY: Verdict(FALSE, ConditionReason.INVALID_SPEC, message),
        ConditionType.PROGRESSING: Verdict(FALSE, ConditionReason.INVALID_SPEC, message),
        ConditionType.DEGRADED: Verdict(TRUE, ConditionReason.INVALID_SPEC, message),
    }
    conditions = []
    for kind in ConditionType:
        if kind in refused:
            conditions.append(_condition(kind, refused[kind], previous, generation, now))
        elif (earlier := _previous_condition(previous, kind)) is not None:
            conditions.append(dict(earlier))
        else:
            conditions.append(_condition(
                kind, Verdict(UNKNOWN, ConditionReason.INVALID_SPEC, message), previous,
                generation, now))
    return {
        **previous,
        "observedGeneration": generation,
        "phase": PHASE_DEGRADED if previous.get("activePod") else PHASE_FAILED,
        "selector": names.selector_string(observed.name),
        "conditions": conditions,
    }


# -- fields ---------------------------------------------------------------------------------------


def volume_failed(pod: ObservedPod) -> bool:
    """The pod's server last stopped because its volume refused a write."""
    return pod.container.exit_code == VOLUME_FAILED_EXIT_CODE


def _volume_failure(
    pods: tuple[ObservedPod, ...], previous: Mapping[str, Any]
) -> dict[str, Any]:
    """`volumeFailure`: the last replica that stopped on a failed volume, with its restart
    count (one VolumeFailed Event per count) and its termination message. Kept once the pod
    restarts or is replaced, so that the failure stays visible after its recovery."""
    failed = [p for p in pods if volume_failed(p)]
    if not failed:
        kept = previous.get("volumeFailure")
        return {"volumeFailure": kept} if kept else {}
    earlier = previous.get("volumeFailure") or {}
    changed = [p for p in failed if (p.name, p.container.restart_count)
               != (earlier.get("pod"), earlier.get("restarts"))]
    if not changed and earlier.get("pod") in {p.name for p in failed}:
        return {"volumeFailure": dict(earlier)}
    pod = (changed or failed)[0]
    return {"volumeFailure": {
        "pod": pod.name,
        "restarts": pod.container.restart_count,
        "message": (pod.container.message or "").strip()[-1024:],
    }}



def _failsafe(active: ObservedPod | None, previous: Mapping[str, Any]) -> dict[str, Any]:
    """`failsafe`: the active's failsafe record (docs/partitions.md, "Failsafe"): the pod,
    its episodes, the last one's length, and `servingSeconds` while it serves on promises.
    Kept from the previous status when the active has none to report, so that an episode
    seen once stays visible after a failover."""
    runtime = active.runtime if active is not None else None
    if active is None or runtime is None or (
        runtime.failsafe_episodes == 0 and runtime.failsafe_seconds is None
    ):
        kept = previous.get("failsafe")
        return {"failsafe": kept} if kept else {}
    record: dict[str, Any] = {
        "pod": active.name,
        "episodes": runtime.failsafe_episodes,
        "lastSeconds": round(runtime.last_failsafe_seconds, 1),
    }
    if runtime.failsafe_seconds is not None:
        record["servingSeconds"] = round(runtime.failsafe_seconds, 1)
    return {"failsafe": record}


def _sync_degraded(
    facts: Assessment, previous: Mapping[str, Any], now: datetime
) -> list[dict[str, Any]] | None:
    """`syncDegraded`: each pod acting as active that answers calls without the
    acknowledgements of minSyncStandbys standbys (partitionPolicy Available,
    docs/partitions.md), since when, and how many answered entries its in-sync standbys may
    lack. `since` is kept from the previous status while the same pod stays degraded (the
    pod reports a duration by its own clock; recomputing it each pass would only jitter)."""
    pods = facts.sync_degraded
    if not pods:
        return None
    earlier = {
        str(entry.get("pod")): entry.get("since")
        for entry in previous.get("syncDegraded") or [] if isinstance(entry, Mapping)
    }
    entries = []
    for pod in pods:
        runtime = pod.runtime
        assert runtime is not None and runtime.sync_degraded_seconds is not None
        since = earlier.get(pod.name) or format_time(
            now - timedelta(seconds=runtime.sync_degraded_seconds)
        )
        entries.append({
            "pod": pod.name, "since": since, "unsyncedEntries": runtime.unsynced_entries,
        })
    return entries


def _standbys(facts: Assessment) -> list[dict[str, Any]]:
    """Each standby with `inSync` and its `lag`: as the active reports it (entries not yet
    acknowledged), else the difference of applied sequences when both pods report, else
    left out."""
    active = facts.active
    report = active.runtime if active else None
    reported = dict(report.standby_lag) if report else {}
    entries = []
    for pod in facts.standbys:
        entry: dict[str, Any] = {"pod": pod.name, "inSync": pod.name in facts.in_sync}
        if pod.name in reported:
            entry["lag"] = max(0, reported[pod.name])
        elif report is not None and pod.runtime is not None:
            entry["lag"] = max(0, report.applied_sequence - pod.runtime.applied_sequence)
        entries.append(entry)
    return entries


def _last_failover(
    observed: Observed, facts: Assessment, previous: Mapping[str, Any], now: datetime
) -> tuple[str | None, str | None]:
    """(`lastFailoverTime`, `lastFailoverReason`): set when the active role leaves a pod.

    The reason, in order: the planned handover the shell started, if it moved the role where
    it meant to; the loss the kubelet reports for a holder; for a pod that is gone or not
    running, what happened to it; a live pod that reports standby handed over (Switchover);
    any other live pod lost the Lease by expiry. The time is the new holder's `acquireTime`
    when there is a new active, else now (the moment the loss was seen). A move that passed
    through "no active" is recorded once, when the loss was seen.
    """
    kept = (previous.get("lastFailoverTime"), previous.get("lastFailoverReason"))
    before = previous.get("activePod")
    after = facts.active.name if facts.active else None
    if not before or before == after:
        return kept
    lease = observed.lease
    handover = observed.handover
    old = observed.pod(before)
    reason: FailoverReason
    if after and handover and (handover.from_pod, handover.to_pod) == (before, after):
        reason = handover.reason
    elif facts.holder_lost is not None and lease is not None and lease.holder == before:
        reason = facts.holder_lost
    elif old is None or old.deleting:
        reason = FailoverReason.ACTIVE_POD_DELETED
    elif not old.running:
        reason = FailoverReason.ACTIVE_CONTAINER_TERMINATED
    elif old.runtime is not None and old.runtime.role == names.ROLE_STANDBY:
        reason = FailoverReason.SWITCHOVER
    else:
        reason = FailoverReason.LEASE_EXPIRED
    moment = lease.acquire_time if after and lease and lease.acquire_time else now
    return format_time(moment), str(reason)


# -- conditions -----------------------------------------------------------------------------------


def _in_sync_count(facts: Assessment) -> int:
    return sum(1 for p in facts.standbys if p.running and p.name in facts.in_sync)


def _pod_list(pods: list[str]) -> str:
    return ", ".join(pods)


def _progressing(observed: Observed, facts: Assessment, had_active: bool) -> Verdict:
    spec = facts.spec
    if facts.paused:
        return Verdict(FALSE, ConditionReason.RECONCILE_PAUSED, PAUSED_MESSAGE)
    if facts.hibernating:
        remaining = [p.name for p in facts.pods]
        if remaining:
            return Verdict(TRUE, ConditionReason.HIBERNATING,
                           f"deleting {_pod_list(remaining)}; the claims keep the state")
        return Verdict(FALSE, ConditionReason.HIBERNATED, HIBERNATED_MESSAGE)
    if facts.split_brain and spec.partition_policy == AVAILABLE:
        return Verdict(TRUE, ConditionReason.MERGING, _split_message(facts))
    if facts.state_lost:
        return Verdict(FALSE, ConditionReason.STATE_LOST, _state_lost_message(facts))
    if facts.active is None and had_active:
        return Verdict(TRUE, ConditionReason.FAILING_OVER, "no active; an in-sync standby is "
                       "taking over")
    if facts.handover_pending or names.SWITCHOVER_TO_ANNOTATION in observed.annotations:
        handover = observed.handover
        target = handover.to_pod if handover else observed.annotations.get(
            names.SWITCHOVER_TO_ANNOTATION
        )
        return Verdict(TRUE, ConditionReason.SWITCHING_OVER, f"handing over to {target}")
    storage = _storage_note(facts)
    if facts.missing_ordinals and not had_active:
        return Verdict(TRUE, ConditionReason.CREATING, f"creating {spec.replicas} pods{storage}")
    if facts.missing_ordinals:
        missing = [names.pod_name(spec.name, o) for o in facts.missing_ordinals]
        return Verdict(TRUE, ConditionReason.SCALING_UP,
                       f"creating {_pod_list(missing)}{storage}")
    if facts.surplus or any(
        p.deleting and (p.ordinal or 0) >= spec.replicas for p in facts.pods
    ):
        return Verdict(TRUE, ConditionReason.SCALING_DOWN,
                       f"scaling down to {spec.replicas} pods")
    if facts.outdated or facts.terminating:
        pending = [p.name for p in facts.outdated]
        return Verdict(TRUE, ConditionReason.ROLLING_UPDATE,
                       f"pods to update: {_pod_list(pending) or 'replacement under way'}")
    if facts.waiting_for_claims:
        return Verdict(TRUE, ConditionReason.WAITING_FOR_STORAGE, _storage_note(facts)[2:])
    return Verdict(FALSE, ConditionReason.RECONCILED, "nothing in flight")


def _storage_note(facts: Assessment) -> str:
    """"; <pod> waits for PersistentVolumeClaim <claim> (<phase>)" per pod whose claim is not
    bound yet (empty when none): the usual reason a pod of a persistent cluster stays Pending
    (no default StorageClass, an exhausted quota, a provisioner that is slow or failing)."""
    waits = [
        f"{pod} waits for PersistentVolumeClaim {claim} ({phase})"
        for pod, claim, phase in facts.waiting_for_claims
    ]
    return "".join(f"; {wait}" for wait in waits)


def _state_lost_message(facts: Assessment) -> str:
    name = facts.spec.name
    pods = _pod_list([p.name for p in facts.state_lost_pods])
    return (
        f"no replica holds the state the cluster had ({pods} report state_lost) and init is "
        f"never run again by itself: restore a backup (kubectl gencluster restore {name} FILE) "
        f"or start from a new state (kubectl annotate csrv {name} "
        f"{names.REINITIALIZE_ANNOTATION}=yes)"
    )


def _split_message(facts: Assessment) -> str:
    claims = [
        f"{p.name} (epoch {p.runtime.epoch})" for p in facts.reporting_active if p.runtime
    ]
    message = f"pods acting as active: {_pod_list(claims)}"
    pair = facts.split_pair
    if pair is None or facts.spec.partition_policy != AVAILABLE:
        return message
    winner, loser = pair
    if facts.loser_reconnected:
        return f"{message}; merging {loser.name} into {winner.name}"
    return (f"{message}; {loser.name} keeps serving its side until it reaches the API server "
            f"again, then it is merged into {winner.name}")


def _not_runnable_message(facts: Assessment) -> str:
    """Each distinct error once, after the pods that report it (they usually all say the
    same: the configuration is the same in every pod)."""
    pods_by_message: dict[str, list[str]] = {}
    for pod, message in facts.not_runnable:
        pods_by_message.setdefault(message, []).append(pod)
    return "; ".join(f"{_pod_list(pods)}: {message}" for message, pods in pods_by_message.items())


def _ready(
    observed: Observed,
    facts: Assessment,
    previous: Mapping[str, Any],
    progressing: Verdict,
    had_active: bool,
) -> Verdict:
    spec = facts.spec
    if facts.hibernating:
        return Verdict(FALSE, ConditionReason.HIBERNATED, HIBERNATED_MESSAGE)
    if previous.get("observedGeneration") != spec.generation:
        return Verdict(UNKNOWN, ConditionReason.RECONCILING,
                       f"generation {spec.generation} is being reconciled")
    if facts.not_runnable:
        return Verdict(FALSE, ConditionReason.SERVER_NOT_RUNNABLE, _not_runnable_message(facts))
    if facts.split_brain:
        return Verdict(FALSE, ConditionReason.SPLIT_BRAIN, _split_message(facts))
    if facts.state_lost:
        return Verdict(FALSE, ConditionReason.STATE_LOST, _state_lost_message(facts))
    if facts.active is None:
        if not had_active:
            return Verdict(FALSE, ConditionReason.PENDING, "waiting for the first active")
        return Verdict(FALSE, ConditionReason.NO_ACTIVE, "no pod holds the Lease")
    in_sync, required = _in_sync_count(facts), spec.sync_standbys_required
    if in_sync < required:
        return Verdict(FALSE, ConditionReason.NOT_ENOUGH_SYNC_STANDBYS,
                       f"{in_sync} of {required} required standbys in sync")
    if progressing.status == TRUE:
        return Verdict(FALSE, ConditionReason.UPDATING, progressing.message)
    ready = sum(1 for p in facts.wanted if p.ready)
    if ready < spec.replicas:
        return Verdict(FALSE, ConditionReason.PODS_NOT_READY,
                       f"{ready} of {spec.replicas} pods Ready")
    return Verdict(TRUE, ConditionReason.SERVING,
                   f"{facts.active.name} is active; {ready} of {spec.replicas} pods Ready")


def _available(facts: Assessment) -> Verdict:
    active = facts.active
    if facts.hibernating:
        return Verdict(FALSE, ConditionReason.HIBERNATED, HIBERNATED_MESSAGE)
    if facts.state_lost:
        return Verdict(FALSE, ConditionReason.STATE_LOST, _state_lost_message(facts))
    if active is None or not active.ready:
        return Verdict(FALSE, ConditionReason.NO_ACTIVE, "no active pod serves client calls")
    if active in facts.sync_degraded:
        return Verdict(TRUE, ConditionReason.ACTIVE_SERVING,
                       f"{active.name} serves client calls, without standby acknowledgements "
                       "(see Degraded: SyncDegraded)")
    in_sync, required = _in_sync_count(facts), facts.spec.sync_standbys_required
    if in_sync < required:
        return Verdict(FALSE, ConditionReason.NOT_ENOUGH_SYNC_STANDBYS,
                       f"{active.name} waits for {required} in-sync standbys, has {in_sync}: "
                       "state-changing calls wait")
    return Verdict(TRUE, ConditionReason.ACTIVE_SERVING, f"{active.name} serves client calls")


def _degraded(observed: Observed, facts: Assessment, progressing: Verdict) -> Verdict:
    if facts.hibernation_refused:
        return Verdict(TRUE, ConditionReason.HIBERNATION_REFUSED, HIBERNATION_REFUSED_MESSAGE)
    if facts.hibernating:
        return Verdict(FALSE, ConditionReason.AS_EXPECTED, "hibernation as requested")
    if facts.not_runnable:
        return Verdict(TRUE, ConditionReason.SERVER_NOT_RUNNABLE, _not_runnable_message(facts))
    if facts.state_lost:
        return Verdict(TRUE, ConditionReason.STATE_LOST, _state_lost_message(facts))
    if facts.downgrade_refused:
        pod, message = facts.downgrade_refused[0]
        return Verdict(TRUE, ConditionReason.DOWNGRADE_REFUSED, f"{pod}: {message}")
    last = observed.last_merge
    if facts.split_brain and last is not None and not last.succeeded:
        return Verdict(TRUE, ConditionReason.MERGE_FAILED,
                       f"merging {last.loser} into {last.winner} failed "
                       f"({last.consecutive_failures} in a row): {last.message}")
    if facts.sync_degraded:
        return Verdict(TRUE, ConditionReason.SYNC_DEGRADED, _sync_degraded_message(facts))
    if observed.reconcile_error:
        return Verdict(TRUE, ConditionReason.RECONCILE_FAILED, observed.reconcile_error)
    volume_down = [p.name for p in facts.wanted if volume_failed(p) and not p.ready]
    if volume_down:
        return Verdict(TRUE, ConditionReason.VOLUME_FAILED,
                       f"stopped on a failed volume (it refused a write): "
                       f"{_pod_list(volume_down)}; see status.volumeFailure")
    not_ready = [p.name for p in facts.wanted if not p.ready]
    looping = [p.name for p in facts.wanted if facts.crash_looping(p)]
    if looping or (not_ready and progressing.status != TRUE):
        return Verdict(TRUE, ConditionReason.PODS_NOT_READY,
                       f"not Ready: {_pod_list(looping or not_ready)}")
    out_of_sync = [p.name for p in facts.standbys if p.running and p.name not in facts.in_sync]
    if facts.active is not None and out_of_sync and progressing.status != TRUE:
        return Verdict(TRUE, ConditionReason.STANDBYS_OUT_OF_SYNC,
                       f"not in sync: {_pod_list(out_of_sync)}")
    return Verdict(FALSE, ConditionReason.AS_EXPECTED, "nothing to report")


def _sync_degraded_message(facts: Assessment) -> str:
    required = facts.spec.sync_standbys_required
    parts = []
    for pod in facts.sync_degraded:
        runtime = pod.runtime
        assert runtime is not None
        parts.append(
            f"{pod.name} answers calls without the acknowledgements of {required} standby(s) "
            f"({runtime.unsynced_entries} answered entries not on its in-sync standbys yet)"
        )
    return (
        "; ".join(parts) + ": partitionPolicy Available keeps serving, and those writes live "
        "only on that side until its standbys catch up or the operator merges it "
        "(docs/partitions.md, Available and Sync replication)"
    )


def _split_brain(
    observed: Observed, facts: Assessment, previous: Mapping[str, Any]
) -> Verdict:
    if facts.split_brain:
        return Verdict(TRUE, ConditionReason.SPLIT_BRAIN_DETECTED, _split_message(facts))
    earlier = _previous_condition(previous, ConditionType.SPLIT_BRAIN)
    if earlier is None:
        return Verdict(FALSE, ConditionReason.NO_SPLIT_BRAIN, "no split brain seen")
    if earlier.get("status") != TRUE:
        return Verdict(FALSE, str(earlier.get("reason") or ConditionReason.NO_SPLIT_BRAIN),
                       str(earlier.get("message") or ""))
    last = observed.last_merge
    if last is not None and last.succeeded:
        return Verdict(
            FALSE, ConditionReason.STATES_MERGED,
            f"merged {last.loser} (epoch {last.loser_epoch}) into {last.winner} "
            f"(epoch {last.winner_epoch})",
        )
    return Verdict(FALSE, ConditionReason.STALE_ACTIVE_DEMOTED,
                   "the stale active stepped down; nothing was merged")


def _previous_condition(previous: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in previous.get("conditions") or [] if c.get("type") == kind), None)


def _condition_status(previous: Mapping[str, Any], kind: str) -> str | None:
    earlier = _previous_condition(previous, kind)
    return earlier.get("status") if earlier else None


def _condition(
    kind: ConditionType,
    verdict: Verdict,
    previous: Mapping[str, Any],
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    earlier = _previous_condition(previous, kind)
    unchanged = earlier is not None and earlier.get("status") == verdict.status
    return {
        "type": str(kind),
        "status": verdict.status,
        "reason": str(verdict.reason),
        "message": verdict.message,
        "observedGeneration": generation,
        "lastTransitionTime": earlier["lastTransitionTime"]
        if unchanged and earlier and earlier.get("lastTransitionTime")
        else format_time(now),
    }


def _phase(facts: Assessment, verdicts: Mapping[ConditionType, Verdict], had_active: bool) -> str:
    progressing = verdicts[ConditionType.PROGRESSING].status == TRUE
    if facts.hibernating:
        return PHASE_UPDATING if progressing else PHASE_HIBERNATED
    if facts.state_lost and not facts.not_runnable:
        return PHASE_STATE_LOST
    if facts.active is None:
        if facts.not_runnable:
            return PHASE_FAILED
        if not had_active:
            return PHASE_PENDING
        return PHASE_UPDATING if progressing else PHASE_FAILED
    if verdicts[ConditionType.DEGRADED].status == TRUE or facts.split_brain:
        return PHASE_DEGRADED
    return PHASE_UPDATING if progressing else PHASE_RUNNING


# -- events from status transitions -------------------------------------------------------------


def events_between(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[RecordEvent]:
    """The Events that the move from `previous` to `current` status deserves, in a fixed order:
    the active role, split brain, merges, then problems that need the user (a lost state: one
    StateLost per loss, when Available turns to StateLost)."""
    events: list[RecordEvent] = []
    before, after = previous.get("activePod"), current.get("activePod")
    epoch = current.get("epoch")
    if after and after != before:
        reason = current.get("lastFailoverReason")
        if not previous.get("epoch") and not previous.get("lastFailoverTime"):
            events.append(RecordEvent(EventReason.ACTIVE_ELECTED,
                                      f"{after} is the first active (epoch {epoch})"))
        elif reason in PLANNED_HANDOVERS and current.get("lastFailoverTime") != previous.get(
            "lastFailoverTime"
        ):
            events.append(RecordEvent(EventReason.SWITCHOVER_COMPLETED,
                                      f"{after} is now active (epoch {epoch}, {reason})"))
        else:
            events.append(RecordEvent(
                EventReason.FAILOVER_COMPLETED,
                f"{after} is now active (epoch {epoch}) after {before or 'the active'} was lost"
                + (f" ({reason})" if reason else ""),
            ))
    split_before = _condition_status(previous, ConditionType.SPLIT_BRAIN)
    split_now = _previous_condition(current, ConditionType.SPLIT_BRAIN)
    if split_now and split_now["status"] == TRUE and split_before != TRUE:
        events.append(RecordEvent(EventReason.SPLIT_BRAIN_DETECTED, split_now["message"],
                                  EventType.WARNING))
    if int(current.get("merges") or 0) > int(previous.get("merges") or 0) and split_now:
        events.append(RecordEvent(EventReason.STATES_MERGED, split_now["message"]))
    available_before = _previous_condition(previous, ConditionType.AVAILABLE) or {}
    available_now = _previous_condition(current, ConditionType.AVAILABLE) or {}
    if available_now.get("reason") == ConditionReason.STATE_LOST and (
        available_before.get("reason") != ConditionReason.STATE_LOST
    ):
        # Available, not Ready: Ready passes through Reconciling at every generation change,
        # which would repeat the Event for one loss.
        events.append(RecordEvent(EventReason.STATE_LOST, available_now["message"],
                                  EventType.WARNING))
    progressing_before = _previous_condition(previous, ConditionType.PROGRESSING) or {}
    progressing_now = _previous_condition(current, ConditionType.PROGRESSING) or {}
    events += _maintenance_events(progressing_before.get("reason"), progressing_now.get("reason"),
                                  previous.get("phase"), current.get("phase"))
    events += _sync_degraded_events(previous, current)
    failsafe_before = previous.get("failsafe") or {}
    failsafe_now = current.get("failsafe") or {}
    if failsafe_now.get("episodes") and (
        failsafe_now.get("pod") != failsafe_before.get("pod")
        or failsafe_now["episodes"] > int(failsafe_before.get("episodes") or 0)
    ):
        events.append(RecordEvent(EventReason.SERVED_IN_FAILSAFE, _failsafe_message(failsafe_now),
                                  EventType.WARNING))
    volume_before = previous.get("volumeFailure") or {}
    volume_now = current.get("volumeFailure") or {}
    if volume_now and (volume_now.get("pod"), volume_now.get("restarts")) != (
        volume_before.get("pod"), volume_before.get("restarts")
    ):
        events.append(RecordEvent(EventReason.VOLUME_FAILED, _volume_message(volume_now),
                                  EventType.WARNING))
    degraded_before = _previous_condition(previous, ConditionType.DEGRADED) or {}
    degraded_now = _previous_condition(current, ConditionType.DEGRADED) or {}
    if degraded_now.get("status") == TRUE and (
        degraded_now.get("reason"), degraded_now.get("message")
    ) != (degraded_before.get("reason"), degraded_before.get("message")):
        if degraded_now["reason"] == ConditionReason.MERGE_FAILED:
            events.append(RecordEvent(EventReason.MERGE_FAILED, degraded_now["message"],
                                      EventType.WARNING))
        elif degraded_now["reason"] == ConditionReason.DOWNGRADE_REFUSED:
            events.append(RecordEvent(EventReason.DOWNGRADE_REFUSED, degraded_now["message"],
                                      EventType.WARNING))
        elif degraded_now["reason"] == ConditionReason.HIBERNATION_REFUSED:
            events.append(RecordEvent(EventReason.HIBERNATION_REFUSED, degraded_now["message"],
                                      EventType.WARNING))
        elif degraded_now["reason"] == ConditionReason.INVALID_SPEC:
            events.append(RecordEvent(EventReason.INVALID_SPEC, degraded_now["message"],
                                      EventType.WARNING))
        elif degraded_now["reason"] == ConditionReason.SERVER_NOT_RUNNABLE and (
            degraded_before.get("reason") != ConditionReason.SERVER_NOT_RUNNABLE
        ):
            events.append(RecordEvent(EventReason.INVALID_SERVER, degraded_now["message"],
                                      EventType.WARNING))
    return events


def _sync_degraded_events(
    previous: Mapping[str, Any], current: Mapping[str, Any]
) -> list[RecordEvent]:
    """SyncDegraded when a pod starts answering without standby acknowledgements (as the
    operator sees it: an episode between two passes goes unseen), SyncRestored when it no
    longer does (its standbys caught up, or it stopped being active: merged or demoted)."""
    def degraded(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        return {
            str(entry.get("pod")): entry for entry in status.get("syncDegraded") or []
            if isinstance(entry, Mapping)
        }

    before, after = degraded(previous), degraded(current)
    events = []
    for pod in sorted(after.keys() - before.keys()):
        events.append(RecordEvent(
            EventReason.SYNC_DEGRADED,
            f"{pod} answers calls without the acknowledgements of its in-sync standbys "
            f"(partitionPolicy Available): those writes live only on its side until its "
            "standbys catch up or it is merged",
            EventType.WARNING,
        ))
    for pod in sorted(before.keys() - after.keys()):
        if current.get("activePod") == pod:
            message = f"{pod} is acknowledged by its in-sync standbys again"
        else:
            message = (f"{pod} no longer answers without standby acknowledgements (it is no "
                       "longer active: merged, demoted or stopped)")
        events.append(RecordEvent(EventReason.SYNC_RESTORED, message))
    return events


def _maintenance_events(
    reason_before: str | None, reason_now: str | None, phase_before: str | None,
    phase_now: str | None,
) -> list[RecordEvent]:
    """Pause and hibernation, once per transition."""
    events = []
    paused = ConditionReason.RECONCILE_PAUSED
    if reason_now == paused and reason_before != paused:
        events.append(RecordEvent(EventReason.RECONCILE_PAUSED, PAUSED_MESSAGE))
    elif reason_before == paused and reason_now != paused:
        events.append(RecordEvent(EventReason.RECONCILE_RESUMED,
                                  "reconciliation resumed: the annotation was removed"))
    if phase_now == PHASE_HIBERNATED and phase_before != PHASE_HIBERNATED:
        events.append(RecordEvent(EventReason.HIBERNATED, HIBERNATED_MESSAGE))
    hibernation = (ConditionReason.HIBERNATING, ConditionReason.HIBERNATED)
    if reason_before in hibernation and reason_now not in hibernation:
        events.append(RecordEvent(EventReason.RESUMED_FROM_HIBERNATION,
                                  "hibernation ended: creating the pods, which recover their "
                                  "state from the claims"))
    return events


def _volume_message(record: Mapping[str, Any]) -> str:
    message = str(record.get("message") or "").strip().splitlines()
    return (f"{record.get('pod')} stopped because its volume refused a write (it handed over "
            f"and restarts from what its disk holds)" + (f": {message[-1]}" if message else ""))


def _failsafe_message(record: Mapping[str, Any]) -> str:
    pod = record.get("pod")
    if "servingSeconds" in record:
        return (f"{pod} serves in failsafe: its Lease not renewed for {record['servingSeconds']}s "
                "(the API server out of its reach); every pod that could take over promised not "
                "to (docs/partitions.md, Failsafe)")
    return (f"{pod} served in failsafe for {record.get('lastSeconds')}s while the API server "
            f"was out of its reach (episode {record.get('episodes')}); every pod that could take "
            "over had promised not to")
