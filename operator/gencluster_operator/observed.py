"""What the operator knows about one ClusteredServer at one moment, as plain frozen values.

The shell gathers it (the ClusteredServer, its pods, its Lease, each pod's answer to the admin
Status RPC, the handover it started, the outcome of its last merge) and `plan` and `status_for`
decide from it alone. The parsers here turn API JSON into these values so that the shell has no
decisions of its own to make.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gencluster_operator import names
from gencluster_operator.events import FailoverReason

RUNNING = "running"
WAITING = "waiting"
TERMINATED = "terminated"
UNKNOWN = "unknown"

TERMINAL_PHASES = frozenset({"Failed", "Succeeded"})


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 Kubernetes Time or MicroTime (`...Z`, optional fraction) as aware UTC."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """Kubernetes' `Time` format (seconds, `Z`), as conditions and status timestamps use."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ContainerState:
    """The server container as the kubelet reports it.

    `exit_code`, `reason` and `message` describe the current termination when `state` is
    terminated, otherwise the last one (`lastState.terminated`), so a crash loop stays visible
    while the container waits to restart.
    """

    state: str = UNKNOWN
    started_at: datetime | None = None
    reason: str | None = None
    exit_code: int | None = None
    message: str | None = None
    restart_count: int = 0


VOLUME_FAILED_EXIT_CODE = 74
"""The runtime's exit code when its volume refused a write (`gencluster.run.EX_IOERR`): the
replica stopped rather than acknowledge what its disk may not hold (docs/durability.md)."""


ROLE_JOINING = "joining"
ROLE_STOPPED = "stopped"


@dataclass(frozen=True)
class RuntimeStatus:
    """A pod's own answer to the Admin Status RPC (None in `ObservedPod` when unreachable).

    `role` is the proto `Role` name without its prefix, in lower case: `active`, `standby`,
    `joining` (snapshot or catch-up under way) or `stopped` (fenced, demoted, shutting down).
    `standby_lag` is filled from the active's reply only: (pod name, entries not yet
    acknowledged) per standby it streams to.

    `lease_holder` and `lease_epoch` are the Lease as the pod last read it successfully, and
    `lease_read_age_seconds` how long ago by its own clock (None: it never read it, or the
    runtime is too old to say): the evidence `assessment.reconnected` merges on.

    `state_lost`: the replica holds no state while the Lease says the cluster had some (it
    will not run `init` by itself; a restore or a reinitialize request ends it).

    `failsafe_seconds`: while the active serves on its standbys' promises (its Lease not
    renewed, docs/partitions.md "Failsafe"), seconds since its last renewal; None otherwise.
    `failsafe_episodes` and `last_failsafe_seconds`: its failsafe stretches so far and the
    length of the last ended one.

    `sync_degraded_seconds`: while an active answers calls without the acknowledgements of
    minSyncStandbys standbys (partitionPolicy Available, docs/partitions.md), seconds since
    it started; None otherwise. `unsynced_entries`: answered entries its in-sync standbys
    may lack meanwhile.
    """

    role: str
    epoch: int
    applied_sequence: int
    standby_lag: tuple[tuple[str, int], ...] = ()
    lease_holder: str = ""
    lease_epoch: int = 0
    lease_read_age_seconds: float | None = None
    state_lost: bool = False
    failsafe_seconds: float | None = None
    failsafe_episodes: int = 0
    last_failsafe_seconds: float = 0.0
    downgrade_refused: str = ""
    """Why the replica refuses the state it would join or serve (written by a newer version
    of the server class than its own, which does not accept downgrades); "" otherwise."""
    sync_degraded_seconds: float | None = None
    unsynced_entries: int = 0


@dataclass(frozen=True)
class ObservedClaim:
    """A PersistentVolumeClaim labelled with the cluster's name. `phase` is the API's
    (Pending, Bound, Lost); `controller_uid` is the uid of the object named as its
    controller, None when it has none (a retained claim, `persistence.retainOnDelete`)."""

    name: str
    ordinal: int | None = None
    phase: str = "Pending"
    deleting: bool = False
    controller_uid: str | None = None


