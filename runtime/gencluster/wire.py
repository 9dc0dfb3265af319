"""Between the pure core's values and the protobuf messages of `gencluster.proto`.

The gRPC shells speak protobuf; the core speaks frozen dataclasses. Every conversion lives
here, once, so the shells stay thin and the mapping (including how a snapshot is cut into a
stream of chunks and put back together) is tested without a socket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from gencluster.limits import MAX_BATCH_BYTES, MERGE_REPLY_BYTES, batches_by_bytes
from gencluster.log import (
    Command,
    CommandKind,
    Event,
    HandlerError,
    LogEntry,
    ReplyRecord,
    Snapshot,
)
from gencluster.proto import gencluster_pb2 as pb
from gencluster.replies import newest_records, record_size

STATE_CHUNK_BYTES = MAX_BATCH_BYTES
"""State bytes per SnapshotChunk: well under gRPC's 4 MiB default message limit."""

RECORDS_PER_BATCH = 1000
"""At most this many reply records or events per SnapshotChunk batch (against many tiny
records); batches are bounded in bytes first (`limits.MAX_BATCH_BYTES`)."""

EVENT_OVERHEAD_BYTES = 48
"""What an event costs in a batch beside its topic and data (numbers, time, framing)."""


def event_size(event: Event) -> int:
    """The bytes an event accounts for in a batch's byte budget."""
    return len(event.data) + len(event.topic.encode("utf-8", "surrogatepass")) + (
        EVENT_OVERHEAD_BYTES
    )


class WireError(ValueError):
    """A message that does not follow the contract (the shell answers INVALID_ARGUMENT)."""


_KIND_TO_WIRE = {
    CommandKind.CALL: pb.COMMAND_KIND_CALL,
    CommandKind.CAST: pb.COMMAND_KIND_CAST,
    CommandKind.MERGE: pb.COMMAND_KIND_MERGE,
    CommandKind.RESTORE: pb.COMMAND_KIND_RESTORE,
    CommandKind.QUARANTINE: pb.COMMAND_KIND_QUARANTINE,
}
_KIND_FROM_WIRE = {wire: kind for kind, wire in _KIND_TO_WIRE.items()}


def entry_to_message(entry: LogEntry) -> pb.LogEntry:
    command = entry.command
    return pb.LogEntry(
        seq=entry.seq,
        epoch=entry.epoch,
        command=pb.Command(
            kind=_KIND_TO_WIRE[command.kind],
            request_id=command.request_id,
            payload=command.payload,
            time=command.time,
            seed=command.seed,
        ),
    )


def entry_from_message(message: pb.LogEntry) -> LogEntry:
    command = message.command
    try:
        kind = _KIND_FROM_WIRE[command.kind]
    except KeyError:
        raise WireError(f"entry {message.seq} has no valid command kind ({command.kind})") from None
    if message.seq < 1:
        raise WireError("log entries are numbered from 1; got seq 0")
    return LogEntry(
        seq=message.seq,
        epoch=message.epoch,
        command=Command(kind, command.request_id, command.payload, command.time, command.seed),
    )


def error_to_message(error: HandlerError) -> pb.HandlerError:
    return pb.HandlerError(type=error.type, message=error.message)


def reply_record_to_message(record: ReplyRecord) -> pb.ReplyRecord:
    message = pb.ReplyRecord(
        request_id=record.request_id, seq=record.seq, time=record.time, digest=record.digest
    )
    if record.error is not None:
        message.error.CopyFrom(error_to_message(record.error))
    elif record.reply is not None:
        message.reply = record.reply
    return message


def reply_record_from_message(message: pb.ReplyRecord) -> ReplyRecord:
    outcome = message.WhichOneof("outcome")
    return ReplyRecord(
        request_id=message.request_id,
        seq=message.seq,
        reply=message.reply if outcome == "reply" else None,
        error=(
            HandlerError(message.error.type, message.error.message) if outcome == "error" else None
        ),
        time=message.time,
        digest=message.digest,
    )


def call_reply(record: ReplyRecord, *, epoch: int, duplicate: bool) -> pb.CallReply:
    """The Call RPC's answer for an outcome (a handler error travels in-band)."""
    reply = pb.CallReply(epoch=epoch, seq=record.seq, duplicate=duplicate)
    if record.error is not None:
        reply.error.CopyFrom(error_to_message(record.error))
    else:
        reply.reply = record.reply or b""
    return reply


def cast_reply(record: ReplyRecord, *, epoch: int, duplicate: bool) -> pb.CastReply:
    reply = pb.CastReply(epoch=epoch, seq=record.seq, duplicate=duplicate)
    if record.error is not None:
        reply.error.CopyFrom(error_to_message(record.error))
    return reply


def event_to_message(
    event: Event, *, epoch: int, missed: int = 0, renumbered: bool = False
) -> pb.Event:
    return pb.Event(
        topic=event.topic,
        number=event.number,
        seq=event.seq,
        time=event.time,
        data=event.data,
        epoch=epoch,
        missed=missed,
        origin_epoch=event.epoch,
        audience=event.audience,
        renumbered=renumbered,
    )


def event_from_message(message: pb.Event) -> Event:
    return Event(
        message.topic, message.number, message.seq, message.time, message.data,
        message.origin_epoch, message.audience,
    )


