"""One reconcile pass for one ClusteredServer: observe → plan → act → write status → Events.

This is the shell around the pure core, and it decides nothing: `plan` says what to do,
`status_for` what to write, `events_between` what to announce, `desired` what to create. What
it adds is I/O and the little memory the core asks of it between passes (`ClusterMemory`):
the last Switchover it started (kept one lease duration), the outcome of its last merge, and
its last API error.

Passes of one cluster never overlap: `Reconciler.request` runs them one at a time and folds
every request that arrives meanwhile into one more pass, so a burst of pod events costs two
passes, not twenty. A pass runs in a worker thread (the `kubernetes` client and the gRPC
calls block), so the kopf event loop keeps serving every other cluster.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gencluster_operator import desired, desired_network, metrics, names
from gencluster_operator.actions import (
    Action,
    ClearLease,
    CreateClaim,
    CreatePod,
    DeletePod,
    Demote,
    MergeStates,
    RecordEvent,
    RemoveAnnotation,
    RemoveLeaseAnnotation,
    SetClaimOwnership,
    Switchover,
)
from gencluster_operator.assessment import assess
from gencluster_operator.cluster_io import NOT_FOUND, ApiError, KubernetesApi
from gencluster_operator.desired_network import OperatorPods
from gencluster_operator.events import EventReason, EventType
from gencluster_operator.observed import (
    RUNNING,
    Handover,
    MergeOutcome,
    Observed,
    container_state,
    lease_state,
    observed_claims,
    observed_pods,
)
from gencluster_operator.plan import plan
from gencluster_operator.runtime_admin import AdminError, RuntimeAdmin, pod_address
from gencluster_operator.spec import cluster_spec, spec_problems
from gencluster_operator.status import events_between, status_for

log = logging.getLogger("gencluster_operator")

REPORTING_COMPONENT = "gencluster-operator"
"""`source.component` of our Events, and kopf's `settings.posting.reporting_component`."""

IMMEDIATE_REPLANS = 3
"""Conflicts (409) in a row that are planned again at once; after that the next event or the
timer brings the next pass, so two writers racing on one object cannot spin."""

CHILDREN_RECHECK_SECONDS = 60.0
"""How often the static children are read back even when nothing asks for a change: a child
someone deleted by hand comes back within this time (at once on a spec or scale change)."""

ClusterKey = tuple[str, str]
"""(namespace, name) of a ClusteredServer."""


@dataclass
class ClusterMemory:
    """What the shell keeps about one ClusteredServer between passes (lost on restart, which
    the core tolerates: it then simply has no handover or merge to remember)."""

    handover: Handover | None = None
    last_merge: MergeOutcome | None = None
    reconcile_error: str | None = None
    lease_seen: tuple[Any, ...] | None = None
    children_checked: tuple[Any, ...] | None = None
    children_checked_at: float = 0.0
    running: bool = False
    pending: bool = False
    conflicts_in_a_row: int = 0
    pod_monitor_warned: int | None = None
    """The generation whose PodMonitor could not be created (its Warning Event was posted)."""
    split_brain: bool = False
    """The last pass saw two actives: every Lease renewal then triggers a pass, so a merge
    follows within about a retry period of the loser reconnecting (not at the next timer)."""


