"""`kubectl gencluster`: the real kubectl finds `kubectl-gencluster` on PATH and runs it against
a local control plane with the operator and id-server running; plus the table rendering and the
pure helpers without sockets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gencluster import kubectl_plugin as plugin
from gencluster import wellknown
from gencluster_operator import names
from gencluster_testing.devcluster_process import KUBECTL, DevClusterProcess
from gencluster_testing.operator_process import (
    OperatorProcess,
    clustered_server,
    serving,
    start_id_server,
)
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "id-server"
NAMESPACE = "kubectl-plugin"
DEADLINE = 60.0
VENV_BIN = str(Path(sys.executable).parent)


# -- pure: rendering and helpers ----------------------------------------------------------------


def _report(**cluster: Any) -> dict[str, Any]:
    summary = {
        "phase": "Running",
        "ready": {"status": "True", "reason": "Serving", "message": "all good"},
        "activePod": "id-server-0",
        "epoch": 3,
        "replicas": 3,
        "currentReplicas": 3,
        "readyReplicas": 3,
        "mode": "Sync",
        "minSyncStandbys": 1,
        "partitionPolicy": "Fenced",
        "lastFailoverTime": "2026-01-01T00:00:00Z",
        "lastFailoverReason": "Switchover",
        "merges": 0,
        "switchoverRequested": None,
        **cluster,
    }
    pods = [
        {"pod": "id-server-0", "role": "active", "ready": True, "inSync": None, "lag": None,
         "appliedSeq": 12, "epoch": 3, "ip": "10.0.0.1", "restarts": 0},
        {"pod": "id-server-1", "role": "standby", "ready": True, "inSync": True, "lag": 0,
         "appliedSeq": 12, "epoch": 3, "ip": "10.0.0.2", "restarts": 1},
        {"pod": "id-server-2", "role": "unreachable", "ready": False, "inSync": False,
         "lag": 7, "appliedSeq": None, "epoch": None, "ip": None, "restarts": 4,
         "error": "DEADLINE_EXCEEDED: Deadline Exceeded"},
    ]
    return {"name": NAME, "namespace": "prod", "cluster": summary, "pods": pods}


def test_format_table_aligns_columns_and_shows_missing_values_as_dashes() -> None:
    table = plugin.format_table(["A", "LONG HEADER", "C"], [["xyz", None, True], [1, 22, False]])
    assert table.splitlines() == [
        "A    LONG HEADER  C",
        "xyz  -            true",
        "1    22           false",
    ]


def test_render_status_shows_the_summary_then_one_row_per_pod() -> None:
    text = plugin.render_status(_report())
    lines = text.splitlines()
    assert lines[0] == "Cluster Summary"
    fields = dict(line.split(":", 1) for line in lines[1:lines.index("")])
    assert {key: value.strip() for key, value in fields.items()} == {
        "Name": "prod/id-server",
        "Phase": "Running",
        "Ready": "True (Serving)",
        "Active pod": "id-server-0",
        "Epoch": "3",
        "Replicas": "3 desired, 3 current, 3 ready",
        "Replication": "Sync (min 1 in-sync standbys)",
        "Partition policy": "Fenced",
        "Last failover": "2026-01-01T00:00:00Z (Switchover)",
        "Merges": "0",
    }
    table = lines[lines.index("Pods") + 1:]
    header = table[0]
    assert header.split("  ")[0] == "POD"
    for column in ("ROLE", "READY", "IN SYNC", "LAG", "APPLIED SEQ", "EPOCH", "IP", "RESTARTS"):
        assert column in header
    assert table[1].split() == ["id-server-0", "active", "true", "-", "-", "12", "3",
                                "10.0.0.1", "0"]
    assert table[2].split() == ["id-server-1", "standby", "true", "true", "0", "12", "3",
                                "10.0.0.2", "1"]
    assert table[3].split() == ["id-server-2", "unreachable", "false", "false", "7", "-", "-",
                                "-", "4"]
    # Columns line up: every row starts each column where the header does.
    start = header.index("APPLIED SEQ")
    assert all(row[start - 2:start] == "  " and row[start] != " " for row in table[1:])


def test_render_status_explains_a_cluster_that_is_not_ready() -> None:
    text = plugin.render_status(_report(
        ready={"status": "False", "reason": "NoActive", "message": "no pod holds the Lease"},
        activePod=None, switchoverRequested="id-server-2", mode="Async", lastFailoverTime=None,
        lastFailoverReason=None,
    ))
    assert "Ready:            False (NoActive): no pod holds the Lease" in text
    assert "Active pod:       -" in text
    assert "Replication:      Async\n" in text
    assert "Last failover:    -\n" in text
    assert "Switchover to:    id-server-2 (in progress)" in text


def test_render_status_says_when_an_active_answers_without_its_standbys() -> None:
    report = _report(partitionPolicy="Available")
    report["pods"][0] |= {"syncDegradedSeconds": 12.4, "unsyncedEntries": 40}
    text = plugin.render_status(report)
    assert "active (degraded Sync for 12s, 40 entries not on a standby)" in text


def test_render_status_without_pods() -> None:
    report = _report()
    report["pods"] = []
    assert plugin.render_status(report).endswith("Pods\nNo pods.")


def _pod(name: str, ip: str | None, ready: bool = True, restarts: int = 0) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, deletion_timestamp=None),
        status=SimpleNamespace(
            pod_ip=ip,
            conditions=[SimpleNamespace(type="Ready", status="True" if ready else "False")],
            container_statuses=[SimpleNamespace(restart_count=restarts)],
        ),
        spec=SimpleNamespace(containers=[]),
    )


RESOURCE = {
    "metadata": {"name": NAME, "annotations": {wellknown.SWITCHOVER_TO_ANNOTATION: "id-server-1"}},
    "spec": {"replicas": 3, "replication": {"mode": "Sync", "minSyncStandbys": 1},
             "partitionPolicy": "Fenced"},
    "status": {
        "phase": "Updating", "activePod": "id-server-0", "epoch": 2, "replicas": 3,
        "readyReplicas": 2, "merges": 1,
        "standbys": [{"pod": "id-server-1", "inSync": True, "lag": 0},
                     {"pod": "id-server-2", "inSync": False, "lag": 9}],
        "conditions": [{"type": "Available", "status": "True", "reason": "ActiveServing"},
                       {"type": "Ready", "status": "False", "reason": "Updating",
                        "message": "switching over"}],
    },
}


def test_summary_reads_the_status_spec_and_pending_switchover() -> None:
    summary = plugin.summary_of(RESOURCE)
    assert summary["ready"] == {"status": "False", "reason": "Updating",
                                "message": "switching over"}
    assert (summary["phase"], summary["activePod"], summary["epoch"], summary["merges"]) == (
        "Updating", "id-server-0", 2, 1)
    assert (summary["mode"], summary["partitionPolicy"]) == ("Sync", "Fenced")
    assert summary["switchoverRequested"] == "id-server-1"


def test_pod_rows_prefer_the_live_active_and_mark_silent_pods_unreachable() -> None:
    pods = [_pod("id-server-0", "10.0.0.1"), _pod("id-server-1", "10.0.0.2"),
            _pod("id-server-2", None, ready=False, restarts=2)]
    replies = {
        "id-server-0": {"identity": "id-server-0", "role": "active", "epoch": 2,
                        "appliedSeq": 40,
                        "standbys": [{"identity": "id-server-1", "inSync": True, "lag": 3}]},
        "id-server-1": {"address": "10.0.0.2:50051", "error": "UNAVAILABLE: refused"},
    }
    rows = {row["pod"]: row for row in plugin.pod_rows(RESOURCE, pods, replies)}
    assert rows["id-server-0"] == {
        "pod": "id-server-0", "role": "active", "ready": True, "inSync": None, "lag": None,
        "appliedSeq": 40, "epoch": 2, "ip": "10.0.0.1", "restarts": 0,
    }
    # The live active's view (lag 3) wins over the operator's recorded one (lag 0).
    assert rows["id-server-1"]["role"] == "unreachable"
    assert (rows["id-server-1"]["inSync"], rows["id-server-1"]["lag"]) == (True, 3)
    assert rows["id-server-1"]["error"] == "UNAVAILABLE: refused"
    # Not among the live active's standbys: no sync state claimed.
    assert rows["id-server-2"]["role"] == "unreachable"
    assert (rows["id-server-2"]["inSync"], rows["id-server-2"]["restarts"]) == (None, 2)


def test_pod_rows_fall_back_to_the_recorded_status_without_a_live_active() -> None:
    pods = [_pod("id-server-1", "10.0.0.2"), _pod("id-server-2", "10.0.0.3")]
    replies = {
        "id-server-1": {"role": "standby", "epoch": 2, "appliedSeq": 5},
        "id-server-2": {"role": "joining", "epoch": 2, "appliedSeq": 1},
    }
    rows = plugin.pod_rows(RESOURCE, pods, replies)
    assert [(r["role"], r["inSync"], r["lag"]) for r in rows] == [
        ("standby", True, 0), ("joining", False, 9)]


def test_switchover_outcome() -> None:
    pending = {"metadata": {"annotations": {wellknown.SWITCHOVER_TO_ANNOTATION: "p-1"}},
               "status": {"activePod": "p-1"}}
    assert plugin.switchover_outcome(pending, "p-1") is None
    assert plugin.switchover_outcome({"metadata": {}, "status": {"activePod": "p-1"}}, "p-1")
    assert plugin.switchover_outcome({"metadata": {}, "status": {"activePod": "p-0"}},
                                     "p-1") is False


def test_command_line_takes_kubectl_style_flags() -> None:
    arguments = plugin.parser().parse_args(
        ["switchover", NAME, "--to", "id-server-2", "-n", "ns", "--context", "c",
         "--kubeconfig", "/k", "--wait", "--timeout", "5"])
    assert (arguments.command, arguments.name, arguments.to, arguments.namespace) == (
        "switchover", NAME, "id-server-2", "ns")
    assert (arguments.context, arguments.kubeconfig, arguments.wait, arguments.timeout) == (
        "c", "/k", True, 5.0)
    assert plugin.parser().parse_args(["status", NAME, "-o", "json"]).output == "json"


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "http://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: alpha
  context: {cluster: c, user: u, namespace: team-a}
- name: beta
  context: {cluster: c, user: u, namespace: team-b}
- name: plain
  context: {cluster: c, user: u}
current-context: alpha
"""


