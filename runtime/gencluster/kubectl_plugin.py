"""`kubectl gencluster`: a ClusteredServer's health, switchover and state, from kubectl.

    kubectl gencluster status id-server [-n NS] [-o json]
    kubectl gencluster switchover id-server --to id-server-2 [--wait] [--timeout 60]
    kubectl gencluster state id-server
    kubectl gencluster backup id-server -o id-server.backup
    kubectl gencluster restore id-server id-server.backup [--force]
    kubectl gencluster restart id-server
    kubectl gencluster reconcile pause|resume id-server
    kubectl gencluster hibernate on|off id-server
    kubectl gencluster report id-server [-o bundle.tar.gz]

kubectl runs the executable `kubectl-gencluster` with every argument after the plugin's name
(it refuses flags placed before it), so `--kubeconfig`, `--context` and `-n/--namespace` are
this program's own flags, with kubectl's meaning: the namespace defaults to the context's.

`status` joins three views, because each alone misleads: the ClusteredServer's status (what
the operator concluded), the pods (what the kubelet reports) and each pod's Admin.Status RPC
(what the runtime itself says, live). A pod that does not answer within the short deadline is
shown as "unreachable"; it never fails the command. `switchover` only writes the annotation
the operator acts on, so the plugin needs no more rights than `kubectl annotate`. `state`
asks the active for the seed's get_target_state (Admin.GetState) and prints it as JSON.

Every Admin call goes through the API server (`pods/NAME:PORT/proxy` to the runtime's Admin
bridge on the metrics port, `gencluster.admin_http`; Restore's chunks as a framed stream),
never to a pod IP, so the plugin works from wherever kubectl works (a laptop outside the pod
network included); it needs RBAC `create` on `pods/proxy` and `get` on the peer-token Secret
(docs/tooling.md).
`backup` writes the active's Admin.ExportState to a `gencluster-backup/v1` file
(`gencluster.backup`); `restore` checks such a file and streams it to Admin.Restore on the pod
`backup.restore_target` picks (the active only with --force; else a pod that lost its state,
or any pod of a new cluster). A refusal by the runtime prints its message and exits 1.

Errors are one line on stderr with exit code 1. The runtime package must not import the
operator, so the names shared with it come from `gencluster.wellknown`; the Kubernetes
lookups are `gencluster.commands`'s, shared with `gencluster status`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gencluster import kubectl_day2
from gencluster.admin_http import frames, split_frames
from gencluster.backup import (
    BackupError,
    BackupHeader,
    RestoreRefused,
    read_backup,
    restore_chunks,
    restore_target,
    write_backup,
)
from gencluster.codec import CodecError, get_codec
from gencluster.commands import (
    AdminCallFailed,
    CommandError,
    admin_over_api,
    cluster_pods,
    kubernetes_api,
    peer_token,
    replica_status_over_api,
)
from gencluster.proto import gencluster_pb2 as pb
from gencluster.wellknown import (
    CRD_GROUP,
    CRD_PLURAL,
    CRD_VERSION,
    ROLE_ACTIVE,
    SWITCHOVER_TO_ANNOTATION,
    default_min_sync_standbys,
)

PROG = "kubectl gencluster"
STATUS_TIMEOUT_SECONDS = 2.0
"""Admin.Status is answered from memory; two seconds tells a live pod from a dead one without
making the table wait long (the pods are asked concurrently)."""
STATE_TIMEOUT_SECONDS = 10.0
SWITCHOVER_TIMEOUT_SECONDS = 60.0
BACKUP_TIMEOUT_SECONDS = 120.0
"""Export or restore of a whole state: bounded by the state's size, not by a timer."""
"""Covers the operator's catch-up wait (the lease's renew deadline) with room to spare."""
POLL_SECONDS = 0.5
UNREACHABLE = "unreachable"
NONE = "-"


