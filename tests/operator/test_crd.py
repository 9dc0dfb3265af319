"""The ClusteredServer CRD (crds/clusteredservers.gencluster.io.yaml) and the example manifests.

Two halves:

* the CRD's structure: names, subresources, printer columns, a description on every field,
  the structural-schema rules the API server enforces, CEL rules that compile and mean what
  they say (evaluated with cel-python directly);
* admission through the local control plane's schema module
  (`gencluster_dev.machinery.schema`: prune, default, validate incl. CEL), exactly what
  `kubectl apply` meets: the examples are admitted and defaulted, invalid specs are rejected
  with the field named.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster_dev.machinery import schema as schema_module
from gencluster_operator import events

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "clusteredservers.gencluster.io.yaml"
EXAMPLES = {
    "id-server": ROOT / "examples" / "id-server.yaml",
    "chat": ROOT / "examples" / "chat.yaml",
}

DEFAULT_IMAGE = "ghcr.io/gencluster/gencluster:0.1.0"
DEFAULT_LEASE = {"durationSeconds": 15, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2}
DEFAULT_PERSISTENCE = {"enabled": False, "size": "1Gi", "retainOnDelete": False}
CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded", "SplitBrain")


def load_crd() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(CRD_PATH.read_text()) if d]
    assert len(docs) == 1, "the CRD file holds exactly one document"
    return docs[0]


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def prop(path: str) -> dict[str, Any]:
    """The schema node at a dotted path of property names, e.g. 'spec.lease.durationSeconds'."""
    node = SCHEMA
    for name in path.split("."):
        node = node["properties"][name]
    return node


def walk(node: dict[str, Any], path: str = ""):
    """Yield (path, schema) for every node below `node`: properties, items, additionalProperties."""
    for name, sub in node.get("properties", {}).items():
        sub_path = f"{path}.{name}" if path else name
        yield sub_path, sub
        yield from walk(sub, sub_path)
    if isinstance(node.get("items"), dict):
        yield f"{path}[]", node["items"]
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield f"{path}{{}}", node["additionalProperties"]
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def cs(spec: dict[str, Any] | None = None, name: str = "demo", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "gencluster.io/v1alpha1",
        "kind": "ClusteredServer",
        "metadata": {"name": name, "namespace": "default"},
    }
    if spec is not None:
        obj["spec"] = spec
    obj.update(extra)
    return obj


# --------------------------------------------------------------------------- structure


def test_names_and_scope():
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["kind"] == "CustomResourceDefinition"
    assert CRD["metadata"]["name"] == "clusteredservers.gencluster.io"
    spec = CRD["spec"]
    assert spec["group"] == "gencluster.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ClusteredServer",
        "listKind": "ClusteredServerList",
        "plural": "clusteredservers",
        "singular": "clusteredserver",
        "shortNames": ["csrv"],
        "categories": ["gencluster"],
    }
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"] is True
    assert VERSION["storage"] is True


def test_status_and_scale_subresources():
    assert VERSION["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    # The paths point at fields of the right type.
    assert prop("spec.replicas")["type"] == "integer"
    assert prop("status.replicas")["type"] == "integer"
    assert prop("status.selector")["type"] == "string"


def test_printer_columns():
    columns = VERSION["additionalPrinterColumns"]
    default = [(c["name"], c["type"], c["jsonPath"]) for c in columns if c.get("priority", 0) == 0]
    assert default == [
        ("Replicas", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Active", "string", ".status.activePod"),
        ("Epoch", "integer", ".status.epoch"),
        ("Status", "string", '.status.conditions[?(@.type=="Ready")].reason'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    # Every column's simple path names a field of the schema (catches typos).
    for column in columns:
        path = column["jsonPath"]
        if path.startswith(".metadata.") or "[" in path:
            continue
        prop(path.lstrip("."))


def test_every_field_has_a_description():
    assert SCHEMA.get("description")
    missing = []
    for path, node in walk(SCHEMA):
        if path == "metadata":
            continue  # the API server forbids anything but `type: object` on the root metadata
        named = not path.endswith(("[]", "{}"))
        if (named or node.get("type") == "object") and not node.get("description", "").strip():
            missing.append(path)
    assert not missing, f"fields without a description: {missing}"


def test_structural_schema_rules():
    """What the API server checks on a v1 CRD schema (a structural schema)."""
    assert prop("metadata") == {"type": "object"}
    for path, node in walk(SCHEMA):
        assert "$ref" not in node, path
        for keyword in ("oneOf", "anyOf", "allOf", "not"):
            assert keyword not in node, f"{path}: {keyword} needs care in a structural schema"
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert node.get("type") or untyped_ok, f"{path}: type is required"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert "items" in node, path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            required = node["items"].get("required", [])
            assert all(k in required for k in keys), f"{path}: list map keys must be required"
        for required in node.get("required", []):
            assert required in node["properties"], f"{path}: required {required} is undefined"
    # The root's required fields exist too.
    assert set(SCHEMA["required"]) <= set(SCHEMA["properties"])


def test_crd_uses_only_known_apiextensions_fields():
    """Round trip through the kubernetes client's models: a misspelt key would be dropped."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    model = api.deserialize(json.dumps(CRD), "V1CustomResourceDefinition", "application/json")
    assert api.sanitize_for_serialization(model) == CRD


