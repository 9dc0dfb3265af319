"""The backup file of `kubectl gencluster backup|restore`: format `gencluster-backup/v1`.

    {"format": "gencluster-backup/v1", "cluster": ..., ..., "sha256": ...}\\n
    <4-byte big-endian length><SnapshotChunk> <4-byte length><SnapshotChunk> ...

One line of JSON (the header: what the backup is, readable with `head -1`), then the
`SnapshotChunk` messages `Admin.ExportState` streamed, each length-prefixed, in order: the
Snapshot stream format (a header chunk, reply and event batches, then the state in chunks
whose sizes add up to the header's `state_size`), which `Admin.Restore` takes back unchanged.
The header carries the number of chunks and the SHA-256 of every byte after the header line,
so a truncated, altered or mixed-up file is refused before anything is sent to a cluster.

Pure: bytes in, values out (the plugin does the I/O), so that the format is tested without
a cluster. docs/clusteredserver.md ("Backup and restore") documents the same format.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from gencluster.proto import gencluster_pb2 as pb

FORMAT = "gencluster-backup/v1"
LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 64 * 1024
"""A header line longer than this is not a header: refused before parsing it."""
MAX_CHUNK_BYTES = 64 * 1024 * 1024
"""A frame longer than this is a corrupt length, not a chunk (the runtime sends far smaller)."""

HEADER_FIELDS = (
    "format", "cluster", "namespace", "epoch", "applied_seq", "applied_epoch", "server",
    "server_version", "codec", "taken_at", "chunks", "state_size", "sha256",
)


class BackupError(ValueError):
    """The export or the file is not a valid backup; the message says what is wrong."""


@dataclass(frozen=True)
class BackupHeader:
    """The header line. `epoch` is the epoch of the export (of its chunks); `applied_seq` and
    `applied_epoch` the position of the state; `server` the `module:Class` that exported it
    (from the active's Status), `server_version` the class's `version` that wrote the state."""

    cluster: str
    namespace: str
    epoch: int
    applied_seq: int
    applied_epoch: int
    server: str
    server_version: int
    codec: str
    taken_at: str
    chunks: int
    state_size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "cluster": self.cluster, "namespace": self.namespace,
            "epoch": self.epoch, "applied_seq": self.applied_seq,
            "applied_epoch": self.applied_epoch, "server": self.server,
            "server_version": self.server_version, "codec": self.codec,
            "taken_at": self.taken_at, "chunks": self.chunks, "state_size": self.state_size,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> BackupHeader:
        if value.get("format") != FORMAT:
            raise BackupError(
                f"not a {FORMAT} backup (format {value.get('format')!r})"
            )
        missing = [name for name in HEADER_FIELDS if name not in value]
        if missing:
            raise BackupError(f"the backup header lacks {', '.join(missing)}")
        try:
            return cls(
                cluster=str(value["cluster"]), namespace=str(value["namespace"]),
                epoch=_count(value, "epoch"), applied_seq=_count(value, "applied_seq"),
                applied_epoch=_count(value, "applied_epoch"), server=str(value["server"]),
                server_version=_count(value, "server_version"), codec=str(value["codec"]),
                taken_at=str(value["taken_at"]), chunks=_count(value, "chunks"),
                state_size=_count(value, "state_size"), sha256=str(value["sha256"]),
            )
        except (TypeError, ValueError) as error:
            raise BackupError(f"malformed backup header: {error}") from None


def _count(value: Mapping[str, Any], name: str) -> int:
    number = value[name]
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise BackupError(f"backup header field {name} must be a non-negative integer, "
                          f"got {number!r}")
    return number


def check_snapshot(chunks: list[pb.SnapshotChunk]) -> pb.SnapshotHeader:
    """The snapshot's header, after checking the stream's shape: a header chunk first and
    only once, every chunk of one epoch, state chunks adding up to `state_size`."""
    if not chunks or chunks[0].WhichOneof("part") != "header":
        raise BackupError("the snapshot does not start with its header chunk")
    header = chunks[0].header
    epochs = {chunk.epoch for chunk in chunks}
    if len(epochs) != 1:
        raise BackupError(f"the snapshot mixes epochs {sorted(epochs)}")
    if any(chunk.WhichOneof("part") == "header" for chunk in chunks[1:]):
        raise BackupError("the snapshot has more than one header chunk")
    if any(chunk.WhichOneof("part") is None for chunk in chunks):
        raise BackupError("the snapshot has an empty chunk")
    state = sum(len(c.state) for c in chunks if c.WhichOneof("part") == "state")
    if state != header.state_size:
        raise BackupError(
            f"the snapshot's state chunks hold {state} bytes, its header says {header.state_size}"
        )
    return header


def frames(chunks: Iterable[pb.SnapshotChunk]) -> Iterator[bytes]:
    """Each chunk as a length-prefixed frame."""
    for chunk in chunks:
        body = chunk.SerializeToString()
        yield LENGTH.pack(len(body)) + body


def write_backup(
    out: IO[bytes],
    chunks: list[pb.SnapshotChunk],
    *,
    cluster: str,
    namespace: str,
    server: str,
    taken_at: datetime,
) -> BackupHeader:
    """Write a complete backup of `chunks` (an export, checked first) to `out`."""
    snapshot = check_snapshot(chunks)
    body = b"".join(frames(chunks))
    header = BackupHeader(
        cluster=cluster, namespace=namespace, epoch=chunks[0].epoch,
        applied_seq=snapshot.applied_seq, applied_epoch=snapshot.applied_epoch, server=server,
        server_version=snapshot.server_version, codec=snapshot.codec,
        taken_at=taken_at.strftime("%Y-%m-%dT%H:%M:%SZ"), chunks=len(chunks),
        state_size=snapshot.state_size, sha256=hashlib.sha256(body).hexdigest(),
    )
    out.write(json.dumps(header.to_json(), sort_keys=True).encode() + b"\n")
    out.write(body)
    return header


def read_backup(data: bytes) -> tuple[BackupHeader, list[pb.SnapshotChunk]]:
    """The header and the chunks of a backup file's bytes, every check passed."""
    newline = data.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    if newline < 0:
        raise BackupError(f"no {FORMAT} header line at the start of the file")
    try:
        value = json.loads(data[:newline].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BackupError(f"the first line is not a {FORMAT} JSON header") from None
    if not isinstance(value, dict):
        raise BackupError(f"the first line is not a {FORMAT} JSON header")
    header = BackupHeader.from_json(value)
    body = data[newline + 1 :]
    if hashlib.sha256(body).hexdigest() != header.sha256:
        raise BackupError("the backup's content does not match its sha256 (truncated or altered)")
    chunks = list(_parse_frames(body))
    if len(chunks) != header.chunks:
        raise BackupError(f"the backup holds {len(chunks)} chunks, its header says "
                          f"{header.chunks}")
    snapshot = check_snapshot(chunks)
    position = (snapshot.applied_seq, snapshot.applied_epoch, chunks[0].epoch)
    if position != (header.applied_seq, header.applied_epoch, header.epoch):
        raise BackupError("the backup's header does not describe its snapshot")
    return header, chunks


def _parse_frames(body: bytes) -> Iterator[pb.SnapshotChunk]:
    offset = 0
    while offset < len(body):
        if offset + LENGTH.size > len(body):
            raise BackupError("the backup ends inside a chunk's length")
        (size,) = LENGTH.unpack_from(body, offset)
        offset += LENGTH.size
        if size > MAX_CHUNK_BYTES or offset + size > len(body):
            raise BackupError("the backup ends inside a chunk")
        chunk = pb.SnapshotChunk()
        try:
            chunk.ParseFromString(body[offset : offset + size])
        except Exception as error:  # protobuf's DecodeError and friends
            raise BackupError(f"a chunk of the backup cannot be decoded: {error}") from None
        offset += size
        yield chunk


def restore_chunks(
    chunks: Iterable[pb.SnapshotChunk], *, request_id: str, force: bool, source: str
) -> Iterator[pb.RestoreChunk]:
    """The Admin.Restore request stream: the origin, then the snapshot's chunks."""
    yield pb.RestoreChunk(
        origin=pb.RestoreOrigin(request_id=request_id, force=force, source=source)
    )
    for chunk in chunks:
        yield pb.RestoreChunk(snapshot=chunk)


# -- which pod a restore goes to ------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreTarget:
    pod: str
    address: str
    why: str


class RestoreRefused(Exception):
    """No pod may take the restore as asked; the message says what to do."""


def restore_target(replies: Mapping[str, Mapping[str, Any]], force: bool) -> RestoreTarget:
    """The pod to send a restore to, from each pod's Admin.Status (as
    `gencluster.commands.replica_status` returns it, keyed by pod name).

    - A pod reports active (the highest epoch, if several): the cluster serves a state, which
      a restore replaces: only with `force`, and then to that active (the runtime applies it
      as a replicated entry, so the standbys follow).
    - Else a pod reporting `stateLost` (lowest name first): the runtime lets a replica without
      state load a backup and take over.
    - Else, for a new cluster that never had state, any pod that answered (lowest name first);
      the runtime refuses (FAILED_PRECONDITION) if that pod has state after all.
    """
    answered = {name: reply for name, reply in sorted(replies.items()) if "error" not in reply}
    actives = sorted(
        (name for name, reply in answered.items() if reply.get("role") == "active"),
        key=lambda name: -int(answered[name].get("epoch") or 0),
    )
    if actives:
        active = actives[0]
        if not force:
            raise RestoreRefused(
                f"{active} is active and serves the cluster's state; a restore replaces it: "
                "add --force to do that"
            )
        return RestoreTarget(active, str(answered[active]["address"]),
                             "the active (--force replaces its state)")
    lost = [name for name, reply in answered.items() if reply.get("stateLost")]
    if lost:
        return RestoreTarget(lost[0], str(answered[lost[0]]["address"]),
                             "it reports state_lost")
    if answered:
        first = next(iter(answered))
        return RestoreTarget(first, str(answered[first]["address"]),
                             "no active and no lost state: a new cluster")
    unreachable = ", ".join(f"{name} ({reply.get('error')})"
                            for name, reply in sorted(replies.items()))
    raise RestoreRefused(f"no pod answered Admin.Status: {unreachable or 'no pods'}")
