"""The Available checks on hand-made histories: a good split passes, and every way a merge can
go wrong is caught (a check that cannot fail checks nothing)."""

from __future__ import annotations

import itertools

import pytest
from gencluster_testing.partitions.history import History, Marker, Operation, Outcome
from gencluster_testing.partitions.merge_checks import (
    all_available_checks,
    both_sides_served,
    combine,
    duplicates_only_across_the_split,
    each_term_is_a_counter,
    merged_counter_continues_above,
    split_figures,
)

pytestmark = pytest.mark.unit

LOSER = "127.9.64.1:50051"
WINNER = "127.9.64.2:50051"
_ids = itertools.count()


def op(start: float, end: float, value: int | None, epoch: int, by: str, group: str,
       *, duplicate: bool = False) -> Operation:
    ok = value is not None
    return Operation(
        client=0, request_id=f"r{next(_ids)}", request="next_value", invoked_at=start,
        completed_at=end, outcome=Outcome.OK if ok else Outcome.UNKNOWN, value=value,
        epoch=epoch if ok else None, served_by=by if ok else None, group=group,
        duplicate=duplicate,
    )


MARKERS = [Marker(10.0, "split"), Marker(20.0, "heal"), Marker(25.0, "merged")]


def good_split() -> History:
    """The loser (epoch 1) hands out 1..3 before the split and 4..6 during it; the winner
    (epoch 2) lost nothing (its copy ended at 3) and hands out 4..5 during the split; after
    the merge (max = 6) the winner continues at 7, for both groups of clients."""
    ops = [
        op(1, 1.1, 1, 1, LOSER, "isolated"), op(2, 2.1, 2, 1, LOSER, "isolated"),
        op(3, 3.1, 3, 1, LOSER, "isolated"),
        op(11, 11.1, 4, 1, LOSER, "isolated"), op(15, 15.1, 5, 1, LOSER, "isolated"),
        op(19, 19.1, 6, 1, LOSER, "isolated"),
        op(15, 15.2, 4, 2, WINNER, "others"), op(16, 16.1, 5, 2, WINNER, "others"),
        op(26, 26.1, 7, 2, WINNER, "others"), op(27, 27.1, 8, 2, WINNER, "isolated"),
    ]
    return History(operations=ops, markers=list(MARKERS), started_at=0.0, stopped_at=30.0)


def with_ops(history: History, *extra: Operation) -> History:
    return History(operations=sorted([*history.operations, *extra], key=lambda o: o.invoked_at),
                   markers=history.markers, started_at=history.started_at,
                   stopped_at=history.stopped_at)


def test_a_good_split_and_merge_passes_every_check() -> None:
    assert all_available_checks(good_split(), groups=["isolated", "others"]) == []


def test_one_side_silent_during_the_split_is_not_available() -> None:
    history = good_split()
    silenced = History(
        operations=[o for o in history.operations
                    if not (o.group == "isolated" and 10 <= o.completed_at <= 20)],
        markers=history.markers, started_at=0.0, stopped_at=30.0,
    )
    (violation,) = both_sides_served(silenced, "split", "heal", ["isolated", "others"])
    assert "side 'isolated' got no ok reply" in violation


def test_one_term_answering_both_sides_is_no_split() -> None:
    """Both groups answered by epoch 1: the clients of 'others' reached the old active (for
    instance through a redirect), so nothing shows that two sides served."""
    history = good_split()
    same_term = History(
        operations=[o for o in history.operations if o.epoch == 1]
        + [op(12, 12.1, 100, 1, LOSER, "others")],
        markers=history.markers, started_at=0.0, stopped_at=30.0,
    )
    violations = both_sides_served(same_term, "split", "heal", ["isolated", "others"])
    assert any("both answered by epoch [1]" in v for v in violations)


def test_a_value_below_the_merged_counter_after_the_merge_is_caught() -> None:
    """A merge that kept the winner's state (5) instead of max (6): 6 is handed out again."""
    history = with_ops(good_split(), op(28, 28.1, 6, 2, WINNER, "others"))
    violations = merged_counter_continues_above(history, "merged")
    assert any("is not above" in v and "value=6" in v for v in violations)
    assert any("6 handed out twice" in v
               for v in duplicates_only_across_the_split(history, "split", "merged"))


def test_the_same_value_twice_after_the_merge_is_caught() -> None:
    history = with_ops(good_split(), op(29, 29.1, 8, 2, WINNER, "others"))
    violations = merged_counter_continues_above(history, "merged")
    assert any("8 handed out twice after 'merged'" in v for v in violations)


def test_nothing_handed_out_after_the_merge_fails() -> None:
    history = good_split()
    before_merge = History(operations=[o for o in history.operations if o.invoked_at < 25],
                           markers=history.markers, started_at=0.0, stopped_at=30.0)
    assert merged_counter_continues_above(before_merge, "merged") == [
        "no value was handed out after 'merged'"
    ]


def test_a_term_that_repeats_or_goes_back_is_not_a_counter() -> None:
    repeated = with_ops(good_split(), op(17, 17.1, 5, 2, WINNER, "others"))
    assert any("epoch 2 handed out 5 twice" in v for v in each_term_is_a_counter(repeated))
    backwards = with_ops(good_split(), op(18, 18.1, 2, 2, WINNER, "others"))
    assert any("with a value not above" in v for v in each_term_is_a_counter(backwards))


def test_a_duplicate_reply_hands_out_nothing_new() -> None:
    """A retry answered from the reply table (carried over by the merge) repeats its original
    value legitimately."""
    retried = with_ops(good_split(), op(26, 26.5, 6, 2, WINNER, "isolated", duplicate=True))
    assert all_available_checks(retried, groups=["isolated", "others"]) == []


def test_duplicates_before_the_split_or_within_one_term_are_not_explained() -> None:
    before = with_ops(good_split(), op(4, 4.1, 3, 2, WINNER, "others"))
    assert duplicates_only_across_the_split(before, "split", "merged")
    same_term = with_ops(good_split(), op(12, 12.1, 4, 1, LOSER, "others"))
    assert duplicates_only_across_the_split(same_term, "split", "merged")


@pytest.mark.parametrize("label", ["split", "heal", "merged"])
def test_a_missing_marker_is_an_error_not_a_pass(label: str) -> None:
    history = good_split()
    history.markers = [m for m in history.markers if m.label != label]
    with pytest.raises(KeyError):
        all_available_checks(history, groups=["isolated", "others"])


def test_combine_keeps_both_recorders_operations_and_markers() -> None:
    history = good_split()
    isolated = History([o for o in history.operations if o.group == "isolated"],
                       [Marker(10.0, "split")], started_at=0.0, stopped_at=30.0)
    others = History([o for o in history.operations if o.group == "others"],
                     [Marker(20.0, "heal"), Marker(25.0, "merged")], started_at=14.0,
                     stopped_at=31.0)
    combined = combine(isolated, others)
    assert len(combined.operations) == len(history.operations)
    assert [m.label for m in combined.markers] == ["split", "heal", "merged"]
    assert (combined.started_at, combined.stopped_at) == (0.0, 31.0)
    assert all_available_checks(combined, groups=["isolated", "others"]) == []


def test_split_figures() -> None:
    figures = split_figures(good_split(), isolated="isolated", other="others",
                            new_epoch_above=1)
    assert figures.other_side_failover == pytest.approx(15.2 - 10.0)
    # isolated side: ok completions at 3.1, 11.1, 15.1, 19.1 around the window 10..20.
    assert figures.isolated_side_unavailable == pytest.approx(11.1 - 3.1)
    # other side after its failover at 15.2: next ok at 16.1, then none until 26.1.
    assert figures.other_side_unavailable_after_failover == pytest.approx(26.1 - 16.1)
