"""`plan(observed) -> actions`: scenario tables for every rule, and properties over random
clusters (never two disruptive actions, never the live active deleted, deterministic).

The helpers at the top build observations the way the shell would; test_status.py reuses them.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gencluster_operator import desired, names
from gencluster_operator.actions import (
    DISRUPTIVE,
    Action,
    ClearLease,
    CreatePod,
    DeletePod,
    Demote,
    MergeStates,
    RecordEvent,
    RemoveAnnotation,
    Switchover,
)
from gencluster_operator.assessment import assess, reconnected
from gencluster_operator.events import EventReason, EventType, FailoverReason
from gencluster_operator.observed import (
    RUNNING,
    TERMINATED,
    UNKNOWN,
    WAITING,
    ContainerState,
    Handover,
    LeaseState,
    MergeOutcome,
    Observed,
    ObservedPod,
    RuntimeStatus,
    lease_state,
    observed_pods,
)
from gencluster_operator.plan import merge_backoff, plan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=10)
ACQUIRED = NOW - timedelta(minutes=5)
NAME = "id"


def resource(
    replicas: int = 3,
    *,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ClusteredServer as the API returns it (defaults applied by the CRD)."""
    body: dict[str, Any] = {
        "server": "id_server:IdServer",
        "image": "ghcr.io/gencluster/gencluster:0.1.0",
        "replicas": replicas,
        "args": {},
        "port": 50051,
        "replication": {"mode": "Sync", "minSyncStandbys": 1 if replicas > 1 else 0},
        "partitionPolicy": "Fenced",
        "lease": {"durationSeconds": 15, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2},
    }
    body.update(spec)
    metadata: dict[str, Any] = {
        "name": NAME, "namespace": "default", "uid": "cr-uid", "generation": generation,
    }
    if annotations:
        metadata["annotations"] = annotations
    result: dict[str, Any] = {
        "apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": metadata, "spec": body,
    }
    if status is not None:
        result["status"] = status
    return result


CURRENT = desired.template_hash(resource())
OLD = "0ld0ld0ld0ld0ld0"


def pod(
    ordinal: int,
    *,
    role: str | None = "standby",
    epoch: int = 1,
    applied: int = 100,
    ready: bool = True,
    state: str = RUNNING,
    phase: str = "Running",
    deleting: bool = False,
    template_hash: str = CURRENT,
    started_at: datetime | None = STARTED,
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | None = None,
    reachable: bool = True,
) -> ObservedPod:
    """A pod of cluster `id`; `role=None` or `reachable=False` means no runtime report."""
    runtime = RuntimeStatus(role, epoch, applied) if role is not None and reachable else None
    return ObservedPod(
        name=names.pod_name(NAME, ordinal),
        uid=f"uid-{ordinal}",
        ordinal=ordinal,
        phase=phase,
        ready=ready and state == RUNNING,
        deleting=deleting,
        template_hash=template_hash,
        role_label=role,
        container=ContainerState(
            state=state,
            started_at=started_at if state == RUNNING else None,
            reason=reason,
            exit_code=exit_code,
            message=message,
        ),
        runtime=runtime,
    )


def lease(
    holder: str = "id-0",
    *,
    transitions: int = 1,
    in_sync: tuple[str, ...] | None = ("id-1", "id-2"),
    acquired: datetime | None = ACQUIRED,
) -> LeaseState:
    return LeaseState(
        holder=holder, transitions=transitions, duration_seconds=15, acquire_time=acquired,
        renew_time=NOW, in_sync=in_sync, resource_version="42",
    )


def healthy_pods(replicas: int = 3, active: int = 0, template_hash: str = CURRENT) -> list[
    ObservedPod
]:
    return [
        pod(o, role="active" if o == active else "standby", template_hash=template_hash)
        for o in range(replicas)
    ]


def observe(
    res: dict[str, Any] | None = None,
    pods: list[ObservedPod] | None = None,
    lease_state: LeaseState | None = None,
    **extra: Any,
) -> Observed:
    res = resource() if res is None else res
    pods = healthy_pods() if pods is None else pods
    extra.setdefault("now", NOW)
    return Observed(res, tuple(pods), lease_state, **extra)


def healthy(**extra: Any) -> Observed:
    return observe(resource(), healthy_pods(), lease(), **extra)


def disruptive(actions: list[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, DISRUPTIVE)]


def reasons(actions: list[Action]) -> list[EventReason]:
    return [a.reason for a in actions if isinstance(a, RecordEvent)]


def replaced(pods: list[ObservedPod], new: ObservedPod) -> list[ObservedPod]:
    return [new if p.name == new.name else p for p in pods]


# -- steady state and creation -----------------------------------------------------------------


def test_healthy_cluster_needs_nothing() -> None:
    assert plan(healthy()) == []


def test_new_cluster_creates_every_pod_lowest_ordinal_first() -> None:
    actions = plan(observe(resource(), [], None))
    assert actions[:3] == [CreatePod("id-0", 0), CreatePod("id-1", 1), CreatePod("id-2", 2)]
    assert reasons(actions) == [EventReason.SCALED_UP]


