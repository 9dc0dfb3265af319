"""Job controller (batch/v1): pods until `completions` succeed, at most `parallelism` at once,
giving up after `backoffLimit` failed pods or `activeDeadlineSeconds`.

Pods are named `<job>-<random 5>` from the template (whose labels the API server defaulted to
`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name`, `controller-uid` and
`job-name`), with a controller reference to the Job. Counting is by pod phase: a Succeeded pod
is a completion, a Failed pod a failure (with `restartPolicy: OnFailure` the kubelet restarts
the container in place, and only a pod that ends Failed counts). Done: conditions
`SuccessCriteriaMet` then `Complete` (what `kubectl wait --for=condition=complete` reads) with
`completionTime`, or `FailureTarget` then `Failed` (reasons `BackoffLimitExceeded`,
`DeadlineExceeded`); the active pods of a finished Job are deleted. Without `completions`
(a work queue), the Job completes once a pod has succeeded and none is active.

Not done: `completionMode: Indexed`, `suspend`, pod failure and success policies, the
exponential back-off between failed pods (a failed pod is replaced at once), `ttlSecondsAfter
Finished`, pod tracking finalizers. `plan_job` is pure; `JobController` is the shell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gencluster_dev.client import writes
from gencluster_dev.client.apiclient import ApiClient, object_key
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.pods import pod_is_ready
from gencluster_dev.machinery.workloads import (
    children,
    condition,
    differs,
    live,
    pod_from_template,
    random_suffix,
    rfc3339,
    terminating,
)

log = logging.getLogger(__name__)
RESYNC_SECONDS = 5.0
"""activeDeadlineSeconds is a matter of time passing, not of any object changing."""
DEFAULT_BACKOFF_LIMIT = 6


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _seconds_between(start: str, now: datetime) -> float:
    try:
        then = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (now - then).total_seconds()


def finished_condition(job: dict[str, Any]) -> str | None:
    """"Complete" or "Failed" once the Job is over, else None."""
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") in ("Complete", "Failed") and item.get("status") == "True":
            return str(item["type"])
    return None


@dataclass
class JobPlan:
    create: int = 0
    delete: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def plan_job(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> JobPlan:
    """Pods to create or delete, and the status to write, from the Job's pods as they are."""
    spec = job.get("spec") or {}
    stamp = rfc3339(now)
    owned = children(job, pods)
    active = live(owned)
    succeeded = sum(1 for p in owned if _phase(p) == "Succeeded")
    failed = sum(1 for p in owned if _phase(p) == "Failed")
    previous_status = job.get("status") or {}
    previous = {c.get("type"): c for c in previous_status.get("conditions") or []}
    conditions = [c for c in previous_status.get("conditions") or []]
    plan = JobPlan()
    status: dict[str, Any] = {
        "startTime": previous_status.get("startTime", stamp),
        "succeeded": succeeded,
        "failed": failed,
        "ready": sum(1 for p in active if pod_is_ready(p)),
        "terminating": sum(1 for p in owned if terminating(p)),
        "uncountedTerminatedPods": {},
    }
    for key in ("completionTime",):
        if key in previous_status:
            status[key] = previous_status[key]
    done = finished_condition(job)
    completions = spec.get("completions")
    parallelism = int(spec.get("parallelism", 1))
    backoff_limit = int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
    deadline = spec.get("activeDeadlineSeconds")
    if done is None and not terminating(job):
        failure: tuple[str, str] | None = None
        if failed > backoff_limit:
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and _seconds_between(status["startTime"], now) > int(
                deadline):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        complete = (succeeded >= int(completions) if completions is not None
                    else succeeded > 0 and not active)
        if failure is not None:
            conditions += [condition("FailureTarget", "True", failure[0], failure[1], stamp,
                                     previous, probe_times=True),
                           condition("Failed", "True", failure[0], failure[1], stamp, previous,
                                     probe_times=True)]
            done = "Failed"
        elif complete:
            conditions += [
                condition("SuccessCriteriaMet", "True", "CompletionsReached",
                          "Reached expected number of succeeded pods", stamp, previous,
                          probe_times=True),
                condition("Complete", "True", "CompletionsReached",
                          "Reached expected number of succeeded pods", stamp, previous,
                          probe_times=True)]
            status["completionTime"] = stamp
            done = "Complete"
    if done is not None or terminating(job):
        plan.delete = list(active)
        status["active"] = 0
    else:
        remaining = (int(completions) - succeeded if completions is not None
                     else parallelism)
        wanted = max(0, min(parallelism, remaining))
        plan.create = max(0, wanted - len(active))
        status["active"] = len(active) + plan.create
    if conditions:
        status["conditions"] = conditions
    plan.status = status
    return plan


class JobController:
    """Watches Jobs and pods; applies `plan_job`."""

    def __init__(self, *, api_url: str, token: str,
                 resync_seconds: float = RESYNC_SECONDS) -> None:
        self.api = ApiClient(api_url, token)
        self._loop = ReconcileLoop(self.api, self._reconcile_all, name="job controller",
                                   log=log, resync_seconds=resync_seconds)
        self.jobs = self._loop.informer("/apis/batch/v1/jobs")
        self.pods = self._loop.informer("/api/v1/pods")

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reconcile_all(self) -> None:
        await self._loop.each(list(self.jobs.cache.values()), self._reconcile)

    async def _reconcile(self, job: dict[str, Any]) -> None:
        namespace, name = object_key(job)
        who = f"job {namespace}/{name}"
        plan = plan_job(job, list(self.pods.cache.values()), datetime.now(UTC))
        for pod in plan.delete:
            await writes.delete(self.api, f"/api/v1/namespaces/{namespace}/pods/"
                                f"{pod['metadata']['name']}", pod, self.pods, who=who)
        template = (job.get("spec") or {}).get("template") or {}
        for _ in range(plan.create):
            pod = pod_from_template(job, template, f"{name}-{random_suffix()}")
            if await writes.create(self.api, f"/api/v1/namespaces/{namespace}/pods", pod,
                                   self.pods, who=who) is None:
                plan.status["active"] -= 1
        if differs(job.get("status") or {}, plan.status):
            await writes.merge_patch(
                self.api, f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
                {"status": plan.status}, self.jobs, who=who)
