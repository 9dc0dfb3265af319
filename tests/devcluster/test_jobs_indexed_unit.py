"""Indexed Jobs and suspended Jobs: the Job controller's pure decisions and the API server's
validation of `completionMode`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from gencluster_dev.controllers.jobs import (
    COMPLETION_INDEX,
    index_ranges,
    indexed_pod_spec,
    plan_job,
)
from gencluster_dev.machinery.workloads import default_job, pod_from_template

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE = {"metadata": {"labels": {"app": "x"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "i",
                                     "env": [{"name": "A", "value": "1"}]}]}}


def job(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "namespace": "default", "uid": "j-uid"},
            "spec": {"template": TEMPLATE, **spec}}


def pod(owner: dict[str, Any], name: str, phase: str = "Running",
        index: int | None = None) -> dict[str, Any]:
    made = pod_from_template(owner, TEMPLATE, name)
    made["metadata"]["uid"] = f"uid-{name}"
    if index is not None:
        made["metadata"]["annotations"] = {COMPLETION_INDEX: str(index)}
    made["status"] = {"phase": phase}
    return made


def test_an_indexed_job_starts_the_lowest_missing_indexes_and_completes_with_all() -> None:
    indexed = job(completionMode="Indexed", completions=4, parallelism=2)
    first = plan_job(indexed, [], NOW)
    assert first.create_indexes == [0, 1] and first.create == 2
    assert first.status["completedIndexes"] == ""
    # index 0 succeeded, 1 still runs, 2 failed: 2 is started again next to 1
    pods = [pod(indexed, "a", "Succeeded", 0), pod(indexed, "b", "Running", 1),
            pod(indexed, "c", "Failed", 2)]
    middle = plan_job(indexed, pods, NOW)
    assert middle.create_indexes == [2]
    assert middle.status["succeeded"] == 1 and middle.status["failed"] == 1
    assert middle.status["completedIndexes"] == "0"
    # two pods of one index succeeding count once
    done = [pod(indexed, n, "Succeeded", i) for n, i in
            (("a", 0), ("a2", 0), ("b", 1), ("c", 2))]
    not_yet = plan_job(indexed, done, NOW)
    assert "conditions" not in not_yet.status and not_yet.create_indexes == [3]
    complete = plan_job(indexed, [*done, pod(indexed, "d", "Succeeded", 3)], NOW)
    assert [c["type"] for c in complete.status["conditions"]] == [
        "SuccessCriteriaMet", "Complete"]
    assert complete.status["completedIndexes"] == "0-3" and complete.create == 0


def test_an_indexed_pod_knows_its_index() -> None:
    spec = indexed_pod_spec(job(), TEMPLATE["spec"], 3)
    assert spec["hostname"] == "j-3"
    env = spec["containers"][0]["env"]
    assert env[0] == {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}
    assert env[1] == {"name": "A", "value": "1"}
    assert "env" not in TEMPLATE["spec"]["containers"][0] or len(
        TEMPLATE["spec"]["containers"][0]["env"]) == 1  # the template is untouched


def test_index_ranges() -> None:
    assert index_ranges(set()) == ""
    assert index_ranges({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"


def test_a_suspended_job_runs_nothing_and_resumes() -> None:
    suspended = job(completions=2, parallelism=2, suspend=True)
    suspended["status"] = {"startTime": "2025-12-31T00:00:00Z"}
    plan = plan_job(suspended, [pod(suspended, "a")], NOW)
    assert plan.create == 0 and [p["metadata"]["name"] for p in plan.delete] == ["a"]
    assert plan.status["active"] == 0 and plan.status["startTime"] is None
    cond = {c["type"]: c for c in plan.status["conditions"]}["Suspended"]
    assert (cond["status"], cond["reason"]) == ("True", "JobSuspended")
    resumed = job(completions=2, parallelism=2, suspend=False)
    resumed["status"] = {"conditions": plan.status["conditions"]}
    again = plan_job(resumed, [], NOW)
    assert again.create == 2 and again.status["startTime"] == "2026-01-01T00:00:00Z"
    cond = {c["type"]: c for c in again.status["conditions"]}["Suspended"]
    assert (cond["status"], cond["reason"]) == ("False", "JobResumed")
    # never suspended: no Suspended condition at all
    assert "conditions" not in plan_job(job(completions=1), [], NOW).status


def test_completion_modes_the_api_server_accepts() -> None:
    indexed = job(completionMode="Indexed", completions=3)
    indexed["spec"]["template"] = {"spec": {"restartPolicy": "Never"}}
    assert default_job(indexed) == []
    no_completions = job(completionMode="Indexed", parallelism=2)
    no_completions["spec"]["template"] = {"spec": {"restartPolicy": "Never"}}
    assert [c[1] for c in default_job(no_completions)] == ["spec.completions"]
    other = job(completionMode="Sometimes")
    other["spec"]["template"] = {"spec": {"restartPolicy": "Never"}}
    assert [c[1] for c in default_job(other)] == ["spec.completionMode"]
