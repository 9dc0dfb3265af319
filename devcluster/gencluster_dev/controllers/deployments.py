"""Deployment controller: apps/v1 Deployments roll out through ReplicaSets, as in Kubernetes.

For each Deployment it keeps one ReplicaSet per pod template it has run, named
`<deployment>-<pod-template-hash>` (the template's digest, also added to the ReplicaSet's
selector and template labels), with a controller reference to the Deployment and the annotation
`deployment.kubernetes.io/revision` (1, 2, ...: what `kubectl rollout history` lists and
`kubectl rollout undo` goes back to; going back re-uses the old ReplicaSet and gives it the
next revision). The ReplicaSet controller makes the pods; this one only sizes the sets:

- `RollingUpdate` (maxSurge / maxUnavailable, defaults 25 % / 25 %, surge rounded up,
  unavailability down): the new set grows while all sets together stay within
  replicas + maxSurge; old sets shrink (their not-ready pods first) while at least
  replicas - maxUnavailable pods stay ready;
- `Recreate`: every old set goes to 0, and the new one grows once their pods are gone;
- `revisionHistoryLimit` (default 10) old, empty sets are kept, older ones deleted;
- `status` (observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas, conditions Available and Progressing with Kubernetes' reasons,
  ProgressDeadlineExceeded included) from the pods of its sets, for `kubectl rollout status`
  and Helm's `--wait`; the Deployment carries its current revision in the same annotation.

`spec.paused` (`kubectl rollout pause|resume`): no new template rolls out while set, the
current set still follows `spec.replicas`, and Progressing is Unknown with reason
DeploymentPaused.

Not done: `minReadySeconds` (ready counts as available at once), proportional scaling
of several sets in the middle of a rollout, collision counts. The decisions are pure functions of
the cached objects (`plan_deployment`, `deployment_status`); `DeploymentController` is the shell.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gencluster_dev.client import writes
from gencluster_dev.client.apiclient import ApiClient, object_key
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready
from gencluster_dev.machinery.workloads import (
    CHANGE_CAUSE_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    children,
    condition,
    controller_ref,
    differs,
    live,
    rfc3339,
    template_hash,
    terminating,
)

log = logging.getLogger(__name__)

DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_SURGE_AND_UNAVAILABLE = "25%"
RESYNC_SECONDS = 5.0
"""Re-examine every Deployment this often even without events: the progress deadline is a
matter of time passing, not of any object changing."""


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """maxSurge / maxUnavailable: an absolute number or a percentage of `total` (Kubernetes
    rounds surge up and unavailability down)."""
    if isinstance(value, str) and value.endswith("%"):
        fraction = int(value[:-1]) * total / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(value)


@dataclass(frozen=True)
class RolloutLimits:
    """How far a rollout may exceed (`surge`) or fall below (`unavailable`) `spec.replicas`."""

    surge: int
    unavailable: int


def rollout_limits(deployment: dict[str, Any]) -> RolloutLimits:
    spec = deployment.get("spec") or {}
    replicas = desired_replicas(deployment)
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        # Recreate tolerates no unavailability either, as Kubernetes counts it: the
        # Deployment is Available only with every replica ready.
        return RolloutLimits(surge=0, unavailable=0)
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(
        rolling.get("maxSurge", DEFAULT_SURGE_AND_UNAVAILABLE), replicas, round_up=True
    )
    unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable", DEFAULT_SURGE_AND_UNAVAILABLE), replicas, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the API forbids both 0; a rollout must be able to move
    return RolloutLimits(surge=surge, unavailable=min(unavailable, replicas))


def desired_replicas(deployment: dict[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def current_hash(deployment: dict[str, Any]) -> str:
    return template_hash((deployment.get("spec") or {}).get("template") or {})


def revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, 0))
    except ValueError:
        return 0


def spec_replicas(replica_set: dict[str, Any]) -> int:
    replicas = (replica_set.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _hash_of(replica_set: dict[str, Any]) -> str | None:
    return (replica_set["metadata"].get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)


def new_replica_set(deployment: dict[str, Any], replicas: int, number: int) -> dict[str, Any]:
    """The ReplicaSet of the Deployment's current template, at revision `number`."""
    meta = deployment["metadata"]
    spec = deployment.get("spec") or {}
    pod_hash = current_hash(deployment)
    template = json.loads(json.dumps(spec.get("template") or {}))
    template.setdefault("metadata", {})
    template["metadata"]["labels"] = {**(template["metadata"].get("labels") or {}),
                                      POD_TEMPLATE_HASH_LABEL: pod_hash}
    selector = json.loads(json.dumps(spec.get("selector") or {}))
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}),
                               POD_TEMPLATE_HASH_LABEL: pod_hash}
    annotations = {REVISION_ANNOTATION: str(number),
                   "deployment.kubernetes.io/desired-replicas": str(desired_replicas(deployment)),
                   "deployment.kubernetes.io/max-replicas": str(
                       desired_replicas(deployment) + rollout_limits(deployment).surge)}
    cause = (meta.get("annotations") or {}).get(CHANGE_CAUSE_ANNOTATION)
    if cause:
        annotations[CHANGE_CAUSE_ANNOTATION] = cause
    rs_spec: dict[str, Any] = {"replicas": replicas, "selector": selector, "template": template}
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}",
            "namespace": meta.get("namespace", "default"),
            "labels": dict(template["metadata"]["labels"]),
            "annotations": annotations,
            "ownerReferences": [controller_ref({"apiVersion": "apps/v1", "kind": "Deployment",
                                                "metadata": meta})],
        },
        "spec": rs_spec,
    }


