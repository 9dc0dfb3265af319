"""Pod lifecycle on a real local control plane: processes, IPs, uids, env, volumes, restarts,
graceful deletion and logs (through the real kubectl)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, let_default_read_pods, pid_alive, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("kubelet") / "dev").start()
    try:
        yield plane
    finally:
        plane.stop()


REPORT = r"""
import json, os, urllib.request
env = {k: v for k, v in os.environ.items()}
mounts = json.loads(os.environ["GENCLUSTER_DEV_MOUNTS"])
def read(path):
    with open(path) as f:
        return f.read()
config = os.environ["GENCLUSTER_DEV_MOUNT_ETC_APP"]
secret = os.environ["GENCLUSTER_DEV_MOUNT_ETC_SECRET"]
scratch = os.environ["GENCLUSTER_DEV_MOUNT_SCRATCH"]
with open(os.path.join(scratch, "written"), "w") as f:
    f.write("ok")
kubeconfig = json.loads(read(os.environ["KUBECONFIG"]))
token = kubeconfig["users"][0]["user"]["token"]
request = urllib.request.Request(
    kubeconfig["clusters"][0]["cluster"]["server"]
    + "/api/v1/namespaces/default/pods/" + env["POD"],
    headers={"Authorization": "Bearer " + token})
cluster = kubeconfig["clusters"][0]["cluster"]
context = None
if "certificate-authority-data" in cluster:
    import base64, ssl
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
with urllib.request.urlopen(request, timeout=5, context=context) as response:
    api = response.status
from kubernetes import client, config as kube_config
kube_config.load_kube_config()
kube_ip = client.CoreV1Api().read_namespaced_pod(env["POD"], env["NS"]).status.pod_ip
print(json.dumps({"env": env, "kube_ip": kube_ip, "uid": os.getuid(), "gid": os.getgid(),
                  "api": api,
                  "config": read(os.path.join(config, "settings.yaml")),
                  "secret": read(os.path.join(secret, "pw")),
                  "secret_mode": oct(os.stat(os.path.join(secret, "pw")).st_mode & 0o777),
                  "podinfo": read(os.environ["GENCLUSTER_DEV_MOUNT_ETC_PODINFO"] + "/labels"),
                  "projected_token": read(os.environ["GENCLUSTER_DEV_MOUNT_ETC_PODINFO"]
                                          + "/token") == token,
                  "mounts": mounts, "cwd": os.getcwd()}), flush=True)
