"""The standby side of replication: find the active, join by snapshot when needed, apply its
entries in order and acknowledge them.

One `Follower` per process. It runs while the node's role follows (`Joining`/`Standby`), one
stream at a time: to the address an `Admin.Demote` named (`roles.follow_override`), else to
the Lease holder's pod. It refuses any batch or snapshot from an epoch lower than the highest
this replica has seen (a deposed active), and reports what happened to its `FollowerHost`
(the node), which turns the reports into role events; it never changes the node's state
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import grpc

from gencluster.journal import Journal
from gencluster.leases import KubernetesApi, KubernetesError
from gencluster.log import LogError, Snapshot
from gencluster.machine import RestoreDowngradeRefused
from gencluster.node_config import NodeConfig, host_port
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.replica import Replica
from gencluster.replication import (
    GRPC_CHANNEL_OPTIONS,
    HighestEpoch,
    StaleEpochRejected,
    peer_metadata,
)
from gencluster.server import GenServer
from gencluster.tls import peer_channel
from gencluster.versions import DowngradeRefused, downgrade_refusal
from gencluster.wakeups import set_within
from gencluster.wire import entry_from_message, snapshot_from_chunks

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.05
"""Seconds before reconnecting after a stream ended; doubles up to half a retry period."""


class FollowerHost(Protocol):
    """What the follower asks of, and reports to, the replica it belongs to."""

    server: GenServer
    """The replica's server class instance: its `version` decides what it may follow."""

    def follows(self) -> bool: ...

    def follow_override(self) -> str | None: ...

    def lease_holder(self) -> str:
        """The holder named by the last Lease read ("" if none, or this replica)."""
        ...

    @property
    def replica(self) -> Replica | None: ...

    def joined(self, snapshot: Snapshot) -> Replica:
        """Make `snapshot` this replica's state; returns the new replica."""
        ...

    def snapshot_needed(self) -> None: ...

    def batch_applied(self, source: str, caught_up: bool) -> None: ...

    def source_refused(self, address: str) -> None: ...

    def stream_ended(self) -> None: ...

    def version_refused(self, reason: str) -> None:
        """The active's state or entries are of a newer server class version than this
        replica's, which does not accept downgrades ("" once it follows again)."""
        ...

    def holder_located(self, holder: str, address: str) -> None: ...