# -- the command line ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG, description="Inspect and operate gencluster ClusteredServers."
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser(
        "status", help="the cluster's summary and one row per pod (role, sync, lag, ...)"
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.add_argument("--timeout", type=float, default=STATUS_TIMEOUT_SECONDS,
                        help="deadline of each pod's Admin.Status call, in seconds")
    switchover = commands.add_parser(
        "switchover", help="ask the operator to hand the active role to a pod"
    )
    switchover.add_argument("--to", required=True, metavar="POD", help="the new active pod")
    switchover.add_argument("--wait", action="store_true",
                            help="wait until POD is active and the request is done")
    switchover.add_argument("--timeout", type=float, default=SWITCHOVER_TIMEOUT_SECONDS,
                            help="how long --wait waits, in seconds")
    state = commands.add_parser("state", help="the active's state (get_target_state) as JSON")
    state.add_argument("--timeout", type=float, default=STATE_TIMEOUT_SECONDS,
                       help="deadline of the Admin.GetState call, in seconds")
    backup = commands.add_parser(
        "backup", help="write the active's state to a backup file (gencluster-backup/v1)"
    )
    backup.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the backup file to write (replaced atomically if it exists)")
    backup.add_argument("--timeout", type=float, default=BACKUP_TIMEOUT_SECONDS,
                        help="deadline of the Admin.ExportState call, in seconds")
    restore = commands.add_parser(
        "restore", help="load a backup file into a new cluster or one whose state was lost"
    )
    restore.add_argument("--force", action="store_true",
                         help="replace the state of a cluster whose active serves one")
    restore.add_argument("--timeout", type=float, default=BACKUP_TIMEOUT_SECONDS,
                         help="deadline of the Admin.Restore call, in seconds")
    restart = commands.add_parser(
        "restart", help="roll every pod, one at a time, with no failed call"
    )
    reconcile = commands.add_parser(
        "reconcile", help="pause or resume the operator's changes to the cluster"
    )
    reconcile.add_argument("action", choices=("pause", "resume"))
    hibernate = commands.add_parser(
        "hibernate", help="delete every pod and keep the state on the claims (on), or wake up"
    )
    hibernate.add_argument("switch", choices=("on", "off"))
    report = commands.add_parser(
        "report", help="a support bundle (.tar.gz): the resource, pods, Events, logs, statuses"
    )
    report.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="default: gencluster-report-NAME.tar.gz")
    report.add_argument("--timeout", type=float, default=STATUS_TIMEOUT_SECONDS,
                        help="deadline of each pod's Admin.Status call, in seconds")
    for command in (status, switchover, state, backup, restore, restart, reconcile, hibernate,
                    report):
        command.add_argument("name", metavar="NAME", help="the ClusteredServer")
        command.add_argument("-n", "--namespace", default=None,
                             help="default: the kubeconfig context's namespace")
        command.add_argument("--kubeconfig", default=None)
        command.add_argument("--context", default=None)
    restore.add_argument("file", metavar="FILE", help="a file written by `backup`")
    return top