def test_defaults_in_the_schema():
    assert prop("spec.image")["default"] == DEFAULT_IMAGE
    assert prop("spec.replicas")["default"] == 3
    assert prop("spec.replicas")["minimum"] == 1
    assert prop("spec.port")["default"] == 50051
    assert (prop("spec.port")["minimum"], prop("spec.port")["maximum"]) == (1, 65535)
    assert prop("spec.replication.mode")["enum"] == ["Sync", "Async"]
    assert prop("spec.replication.mode")["default"] == "Sync"
    assert "default" not in prop("spec.replication.minSyncStandbys")  # follows replicas
    assert prop("spec.replication.minSyncStandbys")["minimum"] == 0
    assert prop("spec.partitionPolicy")["enum"] == ["Fenced", "Available"]
    assert prop("spec.partitionPolicy")["default"] == "Fenced"
    for field, value in DEFAULT_LEASE.items():
        assert prop(f"spec.lease.{field}")["default"] == value
    # Parents default to {} so their children's defaults apply when the parent is omitted.
    assert prop("spec.replication")["default"] == {}
    assert prop("spec.lease")["default"] == {}
    assert prop("spec.args")["x-kubernetes-preserve-unknown-fields"] is True
    assert prop("spec.template.spec.affinity")["x-kubernetes-preserve-unknown-fields"] is True
    assert SCHEMA["required"] == ["spec"]
    assert prop("spec")["required"] == ["server"]


def test_status_schema():
    status = prop("status")["properties"]
    assert set(status) >= {
        "observedGeneration", "phase", "replicas", "readyReplicas", "selector", "activePod",
        "epoch", "standbys", "lastFailoverTime", "lastFailoverReason", "merges", "conditions",
    }  # fmt: skip
    assert status["lastFailoverTime"]["format"] == "date-time"
    standby = status["standbys"]["items"]["properties"]
    assert set(standby) == {"pod", "inSync", "lag"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]["properties"]
    assert set(item) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }  # fmt: skip
    assert item["lastTransitionTime"]["format"] == "date-time"
    for condition_type in CONDITION_TYPES:
        assert condition_type in conditions["description"]
    assert "StatesMerged" in conditions["description"]


def all_rules() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, rule)
        for path, node in [("", SCHEMA), *walk(SCHEMA)]
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_cel_rules_are_documented_and_compile():
    import celpy

    rules = all_rules()
    assert {path for path, _ in rules} == {
        "spec", "spec.lease", "spec.persistence", "spec.tls", "spec.template.metadata.labels",
        "spec.template.metadata.annotations", "spec.template.spec.volumes",
        "spec.template.spec.volumeMounts", "spec.template.spec.containers",
    }
    env = celpy.Environment()
    for path, rule in rules:
        assert rule.get("message"), f"{path}: rule without a message: {rule['rule']}"
        env.compile(rule["rule"])


