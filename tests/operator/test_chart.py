"""The Helm chart with the real Helm engine (helm-python-sdk wraps Helm v4's Go SDK): lint,
render with default and non-default values, the values schema; every rendered manifest and the
CRD validated against Kubernetes' OpenAPI schemas (kubernetes-validate); the operator's
security settings and RBAC; and the Dockerfiles of the images the chart refers to.

`examples/*.yaml` against the CRD is tests/operator/test_crd.py's job.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from gencluster_dev.node import podspec
from gencluster_operator import desired

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gencluster"
CRD_FILE = ROOT / "crds" / "clusteredservers.gencluster.io.yaml"
CHART_CRD_LINK = CHART / "crds" / CRD_FILE.name
EXAMPLE = ROOT / "examples" / "id-server.yaml"
KUBERNETES_VERSION = "1.32"
"""The oldest version the chart's features need is 1.25 (CEL); 1.32 is what gencluster dev
reports and a version kubernetes-validate ships schemas for."""
RELEASE = "gencluster"
NAMESPACE = "gencluster-system"
NOT_IN_KUBERNETES = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                     ("monitoring.coreos.com/v1", "PrometheusRule")}
"""Kinds of other projects' CRDs, which kubernetes-validate has no schema for."""


# -- rendering helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every object of every template (NOTES.txt is text, not a manifest)."""
    objects = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def operator_rbac(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects without the ClusterRoles aggregated into view/edit/admin (for users)."""
    return [obj for obj in objects if not any(
        key.startswith(AGGREGATE_TO) for key in obj["metadata"].get("labels") or {})]


AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found


def validate_against_kubernetes(obj: dict[str, Any]) -> None:
    """Strict validation (unknown fields rejected) with a short message on failure."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(part) for part in error.path)
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {where}: {error.message}")


NON_DEFAULT_VALUES: dict[str, Any] = {
    "watchNamespace": "apps",
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                       "replicationLagEntries": 500},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    "image": {"repository": "registry.example/ops/gencluster-operator", "tag": "1.2.3",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "metrics": {"port": 9100, "service": {"type": "ClusterIP",
                                          "annotations": {"example.com/scrape": "true"}}},
    "health": {"port": 9101},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                     "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "podAnnotations": {"example.com/team": "ops"},
    "podLabels": {"team": "ops"},
    "priorityClassName": "system-cluster-critical",
    "extraArgs": ["--verbose"],
    "leaderElection": {"enabled": False, "leaseDuration": 15, "renewDeadline": 10,
                       "retryPeriod": 2},
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"memory": "1Gi"}},
}


# -- lint, schema, render ------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, NON_DEFAULT_VALUES], ids=["default", "non-default"])
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBERNETES_VERSION}.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"watchNamespace": "Not_A_Namespace"}, "/watchNamespace"),
        ({"metrics": {"port": "8080"}}, "/metrics/port"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"imagee": {"repository": "x"}}, "imagee"),
        ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
        ({"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
        ({"resources": {"request": {"cpu": "1"}}}, "request"),
        ({"prometheusRule": {"noActiveFor": "a while"}}, "/prometheusRule/noActiveFor"),
        ({"grafanaDashboard": {"enabled": 1}}, "/grafanaDashboard/enabled"),
    ],
)
def test_values_schema_rejects_bad_values(chart: Any, values: dict, named: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(named)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)
    assert helm.lint(str(CHART), values)["errors"]


def test_values_schema_accepts_the_defaults_and_the_non_default_values(chart: Any) -> None:
    chart.validate_schema({})
    chart.validate_schema(NON_DEFAULT_VALUES)
    assert json.loads((CHART / "values.schema.json").read_text())["additionalProperties"] is False


def test_equal_metrics_and_health_ports_fail_to_render(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="must differ"):
        render(chart, {"metrics": {"port": 9000}, "health": {"port": 9000}})


