"""Real faults on real pods: nftables partitions, API cuts, isolation, SIGKILL, SIGSTOP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gencluster_dev.network.faults import (
    FaultError,
    FaultInjector,
    ip_ranges_excluding,
    parse_pod_ref,
)
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, pid_alive, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

needs_root_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="network faults need root and nft"
)


def test_pod_refs_and_ranges() -> None:
    assert parse_pod_ref("web-0") == ("default", "web-0")
    assert parse_pod_ref("shop/web-0") == ("shop", "web-0")
    with pytest.raises(FaultError):
        parse_pod_ref("a/b/c")
    assert ip_ranges_excluding("127.9.64.0/18", "127.9.64.3") == [
        "127.9.64.0-127.9.64.2", "127.9.64.4-127.9.127.255"]
    assert ip_ranges_excluding("127.9.64.0/30", "127.9.64.0") == ["127.9.64.1-127.9.64.3"]
    assert ip_ranges_excluding("127.9.64.0/30", "127.9.64.1") == [
        "127.9.64.0", "127.9.64.2-127.9.64.3"]


def test_missing_instance_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FaultError, match="no running instance"):
        FaultInjector(tmp_path)


# ------------------------------------------------------------------------------------ live

AGENT = r"""
import base64, json, os, socket, ssl, threading, time, urllib.request
ip = os.environ["POD_IP"]
server = socket.create_server((ip, 7000))
def serve():
    while True:
        conn, _ = server.accept()
        conn.sendall(b"pong")
        conn.close()
threading.Thread(target=serve, daemon=True).start()
kubeconfig = json.load(open(os.environ["KUBECONFIG"]))
cluster = kubeconfig["clusters"][0]["cluster"]
api = cluster["server"] + "/api"  # discovery: any authenticated identity may read it
ca = cluster.get("certificate-authority-data")
tls = ssl.create_default_context(cadata=base64.b64decode(ca).decode()) if ca else None
token = kubeconfig["users"][0]["user"]["token"]
target_file = os.path.join(os.environ["SHARED"], os.environ["NAME"])
while True:
    try:
        target = open(target_file).read().strip()
    except OSError:
        target = None
    if target:
        try:
            with socket.create_connection((target, 7000), timeout=1) as conn:
                conn.settimeout(1)
                print("peer", "ok" if conn.recv(4) == b"pong" else "bad", flush=True)
        except socket.timeout:
            print("peer timeout", flush=True)
        except OSError as exc:
            print("peer error", exc, flush=True)
    request = urllib.request.Request(api, headers={"Authorization": "Bearer " + token})
    try:
        urllib.request.urlopen(request, timeout=1, context=tls).read()
        print("api ok", flush=True)
    except Exception as exc:
        print("api timeout" if "timed out" in str(exc) else f"api error {exc}", flush=True)
    time.sleep(0.2)  # pacing of the agent's probes, not a wait for anything
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("faults") / "dev").start()
    try:
        yield plane
    finally:
        plane.stop()
        subprocess.run(["nft", "delete", "table", "inet", plane.instance["nftTable"]],
                       capture_output=True, check=False)


