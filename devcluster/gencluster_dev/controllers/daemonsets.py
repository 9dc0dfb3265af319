"""DaemonSet controller (apps/v1): one pod of the template on every node that fits it (the
plane has one node, the kubelet's).

A node fits when it is not being deleted and matches the template's `nodeSelector`. The pod,
named `<set>-<random 5>`, is bound to the node (`spec.nodeName`) and labelled
`controller-revision-hash` (a digest of the template) and `pod-template-generation`, with a
controller reference. A pod of an older template is replaced (`RollingUpdate`: deleted, then
created anew once it is gone; `OnDelete`: only when someone deletes it); a Failed or Succeeded
pod is deleted and created again; a pod on a node that no longer fits is deleted. `status`:
desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
numberAvailable, numberUnavailable, updatedNumberScheduled, observedGeneration (what
`kubectl rollout status daemonset/X` reads).

A ControllerRevision per template (`machinery.workloads.plan_revisions`) makes `kubectl
rollout history|undo daemonset/X` work. Not done: `maxSurge`, tolerations and taints,
`minReadySeconds`. `plan_daemon_set` is pure; `DaemonSetController` is the shell.
"""

from __future__ import annotations

import copy
import logging
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
    live,
    plan_revisions,
    pod_from_template,
    random_suffix,
    template_hash,
    terminating,
)

log = logging.getLogger(__name__)
RESYNC_SECONDS = 10.0
TEMPLATE_GENERATION_LABEL = "pod-template-generation"


def revision_hash(daemon_set: dict[str, Any]) -> str:
    template = (daemon_set.get("spec") or {}).get("template") or {}
    return template_hash(template, ignore_labels=(CONTROLLER_REVISION_HASH_LABEL,
                                                  TEMPLATE_GENERATION_LABEL))


def fits(daemon_set: dict[str, Any], node: dict[str, Any]) -> bool:
    if terminating(node):
        return False
    selector = ((daemon_set.get("spec") or {}).get("template") or {}).get(
        "spec", {}).get("nodeSelector") or {}
    labels = node["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def new_pod(daemon_set: dict[str, Any], node_name: str) -> dict[str, Any]:
    template = (daemon_set.get("spec") or {}).get("template") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    spec["nodeName"] = node_name
    return pod_from_template(
        daemon_set, template, f"{daemon_set['metadata']['name']}-{random_suffix()}",
        spec=spec, labels={
            CONTROLLER_REVISION_HASH_LABEL: revision_hash(daemon_set),
            TEMPLATE_GENERATION_LABEL: str(daemon_set["metadata"].get("generation", 1))})


@dataclass
class DaemonPlan:
    create: list[str] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)


def _node_of(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def plan_daemon_set(daemon_set: dict[str, Any], nodes: list[dict[str, Any]],
                    pods: list[dict[str, Any]]) -> DaemonPlan:
    plan = DaemonPlan()
    if terminating(daemon_set):
        return plan
    on_delete = ((daemon_set.get("spec") or {}).get("updateStrategy") or {}).get(
        "type") == "OnDelete"
    wanted = revision_hash(daemon_set)
    owned = children(daemon_set, pods)
    fitting = {n["metadata"]["name"] for n in nodes if fits(daemon_set, n)}
    for pod in owned:
        if terminating(pod):
            continue
        stale = (pod["metadata"].get("labels") or {}).get(
            CONTROLLER_REVISION_HASH_LABEL) != wanted
        if finished(pod) or _node_of(pod) not in fitting or (stale and not on_delete):
            plan.delete.append(pod)
    for node in sorted(fitting):
        if not any(_node_of(p) == node for p in owned):
            plan.create.append(node)
    return plan


def daemon_set_status(daemon_set: dict[str, Any], nodes: list[dict[str, Any]],
                      pods: list[dict[str, Any]]) -> dict[str, Any]:
    fitting = {n["metadata"]["name"] for n in nodes if fits(daemon_set, n)}
    running = live(children(daemon_set, pods))
    scheduled = {_node_of(p) for p in running}
    ready_nodes = {_node_of(p) for p in running if pod_is_ready(p)}
    wanted = revision_hash(daemon_set)
    updated = {_node_of(p) for p in running if (p["metadata"].get("labels") or {}).get(
        CONTROLLER_REVISION_HASH_LABEL) == wanted}
    status: dict[str, Any] = {
        "currentNumberScheduled": len(scheduled & fitting),
        "desiredNumberScheduled": len(fitting),
        "numberMisscheduled": len(scheduled - fitting),
        "numberReady": len(ready_nodes & fitting),
        "numberAvailable": len(ready_nodes & fitting),
        "updatedNumberScheduled": len(updated & fitting),
        "observedGeneration": daemon_set["metadata"].get("generation", 1),
    }
    if len(fitting - ready_nodes):
        status["numberUnavailable"] = len(fitting - ready_nodes)
    return status


class DaemonSetController:
    """Watches DaemonSets, nodes and pods; applies `plan_daemon_set`."""

    def __init__(self, *, api_url: str, token: str,
                 resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self._loop = ReconcileLoop(self.api, self._reconcile_all, name="daemonset controller",
                                   log=log, resync_seconds=resync_seconds)
        self.sets = self._loop.informer("/apis/apps/v1/daemonsets")
        self.nodes = self._loop.informer("/api/v1/nodes")
        self.pods = self._loop.informer("/api/v1/pods")
        self.revisions = self._loop.informer("/apis/apps/v1/controllerrevisions", wakes=False)

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile_all(self) -> None:
        await self._loop.each(list(self.sets.cache.values()), self._reconcile)

    async def _reconcile(self, daemon_set: dict[str, Any]) -> None:
        namespace, name = object_key(daemon_set)
        who = f"daemonset {namespace}/{name}"
        await self._sync_revisions(daemon_set, who)
        nodes = list(self.nodes.cache.values())
        plan = plan_daemon_set(daemon_set, nodes, list(self.pods.cache.values()))
        for pod in plan.delete:
            await writes.delete(self.api, f"/api/v1/namespaces/{namespace}/pods/"
                                f"{pod['metadata']['name']}", pod, self.pods, who=who)
        for node in plan.create:
            if await writes.create(self.api, f"/api/v1/namespaces/{namespace}/pods",
                                   new_pod(daemon_set, node), self.pods, who=who) is None:
                break
        status = daemon_set_status(daemon_set, nodes, list(self.pods.cache.values()))
        if differs(daemon_set.get("status") or {}, status):
            await writes.merge_patch(
                self.api, f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}/status",
                {"status": status}, self.sets, who=who)

    async def _sync_revisions(self, daemon_set: dict[str, Any], who: str) -> None:
        """The ControllerRevision of the current template (`kubectl rollout history|undo`)."""
        namespace, name = object_key(daemon_set)
        pods = children(daemon_set, list(self.pods.cache.values()))
        hashes = {(p["metadata"].get("labels") or {}).get(CONTROLLER_REVISION_HASH_LABEL)
                  for p in pods}
        in_use = {f"{name}-{h}" for h in hashes}
        digest = revision_hash(daemon_set)
        plan = plan_revisions(daemon_set, list(self.revisions.cache.values()),
                              f"{name}-{digest}", digest, in_use)
        base = f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions"
        if plan.create is not None:
            await writes.create(self.api, base, plan.create, self.revisions, who=who)
        for revision, number in plan.renumber.items():
            await writes.merge_patch(self.api, f"{base}/{revision}", {"revision": number},
                                     self.revisions, who=who)
        for old in plan.delete:
            await writes.delete(self.api, f"{base}/{old['metadata']['name']}", old,
                                self.revisions, who=who)