import time
time.sleep(600)
"""


def test_pod_gets_ip_uid_env_volumes_and_token(plane: DevPlane) -> None:
    plane.create({"kind": "Secret", "metadata": {"name": "creds"},
                  "data": {"password": base64.b64encode(b"hunter2").decode()}})
    # The pod reads itself with its ServiceAccount's token: RBAC must allow it.
    let_default_read_pods(plane.ok)
    plane.create({"kind": "ConfigMap", "metadata": {"name": "settings"},
                  "data": {"settings.yaml": "level: 3\n", "MODE": "fast"}})
    pod = python_pod("report", REPORT, labels={"app": "report", "tier": "x"}, container={
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                "key": "password"}}},
            {"name": "ADDR", "value": "$(POD_IP):8080"},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"},
                         {"name": "secret", "mountPath": "/etc/secret"},
                         {"name": "scratch", "mountPath": "/scratch"},
                         {"name": "podinfo", "mountPath": "/etc/podinfo"}],
    }, volumes=[
        {"name": "config", "configMap": {"name": "settings",
                                         "items": [{"key": "settings.yaml",
                                                    "path": "settings.yaml"}]}},
        {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o400,
                                      "items": [{"key": "password", "path": "pw"}]}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "podinfo", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}},
            {"downwardAPI": {"items": [{"path": "labels",
                                        "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}},
    ])
    plane.create(pod)
    running = plane.wait_running("report")
    line = wait_for(lambda: plane.log("report").strip(), 20, message="report output")
    report = json.loads(line.splitlines()[0])
    env = report["env"]
    status = running["status"]
    pod_ip = status["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(plane.instance["podNetwork"])
    assert status["podIPs"] == [{"ip": pod_ip}] and status["hostIP"]
    assert env["POD_IP"] == pod_ip and env["ADDR"] == f"{pod_ip}:8080"
    assert env["POD"] == "report" and env["NS"] == "default" and env["TIER"] == "x"
    assert env["NODE"] == running["spec"]["nodeName"]
    assert env["PASSWORD"] == "hunter2" and env["CM_MODE"] == "fast"
    assert env["PATH"].startswith(str(Path(os.sys.executable).parent))
    assert env["KUBERNETES_SERVICE_HOST"] == plane.instance["server"].split("//")[1].split(":")[0]
    assert report["api"] == 200 and report["kube_ip"] == pod_ip
    assert report["config"] == "level: 3\n" and report["secret"] == "hunter2"
    assert report["secret_mode"] == "0o400"
    assert "/etc/app" in report["mounts"]
    assert report["podinfo"] == 'app="report"\ntier="x"' and report["projected_token"]
    kubeconfig = plane.pod_dir(running) / "kubeconfig"
    if json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"].startswith(
            "https"):
        got = plane.kubectl("--kubeconfig", str(kubeconfig), "get", "pod", "report", "-o",
                            "jsonpath={.status.podIP}")
        assert got.stdout == pod_ip
    # Every file holding the pod's token is readable by its owner only (pods share a host).
    pod_dir = plane.pod_dir(running)
    for secret_file in (kubeconfig, pod_dir / "serviceaccount" / "token",
                        pod_dir / "volumes" / "podinfo" / "token"):
        assert secret_file.stat().st_mode & 0o777 == 0o600, secret_file
    state = plane.state("report")
    assert state["podIP"] == pod_ip and state["name"] == "report"
    assert pid_alive(state["containers"]["main"]["pid"])
    if os.geteuid() == 0:
        assert report["uid"] == report["gid"] == state["runAsUser"]
        assert report["uid"] in range(200_000, 200_000 + 251 * 1024)
        scratch = plane.pod_dir(running) / "volumes" / "scratch"
        assert (scratch / "written").read_text() == "ok"
        assert (scratch / "written").stat().st_uid == state["runAsUser"]
    plane.delete_pod("report")
    plane.wait_gone("report")


def test_a_changed_secret_reaches_a_running_pods_volume(plane: DevPlane) -> None:
    """As the kubelet refreshes Secret volumes (a renewed certificate reaches a running
    server without a restart): the files change, the process does not."""
    plane.create({"kind": "Secret", "metadata": {"name": "rotating"},
                  "data": {"tls.crt": base64.b64encode(b"first").decode()}})
    plane.create(python_pod("reader", "import time\ntime.sleep(600)\n", volumes=[
        {"name": "tls", "secret": {"secretName": "rotating"}}]))
    running = plane.wait_running("reader")
    pid = plane.state("reader")["containers"]["main"]["pid"]
    path = plane.pod_dir(running) / "volumes" / "tls" / "tls.crt"
    assert path.read_bytes() == b"first"
    plane.ok("PATCH", "/api/v1/namespaces/default/secrets/rotating",
             {"data": {"tls.crt": base64.b64encode(b"second").decode()}},
             content_type="application/merge-patch+json")
    wait_for(lambda: path.exists() and path.read_bytes() == b"second", 30,
             message="the new Secret content in the volume")
    assert plane.state("reader")["containers"]["main"]["pid"] == pid
    plane.delete_pod("reader")
    plane.wait_gone("reader")


CRASH = r"""
import os, sys
print("run", flush=True)
sys.exit(3)
"""


def test_crash_restarts_with_backoff_and_previous_logs(plane: DevPlane) -> None:
    plane.create(python_pod("crasher", CRASH))
    status = wait_for(lambda: (s := plane.container_status("crasher")).get(
        "restartCount", 0) >= 2 and s, 30, message="two restarts")
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    wait_for(lambda: plane.container_status("crasher").get("state", {}).get(
        "waiting", {}).get("reason") == "CrashLoopBackOff", 20, message="CrashLoopBackOff")
    assert (plane.pod("crasher") or {})["status"]["phase"] == "Running"
    logs = plane.pod_dir(plane.pod("crasher")) / "logs"
    assert (logs / "main.previous.log").read_text() == "run\n"
    assert any(e["reason"] == "BackOff" for e in plane.events("crasher"))
    plane.delete_pod("crasher")
    plane.wait_gone("crasher")


def test_restart_policy_never_and_on_failure(plane: DevPlane) -> None:
    plane.create(python_pod("fails", "import sys; sys.exit(4)", restartPolicy="Never"))
    plane.create(python_pod("succeeds", "print('done')", restartPolicy="OnFailure"))
    wait_for(lambda: ((plane.pod("fails") or {}).get("status") or {}).get("phase") == "Failed",
             20, message="phase Failed")
    terminated = plane.container_status("fails")["state"]["terminated"]
    assert terminated["exitCode"] == 4 and terminated["reason"] == "Error"
    assert terminated["startedAt"] and terminated["finishedAt"]
    wait_for(lambda: ((plane.pod("succeeds") or {}).get("status") or {}).get(
        "phase") == "Succeeded", 20, message="phase Succeeded")
    status = plane.container_status("succeeds")
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert status["restartCount"] == 0
    assert plane.condition("succeeds", "Ready") == "False"
    assert plane.log("succeeds") == "done\n"
    for name in ("fails", "succeeds"):
        plane.delete_pod(name)
        plane.wait_gone(name)


def test_termination_is_reported_with_its_signal(plane: DevPlane) -> None:
    """A SIGKILLed process shows up through the API as terminated by signal 9 (exit code 137,
    as a container runtime reports it). How fast is not asserted here: speed is bench's."""
    plane.create(python_pod("victim", "import time; time.sleep(600)", restartPolicy="Never"))
    plane.wait_running("victim")
    pid = plane.state("victim")["containers"]["main"]["pid"]
    os.killpg(pid, 9)
    status = wait_for(lambda: plane.container_status("victim").get("state", {}).get(
        "terminated"), 5, message="terminated state", interval=0.02)
    assert status["exitCode"] == 137 and status["signal"] == 9
    assert not pid_alive(pid)
    plane.delete_pod("victim")
    plane.wait_gone("victim")


