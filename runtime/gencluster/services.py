"""The gRPC surface of a runtime: Client, Peer and Admin servicers, health and reflection.

Each servicer is a thin translation between protobuf and the node: the decisions (is this a
duplicate? may this replica answer? which entries does a standby need?) are made by the core
(`Replica`, `AckTracker`, `election`, `roles`) through `Node`. Calls, casts and merges take one
path, `Node.submit` (`Term.submit`), whose typed errors are translated here. Error mapping, so
clients can tell what to do without parsing messages:

- not the (serving) active: UNAVAILABLE, with trailing metadata `gencluster-active-address`
  when the active is known (retry there, with the same request id);
- undecodable request, codec mismatch: INVALID_ARGUMENT (nothing changed);
- request over the codec's size limit: RESOURCE_EXHAUSTED (nothing changed);
- a field over its bound or in the wrong format (`limits`: a request id over 256 bytes or in
  the operator's reserved namespace, a topic, an identity, a pause): INVALID_ARGUMENT naming
  the field (nothing changed);
- a request id the reply table holds for a different request (method or payload):
  FAILED_PRECONDITION "request id reused with a different request", with trailing metadata
  `gencluster-refusal: request-id-reused` (nothing changed);
- a retry whose request id is older than the reply table remembers (its
  `first_attempt_unix_ms` before the table's horizon): FAILED_PRECONDITION (nothing changed;
  it may or may not have been applied, so the client must not retry it blindly);
- the handler raised, or has no clause for the request: OK with `error` set in the reply
  (state unchanged, server alive);
- Peer/Admin call without the peer token: UNAUTHENTICATED; a served method the access table
  does not classify: PERMISSION_DENIED (both decided by `auth.PeerTokenGate` before any
  servicer runs);
- Peer message from a higher epoch than the active's: FAILED_PRECONDITION (this active is
  stale).

Every reply carries the answering replica's epoch, in the message and in the trailing metadata
key `gencluster-epoch`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gencluster import failsafe, wire
from gencluster.auth import PeerTokenGate
from gencluster.call_metrics import CallMeter
from gencluster.codec import CodecError, MessageTooLarge
from gencluster.limits import (
    MAX_ADDRESS_BYTES,
    MAX_BATCH_BYTES,
    MAX_IDENTITY_BYTES,
    MAX_ORIGIN_FIELD_BYTES,
    MAX_RECORD_MESSAGE_BYTES,
    MAX_TOPIC_BYTES,
    InvalidInput,
    TooLarge,
    admin_request_id,
    check_client_request_id,
    check_entry_size,
    check_pause_seconds,
    check_text,
)
from gencluster.log import CommandKind, Snapshot
from gencluster.machine import Outcome, RestoreError, StateSnapshot, SubscriptionError
from gencluster.node import Node, RestoreRefused
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.replies import RequestIdReused, RetryRefused
from gencluster.resume import LastEvent
from gencluster.roles import Active, Joining, Standby, Stopped
from gencluster.state_encoding import SnapshotEncodingFailed, encode_off_loop
from gencluster.term import NotServing, TooManySubscribers
from gencluster.tls_identity import LocalIdentity
from gencluster.versions import downgrade_refusal
from gencluster.wellknown import (
    ACTIVE_ADDRESS_METADATA,
    EPOCH_METADATA,
    REFUSAL_METADATA,
    REFUSAL_REQUEST_ID_REUSED,
)

log = logging.getLogger(__name__)


async def _encoded(take: Callable[[], StateSnapshot],
                   context: grpc.aio.ServicerContext) -> Snapshot:
    """A whole-state snapshot encoded off the loop; a child that kept dying is UNAVAILABLE
    (the caller retries, as after any lost stream), a state the codec refuses INTERNAL."""
    try:
        return await encode_off_loop(take)
    except SnapshotEncodingFailed as error:
        code = grpc.StatusCode.UNAVAILABLE if error.died else grpc.StatusCode.INTERNAL
        await context.abort(code, f"cannot encode the state: {error}")
        raise

READINESS_HEALTH_SERVICE = ""
LIVENESS_HEALTH_SERVICE = "gencluster.liveness"
NEXT_EVENT_METADATA = "gencluster-next-event"
"""Initial metadata of Subscribe: the number of the first event this stream will deliver, so a
client that subscribed for live events only knows where to resume after a failover."""
RENUMBERED_METADATA = "gencluster-renumbered"
"""Initial metadata of a Subscribe stream that continues another history than the one the
subscriber's last event came from (after a merge): the first number on this history."""