def eval_rules(path: str, value: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules at `path` that `value` (a defaulted object) breaks."""
    import celpy

    env = celpy.Environment()
    broken = []
    for rule_path, rule in all_rules():
        if rule_path != path:
            continue
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            broken.append(rule["message"])
    return broken


@pytest.mark.parametrize(
    ("lease", "broken"),
    [
        (DEFAULT_LEASE, []),
        ({"durationSeconds": 3, "renewDeadlineSeconds": 2, "retryPeriodSeconds": 1}, []),
        ({"durationSeconds": 10, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2},
         ["durationSeconds must be greater"]),
        ({"durationSeconds": 15, "renewDeadlineSeconds": 2, "retryPeriodSeconds": 2},
         ["renewDeadlineSeconds must be greater"]),
        ({"durationSeconds": 1, "renewDeadlineSeconds": 2, "retryPeriodSeconds": 3},
         ["durationSeconds must be greater", "renewDeadlineSeconds must be greater"]),
        # What the pods refuse (election.lease_timing_problems) is refused at admission.
        ({"durationSeconds": 11, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2},
         ["durationSeconds must be at least lease.renewDeadlineSeconds + "]),
        ({"durationSeconds": 12, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2}, []),
        ({"durationSeconds": 20, "renewDeadlineSeconds": 6, "retryPeriodSeconds": 5},
         ["greater than 1.2 x lease.retryPeriodSeconds"]),
        ({"durationSeconds": 20, "renewDeadlineSeconds": 7, "retryPeriodSeconds": 5}, []),
        ({"durationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}, []),
    ],
)  # fmt: skip
def test_lease_rules_with_celpy(lease, broken):
    messages = eval_rules("spec.lease", lease)
    assert len(messages) == len(broken)
    for message, fragment in zip(messages, broken, strict=True):
        assert fragment in message


@pytest.mark.parametrize(
    ("replicas", "mode", "min_sync", "ok"),
    [
        (3, "Sync", 1, True),
        (3, "Sync", 2, True),
        (3, "Sync", 3, False),
        (1, "Sync", 1, False),
        (1, "Sync", 0, True),
        (1, "Async", 1, False),
        (3, "Async", 7, False),
        (3, "Async", 0, True),
    ],
)
def test_min_sync_standbys_rule_with_celpy(replicas, mode, min_sync, ok):
    spec = {
        "server": "m:C",
        "replicas": replicas,
        "replication": {"mode": mode, "minSyncStandbys": min_sync},
    }
    messages = eval_rules("spec", spec)
    assert (not messages) == ok
    for message in messages:
        assert "minSyncStandbys" in message
        assert ("replicas - 1" if mode == "Sync" else "cannot be honoured in Async") in message


@pytest.mark.parametrize("policy", ["Fenced", "Available"])
@pytest.mark.parametrize(
    ("replication", "ok"),
    [
        ({"mode": "Sync"}, True),
        ({"mode": "Sync", "minSyncStandbys": 2}, True),
        ({"mode": "Async"}, True),
        ({"mode": "Async", "minSyncStandbys": 1}, False),
    ],
)
def test_every_replication_and_policy_combination_is_honoured_or_refused(
    policy, replication, ok
):
    """Issue #13: Available with Sync is honoured (degraded Sync, docs/partitions.md); the one
    combination that cannot be is Async with standbys to wait for, whatever the policy."""
    spec = {"server": "m:C", "replicas": 3, "replication": replication,
            "partitionPolicy": policy}
    assert (not eval_rules("spec", spec)) == ok


def test_single_source_of_truth():
    """No other file in the repository carries its own copy of the CRD (symlinks are fine)."""
    skip_dirs = {".git", ".venv", ".gencluster", "node_modules", "__pycache__", ".pytest_cache"}
    copies = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for filename in filenames:
            path = Path(dirpath) / filename
            if not filename.endswith((".yaml", ".yml", ".json", ".tpl")):
                continue
            if path.resolve() == CRD_PATH.resolve():
                continue
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if "CustomResourceDefinition" in text and "clusteredservers.gencluster.io" in text:
                copies.append(str(path.relative_to(ROOT)))
    assert not copies, f"copies of the CRD outside crds/: {copies}"


def test_examples_name_the_right_servers():
    id_server = yaml.safe_load(EXAMPLES["id-server"].read_text())
    assert id_server["apiVersion"] == "gencluster.io/v1alpha1"
    assert id_server["kind"] == "ClusteredServer"
    assert id_server["metadata"]["name"] == "id-server"
    assert id_server["spec"]["server"] == "gencluster_examples.id_server:IdServer"
    assert id_server["spec"]["replicas"] == 3
    chat = yaml.safe_load(EXAMPLES["chat"].read_text())
    assert chat["kind"] == "ClusteredServer"
    assert chat["metadata"]["name"] == "chat"
    assert chat["spec"]["server"] == "gencluster_examples.chat:ChatServer"
    assert chat["spec"]["partitionPolicy"] == "Available"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_servers_load(name, monkeypatch):
    """The class an example names exists and has the API; Available needs a merge."""
    from gencluster.server import load_server_class, supports_merge

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    spec = yaml.safe_load(EXAMPLES[name].read_text())["spec"]
    server_class = load_server_class(spec["server"])
    if spec.get("partitionPolicy") == "Available":
        assert supports_merge(server_class)


def test_operator_vocabulary_is_documented():
    """The reasons the operator writes are the ones docs/clusteredserver.md and the CRD list."""
    doc = (ROOT / "docs" / "clusteredserver.md").read_text()
    for reason in events.ConditionReason:
        assert f"`{reason.value}`" in doc, f"condition reason {reason.value} is not documented"
    for condition_type in events.ConditionType:
        assert condition_type.value in CONDITION_TYPES
    failover = prop("status.lastFailoverReason")["description"]
    for reason in events.FailoverReason:
        assert reason.value in failover, f"failover reason {reason.value} not in the CRD"
        assert f"`{reason.value}`" in doc, f"failover reason {reason.value} is not documented"
    for reason in events.EventReason:
        assert f"| `{reason.value}` |" in doc, f"Event reason {reason.value} is not documented"


# --------------------------------------------------------------------------- admission


@pytest.fixture(scope="module")
def admit():
    """admit(obj) -> (admitted obj, errors), through the local control plane's schema module."""
    schema = schema_module.Schema(copy.deepcopy(SCHEMA))

    def _admit(obj: dict[str, Any], old: dict[str, Any] | None = None):
        return schema_module.admit(schema, copy.deepcopy(obj), old=old)

    return _admit


def describe(errors) -> str:
    return "; ".join(f"{e.field}: {e.reason}: {e.detail}" for e in errors)


def admitted(admit, obj: dict[str, Any]) -> dict[str, Any]:
    result, errors = admit(obj)
    assert not errors, describe(errors)
    return result


def assert_kept(written: Any, result: Any, path: str = "") -> None:
    """Every field written survives admission (kubectl's strict field validation refuses
    unknown fields, so a pruned field in an example is a bug)."""
    if isinstance(written, dict):
        assert isinstance(result, dict), path
        for key, value in written.items():
            assert key in result, f"{path}.{key} was pruned"
            assert_kept(value, result[key], f"{path}.{key}")
    else:
        assert written == result, path


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_are_admitted_and_defaulted(admit, name):
    obj = yaml.safe_load(EXAMPLES[name].read_text())
    result = admitted(admit, obj)
    assert_kept(obj, result)
    spec = result["spec"]
    assert spec["image"] == DEFAULT_IMAGE
    assert spec["port"] == 50051
    assert spec["replicas"] == 3
    assert spec["args"] == {}
    assert spec["lease"] == DEFAULT_LEASE
    assert spec["replication"] == {"mode": "Sync"}  # minSyncStandbys follows replicas
    assert spec["partitionPolicy"] == {"id-server": "Fenced", "chat": "Available"}[name]


def test_minimal_spec_gets_every_default(admit):
    spec = admitted(admit, cs({"server": "pkg.mod:Cls"}))["spec"]
    assert spec == {
        "server": "pkg.mod:Cls",
        "image": DEFAULT_IMAGE,
        "replicas": 3,
        "args": {},
        "port": 50051,
        "replication": {"mode": "Sync"},
        "partitionPolicy": "Fenced",
        "lease": DEFAULT_LEASE,
        "persistence": DEFAULT_PERSISTENCE,
        "runtime": {"deduplicationWindowSeconds": 300},
        "monitoring": {"podMonitor": {"enabled": False, "interval": "30s"}},
        "networkPolicy": {"enabled": True},
        "tls": {"enabled": True},
        "clientAuth": "None",
    }


def test_full_spec_is_kept_as_written(admit):
    spec = {
        "server": "chat:ChatServer",
        "image": "registry.example/chat:1.2",
        "replicas": 5,
        "args": {"room": "lobby", "limits": [1, 2, {"deep": None}]},
        "port": 6000,
        "replication": {"mode": "Async", "minSyncStandbys": 0},
        "partitionPolicy": "Available",
        "lease": {"durationSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1},
        "persistence": {"enabled": True, "size": "10Gi", "storageClassName": "fast",
                        "retainOnDelete": True},
        "runtime": {"deduplicationWindowSeconds": 86400},
        "monitoring": {"podMonitor": {"enabled": True, "interval": "15s",
                                      "labels": {"release": "prometheus"}}},
        "networkPolicy": {"enabled": False, "metricsNamespace": "monitoring"},
        "tls": {"enabled": True},
        "clientAuth": "MutualTLS",
        "template": {
            "metadata": {"labels": {"team": "chat"}, "annotations": {"a.example/b": "c"}},
            "spec": {
                "resources": {
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                    "limits": {"cpu": 1, "memory": "1Gi"},
                },
                "env": [
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "chat",
                     "effect": "NoSchedule"},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                ],
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 100,
                             "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}},
                        ],
                    },
                },
            },
        },
    }  # fmt: skip
    assert admitted(admit, cs(spec))["spec"] == spec