def test_namespace_defaults_to_the_chosen_contexts(tmp_path: Path) -> None:
    from gencluster.commands import CommandError, kubernetes_api

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    assert kubernetes_api(str(kubeconfig))[1] == "team-a"
    assert kubernetes_api(str(kubeconfig), "beta")[1] == "team-b"
    assert kubernetes_api(str(kubeconfig), "plain")[1] == "default"
    with pytest.raises(CommandError, match="cannot load kubeconfig"):
        kubernetes_api(str(kubeconfig), "missing")
    with pytest.raises(CommandError, match="cannot load kubeconfig"):
        kubernetes_api(str(tmp_path / "absent"))


def test_shared_names_agree_with_the_operator() -> None:
    assert wellknown.CLUSTER_LABEL == names.CLUSTER_LABEL
    assert wellknown.SWITCHOVER_TO_ANNOTATION == names.SWITCHOVER_TO_ANNOTATION
    assert wellknown.PEER_TOKEN_KEY == names.PEER_TOKEN_KEY
    assert wellknown.GRPC_PORT_NAME == names.GRPC_PORT_NAME
    assert wellknown.peer_token_secret_name("x") == names.peer_token_secret_name("x")
    assert (wellknown.CRD_GROUP, wellknown.CRD_VERSION, wellknown.CRD_PLURAL) == (
        names.GROUP, names.VERSION, names.PLURAL)


