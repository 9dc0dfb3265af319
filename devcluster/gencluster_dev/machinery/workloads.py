"""What the workload controllers (ReplicaSet, Deployment, StatefulSet, Job, DaemonSet) read and
make the same way: template hashes, generated names, controller references, pods from a
template, the order surplus pods go in, and conditions (pure)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gencluster_dev.machinery.pods import pod_is_ready

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""Kubernetes' alphabet for generated names and hashes (no vowels, no look-alike digits)."""
TEMPLATE_HASH_LENGTH = 10
NAME_SUFFIX_LENGTH = 5


def _safe_encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    characters = []
    for _ in range(length):
        number, index = divmod(number, len(SAFE_ALPHABET))
        characters.append(SAFE_ALPHABET[index])
    return "".join(characters)


def _without_empty(value: Any) -> Any:
    """`value` without nulls, empty objects and empty lists, at any depth: how Go clients
    write an unset field (`creationTimestamp: null`, `resources: {}`) and how others leave it
    out must not make two equal templates differ."""
    if isinstance(value, dict):
        cleaned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def template_hash(template: dict[str, Any], *, ignore_labels: Iterable[str] = (
        POD_TEMPLATE_HASH_LABEL,)) -> str:
    """A stable digest of a pod template: equal templates hash equal whatever their key order
    or their unset fields' spelling, and the hash labels a controller adds (not part of the
    user's template) are left out, so a ReplicaSet's template hashes like its Deployment's, and
    `kubectl rollout undo` (which writes a ReplicaSet's template back, as Go serialises it)
    finds that ReplicaSet again."""
    canonical = _without_empty(json.loads(json.dumps(template)))
    labels = (canonical.get("metadata") or {}).get("labels") or {}
    for label in ignore_labels:
        labels.pop(label, None)
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return _safe_encode(hashlib.sha256(encoded).digest(), TEMPLATE_HASH_LENGTH)


def random_suffix() -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(NAME_SUFFIX_LENGTH))


def controller_ref(owner: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference a controller puts on what it creates."""
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in obj["metadata"].get("ownerReferences") or [])


def children(owner: dict[str, Any], objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects of the owner's namespace that it controls."""
    namespace = owner["metadata"].get("namespace", "")
    return [o for o in objects if o["metadata"].get("namespace", "") == namespace
            and controlled_by(o, owner)]


def terminating(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def live(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods that run or will: neither terminating nor finished."""
    return [p for p in pods if not terminating(p) and not finished(p)]


def in_deletion_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which pods go first when there are too many: not ready before ready, and among those
    the newest (the ones that have served least), as the ReplicaSet controller prefers."""
    newest_first = sorted(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "",
                          reverse=True)
    return sorted(newest_first, key=pod_is_ready)  # stable: keeps newest first within each


def pod_from_template(owner: dict[str, Any], template: dict[str, Any], name: str, *,
                      labels: dict[str, str] | None = None,
                      spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod of `owner`'s template: its labels (plus `labels`), annotations, spec (or `spec`),
    and a controller reference to the owner."""
    template = json.loads(json.dumps(template))
    template_meta = template.get("metadata") or {}
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"].get("namespace", "default"),
        "labels": {**(template_meta.get("labels") or {}), **(labels or {})},
        "ownerReferences": [controller_ref(owner)],
    }
    if template_meta.get("annotations"):
        meta["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": spec if spec is not None else template.get("spec") or {}}


def rfc3339(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: str, reason: str, message: str, now: str,
              previous: dict[str, dict[str, Any]], *, touched: bool = False,
              probe_times: bool = False) -> dict[str, Any]:
    """A condition; lastTransitionTime moves only when the status flips, lastUpdateTime (or
    lastProbeTime, Jobs' name for it) when anything about it changes or `touched`."""
    old = previous.get(kind) or {}
    unchanged = old.get("status") == status
    same = unchanged and old.get("reason") == reason and old.get("message") == message
    update_key = "lastProbeTime" if probe_times else "lastUpdateTime"
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        update_key: old.get(update_key, now) if same and not touched else now,
        "lastTransitionTime": old.get("lastTransitionTime", now) if unchanged else now,
    }


def differs(old: Any, new: Any) -> bool:
    """Whether writing `new` changes anything (a rewrite would wake every watcher)."""
    return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)


JOB_CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def default_job(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    """kube-apiserver's defaults for a new Job (its uid already set), and the causes of a 422
    for what it refuses: the generated selector and template labels, `parallelism`,
    `completions`, `backoffLimit`, `completionMode`, `suspend`, `podReplacementPolicy`; a
    template `restartPolicy` of OnFailure or Never; a template that matches its selector."""
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    labels = template_meta.setdefault("labels", {})
    if not spec.get("manualSelector"):
        for key in JOB_CONTROLLER_UID_LABELS:
            labels[key] = meta["uid"]
        for key in JOB_NAME_LABELS:
            labels[key] = meta["name"]
        if not spec.get("selector"):
            spec["selector"] = {"matchLabels": {JOB_CONTROLLER_UID_LABELS[0]: meta["uid"]}}
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    causes: list[tuple[str, str, str]] = []
    restart = (template.get("spec") or {}).get("restartPolicy")
    if restart not in ("OnFailure", "Never"):
        causes.append(("FieldValueRequired" if restart is None else "FieldValueNotSupported",
                       "spec.template.spec.restartPolicy",
                       'Required value: valid values: "OnFailure", "Never"' if restart is None
                       else f'Unsupported value: "{restart}": supported values: '
                            '"OnFailure", "Never"'))
    if spec.get("completionMode") not in ("NonIndexed", "Indexed"):
        causes.append(("FieldValueNotSupported", "spec.completionMode",
                       f'Unsupported value: "{spec.get("completionMode")}": supported values: '
                       '"NonIndexed", "Indexed"'))
    elif spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        causes.append(("FieldValueRequired", "spec.completions",
                       "Required value: when completion mode is Indexed"))
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match_labels.items()):
        causes.append(("FieldValueInvalid", "spec.template.metadata.labels",
                       "Invalid value: `selector` does not match template `labels`"))
    return causes


def default_stateful_set(obj: dict[str, Any]) -> None:
    """kube-apiserver's defaults for a StatefulSet's spec."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                       "rollingUpdate": {"partition": 0}})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy",
                    {"whenDeleted": "Retain", "whenScaled": "Retain"})
    for claim in spec.get("volumeClaimTemplates") or []:
        claim_spec = claim.setdefault("spec", {})
        claim_spec.setdefault("volumeMode", "Filesystem")
        claim.setdefault("status", {"phase": "Pending"})


def default_daemon_set(obj: dict[str, Any]) -> None:
    """kube-apiserver's defaults for a DaemonSet's spec."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
        "maxUnavailable": 1, "maxSurge": 0}})
    spec.setdefault("revisionHistoryLimit", 10)