def test_watchers_see_terminated_before_the_restart(plane: DevPlane) -> None:
    """With restartPolicy Always the restart is immediate, yet a watch sees `terminated`
    first: what the operator's failover assist waits for."""
    plane.create(python_pod("watched", "import time; time.sleep(600)"))
    pod = plane.wait_running("watched")
    pid = plane.state("watched")["containers"]["main"]["pid"]
    seen: list[dict] = []
    done = threading.Event()

    def watch() -> None:
        query = ("?watch=true&fieldSelector=metadata.name%3Dwatched&resourceVersion="
                 + pod["metadata"]["resourceVersion"])
        request = urllib.request.Request(
            plane.server + "/api/v1/namespaces/default/pods" + query,
            headers={"Authorization": f"Bearer {plane.token}"})
        with urllib.request.urlopen(request, timeout=15) as stream:
            for line in stream:
                status = json.loads(line)["object"]["status"]["containerStatuses"][0]
                seen.append(status)
                if status["restartCount"] >= 1 and status["state"].get("running"):
                    break
        done.set()

    # The watch starts from the running pod's resourceVersion, so it replays every change after
    # it whether it connects before or after the kill: no need to wait for it to connect.
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    os.killpg(pid, 9)
    assert done.wait(10), seen
    terminated = [s for s in seen if s["state"].get("terminated")]
    assert terminated and terminated[0]["state"]["terminated"]["signal"] == 9
    assert terminated[0]["restartCount"] == 0
    assert seen[-1]["lastState"]["terminated"]["exitCode"] == 137
    assert seen[-1]["restartCount"] == 1 and seen[-1]["state"].get("running")
    plane.delete_pod("watched")
    plane.wait_gone("watched")


TRAP = r"""
import os, signal, sys, time
marker = os.environ["MARKER"]
def on_term(*_):
    with open(marker, "w") as f:
        f.write("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(600)
"""

NOTE_TERM_AND_STAY = r"""
import os, signal, time
def on_term(*_):
    with open(os.environ["MARKER"], "a") as f:
        f.write("SIGTERM\n")
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(600)
"""
"""Notes SIGTERM in $MARKER and keeps running: only SIGKILL ends it."""

