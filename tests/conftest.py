"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess


@pytest.fixture
def start_dev_cluster(tmp_path: Path) -> Iterator[Callable[..., DevClusterProcess]]:
    """Start `gencluster dev up` instances for one test; every one is stopped afterwards."""
    started: list[DevClusterProcess] = []

    def start(*extra: str, name: str = "dev", operator: bool = False) -> DevClusterProcess:
        cluster = DevClusterProcess(
            tmp_path / name, "--restart-backoff", "0.5", *extra, operator=operator
        )
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture(scope="module")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    """One `gencluster dev up` shared by a test module."""
    cluster = DevClusterProcess(
        tmp_path_factory.mktemp("devcluster") / "dev", "--restart-backoff", "0.5"
    )
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def operator(dev_cluster: DevClusterProcess) -> Iterator[OperatorProcess]:
    """One operator process for a module's shared dev cluster (started `--no-operator`, so the
    test owns the operator's lifetime and can read its output)."""
    process = OperatorProcess(dev_cluster)
    yield process
    process.stop()
