"""A running `gencluster dev up` as a real subprocess, for end-to-end tests.

Tests talk to it only the way users do: the kubeconfig it writes, the real `kubectl`, the
`kubernetes` client, and `gencluster dev fault`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gencluster_testing.waiting import wait_for

GENCLUSTER = str(Path(sys.executable).parent / "gencluster")
KUBECTL = "kubectl"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

class DevClusterProcess:
    """Starts `gencluster dev up --dir DIR`, waits for its kubeconfig, stops it on exit."""

    def __init__(self, directory: Path, *extra: str, operator: bool = False) -> None:
        """`operator=False` runs the control plane alone (`--no-operator`), for tests that start
        their own operator or none."""
        self.dir = directory
        self.kubeconfig = directory / "kubeconfig"
        self.log_path = directory.parent / f"{directory.name}-up.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [GENCLUSTER, "dev", "up", "--dir", str(directory), *extra]
        if not operator:
            command.append("--no-operator")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._started, START_TIMEOUT, message="gencluster dev up to write kubeconfig")
        except BaseException:
            self.stop()
            raise

    def _started(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"gencluster dev up exited with {self.process.returncode}:\n{self.output()}"
            )
        return self.kubeconfig.exists()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def instance(self) -> dict[str, Any]:
        return json.loads((self.dir / "instance.json").read_text())

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def gencluster(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [GENCLUSTER, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"gencluster {' '.join(args)} failed:\n{result.stderr}")
        return result

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig))

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode
