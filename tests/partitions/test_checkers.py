"""The checkers on hand-made histories: each must accept the good ones and catch the bad ones
(a checker that cannot fail checks nothing)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from gencluster_testing.partitions.checkers import (
    all_fenced_checks,
    counter_linearizable,
    no_lost_acknowledged,
    single_writer_per_instant,
    terms_do_not_overlap,
    unavailability,
    unavailability_by_group,
)
from gencluster_testing.partitions.history import History, Marker, Operation, Outcome

pytestmark = pytest.mark.unit

ACTIVE_A = "127.9.64.1:50051"
ACTIVE_B = "127.9.64.2:50051"
_ids = itertools.count()


def op(
    start: float, end: float, value: int | None = None, *, epoch: int | None = 1,
    by: str | None = ACTIVE_A, outcome: Outcome | None = None, client: int = 0,
    group: str = "all", duplicate: bool = False,
) -> Operation:
    if outcome is None:
        outcome = Outcome.OK if value is not None else Outcome.UNKNOWN
    ok = outcome is Outcome.OK
    return Operation(
        client=client, request_id=f"r{next(_ids)}", request="next_value", invoked_at=start,
        completed_at=end, outcome=outcome, value=value if ok else None,
        epoch=epoch if ok else None, served_by=by if ok else None, group=group,
        duplicate=duplicate,
    )


def history(*ops: Operation, markers: tuple[tuple[float, str], ...] = (),
            stopped_at: float | None = None) -> History:
    return History(
        operations=list(ops),
        markers=[Marker(at, label) for at, label in markers],
        started_at=0.0,
        stopped_at=stopped_at if stopped_at is not None else max(o.completed_at for o in ops),
    )


def sequential(values: list[int], epoch: int = 1, by: str = ACTIVE_A,
               start: float = 0.0) -> list[Operation]:
    return [op(start + i, start + i + 0.5, v, epoch=epoch, by=by) for i, v in enumerate(values)]


# -- counter_linearizable -------------------------------------------------------------------


def test_a_sequential_run_starting_anywhere_is_linearizable() -> None:
    assert counter_linearizable(history(*sequential([41, 42, 43, 44]))) == []


def test_concurrent_calls_may_complete_in_any_order() -> None:
    # Both overlap: 8 may be answered before 7 is.
    good = history(op(0, 3, 7, client=0), op(1, 2, 8, client=1), op(4, 5, 9))
    assert counter_linearizable(good) == []


def test_a_value_handed_out_twice_is_caught() -> None:
    bad = history(op(0, 1, 5, client=0), op(0, 1, 5, client=1))
    (violation,) = counter_linearizable(bad)
    assert "value 5 returned 2 times" in violation


def test_a_later_call_that_sees_an_older_counter_is_caught() -> None:
    bad = history(op(0, 1, 9), op(2, 3, 8))
    (violation,) = counter_linearizable(bad)
    assert "returned 8 although" in violation and "had already returned 9" in violation


def test_a_gap_explained_by_an_unknown_call_is_fine() -> None:
    # 2 was taken by a call that timed out, invoked before 3 completed.
    good = history(op(0, 1, 1), op(1.5, 6, outcome=Outcome.UNKNOWN), op(2, 3, 3))
    assert counter_linearizable(good) == []


def test_a_gap_without_an_unknown_call_is_caught() -> None:
    bad = history(op(0, 1, 1), op(2, 3, 3))
    (violation,) = counter_linearizable(bad)
    assert "1 values no ok call returned (2)" in violation


def test_a_failed_call_does_not_explain_a_gap() -> None:
    bad = history(op(0, 1, 1), op(1.5, 2, outcome=Outcome.FAILED), op(2, 3, 3))
    assert counter_linearizable(bad)


def test_an_unknown_call_invoked_after_the_upper_value_completed_does_not_explain_the_gap() -> None:
    # 3 completed at 3; the unknown call began at 4: it cannot have taken 2.
    bad = history(op(0, 1, 1), op(2, 3, 3), op(4, 9, outcome=Outcome.UNKNOWN))
    assert counter_linearizable(bad)


def test_one_unknown_call_explains_one_missing_value_only() -> None:
    bad = history(op(0, 1, 1), op(0.5, 9, outcome=Outcome.UNKNOWN), op(2, 3, 4))
    (violation,) = counter_linearizable(bad)
    assert "2 values" in violation and "2..3" in violation
    good = history(op(0, 1, 1), op(0.5, 9, outcome=Outcome.UNKNOWN),
                   op(0.6, 9, outcome=Outcome.UNKNOWN), op(2, 3, 4))
    assert counter_linearizable(good) == []


def test_a_non_integer_ok_reply_is_reported() -> None:
    assert counter_linearizable(history(op(0, 1, 1), op(2, 3, "x")))  # type: ignore[arg-type]


# -- no_lost_acknowledged -------------------------------------------------------------------


def test_final_value_at_or_above_every_ack_is_fine() -> None:
    ops = history(*sequential([1, 2, 3]), op(3.5, 8, outcome=Outcome.UNKNOWN))
    assert no_lost_acknowledged(ops, 3) == []
    assert no_lost_acknowledged(ops, 4) == []  # the unknown call was applied


def test_a_final_value_below_an_ack_is_a_lost_write() -> None:
    (violation,) = no_lost_acknowledged(history(*sequential([1, 2, 3])), 2)
    assert "below 1 acknowledged values (3)" in violation


def test_a_final_value_too_far_above_is_caught() -> None:
    ops = history(*sequential([1, 2, 3]), op(3.5, 8, outcome=Outcome.UNKNOWN))
    (violation,) = no_lost_acknowledged(ops, 5)
    assert "only 1 calls have an unknown outcome" in violation


# -- single_writer_per_instant --------------------------------------------------------------


def test_a_clean_failover_has_one_writer_per_instant() -> None:
    before = sequential([1, 2, 3], epoch=1, by=ACTIVE_A)
    after = sequential([4, 5], epoch=2, by=ACTIVE_B, start=10)
    assert single_writer_per_instant(history(*before, *after)) == []


def test_two_addresses_answering_for_one_epoch_is_caught() -> None:
    bad = history(op(0, 1, 1, epoch=3, by=ACTIVE_A), op(2, 3, 2, epoch=3, by=ACTIVE_B))
    (violation,) = single_writer_per_instant(bad)
    assert "epoch 3 served by 2 addresses" in violation


def test_a_deposed_active_serving_after_its_successor_is_caught() -> None:
    bad = history(op(0, 1, 1, epoch=1), op(2, 3, 2, epoch=2, by=ACTIVE_B),
                  op(4, 5, 3, epoch=1, by=ACTIVE_A))
    violations = single_writer_per_instant(bad)
    assert any("served by epoch 1 after" in v for v in violations), violations


def test_overlapping_calls_of_two_epochs_during_a_failover_are_fine() -> None:
    # The old term's call was invoked before the new term's first reply completed.
    good = history(op(0, 4, 1, epoch=1), op(1, 2, 2, epoch=2, by=ACTIVE_B))
    assert single_writer_per_instant(good) == []


def test_values_must_grow_with_the_epoch() -> None:
    bad = history(op(0, 1, 10, epoch=1), op(0.5, 2, 9, epoch=2, by=ACTIVE_B))
    (violation,) = single_writer_per_instant(bad)
    assert "epoch 2 handed out 9" in violation and "not above epoch 1's 10" in violation


def test_a_duplicate_reply_may_carry_an_old_value_under_a_new_epoch() -> None:
    # Value 2 was applied in epoch 1, its reply lost; the retry got it from epoch 2's active.
    good = history(op(0, 1, 1, epoch=1), op(0.5, 6, 2, epoch=2, by=ACTIVE_B, duplicate=True),
                   op(0.6, 2, 3, epoch=1), op(7, 8, 4, epoch=2, by=ACTIVE_B))
    assert single_writer_per_instant(good) == []


def test_terms_in_order_pass_and_an_overlap_is_caught() -> None:
    before = sequential([1, 2, 3], epoch=1, by=ACTIVE_A)
    after = sequential([4, 5], epoch=2, by=ACTIVE_B, start=10)
    assert terms_do_not_overlap(history(*before, *after)) == []
    # Epoch 1 answered at 2.0, after epoch 2 had answered at 1.5 (invoked before it, so
    # single_writer_per_instant's rule 2 cannot see it).
    overlap = history(op(0, 2.0, 1, epoch=1), op(1, 1.5, 2, epoch=2, by=ACTIVE_B))
    assert single_writer_per_instant(overlap) == []
    (violation,) = terms_do_not_overlap(overlap)
    assert "epoch 1 still answered" in violation and "after epoch 2 had answered" in violation


# -- unavailability -------------------------------------------------------------------------


def test_unavailability_is_the_longest_gap_overlapping_the_fault() -> None:
    ops = [*sequential([1, 2, 3]), *sequential([4, 5], start=10)]
    recorded = history(*ops, markers=((3.0, "fault"), (20.0, "heal")))
    # Last ok before the fault completed at 2.5, first after at 10.5.
    assert unavailability(recorded, "fault", "heal") == pytest.approx(8.0)
    # A longer gap before the fault does not count.
    early = history(op(0, 0.5, 1), op(30, 30.5, 2), op(31, 31.5, 3), op(40, 40.5, 4),
                    markers=((35.0, "fault"),))
    assert unavailability(early, "fault") == pytest.approx(9.0)


def test_a_side_that_never_recovers_is_unavailable_until_the_end() -> None:
    ops = [op(0, 1, 1, group="majority", client=0), op(0, 1, 2, group="minority", client=1),
           op(5, 6, 3, group="majority", client=0)]
    recorded = history(*ops, markers=((2.0, "fault"), (4.0, "heal")), stopped_at=20.0)
    figures = unavailability_by_group(recorded, "fault", "heal")
    assert figures == {"majority": pytest.approx(5.0), "minority": pytest.approx(19.0)}


# -- the history itself ---------------------------------------------------------------------


def test_history_helpers_and_jsonl_round_trip(tmp_path: Path) -> None:
    recorded = history(op(0, 1, 1), op(2, 3, outcome=Outcome.UNKNOWN), op(4, 5, 2),
                       markers=((1.5, "fault"), (3.5, "heal")))
    assert [o.value for o in recorded.ok()] == [1, 2]
    assert len(recorded.by_outcome()[Outcome.UNKNOWN]) == 1
    assert [o.invoked_at for o in recorded.after("heal")] == [4]
    assert [o.invoked_at for o in recorded.before("fault")] == [0]
    back = History.from_jsonl(recorded.to_jsonl(tmp_path / "history.jsonl"))
    assert back == recorded


def test_all_fenced_checks_names_the_checker() -> None:
    bad: Any = history(op(0, 1, 1), op(2, 3, 1))
    violations = all_fenced_checks(bad, final_value=1)
    assert violations and all(v.startswith("counter_linearizable: ") for v in violations)
