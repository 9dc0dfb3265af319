"""Inside a container pod of `gencluster dev up --runtime podman`: Service names resolve through
the pod's resolv.conf (glibc's own resolver, its search path and ndots:5, asking the plane's
DNS server), and `kubectl exec` runs in the container (its pid namespace, user, environment,
working directory), with stdin, a terminal and the exit code.

One plane for the module, with one pod of the runtime image (no operator: nothing here needs
it), a Service and a headless Service selecting it.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from collections.abc import Iterator

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.fault
NEEDS_CONTAINER_IMAGES = True

IMAGE = "ghcr.io/gencluster/gencluster:0.1.0"
POD = "probe"
READY_SECONDS = 180

MANIFEST = [
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": POD, "labels": {"app": "probe"}},
     "spec": {"terminationGracePeriodSeconds": 1,
              "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
              "containers": [{
                  "name": "main", "image": IMAGE, "command": ["sleep", "infinity"],
                  "workingDir": "/tmp", "env": [{"name": "GREETING", "value": "hello pod"}],
                  "securityContext": {"readOnlyRootFilesystem": True,
                                      "allowPrivilegeEscalation": False,
                                      "capabilities": {"drop": ["ALL"]}}}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "probe"}, "ports": [{"name": "http", "port": 80}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
     "spec": {"clusterIP": "None", "selector": {"app": "probe"},
              "ports": [{"name": "http", "port": 80}]}},
]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    base = tmp_path_factory.mktemp("podman-dns")
    manifest = base / "probe.yaml"
    manifest.write_text("\n---\n".join(json.dumps(obj) for obj in MANIFEST))
    instance = DevClusterProcess(base / "dev", "--runtime", "podman", "--restart-backoff",
                                 "0.5", "--apply", str(manifest))
    try:
        wait_for(lambda: instance.kubectl(
            "get", "pod", POD, "-o", "jsonpath={.status.containerStatuses[0].ready}",
            check=False).stdout == "true", READY_SECONDS, 0.5, "the probe pod to be ready")
        yield instance
    finally:
        instance.stop()


def in_pod(plane: DevClusterProcess, *command: str, stdin: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    flags = ["-i"] if stdin is not None else []
    return plane.kubectl("exec", *flags, POD, "--", *command, input=stdin, check=check)


def pod_state(plane: DevClusterProcess) -> dict:
    return json.loads(next((plane.dir / "pods").glob(f"default_{POD}_*/state.json")).read_text())


def resolved(plane: DevClusterProcess, name: str) -> list[str]:
    """What glibc in the container resolves `name` to (getent, as any program would)."""
    result = in_pod(plane, "getent", "ahostsv4", name, check=False)
    return sorted({line.split()[0] for line in result.stdout.splitlines() if line.strip()})


def field(plane: DevClusterProcess, kind: str, name: str, path: str) -> str:
    return plane.kubectl("get", kind, name, "-o", f"jsonpath={{{path}}}").stdout


def test_the_pods_resolv_conf_points_at_the_cluster_dns(plane: DevClusterProcess) -> None:
    dns_host = plane.instance["dns"].rpartition(":")[0]
    text = in_pod(plane, "cat", "/etc/resolv.conf").stdout
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert lines["nameserver"] == [dns_host]
    assert lines["search"][:3] == ["default.svc.cluster.local", "svc.cluster.local",
                                   "cluster.local"]
    assert lines["options"] == ["ndots:5"]


def test_a_service_name_resolves_inside_a_container_pod(plane: DevClusterProcess) -> None:
    cluster_ip = field(plane, "svc", "web", ".spec.clusterIP")
    # the short forms go through the search path, the full name as it is
    for name in ("web", "web.default", "web.default.svc", "web.default.svc.cluster.local"):
        assert resolved(plane, name) == [cluster_ip], name
    python = ("import socket; print(socket.gethostbyname('web'))")
    assert in_pod(plane, "python3", "-c", python).stdout.strip() == cluster_ip
    assert resolved(plane, "kubernetes.default") == [field(plane, "svc", "kubernetes",
                                                           ".spec.clusterIP")]
    # a headless Service is its pods' addresses
    wait_for(lambda: resolved(plane, "peers") == [field(plane, "pod", POD, ".status.podIP")],
             30, 0.5, "the headless Service to resolve to the pod")
    # a name that does not exist fails as in a cluster (getent: exit code 2, "not found")
    missing = in_pod(plane, "getent", "hosts", "nothing-here", check=False)
    assert missing.returncode == 2


def test_names_outside_the_cluster_are_forwarded(plane: DevClusterProcess) -> None:
    name = "pypi.org"  # reachable from these machines (their package registry)
    try:
        expected = sorted(set(socket.gethostbyname_ex(name)[2]))
    except OSError:
        expected = []
    assert resolved(plane, name) == expected


def test_exec_runs_inside_the_container(plane: DevClusterProcess) -> None:
    state = pod_state(plane)
    # its own pid namespace: PID 1 is the container's command, not the node's init
    cmdline = in_pod(plane, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[:2] == ["sleep", "infinity"]
    # its user, its environment and working directory, its image's filesystem
    uid = state["runAsUser"]
    assert in_pod(plane, "id", "-u").stdout.strip() == str(uid)
    assert in_pod(plane, "printenv", "GREETING").stdout == "hello pod\n"
    assert in_pod(plane, "pwd").stdout.strip() == "/tmp"
    # its own filesystem: the image's Python is there, the node's directories are not
    assert in_pod(plane, "test", "-x", "/opt/python/bin/python3", check=False).returncode == 0
    assert plane.dir.is_dir()
    assert in_pod(plane, "test", "-e", str(plane.dir), check=False).returncode != 0
    # its security posture: no capabilities, no new privileges, a read-only root
    status = dict(line.split(":\t", 1) for line in in_pod(
        plane, "cat", "/proc/self/status").stdout.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
    assert in_pod(plane, "touch", "/x", check=False).returncode != 0


def test_exec_returns_the_exit_code_and_passes_stdin(plane: DevClusterProcess) -> None:
    failed = in_pod(plane, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert failed.returncode == 7
    assert failed.stdout == "out\n" and "err" in failed.stderr
    assert in_pod(plane, "cat", stdin="through stdin\n").stdout == "through stdin\n"
    missing = in_pod(plane, "no-such-command", check=False)
    assert missing.returncode != 0


def test_exec_with_a_terminal(plane: DevClusterProcess) -> None:
    # `script` gives kubectl a terminal, so -t is a real one end to end
    command = shlex.join(["kubectl", "exec", "-it", POD, "--", "sh", "-c",
                          "tty; stty size; exit 3"])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], input="",
                            capture_output=True, text=True, timeout=60, env=plane.env())
    assert result.returncode == 3, result.stdout + result.stderr
    assert "/dev/pts/" in result.stdout
