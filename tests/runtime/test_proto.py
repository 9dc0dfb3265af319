"""The wire contract: the committed generated code matches the .proto, imports inside the
package, and carries what the contract promises (epochs, request ids, the three services)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.proto.generate import GENERATED, PACKAGE_ROOT, PROTO, generate, main

pytestmark = pytest.mark.unit

COMMITTED = PACKAGE_ROOT / PROTO.parent


def test_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert [path.name for path in written] == list(GENERATED)
    for path in written:
        committed = COMMITTED / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} differs from what gencluster.proto generates; run "
            "`python -m gencluster.proto.generate` and commit the result"
        )


def test_the_generator_command_line_writes_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--output-root", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / PROTO.parent / name) for name in GENERATED]


def test_generated_grpc_code_imports_the_messages_inside_the_package() -> None:
    source = (COMMITTED / "gencluster_pb2_grpc.py").read_text()
    assert "from gencluster.proto import gencluster_pb2" in source
    assert "\nimport gencluster_pb2" not in source


def test_package_and_services() -> None:
    assert pb.DESCRIPTOR.package == "gencluster.v1"
    services = pb.DESCRIPTOR.services_by_name
    methods = {name: set(service.methods_by_name) for name, service in services.items()}
    assert methods == {
        "Client": {"Call", "Cast", "Subscribe"},
        "Peer": {"Snapshot", "Replicate", "Promise"},
        "Admin": {"Status", "GetState", "Switchover", "Demote", "ExportState", "Merge",
                  "PauseWrites", "Restore"},
    }
    streaming = {
        (service, method.name): (method.client_streaming, method.server_streaming)
        for service, descriptor in services.items()
        for method in descriptor.methods
    }
    assert streaming[("Client", "Subscribe")] == (False, True)
    assert streaming[("Peer", "Snapshot")] == (False, True)
    assert streaming[("Peer", "Replicate")] == (True, True)
    assert streaming[("Admin", "ExportState")] == (False, True)
    assert streaming[("Admin", "Merge")] == (True, False)
    for name in ("ClientStub", "PeerStub", "AdminStub", "ClientServicer", "PeerServicer"):
        assert hasattr(pb_grpc, name)


@pytest.mark.parametrize(
    "message",
    [
        "CallReply",
        "CastReply",
        "Event",
        "SnapshotRequest",
        "SnapshotChunk",
        "Hello",
        "Ack",
        "EntryBatch",
        "NeedSnapshot",
        "LogEntry",
        "StatusReply",
        "GetStateReply",
        "MergeReply",
    ],
)
def test_every_reply_and_peer_message_carries_an_epoch(message: str) -> None:
    assert "epoch" in pb.DESCRIPTOR.message_types_by_name[message].fields_by_name


@pytest.mark.parametrize("message", ["CallRequest", "CastRequest", "Command", "ReplyRecord"])
def test_requests_carry_a_request_id(message: str) -> None:
    assert "request_id" in pb.DESCRIPTOR.message_types_by_name[message].fields_by_name


def test_a_log_entry_round_trips_through_the_wire_format() -> None:
    entry = pb.LogEntry(
        seq=7,
        epoch=3,
        command=pb.Command(
            kind=pb.COMMAND_KIND_CALL,
            request_id="r-1",
            payload=b'"next_value"',
            time=1764090000.25,
            seed=2**64 - 1,
        ),
    )
    assert pb.LogEntry.FromString(entry.SerializeToString()) == entry


def test_subscribe_distinguishes_absent_from_event_from_zero() -> None:
    live = pb.SubscribeRequest(topic="room:lobby")
    resume = pb.SubscribeRequest(topic="room:lobby", from_event=0)
    assert not live.HasField("from_event")
    assert resume.HasField("from_event")


def test_outcomes_are_one_of_reply_or_error() -> None:
    reply = pb.CallReply(epoch=1, seq=2, reply=b"1")
    assert reply.WhichOneof("outcome") == "reply"
    reply.error.CopyFrom(pb.HandlerError(type="ValueError", message="boom"))
    assert reply.WhichOneof("outcome") == "error"
    assert pb.ReplyRecord(request_id="c", seq=1).WhichOneof("outcome") is None  # a cast