_ROLE_TO_WIRE: dict[type, int] = {
    Active: pb.ROLE_ACTIVE,
    Standby: pb.ROLE_STANDBY,
    Joining: pb.ROLE_JOINING,
    Stopped: pb.ROLE_STOPPED,
}


async def _unavailable(node: Node, context: grpc.aio.ServicerContext, why: str) -> NoReturn:
    # Redirect only to an active this standby is replicating from right now: during a
    # failover the last known address is the dead active's, and a client sent there would
    # only bounce back.
    active = node.known_active
    known = active.identity != node.config.identity and active.reachable
    address = active.address if known else ""
    metadata: tuple[tuple[str, str], ...] = ((EPOCH_METADATA, str(node.epoch)),)
    if address:
        metadata += ((ACTIVE_ADDRESS_METADATA, address),)
        why = f"{why}; the active is {active.identity} at {address}"
    await context.abort(grpc.StatusCode.UNAVAILABLE, why, trailing_metadata=metadata)
    raise AssertionError("abort returned")  # pragma: no cover


async def submit(
    node: Node,
    context: grpc.aio.ServicerContext,
    kind: CommandKind,
    request_id: str,
    payload: bytes,
    codec_name: str = "",
    first_attempt_unix_ms: int = 0,
) -> tuple[Outcome, int]:
    """One request through the node's call path, its typed errors as gRPC status codes."""
    try:
        outcome, epoch = await node.submit(
            kind, request_id, payload, codec_name, first_attempt_unix_ms / 1000
        )
    except NotServing as error:
        await _unavailable(node, context, str(error))
    except RetryRefused as error:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    except RequestIdReused as error:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION, str(error),
            trailing_metadata=((REFUSAL_METADATA, REFUSAL_REQUEST_ID_REUSED),),
        )
    except MessageTooLarge as error:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    except CodecError as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    context.set_trailing_metadata(_epoch_trailer(epoch))
    return outcome, epoch


async def _valid(context: grpc.aio.ServicerContext, *checks: Callable[[], object]) -> None:
    """Run input checks (`limits`); the first `InvalidInput` is INVALID_ARGUMENT naming the
    field, before anything was looked at or changed."""
    try:
        for check in checks:
            check()
    except InvalidInput as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


async def _origin_and_snapshot(
    request_iterator: AsyncIterator[pb.MergeChunk] | AsyncIterator[pb.RestoreChunk],
    context: grpc.aio.ServicerContext,
    method: str,
) -> tuple[pb.MergeOrigin | pb.RestoreOrigin, Snapshot]:
    """The two client-streamed state transfers (Merge, Restore) share one shape: an origin
    message, then a state in the Snapshot stream format. An origin missing or a snapshot that
    does not decode is INVALID_ARGUMENT, before anything changed."""
    origin: pb.MergeOrigin | pb.RestoreOrigin | None = None
    chunks = []
    async for chunk in request_iterator:
        if chunk.WhichOneof("part") == "origin":
            if origin is not None:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{method} has more than one origin"
                )
            origin = chunk.origin
        else:
            chunks.append(chunk.snapshot)
    if origin is None:
        kind = "MergeOrigin" if method == "Merge" else "RestoreOrigin"
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method} starts with a {kind}")
    assert origin is not None
    await _valid(
        context,
        lambda: admin_request_id(origin.request_id),
        lambda: check_text("source", origin.source, MAX_ORIGIN_FIELD_BYTES),
    )
    try:
        snapshot, _ = wire.snapshot_from_chunks(chunks)
    except wire.WireError as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    return origin, snapshot


