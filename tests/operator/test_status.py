"""`status_for` and `events_between`: status fields, conditions and their transitions, and
the Events a status change deserves. Every status built here is also admitted by the CRD."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster_dev.machinery import schema as schema_module
from gencluster_operator import names
from gencluster_operator.events import (
    ConditionReason,
    ConditionType,
    EventReason,
    EventType,
    FailoverReason,
)
from gencluster_operator.observed import (
    TERMINATED,
    VOLUME_FAILED_EXIT_CODE,
    WAITING,
    Handover,
    MergeOutcome,
    Observed,
    format_time,
)
from gencluster_operator.status import events_between, status_changed, status_for
from hypothesis import given

from tests.operator.test_plan import (
    ACQUIRED,
    NOW,
    PROPERTY_SETTINGS,
    SPLIT_RECORDED,
    clusters,
    healthy,
    healthy_pods,
    lease,
    observe,
    pod,
    replaced,
    resource,
    split_pods,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "clusteredservers.gencluster.io.yaml"
CLUSTERED_SERVER_DOC = ROOT / "docs" / "clusteredserver.md"
LATER = NOW + timedelta(seconds=30)


def status(observed: Observed, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status for `observed`, with `previous` as the stored status (also put on the CR)."""
    if previous is not None:
        observed = replace(observed, resource={**observed.resource, "status": previous})
    result = status_for(observed, previous, observed.now)
    assert_admitted_by_crd(result)
    return result


def settled(observed: Observed) -> dict[str, Any]:
    """The status after two passes: the second sees its own generation already observed."""
    first = status(observed)
    return status(replace(observed, now=LATER), first)


def condition(result: dict[str, Any], kind: ConditionType) -> dict[str, Any]:
    return next(c for c in result["conditions"] if c["type"] == kind)


