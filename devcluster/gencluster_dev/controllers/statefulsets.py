"""StatefulSet controller (apps/v1): pods with stable names `<set>-0 .. <set>-(N-1)`, started
in order, each with its own PersistentVolumeClaims.

- Pod `<set>-<i>` gets the template's labels plus `statefulset.kubernetes.io/pod-name`,
  `apps.kubernetes.io/pod-index` and `controller-revision-hash` (`<set>-<template digest>`),
  `hostname: <set>-<i>` and `subdomain: <serviceName>`, and a controller reference.
- `volumeClaimTemplates`: claim `<template>-<set>-<i>` is created before pod i (labels: the
  template's and the set's `matchLabels`) and the pod's volume of that name points at it; claims
  are kept when pods or the set go (policy Retain, the default).
- `podManagementPolicy: OrderedReady` (default): pod i is created only once pods 0..i-1 are
  Running and Ready; scaling down removes the highest ordinal first, one at a time.
  `Parallel`: every missing pod at once, every surplus pod at once.
- `updateStrategy: RollingUpdate` (default; `partition` honoured): once every pod is Ready, the
  highest-ordinal pod of an older revision is deleted and comes back with the new template, one
  at a time. `OnDelete`: pods are replaced only when someone deletes them.
- Failed or Succeeded pods are deleted and created again.
- `status`: observedGeneration, replicas, readyReplicas, availableReplicas, currentReplicas,
  updatedReplicas, currentRevision, updateRevision, collisionCount (what `kubectl rollout
  status statefulset/X` reads).

A ControllerRevision per template (`machinery.workloads.plan_revisions`; its name is the
`updateRevision`) makes `kubectl rollout history|undo statefulset/X` work. Not done:
`minReadySeconds`, `persistentVolumeClaimRetentionPolicy: Delete`, `ordinals.start`.
`plan_stateful_set` is pure; `StatefulSetController` is the shell.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from gencluster_dev.client import writes
from gencluster_dev.client.apiclient import ApiClient, object_key
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready
from gencluster_dev.machinery.workloads import (
    CONTROLLER_REVISION_HASH_LABEL,
    children,
    differs,
    finished,
    plan_revisions,
    pod_from_template,
    template_hash,
    terminating,
)

log = logging.getLogger(__name__)
RESYNC_SECONDS = 10.0
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def update_revision(stateful_set: dict[str, Any]) -> str:
    template = (stateful_set.get("spec") or {}).get("template") or {}
    digest = template_hash(template, ignore_labels=(CONTROLLER_REVISION_HASH_LABEL,
                                                    POD_NAME_LABEL, POD_INDEX_LABEL))
    return f"{stateful_set['metadata']['name']}-{digest}"


def ordinal(stateful_set: dict[str, Any], pod: dict[str, Any]) -> int | None:
    match = re.fullmatch(re.escape(stateful_set["metadata"]["name"]) + r"-(\d+)",
                         pod["metadata"]["name"])
    return int(match.group(1)) if match else None


def claim_name(template: dict[str, Any], set_name: str, index: int) -> str:
    return f"{template['metadata']['name']}-{set_name}-{index}"


def claims_for(stateful_set: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The PersistentVolumeClaims pod `index` needs, as they are created."""
    spec = stateful_set.get("spec") or {}
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    claims = []
    for template in spec.get("volumeClaimTemplates") or []:
        meta = template.get("metadata") or {}
        claims.append({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": claim_name(template, stateful_set["metadata"]["name"], index),
                "namespace": stateful_set["metadata"].get("namespace", "default"),
                "labels": {**(meta.get("labels") or {}), **match_labels},
                **({"annotations": dict(meta["annotations"])} if meta.get("annotations")
                   else {}),
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        })
    return claims


def new_pod(stateful_set: dict[str, Any], index: int) -> dict[str, Any]:
    spec = stateful_set.get("spec") or {}
    set_name = stateful_set["metadata"]["name"]
    name = f"{set_name}-{index}"
    template = spec.get("template") or {}
    pod_spec = copy.deepcopy(template.get("spec") or {})
    pod_spec["hostname"] = name
    if spec.get("serviceName"):
        pod_spec["subdomain"] = spec["serviceName"]
    volumes = [v for v in pod_spec.get("volumes") or []]
    for claim_template in spec.get("volumeClaimTemplates") or []:
        volume_name = claim_template["metadata"]["name"]
        volumes = [v for v in volumes if v.get("name") != volume_name]
        volumes.append({"name": volume_name, "persistentVolumeClaim": {
            "claimName": claim_name(claim_template, set_name, index)}})
    if volumes:
        pod_spec["volumes"] = volumes
    return pod_from_template(stateful_set, template, name, spec=pod_spec, labels={
        POD_NAME_LABEL: name, POD_INDEX_LABEL: str(index),
        CONTROLLER_REVISION_HASH_LABEL: update_revision(stateful_set)})


@dataclass
class SetPlan:
    create: list[int] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)


def _revision(pod: dict[str, Any]) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH_LABEL)


def _running_and_ready(pod: dict[str, Any]) -> bool:
    return (not terminating(pod) and (pod.get("status") or {}).get("phase") == "Running"
            and pod_is_ready(pod))