@dataclass
class DeploymentSets:
    """A Deployment's ReplicaSets and how many of their pods run and are ready."""

    new: dict[str, Any] | None
    old: list[dict[str, Any]]
    running: dict[str, int]
    ready: dict[str, int]
    terminating_pods: int
    old_terminating_pods: int

    @property
    def all(self) -> list[dict[str, Any]]:
        return ([self.new] if self.new is not None else []) + self.old


def classify(deployment: dict[str, Any], replica_sets: list[dict[str, Any]],
             pods: list[dict[str, Any]]) -> DeploymentSets:
    owned = children(deployment, replica_sets)
    wanted = current_hash(deployment)
    new = next((rs for rs in owned if _hash_of(rs) == wanted and not terminating(rs)), None)
    old = sorted((rs for rs in owned if rs is not new),
                 key=lambda rs: (revision(rs), rs["metadata"].get("creationTimestamp") or ""))
    running: dict[str, int] = {}
    ready: dict[str, int] = {}
    going = old_going = 0
    for rs in owned:
        mine = children(rs, pods)
        name = rs["metadata"]["name"]
        running[name] = len(live(mine))
        ready[name] = sum(1 for p in live(mine) if pod_is_ready(p))
        leaving = sum(1 for p in mine if terminating(p))
        going += leaving
        if rs is not new:
            old_going += leaving
    return DeploymentSets(new, old, running, ready, going, old_going)


@dataclass
class Plan:
    """What to do now: a ReplicaSet to create, sets to resize or renumber, old ones to delete."""

    create: dict[str, Any] | None = None
    scale: dict[str, int] = field(default_factory=dict)
    renumber: dict[str, int] = field(default_factory=dict)
    delete: list[dict[str, Any]] = field(default_factory=list)


