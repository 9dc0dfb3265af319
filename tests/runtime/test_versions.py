"""Server class versions across merges, snapshots and entries (gencluster.versions): the
loser's state is converted with `code_change` before `merge`, on every replica to its own
version; a state of a newer version is refused unless the class accepts downgrades."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gencluster.codec import JsonCodec
from gencluster.log import Command, CommandKind, LogEntry, ReplyRecord, Snapshot
from gencluster.machine import RestoreDowngradeRefused, StateMachine
from gencluster.proto import gencluster_pb2 as pb
from gencluster.versions import (
    CodeChangeFailed,
    DowngradeRefused,
    converted,
    downgrade_refusal,
)
from gencluster.wire import merge_payload, merge_payload_parts

from tests.partitions.versioned_servers import (
    DowngradableIdServerV1,
    VersionedIdServerV1,
    VersionedIdServerV2,
)
from tests.runtime.replication_harness import FakeStandby, call, connected_term
from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

CODEC = JsonCodec()


def exported(state: Any, version: int, replies: tuple[ReplyRecord, ...] = ()) -> Snapshot:
    """A side's exported snapshot, as Admin.ExportState streams it."""
    return Snapshot(applied_seq=9, applied_epoch=3, server_version=version, codec=CODEC.name,
                    state=CODEC.encode(state, what="state", bounded=False), replies=replies)


def merge_entry(snapshot: Snapshot, seq: int = 1) -> LogEntry:
    return LogEntry(seq, 1, Command(CommandKind.MERGE, "gencluster:merge/x", merge_payload(
        snapshot), 1.0, 1))


def test_the_merge_payload_carries_the_losers_version() -> None:
    parts = merge_payload_parts(merge_payload(exported(5, 1)))
    assert parts.server_version == 1
    assert CODEC.decode(parts.state) == 5


def test_an_older_losers_state_goes_through_code_change_before_merge() -> None:
    winner = StateMachine(VersionedIdServerV2(), CODEC, {"last": 10, "format": 2})
    outcome = winner.apply(merge_entry(exported(17, 1)))
    assert outcome.ok, outcome.record.error
    assert winner.state == {"last": 17, "format": 2}


def test_each_replica_converts_the_loser_to_its_own_version() -> None:
    """During a rolling update the winner may be a v1 active with a v2 standby: the same MERGE
    entry leaves each in its own format, with the same value."""
    v1_active = StateMachine(VersionedIdServerV1(), CODEC, 10)
    v2_standby = StateMachine(VersionedIdServerV2(), CODEC, {"last": 10, "format": 2})
    entry = merge_entry(exported(17, 1))
    assert v1_active.apply(entry).ok and v2_standby.apply(entry).ok
    assert (v1_active.state, v2_standby.state) == (17, {"last": 17, "format": 2})


def test_a_newer_losers_state_is_refused_by_an_older_class_and_changes_nothing() -> None:
    winner = StateMachine(VersionedIdServerV1(), CODEC, 10)
    outcome = winner.apply(merge_entry(exported({"last": 20, "format": 2}, 2)))
    assert outcome.record.error is not None
    assert outcome.record.error.type == "DowngradeRefused"
    assert "version 2" in outcome.record.error.message
    assert winner.state == 10


def test_a_class_that_accepts_downgrades_converts_a_newer_state_down() -> None:
    winner = StateMachine(DowngradableIdServerV1(), CODEC, 10)
    assert winner.apply(merge_entry(exported({"last": 20, "format": 2}, 2))).ok
    assert winner.state == 20


def test_a_payload_without_a_version_is_taken_as_the_replicas_own() -> None:
    """A MERGE entry written by a runtime older than the field (server_version 0)."""
    winner = StateMachine(VersionedIdServerV2(), CODEC, {"last": 1, "format": 2})
    assert winner.apply(merge_entry(exported({"last": 4, "format": 2}, 0))).ok
    assert winner.state == {"last": 4, "format": 2}


def test_a_failing_code_change_fails_the_merge_and_changes_nothing() -> None:
    winner = StateMachine(VersionedIdServerV2(), CODEC, {"last": 3, "format": 2})
    outcome = winner.apply(merge_entry(exported("not an int", 1)))
    assert outcome.record.error is not None
    assert outcome.record.error.type == "CodeChangeFailed"
    assert winner.state == {"last": 3, "format": 2}


def test_a_snapshot_of_a_newer_version_is_refused_unless_downgrades_are_accepted() -> None:
    newer = exported({"last": 8, "format": 2}, 2)
    refused = r"version 2 .* VersionedIdServerV1 version 1"
    with pytest.raises(RestoreDowngradeRefused, match=refused):
        StateMachine.restore(VersionedIdServerV1(), CODEC, newer)
    assert StateMachine.restore(DowngradableIdServerV1(), CODEC, newer).state == 8
    assert StateMachine.restore(VersionedIdServerV2(), CODEC, exported(8, 1)).state == {
        "last": 8, "format": 2}


def test_the_rule_itself() -> None:
    v1, v2 = VersionedIdServerV1(), VersionedIdServerV2()
    assert downgrade_refusal(v2, 1, "x") is None and downgrade_refusal(v2, 2, "x") is None
    assert downgrade_refusal(v2, 0, "x") is None
    refusal = downgrade_refusal(v1, 2, "the active's log")
    assert refusal is not None and refusal.startswith("the active's log was written by version 2")
    assert "accepts_downgrade" in refusal
    assert downgrade_refusal(DowngradableIdServerV1(), 2, "x") is None
    with pytest.raises(DowngradeRefused):
        converted(v1, 2, {"last": 1, "format": 2}, "x")
    with pytest.raises(CodeChangeFailed, match=r"code_change\(1, state\) of VersionedIdServerV2"):
        converted(v2, 1, [], "x")
    assert converted(v2, 2, "untouched", "x") == "untouched"


def test_every_batch_says_the_actives_server_version() -> None:
    """What a standby of an older class refuses on (follower: `downgrade_refusal` of
    `EntryBatch.server_version`)."""

    async def stream() -> list[pb.ReplicateDown]:
        standby = FakeStandby()
        term, _, server = await connected_term(standby)
        for number in range(3):
            await call(term, number)
        term.close()
        await asyncio.gather(server, return_exceptions=True)
        return standby.sent

    batches = [m.entries for m in asyncio.run(stream()) if m.WhichOneof("message") == "entries"]
    assert batches and {batch.server_version for batch in batches} == {Ledger.version}
    older = VersionedIdServerV1()
    refusal = downgrade_refusal(older, batches[0].server_version, "the active's log")
    assert refusal is not None and "version 2" in refusal
