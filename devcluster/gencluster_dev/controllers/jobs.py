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

`completionMode: Indexed`: each index 0..completions-1 needs one Succeeded pod; a pod of index
i is named `<job>-<i>-<random 5>`, carries the annotation and label
`batch.kubernetes.io/job-completion-index: i`, the hostname `<job>-<i>` and, in every
container, `JOB_COMPLETION_INDEX` (from that annotation, through the downward API, as
Kubernetes injects it); the lowest indexes neither succeeded nor running are started first,
and `status.completedIndexes` lists the succeeded ones ("0-2,4"). `suspend: true` deletes the
active pods, starts none, clears `startTime` (the deadline does not run while suspended) and
sets the condition `Suspended` (`JobSuspended`); resuming sets it False (`JobResumed`) and
starts again.

Not done: pod failure and success policies, per-index back-off limits, the
exponential back-off between failed pods (a failed pod is replaced at once), `ttlSecondsAfter
Finished`, pod tracking finalizers. `plan_job` is pure; `JobController` is the shell.
"""

from __future__ import annotations

import json
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


COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""The annotation (and label) that gives an Indexed Job's pod its index."""
INDEX_ENV = "JOB_COMPLETION_INDEX"


def pod_index(pod: dict[str, Any]) -> int | None:
    """The completion index of an Indexed Job's pod (None: none or not a number)."""
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX)
    return int(text) if isinstance(text, str) and text.isdigit() else None


def index_ranges(indexes: set[int]) -> str:
    """`status.completedIndexes`: sorted indexes with runs written `a-b` ("0-2,4")."""
    parts: list[str] = []
    run: list[int] = []
    for index in sorted(indexes):
        if run and index == run[-1] + 1:
            run.append(index)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [index]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def indexed_pod_spec(job: dict[str, Any], template_spec: dict[str, Any],
                     index: int) -> dict[str, Any]:
    """The template's pod spec for index `index`: hostname `<job>-<index>` and
    `JOB_COMPLETION_INDEX` in every container (unless the container sets it itself)."""
    spec = json.loads(json.dumps(template_spec))
    spec.setdefault("hostname", f"{job['metadata']['name']}-{index}")
    source = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            env = container.setdefault("env", [])
            if not any(item.get("name") == INDEX_ENV for item in env):
                env.insert(0, {"name": INDEX_ENV, "valueFrom": source})
    return spec


def finished_condition(job: dict[str, Any]) -> str | None:
    """"Complete" or "Failed" once the Job is over, else None."""
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") in ("Complete", "Failed") and item.get("status") == "True":
            return str(item["type"])
    return None


@dataclass
class JobPlan:
    create: int = 0
    #: the completion indexes of the pods to create (Indexed Jobs; `create` of them)
    create_indexes: list[int] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def plan_job(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> JobPlan:
    """Pods to create or delete, and the status to write, from the Job's pods as they are."""
    spec = job.get("spec") or {}
    stamp = rfc3339(now)
    owned = children(job, pods)
    active = live(owned)
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    succeeded_indexes = {i for p in owned if _phase(p) == "Succeeded"
                         and (i := pod_index(p)) is not None
                         and completions is not None and i < int(completions)}
    succeeded = (len(succeeded_indexes) if indexed
                 else sum(1 for p in owned if _phase(p) == "Succeeded"))
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
    if indexed:
        status["completedIndexes"] = index_ranges(succeeded_indexes)
    done = finished_condition(job)
    suspended = bool(spec.get("suspend")) and done is None
    if suspended:
        status["startTime"] = None  # merge patch: removed, so the deadline restarts on resume
        conditions = _set_suspended(conditions, previous, True, stamp)
    elif "Suspended" in previous and done is None:
        conditions = _set_suspended(conditions, previous, False, stamp)
    parallelism = int(spec.get("parallelism", 1))
    backoff_limit = int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
    deadline = spec.get("activeDeadlineSeconds")
    if done is None and not terminating(job) and not suspended:
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
    if done is not None or terminating(job) or suspended:
        plan.delete = list(active)
        status["active"] = 0
    elif indexed and completions is not None:
        running = {pod_index(p) for p in active}
        pending = [i for i in range(int(completions))
                   if i not in succeeded_indexes and i not in running]
        room = max(0, min(parallelism, int(completions) - succeeded) - len(active))
        plan.create_indexes = pending[:room]
        plan.create = len(plan.create_indexes)
        status["active"] = len(active) + plan.create
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


def _set_suspended(conditions: list[dict[str, Any]], previous: dict[str, dict[str, Any]],
                   suspended: bool, stamp: str) -> list[dict[str, Any]]:
    """The conditions with `Suspended` True (JobSuspended) or False (JobResumed)."""
    reason, message = (("JobSuspended", "Job suspended") if suspended
                       else ("JobResumed", "Job resumed"))
    kept = [c for c in conditions if c.get("type") != "Suspended"]
    return [*kept, condition("Suspended", "True" if suspended else "False", reason, message,
                             stamp, previous, probe_times=True)]


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
        pods = [pod_from_template(job, template, f"{name}-{random_suffix()}")
                for _ in range(plan.create - len(plan.create_indexes))]
        for index in plan.create_indexes:
            pod = pod_from_template(job, template, f"{name}-{index}-{random_suffix()}",
                                    labels={COMPLETION_INDEX: str(index)},
                                    spec=indexed_pod_spec(job, template.get("spec") or {},
                                                          index))
            pod["metadata"].setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
            pods.append(pod)
        for pod in pods:
            if await writes.create(self.api, f"/api/v1/namespaces/{namespace}/pods", pod,
                                   self.pods, who=who) is None:
                plan.status["active"] -= 1
        # None marks a field the merge patch removes (startTime of a suspended Job)
        wanted = {key: value for key, value in plan.status.items() if value is not None}
        if differs(job.get("status") or {}, wanted):
            await writes.merge_patch(
                self.api, f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
                {"status": plan.status}, self.jobs, who=who)
