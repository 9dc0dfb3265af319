"""Pure pod → process decisions of the dev kubelet (no processes, no API server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from gencluster_dev.machinery.pods import resolve_port
from gencluster_dev.node.addresses import PoolExhausted, pod_ip_pool, uid_pool
from gencluster_dev.node.podspec import (
    DEFAULT_IMAGE_ENTRYPOINTS,
    ContainerConfigError,
    ContainerView,
    EnvSources,
    ImageError,
    PodFacts,
    build_env,
    container_argv,
    exit_details,
    expand,
    image_repository,
    log_tail,
    mount_env,
    mount_env_name,
    pod_conditions,
    pod_dir_name,
    pod_kubeconfig,
    pod_phase,
    referenced_objects,
    resource_field_value,
    restart_delay,
    service_env,
    should_restart,
    volume_files,
)

pytestmark = pytest.mark.unit


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


POD = {
    "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1",
                 "labels": {"app": "web"}, "annotations": {"note": "hi"}},
    "spec": {"nodeName": "dev-node", "serviceAccountName": "runner",
             "containers": [{"name": "main", "ports": [{"name": "http", "containerPort": 8080}]}]},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-$(B)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("a$b", "a$b"),
        ("$(A", "$(A"),
        ("tail$", "tail$"),
        ("$()", "$()"),
    ],
)
def test_expand_follows_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "1"}) == expected


def test_argv_command_args_and_image_entrypoint() -> None:
    env = {"PORT": "80"}
    assert container_argv({"command": ["python", "-m", "x"], "args": ["--port=$(PORT)"]}, env,
                          DEFAULT_IMAGE_ENTRYPOINTS) == ["python", "-m", "x", "--port=80"]
    image = "ghcr.io/gencluster/gencluster:1.2.3@sha256:abc"
    assert image_repository(image) == "ghcr.io/gencluster/gencluster"
    assert container_argv({"image": image, "args": ["serve"]}, env,
                          DEFAULT_IMAGE_ENTRYPOINTS) == ["gencluster", "serve"]
    assert image_repository("localhost:5000/app") == "localhost:5000/app"
    with pytest.raises(ImageError, match="no known entrypoint"):
        container_argv({"image": "nginx:1"}, env, DEFAULT_IMAGE_ENTRYPOINTS)


def test_env_order_fieldrefs_and_references() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                    {"secretRef": {"name": "absent", "optional": True}}],
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope",
                                                            "optional": True}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "URL", "value": "http://$(IP):$(CM_port)/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "PATH", "value": "/extra:$(PATH)"},
        ],
    }
    sources = EnvSources(secrets={"s": {"data": {"password": b64("hunter2")}}},
                         configmaps={"cm": {"data": {"port": "81", "mode": "fast",
                                                     "bad key": "skipped"}}})
    env = build_env(POD, container, base={"PATH": "/bin"}, sources=sources,
                    pod_ip="127.2.64.1", host_ip="127.2.0.1")
    assert env["POD"] == "web-0" and env["NS"] == "shop" and env["IP"] == "127.2.64.1"
    assert env["APP"] == "web" and env["NOTE"] == "hi" and env["SA"] == "runner"
    assert env["NODE"] == "dev-node" and env["UID"] == "u-1"
    assert env["PASS"] == "hunter2" and env["MODE"] == "fast" and env["CM_port"] == "81"
    assert "GONE" not in env and "CM_bad key" not in env
    assert env["URL"] == "http://127.2.64.1:81/$(LATER)"
    assert env["PATH"] == "/extra:/bin"


@pytest.mark.parametrize(
    ("var", "message"),
    [
        ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
        ({"configMapKeyRef": {"name": "cm", "key": "k"}}, "couldn't find key k in ConfigMap"),
        ({"fieldRef": {"fieldPath": "spec.bogus"}}, "unsupported fieldRef"),
    ],
)
def test_missing_references_are_config_errors(var: dict, message: str) -> None:
    container = {"env": [{"name": "X", "valueFrom": var}]}
    sources = EnvSources(configmaps={"cm": {"data": {}}})
    with pytest.raises(ContainerConfigError, match=message) as caught:
        build_env(POD, container, base={}, sources=sources, pod_ip="", host_ip="")
    assert caught.value.reason == "CreateContainerConfigError"


def test_resource_field_ref_rounds_up() -> None:
    container = {"resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}}}
    assert resource_field_value(container, {"resource": "limits.cpu"}) == "2"
    assert resource_field_value(container, {"resource": "limits.memory",
                                            "divisor": "1Mi"}) == "64"
    assert resource_field_value(container, {"resource": "requests.cpu"}) == "0"


def test_volume_files_items_modes_and_optional() -> None:
    sources = EnvSources(secrets={"s": {"data": {"a": b64("A"), "b": b64("B")}}},
                         configmaps={"cm": {"data": {"conf.yaml": "x: 1"},
                                            "binaryData": {"blob": b64("\x00")}}})
    files = volume_files({"name": "v", "secret": {"secretName": "s", "defaultMode": 0o400,
                                                  "items": [{"key": "b", "path": "dir/b"}]}},
                         sources)
    assert [(f.path, f.data, f.mode) for f in files] == [("dir/b", b"B", 0o400)]
    files = volume_files({"name": "c", "configMap": {"name": "cm"}}, sources)
    assert {(f.path, f.data, f.mode) for f in files} == {("conf.yaml", b"x: 1", 0o644),
                                                          ("blob", b"\x00", 0o644)}
    assert volume_files({"name": "e", "emptyDir": {}}, sources) is None
    assert volume_files({"name": "o", "configMap": {"name": "nope", "optional": True}},
                        sources) == []
    with pytest.raises(ContainerConfigError, match='configmap "nope" not found'):
        volume_files({"name": "o", "configMap": {"name": "nope"}}, sources)
    with pytest.raises(ContainerConfigError, match="invalid volume item path"):
        volume_files({"name": "v", "secret": {"secretName": "s",
                                              "items": [{"key": "a", "path": "../a"}]}}, sources)


def test_mount_env_rule() -> None:
    volumes = [{"name": "config", "configMap": {"name": "cm"}},
               {"name": "host", "hostPath": {"path": "/srv/data"}}]
    container = {"volumeMounts": [
        {"name": "config", "mountPath": "/etc/my-app/"},
        {"name": "host", "mountPath": "/data", "subPath": "sub"},
    ]}
    env = mount_env(container, volumes, Path("/dev/pods/p/volumes"), Path("/dev/pods/p/sa"))
    assert env["GENCLUSTER_DEV_MOUNT_ETC_MY_APP"] == "/dev/pods/p/volumes/config"
    assert env["GENCLUSTER_DEV_MOUNT_DATA"] == "/srv/data/sub"
    assert env[mount_env_name("/var/run/secrets/kubernetes.io/serviceaccount")] == \
        "/dev/pods/p/sa"
    assert json.loads(env["GENCLUSTER_DEV_MOUNTS"])["/etc/my-app/"] == \
        "/dev/pods/p/volumes/config"
    with pytest.raises(ContainerConfigError, match="no such volume"):
        mount_env({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, [], Path("/v"), None)


def test_referenced_objects_and_names() -> None:
    pod = {"spec": {"containers": [{"envFrom": [{"secretRef": {"name": "s1"}}],
                                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {
                                        "name": "c1", "key": "k"}}}]}],
                    "volumes": [{"name": "v", "secret": {"secretName": "s2"}}]}}
    assert referenced_objects(pod) == ({"s1", "s2"}, {"c1"})
    assert pod_dir_name(POD) == "shop_web-0_u-1"
    assert resolve_port(POD, "http") == 8080
    assert resolve_port(POD, "9000") == 9000
    assert resolve_port(POD, "nope") is None


def test_exit_details_and_restart_rules() -> None:
    assert exit_details(0) == (0, None, "Completed")
    assert exit_details(3) == (3, None, "Error")
    assert exit_details(-9) == (137, 9, "Error")
    assert [restart_delay(n, 10, 300) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]
    assert should_restart("Always", 0) and not should_restart("Never", 1)
    assert should_restart("OnFailure", 1) and not should_restart("OnFailure", 0)


def _view(state: str, exit_code: int | None = None, last: bool = False) -> ContainerView:
    view = ContainerView("c", "img", state=state, exit_code=exit_code)
    if last:
        view.last_terminated = {"exitCode": 1}
    return view


@pytest.mark.parametrize(
    ("policy", "views", "phase"),
    [
        ("Always", [_view("waiting")], "Pending"),
        ("Always", [_view("running"), _view("waiting")], "Pending"),
        ("Always", [_view("running")], "Running"),
        ("Always", [_view("waiting", last=True)], "Running"),
        ("Always", [_view("terminated", 0)], "Running"),
        ("Never", [_view("terminated", 0)], "Succeeded"),
        ("Never", [_view("terminated", 0), _view("terminated", 2)], "Failed"),
        ("OnFailure", [_view("terminated", 0)], "Succeeded"),
        ("OnFailure", [_view("waiting", last=True)], "Running"),
    ],
)
def test_pod_phase(policy: str, views: list[ContainerView], phase: str) -> None:
    assert pod_phase(policy, views) == phase


def test_pod_phase_with_init_containers() -> None:
    assert pod_phase("Always", [_view("waiting")], [_view("running")], init_done=False) == \
        "Pending"
    assert pod_phase("Never", [_view("waiting")], [_view("terminated", 1)], init_done=False) == \
        "Failed"


def test_conditions_keep_transition_time_until_flip() -> None:
    ready = ContainerView("c", "img", state="running", ready=True)
    first = pod_conditions(None, scheduled=True, initialized=True, containers=[ready],
                           terminal=False)
    assert {c["type"]: c["status"] for c in first} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
        "Ready": "True"}
    for condition in first:
        condition["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    again = pod_conditions(first, scheduled=True, initialized=True, containers=[ready],
                           terminal=False)
    assert all(c["lastTransitionTime"] == "2000-01-01T00:00:00Z" for c in again)
    ready.ready = False
    flipped = {c["type"]: c for c in pod_conditions(again, scheduled=True, initialized=True,
                                                    containers=[ready], terminal=False)}
    assert flipped["Ready"]["status"] == "False"
    assert flipped["Ready"]["reason"] == "ContainersNotReady"
    assert flipped["Ready"]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    assert flipped["PodScheduled"]["lastTransitionTime"] == "2000-01-01T00:00:00Z"


def test_container_status_rendering() -> None:
    view = ContainerView("c", "img", state="terminated", exit_code=137, signal=9,
                         reason="Error", started_at="t0", finished_at="t1", restart_count=2,
                         last_terminated={"exitCode": 1})
    status = view.status()
    assert status["state"]["terminated"]["exitCode"] == 137
    assert status["state"]["terminated"]["signal"] == 9
    assert status["lastState"] == {"terminated": {"exitCode": 1}}
    assert status["restartCount"] == 2
    waiting = ContainerView("c", "img", reason="CrashLoopBackOff", message="back-off").status()
    assert waiting["state"] == {"waiting": {"reason": "CrashLoopBackOff",
                                            "message": "back-off"}}


def test_pools_round_robin_and_exhaust() -> None:
    ips = pod_ip_pool("127.9.64.0/30")
    assert ips.allocate("a") == "127.9.64.1"
    assert ips.allocate("a") == "127.9.64.1"
    assert ips.allocate("b") == "127.9.64.2"
    with pytest.raises(PoolExhausted):
        ips.allocate("c")
    ips.release("a")
    assert ips.allocate("c") == "127.9.64.1"
    uids = uid_pool(range(10, 13))
    assert [uids.allocate(k) for k in "xyz"] == [10, 11, 12]
    uids.release("x")
    uids.release("y")
    assert uids.allocate("w") == 10
    assert uids.allocate("v") == 11


def test_pod_kubeconfig_uses_tls_when_given_the_ca() -> None:
    plain = pod_kubeconfig(server="http://127.2.0.1:6443", token="t", namespace="ns",
                           account="sa", ca_pem=None)
    assert plain["clusters"][0]["cluster"] == {"server": "http://127.2.0.1:6443"}
    assert plain["users"][0] == {"name": "system:serviceaccount:ns:sa", "user": {"token": "t"}}
    assert plain["contexts"][0]["context"]["namespace"] == "ns"
    tls = pod_kubeconfig(server="https://127.2.0.1:6443", token="t", namespace="ns",
                         account="sa", ca_pem=b"PEM")
    assert tls["clusters"][0]["cluster"]["certificate-authority-data"] == b64("PEM")


def test_service_links() -> None:
    services = [
        {"metadata": {"name": "web-front", "namespace": "shop"},
         "spec": {"clusterIP": "127.2.128.7", "ports": [{"name": "http", "port": 80},
                                                         {"port": 53, "protocol": "UDP"}]}},
        {"metadata": {"name": "peers", "namespace": "shop"},
         "spec": {"clusterIP": "None", "ports": [{"port": 7000}]}},
        {"metadata": {"name": "other", "namespace": "elsewhere"},
         "spec": {"clusterIP": "127.2.128.8", "ports": [{"port": 1}]}},
        {"metadata": {"name": "kubernetes", "namespace": "shop"},
         "spec": {"clusterIP": "127.2.128.1", "ports": [{"port": 443}]}},
    ]
    env = service_env(services, "shop")
    assert env["WEB_FRONT_SERVICE_HOST"] == "127.2.128.7"
    assert env["WEB_FRONT_SERVICE_PORT"] == "80"
    assert env["WEB_FRONT_SERVICE_PORT_HTTP"] == "80"
    assert env["WEB_FRONT_PORT"] == "tcp://127.2.128.7:80"
    assert env["WEB_FRONT_PORT_53_UDP_ADDR"] == "127.2.128.7"
    assert env["WEB_FRONT_PORT_53_UDP_PROTO"] == "udp"
    assert not any(k.startswith(("PEERS_", "OTHER_", "KUBERNETES_")) for k in env)


def test_log_tail_for_termination_messages() -> None:
    data = b"".join(f"line {i}\n".encode() for i in range(100))
    tail = log_tail(data)
    assert tail.splitlines()[0] == "line 20" and tail.endswith("line 99")
    assert len(log_tail(b"x" * 5000)) == 2048
    assert log_tail(b"") == ""


def test_downward_api_and_projected_volumes() -> None:
    sources = EnvSources(secrets={"s": {"data": {"a": b64("A")}}},
                         configmaps={"cm": {"data": {"c": "C"}}})
    pod = {**POD, "spec": {**POD["spec"], "containers": [
        {"name": "main", "resources": {"limits": {"memory": "2Mi"}}}]}}
    facts = PodFacts(pod, pod_ip="127.2.64.9", host_ip="127.2.0.1", token="tok")
    downward = volume_files({"name": "d", "downwardAPI": {"items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "main",
                                             "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}, sources, facts)
    assert {f.path: f.data for f in downward} == {
        "labels": b'app="web"', "ip": b"127.2.64.9", "mem": b"2"}
    projected = volume_files({"name": "p", "projected": {"defaultMode": 0o440, "sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"secret": {"name": "s", "items": [{"key": "a", "path": "sec/a"}]}},
        {"configMap": {"name": "cm"}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {
            "fieldPath": "metadata.namespace"}}]}},
    ]}}, sources, facts)
    # The token is 0600 whatever defaultMode says: other pods share this host.
    assert {(f.path, f.data, f.mode) for f in projected} == {
        ("token", b"tok", 0o600), ("sec/a", b"A", 0o440), ("c", b"C", 0o440),
        ("ns", b"shop", 0o440)}
    assert referenced_objects({"spec": {"volumes": [{"name": "p", "projected": {"sources": [
        {"secret": {"name": "s"}}, {"configMap": {"name": "cm"}}]}}]}}) == ({"s"}, {"cm"})
