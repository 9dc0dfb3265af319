"""`kubectl exec` and `kubectl port-forward` through the real kubectl (WebSocket v5 channels
and SPDY/3.1 inside a WebSocket) into process pods of a real local control plane."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ECHO = r"""
import os, socket, threading
server = socket.create_server((os.environ["POD_IP"], 7000))
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("streaming") / "dev").start()
    try:
        workdir = plane.dev_dir / "work"
        workdir.mkdir(mode=0o777)
        os.chmod(workdir, 0o777)
        plane.create(python_pod(
            "echo", ECHO, labels={"app": "echo"},
            container={"workingDir": str(workdir),
                       "env": [{"name": "POD_IP",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                               {"name": "GREETING", "value": "hello from the pod"}],
                       "ports": [{"name": "echo", "containerPort": 7000}]}))
        plane.wait_running("echo")
        yield plane
    finally:
        plane.stop()


def test_exec_runs_in_the_containers_environment_and_returns_its_exit_code(
        plane: DevPlane) -> None:
    result = plane.kubectl("exec", "echo", "--", "sh", "-c",
                           'echo "$GREETING"; pwd; id -u; echo oops >&2; exit 3', check=False)
    assert result.returncode == 3, result
    lines = result.stdout.splitlines()
    assert lines[0] == "hello from the pod"
    assert lines[1] == str(plane.dev_dir / "work")
    run_as = plane.state("echo")["runAsUser"]
    assert lines[2] == str(run_as if run_as is not None else os.getuid())
    assert "oops" in result.stderr
    assert plane.kubectl("exec", "echo", "-c", "main", "--", "true").returncode == 0


def test_exec_passes_stdin_and_its_end(plane: DevPlane) -> None:
    env = dict(os.environ, KUBECONFIG=str(plane.kubectl_config))
    result = subprocess.run(["kubectl", "exec", "-i", "echo", "--", "sh", "-c", "wc -c; cat"],
                            input="abc\n" * 1000, env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].strip() == "4000"


def test_exec_with_a_terminal(plane: DevPlane) -> None:
    """`kubectl exec -it` from a terminal: the command gets a terminal of its own."""
    env = dict(os.environ, KUBECONFIG=str(plane.kubectl_config))
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on a terminal
        os.execvpe("kubectl", ["kubectl", "exec", "-it", "echo", "--", "sh", "-c",
                               "tty; stty size; read line; echo got:$line; exit 4"], env)
    output = b""
    sent = False
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            output += chunk
        if not sent and b"\n" in output.split(b"/dev/pts/")[-1] and b"/dev/pts/" in output:
            os.write(fd, b"typed\r")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = output.decode(errors="replace")
    assert "/dev/pts/" in text, text
    assert "got:typed" in text, text
    assert os.waitstatus_to_exitcode(status) == 4, text


def test_exec_errors(plane: DevPlane) -> None:
    missing = plane.kubectl("exec", "echo", "--", "no-such-command-here", check=False)
    assert missing.returncode == 127, missing
    assert "no-such-command-here" in missing.stderr
    wrong = plane.kubectl("exec", "echo", "-c", "nope", "--", "true", check=False)
    assert wrong.returncode != 0
    assert "container nope is not valid for pod echo" in wrong.stderr


class PortForward:
    """`kubectl port-forward TARGET :REMOTE` running; `port` is the local one it chose."""

    def __init__(self, plane: DevPlane, target: str, remote: int) -> None:
        env = dict(os.environ, KUBECONFIG=str(plane.kubectl_config))
        self.process = subprocess.Popen(
            ["kubectl", "port-forward", target, f":{remote}"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line)
        assert match, line
        self.port = int(match.group(1))

    def stop(self) -> str:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=20)
        return out


def echo_through(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def test_port_forward_to_a_pod_and_to_a_service(plane: DevPlane) -> None:
    plane.create({"kind": "Service", "metadata": {"name": "echo"},
                  "spec": {"selector": {"app": "echo"},
                           "ports": [{"port": 80, "targetPort": "echo"}]}})
    payload = os.urandom(300_000)
    for target, remote in (("pod/echo", 7000), ("svc/echo", 80)):
        forward = PortForward(plane, target, remote)
        try:
            for _ in range(3):  # one SPDY stream pair per connection, in one session
                assert echo_through(forward.port, payload) == payload
        finally:
            output = forward.stop()
        assert "error" not in output.lower(), output


def test_port_forward_to_a_closed_port_reports_the_error(plane: DevPlane) -> None:
    forward = PortForward(plane, "pod/echo", 7999)
    try:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=20) as conn:
            conn.settimeout(20)
            assert conn.recv(10) == b""
        wait_for(lambda: forward.process.poll() is not None, 30,
                 message="kubectl port-forward to end after the pod refused the port")
    finally:
        output = forward.stop()
    assert "error forwarding port 7999 to pod echo" in output
    assert "connection refused" in output


def test_kubectl_cp_both_ways(plane: DevPlane, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`kubectl cp` is tar over exec, with stdin in one direction and stdout in the other."""
    source = tmp_path / "in.txt"
    source.write_text("copied through exec\n")
    target = plane.dev_dir / "work" / "copied.txt"
    plane.kubectl("cp", str(source), f"echo:{target}")
    assert plane.kubectl("exec", "echo", "--", "cat", str(target)).stdout == (
        "copied through exec\n")
    back = tmp_path / "back.txt"
    plane.kubectl("cp", f"echo:{target}", str(back))
    assert back.read_text() == "copied through exec\n"
