"""Day-2 maintenance in the pure core (#15): pausing reconciliation and hibernation, in the
plan and in the status and Events the user sees."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_operator import names
from gencluster_operator.actions import CreatePod, DeletePod
from gencluster_operator.events import EventReason
from gencluster_operator.plan import plan
from gencluster_operator.status import events_between, status_for

from tests.operator.test_plan import (
    NOW,
    OLD,
    healthy_pods,
    lease,
    observe,
    pod,
    resource,
)

pytestmark = pytest.mark.unit

PAUSED = {names.RECONCILE_PAUSED_ANNOTATION: "maintenance"}
HIBERNATE = {names.HIBERNATION_ANNOTATION: "on"}
PERSISTENT = {"persistence": {"enabled": True}}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_paused_plans_nothing_even_with_work_to_do() -> None:
    work = [pod(0, role="active", template_hash=OLD), pod(1, template_hash=OLD)]
    assert plan(observe(resource(annotations=PAUSED), work, lease())) == []
    unpaused = plan(observe(resource(annotations={names.RECONCILE_PAUSED_ANNOTATION: "false"}),
                            work, lease()))
    assert CreatePod("id-2", 2) in unpaused, "'false' writes the pause off"


def test_paused_status_says_so_and_the_events_mark_both_transitions() -> None:
    before = status_for(observe(resource(), healthy_pods(), lease()), None, NOW)
    paused = status_for(observe(resource(annotations=PAUSED), healthy_pods(), lease()), before,
                        NOW)
    progressing = condition(paused, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ReconcilePaused")
    assert names.RECONCILE_PAUSED_ANNOTATION in progressing["message"]
    assert [e.reason for e in events_between(before, paused)] == [EventReason.RECONCILE_PAUSED]
    resumed = status_for(observe(resource(), healthy_pods(), lease()), paused, NOW)
    assert [e.reason for e in events_between(paused, resumed)] == [EventReason.RECONCILE_RESUMED]


def test_hibernation_deletes_standbys_first_one_at_a_time_then_the_active() -> None:
    res = resource(annotations=HIBERNATE, **PERSISTENT)
    actions = plan(observe(res, healthy_pods(active=1), lease("id-1")))
    assert [a for a in actions if isinstance(a, DeletePod)] == [
        DeletePod("id-2", "uid-2", "hibernation")]
    going = [pod(0), pod(1, role="active"), pod(2, deleting=True)]
    assert plan(observe(res, going, lease("id-1"))) == [], "one at a time"
    last = plan(observe(res, [pod(1, role="active")], lease("id-1")))
    assert [a for a in last if isinstance(a, DeletePod)] == [
        DeletePod("id-1", "uid-1", "hibernation")]
    assert plan(observe(res, [], lease(holder=""))) == [], "nothing is created while hibernated"


def test_hibernated_status_and_events_then_waking_up_creates_the_pods() -> None:
    res = resource(annotations=HIBERNATE, **PERSISTENT)
    serving = status_for(observe(resource(**PERSISTENT), healthy_pods(), lease()), None, NOW)
    going = status_for(observe(res, healthy_pods(), lease()), serving, NOW)
    assert condition(going, "Progressing")["reason"] == "Hibernating"
    assert going["phase"] == "Updating"
    asleep = status_for(observe(res, [], lease(holder="")), going, NOW)
    assert asleep["phase"] == "Hibernated"
    for kind in ("Ready", "Available"):
        assert (condition(asleep, kind)["status"], condition(asleep, kind)["reason"]) == (
            "False", "Hibernated")
    assert condition(asleep, "Degraded")["status"] == "False"
    assert [e.reason for e in events_between(going, asleep)] == [EventReason.HIBERNATED]
    awake_res = resource(**PERSISTENT)
    waking = status_for(observe(awake_res, [], lease(holder="")), asleep, NOW)
    assert EventReason.RESUMED_FROM_HIBERNATION in [e.reason for e in events_between(asleep,
                                                                                      waking)]
    assert CreatePod("id-0", 0) in plan(observe(awake_res, [], lease(holder="")))


def test_hibernation_without_persistence_is_refused_and_changes_nothing() -> None:
    res = resource(annotations=HIBERNATE)
    actions = plan(observe(res, healthy_pods(), lease()))
    assert not [a for a in actions if isinstance(a, DeletePod)]
    serving = status_for(observe(resource(), healthy_pods(), lease()), None, NOW)
    refused = status_for(observe(res, healthy_pods(), lease()), serving, NOW)
    degraded = condition(refused, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "HibernationRefused")
    assert "persistence" in degraded["message"]
    assert [e.reason for e in events_between(serving, refused)] == [
        EventReason.HIBERNATION_REFUSED]
    assert refused["phase"] != "Hibernated"
