"""A handover write whose answer is lost (#19): against the local control plane's real API
server, the active must learn from the Lease whether its write landed, and never resume writes
on a guess (the target takes over as soon as it reads the Lease: that would be two actives).

What cannot be made to happen on cue with real sockets is the loss of one particular answer:
`LostAnswers` wraps the real API client and, for the Lease writes it is told to, sends the
request for real (the API server applies it) and then raises what a timed-out request raises,
or raises before sending (a request that never left). Every read and every write reaches the
real API server; only the answers named are thrown away.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import pytest
from gencluster.election import LeaseRecord, handover, lease_patch
from gencluster.handover import Handover, HandoverHost
from gencluster.leases import KubernetesApi, KubernetesError, load_configuration
from gencluster.node_config import NodeConfig
from gencluster_testing.devcluster_process import DevClusterProcess

pytestmark = pytest.mark.integration

ME, TARGET = "ho-0", "ho-1"


class LostAnswers(KubernetesApi):
    """The real API client, losing the answers of the Lease writes `plan` names: "after" sends
    the write and loses its answer, "before" fails it without sending, "ok" passes it."""

    def __init__(self, *args: Any, plan: list[str], reads_fail_after_loss: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.reads_fail_after_loss = reads_fail_after_loss
        self.lost = False

    async def update_lease(
        self, name: str, current: dict[str, Any], record: LeaseRecord
    ) -> tuple[LeaseRecord, dict[str, Any]]:
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "before":
            raise KubernetesError(0, "PUT lease: TimeoutError: timed out (never sent)")
        result = await super().update_lease(name, current, record)
        if step == "after":
            self.lost = True
            raise KubernetesError(0, "PUT lease: TimeoutError: timed out (answer lost)")
        return result

    async def get_lease(self, name: str) -> tuple[LeaseRecord, dict[str, Any]]:
        if self.lost and self.reads_fail_after_loss:
            raise KubernetesError(0, "GET lease: ClientConnectorError: unreachable")
        return await super().get_lease(name)


class Config:
    """The two NodeConfig fields a Handover's Lease writes read."""

    def __init__(self, lease_name: str) -> None:
        self.lease_name = lease_name
        self.identity = ME


def put_lease(dev: DevClusterProcess, name: str) -> LeaseRecord:
    record = LeaseRecord(holder=ME, lease_duration_seconds=4, renew_time=None, transitions=7,
                         in_sync=(TARGET,))
    patch = lease_patch(record)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name, "namespace": "default", **patch["metadata"]},
             "spec": {k: v for k, v in patch["spec"].items() if v is not None}}
    dev.kubectl("delete", "lease", name, "--ignore-not-found")
    dev.kubectl("create", "-f", "-", input=json.dumps(lease))
    return record


def lease_now(dev: DevClusterProcess, name: str) -> tuple[str, int]:
    lease = json.loads(dev.kubectl("get", "lease", name, "-o", "json").stdout)
    return lease["spec"].get("holderIdentity", ""), int(lease["spec"]["leaseTransitions"])


def write_handover(dev: DevClusterProcess, name: str, **api_options: Any) -> LeaseRecord | None:
    async def scenario() -> LeaseRecord | None:
        api = LostAnswers(load_configuration(str(dev.kubeconfig)), namespace="default",
                          request_timeout=5, **api_options)
        try:
            shell = Handover(config=cast(NodeConfig, Config(name)), api=api,
                             host=cast(HandoverHost, None))
            return await shell._write(TARGET, time.monotonic() + 3)
        finally:
            await api.close()

    return asyncio.run(scenario())


def test_a_handover_whose_answer_was_lost_is_found_landed_and_not_written_twice(
    dev_cluster: DevClusterProcess,
) -> None:
    put_lease(dev_cluster, "lost-after")
    written = write_handover(dev_cluster, "lost-after", plan=["after"])
    assert written is not None, "a landed handover was taken for a failed one: writes resume"
    assert (written.holder, written.transitions) == (TARGET, 8)
    assert lease_now(dev_cluster, "lost-after") == (TARGET, 8)


def test_a_handover_that_never_left_is_written_once_more(
    dev_cluster: DevClusterProcess,
) -> None:
    put_lease(dev_cluster, "lost-before")
    written = write_handover(dev_cluster, "lost-before", plan=["before"])
    assert written is not None and (written.holder, written.transitions) == (TARGET, 8)
    assert lease_now(dev_cluster, "lost-before") == (TARGET, 8)


def test_a_handover_whose_outcome_cannot_be_learned_is_presumed_done(
    dev_cluster: DevClusterProcess,
) -> None:
    """The API server unreachable right after the write: writes must stay stopped (the
    presumed handover), since the target may already serve."""
    mine = put_lease(dev_cluster, "lost-unknown")
    written = write_handover(dev_cluster, "lost-unknown", plan=["after"],
                             reads_fail_after_loss=True)
    expected = handover(mine, ME, TARGET, time.time())
    assert written is not None
    assert (written.holder, written.transitions) == (expected.holder, expected.transitions)
    assert lease_now(dev_cluster, "lost-unknown") == (TARGET, 8)
