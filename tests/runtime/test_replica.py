"""A replica's pure core as active and as standby: what is logged, what is answered directly,
and that standbys fed the active's entries (or a snapshot and then entries) stay identical."""

from __future__ import annotations

import json

import pytest
from gencluster.codec import JsonCodec, MessageTooLarge
from gencluster.log import CatchUp, CommandKind, NeedSnapshot, Retention, StaleEpoch
from gencluster.replica import Replica
from gencluster.replies import RequestIdReused
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

CODEC = JsonCodec(max_bytes=1024)


def active(retention: Retention | None = None) -> Replica:
    return Replica.from_init(Ledger(), CODEC, 0, retention=retention)


def submit(
    replica: Replica,
    request: object,
    request_id: str = "",
    *,
    epoch: int = 1,
    kind: CommandKind = CommandKind.CALL,
    time: float = 10.0,
    seed: int = 3,
):
    return replica.submit(
        kind, request_id, CODEC.encode(request), epoch=epoch, time=time, seed=seed
    )


def test_a_state_changing_call_is_logged_and_applied() -> None:
    replica = active()
    submission = submit(replica, ["add", 4], "r1")
    assert submission.entry is not None
    assert (submission.entry.seq, submission.entry.epoch) == (1, 1)
    assert submission.entry.command.payload == b'["add",4]'
    assert json.loads(submission.outcome.record.reply) == 4
    assert replica.applied_seq == replica.log.last_seq == 1


def test_a_retried_request_is_answered_from_the_table_without_a_new_entry() -> None:
    replica = active()
    first = submit(replica, ["add", 4], "r1")
    retry = submit(replica, ["add", 4], "r1")
    assert retry.entry is None
    assert retry.outcome.duplicate
    assert retry.outcome.record == first.outcome.record
    assert replica.log.last_seq == 1


def test_a_read_only_call_is_answered_without_a_new_entry() -> None:
    replica = active()
    submit(replica, ["add", 4])
    peek = submit(replica, ["peek"], "q")
    assert peek.entry is None
    assert json.loads(peek.outcome.record.reply) == 4
    assert replica.machine.state["total"] == 4
    assert replica.log.last_seq == 1
    as_cast = submit(replica, ["peek"], kind=CommandKind.CAST)
    assert as_cast.entry is not None  # only calls may be read-only


def test_an_undecodable_or_oversized_request_is_refused_before_logging() -> None:
    replica = active()
    with pytest.raises(Exception, match="cannot decode request as json"):
        replica.submit(CommandKind.CALL, "r", b"{nope", epoch=1, time=1.0, seed=1)
    with pytest.raises(MessageTooLarge):
        replica.submit(CommandKind.CALL, "r", b"1" * 2000, epoch=1, time=1.0, seed=1)
    assert replica.log.last_seq == 0 and replica.applied_seq == 0


def test_an_active_with_a_stale_epoch_cannot_submit() -> None:
    replica = active()
    submit(replica, ["add", 1], epoch=4)
    with pytest.raises(StaleEpoch):
        submit(replica, ["add", 1], epoch=3)


def test_a_standby_follows_the_active_entry_by_entry() -> None:
    primary = active()
    standby = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    for amount in (1, 2, 3):
        submission = submit(primary, ["add", amount], f"r{amount}")
        assert submission.entry is not None
        assert standby.receive(submission.entry) == submission.outcome
    assert standby.machine.state == primary.machine.state
    assert standby.reply_for("r2") == primary.reply_for("r2")


def test_a_standby_catches_up_within_the_window_and_needs_a_snapshot_outside() -> None:
    primary = active(Retention(max_entries=3))
    standby = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    for amount in range(1, 5):
        submit(primary, ["add", amount])
    assert isinstance(primary.catch_up(standby.applied_seq, standby.applied_epoch), NeedSnapshot)
    standby = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    submit(primary, ["add", 10])
    missing = primary.catch_up(standby.applied_seq, standby.applied_epoch)
    assert isinstance(missing, CatchUp)
    for entry in missing.entries:
        standby.receive(entry)
    assert standby.snapshot() == primary.snapshot()


def test_a_replica_requires_log_and_machine_to_agree() -> None:
    replica = active()
    submit(replica, ["add", 1])
    with pytest.raises(ValueError, match="log ends at 0 but the machine applied 1"):
        Replica(replica.machine, type(replica.log)())


operations = st.lists(
    st.tuples(
        st.sampled_from(["call", "cast", "peek", "fail", "publish"]),
        st.sampled_from(["", "a", "b", "c", "d", "e"]),
        st.integers(-3, 3),
    ),
    max_size=40,
)


@given(ops=operations, join_at=st.integers(0, 40), max_entries=st.integers(1, 8))
def test_standbys_fed_by_the_active_stay_identical(
    ops: list[tuple[str, str, int]], join_at: int, max_entries: int
) -> None:
    """An active serving a random workload (with retries, read-only calls and request ids
    reused for other requests), a standby that was there from the start and one that joins
    midway by snapshot + catch-up all end with the same snapshot; every duplicate request got
    its original reply, and every id reused with a different request was refused, changing
    nothing."""
    primary = active(Retention(max_entries=max_entries))
    early = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    late: Replica | None = None
    answered: dict[str, tuple[object, object]] = {}
    for index, (op, request_id, amount) in enumerate(ops):
        if index == join_at:
            late = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
        request, kind = {
            "call": (["add", amount], CommandKind.CALL),
            "cast": (["item", amount], CommandKind.CAST),
            "peek": (["peek"], CommandKind.CALL),
            "fail": (["fail"], CommandKind.CALL),
            "publish": (["publish_two", f"t{amount}"], CommandKind.CALL),
        }[op]
        key = (kind, request)
        if request_id in answered and answered[request_id][0] != key:
            before = primary.snapshot()
            with pytest.raises(RequestIdReused, match="reused with a different request"):
                submit(primary, request, request_id, kind=kind, seed=index, time=index)
            assert primary.snapshot() == before
            continue
        submission = submit(primary, request, request_id, kind=kind, seed=index, time=index)
        if request_id in answered:
            assert submission.outcome.duplicate
            assert submission.outcome.record == answered[request_id][1]
        elif request_id and op != "peek":
            answered[request_id] = (key, submission.outcome.record)
        if submission.entry is not None:
            early.receive(submission.entry)
    if late is None:
        late = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    missing = primary.catch_up(late.applied_seq, late.applied_epoch)
    if isinstance(missing, NeedSnapshot):
        late = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    else:
        for entry in missing.entries:
            late.receive(entry)
    assert early.snapshot() == primary.snapshot() == late.snapshot()