class Follower:
    """The follow loop and its one stream at a time; owns what only the standby side needs
    (whether a snapshot is due, the pods' addresses, the back-off's wake-up)."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        api: KubernetesApi,
        host: FollowerHost,
        epochs: HighestEpoch,
        journal: Journal | None = None,
    ) -> None:
        """`journal`: with persistence, an entry is acknowledged only once it is on disk."""
        self._journal = journal
        self._config = config
        self._api = api
        self._host = host
        self._epochs = epochs
        self._metadata = peer_metadata(config.peer_token)
        self._silence_limit = config.heartbeat_interval * 4
        self._task: asyncio.Task[None] | None = None
        self._stream: asyncio.Task[None] | None = None
        self._needs_snapshot = False
        self._pod_addresses: dict[str, str] = {}
        self._holder_changed = asyncio.Event()
        """Set when a Lease read names a new holder: ends the back-off at once, so a standby
        that was retrying a dead active connects to its successor without waiting out a
        back-off grown while the old holder was unreachable."""

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow_loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def retarget(self) -> None:
        """Drop the current stream, or end the back-off between two (not the loop): the next
        stream goes where the node's follow override now points, at once."""
        self._holder_changed.set()
        if self._stream is not None:
            self._stream.cancel()

    def holder_changed(self) -> None:
        self._holder_changed.set()

    def forget_snapshot_need(self) -> None:
        """This replica's state became the reference (it took the Lease)."""
        self._needs_snapshot = False

    async def _follow_loop(self) -> None:
        retry_period = self._config.election.retry_period
        backoff = FIRST_BACKOFF
        while self._host.follows():
            self._holder_changed.clear()  # from here on, a new holder ends the back-off below
            address = self._host.follow_override() or await self._active_address()
            if not address:
                await set_within(self._holder_changed, retry_period / 2)
                continue
            self._stream = asyncio.create_task(self._stream_from(address))
            try:
                await self._stream
                backoff = FIRST_BACKOFF
            except StaleEpochRejected as error:
                log.warning("%s", error)
                self._host.source_refused(address)
            except (DowngradeRefused, RestoreDowngradeRefused) as error:
                # Kept as this replica's status (the operator's DowngradeRefused) and retried
                # at the slowest pace: the active may be replaced by one this class can follow.
                log.error("not following %s: %s", address, error)
                self._host.version_refused(str(error))
                backoff = retry_period / 2
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the loop itself is stopped
                self._host.stream_ended()  # `retarget`: the next stream goes elsewhere
                continue
            except Exception as error:
                # The holder's pod may have been recreated with another IP: list pods again.
                self._pod_addresses.clear()
                log.info("replication from %s ended: %s", address, _describe(error))
            finally:
                self._stream = None
            self._host.stream_ended()
            if await set_within(self._holder_changed, backoff):
                backoff = FIRST_BACKOFF
            else:
                backoff = min(backoff * 2, retry_period / 2)

    async def _active_address(self) -> str:
        """The Lease holder's `podIP:port`, from the pod list (no DNS on the dev cluster)."""
        holder = self._host.lease_holder()
        if not holder:
            return ""
        address = self._pod_addresses.get(holder)
        if address is None:
            try:
                pods = await self._api.list_pods(self._config.pod_selector)
            except KubernetesError as error:
                log.warning("cannot list pods: %s", error)
                return ""
            self._pod_addresses = {
                pod.name: host_port(pod.ip, self._config.port) for pod in pods if pod.ip
            }
            address = self._pod_addresses.get(holder, "")
        self._host.holder_located(holder, address)
        return address

    async def _stream_from(self, address: str) -> None:
        """Replicate from the active at `address` until the stream ends.

        Returns normally when the stream ends or the active asks for a snapshot (the loop
        reconnects); raises `StaleEpochRejected` for a deposed active's stream.
        """
        silence_limit = self._silence_limit
        async with peer_channel(self._config.tls, address, GRPC_CHANNEL_OPTIONS) as channel:
            # A paused (SIGSTOPped) active still accepts TCP connections in the kernel but
            # never completes the HTTP/2 handshake: without this bound the first write waits
            # for gRPC's 20 s connect timeout, and meanwhile this standby neither follows the
            # new Lease holder nor acknowledges its entries (Sync writes stall for those 20 s).
            try:
                # asyncio.timeout, not wait_for: this task is cancelled when the replica takes
                # the Lease, and 3.11's wait_for can swallow that cancellation (set_within).
                async with asyncio.timeout(silence_limit):
                    await _connected(channel)
            except TimeoutError:
                # Raised, not returned: the follow loop then also forgets the pods'
                # addresses, since the holder may be a re-created pod with a new IP
                # (returning kept retrying the old one: a Sync cluster stalled after a
                # graceful handover).
                raise ConnectionError(
                    f"no HTTP/2 connection to {address} within {silence_limit:.1f}s"
                ) from None
            stub = pb_grpc.PeerStub(channel)
            replica = self._host.replica
            if replica is None or self._needs_snapshot:
                replica = await self._join(stub)
            if self._journal is not None:
                # The Hello's position counts as acknowledged: it must be on disk first.
                await self._journal.wait_durable(replica.applied_seq)
            call = stub.Replicate(metadata=self._metadata)
            applied = asyncio.Event()
            acker = asyncio.create_task(self._send_acks(replica, call, applied))
            try:
                await call.write(pb.ReplicateUp(hello=self._hello(replica)))
                await self._apply_batches(address, replica, call, applied, acker)
            finally:
                acker.cancel()
                call.cancel()

    def _hello(self, replica: Replica) -> pb.Hello:
        return pb.Hello(
            identity=self._config.identity,
            address=self._config.advertise_address,
            epoch=self._epochs.value,
            applied_seq=replica.applied_seq,
            applied_epoch=replica.applied_epoch,
        )

    async def _apply_batches(
        self,
        address: str,
        replica: Replica,
        call: grpc.aio.StreamStreamCall,
        applied: asyncio.Event,
        acker: asyncio.Task[None],
    ) -> None:
        # The active sends at least a heartbeat every heartbeat_interval: after four of
        # silence the stream is dead. One timer for the whole stream, pushed back (at most
        # every quarter limit) as messages arrive, rather than a timeout (a task and a timer)
        # around every read: the silence tolerated is 1 to 1.25 limits.
        silence_limit = self._silence_limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + silence_limit * 1.25
        async with asyncio.timeout_at(deadline) as silence:
            while self._host.follows():
                message = await call.read()
                now = loop.time()
                if now + silence_limit > deadline:
                    deadline = now + silence_limit * 1.25
                    silence.reschedule(deadline)
                if message is grpc.aio.EOF:
                    return
                if message.WhichOneof("message") == "need_snapshot":
                    log.info("the active asks for a snapshot: %s", message.need_snapshot.reason)
                    self._snapshot_needed()
                    return
                batch = message.entries
                if batch.epoch < self._epochs.value:
                    raise StaleEpochRejected(
                        f"replication from {address} at epoch {batch.epoch} refused: this "
                        f"replica has seen epoch {self._epochs.value}"
                    )
                self._epochs.saw(batch.epoch)
                refusal = downgrade_refusal(
                    replica.machine.server, batch.server_version, "the active's log"
                )
                if refusal is not None:
                    raise DowngradeRefused(refusal)
                try:
                    for entry in batch.entries:
                        replica.receive(entry_from_message(entry))
                except LogError as error:
                    log.warning("entry refused (%s); joining again by snapshot", error)
                    self._snapshot_needed()
                    return
                self._host.version_refused("")
                self._host.batch_applied(address, replica.applied_seq >= batch.last_seq)
                applied.set()
                if acker.done():
                    acker.result()  # the ack direction failed: end this stream
                    return

    def _snapshot_needed(self) -> None:
        self._needs_snapshot = True
        self._host.snapshot_needed()

    async def _send_acks(
        self, replica: Replica, call: grpc.aio.StreamStreamCall, applied: asyncio.Event
    ) -> None:
        """Acknowledge cumulatively, off the receiving path: batches applied while an ack is
        being written are covered by the next one (one ack for many batches under load)."""
        acknowledged = replica.applied_seq
        while True:
            await applied.wait()
            applied.clear()
            seq = replica.applied_seq
            if self._journal is not None and seq != acknowledged:
                await self._journal.wait_durable(seq)
            if seq != acknowledged:
                ack = pb.Ack(epoch=self._epochs.value, applied_seq=seq)
                await call.write(pb.ReplicateUp(ack=ack))
                acknowledged = seq

    async def _join(self, stub: pb_grpc.PeerStub) -> Replica:
        """Stream a snapshot from the active and make it this replica's state."""
        self._host.snapshot_needed()
        request = pb.SnapshotRequest(identity=self._config.identity, epoch=self._epochs.value)
        call = stub.Snapshot(request, metadata=self._metadata)
        chunks: list[pb.SnapshotChunk] = []
        try:
            async for chunk in call:
                if not chunks and chunk.WhichOneof("part") == "header":
                    # Refused on the header, before the state is streamed: the follow loop
                    # retries, and a large state would otherwise be sent for nothing each time.
                    refusal = downgrade_refusal(
                        self._host.server, chunk.header.server_version, "the active's snapshot"
                    )
                    if refusal is not None:
                        raise DowngradeRefused(refusal)
                chunks.append(chunk)
        finally:
            call.cancel()
        snapshot, epoch = snapshot_from_chunks(chunks)
        if epoch < self._epochs.value:
            raise StaleEpochRejected(
                f"snapshot at epoch {epoch} refused: this replica has seen epoch "
                f"{self._epochs.value}"
            )
        self._epochs.saw(epoch)
        replica = self._host.joined(snapshot)
        self._needs_snapshot = False
        log.info("joined by snapshot at seq %d (epoch %d)", snapshot.applied_seq, epoch)
        return replica


async def _connected(channel: grpc.aio.Channel) -> None:
    """Return once `channel` is connected; raise `ConnectionError` at the first failed
    attempt (a refused connection: nobody listens there any more, typically the old address
    of a re-created pod), so the follow loop looks the holder's address up again at once
    instead of waiting out the silence limit (which delayed Sync writes on the new active
    by seconds after a handover)."""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise ConnectionError("connection failed")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _describe(error: BaseException) -> str:
    """One line for logs (an AioRpcError's own text spans several)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
