"""Core values to protobuf messages and back, and the snapshot stream's framing."""

from __future__ import annotations

import pytest
from gencluster.codec import JsonCodec
from gencluster.log import (
    Command,
    CommandKind,
    Event,
    HandlerError,
    LogEntry,
    ReplyRecord,
    Snapshot,
)
from gencluster.machine import StateMachine
from gencluster.proto import gencluster_pb2 as pb
from gencluster.wire import (
    WireError,
    call_reply,
    cast_reply,
    entry_from_message,
    entry_to_message,
    event_from_message,
    event_to_message,
    reply_record_from_message,
    reply_record_to_message,
    snapshot_from_chunks,
    snapshot_to_chunks,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

texts = st.text(max_size=10)
records = st.builds(
    ReplyRecord,
    request_id=texts,
    seq=st.integers(1, 2**40),
    reply=st.none() | st.binary(max_size=20),
    error=st.none() | st.builds(HandlerError, type=texts, message=texts),
).filter(lambda record: record.reply is None or record.error is None)
events = st.builds(
    Event,
    topic=texts,
    number=st.integers(1, 2**40),
    seq=st.integers(1, 2**40),
    time=st.floats(0, 2e9),
    data=st.binary(max_size=20),
)
snapshots = st.builds(
    Snapshot,
    applied_seq=st.integers(0, 2**40),
    applied_epoch=st.integers(0, 2**20),
    server_version=st.integers(0, 100),
    codec=st.sampled_from(["json", "msgpack"]),
    state=st.binary(max_size=200),
    replies=st.lists(records, max_size=7).map(tuple),
    events=st.lists(events, max_size=7).map(tuple),
    next_event=st.dictionaries(texts, st.integers(1, 2**30), max_size=4),
)


@given(
    seq=st.integers(1, 2**63),
    epoch=st.integers(0, 2**63),
    kind=st.sampled_from(list(CommandKind)),
    request_id=texts,
    payload=st.binary(max_size=50),
    time=st.floats(allow_nan=False, allow_infinity=False),
    seed=st.integers(0, 2**64 - 1),
)
def test_log_entries_round_trip(
    seq: int,
    epoch: int,
    kind: CommandKind,
    request_id: str,
    payload: bytes,
    time: float,
    seed: int,
) -> None:
    entry = LogEntry(seq, epoch, Command(kind, request_id, payload, time, seed))
    wire = pb.LogEntry.FromString(entry_to_message(entry).SerializeToString())
    assert entry_from_message(wire) == entry


def test_malformed_entries_are_refused() -> None:
    with pytest.raises(WireError, match="no valid command kind"):
        entry_from_message(pb.LogEntry(seq=1, epoch=1, command=pb.Command()))
    with pytest.raises(WireError, match="numbered from 1"):
        entry_from_message(pb.LogEntry(seq=0, command=pb.Command(kind=pb.COMMAND_KIND_CAST)))


@given(record=records)
def test_reply_records_round_trip(record: ReplyRecord) -> None:
    assert reply_record_from_message(reply_record_to_message(record)) == record


@given(event=events, epoch=st.integers(0, 100), missed=st.integers(0, 100))
def test_events_round_trip(event: Event, epoch: int, missed: int) -> None:
    message = event_to_message(event, epoch=epoch, missed=missed)
    assert (message.epoch, message.missed) == (epoch, missed)
    assert event_from_message(message) == event


def test_call_and_cast_replies() -> None:
    ok = call_reply(ReplyRecord("r", 4, reply=b"5"), epoch=2, duplicate=True)
    assert (ok.epoch, ok.seq, ok.reply, ok.duplicate) == (2, 4, b"5", True)
    failed = call_reply(ReplyRecord("r", 4, error=HandlerError("E", "m")), epoch=2, duplicate=False)
    assert failed.WhichOneof("outcome") == "error" and failed.error.message == "m"
    assert cast_reply(ReplyRecord("c", 5), epoch=2, duplicate=False).HasField("error") is False
    cast_failed = cast_reply(
        ReplyRecord("c", 5, error=HandlerError("E", "m")), epoch=2, duplicate=False
    )
    assert cast_failed.error.type == "E"


@given(snapshot=snapshots, chunk_bytes=st.integers(1, 64), per_batch=st.integers(1, 4))
def test_snapshots_survive_the_stream(snapshot: Snapshot, chunk_bytes: int, per_batch: int) -> None:
    chunks = list(
        snapshot_to_chunks(
            snapshot, epoch=9, state_chunk_bytes=chunk_bytes, records_per_batch=per_batch
        )
    )
    assert all(len(chunk.state) <= chunk_bytes for chunk in chunks)
    wire = [pb.SnapshotChunk.FromString(chunk.SerializeToString()) for chunk in chunks]
    assert snapshot_from_chunks(wire) == (snapshot, 9)


def test_a_machine_snapshot_restores_after_the_stream() -> None:
    codec = JsonCodec()
    machine = StateMachine.from_init(Ledger(), codec, 0)
    for seq in range(1, 6):
        payload = codec.encode(["add", seq])
        machine.apply(LogEntry(seq, 1, Command(CommandKind.CALL, f"r{seq}", payload, 1.0, seq)))
    received, _ = snapshot_from_chunks(snapshot_to_chunks(machine.snapshot(), epoch=1))
    restored = StateMachine.restore(Ledger(), codec, received)
    assert restored.snapshot() == machine.snapshot()


def chunks_of(snapshot: Snapshot) -> list[pb.SnapshotChunk]:
    return list(snapshot_to_chunks(snapshot, epoch=3, state_chunk_bytes=2))


SAMPLE = Snapshot(5, 3, 1, "json", b"[1,2,3]", replies=(ReplyRecord("r", 5),))


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda chunks: [], "must start with its header"),
        (lambda chunks: chunks[1:], "must start with its header"),
        (lambda chunks: chunks[:-1], "ended after 6 of 7 state bytes"),
        (lambda chunks: [*chunks, pb.SnapshotChunk(epoch=3, state=b"x")], "exceeds its announced"),
        (
            lambda chunks: [*chunks[:2], pb.SnapshotChunk(epoch=4, state=b"[1")],
            "from epoch 4 in a stream of 3",
        ),
        (
            lambda chunks: [*chunks, pb.SnapshotChunk(epoch=3, header=pb.SnapshotHeader())],
            "unexpected snapshot chunk 'header'",
        ),
    ],
)
def test_broken_snapshot_streams_are_refused(mangle: object, message: str) -> None:
    with pytest.raises(WireError, match=message):
        snapshot_from_chunks(mangle(chunks_of(SAMPLE)))  # type: ignore[operator]