@dataclass(frozen=True)
class ObservedPod:
    name: str
    uid: str = ""
    ordinal: int | None = None
    phase: str = "Pending"
    ready: bool = False
    deleting: bool = False
    template_hash: str | None = None
    role_label: str | None = None
    container: ContainerState = field(default_factory=ContainerState)
    runtime: RuntimeStatus | None = None

    @property
    def running(self) -> bool:
        """The server process runs (whatever its role or readiness)."""
        return self.phase not in TERMINAL_PHASES and self.container.state == RUNNING

    @property
    def server_not_runnable(self) -> str | None:
        """The reason the server cannot run, when `gencluster run` exited with the
        configuration-error code and has not become Ready since; else None.

        A crash-looping container is restarted and runs for a moment before it exits with
        code 78 again (its configuration cannot change inside one pod): while it runs but is
        not Ready, the last exit still tells the truth, so the Degraded condition does not
        flap (and repeat its InvalidServer Event) at every restart."""
        if self.container.exit_code != names.CONFIG_ERROR_EXIT_CODE:
            return None
        if self.running and self.ready:
            return None
        detail = (self.container.message or "").strip()
        return detail or f"gencluster run exited with code {names.CONFIG_ERROR_EXIT_CODE}"

    @property
    def reports_active(self) -> bool:
        return (
            self.running
            and not self.deleting
            and self.runtime is not None
            and self.runtime.role == names.ROLE_ACTIVE
        )


@dataclass(frozen=True)
class LeaseState:
    """The Lease as the operator reads it. `holder` is the active's pod name ("" when free);
    `in_sync` is None when no active ever published the annotation."""

    holder: str = ""
    transitions: int = 0
    duration_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    in_sync: tuple[str, ...] | None = None
    resource_version: str = ""


@dataclass(frozen=True)
class Handover:
    """A planned handover the shell started (a Switchover action). The shell keeps the latest
    one for one lease duration after `started_at` (a restarted operator simply has none): it
    lets `plan` wait instead of asking twice, keeps the handover's source, which may say
    "active" for a moment after the Lease moved, from looking like a split brain, and lets
    `status_for` name the reason of the move."""

    from_pod: str
    to_pod: str
    reason: FailoverReason
    started_at: datetime


@dataclass(frozen=True)
class MergeOutcome:
    """How the shell's last merge attempt ended (`runtime_admin.RuntimeAdmin.merge_states`)."""

    winner: str
    loser: str
    winner_epoch: int
    loser_epoch: int
    succeeded: bool
    finished_at: datetime
    message: str = ""
    consecutive_failures: int = 0


@dataclass(frozen=True)
class Observed:
    """Everything `plan` and `status_for` decide from.

    `resource` is the ClusteredServer as read (its `status` is the previous status and its
    annotations carry switchover requests); `pods` are the pods labelled with its name;
    `reconcile_error` is the message of the shell's last failed API call, if the last pass
    failed; `claims` are the PersistentVolumeClaims labelled with its name (read only when
    `spec.persistence.enabled`).
    """

    resource: Mapping[str, Any]
    pods: tuple[ObservedPod, ...]
    lease: LeaseState | None
    now: datetime
    handover: Handover | None = None
    last_merge: MergeOutcome | None = None
    reconcile_error: str | None = None
    claims: tuple[ObservedClaim, ...] = ()

    @property
    def name(self) -> str:
        return str(self.resource["metadata"]["name"])

    @property
    def previous_status(self) -> Mapping[str, Any]:
        return self.resource.get("status") or {}

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.resource["metadata"].get("annotations") or {}

    def pod(self, name: str) -> ObservedPod | None:
        return next((pod for pod in self.pods if pod.name == name), None)

    def claim(self, name: str) -> ObservedClaim | None:
        return next((claim for claim in self.claims if claim.name == name), None)


# -- parsers of API JSON -------------------------------------------------------------------


def container_state(pod: Mapping[str, Any]) -> ContainerState:
    """The server container's state from `status.containerStatuses`."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == names.CONTAINER_NAME), None)
    if status is None:
        return ContainerState()
    current = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    restarts = int(status.get("restartCount") or 0)
    if "running" in current:
        started = parse_time((current["running"] or {}).get("startedAt"))
        return ContainerState(
            RUNNING, started, last.get("reason"), last.get("exitCode"), last.get("message"),
            restarts,
        )
    if "terminated" in current:
        ended = current["terminated"] or {}
        return ContainerState(
            TERMINATED, parse_time(ended.get("startedAt")), ended.get("reason"),
            ended.get("exitCode"), ended.get("message"), restarts,
        )
    if "waiting" in current:
        waiting = current["waiting"] or {}
        return ContainerState(
            WAITING, None, waiting.get("reason"), last.get("exitCode"),
            last.get("message") or waiting.get("message"), restarts,
        )
    return ContainerState(restart_count=restarts)


def observed_pod(
    pod: Mapping[str, Any], cluster: str, runtime: RuntimeStatus | None = None
) -> ObservedPod:
    """Read one pod (API JSON) of the ClusteredServer named `cluster`."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    return ObservedPod(
        name=metadata["name"],
        uid=metadata.get("uid") or "",
        ordinal=names.ordinal_of(cluster, metadata["name"]),
        phase=status.get("phase") or "Pending",
        ready=ready,
        deleting=bool(metadata.get("deletionTimestamp")),
        template_hash=annotations.get(names.TEMPLATE_HASH_ANNOTATION),
        role_label=labels.get(names.ROLE_LABEL),
        container=container_state(pod),
        runtime=runtime,
    )


