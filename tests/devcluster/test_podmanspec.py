"""Pure pod spec → `podman run` decisions of the podman engine (no podman, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gencluster_dev.node.podmanspec import (
    INSTANCE_LABEL,
    KUBECONFIG_MOUNT,
    Mount,
    container_env,
    container_mounts,
    container_name,
    entrypoint_and_args,
    run_argv,
    security_flags,
)
from gencluster_dev.node.podspec import (
    MOUNTS_ENV,
    SERVICE_ACCOUNT_MOUNT,
    ContainerConfigError,
    mount_env,
)

pytestmark = pytest.mark.unit

POD = {
    "metadata": {"name": "id-server-0", "namespace": "default", "uid": "u-1"},
    "spec": {
        "securityContext": {"runAsNonRoot": True},
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "conf", "configMap": {"name": "c"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
        ],
    },
}
CONTAINER = {
    "name": "gencluster",
    "image": "ghcr.io/gencluster/gencluster:0.1.0",
    "command": ["gencluster", "run"],
    "args": ["--port", "$(PORT)"],
    "env": [{"name": "PORT", "value": "7070"}],
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    },
    "volumeMounts": [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "conf", "mountPath": "/etc/conf"},
        {"name": "data", "mountPath": "/var/lib/gencluster"},
    ],
}


def process_env(pod_dir: Path) -> dict[str, str]:
    """The env the process runtime gives this container (base, mounts, the container's)."""
    env = {
        "PATH": "/venv/bin:/usr/bin", "HOME": str(pod_dir), "GENCLUSTER_DEV_POD_DIR": str(pod_dir),
        "KUBECONFIG": str(pod_dir / "kubeconfig"), "POD_IP": "127.2.64.1", "PORT": "7070",
    }
    env.update(mount_env(CONTAINER, POD["spec"]["volumes"], pod_dir / "volumes",
                         pod_dir / "serviceaccount", {"data": Path("/dev-dir/volumes/pvc-1")}))
    return env


def test_volumes_become_bind_mounts_at_their_mount_path() -> None:
    pod_dir = Path("/dev-dir/pods/p")
    mounts = {m.target: m for m in container_mounts(CONTAINER, process_env(pod_dir),
                                                    POD["spec"]["volumes"])}
    assert mounts["/tmp"] == Mount(str(pod_dir / "volumes/tmp"), "/tmp", False)
    assert mounts["/etc/conf"].read_only
    assert mounts["/var/lib/gencluster"] == Mount("/dev-dir/volumes/pvc-1",
                                                  "/var/lib/gencluster", False)
    # the ServiceAccount's token, like Kubernetes mounts it (read-only), and the kubeconfig
    assert mounts[SERVICE_ACCOUNT_MOUNT] == Mount(str(pod_dir / "serviceaccount"),
                                                  SERVICE_ACCOUNT_MOUNT, True)
    assert mounts[KUBECONFIG_MOUNT] == Mount(str(pod_dir / "kubeconfig"), KUBECONFIG_MOUNT, True)


def test_host_paths_leave_the_environment_and_the_rest_stays() -> None:
    env = container_env(CONTAINER, process_env(Path("/dev-dir/pods/p")))
    assert env["POD_IP"] == "127.2.64.1" and env["PORT"] == "7070"
    assert env["KUBECONFIG"] == KUBECONFIG_MOUNT
    assert not {"PATH", "HOME", "GENCLUSTER_DEV_POD_DIR", MOUNTS_ENV} & set(env)
    assert not [name for name in env if name.startswith("GENCLUSTER_DEV_MOUNT_")]


def test_a_variable_the_container_sets_itself_is_kept() -> None:
    container = {**CONTAINER, "env": [{"name": "PATH", "value": "/opt/bin"}]}
    assert container_env(container, {"PATH": "/opt/bin", "HOME": "/x"}) == {"PATH": "/opt/bin"}


def test_security_context_becomes_flags() -> None:
    flags = security_flags(POD, CONTAINER, 200123)
    assert flags == ["--user", "200123:200123", "--read-only", "--read-only-tmpfs=false",
                     "--security-opt", "no-new-privileges", "--cap-drop", "ALL"]


def test_without_a_node_uid_run_as_user_and_group_apply() -> None:
    pod = {**POD, "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 2000}}}
    container = {"name": "c", "image": "i", "securityContext": {"capabilities": {
        "add": ["net_bind_service"]}}}
    assert security_flags(pod, container, None) == ["--user", "1000:2000",
                                                    "--cap-add", "NET_BIND_SERVICE"]


@pytest.mark.parametrize("container_context", [
    {"runAsUser": 0, "runAsNonRoot": True},
    {"privileged": True},
])
def test_a_context_the_kubelet_cannot_honour_is_refused(container_context: dict) -> None:
    container = {"name": "c", "image": "i", "securityContext": container_context}
    with pytest.raises(ContainerConfigError):
        security_flags({"metadata": {}, "spec": {}}, container, None)


def test_command_replaces_the_entrypoint_and_args_the_cmd() -> None:
    flags, args = entrypoint_and_args(CONTAINER, {"PORT": "7070"})
    assert flags == ["--entrypoint", json.dumps(["gencluster", "run"])]
    assert args == ["--port", "7070"]
    assert entrypoint_and_args({"name": "c", "args": ["x"]}, {}) == ([], ["x"])
    assert entrypoint_and_args({"name": "c"}, {}) == ([], [])


def test_run_argv_keeps_secrets_off_the_command_line() -> None:
    env = {**process_env(Path("/dev-dir/pods/p")), "TOKEN": "s3cr3t"}
    argv = run_argv(podman=["podman", "--runtime", "runc"], pod=POD, container=CONTAINER,
                    env=env, run_as=200123, pidfile="/dev-dir/pods/p/.gencluster.pid",
                    instance="/dev-dir/pods", ulimits=["nofile=1024:1024"])
    assert argv[:4] == ["podman", "--runtime", "runc", "run"]
    assert "s3cr3t" not in " ".join(argv) and argv[
        argv.index("TOKEN") - 1:argv.index("TOKEN") + 1] == ["--env", "TOKEN"]
    assert argv[argv.index("--network"):argv.index("--network") + 2] == ["--network", "host"]
    assert f"{INSTANCE_LABEL}=/dev-dir/pods" in argv
    assert argv[argv.index("--name") + 1] == container_name(POD, CONTAINER)
    image_at = argv.index(CONTAINER["image"])
    assert argv[image_at + 1:] == ["--port", "7070"]


def test_a_container_without_image_or_with_a_comma_in_a_path_is_refused() -> None:
    with pytest.raises(ContainerConfigError):
        run_argv(podman=["podman"], pod=POD, container={"name": "c"}, env={}, run_as=None,
                 pidfile="/p", instance="/i", ulimits=[])
    with pytest.raises(ContainerConfigError):
        Mount("/a,b", "/c", False).flag()


def test_container_names_are_podman_safe() -> None:
    pod = {"metadata": {"name": "a.b", "namespace": "ns", "uid": "1234-5678"}}
    assert container_name(pod, {"name": "c"}) == "k8s_c_a.b_ns_1234-5678"