@dataclass
class Target:
    """The ClusteredServer a command is about, and the API clients to reach it."""

    name: str
    namespace: str
    core: Any
    custom: Any

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.name}"

    def resource(self) -> dict[str, Any]:
        """The ClusteredServer, or a CommandError that says it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, self.namespace, CRD_PLURAL, self.name
            )
        except ApiException as error:
            if error.status == 404:
                raise CommandError(
                    f"ClusteredServer {self.name!r} not found in namespace {self.namespace!r}"
                ) from None
            raise CommandError(f"cannot read ClusteredServer {self.qualified}: "
                               f"{error.status} {error.reason}") from None

    def token(self) -> str:
        return peer_token(self.core, self.name, self.namespace)


def connect(arguments: argparse.Namespace) -> Target:
    from kubernetes import client

    api, default_namespace = kubernetes_api(arguments.kubeconfig, arguments.context)
    return Target(arguments.name, arguments.namespace or default_namespace,
                  client.CoreV1Api(api), client.CustomObjectsApi(api))


# -- status -------------------------------------------------------------------------------------


def _ready_condition(resource: dict[str, Any]) -> dict[str, Any]:
    conditions = (resource.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def _pod_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _restarts(pod: Any) -> int:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return sum(int(s.restart_count or 0) for s in statuses)


def summary_of(resource: dict[str, Any]) -> dict[str, Any]:
    """The cluster-wide half of the report, from the ClusteredServer alone."""
    spec, status = resource.get("spec") or {}, resource.get("status") or {}
    replication = spec.get("replication") or {}
    ready = _ready_condition(resource)
    annotations = (resource.get("metadata") or {}).get("annotations") or {}
    return {
        "phase": status.get("phase"),
        "ready": {k: ready.get(k) for k in ("status", "reason", "message")},
        "activePod": status.get("activePod"),
        "epoch": status.get("epoch"),
        "replicas": spec.get("replicas"),
        "currentReplicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "mode": replication.get("mode"),
        "minSyncStandbys": replication.get(
            "minSyncStandbys", default_min_sync_standbys(int(spec.get("replicas") or 1))
        ),
        "partitionPolicy": spec.get("partitionPolicy"),
        "lastFailoverTime": status.get("lastFailoverTime"),
        "lastFailoverReason": status.get("lastFailoverReason"),
        "merges": status.get("merges", 0),
        "switchoverRequested": annotations.get(SWITCHOVER_TO_ANNOTATION),
    }


def pod_rows(
    resource: dict[str, Any], pods: Sequence[Any], replies: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per pod. Sync state and lag come from the live active's Admin.Status when it
    answered (the freshest view), else from the operator's status.standbys."""
    status = resource.get("status") or {}
    active_reply = next(
        (r for r in replies.values() if r.get("role") == ROLE_ACTIVE), None
    )
    live = {s["identity"]: s for s in (active_reply or {}).get("standbys", [])}
    recorded = {s.get("pod"): s for s in status.get("standbys") or []}
    rows = []
    for pod in pods:
        name = pod.metadata.name
        reply = replies.get(name) or {"error": "no pod IP"}
        role = UNREACHABLE if "error" in reply else reply["role"]
        in_sync: bool | None = None
        lag: int | None = None
        if role != ROLE_ACTIVE:
            standby = live.get(name) if active_reply else recorded.get(name)
            if standby is not None:
                in_sync, lag = bool(standby.get("inSync")), standby.get("lag")
        rows.append({
            "pod": name,
            "role": role,
            "ready": _pod_ready(pod),
            "inSync": in_sync,
            "lag": lag,
            "appliedSeq": reply.get("appliedSeq"),
            "epoch": reply.get("epoch"),
            "ip": pod.status.pod_ip if pod.status else None,
            "restarts": _restarts(pod),
            **({"stateLost": True} if reply.get("stateLost") else {}),
            **({"failsafeSeconds": reply["failsafeSeconds"]}
               if "failsafeSeconds" in reply else {}),
            **({"syncDegradedSeconds": reply["syncDegradedSeconds"],
                "unsyncedEntries": reply.get("unsyncedEntries", 0)}
               if "syncDegradedSeconds" in reply else {}),
            **({"error": reply["error"]} if "error" in reply else {}),
        })
    return rows


def _ask_every_pod(
    target: Target, pods: Sequence[Any], token: str, timeout: float
) -> dict[str, dict[str, Any]]:
    """Admin.Status of every pod with an IP, concurrently, through the API server's pods/proxy
    (so from wherever kubectl works), keyed by pod name. Each reply names its `pod`."""
    reachable = [pod for pod in pods if pod.status and pod.status.pod_ip]
    if not reachable:
        return {}
    api = target.core.api_client
    with ThreadPoolExecutor(max_workers=min(8, len(reachable))) as pool:
        futures = {pod.metadata.name: pool.submit(replica_status_over_api, api,
                                                  target.namespace, pod, token, timeout)
                   for pod in reachable}
        return {name: {"pod": name, **future.result()} for name, future in futures.items()}


def status_report(target: Target, timeout: float) -> dict[str, Any]:
    resource = target.resource()
    pods = [p for p in cluster_pods(target.core, target.name, target.namespace)
            if not p.metadata.deletion_timestamp]
    try:
        token = target.token()
    except CommandError:
        token = ""  # every pod then answers UNAUTHENTICATED: shown per pod, not fatal
    replies = _ask_every_pod(target, pods, token, timeout)
    return {
        "name": target.name,
        "namespace": target.namespace,
        "cluster": summary_of(resource),
        "pods": pod_rows(resource, pods, replies),
    }