@pytest.fixture(scope="module")
def agents(plane: DevPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Pods a and b, each probing the other (peer) and the API server every 0.2s."""
    shared = tmp_path_factory.mktemp("shared")
    shared.chmod(0o777)
    for name in ("a", "b"):
        plane.create(python_pod(name, AGENT, container={"env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SHARED", "value": str(shared)}]}))
    ips = {name: plane.wait_running(name)["status"]["podIP"] for name in ("a", "b")}
    (shared / "a").write_text(ips["b"])
    (shared / "b").write_text(ips["a"])
    return ips


@pytest.fixture
def injector(plane: DevPlane) -> Iterator[FaultInjector]:
    injector = FaultInjector(plane.dev_dir)
    try:
        yield injector
    finally:
        if os.geteuid() == 0 and shutil.which("nft"):
            injector.heal()


def latest(plane: DevPlane, pod: str, kind: str) -> str | None:
    """The last `peer ...`/`api ...` outcome pod logged."""
    lines = [line for line in plane.log(pod).splitlines() if line.startswith(kind + " ")]
    return lines[-1].split(" ", 1)[1] if lines else None


def expect(plane: DevPlane, pod: str, kind: str, outcome: str, timeout: float = 10) -> None:
    """Wait until the pod's newest `kind` outcome is `outcome` (after a fresh attempt)."""
    mark = len(plane.log(pod).splitlines())
    wait_for(lambda: len(plane.log(pod).splitlines()) > mark + 2 and
             latest(plane, pod, kind) == outcome, timeout, message=f"{pod}: {kind} {outcome}")


def nft_rules(table: str) -> list[str]:
    result = subprocess.run(["nft", "-j", "list", "table", "inet", table],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return []
    return [i["rule"].get("comment", "") for i in json.loads(result.stdout)["nftables"]
            if "rule" in i]


@needs_root_nft
def test_partition_drops_traffic_both_ways_and_heal_restores(
    plane: DevPlane, agents: dict[str, str], injector: FaultInjector
) -> None:
    expect(plane, "a", "peer", "ok")
    expect(plane, "b", "peer", "ok")
    injector.partition("a", "default/b")
    injector.partition("b", "a")
    assert len(nft_rules(plane.instance["nftTable"])) == 2
    expect(plane, "a", "peer", "timeout")
    expect(plane, "b", "peer", "timeout")
    expect(plane, "a", "api", "ok")
    # the test itself (not a pod uid) still reaches both pods
    for ip in agents.values():
        with socket.create_connection((ip, 7000), timeout=2) as conn:
            assert conn.recv(4) == b"pong"
    injector.heal()
    injector.heal()
    assert nft_rules(plane.instance["nftTable"]) == []
    expect(plane, "a", "peer", "ok")
    expect(plane, "b", "peer", "ok")


@needs_root_nft
def test_cut_apiserver_only_hits_that_pod(
    plane: DevPlane, agents: dict[str, str], injector: FaultInjector
) -> None:
    expect(plane, "a", "api", "ok")
    injector.cut_apiserver("a")
    expect(plane, "a", "api", "timeout")
    expect(plane, "b", "api", "ok")
    expect(plane, "a", "peer", "ok")
    injector.heal()
    expect(plane, "a", "api", "ok")


@needs_root_nft
def test_isolate_cuts_peers_both_ways_and_the_api(
    plane: DevPlane, agents: dict[str, str], injector: FaultInjector
) -> None:
    injector.isolate("a")
    injector.isolate("a")
    assert len(nft_rules(plane.instance["nftTable"])) == 4
    expect(plane, "a", "peer", "timeout")
    expect(plane, "a", "api", "timeout")
    expect(plane, "b", "peer", "timeout")
    expect(plane, "b", "api", "ok")
    injector.heal()
    expect(plane, "a", "peer", "ok")
    expect(plane, "b", "peer", "ok")


def test_kill_restarts_and_pause_resume(
    plane: DevPlane, agents: dict[str, str], injector: FaultInjector
) -> None:
    pid = plane.state("b")["containers"]["main"]["pid"]

    def state() -> str:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    injector.pause("b")
    wait_for(lambda: state() == "T", 5, message="stopped")
    injector.resume("b")
    wait_for(lambda: state() != "T", 5, message="resumed")
    injector.kill("b")
    status = wait_for(lambda: (s := plane.container_status("b")).get("restartCount") == 1
                      and s.get("state", {}).get("running") and s, 15, message="restart after kill")
    assert status["lastState"]["terminated"]["signal"] == 9
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert not pid_alive(pid)
    new_pid = plane.state("b")["containers"]["main"]["pid"]
    assert new_pid != pid and pid_alive(new_pid)
    expect(plane, "a", "peer", "ok", timeout=15)


def test_fault_errors(plane: DevPlane, agents: dict[str, str],
                      injector: FaultInjector) -> None:
    with pytest.raises(FaultError, match="no pod default/nope"):
        injector.kill("nope")
    plane.create(python_pod("done", "print(1)", restartPolicy="Never"))
    wait_for(lambda: ((plane.pod("done") or {}).get("status") or {}).get(
        "phase") == "Succeeded", 15, message="done")
    with pytest.raises(FaultError, match="not running"):
        injector.kill("done")
    plane.delete_pod("done")
    script = ("import sys\nfrom pathlib import Path\n"
              "from gencluster_dev.network.faults import FaultError, FaultInjector\n"
              "try:\n    FaultInjector(Path(sys.argv[1])).partition('a', 'b')\n"
              "except FaultError as e:\n    print(e)\n")
    no_nft = subprocess.run([sys.executable, "-c", script, str(plane.dev_dir)],
                            env={"PATH": "/nonexistent"}, capture_output=True, text=True,
                            check=False)
    if os.geteuid() == 0:
        assert "install nftables" in no_nft.stdout, no_nft
        setpriv = shutil.which("setpriv")
        assert setpriv
        not_root = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                   "--inh-caps=+dac_read_search",
                                   "--ambient-caps=+dac_read_search", sys.executable, "-c",
                                   script, str(plane.dev_dir)],
                                  capture_output=True, text=True, check=False)
        assert "need root" in not_root.stdout, not_root