WORKLOAD_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"})


def default_pod_template(template: dict[str, Any]) -> None:
    """The defaults kube-apiserver gives a pod template (the Pod defaults that are not
    admission's: no service account, priority or tolerations)."""
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for group in ("containers", "initContainers"):
        for container in spec.get(group) or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image", ""))
            tagless = ":" not in image.rsplit("/", 1)[-1]
            container.setdefault(
                "imagePullPolicy",
                "Always" if tagless or image.endswith(":latest") else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def default_workload(kind: str, obj: dict[str, Any]) -> None:
    """kube-apiserver's defaults for a workload's spec and pod template, at every write (so a
    PUT that leaves them out changes nothing). A Job's generated selector is `default_job`'s,
    on create."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if kind == "Deployment":
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if isinstance(strategy, dict) and strategy.get("type", "RollingUpdate") == (
                "RollingUpdate"):
            strategy.setdefault("type", "RollingUpdate")
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxSurge", "25%")
                rolling.setdefault("maxUnavailable", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "ReplicaSet":
        spec.setdefault("replicas", 1)
    elif kind == "StatefulSet":
        default_stateful_set(obj)
    elif kind == "DaemonSet":
        default_daemon_set(obj)
    template = spec.get("template")
    if isinstance(template, dict):
        if kind == "Job":
            restart = (template.get("spec") or {}).get("restartPolicy")
            default_pod_template(template)
            if restart is None and isinstance(template.get("spec"), dict):
                del template["spec"]["restartPolicy"]  # a Job's must be given (422)
        else:
            default_pod_template(template)


CONTROLLER_HASH_LABEL = "controller.kubernetes.io/hash"


def revision_number(revision: dict[str, Any]) -> int:
    try:
        return int(revision.get("revision") or 0)
    except (TypeError, ValueError):
        return 0


def controller_revision(owner: dict[str, Any], name: str, number: int, digest: str
                        ) -> dict[str, Any]:
    """The ControllerRevision of `owner`'s current pod template, as the StatefulSet and
    DaemonSet controllers write it: `data` is the patch that puts the template back
    (`{"spec": {"template": {..., "$patch": "replace"}}}`, what `kubectl rollout undo`
    applies), labelled with the owner's `matchLabels` and the template's hash."""
    spec = owner.get("spec") or {}
    template = json.loads(json.dumps(spec.get("template") or {}))
    template["$patch"] = "replace"
    labels = {**((spec.get("selector") or {}).get("matchLabels") or {}),
              CONTROLLER_HASH_LABEL: digest}
    return {
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": name, "namespace": owner["metadata"].get("namespace", "default"),
                     "labels": labels, "ownerReferences": [controller_ref(owner)]},
        "data": {"spec": {"template": template}},
        "revision": number,
    }


@dataclass
class RevisionPlan:
    """What keeps an owner's ControllerRevisions current: the revision to create, one to
    renumber as the latest (a rollback to it), old ones beyond the history limit to delete."""

    create: dict[str, Any] | None = None
    renumber: dict[str, int] = field(default_factory=dict)
    delete: list[dict[str, Any]] = field(default_factory=list)


def plan_revisions(owner: dict[str, Any], revisions: list[dict[str, Any]], name: str,
                   digest: str, in_use: set[str]) -> RevisionPlan:
    """`name` is the revision of the owner's current template; `in_use` the revision names
    its pods still run (never deleted)."""
    plan = RevisionPlan()
    if terminating(owner):
        return plan
    owned = sorted(children(owner, revisions), key=revision_number)
    newest = max((revision_number(r) for r in owned), default=0)
    current = next((r for r in owned if r["metadata"]["name"] == name), None)
    if current is None:
        plan.create = controller_revision(owner, name, newest + 1, digest)
    elif revision_number(current) < newest:
        plan.renumber[name] = newest + 1
    limit = int((owner.get("spec") or {}).get("revisionHistoryLimit", 10))
    old = [r for r in owned if r["metadata"]["name"] != name
           and r["metadata"]["name"] not in in_use and not terminating(r)]
    if len(old) > limit:
        plan.delete = old[:len(old) - limit]
    return plan