def test_scale_up_creates_only_the_missing_ordinals() -> None:
    res = resource(5, generation=2, status={"replicas": 3, "observedGeneration": 1})
    actions = plan(observe(res, healthy_pods(), lease()))
    assert [a for a in actions if isinstance(a, CreatePod)] == [
        CreatePod("id-3", 3), CreatePod("id-4", 4),
    ]
    assert reasons(actions) == [EventReason.SCALED_UP]


def test_lost_standby_is_created_again_and_reported_as_replaced() -> None:
    res = resource(status={"replicas": 3, "observedGeneration": 1})
    pods = [p for p in healthy_pods() if p.ordinal != 1]
    actions = plan(observe(res, pods, lease()))
    assert actions[0] == CreatePod("id-1", 1)
    assert reasons(actions) == [EventReason.POD_REPLACED]


def test_lowest_free_ordinal_fills_a_gap() -> None:
    pods = [pod(0, role="active"), pod(2)]
    assert [a for a in plan(observe(resource(), pods, lease())) if isinstance(a, CreatePod)] == [
        CreatePod("id-1", 1)
    ]


def test_a_terminating_pod_keeps_its_name_until_it_is_gone() -> None:
    pods = replaced(healthy_pods(), pod(2, deleting=True))
    assert not any(isinstance(a, CreatePod) for a in plan(observe(resource(), pods, lease())))