def test_args_accepts_any_json(admit):
    for args in ([1, 2, 3], "text", 7, {"nested": {"x": [True, None]}}):
        assert admitted(admit, cs({"server": "m:C", "args": args}))["spec"]["args"] == args


def test_unknown_fields_are_pruned(admit):
    obj = cs({"server": "m:C", "replicaz": 5, "lease": {"durationSecs": 30}})
    spec = admitted(admit, obj)["spec"]
    assert "replicaz" not in spec
    assert spec["lease"] == DEFAULT_LEASE


@pytest.mark.parametrize(
    ("spec", "replicas", "mode", "min_sync"),
    [
        ({"replicas": 1, "replication": {"minSyncStandbys": 0}}, 1, "Sync", 0),
        ({"replicas": 1, "replication": {"mode": "Async"}}, 1, "Async", None),
        ({"replicas": 1}, 1, "Sync", None),
        ({"replicas": 2}, 2, "Sync", None),
        ({"replicas": 3, "replication": {"minSyncStandbys": 2}}, 3, "Sync", 2),
        ({"replicas": 2, "replication": {"mode": "Async", "minSyncStandbys": 0}}, 2, "Async", 0),
    ],
)
def test_sync_standbys_within_replicas_are_admitted(admit, spec, replicas, mode, min_sync):
    result = admitted(admit, cs({"server": "m:C", **spec}))["spec"]
    assert result["replicas"] == replicas
    expected = {"mode": mode} if min_sync is None else {"mode": mode, "minSyncStandbys": min_sync}
    assert result["replication"] == expected