IGNORE = r"""
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""


def test_graceful_delete_sigterm_then_sigkill(plane: DevPlane, tmp_path: Path) -> None:
    """SIGTERM first; a process that exits on it ends its pod's deletion at once (before a
    shorter grace period elsewhere ran out), one that survives it is SIGKILLed only once its
    grace period has passed."""
    tmp_path.chmod(0o777)
    marker = tmp_path / "marker"
    stubborn_marker = tmp_path / "stubborn-marker"
    plane.create(python_pod("trapper", TRAP, terminationGracePeriodSeconds=10, container={
        "env": [{"name": "MARKER", "value": str(marker)}]}))
    plane.create(python_pod("stubborn", NOTE_TERM_AND_STAY, terminationGracePeriodSeconds=2,
                            container={"env": [{"name": "MARKER", "value": str(stubborn_marker)}]}))
    for name in ("trapper", "stubborn"):
        plane.wait_running(name)
        wait_for(lambda name=name: "ready" in plane.log(name), 20, message=f"{name} ready")
    trap_pid = plane.state("trapper")["containers"]["main"]["pid"]
    stubborn_pid = plane.state("stubborn")["containers"]["main"]["pid"]
    began = time.monotonic()
    plane.delete_pod("trapper")
    plane.delete_pod("stubborn")
    plane.wait_gone("trapper", 15)
    assert marker.read_text() == "SIGTERM"
    assert not pid_alive(trap_pid)
    # The trapper's pod went away while the stubborn one (grace 2 s, against the trapper's
    # 10 s) still ran: the trapper's deletion ended when its process exited on SIGTERM, not
    # when its grace period ran out.
    assert pid_alive(stubborn_pid)
    wait_for(lambda: stubborn_marker.exists() and stubborn_marker.read_text() == "SIGTERM\n",
             15, message="the stubborn process noted its SIGTERM")
    plane.wait_gone("stubborn", 15)
    stubborn_took = time.monotonic() - began
    assert stubborn_took >= 1.8, stubborn_took  # SIGKILL waited for the grace period
    # It survives SIGTERM by design, so only the SIGKILL that followed can have ended it.
    wait_for(lambda: not pid_alive(stubborn_pid), 5, message="stubborn process gone")


def test_force_delete_kills_at_once(plane: DevPlane) -> None:
    plane.create(python_pod("forced", IGNORE, terminationGracePeriodSeconds=30))
    plane.wait_running("forced")
    wait_for(lambda: "ready" in plane.log("forced"), 20, message="forced ready")
    pid = plane.state("forced")["containers"]["main"]["pid"]
    plane.delete_pod("forced", grace=0)
    wait_for(lambda: not pid_alive(pid), 5, message="force-deleted process gone")


def test_kubectl_logs_and_get(plane: DevPlane) -> None:
    """The real kubectl: logs (current, --previous, -c), get pods -o wide, get nodes."""
    plane.create(python_pod("talker", "import time\nfor i in range(3): print('line', i)\n"
                                      "time.sleep(600)"))
    plane.create(python_pod("crashlog", CRASH))
    plane.wait_running("talker")
    wait_for(lambda: plane.kubectl("logs", "talker", check=False).stdout ==
             "line 0\nline 1\nline 2\n", 15, message="kubectl logs")
    listed = plane.kubectl("get", "pods", "talker", "-o", "wide").stdout
    assert "Running" in listed and plane.pod("talker")["status"]["podIP"] in listed
    assert "Ready" in plane.kubectl("get", "nodes").stdout
    wait_for(lambda: plane.container_status("crashlog").get("restartCount", 0) >= 1, 20,
             message="a restart")
    assert plane.kubectl("logs", "crashlog", "--previous", "-c", "main").stdout == "run\n"
    for name in ("talker", "crashlog"):
        plane.delete_pod(name)
        plane.wait_gone(name)


def test_unknown_image_and_missing_secret_wait(plane: DevPlane) -> None:
    plane.create({"kind": "Pod", "metadata": {"name": "noimage"},
                  "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}})
    waiting = wait_for(lambda: plane.container_status("noimage").get("state", {}).get(
        "waiting", {}).get("reason") == "ErrImageNeverPull" and plane.container_status(
        "noimage")["state"]["waiting"], 15, message="ErrImageNeverPull")
    assert "nginx:1.25" in waiting["message"] and "command" in waiting["message"]
    wait_for(lambda: any(e["reason"] == "Failed" for e in plane.events("noimage")), 10,
             message="Failed event")

    plane.create(python_pod("needsecret", "print('got', __import__('os').environ['S'])\n"
                                          "import time; time.sleep(600)", container={
        "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]}))
    wait_for(lambda: plane.container_status("needsecret").get("state", {}).get(
        "waiting", {}).get("reason") == "CreateContainerConfigError", 15,
        message="CreateContainerConfigError")
    plane.create({"kind": "Secret", "metadata": {"name": "later"},
                  "stringData": {"k": "v"}, "data": {"k": base64.b64encode(b"v").decode()}})
    plane.wait_running("needsecret")
    wait_for(lambda: "got v" in plane.log("needsecret"), 10, message="secret value")
    for name in ("noimage", "needsecret"):
        plane.delete_pod(name)
        plane.wait_gone(name)


def test_node_selector_and_init_containers(plane: DevPlane) -> None:
    pod = python_pod("elsewhere", "print(1)", nodeSelector={"disk": "ssd"})
    plane.create(pod)
    wait_for(lambda: plane.condition("elsewhere", "PodScheduled") == "False", 10,
             message="Unschedulable")
    assert not (plane.pod("elsewhere") or {})["spec"].get("nodeName")
    plane.delete_pod("elsewhere")
    plane.wait_gone("elsewhere")

    pod = python_pod("withinit", "import time; print('main', flush=True); time.sleep(600)")
    pod["spec"]["initContainers"] = [{"name": "setup", "image": "python:3",
                                      "command": ["python", "-c", "print('init')"]}]
    plane.create(pod)
    plane.wait_running("withinit")
    status = plane.pod("withinit")["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert plane.condition("withinit", "Initialized") == "True"
    assert plane.log("withinit", "setup") == "init\n"
    plane.delete_pod("withinit")
    plane.wait_gone("withinit")


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    plane = DevPlane(tmp_path / "dev").start()
    try:
        plane.create(python_pod("a", IGNORE))
        plane.create(python_pod("b", "import subprocess, time\n"
                                     "subprocess.Popen(['sleep', '600'])\ntime.sleep(600)"))
        plane.wait_running("a")
        plane.wait_running("b")
        pids = [plane.state(n)["containers"]["main"]["pid"] for n in ("a", "b")]
        child = wait_for(lambda: [int(p) for p in os.popen(f"pgrep -g {pids[1]}").read().split()
                                  if int(p) != pids[1]], 10, message="grandchild")
    finally:
        plane.stop()
    for pid in [*pids, *child]:
        wait_for(lambda pid=pid: not pid_alive(pid), 5, message=f"pid {pid} gone")


def test_missing_volume_source_waits_then_mounts(plane: DevPlane) -> None:
    pod = python_pod("needsvolume", "import os, time\n"
                     "print(open(os.environ['GENCLUSTER_DEV_MOUNT_CFG'] + '/k').read())\n"
                     "time.sleep(600)", container={
                         "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]},
                     volumes=[{"name": "cfg", "configMap": {"name": "arrives-later"}}])
    plane.create(pod)
    waiting = wait_for(lambda: plane.container_status("needsvolume").get("state", {}).get(
        "waiting", {}).get("message"), 15, message="waiting on the volume")
    assert "arrives-later" in waiting
    assert plane.container_status("needsvolume")["state"]["waiting"]["reason"] == \
        "ContainerCreating"
    wait_for(lambda: any(e["reason"] == "FailedMount" for e in plane.events("needsvolume")),
             10, message="FailedMount event")
    plane.create({"kind": "ConfigMap", "metadata": {"name": "arrives-later"},
                  "data": {"k": "value"}})
    plane.wait_running("needsvolume")
    wait_for(lambda: "value" in plane.log("needsvolume"), 10, message="volume content")
    plane.delete_pod("needsvolume")
    plane.wait_gone("needsvolume")


def test_pods_in_another_namespace(plane: DevPlane) -> None:
    plane.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "team"}})
    plane.create(python_pod("worker", "import os, time\nprint(os.environ['NS'])\n"
                            "time.sleep(600)", container={"env": [
                                {"name": "NS", "valueFrom": {"fieldRef": {
                                    "fieldPath": "metadata.namespace"}}}]}), namespace="team")
    pod = wait_for(lambda: (p := plane.pod("worker", "team")) and (p.get("status") or {}).get(
        "phase") == "Running" and p, 20, message="worker running")
    assert plane.pod_dir(pod).name.startswith("team_worker_")
    state = plane.state("worker", "team")
    assert state["namespace"] == "team"
    wait_for(lambda: (plane.pod_dir(pod) / "logs" / "main.log").read_text() == "team\n", 10,
             message="namespace in env")
    plane.delete_pod("worker", namespace="team")
    wait_for(lambda: plane.pod("worker", "team") is None, 10, message="worker deleted")


def test_gencluster_image_runs_the_project_entrypoint(plane: DevPlane) -> None:
    plane.create({"kind": "Pod", "metadata": {"name": "entry"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "ghcr.io/gencluster/gencluster:0.1.0",
                        "args": ["--help"]}]}})
    wait_for(lambda: ((plane.pod("entry") or {}).get("status") or {}).get("phase") ==
             "Succeeded", 30, message="gencluster --help ran")
    assert "usage" in plane.log("entry").lower()
    assert plane.container_status("entry")["image"] == "ghcr.io/gencluster/gencluster:0.1.0"
    plane.delete_pod("entry")
    plane.wait_gone("entry")


def test_missing_executable_is_a_start_error(plane: DevPlane) -> None:
    plane.create({"kind": "Pod", "metadata": {"name": "noexec"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "x", "command": ["no-such-program"]}]}})
    wait_for(lambda: ((plane.pod("noexec") or {}).get("status") or {}).get("phase") ==
             "Failed", 15, message="phase Failed")
    terminated = plane.container_status("noexec")["state"]["terminated"]
    assert terminated["reason"] == "StartError" and terminated["exitCode"] == 128
    assert "no-such-program" in terminated["message"]
    plane.delete_pod("noexec")
    plane.wait_gone("noexec")


APPEND_ON_TERM = r"""
import os, signal, sys, time
def on_term(*_):
    with open(os.environ["MARKER"], "a") as f:
        f.write("SIGTERM\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(600)
"""


def test_pre_stop_hook_runs_before_sigterm(plane: DevPlane, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    marker = tmp_path / "order"
    plane.create(python_pod("hooked", APPEND_ON_TERM, terminationGracePeriodSeconds=10,
                            container={
        "env": [{"name": "MARKER", "value": str(marker)}],
        "lifecycle": {"preStop": {"exec": {"command": [
            "sh", "-c", "echo prestop-$(id -u) >> $MARKER"]}}}}))
    sleepy_marker = tmp_path / "sleepy-marker"
    plane.create(python_pod("sleepy", NOTE_TERM_AND_STAY, terminationGracePeriodSeconds=3,
                            container={
        "env": [{"name": "MARKER", "value": str(sleepy_marker)}],
        "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}))
    for name in ("hooked", "sleepy"):
        plane.wait_running(name)
        wait_for(lambda name=name: "ready" in plane.log(name), 20, message=f"{name} ready")
    uid = plane.state("hooked")["runAsUser"]
    sleepy_pid = plane.state("sleepy")["containers"]["main"]["pid"]
    began = time.monotonic()
    plane.delete_pod("hooked")
    plane.delete_pod("sleepy")
    plane.wait_gone("hooked")
    expected_uid = os.geteuid() if uid is None else uid
    assert marker.read_text() == f"prestop-{expected_uid}\nSIGTERM\n"
    plane.wait_gone("sleepy")
    took = time.monotonic() - began
    # The sleeping hook, then SIGTERM (noted, survived), then SIGKILL once the grace period,
    # which the hook's second counts against, had passed.
    assert sleepy_marker.read_text() == "SIGTERM\n"
    assert took >= 2.8, took
    wait_for(lambda: not pid_alive(sleepy_pid), 5, message="the sleepy process gone")


def test_fallback_to_logs_on_error(plane: DevPlane) -> None:
    plane.create(python_pod("explains", "import sys\nprint('first')\n"
                            "print('boom: disk full', file=sys.stderr)\nsys.exit(2)",
                            restartPolicy="Never",
                            container={"terminationMessagePolicy": "FallbackToLogsOnError"}))
    wait_for(lambda: ((plane.pod("explains") or {}).get("status") or {}).get("phase") ==
             "Failed", 15, message="phase Failed")
    terminated = plane.container_status("explains")["state"]["terminated"]
    assert terminated["message"] == "first\nboom: disk full"
    plane.delete_pod("explains")
    plane.wait_gone("explains")
