"""A minimal Deployment controller: apps/v1 Deployments run their template's pods.

What `helm install` of an operator chart needs: the chart's Deployment must turn into a running
pod, and its `status` must tell `kubectl rollout status` and Helm's `--wait` (kstatus) when the
rollout is done. Kubernetes does this with two controllers and ReplicaSets; here one controller
creates the pods directly from `spec.template`, without ReplicaSets:

- pods are named `<deployment>-<pod-template-hash>-<random 5>` and labelled
  `pod-template-hash` (what a ReplicaSet would add), with a controller ownerReference to the
  Deployment, so garbage collection deletes them with it;
- it keeps `spec.replicas` pods of the current template; a template change replaces the pods by
  the strategy: `RollingUpdate` (maxSurge / maxUnavailable, Kubernetes' defaults 25 % / 25 %:
  create up to the surge, delete old pods once enough pods are ready) or `Recreate` (delete every
  old pod, create new ones once the old are gone);
- it writes `status` (observedGeneration, replicas, updatedReplicas, readyReplicas,
  availableReplicas, unavailableReplicas, conditions Available and Progressing with
  Kubernetes' reasons, ProgressDeadlineExceeded included).

Not done: ReplicaSets (so no `kubectl rollout undo` / history), `minReadySeconds` (ready counts
as available at once), `paused`, adopting orphaned pods that match the selector, collision
counts. The decisions are pure functions of the cached objects (`plan_deployment`,
`deployment_status`); `DeploymentController` is the shell that watches and writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gencluster_dev.client.apiclient import ApiClient, ApiError, object_key
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready

log = logging.getLogger(__name__)

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""Kubernetes' alphabet for generated names and hashes (no vowels, no look-alike digits)."""
TEMPLATE_HASH_LENGTH = 10
NAME_SUFFIX_LENGTH = 5
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_SURGE_AND_UNAVAILABLE = "25%"
RESYNC_SECONDS = 5.0
"""Re-examine every Deployment this often even without events: the progress deadline is a
matter of time passing, not of any object changing."""


def _safe_encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    characters = []
    for _ in range(length):
        number, index = divmod(number, len(SAFE_ALPHABET))
        characters.append(SAFE_ALPHABET[index])
    return "".join(characters)


def template_hash(template: dict[str, Any]) -> str:
    """A stable digest of the pod template: equal templates hash equal whatever their key
    order, and the `pod-template-hash` label (added to pods, not part of the template) is left
    out, so the hash of a pod's template is that of the Deployment's."""
    canonical = json.loads(json.dumps(template))
    labels = (canonical.get("metadata") or {}).get("labels") or {}
    labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return _safe_encode(hashlib.sha256(encoded).digest(), TEMPLATE_HASH_LENGTH)


def random_suffix() -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(NAME_SUFFIX_LENGTH))


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


def owned_by(pod: dict[str, Any], deployment: dict[str, Any]) -> bool:
    uid = deployment["metadata"].get("uid")
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def _pod_hash(pod: dict[str, Any]) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)


def _terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def in_deletion_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which pods go first when there are too many: not ready before ready, and among those
    the newest (the ones that have served least), as the ReplicaSet controller prefers."""
    newest_first = sorted(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "",
                          reverse=True)
    return sorted(newest_first, key=pod_is_ready)  # stable: keeps newest first within each


@dataclass
class DeploymentPods:
    """A Deployment's pods, sorted by what the controller does with them."""

    current: list[dict[str, Any]] = field(default_factory=list)
    """Running or pending pods of the current template."""
    old: list[dict[str, Any]] = field(default_factory=list)
    """Running or pending pods of an earlier template."""
    terminating: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    """Failed or Succeeded pods: they never run again and are replaced."""

    @property
    def live(self) -> list[dict[str, Any]]:
        return self.current + self.old


