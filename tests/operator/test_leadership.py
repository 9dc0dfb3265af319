"""The operator's leader election decisions (pure; the shell runs in
tests/operator/test_operator_ha.py)."""

from __future__ import annotations

import pytest
from gencluster_operator import leadership as lead

pytestmark = pytest.mark.unit

CONFIG = lead.LeadershipConfig(lease_duration=15, renew_deadline=10, retry_period=2)
WALL = 1_700_000_000.0


def held_by(holder: str, transitions: int = 3) -> lead.LeaseRecord:
    return lead.LeaseRecord(holder, 15, "t0", "t1", transitions, resource_version="42")


def test_no_lease_is_created_with_me_as_holder() -> None:
    decision = lead.decide(None, "a", 100.0, WALL, CONFIG)
    assert isinstance(decision, lead.Create)
    assert decision.record.holder == "a" and decision.record.transitions == 0
    assert decision.record.duration_seconds == 15
    assert decision.record.renew_time == lead.micro_time(WALL) == "2023-11-14T22:13:20.000000Z"


def test_a_live_holder_is_waited_for_within_the_retry_period() -> None:
    seen = lead.observe(None, held_by("b"), 100.0)
    decision = lead.decide(seen, "a", 105.0, WALL, CONFIG)
    assert decision == lead.Wait("b", 2.0)
    assert lead.decide(seen, "a", 114.5, WALL, CONFIG) == lead.Wait("b", 0.5)


def test_expiry_is_judged_by_my_clock_from_when_the_record_last_changed() -> None:
    seen = lead.observe(None, held_by("b"), 100.0)
    again = lead.observe(seen, held_by("b"), 110.0)  # the same record re-read
    assert again.changed_at == 100.0
    decision = lead.decide(again, "a", 115.0, WALL, CONFIG)
    assert isinstance(decision, lead.Take)
    assert decision.previous_holder == "b"
    assert decision.record.holder == "a"
    assert decision.record.transitions == 4
    assert decision.record.resource_version == "42"  # a conditional replace
    renewed = lead.observe(again, lead.LeaseRecord("b", 15, "t0", "t2", 3, "43"), 114.0)
    assert renewed.changed_at == 114.0
    assert isinstance(lead.decide(renewed, "a", 115.0, WALL, CONFIG), lead.Wait)


def test_a_released_lease_is_taken_at_once() -> None:
    record = lead.released(held_by("b"), WALL)
    assert record.holder == "" and record.duration_seconds == 1
    seen = lead.observe(None, record, 100.0)
    decision = lead.decide(seen, "a", 100.0, WALL, CONFIG)
    assert isinstance(decision, lead.Take) and decision.previous_holder == ""


def test_the_holder_renews_keeping_the_transitions() -> None:
    seen = lead.observe(None, held_by("a"), 100.0)
    decision = lead.decide(seen, "a", 130.0, WALL + 30, CONFIG)
    assert isinstance(decision, lead.Renew)
    assert decision.record.transitions == 3
    assert decision.record.renew_time == lead.micro_time(WALL + 30)


def test_a_leader_steps_down_before_the_lease_can_expire_for_others() -> None:
    assert not lead.must_step_down(100.0, 109.9, CONFIG)
    assert lead.must_step_down(100.0, 110.0, CONFIG)
    assert CONFIG.renew_deadline < CONFIG.lease_duration


@pytest.mark.parametrize("timings", [(15, 15, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)])
def test_unsafe_timings_are_refused(timings: tuple[float, float, float]) -> None:
    with pytest.raises(lead.LeadershipConfigError, match="retry period < renew deadline"):
        lead.LeadershipConfig(*timings)


def test_lease_round_trip() -> None:
    record = lead.LeaseRecord("a", 15, "t0", "t1", 2, resource_version="7")
    body = lead.lease_body("gencluster-operator", "ops", record, {"k": "v"})
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["spec"]["holderIdentity"] == "a"
    assert lead.record_from_lease(body) == record
    free = lead.lease_body("x", "ops", lead.released(record, WALL), {})
    assert free["spec"]["holderIdentity"] is None
    assert lead.record_from_lease(free).holder == ""