def plan_deployment(deployment: dict[str, Any], replica_sets: list[dict[str, Any]],
                    pods: list[dict[str, Any]]) -> Plan:
    """One step towards `spec.replicas` ready pods of the current template.

    Called again after every change, so each step only has to be safe, not complete.
    """
    if terminating(deployment):
        return Plan()
    sets = classify(deployment, replica_sets, pods)
    if (deployment.get("spec") or {}).get("paused"):
        # `kubectl rollout pause`: no new template rolls out; the current set still follows
        # spec.replicas (`kubectl scale` works on a paused Deployment)
        plan = Plan()
        current = sets.new or max(sets.old, key=spec_replicas, default=None)
        if current is not None and spec_replicas(current) != desired_replicas(deployment):
            plan.scale[current["metadata"]["name"]] = desired_replicas(deployment)
        return plan
    replicas = desired_replicas(deployment)
    limits = rollout_limits(deployment)
    recreate = ((deployment.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate"
    plan = Plan()
    newest = max((revision(rs) for rs in sets.all), default=0)
    old_active = [rs for rs in sets.old if spec_replicas(rs) > 0]
    old_pods = sum(sets.running[rs["metadata"]["name"]] for rs in sets.old)
    if sets.new is None:
        if recreate:
            size = 0 if old_active or old_pods or sets.old_terminating_pods else replicas
        elif not old_active:
            size = replicas
        else:
            size = min(replicas, max(0, replicas + limits.surge
                                     - sum(spec_replicas(rs) for rs in old_active)))
        plan.create = new_replica_set(deployment, size, newest + 1)
        new_size, new_ready = size, 0
    else:
        name = sets.new["metadata"]["name"]
        if revision(sets.new) < newest or revision(sets.new) == 0:
            plan.renumber[name] = newest + 1  # rolled back to it: it is the latest now
        new_size, new_ready = spec_replicas(sets.new), sets.ready[name]
        if recreate:
            target = (new_size if old_active or old_pods or sets.old_terminating_pods
                      else replicas)
        elif not old_active or new_size > replicas:
            target = replicas
        else:
            total = new_size + sum(spec_replicas(rs) for rs in old_active)
            target = min(replicas, new_size + max(0, replicas + limits.surge - total))
        if target != new_size:
            plan.scale[name] = target
    if recreate:
        for rs in old_active:
            plan.scale[rs["metadata"]["name"]] = 0
    elif old_active:
        sizes = {rs["metadata"]["name"]: spec_replicas(rs) for rs in old_active}
        min_available = replicas - limits.unavailable
        all_pods = new_size + sum(sizes.values())
        room = all_pods - min_available - max(0, new_size - new_ready)
        for name in sizes:  # old sets' pods that are not ready cost no availability
            unhealthy = sizes[name] - sets.ready[name]
            if room <= 0:
                break
            if unhealthy > 0:
                cut = min(unhealthy, room)
                sizes[name] -= cut
                room -= cut
        budget = new_ready + sum(sets.ready[name] for name in sizes) - min_available
        for name in sizes:
            if budget <= 0:
                break
            cut = min(sizes[name], budget, sets.ready[name])
            sizes[name] -= cut
            budget -= cut
        for rs in old_active:
            name = rs["metadata"]["name"]
            if sizes[name] != spec_replicas(rs):
                plan.scale[name] = sizes[name]
    limit = (deployment.get("spec") or {}).get("revisionHistoryLimit",
                                               DEFAULT_REVISION_HISTORY_LIMIT)
    idle = [rs for rs in sets.old if spec_replicas(rs) == 0 and not sets.running[
        rs["metadata"]["name"]] and rs["metadata"]["name"] not in plan.scale
        and not terminating(rs)]
    if len(idle) > limit:
        plan.delete = idle[:len(idle) - limit]
    return plan


def _seconds_since(timestamp: str, now: datetime) -> float:
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (now - then).total_seconds()


def _progress_marks(status: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when a rollout makes progress (a new generation, pods created, ready,
    replaced); the progress deadline counts from the last change of these."""
    return tuple(status.get(key) for key in
                 ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas"))


def deployment_status(deployment: dict[str, Any], replica_sets: list[dict[str, Any]],
                      pods: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The status Kubernetes' controller would write, from the pods of its ReplicaSets.

    `replicas` counts live pods (terminating ones excluded), so Helm's kstatus reports the
    rollout in progress while there are more or fewer than `spec.replicas`; Progressing is True
    with reason NewReplicaSetAvailable only once every pod is of the current template and ready,
    and no old pod is left. Without progress for `progressDeadlineSeconds` (default 600) it
    turns False with reason ProgressDeadlineExceeded, which Helm reports as a failure.
    """
    stamp = rfc3339(now)
    sets = classify(deployment, replica_sets, pods)
    replicas = desired_replicas(deployment)
    limits = rollout_limits(deployment)
    running = sum(sets.running.values())
    ready = sum(sets.ready.values())
    new_name = (sets.new["metadata"]["name"] if sets.new is not None
                else f"{deployment['metadata']['name']}-{current_hash(deployment)}")
    updated = sets.running.get(new_name, 0) if sets.new is not None else 0
    current_ready = sets.ready.get(new_name, 0) if sets.new is not None else 0
    previous_status = deployment.get("status") or {}
    previous = {c.get("type"): c for c in previous_status.get("conditions") or []}
    status: dict[str, Any] = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": running,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    if replicas > ready:
        status["unavailableReplicas"] = replicas - ready
    if ready >= replicas - limits.unavailable:
        available = condition("Available", "True", "MinimumReplicasAvailable",
                              "Deployment has minimum availability.", stamp, previous)
    else:
        available = condition("Available", "False", "MinimumReplicasUnavailable",
                              "Deployment does not have minimum availability.", stamp, previous)
    old_pods = sum(sets.running[rs["metadata"]["name"]] for rs in sets.old)
    complete = (updated == replicas == current_ready and not old_pods
                and not sets.terminating_pods)
    progressed = _progress_marks(status) != _progress_marks(previous_status)
    last = previous.get("Progressing") or {}
    deadline = (deployment.get("spec") or {}).get(
        "progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    if (deployment.get("spec") or {}).get("paused"):
        progressing = condition("Progressing", "Unknown", "DeploymentPaused",
                                "Deployment is paused", stamp, previous)
    elif complete:
        progressing = condition("Progressing", "True", "NewReplicaSetAvailable",
                                f'ReplicaSet "{new_name}" has successfully progressed.',
                                stamp, previous)
    elif not progressed and (
        last.get("reason") == "ProgressDeadlineExceeded"
        or (last.get("reason") == "ReplicaSetUpdated"
            and _seconds_since(last.get("lastUpdateTime", stamp), now) > deadline)
    ):
        progressing = condition("Progressing", "False", "ProgressDeadlineExceeded",
                                f'ReplicaSet "{new_name}" has timed out progressing.',
                                stamp, previous)
    else:
        progressing = condition("Progressing", "True", "ReplicaSetUpdated",
                                f'ReplicaSet "{new_name}" is progressing.', stamp, previous,
                                touched=progressed)
    status["conditions"] = [available, progressing]
    return status


def status_differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing `new` changes anything (a rewrite would wake every watcher)."""
    return differs(old, new)


class DeploymentController:
    """Watches Deployments, ReplicaSets and pods through the API and applies
    `plan_deployment` and `deployment_status`, like any controller (bearer token, REST,
    list+watch)."""

    def __init__(self, *, api_url: str, token: str, resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self._loop = ReconcileLoop(self.api, self._reconcile_all, name="deployment controller",
                                   log=log, resync_seconds=resync_seconds)
        self.deployments = self._loop.informer("/apis/apps/v1/deployments")
        self.replica_sets = self._loop.informer("/apis/apps/v1/replicasets")
        self.pods = self._loop.informer("/api/v1/pods")

    async def start(self) -> None:
        """Sync the caches, then reconcile on every change (and every resync period)."""
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile_all(self) -> None:
        await self._loop.each(list(self.deployments.cache.values()), self._reconcile)

    async def _reconcile(self, deployment: dict[str, Any]) -> None:
        namespace, name = object_key(deployment)
        who = f"deployment {namespace}/{name}"
        sets_path = f"/apis/apps/v1/namespaces/{namespace}/replicasets"
        plan = plan_deployment(deployment, list(self.replica_sets.cache.values()),
                               list(self.pods.cache.values()))
        if plan.create is not None:
            await writes.create(self.api, sets_path, plan.create, self.replica_sets, who=who)
        for set_name, number in plan.renumber.items():
            await writes.merge_patch(
                self.api, f"{sets_path}/{set_name}",
                {"metadata": {"annotations": {REVISION_ANNOTATION: str(number)}}},
                self.replica_sets, who=who)
        for set_name, size in plan.scale.items():
            await writes.merge_patch(self.api, f"{sets_path}/{set_name}",
                                     {"spec": {"replicas": size}}, self.replica_sets, who=who)
        for replica_set in plan.delete:
            await writes.delete(self.api, f"{sets_path}/{replica_set['metadata']['name']}",
                                replica_set, self.replica_sets, who=who)
        if terminating(deployment):
            return
        replica_sets = list(self.replica_sets.cache.values())
        sets = classify(deployment, replica_sets, list(self.pods.cache.values()))
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        if sets.new is not None and revision(sets.new) != revision(deployment):
            patched = await writes.merge_patch(
                self.api, path, {"metadata": {"annotations": {
                    REVISION_ANNOTATION: str(revision(sets.new))}}}, self.deployments, who=who)
            if patched is None:
                return
            deployment = patched
        status = deployment_status(deployment, replica_sets, list(self.pods.cache.values()),
                                   datetime.now(UTC))
        if status_differs(deployment.get("status") or {}, status):
            await writes.merge_patch(self.api, f"{path}/status", {"status": status},
                                     self.deployments, who=who)