def _text(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, as `kubectl get` prints them."""
    cells = [list(headers), *([_text(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


POD_COLUMNS = (
    ("POD", "pod"), ("ROLE", "role"), ("READY", "ready"), ("IN SYNC", "inSync"),
    ("LAG", "lag"), ("APPLIED SEQ", "appliedSeq"), ("EPOCH", "epoch"), ("IP", "ip"),
    ("RESTARTS", "restarts"),
)


def _cell(row: dict[str, Any], key: str) -> Any:
    """A pod row's value for the table; a replica that lost the state says so in its role
    (the cluster is StateLost: `kubectl gencluster restore` or the reinitialize annotation)."""
    if key == "role" and row.get("stateLost"):
        return f"{row['role']} (state lost)"
    if key == "role" and "failsafeSeconds" in row:
        # The Lease not renewed for this long: serving on its standbys' promises.
        return f"{row['role']} (failsafe, no Lease renewal for {row['failsafeSeconds']:.0f}s)"
    if key == "role" and "syncDegradedSeconds" in row:
        # Available policy: answering without standby acknowledgements (docs/partitions.md).
        return (f"{row['role']} (degraded Sync for {row['syncDegradedSeconds']:.0f}s, "
                f"{row['unsyncedEntries']} entries not on a standby)")
    return row.get(key)


def render_status(report: dict[str, Any]) -> str:
    """The report as `kubectl cnpg status` lays one out: a summary, then the pods."""
    cluster = report["cluster"]
    ready = cluster["ready"]
    ready_text = _text(ready.get("status"))
    if ready.get("reason"):
        ready_text += f" ({ready['reason']})"
    if ready.get("status") != "True" and ready.get("message"):
        ready_text += f": {ready['message']}"
    mode = _text(cluster["mode"])
    if cluster["mode"] == "Sync" and cluster["minSyncStandbys"] is not None:
        mode += f" (min {cluster['minSyncStandbys']} in-sync standbys)"
    failover = _text(cluster["lastFailoverTime"])
    if cluster["lastFailoverReason"]:
        failover += f" ({cluster['lastFailoverReason']})"
    fields = [
        ("Name", f"{report['namespace']}/{report['name']}"),
        ("Phase", _text(cluster["phase"])),
        ("Ready", ready_text),
        ("Active pod", _text(cluster["activePod"])),
        ("Epoch", _text(cluster["epoch"])),
        ("Replicas", f"{_text(cluster['replicas'])} desired, {_text(cluster['currentReplicas'])}"
                     f" current, {_text(cluster['readyReplicas'])} ready"),
        ("Replication", mode),
        ("Partition policy", _text(cluster["partitionPolicy"])),
        ("Last failover", failover),
        ("Merges", _text(cluster["merges"])),
    ]
    if cluster.get("switchoverRequested"):
        fields.append(("Switchover to", f"{cluster['switchoverRequested']} (in progress)"))
    width = max(len(label) for label, _ in fields) + 2
    lines = ["Cluster Summary", *(f"{label + ':':<{width}}{value}" for label, value in fields)]
    lines += ["", "Pods"]
    if report["pods"]:
        lines.append(format_table(
            [header for header, _ in POD_COLUMNS],
            [[_cell(row, key) for _, key in POD_COLUMNS] for row in report["pods"]],
        ))
    else:
        lines.append("No pods.")
    return "\n".join(lines)


# -- switchover ---------------------------------------------------------------------------------


def request_switchover(target: Target, pod: str) -> bool:
    """Annotate the ClusteredServer, after checking that `pod` is one of its pods. False when
    `pod` is already active: there is nothing to ask the operator."""
    resource = target.resource()
    pods = [p.metadata.name for p in cluster_pods(target.core, target.name, target.namespace)]
    if pod not in pods:
        raise CommandError(
            f"{pod!r} is not a pod of ClusteredServer {target.qualified} "
            f"(its pods: {', '.join(pods) or 'none'})"
        )
    if (resource.get("status") or {}).get("activePod") == pod:
        return False
    target.custom.patch_namespaced_custom_object(
        CRD_GROUP, CRD_VERSION, target.namespace, CRD_PLURAL, target.name,
        {"metadata": {"annotations": {SWITCHOVER_TO_ANNOTATION: pod}}},
        _content_type="application/merge-patch+json",
    )
    return True


def switchover_outcome(resource: dict[str, Any], pod: str) -> bool | None:
    """True once `pod` is active and the operator removed the annotation; False when the
    annotation is gone but another pod is active (the operator rejected it); None: pending."""
    annotations = (resource.get("metadata") or {}).get("annotations") or {}
    if SWITCHOVER_TO_ANNOTATION in annotations:
        return None
    return (resource.get("status") or {}).get("activePod") == pod


def _rejection(target: Target) -> str:
    """The message of the newest SwitchoverRejected Event, if the operator left one."""
    try:
        listing = target.core.list_namespaced_event(
            target.namespace,
            field_selector=f"involvedObject.name={target.name},reason=SwitchoverRejected",
        )
    except Exception:
        return ""
    items = sorted(listing.items or [], key=lambda e: str(e.last_timestamp or e.event_time or ""))
    return items[-1].message if items else ""


def wait_for_switchover(target: Target, pod: str, timeout: float,
                        sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resource = target.resource()
        outcome = switchover_outcome(resource, pod)
        if outcome is True:
            return resource
        if outcome is False:
            reason = _rejection(target)
            raise CommandError(
                f"switchover to {pod} did not happen: "
                f"{reason or 'the active is ' + str(resource.get('status', {}).get('activePod'))}"
            )
        if time.monotonic() > deadline:
            raise CommandError(f"switchover to {pod} not done after {timeout:g}s")
        sleep(POLL_SECONDS)


# -- state --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """msgpack states may hold bytes, which JSON cannot: shown base64-encoded."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _live_replies(target: Target, token: str, timeout: float) -> dict[str, dict[str, Any]]:
    """Admin.Status of every pod of the cluster that is not being deleted."""
    pods = [p for p in cluster_pods(target.core, target.name, target.namespace)
            if not p.metadata.deletion_timestamp]
    return _ask_every_pod(target, pods, token, min(timeout, STATUS_TIMEOUT_SECONDS))


def _active_reply(
    target: Target, resource: dict[str, Any], replies: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The Status reply of the pod whose runtime says it is active (highest epoch wins), so a
    stale status.activePod is never believed."""
    actives = sorted(
        (reply for reply in replies.values() if reply.get("role") == ROLE_ACTIVE),
        key=lambda reply: reply.get("epoch", 0),
    )
    if not actives:
        recorded = (resource.get("status") or {}).get("activePod")
        error = (replies.get(recorded) or {}).get("error") if recorded else None
        if recorded and error:
            raise CommandError(f"active pod {recorded} is unreachable: {error}")
        raise CommandError(f"ClusteredServer {target.qualified} has no active pod")
    return actives[-1]


def _call_active(
    target: Target, active: dict[str, Any], method: str, request: Any, token: str,
    timeout: float,
) -> bytes:
    """Admin.METHOD on the active pod, through the API server (`commands.admin_over_api`)."""
    name = str(active["pod"])
    try:
        pod = target.core.read_namespaced_pod(name, target.namespace)
        return admin_over_api(target.core.api_client, target.namespace, pod, method, request,
                              token, timeout)
    except AdminCallFailed as error:
        raise CommandError(f"Admin.{method} on active pod {name} failed: {error}") from None


def active_state(target: Target, timeout: float) -> Any:
    """The active's state (Admin.GetState), decoded with its codec."""
    resource = target.resource()
    token = target.token()
    active = _active_reply(target, resource, _live_replies(target, token, timeout))
    reply = pb.GetStateReply.FromString(
        _call_active(target, active, "GetState", pb.GetStateRequest(), token, timeout))
    try:
        return get_codec(reply.codec).decode(reply.state, what="state", bounded=False)
    except (CodecError, KeyError, ValueError) as error:
        raise CommandError(f"cannot decode the state ({reply.codec}): {error}") from None


# -- backup and restore ---------------------------------------------------------------------------


def backup(target: Target, path: str, timeout: float) -> str:
    """Export the active's state into `path` (written to a temporary file beside it, then
    renamed, so an interrupted backup never leaves a half file under the name asked for)."""
    resource = target.resource()
    token = target.token()
    active = _active_reply(target, resource, _live_replies(target, token, timeout))
    pod = str(active["pod"])
    body = _call_active(target, active, "ExportState", pb.ExportStateRequest(), token, timeout)
    try:
        chunks = [pb.SnapshotChunk.FromString(frame) for frame in split_frames(body)]
    except ValueError as error:
        raise CommandError(f"Admin.ExportState on {pod}: a cut-short reply: {error}") from None
    destination = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{destination.name}.",
                                             dir=destination.parent)
    try:
        with os.fdopen(descriptor, "wb") as out:
            header = write_backup(
                out, chunks, cluster=target.name, namespace=target.namespace,
                server=str(active.get("server") or ""), taken_at=datetime.now(UTC),
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, destination)
    except BackupError as error:
        raise CommandError(f"the export of {pod} is not a valid snapshot: {error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return (f"backup of {target.qualified} written to {path}: taken from {pod} at epoch "
            f"{header.epoch}, applied_seq {header.applied_seq}, {header.state_size} bytes of "
            f"state ({header.codec}, {header.server or 'server unknown'} version "
            f"{header.server_version}), sha256 {header.sha256[:16]}...")


def load_backup(path: str) -> tuple[BackupHeader, list[pb.SnapshotChunk]]:
    """Read and check a backup file; a CommandError says why it cannot be restored."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return read_backup(data)
    except BackupError as error:
        raise CommandError(f"{path}: {error}") from None


def restore(target: Target, path: str, force: bool, timeout: float) -> str:
    """Stream a checked backup to Admin.Restore on the pod `restore_target` picks, with a
    fresh request id (a retried stream with the same id would be applied once)."""
    header, chunks = load_backup(path)
    target.resource()
    token = target.token()
    try:
        chosen = restore_target(_live_replies(target, token, timeout), force)
    except RestoreRefused as error:
        raise CommandError(f"not restoring into {target.qualified}: {error}") from None
    request_id = uuid.uuid4().hex
    requests = restore_chunks(chunks, request_id=request_id, force=force,
                              source=Path(path).name)
    body = b"".join(frames(request.SerializeToString() for request in requests))
    try:
        pod = target.core.read_namespaced_pod(chosen.pod, target.namespace)
        reply = pb.RestoreReply.FromString(admin_over_api(
            target.core.api_client, target.namespace, pod, "Restore", None, token, timeout,
            body=body))
    except AdminCallFailed as error:
        if error.code == "FAILED_PRECONDITION":
            raise CommandError(f"{chosen.pod} refused the restore: {error.message}") from None
        raise CommandError(f"Admin.Restore on {chosen.pod} failed: {error}") from None
    return (f"restored {path} (cluster {header.namespace}/{header.cluster}, epoch "
            f"{header.epoch}, applied_seq {header.applied_seq}, taken at {header.taken_at}) "
            f"into {target.qualified} through {chosen.pod} ({chosen.why}), request id "
            f"{request_id}: the cluster is at epoch {reply.epoch}, applied_seq "
            f"{reply.applied_seq}")


# -- entry point --------------------------------------------------------------------------------


def run(arguments: argparse.Namespace) -> str:
    """The command's output; CommandError for anything the user should read in one line."""
    if arguments.command == "restore":
        load_backup(arguments.file)  # a bad file is refused before any cluster is contacted
    target = connect(arguments)
    if arguments.command == "status":
        report = status_report(target, arguments.timeout)
        if arguments.output == "json":
            return json.dumps(report, indent=2)
        return render_status(report)
    if arguments.command == "switchover":
        if not request_switchover(target, arguments.to):
            return f"{arguments.to} is already the active pod of {target.qualified}"
        if not arguments.wait:
            return (f"switchover of {target.qualified} to {arguments.to} requested "
                    f"(annotation {SWITCHOVER_TO_ANNOTATION})")
        after = wait_for_switchover(target, arguments.to, arguments.timeout)
        return (f"switchover done: {arguments.to} is the active pod of {target.qualified} "
                f"(epoch {(after.get('status') or {}).get('epoch')})")
    if arguments.command == "restart":
        return kubectl_day2.restart(target)
    if arguments.command == "reconcile":
        return kubectl_day2.reconcile(target, arguments.action)
    if arguments.command == "hibernate":
        return kubectl_day2.hibernate(target, arguments.switch)
    if arguments.command == "report":
        return kubectl_day2.report(
            target, arguments.output or f"gencluster-report-{target.name}.tar.gz",
            status_report(target, arguments.timeout),
        )
    if arguments.command == "backup":
        return backup(target, arguments.output, arguments.timeout)
    if arguments.command == "restore":
        return restore(target, arguments.file, arguments.force, arguments.timeout)
    state = active_state(target, arguments.timeout)
    return json.dumps(state, indent=2, default=_jsonable)


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        output = run(arguments)
    except (CommandError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"error: the API server answered {error.status} {error.reason}", file=sys.stderr)
        return 1
    except HTTPError as error:
        print(f"error: cannot reach the API server: {error}", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
