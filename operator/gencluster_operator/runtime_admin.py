"""The operator's calls to each pod's Admin gRPC service (docs/runtime-config.md).

Status is asked of every running pod on every pass, concurrently and with a short deadline; a
pod that does not answer is simply "not reporting" (None): the operator never concludes
anything from silence, only the kubelet's container states and the Lease count as evidence.
The operations (Switchover, Demote, and a merge made of ExportState, Merge and Demote) raise
`AdminError` with the gRPC status, so the shell can report them like a failed API call.

Every call carries the cluster's peer token in the `gencluster-peer-token` metadata; the
runtime answers UNAUTHENTICATED without it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from gencluster.limits import MAX_RECORD_MESSAGE_BYTES
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.wellknown import PEER_TOKEN_METADATA

from gencluster_operator import names
from gencluster_operator.observed import ROLE_JOINING, ROLE_STOPPED, RuntimeStatus

STATUS_TIMEOUT_SECONDS = 1.0
"""A live runtime answers Status from memory in milliseconds; a second is generous, and it
bounds how long one unreachable pod can delay a reconcile pass (calls run concurrently)."""

DEMOTE_TIMEOUT_SECONDS = 5.0
MERGE_TIMEOUT_SECONDS = 30.0
"""Export, merge and demote of a whole state: bounded by the state's size, not by a timer."""

MERGE_PAUSE_SECONDS = 2 * MERGE_TIMEOUT_SECONDS + DEMOTE_TIMEOUT_SECONDS
"""How long the loser refuses client calls for one merge attempt (Admin.PauseWrites): longer
than export, merge and demote can take, so it never resumes between its export and its
demotion (which would lose the calls it answered meanwhile). A failed attempt resumes it at
once; only an operator that dies mid-merge leaves the pause to run out."""

SWITCHOVER_MARGIN_SECONDS = 5.0
"""Added to the renew deadline, which is how long the runtime may wait for the target to
catch up and confirm before it gives up the handover."""

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_RECORD_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_RECORD_MESSAGE_BYTES),
]
"""ExportState chunks are bounded in bytes by the runtime (`limits.MAX_BATCH_BYTES`, or one
record alone, up to the codec's limit); gRPC's default 4 MiB receive limit was under one such
record, and under a 1,000-record batch of replies over 4 KB before batches were sized in
bytes."""

ROLES = {
    pb.ROLE_ACTIVE: names.ROLE_ACTIVE,
    pb.ROLE_STANDBY: names.ROLE_STANDBY,
    pb.ROLE_JOINING: ROLE_JOINING,
    pb.ROLE_STOPPED: ROLE_STOPPED,
}


class AdminError(Exception):
    """An Admin RPC that failed; `code` is the gRPC status code (None: not a gRPC error).
    `ambiguous` is True when the call may have taken effect (deadline exceeded, connection
    lost mid-call)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def ambiguous(self) -> bool:
        return self.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


@dataclass(frozen=True)
class MergeResult:
    """What the winner's Merge answered: its epoch and the MERGE entry's sequence number."""

    epoch: int
    sequence: int
    duplicate: bool


def pod_address(pod_ip: str, port: int) -> str:
    """`host:port` for gRPC, with IPv6 addresses bracketed."""
    return f"[{pod_ip}]:{port}" if ":" in pod_ip else f"{pod_ip}:{port}"


def runtime_status(reply: pb.StatusReply) -> RuntimeStatus | None:
    """The pure core's view of a Status reply; None for a role the operator does not know."""
    role = ROLES.get(reply.role)
    if role is None:
        return None
    return RuntimeStatus(
        role=role,
        epoch=reply.epoch,
        applied_sequence=reply.applied_seq,
        standby_lag=tuple((standby.identity, standby.lag) for standby in reply.standbys),
        lease_holder=reply.lease_holder,
        lease_epoch=reply.lease_epoch,
        lease_read_age_seconds=(
            reply.lease_read_age_seconds if reply.HasField("lease_read_age_seconds") else None
        ),
        state_lost=reply.state_lost,
        failsafe_seconds=(
            reply.failsafe_seconds if reply.HasField("failsafe_seconds") else None
        ),
        failsafe_episodes=reply.failsafe_episodes,
        last_failsafe_seconds=reply.last_failsafe_seconds,
        downgrade_refused=reply.downgrade_refused,
        sync_degraded_seconds=(
            reply.sync_degraded_seconds if reply.HasField("sync_degraded_seconds") else None
        ),
        unsynced_entries=reply.unsynced_entries,
    )


