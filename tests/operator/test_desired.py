"""The pure builders of desired.py: what every child object looks like, and the pod's contract
with the runtime (docs/runtime-config.md)."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster import wellknown
from gencluster_dev.machinery import schema as schema_module
from gencluster_operator import desired, names, spec
from gencluster_operator.names import RuntimeEnv

from tests.operator.test_plan import resource

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "clusteredservers.gencluster.io.yaml"
RUNTIME_CONFIG_DOC = ROOT / "docs" / "runtime-config.md"
TOKEN = "t" * 43


def crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = crd["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def env_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"]["containers"][0]["env"]


def env_value(pod: dict[str, Any], name: str) -> Any:
    item = next(e for e in env_of(pod) if e["name"] == name)
    return item.get("value", item.get("valueFrom"))


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "ordinal"),
    [("id-0", 0), ("id-12", 12), ("id-01", None), ("id-x", None), ("other-0", None),
     ("id-", None), ("id-server-3", None)],
)
def test_ordinal_of_reads_only_names_that_pod_name_builds(pod: str, ordinal: int | None) -> None:
    assert names.ordinal_of("id", pod) == ordinal
    if ordinal is not None:
        assert names.pod_name("id", ordinal) == pod


def test_child_names_follow_the_documented_rules() -> None:
    assert names.client_service_name("id") == "id"
    assert names.peer_service_name("id") == "id-peers"
    assert names.lease_name("id") == "id"
    assert names.service_account_name("id") == "id-gencluster"
    assert names.role_name("id") == names.role_binding_name("id") == "id-gencluster"
    assert names.pdb_name("id") == "id"
    assert names.peer_token_secret_name("id") == "id-peer-token"
    assert names.selector_string("id") == "gencluster.io/cluster=id"


def test_keys_shared_with_the_runtime_are_spelled_alike() -> None:
    assert names.IN_SYNC_ANNOTATION == wellknown.IN_SYNC_ANNOTATION
    assert names.ROLE_LABEL == wellknown.ROLE_LABEL
    assert names.ROLE_ACTIVE == wellknown.ROLE_ACTIVE
    assert names.INITIALIZED_ANNOTATION == wellknown.INITIALIZED_ANNOTATION


def test_spec_fallbacks_equal_the_crd_defaults() -> None:
    properties = crd_spec_schema()["properties"]
    assert properties["image"]["default"] == spec.DEFAULT_IMAGE
    assert properties["replicas"]["default"] == spec.DEFAULT_REPLICAS
    assert properties["port"]["default"] == spec.DEFAULT_PORT
    assert properties["partitionPolicy"]["default"] == spec.DEFAULT_PARTITION_POLICY
    replication = properties["replication"]["properties"]
    assert replication["mode"]["default"] == spec.DEFAULT_REPLICATION_MODE
    assert "default" not in replication["minSyncStandbys"], "it follows replicas"
    lease = properties["lease"]["properties"]
    assert lease["durationSeconds"]["default"] == spec.DEFAULT_LEASE_DURATION_SECONDS
    assert lease["renewDeadlineSeconds"]["default"] == spec.DEFAULT_RENEW_DEADLINE_SECONDS
    assert lease["retryPeriodSeconds"]["default"] == spec.DEFAULT_RETRY_PERIOD_SECONDS


def test_every_template_override_the_crd_offers_is_applied() -> None:
    template = crd_spec_schema()["properties"]["template"]["properties"]
    assert set(template["metadata"]["properties"]) == {"labels", "annotations"}
    assert set(template["spec"]["properties"]) == {
        "resources", "env", "nodeSelector", "tolerations", "affinity",
        "topologySpreadConstraints", "priorityClassName", "imagePullSecrets",
        "serviceAccountName", "volumes", "volumeMounts", "containers", "initContainers",
    }


SPREAD = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
          "whenUnsatisfiable": "ScheduleAnyway",
          "labelSelector": {"matchLabels": {names.CLUSTER_LABEL: "id"}}}
SIDECAR = {"name": "log-shipper", "image": "registry.example/shipper:1",
           "volumeMounts": [{"name": "logs", "mountPath": "/logs"}]}


def test_pod_template_fields_for_real_clusters_reach_the_pod() -> None:
    template = {"spec": {
        "topologySpreadConstraints": [SPREAD],
        "priorityClassName": "stateful-high",
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "serviceAccountName": "workload-identity",
        "volumes": [{"name": "logs", "emptyDir": {}}],
        "volumeMounts": [{"name": "logs", "mountPath": "/logs"}],
        "containers": [SIDECAR],
        "initContainers": [{"name": "warm", "image": "registry.example/warm:1"}],
    }}
    res = resource(template=template, persistence={"enabled": True})
    pod_spec = desired.pod(res, 1)["spec"]
    assert pod_spec["topologySpreadConstraints"] == [SPREAD]
    assert pod_spec["priorityClassName"] == "stateful-high"
    assert pod_spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod_spec["serviceAccountName"] == "workload-identity"
    assert pod_spec["initContainers"] == [{"name": "warm", "image": "registry.example/warm:1"}]
    server, sidecar = pod_spec["containers"]
    assert server["name"] == names.CONTAINER_NAME and sidecar == SIDECAR
    assert [v["name"] for v in pod_spec["volumes"]] == ["tmp", "data", "tls", "logs"]
    assert [m["mountPath"] for m in server["volumeMounts"]] == [
        "/tmp", names.DATA_DIR, names.TLS_DIR, "/logs"]
    # The Role the pods need is bound to the ServiceAccount they run as.
    (subject,) = desired.role_binding(res)["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": "workload-identity",
                       "namespace": "default"}
    # Copies: building a pod never aliases the resource's lists.
    pod_spec["containers"][1]["name"] = "changed"
    assert template["spec"]["containers"][0]["name"] == "log-shipper"


def test_without_a_service_account_of_their_own_pods_use_and_bind_ours() -> None:
    pod_spec = desired.pod(resource(), 0)["spec"]
    assert pod_spec["serviceAccountName"] == names.service_account_name("id")
    (subject,) = desired.role_binding(resource())["subjects"]
    assert subject["name"] == names.service_account_name("id")
    for field in desired.POD_FIELDS_AS_WRITTEN:
        assert field not in pod_spec
    assert len(pod_spec["containers"]) == 1


@pytest.mark.parametrize(("resources", "expected"), [
    (None, {"requests": {"cpu": "100m", "memory": "128Mi"}}),
    ({"requests": {"memory": "1Gi"}}, {"requests": {"cpu": "100m", "memory": "1Gi"}}),
    ({"limits": {"cpu": "50m"}},
     {"limits": {"cpu": "50m"}, "requests": {"memory": "128Mi"}}),
    ({"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
     {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}),
])
def test_server_container_requests_default_unless_set(
    resources: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    template = {"spec": {"resources": resources}} if resources else {}
    container = desired.pod(resource(template=template), 0)["spec"]["containers"][0]
    assert container["resources"] == expected


# -- the pod --------------------------------------------------------------------------------------


def test_pod_identity_labels_and_owner() -> None:
    pod = desired.pod(resource(), 2)
    metadata = pod["metadata"]
    assert metadata["name"] == "id-2" and metadata["namespace"] == "default"
    assert metadata["labels"][names.CLUSTER_LABEL] == "id"
    assert metadata["labels"][names.ORDINAL_LABEL] == "2"
    assert metadata["labels"][names.ROLE_LABEL] == names.ROLE_STANDBY
    assert metadata["ownerReferences"] == [{
        "apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer", "name": "id",
        "uid": "cr-uid", "controller": True, "blockOwnerDeletion": True,
    }]
    assert metadata["annotations"][names.TEMPLATE_HASH_ANNOTATION] == desired.template_hash(
        resource()
    )
    assert pod["spec"]["hostname"] == "id-2" and pod["spec"]["subdomain"] == "id-peers"
    assert pod["spec"]["serviceAccountName"] == "id-gencluster"


def test_container_runs_the_runtime_with_named_ports() -> None:
    container = desired.pod(resource(port=7000), 0)["spec"]["containers"][0]
    assert container["name"] == names.CONTAINER_NAME
    assert container["command"] == ["gencluster", "run"]
    assert container["image"] == "ghcr.io/gencluster/gencluster:0.1.0"
    assert container["ports"] == [
        {"name": "grpc", "containerPort": 7000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        {"name": "peer", "containerPort": 7001, "protocol": "TCP"},
        {"name": "health", "containerPort": 7002, "protocol": "TCP"},
    ]


def test_metrics_port_never_collides_with_the_grpc_port() -> None:
    ports = desired.pod(resource(port=9090), 0)["spec"]["containers"][0]["ports"]
    assert [p["containerPort"] for p in ports] == [9090, 9091, 9092, 9093]


def test_runtime_environment_is_the_documented_contract() -> None:
    res = resource(
        args={"start": 5}, replication={"mode": "Async", "minSyncStandbys": 0},
        partitionPolicy="Available",
        lease={"durationSeconds": 20, "renewDeadlineSeconds": 12, "retryPeriodSeconds": 3},
    )
    pod = desired.pod(res, 1)
    field = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
             for e in env_of(pod) if "fieldRef" in e.get("valueFrom", {})}
    assert field == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
                     "POD_UID": "metadata.uid", "POD_IP": "status.podIP"}
    values = {e["name"]: e["value"] for e in env_of(pod) if "value" in e}
    assert values == {
        RuntimeEnv.LISTEN_HOST: "$(POD_IP)",
        RuntimeEnv.SERVER: "id_server:IdServer",
        RuntimeEnv.ARGS: '{"start":5}',
        RuntimeEnv.PORT: "50051",
        RuntimeEnv.METRICS_PORT: "9090",
        RuntimeEnv.CLUSTER: "id",
        RuntimeEnv.POD_SELECTOR: "gencluster.io/cluster=id",
        RuntimeEnv.PEER_SERVICE: "id-peers",
        RuntimeEnv.LEASE_NAME: "id",
        RuntimeEnv.LEASE_DURATION_SECONDS: "20",
        RuntimeEnv.RENEW_DEADLINE_SECONDS: "12",
        RuntimeEnv.RETRY_PERIOD_SECONDS: "3",
        RuntimeEnv.REPLICATION_MODE: "Async",
        RuntimeEnv.MIN_SYNC_STANDBYS: "0",
        RuntimeEnv.PARTITION_POLICY: "Available",
        RuntimeEnv.DEDUPLICATION_WINDOW_SECONDS: "300",
        RuntimeEnv.TLS_DIR: names.TLS_DIR,
        RuntimeEnv.PEER_PORT: "50052",
        RuntimeEnv.HEALTH_PORT: "50053",
        RuntimeEnv.CLIENT_AUTH: "None",
    }
    assert env_value(pod, RuntimeEnv.PEER_TOKEN) == {
        "secretKeyRef": {"name": "id-peer-token", "key": "token"}
    }


def test_pod_ip_is_defined_before_the_variables_that_refer_to_it() -> None:
    order = [e["name"] for e in env_of(desired.pod(resource(), 0))]
    assert order.index("POD_IP") < order.index(RuntimeEnv.LISTEN_HOST)


def test_every_runtime_variable_is_documented() -> None:
    doc = RUNTIME_CONFIG_DOC.read_text()
    for item in desired.runtime_env(spec.cluster_spec(resource())):
        assert f"`{item['name']}`" in doc, item["name"]


def test_args_are_passed_as_canonical_json() -> None:
    args = {"b": [1, 2], "a": {"nested": True}, "text": "é"}
    value = env_value(desired.pod(resource(args=args), 0), RuntimeEnv.ARGS)
    assert json.loads(value) == args
    assert value == json.dumps(args, sort_keys=True, separators=(",", ":"))


def test_probes_use_grpc_health_with_separate_readiness_and_liveness_services() -> None:
    container = desired.pod(resource(), 0)["spec"]["containers"][0]
    # With TLS (the default) on the plaintext health port: the kubelet's gRPC probe has no TLS.
    assert container["readinessProbe"]["grpc"] == {"port": 50053, "service": ""}
    assert container["livenessProbe"]["grpc"] == {
        "port": 50053, "service": names.LIVENESS_HEALTH_SERVICE,
    }
    plaintext = desired.pod(resource(tls={"enabled": False}), 0)["spec"]["containers"][0]
    assert plaintext["readinessProbe"]["grpc"] == {"port": 50051, "service": ""}
    assert [p["name"] for p in plaintext["ports"]] == ["grpc", "metrics"]
    assert container["startupProbe"]["grpc"] == container["livenessProbe"]["grpc"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_pod_is_locked_down() -> None:
    pod = desired.pod(resource(), 0)
    container = pod["spec"]["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "tls", "mountPath": names.TLS_DIR, "readOnly": True}]
    assert pod["spec"]["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {"name": "tls", "secret": {"secretName": "id-0-tls", "defaultMode": 0o444}}]
    assert pod["spec"]["enableServiceLinks"] is False


def test_grace_period_covers_a_handover() -> None:
    default = desired.pod(resource(), 0)["spec"]["terminationGracePeriodSeconds"]
    assert default == 30
    slow = resource(lease={"durationSeconds": 40, "renewDeadlineSeconds": 20,
                           "retryPeriodSeconds": 5})
    assert desired.pod(slow, 0)["spec"]["terminationGracePeriodSeconds"] == 60


def test_template_overrides_are_merged_and_reserved_keys_stay_the_operators() -> None:
    template = {
        "metadata": {
            "labels": {"team": "ids", names.ROLE_LABEL: "active", names.CLUSTER_LABEL: "x"},
            "annotations": {"note": "hi", names.TEMPLATE_HASH_ANNOTATION: "forged"},
        },
        "spec": {
            "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "256Mi"}},
            "env": [{"name": "EXTRA", "value": "$(POD_IP):1"},
                    {"name": RuntimeEnv.SERVER, "value": "evil:Server"}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"x": 1}},
        },
    }
    res = resource(template=template)
    pod = desired.pod(res, 0)
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels["team"] == "ids"
    assert labels[names.ROLE_LABEL] == "standby" and labels[names.CLUSTER_LABEL] == "id"
    assert annotations["note"] == "hi"
    assert annotations[names.TEMPLATE_HASH_ANNOTATION] == desired.template_hash(res)
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "1"}, "requests": {"memory": "256Mi"}}
    assert env_value(pod, RuntimeEnv.SERVER) == "id_server:IdServer"
    assert [e["name"] for e in env_of(pod)].count(RuntimeEnv.SERVER) == 1
    assert env_of(pod)[-1] == {"name": "EXTRA", "value": "$(POD_IP):1"}
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert pod["spec"]["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert pod["spec"]["affinity"] == {"nodeAffinity": {"x": 1}}


def test_default_affinity_spreads_pods_of_one_cluster_over_nodes() -> None:
    affinity = desired.pod(resource(), 0)["spec"]["affinity"]
    term = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"] == {"matchLabels": {names.CLUSTER_LABEL: "id"}}
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_builders_do_not_alias_the_resource() -> None:
    res = resource(template={"spec": {"env": [{"name": "A", "value": "1"}],
                                      "tolerations": [{"key": "k", "operator": "Exists"}]}})
    before = copy.deepcopy(res)
    pod = desired.pod(res, 0)
    pod["spec"]["containers"][0]["env"][-1]["value"] = "changed"
    pod["spec"]["tolerations"][0]["key"] = "changed"
    assert res == before


# -- template hash --------------------------------------------------------------------------------

ROLLING_CHANGES = [
    {"image": "ghcr.io/gencluster/gencluster:0.2.0"},
    {"server": "id_server:Other"},
    {"args": {"start": 1}},
    {"port": 50052},
    {"replication": {"mode": "Async", "minSyncStandbys": 1}},
    {"partitionPolicy": "Available"},
    {"lease": {"durationSeconds": 16, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2}},
    {"template": {"spec": {"env": [{"name": "A", "value": "1"}]}}},
    {"template": {"metadata": {"labels": {"a": "b"}}}},
]


@pytest.mark.parametrize("change", ROLLING_CHANGES, ids=lambda c: next(iter(c)))
def test_template_hash_changes_with_everything_that_reaches_the_pod(change: dict) -> None:
    assert desired.template_hash(resource(**change)) != desired.template_hash(resource())


def test_template_hash_ignores_replicas_and_key_order() -> None:
    assert desired.template_hash(resource(5)) == desired.template_hash(resource(3))
    reordered = resource(args={"b": 1, "a": 2})
    assert desired.template_hash(reordered) == desired.template_hash(resource(args={"a": 2,
                                                                                    "b": 1}))
    assert re.fullmatch(r"[0-9a-f]{16}", desired.template_hash(resource()))


# -- Services ------------------------------------------------------------------------------------


def test_client_service_selects_the_active_only() -> None:
    service = desired.client_service(resource())
    assert service["metadata"]["name"] == "id"
    assert service["spec"]["selector"] == {names.CLUSTER_LABEL: "id", names.ROLE_LABEL: "active"}
    assert service["spec"]["ports"][0]["port"] == 50051
    assert service["spec"]["ports"][0]["targetPort"] == "grpc"


def test_peer_service_is_headless_and_publishes_unready_pods() -> None:
    service = desired.peer_service(resource())
    assert service["metadata"]["name"] == "id-peers"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {names.CLUSTER_LABEL: "id"}
    assert [p["name"] for p in service["spec"]["ports"]] == ["grpc", "metrics", "peer"]


# -- RBAC ----------------------------------------------------------------------------------------


def test_role_is_least_privilege() -> None:
    rules = desired.role(resource())["rules"]
    lease_rule = next(r for r in rules if r["resources"] == ["leases"])
    assert lease_rule["resourceNames"] == ["id"]
    assert "create" not in lease_rule["verbs"] and "delete" not in lease_rule["verbs"]
    assert sorted(lease_rule["verbs"]) == ["get", "list", "patch", "update", "watch"]
    patch_rule = next(r for r in rules if "patch" in r["verbs"] and r["resources"] == ["pods"])
    assert patch_rule["resourceNames"] == ["id-0", "id-1", "id-2"]
    pod_read = next(r for r in rules if r["resources"] == ["pods"] and "list" in r["verbs"])
    assert sorted(pod_read["verbs"]) == ["get", "list", "watch"]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert set(rule["resources"]) <= {"leases", "pods"}
        assert not {"create", "delete", "deletecollection"} & set(rule["verbs"])


def test_role_lets_surplus_pods_being_scaled_down_patch_their_label() -> None:
    rule = desired.role(resource(1), pod_ordinals=[0, 1, 2])["rules"][2]
    assert rule["resourceNames"] == ["id-0", "id-1", "id-2"]


def test_role_binding_binds_the_pods_service_account() -> None:
    binding = desired.role_binding(resource())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "id-gencluster"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "id-gencluster",
                                    "namespace": "default"}]


# -- budget, Lease, Secret ------------------------------------------------------------------------


def test_disruption_budget_allows_one_pod_at_a_time() -> None:
    pdb = desired.pod_disruption_budget(resource())
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {names.CLUSTER_LABEL: "id"}}


def test_lease_is_created_empty() -> None:
    lease = desired.lease(resource())
    assert lease["metadata"]["name"] == "id"
    assert lease["spec"] == {"leaseDurationSeconds": 15, "leaseTransitions": 0}


def test_peer_token_secret_holds_the_given_token() -> None:
    secret = desired.peer_token_secret(resource(), TOKEN)
    assert secret["metadata"]["name"] == "id-peer-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    assert secret["immutable"] is True


def test_short_peer_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        desired.peer_token_secret(resource(), "short")


def test_every_child_is_owned_labelled_and_namespaced() -> None:
    res = resource()
    res["metadata"]["namespace"] = "prod"
    children = [*desired.static_children(res, TOKEN), desired.pod(res, 0)]
    kinds = [c["kind"] for c in children]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Lease", "Secret", "Service",
                     "Service", "PodDisruptionBudget", "Pod"]
    for child in children:
        metadata = child["metadata"]
        assert metadata["namespace"] == "prod"
        assert metadata["labels"][names.CLUSTER_LABEL] == "id"
        assert metadata["ownerReferences"][0]["uid"] == "cr-uid"
        assert metadata["ownerReferences"][0]["controller"] is True


def test_builders_are_deterministic() -> None:
    res = resource()
    assert desired.static_children(res, TOKEN) == desired.static_children(res, TOKEN)
    assert desired.pod(res, 1) == desired.pod(res, 1)


def test_resource_admitted_by_the_crd_builds_the_same_pod_as_one_with_explicit_defaults() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema = schema_module.Schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    minimal = resource()
    minimal["spec"] = {"server": "id_server:IdServer"}
    admitted, errors = schema_module.admit(schema, minimal)
    assert errors == []
    explicit = resource()
    explicit["spec"]["replication"]["minSyncStandbys"] = 1
    assert desired.pod(admitted, 0) == desired.pod(explicit, 0)


# -- keeping children as built ------------------------------------------------------------------


def as_stored(child: dict[str, Any]) -> dict[str, Any]:
    """`child` as the API server returns it: metadata filled in, defaults added."""
    stored = copy.deepcopy(child)
    stored["metadata"].update(uid="child-uid", resourceVersion="7")
    if child["kind"] == "Service":
        stored["spec"].update(sessionAffinity="None", ipFamilies=["IPv4"])
        stored["spec"].setdefault("clusterIP", "10.0.0.7")
    return stored


def test_children_as_stored_have_not_drifted() -> None:
    cluster = resource(3)
    for child in desired.static_children(cluster, TOKEN):
        assert desired.controlled_by(as_stored(child), cluster), child["kind"]
        assert desired.drift_patch(child, as_stored(child)) is None, child["kind"]


def test_role_follows_the_pods_after_a_scale_up() -> None:
    before = as_stored(desired.role(resource(3)))
    wanted = desired.role(resource(5))
    patch = desired.drift_patch(wanted, before)
    assert patch == {"rules": wanted["rules"]}
    assert patch["rules"][2]["resourceNames"] == [f"id-{o}" for o in range(5)]


def test_service_selector_is_replaced_whole_and_ports_follow_the_spec() -> None:
    stored = as_stored(desired.client_service(resource(3)))
    stored["spec"]["selector"]["extra"] = "x"
    stored["metadata"]["labels"].pop(names.CLUSTER_LABEL)
    wanted = desired.client_service(resource(3, port=7000))
    patch = desired.drift_patch(wanted, stored)
    assert patch is not None
    assert patch["spec"]["selector"] == {**wanted["spec"]["selector"], "extra": None}
    assert patch["spec"]["ports"][0]["port"] == 7000
    assert patch["metadata"]["labels"][names.CLUSTER_LABEL] == "id"


def test_lease_and_secret_are_never_patched() -> None:
    """The runtime owns the Lease once created; the Secret is immutable."""
    cluster = resource(3)
    lease = as_stored(desired.lease(cluster))
    lease["spec"].update(holderIdentity="id-1", leaseTransitions=4, leaseDurationSeconds=30)
    assert desired.drift_patch(desired.lease(cluster), lease) is None
    secret = as_stored(desired.peer_token_secret(cluster, TOKEN))
    assert desired.drift_patch(desired.peer_token_secret(cluster, "u" * 43), secret) is None


def test_an_object_of_someone_else_is_not_controlled() -> None:
    cluster = resource(3)
    foreign = as_stored(desired.client_service(cluster))
    foreign["metadata"]["ownerReferences"] = []
    assert not desired.controlled_by(foreign, cluster)
    other = as_stored(desired.client_service(cluster))
    other["metadata"]["ownerReferences"][0]["uid"] = "another-uid"
    assert not desired.controlled_by(other, cluster)


# -- durable storage (spec.persistence) ------------------------------------------------------------


def persistent(**persistence: Any) -> dict[str, Any]:
    return resource(persistence={"enabled": True, "size": "2Gi", **persistence})


@pytest.mark.parametrize(("replicas", "expected"), [(1, 0), (2, 1), (3, 1), (7, 1)])
def test_min_sync_standbys_left_out_follows_replicas(replicas: int, expected: int) -> None:
    res = resource(replicas=replicas)
    del res["spec"]["replication"]["minSyncStandbys"]
    assert spec.cluster_spec(res).min_sync_standbys == expected
    env = {item["name"]: item.get("value") for item in desired.runtime_env(spec.cluster_spec(res))}
    assert env[RuntimeEnv.MIN_SYNC_STANDBYS] == str(expected)


def test_min_sync_standbys_written_out_is_kept() -> None:
    res = resource(replicas=1)
    res["spec"]["replication"] = {"mode": "Sync", "minSyncStandbys": 0}
    assert spec.cluster_spec(res).min_sync_standbys == 0
    res = resource(replicas=5)
    res["spec"]["replication"] = {"mode": "Sync", "minSyncStandbys": 3}
    assert spec.cluster_spec(res).min_sync_standbys == 3


def test_spec_fallbacks_for_storage_equal_the_crd_defaults() -> None:
    properties = crd_spec_schema()["properties"]
    storage = properties["persistence"]["properties"]
    assert storage["enabled"]["default"] == spec.DEFAULT_PERSISTENCE_ENABLED
    assert storage["size"]["default"] == spec.DEFAULT_PERSISTENCE_SIZE
    assert storage["retainOnDelete"]["default"] == spec.DEFAULT_RETAIN_ON_DELETE
    window = properties["runtime"]["properties"]["deduplicationWindowSeconds"]
    assert window["default"] == spec.DEFAULT_DEDUPLICATION_WINDOW_SECONDS


def test_claim_names_are_per_ordinal_and_read_back() -> None:
    assert names.claim_name("id", 2) == "id-data-2"
    assert names.claim_ordinal_of("id", "id-data-2") == 2
    assert names.claim_ordinal_of("id", "id-data-02") is None
    assert names.claim_ordinal_of("id", "id-2") is None
    with pytest.raises(ValueError, match="ordinal"):
        names.claim_name("id", -1)


def test_claim_is_read_write_once_sized_labelled_and_owned() -> None:
    claim = desired.claim(persistent(), 1)
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == "id-data-1"
    labels = claim["metadata"]["labels"]
    assert labels[names.CLUSTER_LABEL] == "id"
    assert labels[names.ORDINAL_LABEL] == "1"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "2Gi"}},
    }  # no storageClassName: the cluster's default StorageClass
    assert claim["metadata"]["ownerReferences"] == [desired.owner_reference(persistent())]


def test_claim_names_its_storage_class_and_is_unowned_when_retained() -> None:
    claim = desired.claim(persistent(storageClassName="fast", retainOnDelete=True), 0)
    assert claim["spec"]["storageClassName"] == "fast"
    assert "ownerReferences" not in claim["metadata"]


def test_no_claim_without_persistence() -> None:
    with pytest.raises(ValueError, match="persistence"):
        desired.claim(resource(), 0)


def test_persistent_pod_mounts_its_ordinals_claim_and_knows_its_data_dir() -> None:
    pod = desired.pod(persistent(), 2)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[names.DATA_VOLUME] == {
        "name": "data", "persistentVolumeClaim": {"claimName": "id-data-2"},
    }
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/var/lib/gencluster"} in mounts
    assert env_value(pod, RuntimeEnv.DATA_DIR) == "/var/lib/gencluster"
    assert pod["spec"]["securityContext"]["fsGroup"] == names.RUNTIME_GID
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_pod_without_persistence_has_no_data_volume_nor_data_dir() -> None:
    pod = desired.pod(resource(), 0)
    assert [v["name"] for v in pod["spec"]["volumes"]] == [names.TMP_VOLUME, names.TLS_VOLUME]
    assert RuntimeEnv.DATA_DIR not in [e["name"] for e in env_of(pod)]
    assert "fsGroup" not in pod["spec"]["securityContext"]


def test_deduplication_window_reaches_every_pod_and_rolls_them() -> None:
    res = resource(runtime={"deduplicationWindowSeconds": 60})
    assert env_value(desired.pod(res, 0), RuntimeEnv.DEDUPLICATION_WINDOW_SECONDS) == "60"
    assert desired.template_hash(res) != desired.template_hash(resource())


def test_retain_on_delete_does_not_roll_the_pods() -> None:
    assert desired.template_hash(persistent(retainOnDelete=True)) == desired.template_hash(
        persistent()
    )
    assert desired.template_hash(persistent()) != desired.template_hash(resource())


def test_claim_ownership_follows_retain_on_delete() -> None:
    res = persistent()
    owned = desired.claim(res, 0)
    retained = desired.claim(persistent(retainOnDelete=True), 0)
    assert desired.claim_ownership_patch(res, owned, retained=False) is None
    assert desired.claim_ownership_patch(res, retained, retained=True) is None
    assert desired.claim_ownership_patch(res, owned, retained=True) == {
        "metadata": {"ownerReferences": None}
    }
    assert desired.claim_ownership_patch(res, retained, retained=False) == {
        "metadata": {"ownerReferences": [desired.owner_reference(res)]}
    }


def test_a_claim_controlled_by_someone_else_is_never_adopted() -> None:
    res = persistent()
    foreign = desired.claim(res, 0)
    foreign["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "other", "controller": True}
    ]
    assert desired.claim_ownership_patch(res, foreign, retained=False) is None
    other_owner = {"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "other"}
    shared = desired.claim(res, 0)
    shared["metadata"]["ownerReferences"].append(other_owner)
    assert desired.claim_ownership_patch(res, shared, retained=True) == {
        "metadata": {"ownerReferences": [other_owner]}
    }


def test_pod_monitor_scrapes_the_metrics_port_of_the_cluster_pods_with_a_cluster_label() -> None:
    res = resource(monitoring={"podMonitor": {"enabled": True, "interval": "15s",
                                              "labels": {"release": "prometheus"}}})
    monitor = desired.pod_monitor(res)
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["metadata"]["labels"][names.CLUSTER_LABEL] == "id"
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == "cr-uid"
    assert monitor["spec"]["selector"] == {"matchLabels": names.cluster_selector("id")}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == names.METRICS_PORT_NAME and endpoint["interval"] == "15s"
    ports = desired.pod(res, 0)["spec"]["containers"][0]["ports"]
    assert names.METRICS_PORT_NAME in {port["name"] for port in ports}
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "cluster"
    # The pod label the relabeling reads (Prometheus turns `.` and `/` into `_`).
    assert relabel["sourceLabels"] == [
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", names.CLUSTER_LABEL)
    ]
    assert spec.cluster_spec(resource()).pod_monitor.enabled is False