def test_deleted_cluster_gets_no_actions() -> None:
    res = resource()
    res["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    assert plan(observe(res, [], None)) == []


# -- failover assist ------------------------------------------------------------------------------

FAILOVER_CASES = [
    pytest.param(None, FailoverReason.ACTIVE_POD_DELETED, id="active pod gone"),
    pytest.param(
        pod(0, role="active", state=TERMINATED, exit_code=137),
        FailoverReason.ACTIVE_CONTAINER_TERMINATED, id="container terminated",
    ),
    pytest.param(
        pod(0, role="active", state=WAITING, reason="CrashLoopBackOff", exit_code=1),
        FailoverReason.ACTIVE_CONTAINER_TERMINATED, id="container waiting to restart",
    ),
    pytest.param(
        pod(0, role="standby", started_at=ACQUIRED + timedelta(seconds=3)),
        FailoverReason.ACTIVE_CONTAINER_TERMINATED, id="container restarted after acquiring",
    ),
    pytest.param(
        pod(0, role="active", phase="Failed", state=TERMINATED),
        FailoverReason.ACTIVE_CONTAINER_TERMINATED, id="pod failed",
    ),
    pytest.param(
        pod(0, role="active", state=TERMINATED, deleting=True),
        FailoverReason.ACTIVE_POD_DELETED, id="pod deleting, container gone",
    ),
]


@pytest.mark.parametrize(("holder_pod", "reason"), FAILOVER_CASES)
def test_dead_holder_gets_its_lease_cleared_at_once(
    holder_pod: ObservedPod | None, reason: FailoverReason
) -> None:
    pods = healthy_pods()[1:] + ([holder_pod] if holder_pod else [])
    actions = plan(observe(resource(), pods, lease()))
    assert disruptive(actions) == [ClearLease("id-0", "42", reason)]
    assert reasons(actions)[0] == EventReason.FAILOVER_STARTED


def test_cleared_lease_is_not_cleared_again() -> None:
    pods = healthy_pods()[1:]
    first = plan(observe(resource(), pods, lease()))
    assert any(isinstance(a, ClearLease) for a in first)
    after = plan(observe(resource(), pods, lease(holder="")))
    assert not any(isinstance(a, ClearLease) for a in after)


LIVE_HOLDERS = [
    pytest.param(pod(0, role="active"), id="healthy"),
    pytest.param(pod(0, role="active", ready=False), id="not ready"),
    pytest.param(pod(0, role="active", reachable=False), id="admin RPC unreachable"),
    pytest.param(pod(0, role="active", deleting=True), id="graceful stop in progress"),
    pytest.param(pod(0, role="active", started_at=ACQUIRED), id="started in the same second"),
]


@pytest.mark.parametrize("holder_pod", LIVE_HOLDERS)
def test_lease_of_a_live_holder_is_never_cleared(holder_pod: ObservedPod) -> None:
    pods = replaced(healthy_pods(), holder_pod)
    assert not any(isinstance(a, ClearLease) for a in plan(observe(resource(), pods, lease())))


def test_failover_assist_comes_before_any_other_work() -> None:
    res = resource(2, annotations={names.SWITCHOVER_TO_ANNOTATION: "id-1"})
    pods = [pod(1), pod(2, template_hash=OLD)]
    actions = plan(observe(res, pods, lease()))
    assert disruptive(actions) == [ClearLease("id-0", "42", FailoverReason.ACTIVE_POD_DELETED)]
    assert CreatePod("id-0", 0) in actions


# -- scale down ---------------------------------------------------------------------------------


def one_replica_hash() -> str:
    """The template of `resource(1)` (its minSyncStandbys is 0): the pods of a pure scale
    down to one, with nothing else to update."""
    return desired.template_hash(resource(1))


def test_scale_down_with_the_active_at_the_top_switches_over_before_any_delete() -> None:
    pods = healthy_pods(active=2, template_hash=one_replica_hash())
    actions = plan(observe(resource(1), pods, lease("id-2", in_sync=("id-0", "id-1"))))
    assert disruptive(actions) == [Switchover("id-2", "id-0", FailoverReason.SCALED_DOWN)]
    assert reasons(actions) == [EventReason.SWITCHOVER_STARTED]


def test_scale_down_removes_the_highest_standby_first_one_at_a_time() -> None:
    actions = plan(observe(resource(1), healthy_pods(template_hash=one_replica_hash()), lease()))
    assert disruptive(actions) == [DeletePod("id-2", "uid-2", "scaling down")]
    assert reasons(actions) == [EventReason.SCALED_DOWN]


def test_scale_down_waits_for_the_previous_pod_to_terminate() -> None:
    pods = replaced(healthy_pods(), pod(2, deleting=True))
    assert disruptive(plan(observe(resource(1), pods, lease()))) == []


def test_scale_down_waits_while_no_remaining_standby_can_take_over() -> None:
    pods = healthy_pods(active=2)
    actions = plan(observe(resource(2), pods, lease("id-2", in_sync=())))
    assert disruptive(actions) == []


# -- switchover on request ----------------------------------------------------------------------


def switchover_to(target: str, **status: Any) -> dict[str, Any]:
    return resource(annotations={names.SWITCHOVER_TO_ANNOTATION: target}, status=status or None)


def test_switchover_request_to_an_in_sync_standby() -> None:
    actions = plan(observe(switchover_to("id-2"), healthy_pods(), lease()))
    # The Event before the call: a call that fails after the Lease moved must not lose it.
    assert actions == [
        RecordEvent(EventReason.SWITCHOVER_STARTED,
                    "handing the active role from id-0 to id-2 (requested)"),
        Switchover("id-0", "id-2", FailoverReason.SWITCHOVER),
    ]


def test_switchover_annotation_is_removed_once_the_target_is_active() -> None:
    pods = healthy_pods(active=2)
    actions = plan(observe(switchover_to("id-2"), pods, lease("id-2", transitions=2,
                                                             in_sync=("id-0", "id-1"))))
    assert actions == [RemoveAnnotation(names.SWITCHOVER_TO_ANNOTATION)]


REJECTIONS = [
    pytest.param("id-7", healthy_pods(), lease(), "not a pod of", id="unknown pod"),
    pytest.param("id-2", healthy_pods(), lease(in_sync=("id-1",)), "not in the in-sync set",
                 id="not in sync"),
    pytest.param("id-2", replaced(healthy_pods(), pod(2, ready=False)), lease(), "not Ready",
                 id="not ready"),
    pytest.param("id-2", replaced(healthy_pods(), pod(2, deleting=True)), lease(),
                 "being removed", id="terminating"),
    pytest.param("id-1", healthy_pods()[1:], lease(holder=""), "no active pod",
                 id="no active"),
]


@pytest.mark.parametrize(("target", "pods", "lease_state", "why"), REJECTIONS)
def test_invalid_switchover_request_is_rejected_with_an_event_and_removed(
    target: str, pods: list[ObservedPod], lease_state: LeaseState, why: str
) -> None:
    actions = plan(observe(switchover_to(target), pods, lease_state))
    assert not any(isinstance(a, Switchover) for a in actions)
    rejected = [a for a in actions if isinstance(a, RecordEvent)
                and a.reason == EventReason.SWITCHOVER_REJECTED]
    assert len(rejected) == 1 and why in rejected[0].message
    assert rejected[0].type == EventType.WARNING
    assert RemoveAnnotation(names.SWITCHOVER_TO_ANNOTATION) in actions


def test_pending_handover_is_not_requested_twice_until_it_times_out() -> None:
    started = Handover("id-0", "id-2", FailoverReason.SWITCHOVER, NOW - timedelta(seconds=3))
    waiting = observe(switchover_to("id-2"), healthy_pods(), lease(), handover=started)
    assert plan(waiting) == []
    stale = replace(started, started_at=NOW - timedelta(seconds=16))
    retried = observe(switchover_to("id-2"), healthy_pods(), lease(), handover=stale)
    assert disruptive(plan(retried)) == [Switchover("id-0", "id-2", FailoverReason.SWITCHOVER)]


# -- failed pods ------------------------------------------------------------------------------


def test_failed_standby_is_deleted_to_be_created_again() -> None:
    pods = replaced(healthy_pods(), pod(1, phase="Failed", state=TERMINATED))
    actions = plan(observe(resource(), pods, lease()))
    assert disruptive(actions) == [DeletePod("id-1", "uid-1", "pod phase Failed")]
    assert reasons(actions) == [EventReason.POD_REPLACED]


def test_crash_looping_standby_is_left_to_the_kubelet() -> None:
    looping = pod(1, state=WAITING, reason="CrashLoopBackOff", exit_code=1)
    assert plan(observe(resource(), replaced(healthy_pods(), looping), lease())) == []


# -- rolling update -------------------------------------------------------------------------------


def test_rolling_update_replaces_the_highest_outdated_standby_first() -> None:
    actions = plan(observe(resource(), healthy_pods(template_hash=OLD), lease()))
    assert disruptive(actions) == [DeletePod("id-2", "uid-2", "rolling update")]
    assert reasons(actions) == [EventReason.ROLLING_UPDATE]


def test_rolling_update_replaces_an_unhealthy_outdated_standby_before_a_healthy_one() -> None:
    pods = replaced(healthy_pods(template_hash=OLD), pod(1, ready=False, template_hash=OLD))
    assert disruptive(plan(observe(resource(), pods, lease()))) == [
        DeletePod("id-1", "uid-1", "rolling update")
    ]


def test_rolling_update_waits_until_the_replacement_is_in_sync() -> None:
    pods = [pod(0, role="active", template_hash=OLD), pod(1, template_hash=OLD), pod(2)]
    assert disruptive(plan(observe(resource(), pods, lease(in_sync=("id-1",))))) == []
    assert disruptive(plan(observe(resource(), pods, lease()))) == [
        DeletePod("id-1", "uid-1", "rolling update")
    ]


def test_rolling_update_waits_while_a_replacement_is_being_created() -> None:
    pods = [pod(0, role="active", template_hash=OLD), pod(1, template_hash=OLD)]
    actions = plan(observe(resource(), pods, lease(in_sync=("id-1",))))
    assert disruptive(actions) == []
    assert CreatePod("id-2", 2) in actions


def test_rolling_update_switches_over_to_an_updated_standby_before_the_old_active_goes() -> None:
    pods = [pod(0, role="active", template_hash=OLD), pod(1, applied=99), pod(2)]
    actions = plan(observe(resource(), pods, lease()))
    assert disruptive(actions) == [Switchover("id-0", "id-2", FailoverReason.ROLLING_UPDATE)]


def test_rolling_update_replaces_the_old_active_once_it_is_a_standby() -> None:
    pods = [pod(0, template_hash=OLD), pod(1), pod(2, role="active")]
    taken = lease("id-2", transitions=2, in_sync=("id-0", "id-1"))
    actions = plan(observe(resource(), pods, taken))
    assert disruptive(actions) == [DeletePod("id-0", "uid-0", "rolling update")]


def test_rolling_update_of_a_single_replica_replaces_it_with_a_warning() -> None:
    res = resource(1)
    pods = [pod(0, role="active", template_hash=OLD)]
    actions = plan(observe(res, pods, lease(in_sync=())))
    assert disruptive(actions) == [DeletePod("id-0", "uid-0", "rolling update")]
    events = [a for a in actions if isinstance(a, RecordEvent)]
    assert events[0].type == EventType.WARNING and "state is lost" in events[0].message


def test_rolling_update_never_starts_without_an_active() -> None:
    pods = [pod(1, template_hash=OLD), pod(2, template_hash=OLD)]
    actions = plan(observe(resource(), pods, lease(holder="")))
    assert disruptive(actions) == []


def test_scale_down_comes_before_the_rolling_update() -> None:
    actions = plan(observe(resource(2), healthy_pods(template_hash=OLD), lease()))
    assert disruptive(actions) == [DeletePod("id-2", "uid-2", "scaling down")]


# -- split brain --------------------------------------------------------------------------------

SPLIT_RECORDED = {"conditions": [{"type": "SplitBrain", "status": "True",
                                  "reason": "SplitBrainDetected", "message": "",
                                  "lastTransitionTime": "2026-11-25T11:59:00Z"}]}


def sees_lease(
    observed_pod: ObservedPod, holder: str, epoch: int, age: float | None = 0.3
) -> ObservedPod:
    """`observed_pod` reporting that it read the Lease (held by `holder` at `epoch`) `age`
    seconds ago (None: it never did)."""
    assert observed_pod.runtime is not None
    runtime = replace(observed_pod.runtime, lease_holder=holder, lease_epoch=epoch,
                      lease_read_age_seconds=age)
    return replace(observed_pod, runtime=runtime)


def split_pods(loser_sees: tuple[str, int, float | None] = ("id-0", 2, 0.3)) -> list[ObservedPod]:
    """id-2 was cut off at epoch 1 and kept serving; id-0 won the Lease at epoch 2. By default
    the partition has healed: id-2 has just read the Lease (held by id-0 at epoch 2)."""
    return [pod(0, role="active", epoch=2, applied=50), pod(1, epoch=2),
            sees_lease(pod(2, role="active", epoch=1, applied=80), *loser_sees)]


def test_split_brain_is_recorded_before_anything_is_merged() -> None:
    res = resource(partitionPolicy="Available")
    assert disruptive(plan(observe(res, split_pods(), lease(transitions=2)))) == []


def test_split_brain_in_available_mode_merges_the_lower_epoch_into_the_higher() -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    actions = plan(observe(res, split_pods(), lease(transitions=2)))
    assert disruptive(actions) == [MergeStates("id-0", "id-2", 2, 1)]


@pytest.mark.parametrize(
    ("loser_sees", "why"),
    [
        (("id-2", 1, 0.3), "its last read was before the other side took the Lease"),
        (("id-0", 2, 12.0), "its last successful read is old: still cut off"),
        (("id-0", 2, 4.1), "just over two retry periods (2 s each)"),
        (("id-0", 2, None), "it never read the Lease (or is too old to report it)"),
        (("", 2, 0.3), "the Lease is free: nobody to merge into on the API server's side"),
        (("id-1", 0, 0.3), "a Lease epoch below the loser's own is no evidence"),
    ],
)
def test_available_merge_waits_until_the_loser_reaches_the_api_server_again(
    loser_sees: tuple[str, int, float | None], why: str
) -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    observed = observe(res, split_pods(loser_sees), lease(transitions=2))
    assert disruptive(plan(observed)) == [], why
    assert not reconnected(observed.pod("id-2"), 2), why  # type: ignore[arg-type]


def test_available_merge_follows_once_the_loser_read_the_winners_lease_recently() -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    fresh = observe(res, split_pods(("id-0", 2, 3.9)), lease(transitions=2))
    assert reconnected(fresh.pod("id-2"), 2)  # type: ignore[arg-type]
    assert disruptive(plan(fresh)) == [MergeStates("id-0", "id-2", 2, 1)]


def test_fenced_mode_demotes_without_waiting_for_the_loser_to_reconnect() -> None:
    """A Fenced loser stopped serving at its renew deadline: nothing to wait for."""
    res = resource(status=SPLIT_RECORDED)
    observed = observe(res, split_pods(("id-2", 1, 30.0)), lease(transitions=2))
    assert disruptive(plan(observed)) == [Demote("id-2", 1, "id-0")]


def test_split_brain_in_fenced_mode_demotes_the_stale_active() -> None:
    res = resource(status=SPLIT_RECORDED)
    assert disruptive(plan(observe(res, split_pods(), lease(transitions=2)))) == [
        Demote("id-2", 1, "id-0")
    ]


def test_split_brain_tie_break_at_equal_epochs_favours_the_lease_holder() -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    pods = [pod(0, role="active", epoch=3, applied=10), pod(1),
            pod(2, role="active", epoch=3, applied=90)]
    pods[2] = sees_lease(pods[2], "id-0", 3)  # id-2 reads the Lease again: reconnected
    actions = plan(observe(res, pods, lease("id-0", transitions=3)))
    assert disruptive(actions) == [MergeStates("id-0", "id-2", 3, 3)]


def test_failed_merge_is_retried_with_backoff() -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    failed = MergeOutcome("id-0", "id-2", 2, 1, succeeded=False,
                          finished_at=NOW - timedelta(seconds=3), message="boom",
                          consecutive_failures=2)
    waiting = observe(res, split_pods(), lease(transitions=2), last_merge=failed)
    assert disruptive(plan(waiting)) == []
    later = replace(failed, finished_at=NOW - timedelta(seconds=5))
    retry = observe(res, split_pods(), lease(transitions=2), last_merge=later)
    assert disruptive(plan(retry)) == [MergeStates("id-0", "id-2", 2, 1)]


def test_merge_backoff_doubles_up_to_five_minutes() -> None:
    assert [merge_backoff(n, 2).total_seconds() for n in range(5)] == [0, 2, 4, 8, 16]
    assert merge_backoff(40, 2) == timedelta(minutes=5)


def test_split_brain_freezes_scaling_and_rolling_updates() -> None:
    res = resource(1, partitionPolicy="Available")
    pods = [replace(p, template_hash=OLD) for p in split_pods()]
    assert disruptive(plan(observe(res, pods, lease(transitions=2)))) == []


def test_source_of_a_pending_graceful_handover_is_not_a_split_brain() -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    pods = [pod(0, role="active", epoch=1), pod(1), pod(2, role="active", epoch=2)]
    handover = Handover("id-0", "id-2", FailoverReason.SWITCHOVER, NOW - timedelta(seconds=1))
    actions = plan(observe(res, pods, lease("id-0"), handover=handover))
    assert not any(isinstance(a, MergeStates | Demote) for a in actions)


# -- properties ---------------------------------------------------------------------------------


@st.composite
def clusters(draw: st.DrawFn) -> Observed:
    replicas = draw(st.integers(1, 5))
    policy = draw(st.sampled_from(["Fenced", "Available"]))
    ordinals = draw(st.sets(st.integers(0, 6), max_size=7))
    pods = []
    for ordinal in sorted(ordinals):
        state = draw(st.sampled_from([RUNNING, RUNNING, RUNNING, WAITING, TERMINATED]))
        pods.append(pod(
            ordinal,
            role=draw(st.sampled_from(["active", "standby", None])),
            epoch=draw(st.integers(1, 4)),
            applied=draw(st.integers(0, 50)),
            ready=draw(st.booleans()),
            state=state,
            phase=draw(st.sampled_from(["Running", "Running", "Failed", "Pending"])),
            deleting=draw(st.booleans()) and draw(st.booleans()),
            template_hash=draw(st.sampled_from([CURRENT, OLD])),
            started_at=draw(st.sampled_from([STARTED, ACQUIRED + timedelta(seconds=1)])),
            exit_code=draw(st.sampled_from([None, 1, 78])),
        ))
    names_ = [names.pod_name(NAME, o) for o in range(7)]
    holder = draw(st.sampled_from(["", *names_]))
    in_sync = tuple(draw(st.sets(st.sampled_from(names_), max_size=4)))
    annotations = (
        {names.SWITCHOVER_TO_ANNOTATION: draw(st.sampled_from(names_))}
        if draw(st.booleans()) else None
    )
    status = SPLIT_RECORDED if draw(st.booleans()) else None
    res = resource(replicas, annotations=annotations, status=status, partitionPolicy=policy)
    return observe(res, pods, lease(holder, transitions=draw(st.integers(0, 4)), in_sync=in_sync))


def live_active(observed: Observed) -> str | None:
    """The Lease holder while its process runs and has not restarted since acquiring."""
    lease_state = observed.lease
    holder = observed.pod(lease_state.holder) if lease_state and lease_state.holder else None
    if holder is None or not holder.running:
        return None
    if holder.container.started_at and lease_state and lease_state.acquire_time and (
        holder.container.started_at > lease_state.acquire_time
    ):
        return None
    return holder.name


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(clusters())
def test_at_most_one_disruptive_action(observed: Observed) -> None:
    assert len(disruptive(plan(observed))) <= 1


@PROPERTY_SETTINGS
@given(clusters())
def test_never_deletes_the_live_active_nor_clears_its_lease(observed: Observed) -> None:
    active = live_active(observed)
    replicas = int(observed.resource["spec"]["replicas"])
    for action in plan(observed):
        if isinstance(action, DeletePod) and replicas > 1:
            target = observed.pod(action.pod)
            assert action.pod != active
            assert target is not None and not target.reports_active
        if isinstance(action, ClearLease):
            assert action.holder != active


@PROPERTY_SETTINGS
@given(clusters())
def test_never_creates_a_pod_that_exists_or_beyond_replicas(observed: Observed) -> None:
    existing = {p.name for p in observed.pods}
    replicas = int(observed.resource["spec"]["replicas"])
    for action in plan(observed):
        if isinstance(action, CreatePod):
            assert action.pod not in existing and action.ordinal < replicas


@PROPERTY_SETTINGS
@given(clusters())
def test_switchover_targets_only_ready_in_sync_standbys(observed: Observed) -> None:
    in_sync = set(observed.lease.in_sync or ()) if observed.lease else set()
    for action in plan(observed):
        if isinstance(action, Switchover):
            target = observed.pod(action.to_pod)
            assert target is not None and target.ready and target.running
            assert action.to_pod in in_sync and action.from_pod == live_active(observed)


@PROPERTY_SETTINGS
@given(clusters())
def test_plan_is_deterministic(observed: Observed) -> None:
    assert plan(observed) == plan(observed)


def test_no_scale_down_while_no_active_serves() -> None:
    pods = [pod(1, template_hash=OLD), pod(2)]
    actions = plan(observe(resource(2), pods, lease(holder="", in_sync=("id-2",))))
    assert disruptive(actions) == []
    assert CreatePod("id-0", 0) in actions


def test_rolling_update_waits_for_scale_down_to_finish() -> None:
    pods = healthy_pods(active=2, template_hash=OLD)
    actions = plan(observe(resource(2), pods, lease("id-2", in_sync=())))
    assert disruptive(actions) == []


# -- whole sequences: plan, apply, observe again -------------------------------------------------


class Simulation:
    """A toy cluster that performs plan's actions the way the shell and the runtime would:
    a created pod joins as a standby and is in sync one pass later; a switchover moves the
    Lease at once; a deleted pod is gone on the next pass."""

    def __init__(self, res: dict[str, Any], pods: list[ObservedPod], lease_state: LeaseState):
        self.resource = res
        self.pods = {p.name: p for p in pods}
        self.lease = lease_state
        self.history: list[Action] = []

    def observed(self) -> Observed:
        return observe(self.resource, sorted(self.pods.values(), key=lambda p: p.ordinal or 0),
                       self.lease)

    def step(self) -> list[Action]:
        actions = plan(self.observed())
        self.history.extend(actions)
        joined = [p.name for p in self.pods.values() if not p.ready]
        for name in joined:  # last pass's new pods caught up
            self.pods[name] = replace(self.pods[name], ready=True)
        members = set(self.lease.in_sync or ()) | set(joined)
        for action in actions:
            if isinstance(action, CreatePod):
                self.pods[action.pod] = replace(
                    pod(action.ordinal, template_hash=desired.template_hash(self.resource)),
                    ready=False,
                )
            elif isinstance(action, DeletePod):
                assert action.pod != self.lease.holder or len(self.pods) == 1
                del self.pods[action.pod]
                members.discard(action.pod)
            elif isinstance(action, Switchover):
                assert action.from_pod == self.lease.holder
                members = (members | {action.from_pod}) - {action.to_pod}
                for name, role in ((action.from_pod, "standby"), (action.to_pod, "active")):
                    self.pods[name] = replace(self.pods[name], runtime=RuntimeStatus(
                        role, self.lease.transitions + 1, 100))
                self.lease = replace(self.lease, holder=action.to_pod,
                                     transitions=self.lease.transitions + 1)
        self.lease = replace(self.lease, in_sync=tuple(sorted(members & set(self.pods))))
        return actions

    def run(self, passes: int = 30) -> None:
        """Plan and apply until a pass has nothing to do and every pod is Ready."""
        for _ in range(passes):
            settled = all(p.ready for p in self.pods.values())
            if not self.step() and settled:
                return
        raise AssertionError(f"no convergence: {self.history}")


def test_rolling_update_sequence_replaces_standbys_then_switches_over_once() -> None:
    sim = Simulation(resource(image="ghcr.io/gencluster/gencluster:0.2.0"),
                     healthy_pods(template_hash=OLD), lease())
    sim.run()
    new_hash = desired.template_hash(sim.resource)
    assert {p.template_hash for p in sim.pods.values()} == {new_hash}
    assert sorted(sim.pods) == ["id-0", "id-1", "id-2"]
    order = [(type(a).__name__, getattr(a, "pod", getattr(a, "to_pod", None)))
             for a in sim.history if isinstance(a, DeletePod | Switchover)]
    assert order == [("DeletePod", "id-2"), ("DeletePod", "id-1"), ("Switchover", "id-1"),
                     ("DeletePod", "id-0")]


def test_scale_three_to_one_with_the_active_at_the_top() -> None:
    sim = Simulation(resource(1), healthy_pods(active=2, template_hash=one_replica_hash()),
                     lease("id-2", in_sync=("id-0", "id-1")))
    sim.run()
    assert sorted(sim.pods) == ["id-0"] and sim.lease.holder == "id-0"
    first = next(a for a in sim.history if isinstance(a, DeletePod | Switchover))
    assert first == Switchover("id-2", "id-0", FailoverReason.SCALED_DOWN)


def test_scale_three_to_one_replaces_the_outdated_pod_before_the_others_go() -> None:
    """minSyncStandbys left out becomes 0 at one replica, which changes the template: the one
    pod that stays is replaced while standbys still hold the state, never after (which would
    replace the only pod, losing an in-memory state)."""
    three = resource()
    del three["spec"]["replication"]["minSyncStandbys"]
    one = copy.deepcopy(three)
    one["spec"]["replicas"] = 1
    assert desired.template_hash(one) != desired.template_hash(three)
    sim = Simulation(one, healthy_pods(template_hash=desired.template_hash(three)), lease())
    sim.run()
    assert sorted(sim.pods) == ["id-0"] and sim.lease.holder == "id-0"
    assert sim.pods["id-0"].template_hash == desired.template_hash(one)
    order = [(type(a).__name__, getattr(a, "pod", getattr(a, "to_pod", None)))
             for a in sim.history if isinstance(a, DeletePod | Switchover)]
    assert [kind for kind, _ in order[:2]] == ["Switchover", "DeletePod"], order
    assert order[1] == ("DeletePod", "id-0"), "the pod that stays is replaced first"
    warnings = [a for a in sim.history if isinstance(a, RecordEvent)
                and a.type == EventType.WARNING]
    assert not warnings, "no pod was replaced without a standby to hand over to"


def test_scale_three_to_five_and_back_to_two() -> None:
    sim = Simulation(resource(5), healthy_pods(), lease())
    sim.run()
    assert sorted(sim.pods) == [f"id-{o}" for o in range(5)]
    sim.resource = resource(2)
    sim.run()
    assert sorted(sim.pods) == ["id-0", "id-1"] and sim.lease.holder == "id-0"
    deleted = [a.pod for a in sim.history if isinstance(a, DeletePod)]
    assert deleted == ["id-4", "id-3", "id-2"]


def test_source_of_a_completed_handover_is_not_a_split_brain_for_a_lease_duration() -> None:
    res = resource(partitionPolicy="Available", status=SPLIT_RECORDED)
    pods = [sees_lease(pod(0, role="active", epoch=1), "id-2", 2), pod(1),
            pod(2, role="active", epoch=2)]
    moved = lease("id-2", transitions=2, in_sync=("id-0", "id-1"))
    recent = Handover("id-0", "id-2", FailoverReason.SWITCHOVER, NOW - timedelta(seconds=2))
    assert disruptive(plan(observe(res, pods, moved, handover=recent))) == []
    old = replace(recent, started_at=NOW - timedelta(seconds=20))
    assert disruptive(plan(observe(res, pods, moved, handover=old))) == [
        MergeStates("id-2", "id-0", 2, 1)
    ]


def test_actions_carry_the_request_bodies_the_shell_sends() -> None:
    assert ClearLease("id-0", "42", FailoverReason.ACTIVE_POD_DELETED).lease_patch() == {
        "metadata": {"resourceVersion": "42"}, "spec": {"holderIdentity": None},
    }
    assert DeletePod("id-1", "uid-1", "x").delete_options()["preconditions"] == {"uid": "uid-1"}
    assert RemoveAnnotation(names.SWITCHOVER_TO_ANNOTATION).resource_patch() == {
        "metadata": {"annotations": {"gencluster.io/switchover-to": None}}
    }


def test_role_covers_wanted_ordinals_and_pods_still_running() -> None:
    assert assess(observe(resource(1), healthy_pods(), lease())).ordinals_in_use == [0, 1, 2]
    assert assess(observe(resource(4), healthy_pods(), lease())).ordinals_in_use == [0, 1, 2, 3]


# -- reading API JSON into observations ----------------------------------------------------------


def api_pod(name: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name, "uid": f"uid-{name}",
            "labels": {names.CLUSTER_LABEL: NAME, names.ROLE_LABEL: "active"},
            "annotations": {names.TEMPLATE_HASH_ANNOTATION: CURRENT},
        },
        "status": status,
    }


