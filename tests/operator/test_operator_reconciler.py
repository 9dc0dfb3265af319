"""The reconcile shell (`reconciler.py`) against in-memory fakes of the API and the Admin
service: what it keeps between passes (handover, last error), how it treats conflicts, and
that it creates, patches and reports exactly what the pure core asked for.

The same shell runs for real in the test_operator_*.py end-to-end files; these tests reach the
paths a healthy cluster rarely takes (409s, refused switchovers, failing API calls)."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from gencluster_operator import desired, names
from gencluster_operator.cluster_io import ApiError
from gencluster_operator.observed import RuntimeStatus
from gencluster_operator.reconciler import IMMEDIATE_REPLANS, Reconciler
from gencluster_operator.runtime_admin import AdminError

from tests.operator.test_plan import resource

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
NAMESPACE = "default"
KEY = (NAMESPACE, "id")


class FakeApi:
    """Objects by (kind, name) in one namespace; `fail` maps a method name to the ApiError its
    next calls raise."""

    def __init__(self, cluster: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {
            ("ClusteredServer", cluster["metadata"]["name"]): cluster
        }
        self.events: list[tuple[str, str, str]] = []
        self.fail: dict[str, ApiError] = {}
        self.deleted: list[tuple[str, dict[str, Any]]] = []
        self.created: list[tuple[str, str]] = []
        self.claim_patches: list[tuple[str, dict[str, Any]]] = []

    def _check(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    @property
    def cluster(self) -> dict[str, Any]:
        return self.objects[("ClusteredServer", "id")]

    def read_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get(("ClusteredServer", name))
        return copy.deepcopy(found) if found else None

    def list_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (kind, _), o in sorted(self.objects.items()) if kind == "Pod"]

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("Secret", name))

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("Lease", name))

    def read_child(self, template: dict[str, Any]) -> dict[str, Any] | None:
        return self.objects.get((template["kind"], template["metadata"]["name"]))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check("create")
        key = (body["kind"], body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, f"{key} already exists")
        self.objects[key] = copy.deepcopy(body)
        self.created.append(key)
        return body

    def list_claims(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (kind, _), o in sorted(self.objects.items())
                if kind == "PersistentVolumeClaim"]

    def patch(self, current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        if current["kind"] != "PersistentVolumeClaim":
            raise AssertionError(f"no drift expected, got {patch}")
        name = current["metadata"]["name"]
        self.claim_patches.append((name, patch))
        stored = self.objects[("PersistentVolumeClaim", name)]["metadata"]
        stored["ownerReferences"] = patch["metadata"]["ownerReferences"] or []
        return stored

    def delete_pod(self, namespace: str, name: str, options: dict[str, Any]) -> None:
        self.deleted.append((name, options))
        self.objects.pop(("Pod", name), None)

    def patch_lease(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        lease = self.objects[("Lease", name)]
        if "spec" in patch:
            lease["spec"]["holderIdentity"] = None
        annotations = lease["metadata"].setdefault("annotations", {})
        for key, value in ((patch.get("metadata") or {}).get("annotations") or {}).items():
            if value is None:
                annotations.pop(key, None)

    def patch_cluster(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        annotations = self.cluster["metadata"].setdefault("annotations", {})
        for key, value in patch["metadata"]["annotations"].items():
            if value is None:
                annotations.pop(key, None)

    def patch_cluster_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self._check("patch_cluster_status")
        self.cluster["status"] = {k: v for k, v in status.items() if v is not None}
        return self.cluster

    def post_event(self, resource: dict[str, Any], *, reason: str, message: str, type: str,
                   component: str, now: datetime) -> None:
        self.events.append((reason, type, message))


class FakeAdmin:
    def __init__(self) -> None:
        self.reports: dict[str, RuntimeStatus] = {}
        self.switchover_error: AdminError | None = None
        self.switchovers: list[tuple[str, str]] = []

    def statuses(self, token: str, addresses: dict[str, str]) -> dict[str, RuntimeStatus]:
        assert len(token) >= 32
        return {pod: report for pod, report in self.reports.items() if pod in addresses}

    def forget_except(self, addresses: set[str]) -> None:
        pass

    def switchover(self, token: str, address: str, target: str, renew: int) -> None:
        self.switchovers.append((address, target))
        if self.switchover_error is not None:
            raise self.switchover_error


def stored_cluster(**spec: Any) -> dict[str, Any]:
    cluster = resource(3, **spec)
    cluster["metadata"].update(namespace=NAMESPACE, uid="uid-id", generation=1)
    cluster.pop("status", None)
    return cluster


def reconciler(api: FakeApi, admin: FakeAdmin | None = None) -> Reconciler:
    return Reconciler(api, admin or FakeAdmin(), clock=lambda: NOW)  # type: ignore[arg-type]


def running_cluster(api: FakeApi, admin: FakeAdmin) -> None:
    """Turn the created pods into three running, Ready pods: id-0 active, the others in sync."""
    for ordinal in range(3):
        pod = api.objects[("Pod", f"id-{ordinal}")]
        pod["metadata"]["uid"] = f"uid-{ordinal}"
        pod["status"] = {
            "phase": "Running",
            "podIP": f"127.0.64.{ordinal + 1}",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": names.CONTAINER_NAME, "restartCount": 0,
                                   "state": {"running": {"startedAt": "2026-11-25T11:00:00Z"}}}],
        }
    lease = api.objects[("Lease", "id")]
    lease["spec"].update(holderIdentity="id-0", leaseTransitions=1,
                         acquireTime="2026-11-25T11:01:00Z")
    lease["metadata"].update(resourceVersion="5",
                             annotations={names.IN_SYNC_ANNOTATION: '["id-1","id-2"]'})
    admin.reports = {
        "id-0": RuntimeStatus("active", 1, 10, (("id-1", 0), ("id-2", 0))),
        "id-1": RuntimeStatus("standby", 1, 10),
        "id-2": RuntimeStatus("standby", 1, 10),
    }


def test_first_pass_creates_every_child_and_the_pods_then_writes_the_status() -> None:
    api = FakeApi(stored_cluster())
    again = reconciler(api).reconcile_once(KEY)
    kinds = sorted(kind for kind, _ in api.objects)
    assert kinds == sorted(["ClusteredServer", "Lease", "PodDisruptionBudget", "Role",
                            "RoleBinding", "Secret", "Service", "Service", "ServiceAccount",
                            "NetworkPolicy", "Pod", "Pod", "Pod"])
    token = base64.b64decode(api.objects[("Secret", "id-peer-token")]["data"]["token"]).decode()
    assert len(token) >= 32
    assert api.objects[("Pod", "id-0")] == desired.pod(api.cluster, 0)
    assert [reason for reason, _, _ in api.events] == ["ScaledUp"]
    status = api.cluster["status"]
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Ready"] == "Reconciling"
    assert again, "a new generation is reconciled again at once, for a real Ready"
    assert not reconciler(api).reconcile_once(KEY)
    assert {c["type"]: c["reason"] for c in api.cluster["status"]["conditions"]}["Ready"] == (
        "Pending")


def test_a_conflict_is_planned_again_at_once_but_never_reported() -> None:
    api = FakeApi(stored_cluster())
    shell = reconciler(api)
    shell.reconcile_once(KEY)
    api.objects.pop(("Pod", "id-2"))
    api.fail["create"] = ApiError(409, "pods \"id-2\" already exists")
    results = [shell.reconcile_once(KEY) for _ in range(IMMEDIATE_REPLANS + 1)]
    assert results == [True] * IMMEDIATE_REPLANS + [False]
    assert "ReconcileFailed" not in [reason for reason, _, _ in api.events]
    degraded = {c["type"]: c for c in api.cluster["status"]["conditions"]}["Degraded"]
    assert degraded["reason"] != "ReconcileFailed"


def test_a_failing_call_is_reported_once_and_cleared_when_a_pass_succeeds() -> None:
    api = FakeApi(stored_cluster())
    shell = reconciler(api)
    shell.reconcile_once(KEY)
    api.objects.pop(("Pod", "id-2"))
    api.fail["create"] = ApiError(403, "pods is forbidden")
    shell.reconcile_once(KEY)
    shell.reconcile_once(KEY)
    degraded = {c["type"]: c for c in api.cluster["status"]["conditions"]}["Degraded"]
    assert (degraded["reason"], degraded["message"]) == ("ReconcileFailed", "pods is forbidden")
    failed = [event for event in api.events if event[0] == "ReconcileFailed"]
    assert failed == [("ReconcileFailed", "Warning", "pods is forbidden")]
    del api.fail["create"]
    shell.reconcile_once(KEY)
    degraded = {c["type"]: c for c in api.cluster["status"]["conditions"]}["Degraded"]
    assert degraded["reason"] != "ReconcileFailed"
    assert ("Pod", "id-2") in api.objects


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.DEADLINE_EXCEEDED]
)
def test_a_failed_switchover_is_reported_and_still_remembered(code: grpc.StatusCode) -> None:
    """The Lease may have moved although the call failed: the handover is kept (one lease
    duration) so that the status names its reason and the plan does not ask twice."""
    api, admin = FakeApi(stored_cluster()), FakeAdmin()
    shell = reconciler(api, admin)
    shell.reconcile_once(KEY)
    running_cluster(api, admin)
    api.cluster["metadata"]["annotations"] = {names.SWITCHOVER_TO_ANNOTATION: "id-1"}
    admin.switchover_error = AdminError("refused", code)
    shell.reconcile_once(KEY)
    assert shell.memory(KEY).reconcile_error == "refused"
    assert ("ReconcileFailed", "Warning", "refused") in api.events
    shell.reconcile_once(KEY)
    assert admin.switchovers == [("127.0.64.1:50051", "id-1")], "not asked twice at once"
    handover = shell.memory(KEY).handover
    assert handover is not None
    assert (handover.from_pod, handover.to_pod, handover.started_at) == ("id-0", "id-1", NOW)


def test_a_deleted_cluster_is_forgotten() -> None:
    api = FakeApi(stored_cluster())
    shell = reconciler(api)
    shell.reconcile_once(KEY)
    shell.memory(KEY).reconcile_error = "something"
    del api.objects[("ClusteredServer", "id")]
    assert not shell.reconcile_once(KEY)
    assert shell.memory(KEY).reconcile_error is None


# -- durable state --------------------------------------------------------------------------------


def test_a_persistent_cluster_gets_each_claim_before_its_pod() -> None:
    api = FakeApi(stored_cluster(persistence={"enabled": True, "size": "3Gi"}))
    reconciler(api).reconcile_once(KEY)
    order = [key for key in api.created if key[0] in ("Pod", "PersistentVolumeClaim")]
    assert order == [
        ("PersistentVolumeClaim", "id-data-0"), ("PersistentVolumeClaim", "id-data-1"),
        ("PersistentVolumeClaim", "id-data-2"), ("Pod", "id-0"), ("Pod", "id-1"), ("Pod", "id-2"),
    ]
    assert api.objects[("PersistentVolumeClaim", "id-data-1")] == desired.claim(api.cluster, 1)
    reconciler(api).reconcile_once(KEY)
    assert len([k for k in api.created if k[0] == "PersistentVolumeClaim"]) == 3


def test_retain_on_delete_moves_the_claims_owner_reference() -> None:
    api = FakeApi(stored_cluster(persistence={"enabled": True}))
    shell = reconciler(api)
    shell.reconcile_once(KEY)
    api.cluster["spec"]["persistence"]["retainOnDelete"] = True
    shell.reconcile_once(KEY)
    for ordinal in range(3):
        claim = api.objects[("PersistentVolumeClaim", f"id-data-{ordinal}")]
        assert claim["metadata"]["ownerReferences"] == []
    patched = len(api.claim_patches)
    shell.reconcile_once(KEY)
    assert len(api.claim_patches) == patched, "nothing left to change"
    api.cluster["spec"]["persistence"]["retainOnDelete"] = False
    shell.reconcile_once(KEY)
    claim = api.objects[("PersistentVolumeClaim", "id-data-0")]
    assert claim["metadata"]["ownerReferences"] == [desired.owner_reference(api.cluster)]


def test_reinitialize_on_a_lost_cluster_clears_the_lease_and_the_request() -> None:
    api, admin = FakeApi(stored_cluster()), FakeAdmin()
    shell = reconciler(api, admin)
    shell.reconcile_once(KEY)
    running_cluster(api, admin)
    shell.reconcile_once(KEY)
    lease = api.objects[("Lease", "id")]
    lease["spec"]["holderIdentity"] = None
    lease["metadata"]["annotations"][names.INITIALIZED_ANNOTATION] = "2026-11-25T11:01:00Z"
    admin.reports = {pod: RuntimeStatus("standby", 1, 0, state_lost=True)
                     for pod in ("id-0", "id-1", "id-2")}
    shell.reconcile_once(KEY)
    assert api.cluster["status"]["phase"] == "StateLost"
    assert [e[:2] for e in api.events if e[0] == "StateLost"] == [("StateLost", "Warning")]
    api.cluster["metadata"]["annotations"] = {names.REINITIALIZE_ANNOTATION: "go"}
    shell.reconcile_once(KEY)
    assert names.INITIALIZED_ANNOTATION not in lease["metadata"]["annotations"]
    assert names.REINITIALIZE_ANNOTATION not in api.cluster["metadata"]["annotations"]
    reinitialized = [e for e in api.events if e[0] == "Reinitialized"]
    assert len(reinitialized) == 1 and "'go'" in reinitialized[0][2]
    shell.reconcile_once(KEY)
    assert len([e for e in api.events if e[0] in ("Reinitialized", "StateLost")]) == 2


def test_reinitialize_on_a_serving_cluster_changes_nothing() -> None:
    api, admin = FakeApi(stored_cluster()), FakeAdmin()
    shell = reconciler(api, admin)
    shell.reconcile_once(KEY)
    running_cluster(api, admin)
    lease = api.objects[("Lease", "id")]
    lease["metadata"]["annotations"][names.INITIALIZED_ANNOTATION] = "2026-11-25T11:01:00Z"
    before = copy.deepcopy(lease)
    api.cluster["metadata"]["annotations"] = {names.REINITIALIZE_ANNOTATION: "oops"}
    shell.reconcile_once(KEY)
    assert api.objects[("Lease", "id")] == before
    assert names.REINITIALIZE_ANNOTATION not in api.cluster["metadata"]["annotations"]
    rejected = [e for e in api.events if e[0] == "ReinitializeRejected"]
    assert len(rejected) == 1 and rejected[0][1] == "Warning"
    assert "id-0 is active" in rejected[0][2]