@dataclass(frozen=True, slots=True)
class AdminTls:
    """How the operator reaches one ClusteredServer's pods with TLS: mutual TLS to the peer
    port, its client certificate of that cluster's CA, the cluster's peer name verified."""

    peer_port: int
    server_name: str
    root_certificates: bytes
    certificate_chain: bytes
    private_key: bytes

    def target(self, address: str) -> str:
        host = address.rsplit(":", 1)[0]
        return f"{host}:{self.peer_port}"


class RuntimeAdmin:
    """Admin calls on a pool of channels, one per pod address, reused across passes (a gRPC
    channel reconnects by itself; creating one per call would cost a handshake each time).

    Addresses are the pods' client addresses (`podIP:port`); those registered with `use_tls`
    are called with mutual TLS on their peer port."""

    def __init__(self) -> None:
        self._channels: dict[str, tuple[grpc.Channel, AdminTls | None]] = {}
        self._tls: dict[str, AdminTls] = {}
        self._in_use: dict[Hashable, set[str]] = {}
        self._lock = threading.Lock()

    def use_tls(self, addresses: Iterable[str], tls: AdminTls | None) -> None:
        """Call the pods at `addresses` with `tls` (None: plaintext with the peer token)."""
        with self._lock:
            for address in addresses:
                if tls is None:
                    self._tls.pop(address, None)
                else:
                    self._tls[address] = tls

    def close(self) -> None:
        with self._lock:
            channels, self._channels = [c for c, _ in self._channels.values()], {}
        for channel in channels:
            channel.close()

    def forget_except(self, owner: Hashable, addresses: set[str]) -> None:
        """`owner` (one ClusteredServer) now has pods at `addresses` only: close the channels
        of addresses no owner has any more (deleted pods). Other owners' channels stay open:
        passes of different clusters run at once in the executor, and closing another
        cluster's channel under its pass made that pass fail (`Channel closed`) and every
        pass reconnect."""
        with self._lock:
            if addresses:
                self._in_use[owner] = set(addresses)
            else:
                self._in_use.pop(owner, None)
            in_use = set().union(*self._in_use.values())
            gone = [address for address in self._channels if address not in in_use]
            closing = [self._channels.pop(address)[0] for address in gone]
            for address in [a for a in self._tls if a not in in_use]:
                del self._tls[address]
        for channel in closing:
            channel.close()

    def _stub(self, address: str) -> pb_grpc.AdminStub:
        stale = None
        with self._lock:
            tls = self._tls.get(address)
            found = self._channels.get(address)
            if found is not None and found[1] != tls:
                # A renewed certificate or bundle: a new channel. The reconciler registers
                # a cluster's TLS at the start of its pass, when no call of that cluster is
                # in flight, so closing the old channel cuts nothing.
                stale, found = found[0], None
            if found is None:
                if tls is None:
                    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                else:
                    credentials = grpc.ssl_channel_credentials(
                        tls.root_certificates, tls.private_key, tls.certificate_chain)
                    channel = grpc.secure_channel(
                        tls.target(address), credentials,
                        options=[*CHANNEL_OPTIONS,
                                 ("grpc.ssl_target_name_override", tls.server_name)])
                found = self._channels[address] = (channel, tls)
        if stale is not None:
            stale.close()
        return pb_grpc.AdminStub(found[0])

    # -- status ----------------------------------------------------------------------------

    def statuses(self, token: str, addresses: Mapping[str, str]) -> dict[str, RuntimeStatus]:
        """Status of every pod in `addresses` (pod name -> `host:port`), asked concurrently;
        pods that do not answer in time are left out."""
        metadata = ((PEER_TOKEN_METADATA, token),)
        calls = {
            pod: self._stub(address).Status.future(
                pb.StatusRequest(), timeout=STATUS_TIMEOUT_SECONDS, metadata=metadata
            )
            for pod, address in addresses.items()
        }
        reports: dict[str, RuntimeStatus] = {}
        for pod, call in calls.items():
            try:
                report = runtime_status(call.result())
            except grpc.RpcError:
                continue
            if report is not None:
                reports[pod] = report
        return reports

    # -- operations --------------------------------------------------------------------------

    def switchover(
        self, token: str, address: str, target: str, renew_deadline_seconds: int
    ) -> pb.SwitchoverReply:
        """Ask the active at `address` to hand the Lease to `target`; returns once it has."""
        timeout = renew_deadline_seconds + SWITCHOVER_MARGIN_SECONDS
        return self._call(
            "Switchover", address, token, pb.SwitchoverRequest(target=target), timeout
        )

    def demote(self, token: str, address: str, follow_address: str, reason: str) -> None:
        """Ask a stale active to step down and follow `follow_address` as a standby."""
        request = pb.DemoteRequest(follow_address=follow_address, reason=reason)
        self._call("Demote", address, token, request, DEMOTE_TIMEOUT_SECONDS)

    def merge_states(
        self,
        token: str,
        *,
        winner_address: str,
        loser: str,
        loser_address: str,
        loser_epoch: int,
    ) -> MergeResult:
        """Partition recovery: pause the loser's client calls, export its state, merge it
        into the winner through the user's `merge` (a replicated MERGE entry, which also
        carries the loser's reply table), then demote the loser to follow the winner.

        The pause makes the export final: a call the loser answered after it would vanish
        when the loser resyncs from the winner. The merge's request id names the exported
        position (loser, epoch, applied sequence), so a retry of the same export is applied
        once, while a later export of a loser that kept serving is a new merge. The loser is
        demoted only after the winner holds the merged state; a failed merge changes nothing
        on either side and resumes the loser's calls.
        """
        metadata = ((PEER_TOKEN_METADATA, token),)
        self._call("PauseWrites", loser_address, token,
                   pb.PauseWritesRequest(seconds=MERGE_PAUSE_SECONDS), DEMOTE_TIMEOUT_SECONDS)
        try:
            result = self._export_and_merge(
                metadata, winner_address=winner_address, loser=loser,
                loser_address=loser_address, loser_epoch=loser_epoch,
            )
        except AdminError:
            self._resume(token, loser_address)
            raise
        self.demote(token, loser_address, winner_address, "merged into the winner")
        return result

    def _resume(self, token: str, loser_address: str) -> None:
        """After a failed merge: the loser serves its side again (best effort: its pause runs
        out by itself otherwise)."""
        with contextlib.suppress(AdminError):
            self._call("PauseWrites", loser_address, token, pb.PauseWritesRequest(seconds=0),
                       DEMOTE_TIMEOUT_SECONDS)

    def _export_and_merge(
        self,
        metadata: tuple[tuple[str, str], ...],
        *,
        winner_address: str,
        loser: str,
        loser_address: str,
        loser_epoch: int,
    ) -> MergeResult:
        try:
            chunks = list(
                self._stub(loser_address).ExportState(
                    pb.ExportStateRequest(), timeout=MERGE_TIMEOUT_SECONDS, metadata=metadata
                )
            )
        except grpc.RpcError as error:
            raise _admin_error("ExportState", loser_address, error) from error
        header = next((c.header for c in chunks if c.HasField("header")), None)
        applied = header.applied_seq if header is not None else 0
        origin = pb.MergeOrigin(
            request_id=f"merge/{loser}/{loser_epoch}/{applied}",
            source=loser,
            source_epoch=loser_epoch,
        )

        def merge_stream() -> Iterator[pb.MergeChunk]:
            yield pb.MergeChunk(origin=origin)
            for chunk in chunks:
                yield pb.MergeChunk(snapshot=chunk)

        try:
            reply = self._stub(winner_address).Merge(
                merge_stream(), timeout=MERGE_TIMEOUT_SECONDS, metadata=metadata
            )
        except grpc.RpcError as error:
            raise _admin_error("Merge", winner_address, error) from error
        if reply.HasField("error"):
            raise AdminError(f"merge() raised {reply.error.type}: {reply.error.message}")
        return MergeResult(epoch=reply.epoch, sequence=reply.seq, duplicate=reply.duplicate)

    def _call(self, method: str, address: str, token: str, request: object, timeout: float) -> Any:
        """One unary Admin call; the reply's type depends on `method`."""
        rpc = getattr(self._stub(address), method)
        try:
            return rpc(request, timeout=timeout, metadata=((PEER_TOKEN_METADATA, token),))
        except grpc.RpcError as error:
            raise _admin_error(method, address, error) from error


def _admin_error(method: str, address: str, error: grpc.RpcError) -> AdminError:
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    name = code.name if code is not None else "error"
    return AdminError(f"Admin.{method} on {address} failed ({name}): {details}", code)