def server_status(**fields: Any) -> dict[str, Any]:
    return {"name": names.CONTAINER_NAME, "restartCount": 2, **fields}


def test_pods_are_read_from_api_json_in_ordinal_order() -> None:
    running = api_pod(
        "id-10", phase="Running",
        conditions=[{"type": "Ready", "status": "True"}],
        containerStatuses=[server_status(state={"running": {"startedAt": "2026-11-25T11:50:00Z"}})],
    )
    deleting = api_pod("id-2", phase="Running")
    deleting["metadata"]["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    stranger = api_pod("something-else")
    report = RuntimeStatus("active", 3, 17)
    pods = observed_pods([running, deleting, stranger], NAME, {"id-10": report})
    assert [p.name for p in pods] == ["id-2", "id-10", "something-else"]
    first, second, third = pods
    assert first.deleting and first.container.state == UNKNOWN and not first.running
    assert second.ordinal == 10 and second.ready and second.running
    assert second.container.started_at == datetime(2026, 11, 25, 11, 50, tzinfo=UTC)
    assert second.template_hash == CURRENT and second.role_label == "active"
    assert second.runtime == report and second.container.restart_count == 2
    assert third.ordinal is None


def test_config_error_exit_is_read_from_the_last_termination_while_waiting() -> None:
    crash = server_status(
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"exitCode": 78, "message": "No module named 'id_server'\n"}},
    )
    (waiting,) = observed_pods([api_pod("id-0", phase="Running", containerStatuses=[crash])],
                               NAME)
    assert waiting.container.state == WAITING and waiting.container.reason == "CrashLoopBackOff"
    assert waiting.server_not_runnable == "No module named 'id_server'"
    restarted = server_status(state={"running": {"startedAt": "2026-11-25T11:50:00Z"}},
                              lastState=crash["lastState"])
    (restarting,) = observed_pods([api_pod("id-0", phase="Running",
                                           containerStatuses=[restarted])], NAME)
    # The crash loop's next run, before it exits with 78 again: still not runnable.
    assert restarting.running and not restarting.ready
    assert restarting.server_not_runnable == "No module named 'id_server'"
    (serving,) = observed_pods([api_pod("id-0", phase="Running", containerStatuses=[restarted],
                                        conditions=[{"type": "Ready", "status": "True"}])],
                               NAME)
    assert serving.server_not_runnable is None


