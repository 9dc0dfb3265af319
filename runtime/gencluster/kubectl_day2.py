"""Day-2 verbs of `kubectl gencluster`: restart, reconcile pause|resume, hibernate on|off, and
the support bundle (`report`).

The first three only write what the operator acts on (a template annotation, or an annotation
on the ClusteredServer), so they need no more rights than `kubectl patch`/`annotate`; the
operator does the work and reports it in the status and Events. `report` reads, and never
includes a Secret: the pods reference the peer token by name only.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from gencluster.commands import CommandError
from gencluster.wellknown import (
    CLUSTER_LABEL,
    CRD_GROUP,
    CRD_PLURAL,
    CRD_VERSION,
    HIBERNATION_ANNOTATION,
    RECONCILE_PAUSED_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
)

LOG_TAIL_LINES = 2000
"""Per container and pod: enough for the last failover's story without a huge bundle."""


class ClusterTarget(Protocol):
    """What the plugin's Target offers (kept as a protocol: this module must not import the
    plugin, which imports it)."""

    name: str
    namespace: str
    core: Any
    custom: Any

    @property
    def qualified(self) -> str: ...

    def resource(self) -> dict[str, Any]: ...


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _patch(target: ClusterTarget, body: Mapping[str, Any]) -> dict[str, Any]:
    target.resource()  # a clear error when it does not exist
    result: dict[str, Any] = target.custom.patch_namespaced_custom_object(
        CRD_GROUP, CRD_VERSION, target.namespace, CRD_PLURAL, target.name, body
    )
    return result


def restart_patch(moment: str) -> dict[str, Any]:
    """The template annotation a rolling restart changes (`kubectl rollout restart`'s key)."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: moment}}}}}


def annotation_patch(key: str, value: str | None) -> dict[str, Any]:
    """A merge patch setting (or, with None, removing) one annotation of the resource."""
    return {"metadata": {"annotations": {key: value}}}


def restart(target: ClusterTarget) -> str:
    moment = _now()
    _patch(target, restart_patch(moment))
    return (f"rolling restart of {target.qualified} requested ({RESTARTED_AT_ANNOTATION}="
            f"{moment}): the operator replaces the standbys one at a time, switches over, then "
            "replaces the old active; follow it with kubectl gencluster status")


def reconcile(target: ClusterTarget, action: str) -> str:
    if action == "pause":
        _patch(target, annotation_patch(RECONCILE_PAUSED_ANNOTATION, _now()))
        return (f"reconciliation of {target.qualified} paused: the operator changes nothing "
                f"until `kubectl gencluster reconcile resume {target.name}`")
    _patch(target, annotation_patch(RECONCILE_PAUSED_ANNOTATION, None))
    return f"reconciliation of {target.qualified} resumed"


def hibernate(target: ClusterTarget, switch: str) -> str:
    if switch == "on":
        resource = target.resource()
        persistence = (resource.get("spec") or {}).get("persistence") or {}
        if not persistence.get("enabled"):
            raise CommandError(
                f"{target.qualified} keeps its state in memory (spec.persistence.enabled is "
                "false): hibernating would delete every pod and lose the state. Take a "
                "backup and move it to a ClusteredServer with persistence first"
            )
        _patch(target, annotation_patch(HIBERNATION_ANNOTATION, "on"))
        return (f"hibernation of {target.qualified} requested: the operator deletes the pods "
                "(standbys first); the claims keep the state")
    _patch(target, annotation_patch(HIBERNATION_ANNOTATION, None))
    return (f"{target.qualified} wakes up: the operator creates the pods, which recover from "
            "their claims")


# -- the support bundle ---------------------------------------------------------------------


def _plain(api_client: Any, obj: Any) -> Any:
    """A kubernetes-client model as the API's JSON (camelCase keys), or a dict as it is."""
    return obj if isinstance(obj, dict) else api_client.sanitize_for_serialization(obj)


def _members(target: ClusterTarget, status_report: Mapping[str, Any]) -> dict[str, bytes]:
    """File name → content of the bundle."""
    core = target.core
    api_client = core.api_client
    selector = f"{CLUSTER_LABEL}={target.name}"
    namespace = target.namespace

    def listing(call: Callable[..., Any], **query: Any) -> list[Any]:
        try:
            return [_plain(api_client, item) for item in call(namespace, **query).items or []]
        except Exception as error:  # one missing permission must not lose the rest
            return [{"error": f"{type(error).__name__}: {error}"}]

    def dump(value: Any) -> bytes:
        return yaml.safe_dump(value, sort_keys=False).encode()

    pods = listing(core.list_namespaced_pod, label_selector=selector)
    events = [
        e for e in listing(core.list_namespaced_event)
        if "error" in e or str((e.get("involvedObject") or {}).get("name", "")).startswith(
            target.name)
    ]
    files = {
        "clusteredserver.yaml": dump(target.resource()),
        "pods.yaml": dump(pods),
        "persistentvolumeclaims.yaml": dump(listing(
            core.list_namespaced_persistent_volume_claim, label_selector=selector)),
        "services.yaml": dump(listing(core.list_namespaced_service, label_selector=selector)),
        "events.yaml": dump(sorted(events, key=lambda e: str(
            e.get("lastTimestamp") or e.get("eventTime") or ""))),
        "status.json": json.dumps(status_report, indent=2, default=str).encode(),
    }
    try:
        from kubernetes import client

        lease = client.CoordinationV1Api(api_client).read_namespaced_lease(target.name, namespace)
        files["lease.yaml"] = dump(_plain(api_client, lease))
    except Exception as error:
        files["lease.yaml"] = dump({"error": f"{type(error).__name__}: {error}"})
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name")
        if not name:
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            for previous in (False, True):
                try:
                    text = core.read_namespaced_pod_log(
                        name, namespace, container=container["name"], previous=previous,
                        tail_lines=LOG_TAIL_LINES,
                    )
                except Exception as error:
                    if previous:
                        continue  # no earlier container: nothing to say
                    text = f"(no log: {type(error).__name__}: {error})\n"
                suffix = ".previous.log" if previous else ".log"
                files[f"logs/{name}/{container['name']}{suffix}"] = str(text).encode()
    return files


def report(target: ClusterTarget, output: str, status_report: Mapping[str, Any]) -> str:
    """Write the bundle to `output` (a .tar.gz), replacing it atomically."""
    files = _members(target, status_report)
    root = f"gencluster-report-{target.namespace}-{target.name}-{int(time.time())}"
    path = Path(output)
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(content)
            info.mtime = int(time.time())
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(content))
    partial.chmod(0o600)
    partial.replace(path)
    return (f"wrote {path} ({path.stat().st_size} bytes, {len(files)} files: the "
            f"ClusteredServer, {sum(1 for f in files if f.startswith('logs/'))} logs, pods, "
            "claims, Services, Lease, Events, runtime statuses; no Secret)")
