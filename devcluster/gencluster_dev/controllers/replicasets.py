"""ReplicaSet controller: `spec.replicas` pods of `spec.template`, and the status that counts
them (what Deployments are made of, and what `kubectl get rs` and `rollout history` read).

Pods are named `<replicaset>-<random 5>`, carry the template's labels (a Deployment's
ReplicaSet template includes `pod-template-hash`) and a controller reference to the
ReplicaSet. Surplus pods go not-ready first, then newest first; finished pods (Succeeded or
Failed) are deleted and replaced. `status`: replicas (live pods), fullyLabeledReplicas,
readyReplicas, availableReplicas (`minReadySeconds` not honoured: ready is available),
observedGeneration. Not done: adoption of orphaned pods that match the selector.

`plan_replica_set` and `replica_set_status` are pure; `ReplicaSetController` is the shell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gencluster_dev.client import writes
from gencluster_dev.client.apiclient import ApiClient, object_key
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready
from gencluster_dev.machinery.workloads import (
    children,
    differs,
    finished,
    in_deletion_order,
    live,
    pod_from_template,
    random_suffix,
    terminating,
)

log = logging.getLogger(__name__)
RESYNC_SECONDS = 10.0


def desired(replica_set: dict[str, Any]) -> int:
    replicas = (replica_set.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


@dataclass
class Plan:
    create: int = 0
    delete: list[dict[str, Any]] = field(default_factory=list)


def plan_replica_set(replica_set: dict[str, Any], pods: list[dict[str, Any]]) -> Plan:
    """Pods to create and delete so that `spec.replicas` live pods exist."""
    if terminating(replica_set):
        return Plan()
    owned = children(replica_set, pods)
    running = live(owned)
    plan = Plan(delete=[p for p in owned if finished(p) and not terminating(p)])
    surplus = len(running) - desired(replica_set)
    if surplus > 0:
        plan.delete += in_deletion_order(running)[:surplus]
    else:
        plan.create = -surplus
    return plan


def replica_set_status(replica_set: dict[str, Any], pods: list[dict[str, Any]]
                       ) -> dict[str, Any]:
    running = live(children(replica_set, pods))
    template_labels = (((replica_set.get("spec") or {}).get("template") or {})
                       .get("metadata") or {}).get("labels") or {}
    labelled = [p for p in running
                if all((p["metadata"].get("labels") or {}).get(k) == v
                       for k, v in template_labels.items())]
    ready = sum(1 for p in running if pod_is_ready(p))
    return {
        "replicas": len(running),
        "fullyLabeledReplicas": len(labelled),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": replica_set["metadata"].get("generation", 1),
    }


class ReplicaSetController:
    """Watches ReplicaSets and pods; applies `plan_replica_set` and writes the status."""

    def __init__(self, *, api_url: str, token: str,
                 resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self._loop = ReconcileLoop(self.api, self._reconcile_all, name="replicaset controller",
                                   log=log, resync_seconds=resync_seconds)
        self.replica_sets = self._loop.informer("/apis/apps/v1/replicasets")
        self.pods = self._loop.informer("/api/v1/pods")

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile_all(self) -> None:
        await self._loop.each(list(self.replica_sets.cache.values()), self._reconcile)

    async def _reconcile(self, replica_set: dict[str, Any]) -> None:
        namespace, name = object_key(replica_set)
        who = f"replicaset {namespace}/{name}"
        plan = plan_replica_set(replica_set, list(self.pods.cache.values()))
        for pod in plan.delete:
            await writes.delete(self.api, f"/api/v1/namespaces/{namespace}/pods/"
                                f"{pod['metadata']['name']}", pod, self.pods, who=who)
        template = (replica_set.get("spec") or {}).get("template") or {}
        for _ in range(plan.create):
            pod = pod_from_template(replica_set, template, f"{name}-{random_suffix()}")
            if await writes.create(self.api, f"/api/v1/namespaces/{namespace}/pods", pod,
                                   self.pods, who=who) is None:
                break  # the namespace is going away, or a name collided: next pass
        status = replica_set_status(replica_set, list(self.pods.cache.values()))
        if differs({k: (replica_set.get("status") or {}).get(k) for k in status}, status):
            await writes.merge_patch(
                self.api, f"/apis/apps/v1/namespaces/{namespace}/replicasets/{name}/status",
                {"status": status}, self.replica_sets, who=who)