def snapshot_to_chunks(
    snapshot: Snapshot,
    *,
    epoch: int,
    state_chunk_bytes: int = STATE_CHUNK_BYTES,
    records_per_batch: int = RECORDS_PER_BATCH,
    batch_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[pb.SnapshotChunk]:
    """The Snapshot stream: a header, reply batches, event batches, then state chunks.

    Record batches are bounded in bytes (`batch_bytes`, by `replies.record_size` and
    `event_size`) as well as in count, so large replies never make one chunk too big for a
    receiver's message limit (a record over the budget travels alone). Slices of the state are
    taken lazily, so a large state is never copied whole again.
    """
    header = pb.SnapshotHeader(
        applied_seq=snapshot.applied_seq,
        applied_epoch=snapshot.applied_epoch,
        server_version=snapshot.server_version,
        codec=snapshot.codec,
        state_size=len(snapshot.state),
        topics=[
            pb.TopicPosition(topic=topic, next_event=number)
            for topic, number in sorted(snapshot.next_event.items())
        ],
        replies_complete_after=snapshot.replies_complete_after,
        merge_seqs=snapshot.merge_seqs,
    )
    yield pb.SnapshotChunk(epoch=epoch, header=header)
    for batch in batches_by_bytes(
        snapshot.replies, record_size, max_bytes=batch_bytes, max_count=records_per_batch
    ):
        records = [reply_record_to_message(record) for record in batch]
        yield pb.SnapshotChunk(epoch=epoch, replies=pb.ReplyBatch(records=records))
    for batch_events in batches_by_bytes(
        snapshot.events, event_size, max_bytes=batch_bytes, max_count=records_per_batch
    ):
        events = [event_to_message(event, epoch=epoch) for event in batch_events]
        yield pb.SnapshotChunk(epoch=epoch, events=pb.EventBatch(events=events))
    state = memoryview(snapshot.state)
    for start in range(0, len(state), state_chunk_bytes):
        yield pb.SnapshotChunk(epoch=epoch, state=bytes(state[start : start + state_chunk_bytes]))


def snapshot_from_chunks(chunks: Iterable[pb.SnapshotChunk]) -> tuple[Snapshot, int]:
    """Reassemble a Snapshot stream; returns the snapshot and the sender's epoch.

    Refuses a stream without a header first, with mixed epochs, or whose state does not add
    up to the announced size (a stream cut short must not be mistaken for a small state).
    """
    iterator = iter(chunks)
    first = next(iterator, None)
    if first is None or first.WhichOneof("part") != "header":
        raise WireError("a snapshot stream must start with its header")
    epoch = first.epoch
    header = first.header
    replies: list[ReplyRecord] = []
    events: list[Event] = []
    state = bytearray()
    for chunk in iterator:
        if chunk.epoch != epoch:
            raise WireError(f"snapshot chunk from epoch {chunk.epoch} in a stream of {epoch}")
        part = chunk.WhichOneof("part")
        if part == "replies":
            replies.extend(reply_record_from_message(r) for r in chunk.replies.records)
        elif part == "events":
            events.extend(event_from_message(e) for e in chunk.events.events)
        elif part == "state":
            state.extend(chunk.state)
            if len(state) > header.state_size:
                raise WireError(f"snapshot state exceeds its announced {header.state_size} bytes")
        else:
            raise WireError(f"unexpected snapshot chunk {part!r} after the header")
    if len(state) != header.state_size:
        raise WireError(
            f"snapshot stream ended after {len(state)} of {header.state_size} state bytes"
        )
    snapshot = Snapshot(
        applied_seq=header.applied_seq,
        applied_epoch=header.applied_epoch,
        server_version=header.server_version,
        codec=header.codec,
        state=bytes(state),
        replies=tuple(replies),
        events=tuple(events),
        next_event={position.topic: position.next_event for position in header.topics},
        replies_complete_after=header.replies_complete_after,
        merge_seqs=tuple(header.merge_seqs),
    )
    return snapshot, epoch


def merge_payload(snapshot: Snapshot) -> bytes:
    """The payload of the MERGE entry that merges an exported `snapshot` (a split brain's
    loser) into this replica: its encoded state and its reply table (`pb.MergePayload`)."""
    message = pb.MergePayload(
        state=snapshot.state,
        replies=[reply_record_to_message(record) for record in snapshot.replies],
        replies_complete_after=snapshot.replies_complete_after,
    )
    return message.SerializeToString()


def merge_entry_payload(snapshot: Snapshot, reply_bytes: int = MERGE_REPLY_BYTES) -> bytes:
    """`merge_payload` of `snapshot` carrying only its newest reply records that fit
    `reply_bytes` (`replies.newest_records`: the completeness bound rises over the dropped
    ones), so that a loser's full reply table does not push the entry past what one replicated
    entry may carry (`limits.MAX_ENTRY_BYTES`)."""
    records, complete_after = newest_records(
        snapshot.replies, snapshot.replies_complete_after, reply_bytes
    )
    if len(records) == len(snapshot.replies):
        return merge_payload(snapshot)
    return merge_payload(
        dataclasses.replace(snapshot, replies=records, replies_complete_after=complete_after)
    )


def merge_payload_parts(payload: bytes) -> tuple[bytes, tuple[ReplyRecord, ...], float]:
    """(encoded state, reply records, their table's completeness bound) of a MERGE entry's
    payload; WireError if malformed."""
    message = pb.MergePayload()
    try:
        message.ParseFromString(payload)
    except Exception as error:  # protobuf's DecodeError has no stable import path
        raise WireError(f"malformed merge payload: {error}") from error
    records = tuple(reply_record_from_message(r) for r in message.replies)
    return message.state, records, message.replies_complete_after
