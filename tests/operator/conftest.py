"""Fixtures of the operator's end-to-end tests: an operator process beside each module's dev
cluster, and the example id-server applied in a namespace of the test's own."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess, namespace_for, start_id_server

ID_SERVER_DEADLINE = 60.0


@pytest.fixture
def id_server(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """`examples/id-server.yaml` applied in a fresh namespace and serving."""
    return start_id_server(
        dev_cluster, operator, namespace_for(request.node.name), ID_SERVER_DEADLINE
    )