def summary(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


def at_generation(observed: Observed, generation: int) -> Observed:
    res = {**observed.resource, "metadata": {**observed.resource["metadata"],
                                             "generation": generation}}
    return replace(observed, resource=res)


_SCHEMA: Any = None


def assert_admitted_by_crd(result: dict[str, Any]) -> None:
    """The CRD's own validation (the local control plane's schema module) accepts the status
    once None fields are dropped, as a merge patch drops them; nothing would be pruned."""
    global _SCHEMA
    if _SCHEMA is None:
        crd = yaml.safe_load(CRD_PATH.read_text())
        _SCHEMA = schema_module.Schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    cleaned = {key: value for key, value in result.items() if value is not None}
    obj = {**resource(), "status": cleaned}
    assert _SCHEMA.unknown_fields(obj) == []
    _, errors = schema_module.admit(_SCHEMA, obj)
    assert errors == []


# -- fields -----------------------------------------------------------------------------------


def test_healthy_cluster_is_ready_serving_and_running() -> None:
    observed = replace(healthy(), pods=tuple(
        replace(p, runtime=replace(p.runtime, applied_sequence=100 - 3 * (p.ordinal or 0)))
        for p in healthy().pods if p.runtime
    ))
    result = settled(observed)
    assert result["phase"] == "Running"
    assert result["observedGeneration"] == 1
    assert result["replicas"] == 3 and result["readyReplicas"] == 3
    assert result["selector"] == "gencluster.io/cluster=id"
    assert result["activePod"] == "id-0" and result["epoch"] == 1
    assert result["standbys"] == [
        {"pod": "id-1", "inSync": True, "lag": 3},
        {"pod": "id-2", "inSync": True, "lag": 6},
    ]
    assert summary(result) == {
        "Ready": ("True", "Serving"),
        "Available": ("True", "ActiveServing"),
        "Progressing": ("False", "Reconciled"),
        "Degraded": ("False", "AsExpected"),
        "SplitBrain": ("False", "NoSplitBrain"),
    }
    assert all(c["observedGeneration"] == 1 for c in result["conditions"])


def test_lag_reported_by_the_active_wins() -> None:
    active = pod(0, role="active")
    assert active.runtime is not None
    reporting = replace(active, runtime=replace(active.runtime, standby_lag=(("id-1", 7),)))
    standbys = settled(observe(resource(), replaced(healthy_pods(), reporting), lease()))[
        "standbys"
    ]
    assert standbys == [{"pod": "id-1", "inSync": True, "lag": 7},
                        {"pod": "id-2", "inSync": True, "lag": 0}]


def test_lag_is_left_out_when_a_pod_does_not_report() -> None:
    pods = replaced(healthy_pods(), pod(2, reachable=False))
    standbys = settled(observe(resource(), pods, lease()))["standbys"]
    assert standbys[1] == {"pod": "id-2", "inSync": True}


def test_new_cluster_is_pending_and_creating() -> None:
    result = status(observe(resource(), [], None))
    assert result["phase"] == "Pending" and result["activePod"] is None
    assert summary(result)["Progressing"] == ("True", "Creating")
    assert summary(result)["Available"] == ("False", "NoActive")


# -- generation changes and transition times ---------------------------------------------------


def test_generation_change_makes_ready_unknown_at_once_even_if_all_looks_well() -> None:
    before = settled(healthy())
    assert condition(before, ConditionType.READY)["status"] == "True"
    changed = status(replace(at_generation(healthy(), 2), now=LATER), before)
    ready = condition(changed, ConditionType.READY)
    assert (ready["status"], ready["reason"]) == ("Unknown", "Reconciling")
    assert ready["observedGeneration"] == 2 and changed["observedGeneration"] == 2
    again = status(replace(at_generation(healthy(), 2), now=LATER + timedelta(seconds=5)),
                   changed)
    assert condition(again, ConditionType.READY)["status"] == "True"


def test_transition_time_changes_only_with_the_condition_status() -> None:
    first = settled(healthy())
    ready_since = condition(first, ConditionType.READY)["lastTransitionTime"]
    same = status(replace(healthy(), now=LATER + timedelta(minutes=1)), first)
    assert condition(same, ConditionType.READY)["lastTransitionTime"] == ready_since
    broken = observe(resource(), replaced(healthy_pods(), pod(2, ready=False, state=WAITING,
                                                             reason="CrashLoopBackOff")),
                     lease())
    flipped = status(replace(broken, now=LATER + timedelta(minutes=2)), first)
    ready = condition(flipped, ConditionType.READY)
    assert ready["status"] == "False"
    assert ready["lastTransitionTime"] == format_time(LATER + timedelta(minutes=2))
    message_only = status(replace(broken, now=LATER + timedelta(minutes=3)), flipped)
    assert condition(message_only, ConditionType.READY)["lastTransitionTime"] == ready[
        "lastTransitionTime"
    ]


# -- failover, switchover and their Events -----------------------------------------------------


def test_first_election_is_reported_as_active_elected() -> None:
    waiting = settled(observe(resource(), healthy_pods(), lease(holder="", transitions=0)))
    assert waiting["activePod"] is None and waiting["phase"] == "Pending"
    elected = status(healthy(), waiting)
    assert elected["activePod"] == "id-0" and elected["lastFailoverTime"] is None
    assert [e.reason for e in events_between(waiting, elected)] == [EventReason.ACTIVE_ELECTED]


def test_lost_active_records_the_failover_then_its_completion() -> None:
    before = settled(healthy())
    lost = observe(resource(), healthy_pods()[1:], lease(), now=LATER)
    during = status(lost, before)
    assert during["activePod"] is None
    assert during["lastFailoverReason"] == "ActivePodDeleted"
    assert during["lastFailoverTime"] == format_time(LATER)
    assert during["phase"] == "Updating"
    assert summary(during)["Ready"] == ("False", "NoActive")
    assert summary(during)["Progressing"] == ("True", "FailingOver")
    assert events_between(before, during) == []
    taken = lease("id-1", transitions=2, in_sync=("id-2",), acquired=LATER)
    pods = [pod(1, role="active", epoch=2), pod(2, epoch=2)]
    after = status(observe(resource(), pods, taken, now=LATER + timedelta(seconds=1)), during)
    assert after["activePod"] == "id-1" and after["epoch"] == 2
    assert after["lastFailoverReason"] == "ActivePodDeleted"
    assert after["lastFailoverTime"] == during["lastFailoverTime"]
    events = events_between(during, after)
    assert [e.reason for e in events] == [EventReason.FAILOVER_COMPLETED]


def test_terminated_active_container_is_the_failover_reason() -> None:
    before = settled(healthy())
    crashed = replaced(healthy_pods(), pod(0, role="active", state=TERMINATED, exit_code=137))
    during = status(observe(resource(), crashed, lease()), before)
    assert during["lastFailoverReason"] == "ActiveContainerTerminated"


MOVES = [
    pytest.param(Handover("id-0", "id-2", FailoverReason.ROLLING_UPDATE, NOW), pod(0),
                 "RollingUpdate", EventReason.SWITCHOVER_COMPLETED, id="planned handover"),
    pytest.param(None, pod(0), "Switchover", EventReason.SWITCHOVER_COMPLETED,
                 id="old active now standby"),
    pytest.param(None, pod(0, reachable=False), "LeaseExpired", EventReason.FAILOVER_COMPLETED,
                 id="old active alive but silent"),
]


@pytest.mark.parametrize(("handover", "old", "reason", "event"), MOVES)
def test_direct_move_of_the_active_role_names_its_reason(
    handover: Handover | None, old: Any, reason: str, event: EventReason
) -> None:
    before = settled(healthy())
    moved_at = NOW + timedelta(seconds=40)
    pods = [old, pod(1, epoch=2), pod(2, role="active", epoch=2)]
    observed = observe(resource(), pods, lease("id-2", transitions=2, in_sync=("id-0", "id-1"),
                                               acquired=moved_at), handover=handover)
    after = status(replace(observed, now=moved_at + timedelta(seconds=1)), before)
    assert after["activePod"] == "id-2"
    assert after["lastFailoverReason"] == reason
    assert after["lastFailoverTime"] == format_time(moved_at)
    assert [e.reason for e in events_between(before, after)] == [event]


def test_pending_switchover_shows_as_progressing() -> None:
    handover = Handover("id-0", "id-2", FailoverReason.SWITCHOVER, LATER - timedelta(seconds=2))
    result = settled(replace(healthy(), handover=handover))
    assert summary(result)["Progressing"] == ("True", "SwitchingOver")
    assert summary(result)["Ready"] == ("False", "Updating")
    assert result["phase"] == "Updating"


# -- progress and degradation --------------------------------------------------------------------


PROGRESS = [
    pytest.param(resource(5), healthy_pods(), "ScalingUp", id="scale up"),
    pytest.param(resource(2), healthy_pods(), "ScalingDown", id="scale down"),
    pytest.param(resource(), healthy_pods(template_hash="0ld0ld0ld0ld0ld0"), "RollingUpdate",
                 id="rolling update"),
]


@pytest.mark.parametrize(("res", "pods", "reason"), PROGRESS)
def test_work_in_flight_is_progressing_and_not_ready(res: dict, pods: list, reason: str) -> None:
    result = settled(observe(res, pods, lease()))
    assert summary(result)["Progressing"] == ("True", reason)
    assert summary(result)["Ready"] == ("False", "Updating")
    assert summary(result)["Degraded"] == ("False", "AsExpected")
    assert result["phase"] == "Updating"


def test_unimportable_server_is_degraded_failed_and_reported_once() -> None:
    message = "ModuleNotFoundError: No module named 'id_server'"
    broken = [pod(o, role=None, state=WAITING, reason="CrashLoopBackOff", exit_code=78,
                  message=message) for o in range(3)]
    first = settled(observe(resource(), [], lease(holder="", transitions=0, in_sync=None)))
    result = status(observe(resource(), broken, lease(holder="", transitions=0, in_sync=None)),
                    first)
    assert result["phase"] == "Failed"
    degraded = condition(result, ConditionType.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", "ServerNotRunnable")
    assert degraded["message"] == f"id-0, id-1, id-2: {message}"
    assert summary(result)["Ready"] == ("False", "ServerNotRunnable")
    events = events_between(first, result)
    assert [(e.reason, e.type) for e in events] == [(EventReason.INVALID_SERVER,
                                                     EventType.WARNING)]
    assert events_between(result, status(replace(
        observe(resource(), broken, lease(holder="", transitions=0, in_sync=None)), now=LATER),
        result)) == []


def test_crash_looping_standby_is_degraded_but_available() -> None:
    pods = replaced(healthy_pods(), pod(2, state=WAITING, reason="CrashLoopBackOff", exit_code=1))
    result = settled(observe(resource(), pods, lease(in_sync=("id-1",))))
    assert summary(result)["Degraded"] == ("True", "PodsNotReady")
    assert summary(result)["Available"] == ("True", "ActiveServing")
    assert summary(result)["Ready"] == ("False", "PodsNotReady")
    assert result["phase"] == "Degraded"


def test_standby_out_of_sync_is_degraded() -> None:
    result = settled(observe(resource(), healthy_pods(), lease(in_sync=("id-1",))))
    assert summary(result)["Degraded"] == ("True", "StandbysOutOfSync")
    assert result["standbys"][1]["inSync"] is False


@pytest.mark.parametrize(("mode", "available"), [("Sync", ("False", "NotEnoughSyncStandbys")),
                                                  ("Async", ("True", "ActiveServing"))])
def test_sync_mode_without_in_sync_standbys_cannot_acknowledge_writes(
    mode: str, available: tuple[str, str]
) -> None:
    res = resource(replication={"mode": mode, "minSyncStandbys": 1})
    result = settled(observe(res, healthy_pods(), lease(in_sync=())))
    assert summary(result)["Available"] == available


def test_reconcile_error_is_degraded() -> None:
    result = settled(replace(healthy(), reconcile_error="pods is forbidden"))
    assert summary(result)["Degraded"] == ("True", "ReconcileFailed")


# -- split brain and merges ----------------------------------------------------------------------


def split(**extra: Any) -> Observed:
    return observe(resource(partitionPolicy="Available"), split_pods(), lease(transitions=2),
                   **extra)


def test_split_brain_is_detected_and_reported() -> None:
    before = settled(healthy())
    result = status(split(), before)
    split_brain = condition(result, ConditionType.SPLIT_BRAIN)
    assert (split_brain["status"], split_brain["reason"]) == ("True", "SplitBrainDetected")
    assert "id-0 (epoch 2)" in split_brain["message"] and "id-2 (epoch 1)" in split_brain[
        "message"
    ]
    assert summary(result)["Progressing"] == ("True", "Merging")
    assert summary(result)["Ready"] == ("False", "SplitBrain")
    assert result["phase"] == "Degraded"
    assert [e.reason for e in events_between(before, result)] == [
        EventReason.SPLIT_BRAIN_DETECTED
    ]


def test_split_brain_of_a_loser_still_cut_off_is_reported_at_once_and_says_it_waits() -> None:
    """Detection does not wait for the heal (the condition and Event come at once); the
    message says why nothing is merged yet, and changes when the loser reconnects."""
    before = settled(healthy())
    cut_off = observe(resource(partitionPolicy="Available"),
                      split_pods(("id-2", 1, 9.0)), lease(transitions=2))
    result = status(cut_off, before)
    split_brain = condition(result, ConditionType.SPLIT_BRAIN)
    assert (split_brain["status"], split_brain["reason"]) == ("True", "SplitBrainDetected")
    assert "id-2 keeps serving its side until it reaches the API server again" in split_brain[
        "message"
    ]
    assert [e.reason for e in events_between(before, result)] == [
        EventReason.SPLIT_BRAIN_DETECTED
    ]
    healed = status(split(), result)
    message = condition(healed, ConditionType.SPLIT_BRAIN)["message"]
    assert message.endswith("merging id-2 into id-0")
    assert condition(healed, ConditionType.SPLIT_BRAIN)["lastTransitionTime"] == split_brain[
        "lastTransitionTime"
    ]
    assert events_between(result, healed) == []  # one SplitBrainDetected per split


def test_successful_merge_counts_once_and_clears_the_split_brain() -> None:
    detected = status(split(), settled(healthy()))
    merged = MergeOutcome("id-0", "id-2", 2, 1, succeeded=True, finished_at=LATER)
    healed = observe(resource(partitionPolicy="Available"),
                     [pod(0, role="active", epoch=2), pod(1, epoch=2), pod(2, epoch=2)],
                     lease(transitions=2), last_merge=merged, now=LATER)
    after = status(healed, detected)
    split_brain = condition(after, ConditionType.SPLIT_BRAIN)
    assert (split_brain["status"], split_brain["reason"]) == ("False", "StatesMerged")
    assert after["merges"] == 1
    assert [e.reason for e in events_between(detected, after)] == [EventReason.STATES_MERGED]
    again = status(replace(healed, now=LATER + timedelta(seconds=5)), after)
    assert again["merges"] == 1
    assert condition(again, ConditionType.SPLIT_BRAIN)["reason"] == "StatesMerged"


def test_failed_merge_is_degraded_with_the_error_and_an_event() -> None:
    detected = status(split(), settled(healthy()))
    failed = MergeOutcome("id-0", "id-2", 2, 1, succeeded=False, finished_at=LATER,
                          message="ValueError: cannot merge", consecutive_failures=1)
    result = status(replace(split(last_merge=failed), now=LATER), detected)
    degraded = condition(result, ConditionType.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", "MergeFailed")
    assert "ValueError: cannot merge" in degraded["message"]
    assert result["merges"] == 0
    assert [e.reason for e in events_between(detected, result)] == [EventReason.MERGE_FAILED]


def test_fenced_split_brain_resolved_by_demotion() -> None:
    detected = status(observe(resource(status=SPLIT_RECORDED), split_pods(), lease(transitions=2)),
                      settled(healthy()))
    demoted = [pod(0, role="active", epoch=2), pod(1, epoch=2), pod(2, epoch=2)]
    result = status(observe(resource(), demoted, lease(transitions=2), now=LATER), detected)
    assert condition(result, ConditionType.SPLIT_BRAIN)["reason"] == "StaleActiveDemoted"
    assert result["merges"] == 0


# -- the vocabulary --------------------------------------------------------------------------------


def test_every_condition_reason_is_documented_for_users() -> None:
    doc = CLUSTERED_SERVER_DOC.read_text()
    for reason in ConditionReason:
        assert f"`{reason}`" in doc, reason


def test_every_condition_reason_has_a_troubleshooting_entry() -> None:
    doc = (CLUSTERED_SERVER_DOC.parent / "troubleshooting.md").read_text()
    missing = [str(reason) for reason in ConditionReason if f"`{reason}`" not in doc]
    assert not missing, f"docs/troubleshooting.md lacks {missing}"


def test_reasons_are_camel_case_as_the_crd_requires() -> None:
    pattern = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    for vocabulary in (ConditionReason, EventReason, FailoverReason):
        for reason in vocabulary:
            assert pattern.match(reason) and reason[0].isupper(), reason


def test_failover_reasons_match_the_crd_description() -> None:
    crd = CRD_PATH.read_text()
    for reason in FailoverReason:
        assert reason in crd, reason


def test_lease_acquire_time_is_the_failover_time_of_a_direct_move() -> None:
    before = settled(healthy())
    pods = [pod(0, reachable=False), pod(1, epoch=2), pod(2, role="active", epoch=2)]
    after = status(observe(resource(), pods, lease("id-2", transitions=2, acquired=ACQUIRED)),
                   before)
    assert after["lastFailoverTime"] == format_time(ACQUIRED)
    assert names.selector_string("id") == after["selector"]


def test_active_released_without_a_known_loss_is_still_recorded() -> None:
    before = settled(healthy())
    released = replaced(healthy_pods(), pod(0, role="standby"))
    during = status(observe(resource(), released, lease(holder=""), now=LATER), before)
    assert during["activePod"] is None
    assert (during["lastFailoverTime"], during["lastFailoverReason"]) == (
        format_time(LATER), "Switchover"
    )


@PROPERTY_SETTINGS
@given(clusters())
def test_any_observation_gives_a_status_the_crd_admits(observed: Observed) -> None:
    first = status(observed, observed.previous_status or None)
    second = status(replace(observed, now=LATER), first)
    for kind in ConditionType:
        before, after = condition(first, kind), condition(second, kind)
        if before["status"] == after["status"]:
            assert before["lastTransitionTime"] == after["lastTransitionTime"]
    assert second["merges"] == first["merges"]
    assert events_between(second, second) == []


# -- failsafe ---------------------------------------------------------------------------------


def with_active_failsafe(observed: Observed, **fields: Any) -> Observed:
    """`observed` with the active's (id-0's) runtime reporting failsafe `fields`."""
    return replace(observed, pods=tuple(
        replace(p, runtime=replace(p.runtime, **fields))
        if p.name == "id-0" and p.runtime else p
        for p in observed.pods
    ))


def test_failsafe_is_recorded_and_announced_once_per_episode() -> None:
    before = settled(healthy())
    assert "failsafe" not in before
    serving = status(with_active_failsafe(healthy(), failsafe_seconds=42.0,
                                          failsafe_episodes=1), before)
    assert serving["failsafe"] == {"pod": "id-0", "episodes": 1, "lastSeconds": 0.0,
                                   "servingSeconds": 42.0}
    (event,) = events_between(before, serving)
    assert event.reason == EventReason.SERVED_IN_FAILSAFE and event.type == EventType.WARNING
    assert "id-0 serves in failsafe" in event.message and "42.0s" in event.message
    ended = status(with_active_failsafe(healthy(), failsafe_episodes=1,
                                        last_failsafe_seconds=120.5), serving)
    assert ended["failsafe"] == {"pod": "id-0", "episodes": 1, "lastSeconds": 120.5}
    assert events_between(serving, ended) == []  # the same episode
    # An episode the operator never saw while it lasted (it could not reach the API server
    # either) is announced when it first sees the count move.
    again = status(with_active_failsafe(healthy(), failsafe_episodes=2,
                                        last_failsafe_seconds=7.0), ended)
    (event,) = events_between(ended, again)
    assert "served in failsafe for 7.0s" in event.message and "episode 2" in event.message
    # A later status from a pod without episodes keeps the record.
    assert status(healthy(), again)["failsafe"] == again["failsafe"]


# -- degraded Sync (partitionPolicy Available) --------------------------------------------------


def test_an_active_answering_without_standbys_is_degraded_and_announced_on_entry_and_exit() -> None:
    before = settled(healthy())
    assert before.get("syncDegraded") is None
    observed = with_active_failsafe(healthy(), sync_degraded_seconds=12.0, unsynced_entries=40)
    degraded = status(observed, before)
    assert degraded["syncDegraded"] == [
        {"pod": "id-0", "since": format_time(NOW - timedelta(seconds=12)), "unsyncedEntries": 40}
    ]
    verdict = condition(degraded, ConditionType.DEGRADED)
    assert (verdict["status"], verdict["reason"]) == ("True", "SyncDegraded")
    assert "id-0 answers calls without the acknowledgements of 1 standby(s)" in verdict["message"]
    assert "40 answered entries" in verdict["message"]
    assert condition(degraded, ConditionType.AVAILABLE)["status"] == "True"
    assert degraded["phase"] == "Degraded"
    (event,) = events_between(before, degraded)
    assert (event.reason, event.type) == (EventReason.SYNC_DEGRADED, EventType.WARNING)
    assert "id-0 answers calls without" in event.message
    # The next pass: the same episode, `since` kept (no jitter from the pod's duration), no
    # second Event.
    later = with_active_failsafe(replace(healthy(), now=LATER), sync_degraded_seconds=41.5,
                                 unsynced_entries=90)
    still = status(later, degraded)
    assert still["syncDegraded"][0]["since"] == degraded["syncDegraded"][0]["since"]
    assert still["syncDegraded"][0]["unsyncedEntries"] == 90
    assert events_between(degraded, still) == []
    # Standbys acknowledge again.
    restored = status(replace(healthy(), now=LATER), still)
    assert restored.get("syncDegraded") is None
    assert condition(restored, ConditionType.DEGRADED)["reason"] == "AsExpected"
    (event,) = events_between(still, restored)
    assert event.reason == EventReason.SYNC_RESTORED and event.type == EventType.NORMAL
    assert "id-0 is acknowledged by its in-sync standbys again" in event.message


def test_a_failed_merge_is_reported_before_a_degraded_loser() -> None:
    detected = status(split(), settled(healthy()))
    failed = MergeOutcome("id-0", "id-2", 2, 1, succeeded=False, finished_at=LATER,
                          message="ValueError: cannot merge", consecutive_failures=1)
    observed = replace(split(last_merge=failed), now=LATER)
    observed = replace(observed, pods=tuple(
        replace(p, runtime=replace(p.runtime, sync_degraded_seconds=3.0, unsynced_entries=5))
        if p.name == "id-2" and p.runtime else p
        for p in observed.pods
    ))
    result = status(observed, detected)
    assert condition(result, ConditionType.DEGRADED)["reason"] == "MergeFailed"
    assert [entry["pod"] for entry in result["syncDegraded"]] == ["id-2"]
    reasons = [e.reason for e in events_between(detected, result)]
    assert reasons == [EventReason.SYNC_DEGRADED, EventReason.MERGE_FAILED]


def with_volume_failure(observed: Observed, pod: str, *, restarts: int, ready: bool) -> Observed:
    """`observed` with `pod`'s server last stopped on a failed volume (exit code 74)."""
    return replace(observed, pods=tuple(
        replace(p, ready=ready, container=replace(
            p.container, exit_code=VOLUME_FAILED_EXIT_CODE, restart_count=restarts,
            message="gencluster run: volume failed: the volume at /data failed (File too large)",
        )) if p.name == pod else p
        for p in observed.pods
    ))


def test_a_replica_stopped_by_its_volume_is_reported_once_per_stop_and_kept() -> None:
    before = settled(healthy())
    assert "volumeFailure" not in before
    stopped = status(with_volume_failure(healthy(), "id-1", restarts=1, ready=False), before)
    assert stopped["volumeFailure"] == {
        "pod": "id-1", "restarts": 1,
        "message": "gencluster run: volume failed: the volume at /data failed (File too large)",
    }
    assert summary(stopped)[ConditionType.DEGRADED] == ("True", ConditionReason.VOLUME_FAILED)
    assert "id-1" in condition(stopped, ConditionType.DEGRADED)["message"]
    (event,) = [e for e in events_between(before, stopped)
                if e.reason == EventReason.VOLUME_FAILED]
    assert event.type == EventType.WARNING and "File too large" in event.message
    # Restarted and Ready again: not degraded for it any more, the record stays, no new Event.
    recovered = status(with_volume_failure(healthy(), "id-1", restarts=1, ready=True), stopped)
    assert summary(recovered)[ConditionType.DEGRADED][1] != ConditionReason.VOLUME_FAILED
    assert recovered["volumeFailure"] == stopped["volumeFailure"]
    assert not [e for e in events_between(stopped, recovered)
                if e.reason == EventReason.VOLUME_FAILED]
    # A second stop of the same pod is a second Event, even if the operator never saw it down.
    again = status(with_volume_failure(healthy(), "id-1", restarts=2, ready=True), recovered)
    assert again["volumeFailure"]["restarts"] == 2
    assert [e.reason for e in events_between(recovered, again)
            if e.reason == EventReason.VOLUME_FAILED] == [EventReason.VOLUME_FAILED]
    # Replaced by a new pod (no lastState): the record is kept.
    assert status(healthy(), again)["volumeFailure"] == again["volumeFailure"]


def test_the_operator_knows_the_runtimes_volume_exit_code() -> None:
    from gencluster.run import EX_IOERR

    assert VOLUME_FAILED_EXIT_CODE == EX_IOERR


def test_an_idle_pass_that_computes_the_same_status_sends_no_patch() -> None:
    previous = {"phase": "Running", "epoch": 3, "standbys": [{"pod": "a-1", "inSync": True}],
                "conditions": [{"type": "Ready", "status": "True"}]}
    assert not status_changed(previous, dict(previous))
    assert not status_changed(previous, {"phase": "Running", "lastFailoverReason": None})
    assert status_changed(previous, {**previous, "epoch": 4})
    assert status_changed(previous, {"standbys": [{"pod": "a-1", "inSync": False}]})
    assert status_changed(previous, {"phase": None})  # removing a field is a change
    assert status_changed(None, {"phase": "Pending"})
    assert not status_changed({}, {})


def refusing(ordinal: int, **extra: Any) -> Any:
    """A standby pod whose runtime refuses the active's newer server class version."""
    refused = pod(ordinal, ready=False, **extra)
    assert refused.runtime is not None
    message = ("the active's log was written by version 2 of the server class, this replica "
               "runs VersionedIdServerV1 version 1: a downgrade, refused")
    return replace(refused, runtime=replace(refused.runtime, downgrade_refused=message))


def test_a_pod_refusing_a_downgrade_is_degraded_with_an_event() -> None:
    before = settled(observe(resource(), healthy_pods(), lease()))
    pods = replaced(healthy_pods(), refusing(2))
    result = status(observe(resource(), pods, lease(in_sync=("id-1",))), before)
    degraded = condition(result, ConditionType.DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", "DowngradeRefused")
    assert degraded["message"].startswith("id-2: the active's log was written by version 2")
    assert EventReason.DOWNGRADE_REFUSED in [e.reason for e in events_between(before, result)]
    again = status(observe(resource(), pods, lease(in_sync=("id-1",))), result)
    assert EventReason.DOWNGRADE_REFUSED not in [e.reason for e in events_between(result, again)]


def test_the_old_active_of_a_rolling_upgrade_refusing_is_not_a_downgrade() -> None:
    """After the switchover the outdated former active cannot follow the newer active: it is
    about to be replaced, which is what the roll does next, not a problem to report."""
    pods = replaced(healthy_pods(), refusing(2, template_hash="old"))
    result = settled(observe(resource(), pods, lease(in_sync=("id-1",))))
    assert condition(result, ConditionType.DEGRADED)["reason"] != "DowngradeRefused"
