"""The pure decisions of the ReplicaSet, Job, StatefulSet and DaemonSet controllers, and the
API server's Job defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gencluster_dev.controllers.daemonsets import new_pod as daemon_pod
from gencluster_dev.controllers.daemonsets import plan_daemon_set
from gencluster_dev.controllers.jobs import plan_job
from gencluster_dev.controllers.replicasets import plan_replica_set, replica_set_status
from gencluster_dev.controllers.statefulsets import (
    claims_for,
    plan_stateful_set,
    stateful_set_status,
    update_revision,
)
from gencluster_dev.controllers.statefulsets import new_pod as set_pod
from gencluster_dev.machinery.workloads import default_job, pod_from_template

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE = {"metadata": {"labels": {"app": "x"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}


def _owner(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": "default", "uid": f"{name}-uid",
                         "generation": 1},
            "spec": {"template": TEMPLATE, **spec}}


def _pod(owner: dict[str, Any], name: str, phase: str = "Running", ready: bool = True,
         pod: dict[str, Any] | None = None) -> dict[str, Any]:
    pod = pod or pod_from_template(owner, TEMPLATE, name)
    pod["metadata"]["uid"] = f"uid-{name}"
    pod["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    pod["status"] = {"phase": phase, "podIP": "127.9.64.1", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    return pod


def test_a_replica_set_tops_up_and_trims_its_pods() -> None:
    rs = _owner("ReplicaSet", "web-abc", replicas=3)
    pods = [_pod(rs, "a"), _pod(rs, "b", ready=False), _pod(rs, "c", phase="Failed")]
    plan = plan_replica_set(rs, pods)
    assert plan.create == 1 and [p["metadata"]["name"] for p in plan.delete] == ["c"]
    rs["spec"]["replicas"] = 1
    plan = plan_replica_set(rs, pods)
    assert [p["metadata"]["name"] for p in plan.delete] == ["c", "b"]  # not ready goes first
    assert replica_set_status(rs, pods)["readyReplicas"] == 1
    stranger = _pod(_owner("ReplicaSet", "other"), "z")
    assert plan_replica_set(rs, [stranger]).create == 1


def test_job_defaults_and_refusals() -> None:
    job = _owner("Job", "j")
    job["spec"] = {"template": {"spec": {"restartPolicy": "Never"}}}
    assert default_job(job) == []
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid":
                                                       "j-uid"}}
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "j"
    assert (job["spec"]["completions"], job["spec"]["parallelism"],
            job["spec"]["backoffLimit"]) == (1, 1, 6)
    always = _owner("Job", "k")
    always["spec"] = {"template": {"spec": {"restartPolicy": "Always"}}}
    assert [c[1] for c in default_job(always)] == ["spec.template.spec.restartPolicy"]


def test_a_job_runs_parallel_pods_until_its_completions() -> None:
    job = _owner("Job", "j", completions=3, parallelism=2, backoffLimit=1)
    first = plan_job(job, [], NOW)
    assert first.create == 2 and first.status["active"] == 2
    done = [_pod(job, "a", "Succeeded"), _pod(job, "b", "Succeeded"), _pod(job, "c")]
    middle = plan_job(job, done, NOW)
    assert middle.create == 0 and middle.status["succeeded"] == 2
    complete = plan_job(job, [*done[:2], _pod(job, "c", "Succeeded")], NOW)
    types = [c["type"] for c in complete.status["conditions"]]
    assert types == ["SuccessCriteriaMet", "Complete"]
    assert complete.status["completionTime"] == "2026-01-01T00:00:00Z"


def test_a_job_fails_past_its_backoff_limit_or_deadline() -> None:
    job = _owner("Job", "j", completions=1, backoffLimit=1)
    failing = [_pod(job, "a", "Failed"), _pod(job, "b", "Failed"), _pod(job, "c")]
    plan = plan_job(job, failing, NOW)
    assert [p["metadata"]["name"] for p in plan.delete] == ["c"]
    failed = {c["type"]: c for c in plan.status["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded"
    late = _owner("Job", "late", completions=1, activeDeadlineSeconds=5)
    late["status"] = {"startTime": "2026-01-01T00:00:00Z"}
    plan = plan_job(late, [_pod(late, "x")], NOW + timedelta(seconds=6))
    assert {c["type"]: c["reason"] for c in plan.status["conditions"]}["Failed"] == (
        "DeadlineExceeded")


def _set_pod(sts: dict[str, Any], index: int, **kw: Any) -> dict[str, Any]:
    return _pod(sts, "", pod=set_pod(sts, index), **kw)


def test_a_stateful_set_creates_in_order_and_removes_from_the_top() -> None:
    sts = _owner("StatefulSet", "db", replicas=3, serviceName="db",
                 selector={"matchLabels": {"app": "x"}},
                 volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {}}])
    assert plan_stateful_set(sts, []).create == [0]
    starting = [_set_pod(sts, 0, ready=False)]
    assert plan_stateful_set(sts, starting).create == []
    assert plan_stateful_set(sts, [_set_pod(sts, 0)]).create == [1]
    sts["spec"]["podManagementPolicy"] = "Parallel"
    assert plan_stateful_set(sts, []).create == [0, 1, 2]
    del sts["spec"]["podManagementPolicy"]
    three = [_set_pod(sts, i) for i in range(3)]
    sts["spec"]["replicas"] = 1
    assert [p["metadata"]["name"] for p in plan_stateful_set(sts, three).delete] == ["db-2"]
    pod = set_pod(sts, 1)
    assert pod["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {
        "claimName": "data-db-1"}}]
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("db-1", "db")
    assert claims_for(sts, 1)[0]["metadata"]["labels"] == {"app": "x"}


def test_a_stateful_set_rolls_its_pods_from_the_top_once_all_are_ready() -> None:
    sts = _owner("StatefulSet", "db", replicas=2)
    old = [_set_pod(sts, i) for i in range(2)]
    first = update_revision(sts)
    sts["spec"]["template"] = {**TEMPLATE, "metadata": {"labels": {"app": "y"}}}
    assert [p["metadata"]["name"] for p in plan_stateful_set(sts, old).delete] == ["db-1"]
    old[0]["status"]["conditions"][0]["status"] = "False"
    assert plan_stateful_set(sts, old).delete == []
    status = stateful_set_status({**sts, "status": {"currentRevision": first}}, old)
    assert (status["currentRevision"], status["updatedReplicas"]) == (first, 0)


def test_a_daemon_set_puts_one_current_pod_on_each_fitting_node() -> None:
    ds = _owner("DaemonSet", "agent")
    nodes = [{"metadata": {"name": "n1", "labels": {}}}]
    assert plan_daemon_set(ds, nodes, []).create == ["n1"]
    pod = _pod(ds, "", pod=daemon_pod(ds, "n1"))
    assert pod["spec"]["nodeName"] == "n1"
    assert plan_daemon_set(ds, nodes, [pod]).create == []
    ds["spec"]["template"] = {**TEMPLATE, "spec": {**TEMPLATE["spec"],
                                                   "nodeSelector": {"disk": "ssd"}}}
    plan = plan_daemon_set(ds, nodes, [pod])
    assert plan.create == [] and plan.delete == [pod]


def test_revisions_follow_the_template_and_keep_a_bounded_history() -> None:
    from gencluster_dev.machinery.workloads import controller_revision, plan_revisions

    sts = _owner("StatefulSet", "db", revisionHistoryLimit=1,
                 selector={"matchLabels": {"app": "x"}})
    plan = plan_revisions(sts, [], "db-aaa", "aaa", set())
    assert plan.create is not None and plan.create["revision"] == 1
    assert plan.create["data"]["spec"]["template"]["$patch"] == "replace"
    assert plan.create["metadata"]["labels"] == {"app": "x",
                                                 "controller.kubernetes.io/hash": "aaa"}
    old = [controller_revision(sts, f"db-{n}", i + 1, n) for i, n in enumerate("bcd")]
    current = controller_revision(sts, "db-aaa", 1, "aaa")  # rolled back to: renumbered
    plan = plan_revisions(sts, [current, *old], "db-aaa", "aaa", {"db-b"})
    assert plan.create is None and plan.renumber == {"db-aaa": 4}
    assert [r["metadata"]["name"] for r in plan.delete] == ["db-c"]  # db-b still runs