def plan_stateful_set(stateful_set: dict[str, Any], pods: list[dict[str, Any]]) -> SetPlan:
    """One step: which ordinals to create, which pods to delete."""
    plan = SetPlan()
    if terminating(stateful_set):
        return plan
    spec = stateful_set.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    parallel = spec.get("podManagementPolicy") == "Parallel"
    by_index: dict[int, dict[str, Any]] = {}
    for pod in children(stateful_set, pods):
        index = ordinal(stateful_set, pod)
        if index is not None:
            by_index[index] = pod
    for index in range(replicas):
        pod = by_index.get(index)
        if pod is None:
            plan.create.append(index)
            if not parallel:
                return plan
        elif terminating(pod):
            if not parallel:
                return plan
        elif finished(pod):
            plan.delete.append(pod)
            if not parallel:
                return plan
        elif not _running_and_ready(pod) and not parallel:
            return plan
    surplus = sorted((i for i in by_index if i >= replicas), reverse=True)
    if surplus:
        if parallel:
            plan.delete += [by_index[i] for i in surplus if not terminating(by_index[i])]
        elif any(terminating(by_index[i]) for i in surplus):
            return plan
        else:
            plan.delete.append(by_index[surplus[0]])
        return plan
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return plan
    if plan.create or plan.delete:
        return plan
    partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
    wanted = update_revision(stateful_set)
    current = [by_index[i] for i in range(replicas) if i in by_index]
    if len(current) < replicas or not all(_running_and_ready(p) for p in current):
        return plan
    for index in range(replicas - 1, partition - 1, -1):
        if _revision(by_index[index]) != wanted:
            plan.delete.append(by_index[index])
            break
    return plan


def stateful_set_status(stateful_set: dict[str, Any], pods: list[dict[str, Any]]
                        ) -> dict[str, Any]:
    spec = stateful_set.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    owned = [p for p in children(stateful_set, pods)
             if ordinal(stateful_set, p) is not None and not terminating(p)
             and not finished(p)]
    wanted = update_revision(stateful_set)
    previous = stateful_set.get("status") or {}
    updated = sum(1 for p in owned if _revision(p) == wanted)
    ready = sum(1 for p in owned if pod_is_ready(p))
    current_revision = previous.get("currentRevision") or wanted
    if updated == replicas == len(owned):
        current_revision = wanted
    current = sum(1 for p in owned if _revision(p) == current_revision)
    return {
        "observedGeneration": stateful_set["metadata"].get("generation", 1),
        "replicas": len(owned),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": wanted,
        "collisionCount": 0,
    }


class StatefulSetController:
    """Watches StatefulSets, pods and claims; applies `plan_stateful_set`."""

    def __init__(self, *, api_url: str, token: str,
                 resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self._loop = ReconcileLoop(self.api, self._reconcile_all,
                                   name="statefulset controller", log=log,
                                   resync_seconds=resync_seconds)
        self.sets = self._loop.informer("/apis/apps/v1/statefulsets")
        self.pods = self._loop.informer("/api/v1/pods")
        self.revisions = self._loop.informer("/apis/apps/v1/controllerrevisions", wakes=False)
        self.claims = self._loop.informer("/api/v1/persistentvolumeclaims", wakes=False)

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile_all(self) -> None:
        await self._loop.each(list(self.sets.cache.values()), self._reconcile)

    async def _reconcile(self, stateful_set: dict[str, Any]) -> None:
        namespace, name = object_key(stateful_set)
        who = f"statefulset {namespace}/{name}"
        await self._sync_revisions(stateful_set, who)
        plan = plan_stateful_set(stateful_set, list(self.pods.cache.values()))
        for pod in plan.delete:
            await writes.delete(self.api, f"/api/v1/namespaces/{namespace}/pods/"
                                f"{pod['metadata']['name']}", pod, self.pods, who=who)
        for index in plan.create:
            if not await self._ensure_claims(stateful_set, index, who):
                break
            if await writes.create(self.api, f"/api/v1/namespaces/{namespace}/pods",
                                   new_pod(stateful_set, index), self.pods, who=who) is None:
                break
        status = stateful_set_status(stateful_set, list(self.pods.cache.values()))
        if differs({k: (stateful_set.get("status") or {}).get(k) for k in status}, status):
            await writes.merge_patch(
                self.api, f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/status",
                {"status": status}, self.sets, who=who)

    async def _ensure_claims(self, stateful_set: dict[str, Any], index: int, who: str) -> bool:
        namespace = stateful_set["metadata"].get("namespace", "default")
        for claim in claims_for(stateful_set, index):
            if (namespace, claim["metadata"]["name"]) in self.claims.cache:
                continue
            if await writes.create(self.api,
                                   f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
                                   claim, self.claims, who=who) is None:
                existing = await self.api.get_or_none(
                    f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/"
                    f"{claim['metadata']['name']}")
                if existing is None:
                    return False
        return True

    async def _sync_revisions(self, stateful_set: dict[str, Any], who: str) -> None:
        """The ControllerRevision of the current template (`kubectl rollout history|undo`)."""
        namespace = stateful_set["metadata"].get("namespace", "default")
        pods = children(stateful_set, list(self.pods.cache.values()))
        in_use = {_revision(p) or "" for p in pods}
        current = update_revision(stateful_set)
        plan = plan_revisions(stateful_set, list(self.revisions.cache.values()), current,
                              current.rsplit("-", 1)[1], in_use)
        base = f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions"
        if plan.create is not None:
            await writes.create(self.api, base, plan.create, self.revisions, who=who)
        for revision, number in plan.renumber.items():
            await writes.merge_patch(self.api, f"{base}/{revision}", {"revision": number},
                                     self.revisions, who=who)
        for old in plan.delete:
            await writes.delete(self.api, f"{base}/{old['metadata']['name']}", old,
                                self.revisions, who=who)
