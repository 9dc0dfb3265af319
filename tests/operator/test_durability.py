"""Durable state (#11) in the pure core: claims in `plan`, StateLost in `status_for` and
`events_between`, and the `gencluster.io/reinitialize` request.

Observations are built with test_plan's helpers, as the shell would build them; statuses
go through test_status's helper, which also has the CRD admit them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from gencluster_operator import desired, names
from gencluster_operator.actions import (
    DISRUPTIVE,
    CreateClaim,
    CreatePod,
    RecordEvent,
    RemoveAnnotation,
    RemoveLeaseAnnotation,
    SetClaimOwnership,
)
from gencluster_operator.events import ConditionReason, ConditionType, EventReason, EventType
from gencluster_operator.observed import WAITING, ObservedClaim, ObservedPod, observed_claims
from gencluster_operator.plan import plan
from gencluster_operator.status import events_between

from tests.operator.test_plan import healthy_pods, lease, observe, pod, resource
from tests.operator.test_status import LATER, condition, settled, status, summary

pytestmark = pytest.mark.unit

UID = "cr-uid"


def persistent(replicas: int = 3, **persistence: Any) -> dict[str, Any]:
    return resource(replicas, persistence={"enabled": True, "size": "1Gi", **persistence})


PERSISTENT_HASH = desired.template_hash(persistent())


def persistent_pods(replicas: int = 3) -> list[ObservedPod]:
    return healthy_pods(replicas, template_hash=PERSISTENT_HASH)


def claim(
    ordinal: int, phase: str = "Bound", *, controller: str | None = UID, deleting: bool = False
) -> ObservedClaim:
    return ObservedClaim(names.claim_name("id", ordinal), ordinal, phase, deleting, controller)


def bound_claims(replicas: int = 3) -> tuple[ObservedClaim, ...]:
    return tuple(claim(o) for o in range(replicas))


def creations(actions: list[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, CreateClaim | CreatePod)]


# -- claims in the plan ---------------------------------------------------------------------------


def test_new_persistent_cluster_creates_each_claim_before_its_pod() -> None:
    actions = plan(observe(persistent(), [], None))
    assert creations(actions) == [
        CreateClaim("id-data-0", 0), CreateClaim("id-data-1", 1), CreateClaim("id-data-2", 2),
        CreatePod("id-0", 0), CreatePod("id-1", 1), CreatePod("id-2", 2),
    ]


def test_healthy_persistent_cluster_needs_nothing() -> None:
    assert plan(observe(persistent(), persistent_pods(), lease(), claims=bound_claims())) == []


def test_a_lost_pod_gets_its_old_claim_back() -> None:
    """The claim outlives the pod: only the pod is created, and it mounts the same claim."""
    pods = [p for p in persistent_pods() if p.ordinal != 1]
    actions = plan(observe(persistent(), pods, lease(), claims=bound_claims()))
    assert creations(actions) == [CreatePod("id-1", 1)]
    volumes = desired.pod(persistent(), 1)["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "id-data-1"}} in volumes


def test_a_claim_deleted_under_a_running_pod_is_created_again() -> None:
    claims = (claim(0), claim(2))
    actions = plan(observe(persistent(), persistent_pods(), lease(), claims=claims))
    assert creations(actions) == [CreateClaim("id-data-1", 1)]


def test_a_pod_waits_while_its_claim_is_being_deleted() -> None:
    pods = [p for p in persistent_pods() if p.ordinal != 2]
    claims = (claim(0), claim(1), claim(2, deleting=True))
    assert creations(plan(observe(persistent(), pods, lease(), claims=claims))) == []


def test_scale_down_keeps_the_claims_and_scale_up_reuses_them() -> None:
    down = persistent(2, generation=2, status={"replicas": 3, "observedGeneration": 1})
    actions = plan(observe(down, persistent_pods(), lease(), claims=bound_claims()))
    assert not any(isinstance(a, CreateClaim) for a in actions)
    up = persistent(4, generation=3, status={"replicas": 3, "observedGeneration": 2})
    actions = plan(observe(up, persistent_pods(), lease(), claims=bound_claims()))
    assert creations(actions) == [CreateClaim("id-data-3", 3), CreatePod("id-3", 3)]
    again = plan(observe(up, persistent_pods(), lease(), claims=(*bound_claims(), claim(3))))
    assert creations(again) == [CreatePod("id-3", 3)]


def test_claim_actions_are_never_disruptive() -> None:
    actions = plan(observe(persistent(), [], None))
    assert not [a for a in actions if isinstance(a, DISRUPTIVE)]


def test_claim_ownership_follows_retain_on_delete() -> None:
    retained = persistent(retainOnDelete=True)
    pods = healthy_pods(template_hash=desired.template_hash(retained))
    actions = plan(observe(retained, pods, lease(), claims=bound_claims()))
    assert actions == [SetClaimOwnership(f"id-data-{o}", retained=True) for o in range(3)]
    unowned = tuple(claim(o, controller=None) for o in range(3))
    assert plan(observe(retained, pods, lease(), claims=unowned)) == []
    actions = plan(observe(persistent(), persistent_pods(), lease(), claims=unowned))
    assert actions == [SetClaimOwnership(f"id-data-{o}", retained=False) for o in range(3)]


def test_a_claim_controlled_by_another_object_is_left_alone() -> None:
    claims = (claim(0), claim(1), claim(2, controller="someone-else"))
    assert plan(observe(persistent(), persistent_pods(), lease(), claims=claims)) == []


def test_claims_are_read_from_api_json() -> None:
    owned = desired.claim(persistent(), 0)
    owned["status"] = {"phase": "Bound"}
    retained = desired.claim(persistent(retainOnDelete=True), 1)
    other = {"metadata": {"name": "unrelated", "deletionTimestamp": "2026-11-25T12:00:00Z"}}
    assert observed_claims([retained, other, owned], "id") == (
        ObservedClaim("id-data-0", 0, "Bound", False, UID),
        ObservedClaim("id-data-1", 1, "Pending", False, None),
        ObservedClaim("unrelated", None, "Pending", True, None),
    )


# -- claims in the status -------------------------------------------------------------------------


def test_pods_waiting_for_their_claims_are_named_in_progressing() -> None:
    pending = [
        replace(pod(o, role=None, state=WAITING, phase="Pending", template_hash=PERSISTENT_HASH))
        for o in range(3)
    ]
    claims = (claim(0, "Pending"), claim(1), claim(2, "Pending"))
    first = status(observe(persistent(), pending, None, claims=claims))
    message = condition(first, ConditionType.PROGRESSING)["message"]
    assert "id-0 waits for PersistentVolumeClaim id-data-0 (Pending)" in message
    assert "id-2 waits for PersistentVolumeClaim id-data-2 (Pending)" in message
    assert "id-1 waits" not in message


def test_waiting_for_storage_is_progressing_even_with_every_pod_created() -> None:
    pods = persistent_pods()
    pods[2] = pod(2, role=None, state=WAITING, phase="Pending", template_hash=PERSISTENT_HASH)
    claims = (claim(0), claim(1), claim(2, "Pending"))
    result = settled(observe(persistent(), pods, lease(), claims=claims))
    progressing = condition(result, ConditionType.PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == ("True", "WaitingForStorage")
    assert progressing["message"] == "id-2 waits for PersistentVolumeClaim id-data-2 (Pending)"


def test_bound_claims_say_nothing() -> None:
    result = settled(observe(persistent(), persistent_pods(), lease(), claims=bound_claims()))
    assert summary(result)[ConditionType.PROGRESSING] == ("False", "Reconciled")


# -- StateLost ------------------------------------------------------------------------------------


def lost_pods(replicas: int = 3) -> list[ObservedPod]:
    """Every pod came back empty: running, not Ready, reporting state_lost."""
    pods = []
    for o in range(replicas):
        p = pod(o, role="standby", ready=False, applied=0)
        assert p.runtime is not None
        pods.append(replace(p, runtime=replace(p.runtime, state_lost=True)))
    return pods


def lost_lease() -> Any:
    return lease(holder="", transitions=4, in_sync=())


def lost(res: dict[str, Any] | None = None, **extra: Any) -> Any:
    return observe(res or resource(), lost_pods(), lost_lease(), **extra)


HAD_STATE = {"epoch": 4, "activePod": None, "observedGeneration": 1}


def test_state_lost_is_reported_in_ready_available_and_phase() -> None:
    result = settled(lost())
    assert result["phase"] == "StateLost"
    conditions = summary(result)
    assert conditions[ConditionType.READY] == ("False", "StateLost")
    assert conditions[ConditionType.AVAILABLE] == ("False", "StateLost")
    assert conditions[ConditionType.PROGRESSING] == ("False", "StateLost")
    assert conditions[ConditionType.DEGRADED] == ("True", "StateLost")
    message = condition(result, ConditionType.READY)["message"]
    assert "id-0, id-1, id-2 report state_lost" in message
    assert "kubectl gencluster restore id FILE" in message
    assert f"{names.REINITIALIZE_ANNOTATION}=yes" in message


def test_state_lost_needs_a_report_and_no_active() -> None:
    """A pod that serves as active means the cluster has its state (a restore or a
    reinitialize just happened, or the report is stale): not StateLost."""
    pods = lost_pods()
    pods[0] = pod(0, role="active")
    result = settled(observe(resource(), pods, lease()))
    assert summary(result)[ConditionType.READY] != ("False", "StateLost")
    assert result["phase"] != "StateLost"
    quiet = settled(observe(resource(), [pod(o, role=None) for o in range(3)], lost_lease()))
    assert summary(quiet)[ConditionType.READY][1] == ConditionReason.NO_ACTIVE


def test_one_state_lost_event_per_loss() -> None:
    serving = settled(observe(resource(), healthy_pods(), lease()))
    first = status(lost(), serving)
    events = events_between(serving, first)
    assert [(e.reason, e.type) for e in events if e.reason == EventReason.STATE_LOST] == [
        (EventReason.STATE_LOST, EventType.WARNING)
    ]
    second = status(replace(lost(), now=LATER), first)
    assert not [e for e in events_between(first, second) if e.reason == EventReason.STATE_LOST]


def test_a_spec_change_during_state_lost_does_not_repeat_the_event() -> None:
    first = settled(lost())
    changed = lost(resource(generation=2))
    second = status(changed, first)
    assert summary(second)[ConditionType.READY] == ("Unknown", "Reconciling")
    third = status(replace(changed, now=LATER), second)
    assert summary(third)[ConditionType.READY] == ("False", "StateLost")
    for before, after in ((first, second), (second, third)):
        assert not [e for e in events_between(before, after) if e.reason == EventReason.STATE_LOST]


def test_state_lost_plans_no_disruption() -> None:
    actions = plan(lost(resource(status=HAD_STATE)))
    assert actions == []


def test_a_state_lost_lease_holder_is_neither_rolled_nor_switched_over() -> None:
    """A runtime may hold the Lease while it reports state_lost (it never serves): the
    rolling update and the switchover wait for a restore or a reinitialize request."""
    outdated = [replace(p, template_hash="0ld0ld0ld0ld0ld0") for p in lost_pods()]
    res = resource(annotations={names.SWITCHOVER_TO_ANNOTATION: "id-1"}, status=HAD_STATE)
    actions = plan(observe(res, outdated, lease(holder="id-0", transitions=4)))
    assert not [a for a in actions if isinstance(a, DISRUPTIVE)]
    rejected = [a for a in actions if isinstance(a, RecordEvent)]
    assert [e.reason for e in rejected] == [EventReason.SWITCHOVER_REJECTED]
    assert "StateLost" in rejected[0].message
    result = settled(observe(resource(), lost_pods(), lease(holder="id-0", transitions=4)))
    assert result["phase"] == "StateLost"


# -- reinitialize ------------------------------------------------------------------------------


def reinitialize(value: str = "yes-i-lose-the-state") -> dict[str, Any]:
    return resource(annotations={names.REINITIALIZE_ANNOTATION: value}, status=HAD_STATE)


def test_reinitialize_on_a_state_lost_cluster_clears_the_initialized_annotation() -> None:
    actions = plan(lost(reinitialize("ticket-42")))
    assert actions[:2] == [
        RemoveLeaseAnnotation(names.INITIALIZED_ANNOTATION),
        RemoveAnnotation(names.REINITIALIZE_ANNOTATION),
    ]
    event = actions[2]
    assert isinstance(event, RecordEvent)
    assert (event.reason, event.type) == (EventReason.REINITIALIZED, EventType.WARNING)
    assert "'ticket-42'" in event.message and names.INITIALIZED_ANNOTATION in event.message
    assert len(actions) == 3
    assert RemoveLeaseAnnotation(names.INITIALIZED_ANNOTATION).lease_patch() == {
        "metadata": {"annotations": {"gencluster.io/initialized": None}}
    }


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        (healthy_pods(), "id-0 is active"),
        ([pod(o, role=None) for o in range(3)], "no pod reports lost state"),
        ([], "no pod reports lost state"),
    ],
    ids=["serving", "not reporting", "no pods"],
)
def test_reinitialize_on_a_cluster_that_is_not_state_lost_is_refused(
    pods: list[ObservedPod], why: str
) -> None:
    actions = plan(observe(reinitialize(), pods, lease()))
    assert not any(isinstance(a, RemoveLeaseAnnotation) for a in actions)
    rejected = [a for a in actions if isinstance(a, RecordEvent)
                and a.reason == EventReason.REINITIALIZE_REJECTED]
    assert len(rejected) == 1
    assert rejected[0].type == EventType.WARNING
    assert why in rejected[0].message and "nothing changed" in rejected[0].message
    assert RemoveAnnotation(names.REINITIALIZE_ANNOTATION) in actions


def test_a_handled_request_is_not_acted_on_again() -> None:
    """The annotation is removed with the request: the next pass, without it, does nothing."""
    assert plan(lost(resource(status=HAD_STATE))) == []