async def _entry_payload(
    snapshot: Snapshot, context: grpc.aio.ServicerContext, what: str
) -> bytes:
    """The payload of a MERGE or forced RESTORE entry (`wire.merge_entry_payload`); one over
    what a replicated entry may carry is RESOURCE_EXHAUSTED, before anything is logged."""
    payload = wire.merge_entry_payload(snapshot)
    try:
        check_entry_size(f"{what} (state and reply records)", len(payload))
    except TooLarge as error:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    return payload


@functools.lru_cache(maxsize=4)
def _epoch_trailer(epoch: int) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of every reply in a term, built once per epoch, not per call."""
    return ((EPOCH_METADATA, str(epoch)),)


class ClientService(pb_grpc.ClientServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self._meters = {CommandKind.CALL: CallMeter("call"), CommandKind.CAST: CallMeter("cast")}

    async def Call(
        self, request: pb.CallRequest, context: grpc.aio.ServicerContext
    ) -> pb.CallReply:
        outcome, epoch = await self._submit_measured(CommandKind.CALL, request, context)
        return wire.call_reply(outcome.record, epoch=epoch, duplicate=outcome.duplicate)

    async def Cast(
        self, request: pb.CastRequest, context: grpc.aio.ServicerContext
    ) -> pb.CastReply:
        outcome, epoch = await self._submit_measured(CommandKind.CAST, request, context)
        return wire.cast_reply(outcome.record, epoch=epoch, duplicate=outcome.duplicate)

    async def _submit_measured(
        self,
        command_kind: CommandKind,
        request: pb.CallRequest | pb.CastRequest,
        context: grpc.aio.ServicerContext,
    ) -> tuple[Outcome, int]:
        meter = self._meters[command_kind]
        started = meter.start()
        try:
            await _valid(context, lambda: check_client_request_id(request.request_id))
            # A first transmission cannot have been applied: no retry check, so a reply table
            # churned by heavy traffic does not refuse new calls (docs/limits.md).
            first_attempt = 0 if request.first_send else request.first_attempt_unix_ms
            outcome, epoch = await submit(
                self.node, context, command_kind, request.request_id, request.payload,
                request.codec, first_attempt,
            )
        except BaseException:
            meter.rejected()
            raise
        meter.answered(started, handler_raised=outcome.record.error is not None)
        return outcome, epoch

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        node = self.node
        await _valid(context, lambda: check_text("topic", request.topic, MAX_TOPIC_BYTES))
        from_event = request.from_event if request.HasField("from_event") else None
        last = None
        if from_event is not None and from_event > 1 and request.HasField("last_seq"):
            last = LastEvent(from_event - 1, request.last_seq, request.last_epoch)
        try:
            feed = node.subscribe(
                request.topic, from_event, accept_gap=request.accept_gap, last=last
            )
        except NotServing as error:
            await _unavailable(node, context, str(error))
        except SubscriptionError as error:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(error))
        except TooManySubscribers as error:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        metadata = [
            (NEXT_EVENT_METADATA, str(feed.first_number)), (EPOCH_METADATA, str(feed.epoch))
        ]
        if feed.renumbered:
            metadata.append((RENUMBERED_METADATA, str(feed.first_number)))
        await context.send_initial_metadata(tuple(metadata))
        renumbered = feed.renumbered
        async with contextlib.aclosing(feed.events()) as events:
            try:
                async for event, missed in events:
                    yield wire.event_to_message(
                        event, epoch=feed.epoch, missed=missed, renumbered=renumbered
                    )
                    renumbered = False
            except NotServing as error:
                await _unavailable(node, context, str(error))


class PeerService(pb_grpc.PeerServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SnapshotChunk]:
        node = self.node
        await _valid(context, lambda: check_text("identity", request.identity, MAX_IDENTITY_BYTES))
        term = node.term
        if term is None:
            await _unavailable(node, context, "snapshots come from the active")
        assert term is not None
        await self._check_epoch(request.epoch, term.epoch, context)
        snapshot = await _encoded(term.replica.machine.snapshot_parts, context)
        for chunk in wire.snapshot_to_chunks(snapshot, epoch=term.epoch):
            yield chunk

    async def Replicate(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> None:
        node = self.node
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("message") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Replicate starts with Hello")
        hello = first.hello
        await _valid(
            context,
            lambda: check_text("identity", hello.identity, MAX_IDENTITY_BYTES),
            lambda: check_text("address", hello.address, MAX_ADDRESS_BYTES),
        )
        term = node.term
        if term is None or term.closed:
            await _unavailable(node, context, "replication comes from the active")
        assert term is not None
        await self._check_epoch(hello.epoch, term.epoch, context)
        await term.serve_standby(hello, context.read, context.write)

    async def Promise(
        self, request: pb.PromiseRequest, context: grpc.aio.ServicerContext
    ) -> pb.PromiseReply:
        """Failsafe: the active asks this replica not to take the Lease for a while."""
        outcome = self.node.promise(request.epoch)
        if isinstance(outcome, failsafe.Granted):
            return pb.PromiseReply(
                granted=True, seconds=max(0.0, outcome.until - time.monotonic())
            )
        return pb.PromiseReply(granted=False, reason=outcome.reason)

    async def _check_epoch(
        self, peer_epoch: int, my_epoch: int, context: grpc.aio.ServicerContext
    ) -> None:
        if peer_epoch > my_epoch:
            # Only the Lease is trusted about epochs: re-read it now (a claim from a peer is
            # never adopted, or one bad message would fence this replica out for good).
            self.node.wake_election()
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"peer has seen epoch {peer_epoch}; this active's epoch {my_epoch} is stale",
            )


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        node = self.node
        term = node.term
        reply = pb.StatusReply(
            identity=node.config.identity,
            role=_ROLE_TO_WIRE[type(node.role)],
            epoch=term.epoch if term is not None else node.epoch,
            applied_seq=node.replica.applied_seq if node.replica is not None else 0,
            applied_epoch=node.replica.applied_epoch if node.replica is not None else 0,
            state_lost=node.state_lost(),
            active=node.known_active.identity,
            active_address=node.known_active.address,
            mode=(
                pb.REPLICATION_MODE_SYNC
                if node.config.mode.value == "Sync"
                else pb.REPLICATION_MODE_ASYNC
            ),
            server=node.config.server_spec,
            server_version=node.server.version,
            codec=node.codec.name,
            downgrade_refused=node.downgrade_refused,
        )
        record = node.lease_record
        if record is not None:
            reply.lease_holder = record.holder
            reply.lease_epoch = record.transitions
        if node.lease_read_at is not None:
            reply.lease_read_age_seconds = max(0.0, time.monotonic() - node.lease_read_at)
        failsafe_seconds = node.failsafe_seconds()
        if failsafe_seconds is not None:
            reply.failsafe_seconds = failsafe_seconds
        reply.failsafe_episodes, reply.last_failsafe_seconds = node.failsafe_episodes()
        degraded = node.sync_degraded()
        if degraded is not None:
            reply.sync_degraded_seconds, reply.unsynced_entries = degraded
        if term is not None:
            addresses = term.standby_addresses
            for standby in term.tracker.standbys():
                reply.standbys.append(
                    pb.StandbyStatus(
                        identity=standby.identity,
                        address=addresses.get(standby.identity, ""),
                        acked_seq=standby.acked_seq,
                        lag=standby.lag,
                        in_sync=standby.in_sync,
                    )
                )
        return reply

    async def GetState(
        self, request: pb.GetStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStateReply:
        node = self.node
        replica = node.replica
        if replica is None:
            await _unavailable(node, context, f"{node.config.identity} holds no state yet")
        assert replica is not None
        try:
            state = node.codec.encode(replica.machine.state, what="state")
        except CodecError as error:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        return pb.GetStateReply(
            epoch=node.epoch, applied_seq=replica.applied_seq, codec=node.codec.name, state=state
        )

    async def Switchover(
        self, request: pb.SwitchoverRequest, context: grpc.aio.ServicerContext
    ) -> pb.SwitchoverReply:
        node = self.node
        await _valid(context, lambda: check_text("target", request.target, MAX_IDENTITY_BYTES))
        if node.term is None:
            await _unavailable(node, context, "switchover is asked of the active")
        result = await node.hand_over(
            request.target or None, node.config.election.renew_deadline
        )
        if result is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"cannot hand over to {request.target or 'an in-sync standby'}: it must be a "
                "connected member of the in-sync set and catch up within the renew deadline",
            )
        assert result is not None
        return pb.SwitchoverReply(active=result[0], epoch=result[1])

    async def Demote(
        self, request: pb.DemoteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DemoteReply:
        node = self.node
        await _valid(
            context,
            lambda: check_text("follow_address", request.follow_address, MAX_ADDRESS_BYTES),
            lambda: check_text("reason", request.reason, MAX_ORIGIN_FIELD_BYTES),
        )
        log.warning("demoted: %s", request.reason or "by an Admin call")
        epoch = node.term.epoch if node.term is not None else node.epoch
        node.demote(request.follow_address or None)
        applied = node.replica.applied_seq if node.replica is not None else 0
        return pb.DemoteReply(epoch=epoch, applied_seq=applied)

    async def ExportState(
        self, request: pb.ExportStateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SnapshotChunk]:
        node = self.node
        replica = node.replica
        if replica is None:
            await _unavailable(node, context, f"{node.config.identity} holds no state")
        assert replica is not None
        epoch = node.term.epoch if node.term is not None else node.epoch
        snapshot = await _encoded(replica.machine.snapshot_parts, context)
        for chunk in wire.snapshot_to_chunks(snapshot, epoch=epoch):
            yield chunk

    async def Merge(
        self, request_iterator: AsyncIterator[pb.MergeChunk], context: grpc.aio.ServicerContext
    ) -> pb.MergeReply:
        node = self.node
        origin, snapshot = await _origin_and_snapshot(request_iterator, context, "Merge")
        assert isinstance(origin, pb.MergeOrigin)
        log.info("merging the state of %s (epoch %d, server version %d)", origin.source,
                 origin.source_epoch, snapshot.server_version)
        # Decided here, once, before the entry exists: every replica then converts the
        # loser's state to its own version (machine._merged), and none refuses on its own.
        refusal = downgrade_refusal(node.server, snapshot.server_version, "the merged state")
        if refusal is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)
        payload = await _entry_payload(snapshot, context, "the merge")
        outcome, epoch = await submit(
            node, context, CommandKind.MERGE, admin_request_id(origin.request_id), payload,
            snapshot.codec,
        )
        reply = pb.MergeReply(epoch=epoch, seq=outcome.record.seq, duplicate=outcome.duplicate)
        if outcome.record.error is not None:
            reply.error.CopyFrom(wire.error_to_message(outcome.record.error))
        return reply

    async def Restore(
        self, request_iterator: AsyncIterator[pb.RestoreChunk], context: grpc.aio.ServicerContext
    ) -> pb.RestoreReply:
        """Load a backup: with `force` on the serving active as a replicated RESTORE entry
        (applied once per request id, like any call); without, into this replica if it holds
        no state and nobody is active (`Node.restore`)."""
        node = self.node
        origin, snapshot = await _origin_and_snapshot(request_iterator, context, "Restore")
        assert isinstance(origin, pb.RestoreOrigin)
        log.warning("restoring %s (force=%s)", origin.source or "a backup", origin.force)
        if origin.force:
            if node.term is None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{node.config.identity} is not the serving active: a forced restore "
                    "replaces the state on the active, which replicates it",
                )
            refusal = downgrade_refusal(node.server, snapshot.server_version, "the backup")
            if refusal is not None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)
            payload = await _entry_payload(snapshot, context, "the restore")
            outcome, epoch = await submit(
                node, context, CommandKind.RESTORE, admin_request_id(origin.request_id),
                payload, snapshot.codec,
            )
            if outcome.record.error is not None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"restore failed: {outcome.record.error.message}")
            return pb.RestoreReply(epoch=epoch, applied_seq=outcome.record.seq)
        try:
            replica = node.restore(snapshot, admin_request_id(origin.request_id))
        except RestoreRefused as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except RestoreError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return pb.RestoreReply(epoch=node.epoch, applied_seq=replica.applied_seq)

    async def PauseWrites(
        self, request: pb.PauseWritesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseWritesReply:
        node = self.node
        await _valid(context, lambda: check_pause_seconds(request.seconds))
        paused = node.pause_writes(request.seconds)
        log.warning("%s client calls (Admin.PauseWrites %.1fs)",
                    "refusing" if paused else "accepting", request.seconds)
        epoch = node.term.epoch if node.term is not None else node.epoch
        applied = node.replica.applied_seq if node.replica is not None else 0
        return pb.PauseWritesReply(epoch=epoch, applied_seq=applied, paused=paused)


class HealthReporter:
    """Keeps grpc.health.v1 true: liveness always SERVING, readiness from the node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.servicer = health.aio.HealthServicer()
        self._ready: bool | None = None

    async def start(self) -> None:
        await self.servicer.set(LIVENESS_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.refresh()

    async def refresh(self) -> None:
        ready = self.node.ready()
        if ready != self._ready:
            self._ready = ready
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await self.servicer.set(READINESS_HEALTH_SERVICE, status)


SERVER_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    # Server-side keepalive: a standby or client that vanished without a TCP reset (a
    # partition) is noticed, so its stream ends and the AckTracker drops it. The pings a
    # client sends (every 5 s, idle or not: gencluster.client) are accepted, never answered
    # with GOAWAY too_many_pings. bench/replication.py gives its bare baseline the same.
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
)


