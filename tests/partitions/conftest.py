"""Fixtures of the partition tests: one dev cluster and one operator per module (shared by its
tests, each in a namespace of its own), and a fault-healing guard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess


@pytest.fixture
def healed(dev_cluster: DevClusterProcess) -> Iterator[None]:
    """Remove every nftables rule of the instance after the test, whatever happened."""
    yield
    dev_cluster.gencluster("dev", "fault", "--dir", str(dev_cluster.dir), "heal", check=False)
