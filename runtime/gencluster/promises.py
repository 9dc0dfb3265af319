"""The active's side of failsafe for one term: ask every pod that could take the Lease over
for a promise (`Peer.Promise`) while a renewal is overdue, and keep what they granted.

The rules are `failsafe.py`'s; this shell only sends the requests, with the send time taken
*before* each request leaves (the timing rule counts from it), and records the answers. It
asks every `retry_period / 4` while `failsafe.wants_promises`, so a promise of
`renew_deadline` is renewed several times before it runs out, and one lost answer costs
nothing. A pod that does not answer within a retry period simply grants nothing: the active
then stops serving once its last promise from that pod runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import grpc

from gencluster import failsafe
from gencluster.failsafe import Promises
from gencluster.node_config import NodeConfig
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.replication import GRPC_CHANNEL_OPTIONS, peer_metadata
from gencluster.roles import Active, Role
from gencluster.tls import peer_channel, tls_stamp

log = logging.getLogger(__name__)

ASKS_PER_RETRY_PERIOD = 4
"""How often per retry period the active renews its promises while a renewal is overdue."""


class PromiseHost(Protocol):
    """What the collector reads from the node."""

    @property
    def role(self) -> Role: ...

    def failsafe_candidates(self) -> frozenset[str]:
        """The pods the Lease may name as in sync (the active excluded)."""
        ...

    def standby_address(self, member: str) -> str | None:
        """Where `member` listens (host:port), known while it streams from this active."""
        ...


class PromiseCollector:
    """Promises granted to this active for its term at `epoch`."""

    def __init__(self, *, config: NodeConfig, host: PromiseHost, epoch: int) -> None:
        self._config = config
        self._host = host
        self.epoch = epoch
        self.promises = Promises()
        self._metadata = peer_metadata(config.peer_token)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stamps: dict[str, object] = {}
        self._asking: set[asyncio.Task[None]] = set()

    def failsafe_until(self) -> float | None:
        """Until when every pod that could take over has promised (None: no failsafe)."""
        return self.promises.failsafe_until(self._host.failsafe_candidates())

    def _leads(self) -> bool:
        role = self._host.role
        return isinstance(role, Active) and role.epoch == self.epoch

    async def run(self) -> None:
        """Ask while this term lasts; close the channels at its end."""
        config = self._config.election
        try:
            while self._leads():
                role = self._host.role
                assert isinstance(role, Active)
                if failsafe.wants_promises(role.leadership, time.monotonic(), config):
                    members = self._host.failsafe_candidates()
                    for member in members:
                        task = asyncio.create_task(self._ask(member))
                        self._asking.add(task)
                        task.add_done_callback(self._asking.discard)
                    for address in set(self._channels) - {
                        self._host.standby_address(m) for m in members
                    }:
                        await self._channels.pop(address).close()
                await asyncio.sleep(config.retry_period / ASKS_PER_RETRY_PERIOD)
        finally:
            for task in self._asking:
                task.cancel()
            for channel in self._channels.values():
                with contextlib.suppress(Exception):
                    await channel.close()
            self._channels.clear()

    async def _ask(self, member: str) -> None:
        address = self._host.standby_address(member)
        if not address:
            return
        channel = self._channels.get(address)
        stamp = tls_stamp(self._config.tls)
        if channel is not None and self._stamps.get(address) != stamp:
            # A renewed certificate: a new channel presents it (the old one would offer the
            # old certificate at its next reconnection, expired in time).
            self._channels.pop(address)
            await channel.close()
            channel = None
        if channel is None:
            channel = peer_channel(self._config.tls, address, GRPC_CHANNEL_OPTIONS)
            self._channels[address] = channel
            self._stamps[address] = stamp
        stub = pb_grpc.PeerStub(channel)
        config = self._config.election
        sent_at = time.monotonic()
        try:
            reply = await stub.Promise(
                pb.PromiseRequest(identity=self._config.identity, epoch=self.epoch),
                metadata=self._metadata,
                timeout=config.retry_period,
            )
        except grpc.aio.AioRpcError as error:
            log.debug("no promise from %s: %s", member, error.code().name)
            # A fresh channel next time: one left in gRPC's reconnect backoff (up to two
            # minutes) would keep asking nothing long after a partition healed.
            lost = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if error.code() in lost and self._channels.get(address) is channel:
                del self._channels[address]
                await channel.close(grace=None)
            return
        if not self._leads():
            return
        if reply.granted:
            self.promises = self.promises.granted(member, sent_at, reply.seconds)
        else:
            log.info("%s refused its promise: %s", member, reply.reason)