@pytest.mark.parametrize("values", [{}, NON_DEFAULT_VALUES], ids=["default", "non-default"])
def test_every_rendered_manifest_is_valid_kubernetes(chart: Any, values: dict) -> None:
    objects = manifests(render(chart, values))
    unchecked = set()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in NOT_IN_KUBERNETES:
            unchecked.add((obj["apiVersion"], obj["kind"]))
            continue
        validate_against_kubernetes(obj)
    expected_unchecked = NOT_IN_KUBERNETES if values.get("serviceMonitor") else set()
    assert unchecked == expected_unchecked


def test_the_crd_is_valid_kubernetes_and_the_chart_ships_it_byte_for_byte(chart: Any) -> None:
    assert CHART_CRD_LINK.is_symlink()
    assert os.readlink(CHART_CRD_LINK) == "../../../crds/clusteredservers.gencluster.io.yaml"
    (crd,) = chart.crds
    assert crd["filename"] == f"gencluster/crds/{CRD_FILE.name}"
    data = crd["data"] if isinstance(crd["data"], bytes) else crd["data"].encode()
    assert data == CRD_FILE.read_bytes()
    validate_against_kubernetes(yaml.safe_load(CRD_FILE.read_text()))


def test_the_packaged_chart_carries_the_crd_content_not_a_link(tmp_path: Path) -> None:
    archive = Path(helm.package(str(CHART), destination=str(tmp_path)))
    with tarfile.open(archive) as packaged:
        member = packaged.getmember(f"gencluster/crds/{CRD_FILE.name}")
        assert member.isfile()
        extracted = packaged.extractfile(member)
        assert extracted is not None and extracted.read() == CRD_FILE.read_bytes()


def test_default_render_objects_and_names(chart: Any) -> None:
    objects = manifests(render(chart))
    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)
    assert kinds == [
        ("ClusterRole", "gencluster"),
        ("ClusterRole", "gencluster-edit"),
        ("ClusterRole", "gencluster-view"),
        ("ClusterRoleBinding", "gencluster"),
        ("Deployment", "gencluster"),
        ("Pod", "gencluster-test-metrics"),
        ("PodDisruptionBudget", "gencluster"),
        ("Role", "gencluster-leader-election"),
        ("RoleBinding", "gencluster-leader-election"),
        ("Service", "gencluster-metrics"),
        ("ServiceAccount", "gencluster"),
        ("ValidatingAdmissionPolicy", "gencluster-pod-labels"),
        ("ValidatingAdmissionPolicyBinding", "gencluster-pod-labels"),
    ]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                               "ValidatingAdmissionPolicyBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE


# -- the operator Deployment ---------------------------------------------------------------------