INVALID = {
    "replicas 0": ({"replicas": 0}, "spec.replicas", None),
    "replicas not a number": ({"replicas": "three"}, "spec.replicas", None),
    "bad mode": ({"replication": {"mode": "SemiSync"}}, "spec.replication.mode", None),
    "negative minSyncStandbys": (
        {"replication": {"minSyncStandbys": -1}}, "spec.replication.minSyncStandbys", None,
    ),
    "minSyncStandbys == replicas": (
        {"replicas": 3, "replication": {"mode": "Sync", "minSyncStandbys": 3}},
        "spec.replication.minSyncStandbys", "replicas - 1",
    ),
    "replicas 1 with Sync and minSyncStandbys 1": (
        {"replicas": 1, "replication": {"minSyncStandbys": 1}}, "spec.replication.minSyncStandbys",
        "replicas - 1",
    ),
    "Async with standbys to wait for": (
        {"replication": {"mode": "Async", "minSyncStandbys": 1}},
        "spec.replication.minSyncStandbys", "cannot be honoured in Async mode",
    ),
    "lease duration below renew deadline + retry period": (
        {"lease": {"durationSeconds": 11, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2}},
        "spec.lease.durationSeconds", "at least lease.renewDeadlineSeconds",
    ),
    "renew deadline within 1.2 retry periods": (
        {"lease": {"durationSeconds": 20, "renewDeadlineSeconds": 6, "retryPeriodSeconds": 5}},
        "spec.lease.renewDeadlineSeconds", "1.2 x lease.retryPeriodSeconds",
    ),
    "lease duration == renew deadline": (
        {"lease": {"durationSeconds": 10, "renewDeadlineSeconds": 10}},
        "spec.lease.durationSeconds", "greater than lease.renewDeadlineSeconds",
    ),
    "lease duration below default renew deadline": (
        {"lease": {"durationSeconds": 5}},
        "spec.lease.durationSeconds", "greater than lease.renewDeadlineSeconds",
    ),
    "renew deadline == retry period": (
        {"lease": {"renewDeadlineSeconds": 2, "retryPeriodSeconds": 2}},
        "spec.lease.renewDeadlineSeconds", "greater than lease.retryPeriodSeconds",
    ),
    "lease retry 0": ({"lease": {"retryPeriodSeconds": 0}}, "spec.lease.retryPeriodSeconds", None),
    "bad partition policy": ({"partitionPolicy": "Whatever"}, "spec.partitionPolicy", None),
    "port 0": ({"port": 0}, "spec.port", None),
    "port 65536": ({"port": 65536}, "spec.port", None),
    "empty image": ({"image": ""}, "spec.image", None),
    "env without name": (
        {"template": {"spec": {"env": [{"value": "x"}]}}}, "spec.template.spec.env[0].name", None,
    ),
    "bad toleration operator": (
        {"template": {"spec": {"tolerations": [{"operator": "Maybe"}]}}},
        "spec.template.spec.tolerations[0].operator", None,
    ),
    "bad quantity": (
        {"template": {"spec": {"resources": {"limits": {"cpu": "lots"}}}}},
        "spec.template.spec.resources.limits", None,
    ),
    "persistence size not a quantity": (
        {"persistence": {"enabled": True, "size": "lots"}}, "spec.persistence.size", None,
    ),
    "persistence size negative": ({"persistence": {"size": "-1Gi"}}, "spec.persistence.size", None),
    "persistence size zero": (
        {"persistence": {"enabled": True, "size": "0Gi"}}, "spec.persistence.size",
        "greater than zero",
    ),
    "empty storage class": (
        {"persistence": {"storageClassName": ""}}, "spec.persistence.storageClassName", None,
    ),
    "deduplication window 0": (
        {"runtime": {"deduplicationWindowSeconds": 0}}, "spec.runtime.deduplicationWindowSeconds",
        None,
    ),
    "deduplication window above a day": (
        {"runtime": {"deduplicationWindowSeconds": 86401}},
        "spec.runtime.deduplicationWindowSeconds", None,
    ),
    "label value not a string": (
        {"template": {"metadata": {"labels": {"tier": 3}}}}, "spec.template.metadata.labels", None,
    ),
    # Maximums (issue #12): every list, map and string of the spec is bounded.
    "replicas 2000000000": (
        {"replicas": 2_000_000_000}, "spec.replicas", "less than or equal to 9",
    ),
    "replicas 10": ({"replicas": 10}, "spec.replicas", "less than or equal to 9"),
    "image over 1024 characters": ({"image": "i" * 1025}, "spec.image", "1024"),
    "persistence size over 64 characters": (
        {"persistence": {"size": "1" * 65}}, "spec.persistence.size", "64",
    ),
    "65 labels": (
        {"template": {"metadata": {"labels": {f"l{i}": "v" for i in range(65)}}}},
        "spec.template.metadata.labels", "64",
    ),
    "label value over 63 characters": (
        {"template": {"metadata": {"labels": {"tier": "v" * 64}}}},
        "spec.template.metadata.labels", "63",
    ),
    "label key over 317 characters": (
        {"template": {"metadata": {"labels": {"k" * 318: "v"}}}},
        "spec.template.metadata.labels", "317",
    ),
    "annotation over 4096 characters": (
        {"template": {"metadata": {"annotations": {"a": "v" * 4097}}}},
        "spec.template.metadata.annotations", "4096",
    ),
    "65 env variables": (
        {"template": {"spec": {"env": [{"name": f"E{i}", "value": "v"} for i in range(65)]}}},
        "spec.template.spec.env", "64",
    ),
    "env value over 16384 characters": (
        {"template": {"spec": {"env": [{"name": "E", "value": "v" * 16385}]}}},
        "spec.template.spec.env[0].value", "16384",
    ),
    "65 tolerations": (
        {"template": {"spec": {"tolerations": [{"operator": "Exists"}] * 65}}},
        "spec.template.spec.tolerations", "64",
    ),
    "65 node selector labels": (
        {"template": {"spec": {"nodeSelector": {f"n{i}": "v" for i in range(65)}}}},
        "spec.template.spec.nodeSelector", "64",
    ),
    "17 sidecar containers": (
        {"template": {"spec": {"containers": [{"name": f"s{i}", "image": "x"}
                                              for i in range(17)]}}},
        "spec.template.spec.containers", "16",
    ),
    "65 extra volumes": (
        {"template": {"spec": {"volumes": [{"name": f"v{i}", "emptyDir": {}}
                                           for i in range(65)]}}},
        "spec.template.spec.volumes", "64",
    ),
    "17 image pull secrets": (
        {"template": {"spec": {"imagePullSecrets": [{"name": f"p{i}"} for i in range(17)]}}},
        "spec.template.spec.imagePullSecrets", "16",
    ),
    "65 pod monitor labels": (
        {"monitoring": {"podMonitor": {"labels": {f"l{i}": "v" for i in range(65)}}}},
        "spec.monitoring.podMonitor.labels", "64",
    ),
    "17 resource limits": (
        {"template": {"spec": {"resources": {"limits": {f"r{i}": "1" for i in range(17)}}}}},
        "spec.template.spec.resources.limits", "16",
    ),
    "a volume named like the operator's": (
        {"template": {"spec": {"volumes": [{"name": "data", "emptyDir": {}}]}}},
        "spec.template.spec.volumes", "reserved",
    ),
    "a mount on the data directory": (
        {"template": {"spec": {"volumeMounts": [{"name": "x",
                                                 "mountPath": "/var/lib/gencluster"}]}}},
        "spec.template.spec.volumeMounts", "reserved",
    ),
    "a sidecar named server": (
        {"template": {"spec": {"containers": [{"name": "server", "image": "x"}]}}},
        "spec.template.spec.containers", "reserved",
    ),
    "a spread constraint without its topology key": (
        {"template": {"spec": {"topologySpreadConstraints": [
            {"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}}},
        "spec.template.spec.topologySpreadConstraints[0].topologyKey", None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_specs_are_rejected_naming_the_field(admit, case):
    patch, field, fragment = INVALID[case]
    _, errors = admit(cs({"server": "id_server:IdServer", **patch}))
    assert errors, f"{case}: admitted"
    fields = [e.field for e in errors]
    assert any(f.startswith(field) for f in fields), f"{case}: {describe(errors)}"
    if fragment:
        assert any(fragment in f"{e.detail}" for e in errors), f"{case}: {describe(errors)}"


def test_cel_rules_are_skipped_after_a_type_error(admit):
    """As kube-apiserver: after a blocking schema error, CEL rules are skipped with one notice."""
    _, errors = admit(cs({"server": "m:C", "replicas": "three"}))
    assert any(e.field == "spec.replicas" for e in errors), describe(errors)
    assert not any("no such overload" in f"{e.detail}" for e in errors), describe(errors)
    assert [e.field for e in errors if e.field == "<nil>"] == ["<nil>"], describe(errors)


def test_missing_server_is_rejected(admit):
    _, errors = admit(cs({"replicas": 3}))
    # The "<nil>" cause is kube-apiserver's notice that CEL rules were skipped.
    assert [e.field for e in errors] == ["spec.server", "<nil>"], describe(errors)


def test_missing_spec_is_rejected(admit):
    _, errors = admit(cs(None))
    assert any(e.field == "spec" for e in errors), describe(errors)


@pytest.mark.parametrize(
    "server",
    [
        "id_server.IdServer",  # no colon
        "id_server:",  # no class
        ":IdServer",  # no module
        "id-server:IdServer",  # not a Python identifier
        "id_server:Id Server",
        "id_server::IdServer",
        "1mod:Cls",
        "mod:Cls:extra",
        "",
    ],
)
def test_bad_server_pattern_is_rejected(admit, server):
    _, errors = admit(cs({"server": server}))
    assert any(e.field == "spec.server" for e in errors), f"{server!r}: {describe(errors)}"


@pytest.mark.parametrize("server", ["m:C", "id_server:IdServer", "a.b.c:Outer.Inner", "_p:_C9"])
def test_good_server_values_are_admitted(admit, server):
    assert admitted(admit, cs({"server": server}))["spec"]["server"] == server


def test_a_realistic_status_is_admitted(admit):
    status = {
        "observedGeneration": 2,
        "phase": "Running",
        "replicas": 3,
        "readyReplicas": 3,
        "selector": "gencluster.io/cluster=demo",
        "activePod": "demo-0",
        "epoch": 4,
        "standbys": [
            {"pod": "demo-1", "inSync": True, "lag": 0},
            {"pod": "demo-2", "inSync": False, "lag": 17},
        ],
        "lastFailoverTime": "2026-11-25T17:00:00Z",
        "lastFailoverReason": "ActivePodDeleted",
        "merges": 1,
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": "", "observedGeneration": 2,
             "lastTransitionTime": "2026-11-25T17:00:00Z"}
            for t, s, r in [
                ("Ready", "True", "Serving"),
                ("Available", "True", "ActiveServing"),
                ("Progressing", "False", "Reconciled"),
                ("Degraded", "False", "AsExpected"),
                ("SplitBrain", "False", "StatesMerged"),
            ]
        ],
    }  # fmt: skip
    result = admitted(admit, cs({"server": "m:C"}, status=status))
    assert result["status"] == status


def test_condition_with_a_bad_status_is_rejected(admit):
    condition = {
        "type": "Ready",
        "status": "Yes",
        "reason": "Serving",
        "message": "",
        "lastTransitionTime": "2026-11-25T17:00:00Z",
    }
    _, errors = admit(cs({"server": "m:C"}, status={"conditions": [condition]}))
    assert any(e.field.startswith("status.conditions[0].status") for e in errors), describe(errors)


# --------------------------------------------------------------------------- storage transitions


def test_persistence_defaults_and_limits():
    assert prop("spec.persistence")["default"] == {}
    assert prop("spec.persistence.enabled")["default"] is False
    assert prop("spec.persistence.size")["default"] == "1Gi"
    assert prop("spec.persistence.retainOnDelete")["default"] is False
    assert "default" not in prop("spec.persistence.storageClassName")
    window = prop("spec.runtime.deduplicationWindowSeconds")
    assert (window["default"], window["minimum"], window["maximum"]) == (300, 1, 86400)
    assert prop("spec.runtime")["default"] == {}


STORAGE_CHANGES = {
    "enable": ({"enabled": False}, {"enabled": True}, "spec.persistence.enabled"),
    "disable": ({"enabled": True}, {"enabled": False}, "spec.persistence.enabled"),
    "size": ({"enabled": True}, {"enabled": True, "size": "2Gi"}, "spec.persistence.size"),
    "add class": (
        {"enabled": True}, {"enabled": True, "storageClassName": "fast"},
        "spec.persistence.storageClassName",
    ),
    "change class": (
        {"enabled": True, "storageClassName": "slow"},
        {"enabled": True, "storageClassName": "fast"}, "spec.persistence.storageClassName",
    ),
    "remove class": (
        {"enabled": True, "storageClassName": "slow"}, {"enabled": True},
        "spec.persistence.storageClassName",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(STORAGE_CHANGES))
def test_storage_cannot_change_on_an_existing_cluster(admit, case):
    before, after, field = STORAGE_CHANGES[case]
    old = admitted(admit, cs({"server": "m:C", "persistence": before}))
    _, errors = admit(cs({"server": "m:C", "persistence": after}), old)
    assert [(e.field, e.reason) for e in errors] == [(field, "FieldValueForbidden")], describe(
        errors
    )
    assert "cannot be changed on an existing ClusteredServer" in errors[0].detail


@pytest.mark.parametrize(
    ("before", "after"),
    [({}, {"enabled": False}), ({"enabled": False}, {}), ({"enabled": False}, {"enabled": True})],
)
def test_tls_cannot_be_switched_on_an_existing_cluster(admit, before, after):
    """Pods with and without TLS cannot replicate to each other: the roll would never end."""
    old = admitted(admit, cs({"server": "m:C", "tls": before}))
    _, errors = admit(cs({"server": "m:C", "tls": after}), old)
    assert [(e.field, e.reason) for e in errors] == [
        ("spec.tls.enabled", "FieldValueForbidden")], describe(errors)
    assert "tls.enabled cannot be changed on an existing ClusteredServer" in errors[0].detail
    kept = cs({"server": "m:C", "tls": {**before, "certificateLifetimeSeconds": 3600}})
    _, errors = admit(kept, old)
    assert errors == [], describe(errors)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"enabled": True, "size": "1Gi"}, {"enabled": True, "size": "1Gi",
                                            "retainOnDelete": True}),
        ({"enabled": False}, {"enabled": False, "size": "5Gi", "storageClassName": "x"}),
        ({"enabled": True, "storageClassName": "fast"},
         {"enabled": True, "storageClassName": "fast"}),
    ],
)  # fmt: skip
def test_storage_changes_that_touch_no_claim_are_admitted(admit, before, after):
    """retainOnDelete follows at any time; size and class mean nothing while disabled."""
    old = admitted(admit, cs({"server": "m:C", "persistence": before}))
    _, errors = admit(cs({"server": "m:C", "persistence": after}), old)
    assert not errors, describe(errors)