def test_lease_is_read_from_api_json() -> None:
    lease_json = {
        "metadata": {"resourceVersion": "981",
                     "annotations": {names.IN_SYNC_ANNOTATION: '["id-2","id-1","id-2"]'}},
        "spec": {"holderIdentity": "id-0", "leaseTransitions": 4, "leaseDurationSeconds": 15,
                 "acquireTime": "2026-11-25T11:55:00.123456Z",
                 "renewTime": "2026-11-25T11:59:58.000001Z"},
    }
    state = lease_state(lease_json)
    assert (state.holder, state.transitions, state.resource_version) == ("id-0", 4, "981")
    assert state.in_sync == ("id-1", "id-2")
    assert state.acquire_time == datetime(2026, 11, 25, 11, 55, 0, 123456, tzinfo=UTC)
    empty = lease_state({"metadata": {}, "spec": {"leaseDurationSeconds": 15}})
    assert (empty.holder, empty.transitions, empty.in_sync) == ("", 0, None)


@pytest.mark.parametrize("value", ["not json", '{"a": 1}', "[1, 2]"])
def test_malformed_in_sync_annotation_reads_as_nobody_in_sync(value: str) -> None:
    lease_json = {"metadata": {"annotations": {names.IN_SYNC_ANNOTATION: value}}, "spec": {}}
    assert lease_state(lease_json).in_sync == ()