def test_operator_deployment_runs_gencluster_operator_cluster_wide(chart: Any) -> None:
    deployment = only(manifests(render(chart)), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/gencluster/gencluster-operator:0.1.0"
    assert container["command"] == ["gencluster", "operator"]
    assert container["args"] == [
        "--all-namespaces", "--metrics-port=8080", "--metrics-host=$(POD_IP)",
        "--liveness=http://$(POD_IP):8081/healthz", "--leader-election",
        "--leader-election-lease=gencluster", "--lease-duration=15", "--renew-deadline=10",
        "--retry-period=2",
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["spec"]["serviceAccountName"] == "gencluster"


def test_operator_deployment_follows_non_default_values(chart: Any) -> None:
    objects = manifests(render(chart, NON_DEFAULT_VALUES))
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/ops/gencluster-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == [
        "--namespace=apps", "--metrics-port=9100", "--metrics-host=$(POD_IP)",
        "--liveness=http://$(POD_IP):9101/healthz", "--verbose",
    ]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert by_kind(objects, "PodDisruptionBudget") == []
    assert container["resources"] == NON_DEFAULT_VALUES["resources"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName",
                "imagePullSecrets"):
        assert pod["spec"][key] == NON_DEFAULT_VALUES[key]
    assert pod["metadata"]["annotations"] == {"example.com/team": "ops"}
    assert pod["metadata"]["labels"]["team"] == "ops"
    service = only(objects, "Service")
    assert service["spec"]["ports"][0]["port"] == 9100
    assert service["metadata"]["annotations"] == {"example.com/scrape": "true"}
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("values", [{}, NON_DEFAULT_VALUES], ids=["default", "non-default"])
def test_every_pod_is_non_root_read_only_without_capabilities(chart: Any, values: dict) -> None:
    objects = manifests(render(chart, values))
    pod_specs = [only(objects, "Deployment")["spec"]["template"]["spec"],
                 only(objects, "Pod")["spec"]]
    for spec in pod_specs:
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert isinstance(pod_security["runAsUser"], int) and pod_security["runAsUser"] > 0
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not security.get("privileged")
    operator_spec = pod_specs[0]
    (mount,) = operator_spec["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = [v for v in operator_spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


# -- RBAC ------------------------------------------------------------------------------------------


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def sample_cluster() -> dict[str, Any]:
    resource = yaml.safe_load(EXAMPLE.read_text())
    resource["metadata"].update(namespace="apps", uid="0000-uid", generation=1)
    return resource


def needed_by_operator() -> set[tuple[str, str, str]]:
    """What the operator must be able to do, derived from what it builds: create, read,
    update and delete every kind of child (desired.py), and hold every permission of the Role
    it grants the pods (RBAC's escalation check refuses to create a Role granting more than
    its creator holds)."""
    resource = sample_cluster()
    persistent = {**resource, "spec": {**resource["spec"], "persistence": {"enabled": True}}}
    children = [*desired.static_children(resource, "t" * 32), desired.pod(resource, 0),
                desired.claim(persistent, 0)]
    needed = set()
    for child in children:
        group = child["apiVersion"].rpartition("/")[0]
        plural = child["kind"].lower() + "s"
        verbs = ("get", "create") if child["kind"] == "Secret" else (
            # Claims: created, listed, watched and patched (ownerReference), never deleted.
            "get", "list", "watch", "create", "patch",
        ) if child["kind"] == "PersistentVolumeClaim" else (
            "get", "list", "watch", "create", "update", "patch", "delete")
        needed |= {(group, plural, verb) for verb in verbs}
    return needed | grants(desired.role(resource)["rules"])


def test_cluster_wide_rbac_covers_what_the_operator_creates_and_grants(chart: Any) -> None:
    objects = operator_rbac(manifests(render(chart)))
    role = only(objects, "ClusterRole")
    held = grants(role["rules"])
    assert needed_by_operator() <= held
    kopf_needs = {("apiextensions.k8s.io", "customresourcedefinitions", verb)
                  for verb in ("get", "list", "watch")} | {
        ("", "namespaces", "list"), ("", "namespaces", "watch"),
        ("", "events", "create"), ("events.k8s.io", "events", "create"),
        ("gencluster.io", "clusteredservers", "patch"),
        ("gencluster.io", "clusteredservers/status", "patch"),
        ("gencluster.io", "clusteredservers/scale", "get")}
    assert kopf_needs <= held
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gencluster",
                                    "namespace": NAMESPACE}]
    # Cluster-wide, the only Role is leader election's, in the release namespace.
    assert [r["metadata"]["name"] for r in by_kind(objects, "Role")] == [
        "gencluster-leader-election"]
    assert [b["metadata"]["name"] for b in by_kind(objects, "RoleBinding")] == [
        "gencluster-leader-election"]


def test_namespaced_rbac_keeps_only_crd_reads_cluster_wide(chart: Any) -> None:
    objects = operator_rbac(manifests(render(chart, {"watchNamespace": "apps"})))
    cluster_role = only(objects, "ClusterRole")
    assert grants(cluster_role["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", verb)
        for verb in ("get", "list", "watch")}
    managed = [obj for obj in objects if not obj["metadata"]["name"].endswith("-leader-election")]
    role = only(managed, "Role")
    binding = only(managed, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "apps"
    assert needed_by_operator() <= grants(role["rules"])
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"][0]["namespace"] == NAMESPACE  # the operator runs here
    args = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=apps" in args and "--all-namespaces" not in args


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "apps"}], ids=["cluster", "namespace"])
def test_rbac_is_least_privilege(chart: Any, values: dict) -> None:
    objects = manifests(render(chart, values))
    rules = [rule for kind in ("ClusterRole", "Role") for obj in by_kind(objects, kind)
             for rule in obj["rules"]]
    for rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    held = grants(rules)
    assert {verb for group, resource, verb in held if resource == "secrets"} == {
        "get", "create", "patch"}  # patch: certificates renewed in place (docs/security.md)
    assert "delete" not in {verb for _, resource, verb in held
                            if resource == "persistentvolumeclaims"}
    assert not {(g, r, v) for g, r, v in held if r == "events" and v in ("get", "list")}


