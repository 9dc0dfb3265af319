"""Indexed and suspended Jobs on `gencluster dev up`, driven by the real kubectl: each index
runs once with `JOB_COMPLETION_INDEX`, and a suspended Job starts no pod until resumed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

INDEX = "batch.kubernetes.io/job-completion-index"


def _job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "python:3",
                                "command": ["python", "-c", script]}]}}}}


def _get(cluster: DevClusterProcess, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", *what, "-o", "json").stdout)


def test_an_indexed_job_runs_each_index_once_with_its_index(
    dev_cluster: DevClusterProcess,
) -> None:
    script = "import os; print('index', os.environ['JOB_COMPLETION_INDEX'])"
    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _job("shards", script, completionMode="Indexed", completions=3, parallelism=2)))
    dev_cluster.kubectl("wait", "--for=condition=complete", "job/shards", "--timeout=120s",
                        timeout=150)
    status = _get(dev_cluster, "job", "shards")["status"]
    assert status["completedIndexes"] == "0-2" and status["succeeded"] == 3
    pods = _get(dev_cluster, "pods", "-l", "job-name=shards")["items"]
    indexes = sorted(p["metadata"]["annotations"][INDEX] for p in pods)
    assert indexes == ["0", "1", "2"]
    for item in pods:
        index = item["metadata"]["annotations"][INDEX]
        assert item["metadata"]["labels"][INDEX] == index
        assert item["metadata"]["name"].startswith(f"shards-{index}-")
        assert item["spec"]["hostname"] == f"shards-{index}"
        log = dev_cluster.kubectl("logs", item["metadata"]["name"]).stdout
        assert log == f"index {index}\n"


def test_a_suspended_job_starts_no_pod_until_resumed(dev_cluster: DevClusterProcess) -> None:
    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _job("later", "print('ran')", suspend=True)))

    def suspended() -> bool:
        conditions = (_get(dev_cluster, "job", "later").get("status") or {}).get(
            "conditions") or []
        return any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions)

    wait_for(suspended, 60, 0.2, "the Job to be Suspended")
    assert _get(dev_cluster, "pods", "-l", "job-name=later")["items"] == []
    assert "startTime" not in _get(dev_cluster, "job", "later")["status"]
    dev_cluster.kubectl("patch", "job", "later", "--type", "merge", "-p",
                        '{"spec": {"suspend": false}}')
    dev_cluster.kubectl("wait", "--for=condition=complete", "job/later", "--timeout=120s",
                        timeout=150)
    status = _get(dev_cluster, "job", "later")["status"]
    resumed = {c["type"]: c for c in status["conditions"]}["Suspended"]
    assert (resumed["status"], resumed["reason"]) == ("False", "JobResumed")
    assert status["startTime"]