def classify(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> DeploymentPods:
    wanted = template_hash((deployment.get("spec") or {}).get("template") or {})
    namespace = deployment["metadata"].get("namespace", "default")
    result = DeploymentPods()
    for pod in pods:
        if pod["metadata"].get("namespace", "default") != namespace:
            continue
        if not owned_by(pod, deployment):
            continue
        if _terminating(pod):
            result.terminating.append(pod)
        elif _finished(pod):
            result.finished.append(pod)
        elif _pod_hash(pod) == wanted:
            result.current.append(pod)
        else:
            result.old.append(pod)
    return result


@dataclass
class Plan:
    """What to do now: how many pods of the current template to create, which pods to delete."""

    create: int = 0
    delete: list[dict[str, Any]] = field(default_factory=list)


def plan_deployment(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> Plan:
    """One step towards `spec.replicas` ready pods of the current template.

    Called again after every change, so each step only has to be safe, not complete: with
    RollingUpdate it creates new pods up to replicas + surge and deletes old ones while at least
    replicas - maxUnavailable pods stay ready; with Recreate it deletes every old pod and
    creates new ones only once the old ones are gone.
    """
    if _terminating(deployment):
        return Plan()
    groups = classify(deployment, pods)
    replicas = desired_replicas(deployment)
    plan = Plan(delete=list(groups.finished))
    recreate = ((deployment.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate"
    if recreate and (groups.old or any(_pod_hash(p) != _current_hash(deployment)
                                       for p in groups.terminating)):
        plan.delete += groups.old
        return plan
    if not groups.old:
        surplus = len(groups.current) - replicas
        if surplus > 0:
            plan.delete += in_deletion_order(groups.current)[:surplus]
        else:
            plan.create = -surplus
        return plan
    limits = rollout_limits(deployment)
    plan.create = max(0, min(replicas - len(groups.current),
                             replicas + limits.surge - len(groups.live)))
    surplus_current = len(groups.current) - replicas
    if surplus_current > 0:
        plan.delete += in_deletion_order(groups.current)[:surplus_current]
    ready = sum(1 for pod in groups.live if pod_is_ready(pod))
    ready_removable = max(0, ready - (replicas - limits.unavailable))
    for pod in in_deletion_order(groups.old):
        if not pod_is_ready(pod):
            plan.delete.append(pod)  # costs no availability
        elif ready_removable > 0:
            plan.delete.append(pod)
            ready_removable -= 1
    return plan


def _current_hash(deployment: dict[str, Any]) -> str:
    return template_hash((deployment.get("spec") or {}).get("template") or {})


def new_pod(deployment: dict[str, Any], suffix: str) -> dict[str, Any]:
    """A pod of the Deployment's current template (what its ReplicaSet would create)."""
    meta = deployment["metadata"]
    template = json.loads(json.dumps((deployment.get("spec") or {}).get("template") or {}))
    template_meta = template.get("metadata") or {}
    pod_hash = _current_hash(deployment)
    labels = {**(template_meta.get("labels") or {}), POD_TEMPLATE_HASH_LABEL: pod_hash}
    pod_meta: dict[str, Any] = {
        "name": f"{meta['name']}-{pod_hash}-{suffix}",
        "namespace": meta.get("namespace", "default"),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": template.get("spec") or {}}


def _condition(kind: str, status: str, reason: str, message: str, now: str,
               previous: dict[str, dict[str, Any]], *, touched: bool = False) -> dict[str, Any]:
    """A condition; lastTransitionTime moves only when the status flips, lastUpdateTime when
    anything about it changes or `touched` (progress was made: Kubernetes' semantics)."""
    old = previous.get(kind) or {}
    unchanged = old.get("status") == status
    same = unchanged and old.get("reason") == reason and old.get("message") == message
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": old.get("lastUpdateTime", now) if same and not touched else now,
        "lastTransitionTime": old.get("lastTransitionTime", now) if unchanged else now,
    }


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


def deployment_status(
    deployment: dict[str, Any], pods: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """The status Kubernetes' controller would write, from the pods as they are now.

    `replicas` counts live pods (terminating ones excluded), so Helm's kstatus reports the
    rollout in progress while there are more or fewer than `spec.replicas`; Progressing is True
    with reason NewReplicaSetAvailable only once every pod is of the current template and ready,
    and no old pod is left. Without progress for `progressDeadlineSeconds` (default 600) it
    turns False with reason ProgressDeadlineExceeded, which Helm reports as a failure.
    """
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    groups = classify(deployment, pods)
    replicas = desired_replicas(deployment)
    limits = rollout_limits(deployment)
    ready = sum(1 for pod in groups.live if pod_is_ready(pod))
    current_ready = sum(1 for pod in groups.current if pod_is_ready(pod))
    new_set = f"{deployment['metadata']['name']}-{_current_hash(deployment)}"
    previous_status = deployment.get("status") or {}
    previous = {c.get("type"): c for c in previous_status.get("conditions") or []}
    status: dict[str, Any] = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(groups.live),
        "updatedReplicas": len(groups.current),
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    if replicas > ready:
        status["unavailableReplicas"] = replicas - ready

    if ready >= replicas - limits.unavailable:
        available = _condition("Available", "True", "MinimumReplicasAvailable",
                               "Deployment has minimum availability.", stamp, previous)
    else:
        available = _condition("Available", "False", "MinimumReplicasUnavailable",
                               "Deployment does not have minimum availability.", stamp, previous)

    complete = (len(groups.current) == replicas == current_ready
                and not groups.old and not groups.terminating)
    progressed = _progress_marks(status) != _progress_marks(previous_status)
    last = previous.get("Progressing") or {}
    deadline = (deployment.get("spec") or {}).get(
        "progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    if complete:
        progressing = _condition("Progressing", "True", "NewReplicaSetAvailable",
                                 f'ReplicaSet "{new_set}" has successfully progressed.',
                                 stamp, previous)
    elif not progressed and (
        last.get("reason") == "ProgressDeadlineExceeded"
        or (last.get("reason") == "ReplicaSetUpdated"
            and _seconds_since(last.get("lastUpdateTime", stamp), now) > deadline)
    ):
        progressing = _condition("Progressing", "False", "ProgressDeadlineExceeded",
                                 f'ReplicaSet "{new_set}" has timed out progressing.',
                                 stamp, previous)
    else:
        progressing = _condition("Progressing", "True", "ReplicaSetUpdated",
                                 f'ReplicaSet "{new_set}" is progressing.', stamp, previous,
                                 touched=progressed)
    status["conditions"] = [available, progressing]
    return status


def status_differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing `new` changes anything (a rewrite would wake every watcher)."""
    return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)


class DeploymentController:
    """Watches Deployments and pods through the API and applies `plan_deployment` and
    `deployment_status`, like any controller (bearer token, REST, list+watch)."""

    def __init__(self, *, api_url: str, token: str, resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self._loop = ReconcileLoop(self.api, self._reconcile_all, name="deployment controller",
                                   log=log, resync_seconds=resync_seconds)
        self.deployments = self._loop.informer("/apis/apps/v1/deployments")
        self.pods = self._loop.informer("/api/v1/pods")

    async def start(self) -> None:
        """Sync both caches, then reconcile on every change (and every resync period)."""
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile_all(self) -> None:
        """One pass over every Deployment. A failing one is logged and looked at again on the
        next pass, at once and without a pause: it must not hold up the others."""
        for deployment in list(self.deployments.cache.values()):
            try:
                await self._reconcile(deployment)
            except Exception:
                log.exception("deployment %s/%s", *object_key(deployment))
                self._loop.wake()

    async def _reconcile(self, deployment: dict[str, Any]) -> None:
        pods = list(self.pods.cache.values())
        plan = plan_deployment(deployment, pods)
        namespace, name = object_key(deployment)
        for pod in plan.delete:
            await self._delete_pod(pod)
        for _ in range(plan.create):
            await self._create_pod(deployment)
        if plan.delete or plan.create:
            pods = list(self.pods.cache.values())
        status = deployment_status(deployment, pods, datetime.now(UTC))
        if not status_differs(deployment.get("status") or {}, status):
            return
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"
        try:
            written = await self.api.merge_patch(path, {"status": status})
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        # The informer will deliver this too; caching it now keeps the next pass from
        # comparing against a stale status and writing it again.
        self.deployments.cache[(namespace, name)] = written

    async def _create_pod(self, deployment: dict[str, Any]) -> None:
        namespace = deployment["metadata"].get("namespace", "default")
        for _ in range(5):
            pod = new_pod(deployment, random_suffix())
            try:
                created = await self.api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
            except ApiError as exc:
                if exc.status == 409 and (exc.body or {}).get("reason") == "AlreadyExists":
                    continue  # a suffix collision: draw another
                raise
            # Seen at once, so the next pass does not create it again before the watch
            # delivers it (the ReplicaSet controller's "expectations").
            self.pods.cache[object_key(created)] = created
            return

    async def _delete_pod(self, pod: dict[str, Any]) -> None:
        namespace, name = object_key(pod)
        uid = pod["metadata"].get("uid")
        try:
            reply = await self.api.delete(
                f"/api/v1/namespaces/{namespace}/pods/{name}",
                {"kind": "DeleteOptions", "apiVersion": "v1",
                 "preconditions": {"uid": uid}},
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                self.pods.cache.pop((namespace, name), None)
                return
            raise
        if isinstance(reply, dict) and reply.get("kind") == "Pod":
            self.pods.cache[(namespace, name)] = reply  # terminating: deletionTimestamp set
        else:
            self.pods.cache.pop((namespace, name), None)
