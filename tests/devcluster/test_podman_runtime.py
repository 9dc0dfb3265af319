"""The local control plane with `--runtime podman`: pods run as real containers from the
images `make images` built, and what the operator asks of a pod is enforced by a container
runtime, not only recorded.

One instance for the module: `gencluster dev up --runtime podman --apply
examples/id-server.yaml` with its operator. The tests check the containers exist, the security
posture from the host (/proc of the container's process) and from inside (podman exec), logs
through the API, a SIGKILL failover under load without a lost acknowledged call, and a graceful
deletion (SIGTERM to the container, the handover without a failed call), a switchover, pause
and resume,
a network partition, and the tutorial's own image built FROM the runtime image.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster import Client
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import cluster_tls
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import Load, assert_no_gap

pytestmark = pytest.mark.fault
NEEDS_CONTAINER_IMAGES = True

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "id-server.yaml"
RUNTIME_IMAGE = "ghcr.io/gencluster/gencluster:0.1.0"
OPERATOR_IMAGE = "ghcr.io/gencluster/gencluster-operator:0.1.0"
PODMAN = ["podman", "--runtime", "runc"]
NAME = "id-server"
PORT = 50051
READY_SECONDS = 180


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    base = tmp_path_factory.mktemp("podman")
    instance = DevClusterProcess(base / "dev", "--runtime", "podman", "--restart-backoff", "0.5",
                                 "--apply", str(EXAMPLE), operator=True)
    try:
        wait_for(lambda: ready(instance), READY_SECONDS, 0.5, "id-server to become Ready")
        yield instance
    finally:
        instance.stop()
    # Stopping the plane removes its containers.
    assert container_names(instance) == []


def ready(plane: DevClusterProcess) -> bool:
    return ready_named(plane, NAME)


def container_names(plane: DevClusterProcess) -> list[str]:
    listed = podman("ps", "--filter", f"label=gencluster.dev/pods-dir={plane.dir / 'pods'}",
                    "--format", "{{.Names}}")
    return sorted(listed.stdout.split())


def pod_states(plane: DevClusterProcess) -> dict[str, dict[str, Any]]:
    """state.json of every pod, by pod name (the kubelet's record: uid and container pid)."""
    states = {}
    for path in (plane.dir / "pods").glob("*/state.json"):
        state = json.loads(path.read_text())
        states[state["name"]] = state
    return states


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def restarts(plane: DevClusterProcess) -> dict[str, int]:
    """Restart count of every pod's server container, by pod name."""
    return {name: state["containers"]["server"]["restartCount"]
            for name, state in pod_states(plane).items()}


def holder(plane: DevClusterProcess) -> str:
    return plane.kubectl("get", "lease", NAME, "-o",
                         "jsonpath={.spec.holderIdentity}", check=False).stdout


def addresses(plane: DevClusterProcess) -> str:
    ips = plane.kubectl("get", "pods", "-l", f"gencluster.io/cluster={NAME}", "-o",
                        "jsonpath={.items[*].status.podIP}").stdout.split()
    return ",".join(f"{ip}:{PORT}" for ip in ips)


def server_container(plane: DevClusterProcess, pod: str) -> str:
    return next(n for n in container_names(plane) if n.startswith(f"k8s_server_{pod}_"))


@pytest.mark.parametrize(("image", "words"), [
    (RUNTIME_IMAGE, "usage: gencluster COMMAND"),
    (OPERATOR_IMAGE, "usage: gencluster COMMAND"),
])
def test_the_images_run_the_gencluster_command(image: str, words: str) -> None:
    # The entrypoint is `gencluster`: arguments are its command line.
    result = podman("run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit",
                    "nproc=4096:4096", image, "--help")
    assert words in result.stdout
    # As a user types it, with no flag: `make images` (as root) gave podman this machine's
    # defaults (runc, rlimits), and the command's own name is accepted again.
    bare = subprocess.run(["podman", "run", "--rm", image, "gencluster", "--help"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert words in bare.stdout, bare.stderr


def test_podman_ps_shows_each_pods_container(plane: DevClusterProcess) -> None:
    assert "podman runtime" in plane.output()
    names = container_names(plane)
    assert [n.split("_")[2] for n in names] == [f"{NAME}-{i}" for i in range(3)]
    for pod, state in pod_states(plane).items():
        inspected = json.loads(podman("inspect", server_container(plane, pod)).stdout)[0]
        assert inspected["State"]["Pid"] == state["containers"]["server"]["pid"]
        assert inspected["ImageName"].endswith(RUNTIME_IMAGE)
        assert inspected["HostConfig"]["NetworkMode"] == "host"


def test_the_server_container_is_locked_down_as_the_operator_asks(
    plane: DevClusterProcess,
) -> None:
    for pod, state in pod_states(plane).items():
        uid = state["runAsUser"]
        assert isinstance(uid, int) and uid > 0
        status = proc_status(state["containers"]["server"]["pid"])
        # real, effective, saved and filesystem uid: the pod's non-root uid, nothing else
        assert status["Uid"].split() == [str(uid)] * 4
        for capabilities in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
            assert int(status[capabilities], 16) == 0, (pod, capabilities)
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] != "0"
        name = server_container(plane, pod)
        assert podman("exec", name, "id", "-u").stdout.strip() == str(uid)
        root = podman("exec", name, "python3", "-c", "open('/probe', 'w')", check=False)
        assert root.returncode != 0 and "Read-only file system" in root.stderr
        # the emptyDir the operator mounts at /tmp is writable, and the token is mounted
        podman("exec", name, "python3", "-c", "open('/tmp/probe', 'w').write('x')")
        token = podman("exec", name, "cat",
                       "/var/run/secrets/kubernetes.io/serviceaccount/namespace").stdout
        assert token == "default"


def test_logs_come_through_the_kubelets_log_api(plane: DevClusterProcess) -> None:
    for ordinal in range(3):
        logs = plane.kubectl("logs", f"{NAME}-{ordinal}").stdout
        assert f"{NAME}-{ordinal} serving gencluster_examples.id_server:IdServer" in logs


def test_sigkill_of_the_active_container_fails_over_without_losing_a_call(
    plane: DevClusterProcess,
) -> None:
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready")
    old_active = holder(plane)
    old_pid = pod_states(plane)[old_active]["containers"]["server"]["pid"]
    probe = Client(addresses(plane), timeout=30, tls=cluster_tls(plane, "default", NAME))
    before = probe.call("current")
    with Load(addresses(plane), tls=cluster_tls(plane, "default", NAME)) as load:
        load.wait_for_more(100)
        plane.gencluster("dev", "fault", "--dir", str(plane.dir), "kill", old_active)
        wait_for(lambda: holder(plane) not in ("", old_active), 60, 0.1, "a new holder")
        load.wait_for_more(100, timeout=60)
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    assert probe.call("next_value") == max(load.values) + 1
    # The container was killed (137, as a container runtime reports it) and restarted.
    def restarted() -> dict[str, Any] | None:
        pod = json.loads(plane.kubectl("get", "pod", old_active, "-o", "json").stdout)
        status = pod["status"]["containerStatuses"][0]
        return status if status["restartCount"] >= 1 and status.get("ready") else None
    status = wait_for(restarted, 120, 0.5, "the killed container to restart")
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert pod_states(plane)[old_active]["containers"]["server"]["pid"] != old_pid
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready again")


def test_graceful_deletion_sends_sigterm_to_the_container(plane: DevClusterProcess) -> None:
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready")
    old_active = holder(plane)
    old_uid = pod_states(plane)[old_active]["uid"]
    probe = Client(addresses(plane), timeout=30, tls=cluster_tls(plane, "default", NAME))
    before = probe.call("current")
    # Its log, followed through the API until the container ends, tells how it ended.
    follow = subprocess.Popen(["kubectl", "logs", "-f", old_active], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=plane.env())
    try:
        with Load(addresses(plane), tls=cluster_tls(plane, "default", NAME)) as load:
            load.wait_for_more(100)
            plane.kubectl("delete", "pod", old_active, "--wait=false")
            wait_for(lambda: holder(plane) not in ("", old_active), 60, 0.1, "the handover")
            load.wait_for_more(100, timeout=60)
        output, _ = follow.communicate(timeout=120)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    assert "SIGTERM: handing over and stopping" in output
    # The operator re-creates the pod (a new uid); the old container is gone from podman.
    wait_for(lambda: pod_states(plane).get(old_active, {}).get("uid") not in (None, old_uid),
             120, 0.5, "the pod to be re-created")
    assert not [n for n in container_names(plane) if n.endswith(old_uid)]
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready again")


def test_switchover_moves_the_active_container_without_a_failed_call(
    plane: DevClusterProcess,
) -> None:
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready")
    old_active = holder(plane)
    target = next(f"{NAME}-{i}" for i in range(3) if f"{NAME}-{i}" != old_active)
    probe = Client(addresses(plane), timeout=30, tls=cluster_tls(plane, "default", NAME))
    before = probe.call("current")
    restarts_before = restarts(plane)
    with Load(addresses(plane), tls=cluster_tls(plane, "default", NAME)) as load:
        load.wait_for_more(100)
        plane.kubectl("annotate", "csrv", NAME, f"gencluster.io/switchover-to={target}")
        wait_for(lambda: holder(plane) == target, 60, 0.1, f"{target} to hold the Lease")
        load.wait_for_more(100, timeout=60)
    assert not load.failures, load.failures
    assert_no_gap(load.values, before)
    def switched() -> dict[str, Any] | None:
        status = json.loads(plane.kubectl("get", "csrv", NAME, "-o", "json").stdout)["status"]
        return status if status.get("activePod") == target else None
    status = wait_for(switched, 60, 0.2, "the status to name the new active")
    assert status["lastFailoverReason"] == "Switchover"
    # No container was restarted for it: a switchover hands over between running processes.
    assert restarts(plane) == restarts_before


def test_pause_and_resume_act_on_the_containers_processes(plane: DevClusterProcess) -> None:
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready")
    standby = next(f"{NAME}-{i}" for i in range(3) if f"{NAME}-{i}" != holder(plane))
    pid = pod_states(plane)[standby]["containers"]["server"]["pid"]
    fault = ("dev", "fault", "--dir", str(plane.dir))
    plane.gencluster(*fault, "pause", standby)
    try:
        wait_for(lambda: proc_status(pid)["State"].startswith("T"), 10, 0.05,
                 "the container's process to stop")
    finally:
        plane.gencluster(*fault, "resume", standby)
    wait_for(lambda: not proc_status(pid)["State"].startswith("T"), 10, 0.05,
             "the container's process to run again")
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready again")


def test_network_faults_cut_the_containers_traffic(plane: DevClusterProcess) -> None:
    """Host networking keeps nftables faults working: they match the pod's uid, which is the
    uid of the container's processes."""
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready")
    pod_a, pod_b = [f"{NAME}-{i}" for i in range(3) if f"{NAME}-{i}" != holder(plane)]
    ip_b = plane.kubectl("get", "pod", pod_b, "-o", "jsonpath={.status.podIP}").stdout
    connect = ("python3", "-c", "import socket, sys; "
               f"socket.create_connection(({ip_b!r}, {PORT}), timeout=2).close()")
    container_a = server_container(plane, pod_a)
    assert podman("exec", container_a, *connect, check=False).returncode == 0
    fault = ("dev", "fault", "--dir", str(plane.dir))
    plane.gencluster(*fault, "partition", pod_a, pod_b)
    try:
        assert podman("exec", container_a, *connect, check=False).returncode != 0
    finally:
        plane.gencluster(*fault, "heal")
    assert podman("exec", container_a, *connect, check=False).returncode == 0
    wait_for(lambda: ready(plane), READY_SECONDS, 0.5, "id-server to be Ready again")


TUTORIAL = ROOT / "docs" / "tutorial.md"


def fenced_block(language: str, containing: str) -> str:
    """The first ```language block of the tutorial that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    return next(block for block in blocks if containing in block)


def test_the_tutorials_image_built_from_the_runtime_image_runs_its_server(
    plane: DevClusterProcess, tmp_path: Path,
) -> None:
    """docs/tutorial.md as written: its class in mycounter/server.py, its Dockerfile FROM the
    runtime image, its counter.yaml (Sync, persistence on a claim) with that image."""
    (tmp_path / "mycounter").mkdir()
    (tmp_path / "mycounter" / "__init__.py").write_text("")
    (tmp_path / "mycounter" / "server.py").write_text(fenced_block("python", "class Counter"))
    (tmp_path / "Dockerfile").write_text(fenced_block("dockerfile", "FROM "))
    manifest = yaml.safe_load(fenced_block("yaml", "kind: ClusteredServer"))
    image = manifest["spec"]["image"]
    podman("build", "--network", "host", "-t", image, str(tmp_path))
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        name = manifest["metadata"]["name"]
        wait_for(lambda: ready_named(plane, name), READY_SECONDS, 0.5, f"{name} to be Ready")
        ips = plane.kubectl("get", "pods", "-l", f"gencluster.io/cluster={name}", "-o",
                            "jsonpath={.items[*].status.podIP}").stdout.split()
        with Client(",".join(f"{ip}:{PORT}" for ip in ips), timeout=30,
                    tls=cluster_tls(plane, "default", name)) as client:
            assert client.call({"op": "add", "amount": 5, "who": "me"}) == 105
            assert client.call("get") == 105
        names = [n for n in container_names(plane) if n.startswith(f"k8s_server_{name}-")]
        assert len(names) == manifest["spec"]["replicas"]
        assert podman("inspect", "--format", "{{.ImageName}}", names[0]).stdout.strip() \
            .endswith(image)
    finally:
        plane.kubectl("delete", "csrv", manifest["metadata"]["name"], "--wait=false",
                      check=False)


def ready_named(plane: DevClusterProcess, name: str) -> bool:
    result = plane.kubectl("get", "csrv", name, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
