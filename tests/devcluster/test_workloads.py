"""Jobs, StatefulSets and DaemonSets on `gencluster dev up`, driven by the real kubectl
(`wait --for=condition=complete`, `rollout status`), and what discovery says is served."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SLEEP = ["python", "-c", "import time\nwhile True: time.sleep(1)"]


def _apply(cluster: DevClusterProcess, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _get(cluster: DevClusterProcess, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", *what, "-o", "json").stdout)


def _job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "python:3",
                                "command": ["python", "-c", script]}]}}}}


def test_served_workload_kinds_are_in_discovery(dev_cluster: DevClusterProcess) -> None:
    names = dev_cluster.kubectl("api-resources", "-o", "name").stdout.split()
    for served in ("jobs.batch", "statefulsets.apps", "daemonsets.apps", "replicasets.apps",
                   "deployments.apps"):
        assert served in names, names
    assert "controllerrevisions.apps" in names
    for absent in ("replicationcontrollers", "cronjobs.batch",
                   "horizontalpodautoscalers.autoscaling"):
        assert absent not in names


def test_a_job_runs_its_completions_and_completes(dev_cluster: DevClusterProcess) -> None:
    _apply(dev_cluster, _job("twice", "print('done')", completions=2, parallelism=1))
    dev_cluster.kubectl("wait", "--for=condition=complete", "job/twice", "--timeout=90s",
                        timeout=120)
    job = _get(dev_cluster, "job", "twice")
    assert job["status"]["succeeded"] == 2
    assert job["status"]["completionTime"]
    assert job["spec"]["selector"]["matchLabels"] == {
        "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
    pods = _get(dev_cluster, "pods", "-l", "job-name=twice")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Succeeded" for p in pods)
    logs = dev_cluster.kubectl("logs", "job/twice").stdout
    assert "done" in logs
    table = dev_cluster.kubectl("get", "job", "twice").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert table[1].split()[:3] == ["twice", "Complete", "2/2"]


def test_a_failing_job_stops_at_its_backoff_limit(dev_cluster: DevClusterProcess) -> None:
    _apply(dev_cluster, _job("broken", "raise SystemExit(3)", backoffLimit=1))
    dev_cluster.kubectl("wait", "--for=condition=failed", "job/broken", "--timeout=90s",
                        timeout=120)
    job = _get(dev_cluster, "job", "broken")
    assert job["status"]["failed"] == 2
    failed = {c["type"]: c for c in job["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded"


def test_a_job_without_a_restart_policy_is_refused(dev_cluster: DevClusterProcess) -> None:
    job = _job("norestart", "pass")
    del job["spec"]["template"]["spec"]["restartPolicy"]
    result = dev_cluster.kubectl("apply", "-f", "-", input=json.dumps(job), check=False)
    assert result.returncode != 0
    assert "spec.template.spec.restartPolicy" in result.stderr


def test_a_stateful_set_starts_its_pods_in_order_with_their_claims(
        dev_cluster: DevClusterProcess) -> None:
    _apply(dev_cluster, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {
            "replicas": 2, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "python:3", "command": SLEEP,
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                "readinessProbe": {"exec": {"command": ["true"]},
                                                   "periodSeconds": 1}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}}}}],
        }})
    dev_cluster.kubectl("rollout", "status", "statefulset/db", "--timeout=90s", timeout=120)
    pods = {p["metadata"]["name"]: p for p in _get(dev_cluster, "pods", "-l", "app=db")["items"]}
    assert sorted(pods) == ["db-0", "db-1"]
    ready_at = {c["type"]: c for c in pods["db-0"]["status"]["conditions"]}["Ready"][
        "lastTransitionTime"]
    assert pods["db-1"]["metadata"]["creationTimestamp"] >= ready_at  # after db-0 was ready
    for index in (0, 1):
        pod = pods[f"db-{index}"]
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["hostname"] == f"db-{index}"
        assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == str(index)
        claim = {v["name"]: v for v in pod["spec"]["volumes"]}["data"]["persistentVolumeClaim"]
        assert claim == {"claimName": f"data-db-{index}"}
    wait_for(lambda: all(_get(dev_cluster, "pvc", f"data-db-{i}")["status"].get("phase")
                         == "Bound" for i in (0, 1)), 30, message="the claims bound")
    dev_cluster.kubectl("scale", "statefulset/db", "--replicas=1")
    wait_for(lambda: [p["metadata"]["name"] for p in
                      _get(dev_cluster, "pods", "-l", "app=db")["items"]] == ["db-0"], 60,
             message="db-1 removed on scale down")
    assert _get(dev_cluster, "pvc", "data-db-1")["metadata"]["name"] == "data-db-1"  # kept
    table = dev_cluster.kubectl("get", "statefulset", "db").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "AGE"]
    wait_for(lambda: dev_cluster.kubectl("get", "statefulset", "db").stdout.splitlines()[1]
             .split()[1] == "1/1", 30, message="kubectl get statefulset to show 1/1")


def test_a_daemon_set_runs_one_pod_on_the_node(dev_cluster: DevClusterProcess) -> None:
    _apply(dev_cluster, {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "python:3",
                                     "command": SLEEP}]}}}})
    dev_cluster.kubectl("rollout", "status", "daemonset/agent", "--timeout=90s", timeout=120)
    nodes = [n["metadata"]["name"] for n in _get(dev_cluster, "nodes")["items"]]
    pods = _get(dev_cluster, "pods", "-l", "app=agent")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == nodes
    status = _get(dev_cluster, "daemonset", "agent")["status"]
    assert (status["desiredNumberScheduled"], status["numberReady"]) == (1, 1)
    table = dev_cluster.kubectl("get", "daemonset", "agent").stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE",
                                    "AVAILABLE"]
    assert table[1].split()[:6] == ["agent", "1", "1", "1", "1", "1"]
    history = dev_cluster.kubectl("rollout", "history", "daemonset/agent").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1"]


def test_kubectl_create_job_and_deployment(dev_cluster: DevClusterProcess) -> None:
    """kubectl's imperative `create job|deployment` send protobuf bodies."""
    dev_cluster.kubectl("create", "job", "imperative", "--image=python:3", "--",
                        "python", "-c", "print('made by kubectl create')")
    dev_cluster.kubectl("wait", "--for=condition=complete", "job/imperative",
                        "--timeout=90s", timeout=120)
    assert "made by kubectl create" in dev_cluster.kubectl("logs", "job/imperative").stdout
    dev_cluster.kubectl("create", "deployment", "made", "--image=python:3", "--replicas=2",
                        "--port=8080", "--", *SLEEP)
    dev_cluster.kubectl("rollout", "status", "deployment/made", "--timeout=90s", timeout=120)
    deployment = _get(dev_cluster, "deployment", "made")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["command"], container["ports"]) == (
        "python:3", SLEEP, [{"containerPort": 8080, "protocol": "TCP"}])
    assert deployment["status"]["readyReplicas"] == 2