def build_server(node: Node, health_reporter: HealthReporter) -> grpc.aio.Server:
    """A grpc.aio server with every service of the runtime (not yet bound or started)."""
    # A request up to the codec's limit, and a Merge or Restore chunk (a 1 MiB batch, or one
    # record at the codec's limit) with room for the message around it; a request between
    # the codec's limit and this gets the codec's clear RESOURCE_EXHAUSTED.
    limit = max(node.codec.max_bytes, MAX_BATCH_BYTES) + 64 * 1024
    server = grpc.aio.server(
        interceptors=[PeerTokenGate(
            node.config.peer_token,
            identity=(LocalIdentity(node.config.namespace, node.config.cluster)
                      if node.config.tls is not None else None),
        )],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", MAX_RECORD_MESSAGE_BYTES),
            *SERVER_KEEPALIVE_OPTIONS,
        ]
    )
    pb_grpc.add_ClientServicer_to_server(ClientService(node), server)
    pb_grpc.add_PeerServicer_to_server(PeerService(node), server)
    pb_grpc.add_AdminServicer_to_server(AdminService(node), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_reporter.servicer, server)
    service_names = (
        pb.DESCRIPTOR.services_by_name["Client"].full_name,
        pb.DESCRIPTOR.services_by_name["Peer"].full_name,
        pb.DESCRIPTOR.services_by_name["Admin"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(service_names, server)
    return server


def build_health_server(health_reporter: HealthReporter) -> grpc.aio.Server:
    """With TLS: a plaintext server of grpc.health.v1 alone, for the kubelet's gRPC probes
    (they cannot speak TLS). Nothing else is served without TLS."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4096)])
    health_pb2_grpc.add_HealthServicer_to_server(health_reporter.servicer, server)
    return server