# -- helm test, NOTES ----------------------------------------------------------------------------


def test_helm_test_pod_checks_the_metrics_service(chart: Any) -> None:
    objects = manifests(render(chart))
    test_pod = only(objects, "Pod")
    annotations = test_pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    assert test_pod["spec"]["restartPolicy"] == "Never"
    assert test_pod["spec"]["automountServiceAccountToken"] is False
    (container,) = test_pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/gencluster/gencluster:0.1.0"
    env = {item["name"]: item["value"] for item in container["env"]}
    service = only(objects, "Service")["metadata"]["name"]
    assert env == {"SERVICE_HOST_VARIABLE": "GENCLUSTER_METRICS_SERVICE_HOST",
                   "SERVICE_DNS": f"{service}.{NAMESPACE}.svc", "SERVICE_PORT": "8080"}
    compile(container["args"][0], "helm-test", "exec")  # the check itself is valid Python


def test_notes_carry_the_id_server_example(chart: Any) -> None:
    notes = render(chart)["gencluster/templates/NOTES.txt"]
    (block,) = re.findall(r"^---\n(.*?)^---$", notes, flags=re.S | re.M)
    assert yaml.safe_load(block) == yaml.safe_load(EXAMPLE.read_text())
    assert "kubectl apply -f id-server.yaml" in notes
    assert f"rollout status deployment/{RELEASE}" in notes
    namespaced = render(chart, {"watchNamespace": "apps"})["gencluster/templates/NOTES.txt"]
    assert "kubectl apply -n apps -f id-server.yaml" in namespaced


# -- versions and images -------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path.name} ends with a continuation line"
    return instructions


def last(instructions: list[tuple[str, str]], keyword: str) -> str:
    return [arguments for name, arguments in instructions if name == keyword][-1]


def test_chart_versions_match_the_package_and_the_crd_default_image(chart: Any) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.metadata["appVersion"] == version
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    default_image = spec_schema["properties"]["image"]["default"]
    values = chart.values
    assert default_image == f"{values['runtimeImage']['repository']}:{version}"
    assert values["image"]["repository"] == "ghcr.io/gencluster/gencluster-operator"