# -- end to end: the real kubectl runs the plugin -----------------------------------------------


@pytest.fixture(scope="module")
def id_server(dev_cluster: DevClusterProcess, operator: OperatorProcess) -> dict[str, Any]:
    """One id-server for the module: every test leaves it serving with all pods in sync."""
    if not (Path(VENV_BIN) / "kubectl-gencluster").exists():
        pytest.fail(f"no kubectl-gencluster in {VENV_BIN}: `pip install -e .` creates it")
    return start_id_server(dev_cluster, operator, NAMESPACE, DEADLINE)


def kubectl_gencluster(
    cluster: DevClusterProcess, *args: str, kubeconfig_flag: bool = False, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`kubectl gencluster ARGS` as a user runs it: the plugin found on PATH by kubectl, the
    kubeconfig from KUBECONFIG (or, with `kubeconfig_flag`, only from --kubeconfig)."""
    env = {**cluster.env(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if kubeconfig_flag:
        env.pop("KUBECONFIG")
        args = (*args, "--kubeconfig", str(cluster.kubeconfig))
    return subprocess.run([KUBECTL, "gencluster", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def in_sync(cluster: DevClusterProcess) -> dict[str, Any]:
    return wait_for(lambda: serving(cluster, NAMESPACE, NAME), DEADLINE,
                    message="id-server serving with every standby in sync")


def test_status_table_shows_one_active_and_two_in_sync_standbys(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any]
) -> None:
    active = in_sync(dev_cluster)["status"]["activePod"]
    result = kubectl_gencluster(dev_cluster, "status", NAME, "-n", NAMESPACE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Cluster Summary"
    assert f"Name:             {NAMESPACE}/{NAME}" in lines
    assert f"Active pod:       {active}" in lines
    assert "Ready:            True (Serving)" in lines
    rows = [line.split() for line in lines[lines.index("Pods") + 2:]]
    assert sorted(row[0] for row in rows) == [f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"]
    by_role: dict[str, list[list[str]]] = {}
    for row in rows:
        by_role.setdefault(row[1], []).append(row)
    assert [row[0] for row in by_role["active"]] == [active]
    assert len(by_role["standby"]) == 2
    for row in by_role["standby"]:
        assert row[2:5] == ["true", "true", "0"], row  # ready, in sync, no lag


def test_status_json_through_the_kubeconfig_flag(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any]
) -> None:
    resource = in_sync(dev_cluster)
    result = kubectl_gencluster(dev_cluster, "status", NAME, "-n", NAMESPACE, "-o", "json",
                                kubeconfig_flag=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cluster"]["activePod"] == resource["status"]["activePod"]
    assert report["cluster"]["phase"] == "Running"
    assert report["cluster"]["epoch"] == resource["status"]["epoch"]
    roles = sorted(pod["role"] for pod in report["pods"])
    assert roles == ["active", "standby", "standby"]
    assert all(pod["epoch"] == resource["status"]["epoch"] for pod in report["pods"])
    assert all(pod["inSync"] and pod["lag"] == 0 for pod in report["pods"]
               if pod["role"] == "standby")
    assert all(pod["ip"] and pod["ready"] for pod in report["pods"])


def test_state_is_the_id_server_state_after_calls(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any]
) -> None:
    in_sync(dev_cluster)
    values = [
        json.loads(dev_cluster.gencluster("call", NAME, '"next_value"', "-n", NAMESPACE).stdout)
        for _ in range(3)
    ]
    assert values == sorted(values) and len(set(values)) == 3
    result = kubectl_gencluster(dev_cluster, "state", NAME, "-n", NAMESPACE)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == values[-1]


def test_a_paused_pod_is_shown_unreachable_without_failing(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any]
) -> None:
    status = in_sync(dev_cluster)["status"]
    standby = status["standbys"][0]["pod"]
    dev_cluster.gencluster("dev", "fault", "--dir", str(dev_cluster.dir), "pause",
                           f"{NAMESPACE}/{standby}")
    try:
        result = kubectl_gencluster(dev_cluster, "status", NAME, "-n", NAMESPACE,
                                    "--timeout", "1")
    finally:
        dev_cluster.gencluster("dev", "fault", "--dir", str(dev_cluster.dir), "resume",
                               f"{NAMESPACE}/{standby}")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
            if line.startswith(f"{NAME}-")}
    assert rows[standby][1] == "unreachable"
    assert rows[status["activePod"]][1] == "active"
    in_sync(dev_cluster)


def test_switchover_wait_moves_the_active(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any]
) -> None:
    before = in_sync(dev_cluster)["status"]
    target = sorted(s["pod"] for s in before["standbys"])[-1]
    result = kubectl_gencluster(dev_cluster, "switchover", NAME, "--to", target, "-n",
                                NAMESPACE, "--wait", "--timeout", str(DEADLINE))
    assert result.returncode == 0, result.stderr
    assert f"{target} is the active pod" in result.stdout
    after = clustered_server(dev_cluster, NAMESPACE, NAME)
    assert after["status"]["activePod"] == target
    assert after["status"]["epoch"] > before["epoch"]
    assert wellknown.SWITCHOVER_TO_ANNOTATION not in (after["metadata"].get("annotations") or {})

    again = kubectl_gencluster(dev_cluster, "switchover", NAME, "--to", target, "-n", NAMESPACE)
    assert again.returncode == 0 and "already the active pod" in again.stdout


def test_switchover_to_a_pod_of_another_cluster_is_refused(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any]
) -> None:
    result = kubectl_gencluster(dev_cluster, "switchover", NAME, "--to", "other-0", "-n",
                                NAMESPACE, "--wait")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: 'other-0' is not a pod of ClusteredServer {NAMESPACE}/{NAME} "
        f"(its pods: {NAME}-0, {NAME}-1, {NAME}-2)"
    ]
    annotations = clustered_server(dev_cluster, NAMESPACE, NAME)["metadata"].get("annotations")
    assert wellknown.SWITCHOVER_TO_ANNOTATION not in (annotations or {})


@pytest.mark.parametrize("command", ["status", "state", "switchover"])
def test_an_unknown_cluster_is_one_clear_error(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any], command: str
) -> None:
    extra = ["--to", "x-0"] if command == "switchover" else []
    result = kubectl_gencluster(dev_cluster, command, "no-such-server", "-n", NAMESPACE, *extra)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: ClusteredServer 'no-such-server' not found in namespace '{NAMESPACE}'"
    ]


def test_backup_writes_the_actives_export_and_restore_refuses_a_serving_cluster(
    dev_cluster: DevClusterProcess, id_server: dict[str, Any], tmp_path: Path
) -> None:
    """Backup against the real runtime's Admin.ExportState. Restore is checked only up to the
    plugin's own refusal (a serving cluster without --force): the runtime's Restore is tested
    with the runtime."""
    from gencluster.backup import read_backup
    from gencluster.codec import get_codec

    resource = in_sync(dev_cluster)
    dev_cluster.gencluster("call", NAME, '"next_value"', "-n", NAMESPACE)
    path = tmp_path / "id-server.backup"
    result = kubectl_gencluster(dev_cluster, "backup", NAME, "-n", NAMESPACE, "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert f"taken from {resource['status']['activePod']}" in result.stdout
    header, chunks = read_backup(path.read_bytes())
    assert (header.cluster, header.namespace) == (NAME, NAMESPACE)
    assert header.server == resource["spec"]["server"]
    assert header.applied_seq >= 1 and header.epoch >= resource["status"]["epoch"]
    state = b"".join(c.state for c in chunks if c.WhichOneof("part") == "state")
    get_codec(header.codec).decode(state, what="state", bounded=False)

    refused = kubectl_gencluster(dev_cluster, "restore", NAME, str(path), "-n", NAMESPACE)
    assert refused.returncode == 1
    assert "is active and serves the cluster's state" in refused.stderr
    assert "--force" in refused.stderr
    assert in_sync(dev_cluster)["status"]["epoch"] == resource["status"]["epoch"]
