"""`gencluster run` validates its whole configuration first (docs/runtime-config.md): anything
invalid exits with 78 and a last stderr line naming the variable."""

from __future__ import annotations

import os
import subprocess

import pytest
from gencluster.run import EX_CONFIG, main
from gencluster_testing.devcluster_process import GENCLUSTER

pytestmark = pytest.mark.integration

VALID = {
    "POD_NAME": "ids-0",
    "POD_NAMESPACE": "default",
    "POD_IP": "127.0.0.1",
    "GENCLUSTER_SERVER": "gencluster_examples.id_server:IdServer",
    "GENCLUSTER_CLUSTER": "ids",
    "GENCLUSTER_LEASE_NAME": "ids",
    "GENCLUSTER_PEER_TOKEN": "t" * 32,
    "GENCLUSTER_LEASE_DURATION_SECONDS": "3",
    "GENCLUSTER_RENEW_DEADLINE_SECONDS": "2",
    "GENCLUSTER_RETRY_PERIOD_SECONDS": "1",
}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"POD_NAME": None}, "POD_NAME is required"),
        ({"POD_IP": "not-an-ip"}, "POD_IP must be an IPv4 or IPv6 address"),
        ({"GENCLUSTER_LISTEN_HOST": "0.0.0.0"}, "GENCLUSTER_LISTEN_HOST must not be 0.0.0.0"),
        ({"GENCLUSTER_PEER_TOKEN": "short"}, "GENCLUSTER_PEER_TOKEN is required, at least 32"),
        ({"GENCLUSTER_ARGS": "{nope"}, "GENCLUSTER_ARGS is not valid JSON"),
        ({"GENCLUSTER_PORT": "70000"}, "GENCLUSTER_PORT must be between 1 and 65535"),
        ({"GENCLUSTER_REPLICATION_MODE": "Fast"}, "GENCLUSTER_REPLICATION_MODE must be Sync"),
        ({"GENCLUSTER_PARTITION_POLICY": "Maybe"}, "GENCLUSTER_PARTITION_POLICY must be Fenced"),
        ({"GENCLUSTER_RENEW_DEADLINE_SECONDS": "3"}, "lease.durationSeconds (3) must be at least"),
        ({"GENCLUSTER_RETRY_PERIOD_SECONDS": "1.5"}, "GENCLUSTER_RETRY_PERIOD_SECONDS must be an"),
        ({"GENCLUSTER_SERVER": "no_such_module:Server"},
         "GENCLUSTER_SERVER: module 'no_such_module' not found"),
        ({"GENCLUSTER_SERVER": "gencluster_examples.id_server:Missing"},
         "GENCLUSTER_SERVER: module 'gencluster_examples.id_server' has no attribute"),
        ({"KUBECONFIG": "/nonexistent/kubeconfig"}, "KUBECONFIG /nonexistent/kubeconfig is not"),
    ],
)
def test_invalid_configuration_exits_78_naming_the_variable(
    changes: dict[str, str | None],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in [*VALID, "GENCLUSTER_LISTEN_HOST", "KUBECONFIG", "GENCLUSTER_ARGS"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in {**VALID, **changes}.items():
        if value is not None:
            monkeypatch.setenv(key, value)
    assert main([]) == EX_CONFIG
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert named in last_line


def test_flags_win_over_variables_and_the_cli_dispatches_run(tmp_path: os.PathLike[str]) -> None:
    environment = {**os.environ, **VALID, "GENCLUSTER_PORT": "50051"}
    environment.pop("KUBECONFIG", None)
    result = subprocess.run(
        [GENCLUSTER, "run", "--port", "0"],
        env=environment, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == EX_CONFIG
    assert "GENCLUSTER_PORT must be between 1 and 65535, got 0" in result.stderr.splitlines()[-1]