def test_stateful_set_history_and_undo(dev_cluster: DevClusterProcess) -> None:
    def manifest(value: str) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "hist"},
                "spec": {"replicas": 2, "serviceName": "hist",
                         "selector": {"matchLabels": {"app": "hist"}},
                         "template": {"metadata": {"labels": {"app": "hist"}}, "spec": {
                             "terminationGracePeriodSeconds": 1,
                             "containers": [{"name": "main", "image": "python:3",
                                             "command": SLEEP,
                                             "env": [{"name": "V", "value": value}]}]}}}}

    def values() -> list[str]:
        pods = _get(dev_cluster, "pods", "-l", "app=hist")["items"]
        return sorted(p["spec"]["containers"][0]["env"][0]["value"] for p in pods
                      if not p["metadata"].get("deletionTimestamp"))

    _apply(dev_cluster, manifest("one"))
    dev_cluster.kubectl("rollout", "status", "statefulset/hist", "--timeout=90s", timeout=120)
    _apply(dev_cluster, manifest("two"))
    wait_for(lambda: values() == ["two", "two"], 90, message="both pods on the new template")
    history = dev_cluster.kubectl("rollout", "history", "statefulset/hist").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    dev_cluster.kubectl("rollout", "undo", "statefulset/hist")
    wait_for(lambda: values() == ["one", "one"], 90, message="both pods back on the first")
    history = dev_cluster.kubectl("rollout", "history", "statefulset/hist").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]
    table = dev_cluster.kubectl("get", "controllerrevisions", "-l", "app=hist").stdout
    assert "statefulset.apps/hist" in table
