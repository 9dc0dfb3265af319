"""What a person does first when a pod misbehaves, against the example id-server on the local
control plane: `kubectl exec` into a replica, and `kubectl port-forward pod/id-server-0` with
`gencluster call --address` through the forwarded port."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gencluster_testing.devcluster_process import KUBECTL, DevClusterProcess
from gencluster_testing.operator_process import cluster_tls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_exec_into_a_replica_returns_the_commands_exit_code(
        dev_cluster: DevClusterProcess, id_server: dict[str, Any]) -> None:
    namespace = id_server["metadata"]["namespace"]
    result = dev_cluster.kubectl("exec", "-n", namespace, "id-server-0", "--", "sh", "-c",
                                 'echo "pod=$POD_NAME"; exit 7', check=False)
    assert result.returncode == 7, result.stderr
    assert "command terminated with exit code 7" in result.stderr
    env = dev_cluster.kubectl("exec", "-n", namespace, "id-server-0", "--", "env").stdout
    assert "KUBECONFIG=" in env  # the container's own environment, not the plane's


def test_call_through_a_forwarded_port(
        dev_cluster: DevClusterProcess, id_server: dict[str, Any], tmp_path: Path) -> None:
    namespace = id_server["metadata"]["namespace"]
    forward = subprocess.Popen(
        [KUBECTL, "port-forward", "-n", namespace, "pod/id-server-0", ":50051"],
        env=dev_cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 50051", line)
        assert match, line
        address = f"127.0.0.1:{match.group(1)}"
        # TLS through the tunnel: the cluster's bundle from its CA Secret, the client
        # Service's name verified (the forwarded address is not on the certificate).
        tls = cluster_tls(dev_cluster, namespace, "id-server")
        assert tls is not None
        ca_file = tmp_path / "ca.crt"
        ca_file.write_bytes(tls.root_certificates)
        values = [json.loads(dev_cluster.gencluster(
            "call", "--address", address, '"next_value"', "--ca-file", str(ca_file),
            "--server-name", str(tls.server_name)).stdout) for _ in range(3)]
        assert values == sorted(values) and len(set(values)) == 3, values
    finally:
        forward.terminate()
        output, _ = forward.communicate(timeout=20)
    assert "Handling connection for" in output, output