def parse_in_sync(value: str | None) -> tuple[str, ...] | None:
    """The in-sync annotation (a JSON list of pod names); a malformed value reads as an empty
    set, which makes the operator refuse switchovers rather than trust garbage."""
    if value is None:
        return None
    try:
        members = json.loads(value)
    except ValueError:
        return ()
    if not isinstance(members, list):
        return ()
    return tuple(sorted({member for member in members if isinstance(member, str)}))


def lease_state(lease: Mapping[str, Any]) -> LeaseState:
    """Read a coordination.k8s.io/v1 Lease (API JSON)."""
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    return LeaseState(
        holder=spec.get("holderIdentity") or "",
        transitions=int(spec.get("leaseTransitions") or 0),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=parse_time(spec.get("acquireTime")),
        renew_time=parse_time(spec.get("renewTime")),
        in_sync=parse_in_sync(annotations.get(names.IN_SYNC_ANNOTATION)),
        resource_version=str(metadata.get("resourceVersion") or ""),
    )


def observed_pods(
    pods: Iterable[Mapping[str, Any]],
    cluster: str,
    runtime: Mapping[str, RuntimeStatus] | None = None,
) -> tuple[ObservedPod, ...]:
    """Every pod, sorted by ordinal then name so that every decision sees one order."""
    reports = runtime or {}
    parsed = [observed_pod(p, cluster, reports.get(p["metadata"]["name"])) for p in pods]
    return tuple(sorted(parsed, key=pod_order))


def pod_order(pod: ObservedPod) -> tuple[int, int, str]:
    return (0, pod.ordinal, pod.name) if pod.ordinal is not None else (1, 0, pod.name)


def observed_claim(claim: Mapping[str, Any], cluster: str) -> ObservedClaim:
    """Read one PersistentVolumeClaim (API JSON) of the ClusteredServer named `cluster`."""
    metadata = claim.get("metadata") or {}
    references = metadata.get("ownerReferences") or []
    return ObservedClaim(
        name=metadata["name"],
        ordinal=names.claim_ordinal_of(cluster, metadata["name"]),
        phase=(claim.get("status") or {}).get("phase") or "Pending",
        deleting=bool(metadata.get("deletionTimestamp")),
        controller_uid=next((r.get("uid") for r in references if r.get("controller")), None),
    )


def observed_claims(
    claims: Iterable[Mapping[str, Any]], cluster: str
) -> tuple[ObservedClaim, ...]:
    """Every claim, sorted by name so that every decision sees one order."""
    parsed = (observed_claim(c, cluster) for c in claims)
    return tuple(sorted(parsed, key=lambda c: c.name))


# -- ownership ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignPod:
    """A pod that carries the ClusteredServer's label but is not one of its pods: the operator
    neither calls it nor counts it (a pod of another cluster that relabelled itself, or one
    made by hand), and says so once."""

    name: str
    uid: str
    reason: str


def owned_pods(
    pods: Iterable[Mapping[str, Any]], resource: Mapping[str, Any]
) -> tuple[list[Mapping[str, Any]], list[ForeignPod]]:
    """Split the pods labelled with the ClusteredServer's name into those the operator owns
    and the others. Owned: its controller ownerReference is this ClusteredServer (kind and
    uid; labels are writable by the pods themselves, the uid of the owner is not forgeable
    by them), and its name is one the operator gives (`<cluster>-<ordinal>`). The operator
    talks only to owned pods: it never sends the cluster's token to a foreign one."""
    cluster = str(resource["metadata"]["name"])
    uid = resource["metadata"].get("uid")
    owned: list[Mapping[str, Any]] = []
    foreign: list[ForeignPod] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        name = str(metadata.get("name") or "")
        controller = next((ref for ref in metadata.get("ownerReferences") or []
                           if ref.get("controller")), None)
        if controller is None or controller.get("uid") != uid or controller.get(
                "kind") != names.KIND:
            reason = ("it has no controller" if controller is None else
                      f"its controller is {controller.get('kind')} {controller.get('name')} "
                      f"(uid {controller.get('uid')}), not this ClusteredServer")
        elif names.ordinal_of(cluster, name) is None:
            reason = f"its name is not one of {cluster}'s pod names ({cluster}-<ordinal>)"
        else:
            owned.append(pod)
            continue
        foreign.append(ForeignPod(name, str(metadata.get("uid") or ""), reason))
    return owned, foreign
