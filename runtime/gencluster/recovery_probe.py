"""The shell of whole-cluster recovery: ask every peer's position, then `recovery.recover`.

A replica whose state came from its volume (and that has neither led nor followed an active
since) asks, before each attempt to take a free or expired Lease, every pod of the cluster for
its `Admin.Status` (`applied_epoch`, `applied_seq`); a pod that does not answer within the
time budget, or holds no state, counts as unreachable. The verdict is logged when it changes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from gencluster import recovery
from gencluster.election import LeaseRecord
from gencluster.leases import KubernetesApi, KubernetesError
from gencluster.node_config import NodeConfig, host_port
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.replication import peer_metadata
from gencluster.tls import peer_channel

log = logging.getLogger(__name__)


class RecoveryProbe:
    """Asks the peers, remembers since when (its patience is one lease duration)."""

    def __init__(self, config: NodeConfig, api: KubernetesApi) -> None:
        self._config = config
        self._api = api
        self._started: float | None = None
        self._last: str = ""

    async def verdict(self, record: LeaseRecord, mine: recovery.Position) -> recovery.Verdict:
        config = self._config
        now = time.monotonic()
        if self._started is None:
            self._started = now
        try:
            pods = await self._api.list_pods(config.pod_selector)
        except KubernetesError as error:
            log.warning("cannot list pods for recovery: %s", error)
            pods = []
        peers = {pod.name: pod.ip for pod in pods if pod.name != config.identity}
        answers = await asyncio.gather(*(self._position(ip) for ip in peers.values()))
        verdict = recovery.recover(
            config.identity,
            mine,
            in_sync=record.in_sync,
            replicas=tuple(peers),
            peers=dict(zip(peers, answers, strict=True)),
            waited=now - self._started,
            patience=float(config.election.lease_duration),
            strict=config.mode.value == "Sync",
        )
        text = f"{type(verdict).__name__}: {verdict.reason}"
        if text != self._last:
            log.warning("whole-cluster recovery at %s: %s", _show(mine), text)
            self._last = text
        return verdict

    async def _position(self, ip: str) -> recovery.Position | None:
        if not ip:
            return None
        timeout = max(0.2, self._config.election.retry_period / 2)
        address = host_port(ip, self._config.port)
        try:
            async with peer_channel(self._config.tls, address) as channel:
                reply: pb.StatusReply = await pb_grpc.AdminStub(channel).Status(
                    pb.StatusRequest(),
                    metadata=peer_metadata(self._config.peer_token),
                    timeout=timeout,
                )
        except grpc.aio.AioRpcError:
            return None
        if reply.state_lost or (reply.applied_seq == 0 and reply.role == pb.ROLE_JOINING):
            return None
        return recovery.Position(reply.applied_epoch, reply.applied_seq)


def _show(position: recovery.Position) -> str:
    return f"(epoch {position.epoch}, seq {position.seq})"