@pytest.mark.parametrize(
    ("dockerfile", "command"),
    [("Dockerfile", ["run"]), ("Dockerfile.operator", ["operator", "--all-namespaces"])],
)
def test_dockerfiles_run_gencluster_as_a_numeric_non_root_user(
    chart: Any, dockerfile: str, command: list[str]
) -> None:
    instructions = dockerfile_instructions(ROOT / dockerfile)
    # The base is a build argument (`make images` builds on a local stand-in) whose default
    # is the official image the release pipeline builds on.
    bases = [arguments.split()[0] for name, arguments in instructions if name == "FROM"]
    assert bases and all(base == "${PYTHON_IMAGE}" for base in bases)
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instructions
    user, _, group = last(instructions, "USER").partition(":")
    assert user.isdigit() and int(user) > 0 and (not group or group.isdigit())
    assert int(user) == chart.values["podSecurityContext"]["runAsUser"]
    runs = " ".join(arguments for name, arguments in instructions if name == "RUN")
    assert f"useradd --uid {user} " in runs  # kopf needs a login name for its uid
    entrypoint = json.loads(last(instructions, "ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["gencluster"] and "gencluster" in scripts
    assert json.loads(last(instructions, "CMD")) == command
    for name, arguments in instructions:
        if name == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: no such path"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_the_dev_kubelet_starts_the_runtime_image_like_its_entrypoint(chart: Any) -> None:
    runtime = chart.values["runtimeImage"]["repository"]
    entrypoint = json.loads(last(dockerfile_instructions(ROOT / "Dockerfile"), "ENTRYPOINT"))
    assert podspec.DEFAULT_IMAGE_ENTRYPOINTS[runtime] == entrypoint


def test_existing_service_account_and_no_rbac(chart: Any) -> None:
    objects = manifests(render(chart, {"serviceAccount": {"create": False, "name": "existing"},
                                       "rbac": {"create": False}}))
    assert not by_kind(objects, "ServiceAccount")
    assert not [obj for obj in objects if obj["apiVersion"].startswith("rbac.")]
    spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "existing"
    with pytest.raises(helm.HelmRenderError, match=re.escape("serviceAccount.name is required")):
        render(chart, {"serviceAccount": {"create": False}})


def test_names_follow_the_release_name(chart: Any) -> None:
    objects = manifests(chart.render({}, name="ops", namespace="ops", is_install=True))
    assert only(objects, "Deployment")["metadata"]["name"] == "ops-gencluster"
    assert only(objects, "Service")["metadata"]["name"] == "ops-gencluster-metrics"
    overridden = manifests(render(chart, {"fullnameOverride": "control"}))
    assert only(overridden, "Deployment")["metadata"]["name"] == "control"


# -- operator HA ---------------------------------------------------------------------------------


def test_leader_election_gets_a_role_in_the_release_namespace_and_a_pdb(chart: Any) -> None:
    objects = manifests(render(chart, {"watchNamespace": "apps", "replicaCount": 3}))
    role = next(r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith(
        "-leader-election"))
    assert role["metadata"]["namespace"] == NAMESPACE
    assert ("coordination.k8s.io", "leases", "update") in grants(role["rules"])
    assert ("", "events", "create") in grants(role["rules"])
    binding = next(b for b in by_kind(objects, "RoleBinding")
                   if b["metadata"]["name"].endswith("-leader-election"))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert budget["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()


def test_one_replica_with_leader_election_gets_no_pdb_that_would_block_drains(
    chart: Any,
) -> None:
    objects = manifests(render(chart, {"replicaCount": 1}))
    assert by_kind(objects, "PodDisruptionBudget") == []
    assert only(objects, "Deployment")["spec"]["replicas"] == 1


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "apps"}], ids=["cluster", "namespace"])
def test_operator_manages_network_policies_and_knows_its_pods(
        chart: Any, values: dict[str, Any]) -> None:
    """The operator creates, restores and deletes each ClusteredServer's NetworkPolicy, and
    the policy lets the operator's own pods in: by the Deployment's selector labels, passed
    as GENCLUSTER_OPERATOR_POD_LABELS (desired_network.operator_pods_from_env)."""
    objects = manifests(render(chart, values))
    managed = [obj for obj in objects if not obj["metadata"]["name"].endswith("-leader-election")]
    role = only(operator_rbac(managed), "Role" if values else "ClusterRole")
    assert {("networking.k8s.io", "networkpolicies", verb)
            for verb in ("get", "create", "patch", "delete")} <= grants(role["rules"])
    deployment = only(objects, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    labels = dict(pair.split("=", 1)
                  for pair in env["GENCLUSTER_OPERATOR_POD_LABELS"]["value"].split(","))
    assert labels == deployment["spec"]["selector"]["matchLabels"]
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
