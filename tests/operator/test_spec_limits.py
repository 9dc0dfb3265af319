"""The operator defends itself against specs the CRD should have refused (issue #12): an object
admitted by an older CRD with `replicas: 2000000000`, or `args` too large for the pods'
environment, is refused with an InvalidSpec condition and one Event; `plan` builds nothing from
it (no `range(replicas)`) and the pods already there are left alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster_operator import spec as spec_module
from gencluster_operator.events import ConditionReason, ConditionType, EventReason, EventType
from gencluster_operator.plan import plan
from gencluster_operator.spec import MAX_ARGS_BYTES, MAX_REPLICAS, cluster_spec, spec_problems
from gencluster_operator.status import events_between

from tests.operator.test_plan import healthy, healthy_pods, lease, observe, resource
from tests.operator.test_status import LATER, condition, settled, status

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ABSURD = 2_000_000_000


def test_the_operator_and_the_crd_agree_on_the_replicas_maximum() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "clusteredservers.gencluster.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["maximum"] == MAX_REPLICAS
    assert str(MAX_ARGS_BYTES) in spec["properties"]["args"]["description"]


@pytest.mark.parametrize("replicas", [0, MAX_REPLICAS + 1, ABSURD, -5])
def test_replicas_out_of_range_is_a_problem_naming_the_field(replicas: int) -> None:
    (problem,) = spec_problems(cluster_spec(resource(replicas)))
    assert problem.startswith(f"spec.replicas: Invalid value: {replicas}:")


def test_args_too_large_for_one_environment_variable_is_a_problem_naming_the_field() -> None:
    fits = {"blob": "x" * (MAX_ARGS_BYTES - len('{"blob":""}'))}
    assert len(spec_module.encode_args(fits)) == MAX_ARGS_BYTES
    assert spec_problems(cluster_spec(resource(args=fits))) == []
    (problem,) = spec_problems(cluster_spec(resource(args={"blob": "x" * MAX_ARGS_BYTES})))
    assert problem.startswith("spec.args: Too long:") and str(MAX_ARGS_BYTES) in problem


def test_sane_specs_have_no_problem() -> None:
    for replicas in range(1, MAX_REPLICAS + 1):
        assert spec_problems(cluster_spec(resource(replicas))) == []


def test_plan_does_nothing_for_absurd_replicas_and_never_sizes_anything_from_them() -> None:
    """Would take minutes and gigabytes if anything built range(replicas)."""
    observed = observe(resource(ABSURD), healthy_pods(), lease())
    assert plan(observed) == []
    # Not even creations for missing pods, nor a failover assist: nothing acts on this spec.
    assert plan(observe(resource(ABSURD), healthy_pods()[1:], lease(holder="id-0"))) == []
    assert plan(observe(resource(ABSURD), [], None)) == []


def test_plan_does_nothing_for_oversized_args() -> None:
    big = resource(args={"blob": "x" * (MAX_ARGS_BYTES + 1)})
    assert plan(observe(big, healthy_pods()[:1], lease())) == []


def test_status_says_invalid_spec_naming_the_field_and_keeps_what_serves() -> None:
    before = settled(healthy())
    refused = replace(healthy(), resource={**resource(ABSURD, generation=2), "status": before})
    result = status(refused, before)
    message = condition(result, ConditionType.DEGRADED)["message"]
    assert "spec.replicas: Invalid value: 2000000000" in message
    for kind, expected in ((ConditionType.READY, "False"), (ConditionType.DEGRADED, "True"),
                           (ConditionType.PROGRESSING, "False")):
        found = condition(result, kind)
        assert (found["status"], found["reason"]) == (expected, ConditionReason.INVALID_SPEC)
        assert found["observedGeneration"] == 2
    assert condition(result, ConditionType.AVAILABLE) == condition(before,
                                                                   ConditionType.AVAILABLE)
    assert result["observedGeneration"] == 2 and result["phase"] == "Degraded"
    assert (result["activePod"], result["epoch"], result["replicas"]) == (
        before["activePod"], before["epoch"], before["replicas"])


def test_a_new_cluster_with_an_invalid_spec_is_failed_with_every_condition_set() -> None:
    result = status(observe(resource(ABSURD), [], None))
    assert result["phase"] == "Failed"
    assert {c["type"] for c in result["conditions"]} == {str(k) for k in ConditionType}
    assert condition(result, ConditionType.AVAILABLE)["status"] == "Unknown"


def test_one_invalid_spec_event_per_problem_not_per_pass() -> None:
    before = settled(healthy())
    refused = replace(healthy(), resource={**resource(ABSURD, generation=2), "status": before})
    first = status(refused, before)
    (event,) = [e for e in events_between(before, first)
                if e.reason == EventReason.INVALID_SPEC]
    assert event.type == EventType.WARNING and "spec.replicas" in event.message
    again = status(replace(refused, now=LATER), first)
    assert [e for e in events_between(first, again) if e.reason == EventReason.INVALID_SPEC] == []
    fixed = settled_after(healthy(), again, generation=3)
    assert condition(fixed, ConditionType.DEGRADED)["reason"] != ConditionReason.INVALID_SPEC


def settled_after(observed: Any, previous: dict[str, Any], generation: int) -> dict[str, Any]:
    res = {**observed.resource, "metadata": {**observed.resource["metadata"],
                                             "generation": generation}}
    first = status(replace(observed, resource=res), previous)
    return status(replace(observed, resource=res, now=LATER), first)
