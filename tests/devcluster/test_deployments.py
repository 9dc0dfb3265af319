"""The Deployment controller: pure rollout decisions, then real Deployments on `gencluster dev up`
driven by the real kubectl (`rollout status`, `scale`, `delete`)."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gencluster_dev.controllers.deployments import (
    REVISION_ANNOTATION,
    RolloutLimits,
    deployment_status,
    new_replica_set,
    plan_deployment,
    rollout_limits,
)
from gencluster_dev.machinery.workloads import (
    POD_TEMPLATE_HASH_LABEL,
    pod_from_template,
    template_hash,
)
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _deployment(replicas: int = 2, strategy: dict | None = None, env: str = "one",
                status: dict | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 3},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy or {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"note": "kept"}},
                "spec": {"containers": [{"name": "c", "image": "x",
                                         "env": [{"name": "V", "value": env}]}]},
            },
        },
        "status": status or {},
    }


def _set_of(deployment: dict, replicas: int, number: int = 1) -> dict[str, Any]:
    replica_set = new_replica_set(deployment, replicas, number)
    replica_set["metadata"]["uid"] = f"rs-{number}"
    replica_set["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:0{number}Z"
    return replica_set


def _pod_of(replica_set: dict, suffix: str, *, ready: bool = True, terminating: bool = False,
            created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    pod = pod_from_template(replica_set, replica_set["spec"]["template"],
                            f"{replica_set['metadata']['name']}-{suffix}")
    pod["metadata"]["uid"] = f"uid-{suffix}"
    pod["metadata"]["creationTimestamp"] = created
    if terminating:
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    pod["status"] = {"phase": "Running", "podIP": "127.9.64.1", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    return pod


def _names(pods: list[dict]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods)


# -- pure decisions ------------------------------------------------------------------------------


def test_template_hash_ignores_key_order_and_its_own_label() -> None:
    template = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": []}}
    reordered = {"spec": {"containers": []}, "metadata": {"labels": {"b": "2", "a": "1"}}}
    labelled = {"metadata": {"labels": {"a": "1", "b": "2", POD_TEMPLATE_HASH_LABEL: "zz"}},
                "spec": {"containers": []}}
    assert template_hash(template) == template_hash(reordered) == template_hash(labelled)
    assert template_hash(template) != template_hash({**template, "spec": {"containers": [{}]}})
    assert len(template_hash(template)) == 10


def test_the_replica_set_carries_hash_revision_owner_and_template() -> None:
    deployment = _deployment()
    replica_set = new_replica_set(deployment, 2, 4)
    digest = template_hash(deployment["spec"]["template"])
    meta = replica_set["metadata"]
    assert meta["name"] == f"web-{digest}"
    assert meta["annotations"][REVISION_ANNOTATION] == "4"
    assert meta["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid",
        "controller": True, "blockOwnerDeletion": True}]
    spec = replica_set["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": {"app": "web", POD_TEMPLATE_HASH_LABEL: digest}}
    assert spec["template"]["metadata"]["labels"] == {"app": "web",
                                                      POD_TEMPLATE_HASH_LABEL: digest}
    assert spec["template"]["spec"] == deployment["spec"]["template"]["spec"]


def test_a_new_deployment_gets_one_replica_set_then_scales_it() -> None:
    deployment = _deployment(replicas=3)
    plan = plan_deployment(deployment, [], [])
    assert plan.create is not None and plan.create["spec"]["replicas"] == 3
    assert plan.create["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    current = _set_of(deployment, 3)
    assert plan_deployment(deployment, [current], []).scale == {}
    assert plan_deployment(_deployment(replicas=1), [current], []).scale == {
        current["metadata"]["name"]: 1}


def test_rolling_update_surges_then_shrinks_the_old_set_only_when_new_pods_are_ready() -> None:
    old_spec = _deployment(replicas=2, env="one")
    new_spec = _deployment(replicas=2, env="two")
    old = _set_of(old_spec, 2, 1)
    old_pods = [_pod_of(old, "aaaaa"), _pod_of(old, "bbbbb")]
    first = plan_deployment(new_spec, [old], old_pods)
    assert first.create is not None and first.create["spec"]["replicas"] == 1  # surge 1
    assert first.create["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    assert first.scale == {}  # maxUnavailable 0: nothing old goes yet
    new = _set_of(new_spec, 1, 2)
    starting = [*old_pods, _pod_of(new, "ccccc", ready=False)]
    assert plan_deployment(new_spec, [old, new], starting).scale == {}
    ready = [*old_pods, _pod_of(new, "ccccc")]
    step = plan_deployment(new_spec, [old, new], ready)
    assert step.scale == {old["metadata"]["name"]: 1}
    old["spec"]["replicas"] = 1
    after = [old_pods[1], _pod_of(new, "ccccc")]
    assert plan_deployment(new_spec, [old, new], after).scale == {new["metadata"]["name"]: 2}


def test_rolling_back_reuses_the_old_set_as_the_latest_revision() -> None:
    first, second = _deployment(env="one"), _deployment(env="two")
    sets = [_set_of(first, 0, 1), _set_of(second, 2, 2)]
    plan = plan_deployment(first, sets, [_pod_of(sets[1], "aaaaa"), _pod_of(sets[1], "bbbbb")])
    assert plan.create is None
    assert plan.renumber == {sets[0]["metadata"]["name"]: 3}
    assert plan.scale == {sets[0]["metadata"]["name"]: 1}


def test_recreate_waits_for_old_pods_to_be_gone() -> None:
    recreate = {"type": "Recreate"}
    old_spec = _deployment(replicas=2, strategy=recreate, env="one")
    new_spec = _deployment(replicas=2, strategy=recreate, env="two")
    old = _set_of(old_spec, 2, 1)
    old_pods = [_pod_of(old, "aaaaa"), _pod_of(old, "bbbbb")]
    plan = plan_deployment(new_spec, [old], old_pods)
    assert plan.scale == {old["metadata"]["name"]: 0}
    assert plan.create is not None and plan.create["spec"]["replicas"] == 0
    old["spec"]["replicas"] = 0
    new = _set_of(new_spec, 0, 2)
    going = [_pod_of(old, "aaaaa", terminating=True)]
    assert plan_deployment(new_spec, [old, new], going).scale == {}
    assert plan_deployment(new_spec, [old, new], []).scale == {new["metadata"]["name"]: 2}


def test_old_empty_sets_beyond_the_history_limit_are_deleted() -> None:
    deployment = _deployment(env="now")
    deployment["spec"]["revisionHistoryLimit"] = 1
    sets = [_set_of(_deployment(env=str(n)), 0, n) for n in range(1, 4)]
    sets.append(_set_of(deployment, 2, 4))
    plan = plan_deployment(deployment, sets, [])
    assert [s["metadata"]["annotations"][REVISION_ANNOTATION] for s in plan.delete] == ["1", "2"]


def test_rollout_limits_follow_kubernetes_rounding_and_defaults() -> None:
    default = _deployment(replicas=10, strategy={"type": "RollingUpdate"})
    assert rollout_limits(default) == rollout_limits(_deployment(
        replicas=10, strategy={"type": "RollingUpdate",
                               "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}))
    limits = rollout_limits(default)
    assert (limits.surge, limits.unavailable) == (3, 2)  # 2.5 up, 2.5 down
    one = rollout_limits(_deployment(replicas=1, strategy={"type": "RollingUpdate"}))
    assert (one.surge, one.unavailable) == (1, 0)
    recreate = _deployment(replicas=2, strategy={"type": "Recreate"})
    assert rollout_limits(recreate) == RolloutLimits(surge=0, unavailable=0)
    recreate_set = _set_of(recreate, 2)
    starting = deployment_status(recreate, [recreate_set],
                                 [_pod_of(recreate_set, "aaaaa", ready=False)], NOW)
    assert {c["type"]: c["status"] for c in starting["conditions"]}["Available"] == "False"


def test_status_reports_progress_then_completion() -> None:
    deployment = _deployment(replicas=2)
    sets = [_set_of(deployment, 2)]
    starting = deployment_status(deployment, sets, [_pod_of(sets[0], "aaaaa", ready=False)], NOW)
    assert starting["observedGeneration"] == 3
    assert (starting["replicas"], starting["updatedReplicas"], starting["readyReplicas"]) == (
        1, 1, 0)
    conditions = {c["type"]: c for c in starting["conditions"]}
    assert conditions["Available"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "ReplicaSetUpdated"
    done = deployment_status(
        deployment, sets, [_pod_of(sets[0], "aaaaa"), _pod_of(sets[0], "bbbbb")], NOW)
    conditions = {c["type"]: c for c in done["conditions"]}
    assert (done["replicas"], done["updatedReplicas"], done["availableReplicas"]) == (2, 2, 2)
    assert "unavailableReplicas" not in done
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"] == {**conditions["Progressing"], "status": "True",
                                         "reason": "NewReplicaSetAvailable"}


def test_status_turns_failed_after_the_progress_deadline_without_progress() -> None:
    deployment = _deployment(replicas=1)
    deployment["spec"]["progressDeadlineSeconds"] = 30
    sets = [_set_of(deployment, 1)]
    pods = [_pod_of(sets[0], "aaaaa", ready=False)]
    first = deployment_status(deployment, sets, pods, NOW)
    deployment["status"] = first
    still = deployment_status(deployment, sets, pods, NOW + timedelta(seconds=20))
    assert {c["type"]: c["reason"] for c in still["conditions"]}["Progressing"] == (
        "ReplicaSetUpdated")
    late = deployment_status(deployment, sets, pods, NOW + timedelta(seconds=31))
    progressing = {c["type"]: c for c in late["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False",
                                                              "ProgressDeadlineExceeded")


# -- on a real `gencluster dev up` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevClusterProcess) -> DevClusterProcess:
    return dev_cluster


def _manifest(name: str, replicas: int, strategy: dict, value: str) -> str:
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "main",
                        "image": "example.invalid/sleeper:1",
                        "command": ["sleep", "3600"],
                        "env": [{"name": "VALUE", "value": value}],
                        "readinessProbe": {"exec": {"command": ["true"]},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    })


def _pods(cluster: DevClusterProcess, app: str) -> list[dict]:
    listed = cluster.kubectl("get", "pods", "-l", f"app={app}", "-o", "json").stdout
    return json.loads(listed)["items"]


def _rollout(cluster: DevClusterProcess, name: str) -> None:
    result = cluster.kubectl("rollout", "status", f"deployment/{name}", "--timeout=90s",
                             timeout=120)
    assert "successfully rolled out" in result.stdout


class PodWatch:
    """Records every pod watch event of one app while a rollout runs, to check the strategy's
    bounds on what happened in between, not only on the end state."""

    def __init__(self, cluster: DevClusterProcess, app: str) -> None:
        from kubernetes import client, watch

        self.events: list[tuple[str, dict]] = []
        self._watch = watch.Watch()
        self._api = client.CoreV1Api(cluster.api_client())
        self._app = app
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(self._api.list_namespaced_pod, "default",
                                    label_selector=f"app={self._app}", timeout_seconds=120)
        try:
            for event in stream:
                self.events.append((event["type"], event["raw_object"]))
        except Exception:
            if not self._stopped:
                raise

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def test_deployment_runs_its_pods_and_reports_rollout(cluster: DevClusterProcess) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    cluster.kubectl("apply", "-f", "-", input=_manifest("web", 2, strategy, "one"))
    _rollout(cluster, "web")
    deployment = json.loads(cluster.kubectl("get", "deployment", "web", "-o", "json").stdout)
    pods = _pods(cluster, "web")
    digest = pods[0]["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL]
    assert len(pods) == 2
    for pod in pods:
        assert pod["metadata"]["name"].startswith(f"web-{digest}-")
        assert len(pod["metadata"]["name"]) == len(f"web-{digest}-") + 5
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert pod["metadata"]["ownerReferences"][0]["name"] == f"web-{digest}"
        assert pod["status"]["phase"] == "Running"
    replica_set = json.loads(cluster.kubectl("get", "rs", f"web-{digest}", "-o", "json").stdout)
    assert replica_set["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    assert replica_set["status"]["readyReplicas"] == 2
    table = cluster.kubectl("get", "rs", f"web-{digest}").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert table[1].split()[:4] == [f"web-{digest}", "2", "2", "2"]
    status = deployment["status"]
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"],
            status["availableReplicas"]) == (2, 2, 2, 2)
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons == {"Available": "MinimumReplicasAvailable",
                       "Progressing": "NewReplicaSetAvailable"}


def _template_value(cluster: DevClusterProcess, name: str) -> str:
    deployment = json.loads(cluster.kubectl("get", "deployment", name, "-o", "json").stdout)
    return deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]


def test_rollout_history_undo_and_restart(cluster: DevClusterProcess) -> None:
    strategy = {"type": "RollingUpdate"}
    cluster.kubectl("apply", "-f", "-", input=_manifest("hist", 1, strategy, "one"))
    _rollout(cluster, "hist")
    cluster.kubectl("apply", "-f", "-", input=_manifest("hist", 1, strategy, "two"))
    _rollout(cluster, "hist")
    history = cluster.kubectl("rollout", "history", "deployment/hist").stdout
    assert re.search(r"^1\s", history, re.M) and re.search(r"^2\s", history, re.M), history
    second = cluster.kubectl("rollout", "history", "deployment/hist", "--revision=2").stdout
    assert "two" in second, second
    cluster.kubectl("rollout", "undo", "deployment/hist")
    _rollout(cluster, "hist")
    assert _template_value(cluster, "hist") == "one"
    wait_for(lambda: [p["spec"]["containers"][0]["env"][0]["value"]
                      for p in _pods(cluster, "hist")] == ["one"], 60,
             message="the pods of the restored template")
    history = cluster.kubectl("rollout", "history", "deployment/hist").stdout
    assert re.search(r"^3\s", history, re.M) and not re.search(r"^1\s", history, re.M), history
    before = set(_names(_pods(cluster, "hist")))
    cluster.kubectl("rollout", "restart", "deployment/hist")
    _rollout(cluster, "hist")
    wait_for(lambda: (names := set(_names(_pods(cluster, "hist")))) and not names & before,
             60, message="restart to replace the pods")
    sets = json.loads(cluster.kubectl("get", "rs", "-o", "json").stdout)["items"]
    assert sum(1 for rs in sets if rs["metadata"]["name"].startswith("hist-")) == 3


def test_rolling_update_keeps_replicas_ready_and_surges_by_one(
    cluster: DevClusterProcess,
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    cluster.kubectl("apply", "-f", "-", input=_manifest("roll", 2, strategy, "one"))
    _rollout(cluster, "roll")
    before = set(_names(_pods(cluster, "roll")))
    watcher = PodWatch(cluster, "roll")
    try:
        wait_for(lambda: len(watcher.events) >= 2, 10, message="the watch to list the pods")
        cluster.kubectl("apply", "-f", "-", input=_manifest("roll", 2, strategy, "two"))
        _rollout(cluster, "roll")
        wait_for(lambda: not set(_names(_pods(cluster, "roll"))) & before, 30,
                 message="the old pods to be gone")
    finally:
        watcher.stop()
    after = _pods(cluster, "roll")
    assert len(after) == 2 and not set(_names(after)) & before
    assert after[0]["spec"]["containers"][0]["env"] == [{"name": "VALUE", "value": "two"}]
    # Replay the events after the initial listing of the two old pods: never more than
    # replicas + surge pods alive, never fewer than replicas - maxUnavailable ready.
    pods = {pod["metadata"]["name"]: pod for _, pod in watcher.events[:2]}
    for kind, pod in watcher.events[2:]:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            pods.pop(name, None)
        else:
            pods[name] = pod
        alive = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]
        assert len(alive) <= 3, _names(alive)
        assert sum(1 for p in alive if _ready(p)) >= 2, _names(alive)


def test_recreate_starts_new_pods_only_after_the_old_are_gone(
    cluster: DevClusterProcess,
) -> None:
    cluster.kubectl("apply", "-f", "-", input=_manifest("again", 2, {"type": "Recreate"}, "one"))
    _rollout(cluster, "again")
    before = set(_names(_pods(cluster, "again")))
    watcher = PodWatch(cluster, "again")
    try:
        wait_for(lambda: len(watcher.events) >= 2, 10, message="the watch to list the pods")
        cluster.kubectl("apply", "-f", "-",
                        input=_manifest("again", 2, {"type": "Recreate"}, "two"))
        _rollout(cluster, "again")
    finally:
        watcher.stop()
    deleted = [i for i, (kind, pod) in enumerate(watcher.events)
               if kind == "DELETED" and pod["metadata"]["name"] in before]
    added = [i for i, (kind, pod) in enumerate(watcher.events)
             if kind == "ADDED" and pod["metadata"]["name"] not in before]
    assert len(deleted) == 2 and len(added) == 2
    assert max(deleted) < min(added)


def test_scale_and_delete(cluster: DevClusterProcess) -> None:
    strategy = {"type": "RollingUpdate"}
    cluster.kubectl("apply", "-f", "-", input=_manifest("sized", 1, strategy, "one"))
    _rollout(cluster, "sized")
    cluster.kubectl("scale", "deployment/sized", "--replicas=3")
    _rollout(cluster, "sized")
    assert len(_pods(cluster, "sized")) == 3
    cluster.kubectl("scale", "deployment/sized", "--replicas=1")
    wait_for(lambda: len(_pods(cluster, "sized")) == 1, 60, message="scale down to 1")
    _rollout(cluster, "sized")
    cluster.kubectl("delete", "deployment", "sized", "--wait=true", timeout=90)
    wait_for(lambda: not _pods(cluster, "sized"), 60,
             message="garbage collection of the pods")


def test_a_stuck_rollout_exceeds_its_progress_deadline(cluster: DevClusterProcess) -> None:
    manifest = json.loads(_manifest("stuck", 1, {"type": "RollingUpdate"}, "x"))
    spec = manifest["spec"]
    spec["progressDeadlineSeconds"] = 2
    spec["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["false"]}, "periodSeconds": 1}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    result = cluster.kubectl("rollout", "status", "deployment/stuck", "--timeout=60s",
                             check=False, timeout=90)
    assert result.returncode != 0
    assert "exceeded its progress deadline" in result.stderr
    deployment = json.loads(cluster.kubectl("get", "deployment", "stuck", "-o", "json").stdout)
    progressing = {c["type"]: c for c in deployment["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False",
                                                              "ProgressDeadlineExceeded")


def test_a_paused_deployment_rolls_nothing_out_until_resumed() -> None:
    first, second = _deployment(env="one"), _deployment(env="two")
    second["spec"]["paused"] = True
    current = _set_of(first, 2, 1)
    pods = [_pod_of(current, "aaaaa"), _pod_of(current, "bbbbb")]
    plan = plan_deployment(second, [current], pods)
    assert plan.create is None and plan.scale == {}
    second["spec"]["replicas"] = 3
    assert plan_deployment(second, [current], pods).scale == {current["metadata"]["name"]: 3}
    status = deployment_status(second, [current], pods, NOW)
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    del second["spec"]["paused"]
    assert plan_deployment(second, [current], pods).create is not None