class ActionFailed(Exception):
    """An action of the plan failed; the pass stops there (`conflict`: plan again at once)."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


def utc_now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """Reconciles ClusteredServers on request; one instance per operator process."""

    def __init__(
        self,
        api: KubernetesApi,
        admin: RuntimeAdmin,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = utc_now,
        operator_pods: OperatorPods | None = None,
    ) -> None:
        """`executor` runs the passes (blocking I/O); None: asyncio's default executor.
        `operator_pods`: the operator's own pods, let through each NetworkPolicy to the
        pods' metrics (admin bridge) port; None when the operator is not a labelled pod."""
        self.api = api
        self.operator_pods = operator_pods
        self.admin = admin
        self.executor = executor
        self.clock = clock
        self._memory: dict[ClusterKey, ClusterMemory] = {}

    def memory(self, key: ClusterKey) -> ClusterMemory:
        return self._memory.setdefault(key, ClusterMemory())

    def forget(self, key: ClusterKey) -> None:
        self._memory.pop(key, None)
        metrics.forget_cluster(*key)

    # -- triggers ----------------------------------------------------------------------------

    async def request(self, namespace: str, name: str) -> None:
        """Reconcile the cluster soon. If a pass is running, one more follows it and this
        returns at once; otherwise passes run here until nothing more was requested."""
        key = (namespace, name)
        memory = self.memory(key)
        memory.pending = True
        if memory.running:
            return
        memory.running = True
        try:
            while memory.pending:
                memory.pending = False
                again = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.reconcile_once, key
                )
                if again:
                    memory.pending = True
        finally:
            memory.running = False

    def lease_changed(self, namespace: str, cluster: str, lease: Mapping[str, Any]) -> bool:
        """Whether a Lease event says something new (holder, epoch, in-sync set, acquisition),
        as opposed to one of the active's renewals every retry period. During a split brain
        every renewal counts: it is the clock that re-checks whether the loser reconnected."""
        memory = self.memory((namespace, cluster))
        seen = _lease_fingerprint(lease)
        if seen == memory.lease_seen and not memory.split_brain:
            return False
        memory.lease_seen = seen
        return True

    # -- one pass ----------------------------------------------------------------------------

    def reconcile_once(self, key: ClusterKey) -> bool:
        """One pass; True when another should follow at once (a conflict, a new generation)."""
        namespace, name = key
        started = time.monotonic()
        try:
            again, result = self._pass(key)
        except ApiError as error:
            log.warning("reconcile of %s/%s failed: %s", namespace, name, error)
            again, result = False, "error"
        except Exception:
            log.exception("reconcile of %s/%s failed", namespace, name)
            again, result = False, "error"
        metrics.record_reconcile(namespace, name, result, time.monotonic() - started)
        return again

    def _pass(self, key: ClusterKey) -> tuple[bool, str]:
        namespace, name = key
        memory = self.memory(key)
        resource = self.api.read_cluster(namespace, name)
        if resource is None:
            self.forget(key)
            return False, "ok"
        if resource["metadata"].get("deletionTimestamp"):
            return False, "ok"  # garbage collection removes the children
        now = self.clock()
        spec = cluster_spec(resource)
        if spec_problems(spec):
            self._refuse_spec(resource, now)
            return False, "error"
        pod_objects = self.api.list_pods(namespace, name)
        claim_objects = (
            self.api.list_claims(namespace, name) if spec.persistence.enabled else []
        )
        token = self._peer_token(resource)
        observed = replace(
            self._observe(resource, pod_objects, token, memory, now),
            claims=observed_claims(claim_objects, name),
        )
        error: ActionFailed | None = None
        facts = assess(observed)
        memory.split_brain = facts.split_brain
        try:
            token = self._ensure_children(resource, token, facts.ordinals_in_use)
            self._perform(resource, plan(observed), token, pod_objects, memory, now,
                          claim_objects)
        except ActionFailed as failure:
            error = failure
        except ApiError as failure:
            error = ActionFailed(str(failure), conflict=failure.conflict)
        failed = error is not None and not error.conflict
        if failed:
            log.warning("%s/%s: action failed: %s", namespace, name, error)
        self._report_error(resource, memory, str(error) if failed else None, now)
        previous = resource.get("status") or {}
        status = status_for(replace(observed, reconcile_error=memory.reconcile_error),
                            previous, now)
        self.api.patch_cluster_status(namespace, name, status)
        for event in events_between(previous, status):
            self._post(resource, event, now)
        metrics.record_status(
            namespace, name, previous, status,
            [p["metadata"]["name"] for p in pod_objects],
        )
        if error is not None and error.conflict:
            memory.conflicts_in_a_row += 1
            return memory.conflicts_in_a_row <= IMMEDIATE_REPLANS, "conflict"
        memory.conflicts_in_a_row = 0
        new_generation = previous.get("observedGeneration") != spec.generation
        return new_generation, "error" if failed else "ok"

    def _refuse_spec(self, resource: Mapping[str, Any], now: datetime) -> None:
        """A spec the operator must not act on (`spec_problems`): no pods are read or touched,
        nothing is sized from it; only the status (InvalidSpec) and its Event are written."""
        metadata = resource["metadata"]
        log.warning("%s/%s: refusing the spec: %s", metadata["namespace"], metadata["name"],
                    "; ".join(spec_problems(cluster_spec(resource))))
        previous = resource.get("status") or {}
        observed = Observed(resource=resource, pods=(), lease=None, now=now)
        status = status_for(observed, previous, now)
        self.api.patch_cluster_status(metadata["namespace"], metadata["name"], status)
        for event in events_between(previous, status):
            self._post(resource, event, now)

    # -- observation helpers -------------------------------------------------------------------

    def _observe(
        self,
        resource: Mapping[str, Any],
        pod_objects: list[dict[str, Any]],
        token: str | None,
        memory: ClusterMemory,
        now: datetime,
    ) -> Observed:
        """The Lease, each running pod's own report, and the shell's memory, as `Observed`."""
        spec = cluster_spec(resource)
        lease_object = self.api.read_lease(spec.namespace, names.lease_name(spec.name))
        if lease_object is not None:
            memory.lease_seen = _lease_fingerprint(lease_object)
        addresses = _admin_addresses(pod_objects, spec.port)
        reports = self.admin.statuses(token, addresses) if token else {}
        self.admin.forget_except(set(addresses.values()))
        lease_duration = timedelta(seconds=spec.lease.duration_seconds)
        if memory.handover is not None and now - memory.handover.started_at >= lease_duration:
            memory.handover = None
        return Observed(
            resource=resource,
            pods=observed_pods(pod_objects, spec.name, reports),
            lease=lease_state(lease_object) if lease_object is not None else None,
            now=now,
            handover=memory.handover,
            last_merge=memory.last_merge,
            reconcile_error=memory.reconcile_error,
        )

    def _peer_token(self, resource: Mapping[str, Any]) -> str | None:
        metadata = resource["metadata"]
        secret = self.api.read_secret(
            metadata["namespace"], names.peer_token_secret_name(metadata["name"])
        )
        encoded = ((secret or {}).get("data") or {}).get(names.PEER_TOKEN_KEY)
        return base64.b64decode(encoded).decode() if encoded else None

    def _ensure_children(
        self, resource: Mapping[str, Any], token: str | None, ordinals: list[int]
    ) -> str:
        """Create the children that are missing and restore drifted managed fields; returns
        the peer token (drawn once, when the Secret is created). Skipped while the spec and
        the pods' ordinals are unchanged, except every `CHILDREN_RECHECK_SECONDS`."""
        metadata = resource["metadata"]
        memory = self.memory((metadata["namespace"], metadata["name"]))
        fingerprint = (metadata.get("uid"), metadata.get("generation"), tuple(ordinals))
        fresh = time.monotonic() - memory.children_checked_at < CHILDREN_RECHECK_SECONDS
        if token is not None and memory.children_checked == fingerprint and fresh:
            return token
        chosen = token or secrets.token_urlsafe(32)
        for wanted in desired.static_children(resource, chosen, ordinals):
            existing = self.api.read_child(wanted)
            if existing is None:
                try:
                    self.api.create(wanted)
                except ApiError as error:
                    if not error.conflict:
                        raise
                    raise ActionFailed(f"{wanted['kind']} {wanted['metadata']['name']} was "
                                       "created meanwhile", conflict=True) from error
                continue
            if not desired.controlled_by(existing, resource):
                raise ActionFailed(
                    f"{wanted['kind']} {wanted['metadata']['name']} exists and is not "
                    f"controlled by ClusteredServer {metadata['name']}; delete or rename it"
                )
            patch = desired.drift_patch(wanted, existing)
            if patch is not None:
                self.api.patch(existing, patch)
        self._ensure_pod_monitor(resource, memory)
        self._ensure_network_policy(resource)
        memory.children_checked = fingerprint
        memory.children_checked_at = time.monotonic()
        return chosen

    def _ensure_network_policy(self, resource: Mapping[str, Any]) -> None:
        """The pods' NetworkPolicy: created (or its drift restored) while enabled, deleted
        when disabled (desired_network.py)."""
        wanted = desired_network.network_policy(resource, self.operator_pods)
        existing = self.api.read_child(wanted)
        enabled = cluster_spec(resource).network_policy.enabled
        if existing is not None and not desired.controlled_by(existing, resource):
            if enabled:
                raise ActionFailed(f"NetworkPolicy {wanted['metadata']['name']} exists and is "
                                   f"not controlled by ClusteredServer "
                                   f"{resource['metadata']['name']}; delete or rename it")
            return
        if not enabled:
            if existing is not None:
                self.api.delete(existing)
        elif existing is None:
            self.api.create(wanted)
        else:
            patch = desired.drift_patch(wanted, existing)
            if patch is not None:
                self.api.patch(existing, patch)

    def _ensure_pod_monitor(self, resource: Mapping[str, Any], memory: ClusterMemory) -> None:
        """The optional PodMonitor: created (or its drift restored) while enabled, deleted
        when disabled. Without the prometheus-operator CRDs the API answers 404: one Warning
        Event per generation says so, and the pass goes on (monitoring is not serving)."""
        wanted = desired.pod_monitor(resource)
        existing = self.api.read_child(wanted)
        if not cluster_spec(resource).pod_monitor.enabled:
            if existing is not None and desired.controlled_by(existing, resource):
                self.api.delete(existing)
            return
        try:
            if existing is None:
                self.api.create(wanted)
            elif desired.controlled_by(existing, resource):
                patch = desired.drift_patch(wanted, existing)
                if patch is not None:
                    self.api.patch(existing, patch)
            else:
                raise ActionFailed(f"PodMonitor {wanted['metadata']['name']} exists and is not "
                                   f"controlled by ClusteredServer "
                                   f"{resource['metadata']['name']}; delete or rename it")
        except ApiError as error:
            if error.status != NOT_FOUND:
                raise
            generation = int(resource["metadata"].get("generation") or 0)
            if memory.pod_monitor_warned != generation:
                self._post(resource, RecordEvent(
                    EventReason.POD_MONITOR_UNAVAILABLE,
                    "spec.monitoring.podMonitor is enabled but the API server does not serve "
                    f"{desired.POD_MONITOR_API_VERSION} PodMonitors (install the "
                    "prometheus-operator CRDs); the pods are not scraped",
                    EventType.WARNING), self.clock())
                memory.pod_monitor_warned = generation

    # -- actions -----------------------------------------------------------------------------

    def _perform(
        self,
        resource: Mapping[str, Any],
        actions: list[Action],
        token: str,
        pod_objects: list[dict[str, Any]],
        memory: ClusterMemory,
        now: datetime,
        claim_objects: list[dict[str, Any]] | None = None,
    ) -> None:
        """Perform `actions` in order, stopping at the first that fails."""
        claims = {c["metadata"]["name"]: c for c in claim_objects or []}
        spec = cluster_spec(resource)
        namespace, name = spec.namespace, spec.name
        ips = {
            p["metadata"]["name"]: (p.get("status") or {}).get("podIP") for p in pod_objects
        }

        def address(pod: str) -> str:
            ip = ips.get(pod)
            if not ip:
                raise ActionFailed(f"pod {pod} has no IP address yet")
            return pod_address(ip, spec.port)

        for action in actions:
            log.info("%s/%s: %s", namespace, name, _describe(action))
            match action:
                case CreateClaim(ordinal=ordinal):
                    self.api.create(desired.claim(resource, ordinal))
                case SetClaimOwnership(claim=claim, retained=retained):
                    existing = claims.get(claim)
                    if existing is not None:
                        patch = desired.claim_ownership_patch(resource, existing, retained)
                        if patch is not None:
                            self.api.patch(existing, patch)
                case CreatePod(ordinal=ordinal):
                    self.api.create(desired.pod(resource, ordinal))
                case DeletePod(pod=pod):
                    self.api.delete_pod(namespace, pod, action.delete_options())
                case ClearLease():
                    self.api.patch_lease(namespace, names.lease_name(name), action.lease_patch())
                case Switchover(from_pod=source, to_pod=target, reason=reason):
                    # Remembered even when the call fails: a refusal may come after the Lease
                    # moved (the handover was written, the target's confirmation came late),
                    # and the status must still name the planned reason. If the Lease did not
                    # move, `plan` waits at most one lease duration before asking again.
                    memory.handover = Handover(source, target, reason, now)
                    try:
                        self.admin.switchover(
                            token, address(source), target, spec.lease.renew_deadline_seconds
                        )
                    except AdminError as error:
                        raise ActionFailed(str(error)) from error
                case Demote(pod=pod, epoch=epoch, follow=winner):
                    try:
                        self.admin.demote(
                            token, address(pod), address(winner),
                            f"stale active (epoch {epoch}); {winner} holds the Lease",
                        )
                    except AdminError as error:
                        raise ActionFailed(str(error)) from error
                case MergeStates():
                    self._merge(action, token, address, memory, now)
                case RemoveLeaseAnnotation():
                    self.api.patch_lease(namespace, names.lease_name(name), action.lease_patch())
                case RemoveAnnotation():
                    self.api.patch_cluster(namespace, name, action.resource_patch())
                case RecordEvent():
                    self._post(resource, action, now)

    def _merge(
        self,
        action: MergeStates,
        token: str,
        address: Callable[[str], str],
        memory: ClusterMemory,
        now: datetime,
    ) -> None:
        """Run a merge and remember how it ended; a failed merge is not an API failure (the
        status reports it as MergeFailed and `plan` retries it with back-off)."""
        last = memory.last_merge
        failures = (
            last.consecutive_failures
            if last is not None and not last.succeeded
            and (last.winner, last.loser) == (action.winner, action.loser)
            else 0
        )
        outcome = MergeOutcome(
            winner=action.winner, loser=action.loser, winner_epoch=action.winner_epoch,
            loser_epoch=action.loser_epoch, succeeded=True, finished_at=now,
        )
        try:
            self.admin.merge_states(
                token,
                winner_address=address(action.winner),
                loser=action.loser,
                loser_address=address(action.loser),
                loser_epoch=action.loser_epoch,
            )
        except AdminError as error:
            memory.last_merge = replace(
                outcome, succeeded=False, message=str(error), consecutive_failures=failures + 1,
                finished_at=self.clock(),
            )
            raise ActionFailed(str(error)) from error
        memory.last_merge = replace(outcome, finished_at=self.clock())

    # -- Events ------------------------------------------------------------------------------

    def _post(self, resource: Mapping[str, Any], event: RecordEvent, now: datetime) -> None:
        self.api.post_event(
            resource, reason=str(event.reason), message=event.message, type=str(event.type),
            component=REPORTING_COMPONENT, now=now,
        )

    def _report_error(
        self, resource: Mapping[str, Any], memory: ClusterMemory, error: str | None,
        now: datetime,
    ) -> None:
        """Keep the pass's error (None: it succeeded); a new error gets a ReconcileFailed
        Event once, not one per retry."""
        if error is not None and error != memory.reconcile_error:
            try:
                self._post(resource, RecordEvent(EventReason.RECONCILE_FAILED, error,
                                                 EventType.WARNING), now)
            except ApiError as failure:
                log.warning("could not record a ReconcileFailed Event: %s", failure)
        memory.reconcile_error = error


def _describe(action: Action) -> str:
    """`Kind(field=value, ...)` with enum members as their words, for the log."""
    fields = ", ".join(f"{key}={value}" for key, value in vars(action).items())
    return f"{type(action).__name__}({fields})"


def _admin_addresses(pod_objects: list[dict[str, Any]], port: int) -> dict[str, str]:
    """Pod name -> Admin address, for pods whose server container runs and has an IP."""
    addresses = {}
    for pod in pod_objects:
        ip = (pod.get("status") or {}).get("podIP")
        if ip and container_state(pod).state == RUNNING:
            addresses[pod["metadata"]["name"]] = pod_address(ip, port)
    return addresses


def _lease_fingerprint(lease: Mapping[str, Any]) -> tuple[Any, ...]:
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    return (
        spec.get("holderIdentity"),
        spec.get("leaseTransitions"),
        spec.get("acquireTime"),
        annotations.get(names.IN_SYNC_ANNOTATION),
    )
