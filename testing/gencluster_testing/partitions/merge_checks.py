"""Checks of `partitionPolicy: Available` histories (`history.History`): pure functions.

`checkers.py` judges Fenced histories, where one linearizable counter must explain every
reply. Available promises something else on purpose: during a split each side is its own
counter (the two may hand out the same values), and after the merge the counter continues
above everything either side handed out (id_server's `merge` is `max`). These functions say
exactly that, each returning human-readable violations (empty: fine).

The marker labels are the test's: "split" (the fault), "heal" (the fault removed), "merged"
(the operator reported the merge); the checks take them as arguments.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence

from gencluster_testing.partitions.checkers import real_time_order_violations, unavailability
from gencluster_testing.partitions.history import History, Operation

MAX_REPORTED = 10


def combine(*histories: History) -> History:
    """One history from several recorders that ran over the same time (one per side, started
    at different moments): operations and markers together, the earliest start and the latest
    stop."""
    return History(
        operations=sorted((op for h in histories for op in h.operations),
                          key=lambda op: op.invoked_at),
        markers=sorted((m for h in histories for m in h.markers), key=lambda m: m.at),
        started_at=min(h.started_at for h in histories),
        stopped_at=max(h.stopped_at for h in histories),
    )


def _describe(op: Operation, origin: float) -> str:
    return (f"[{op.group} {op.request_id[:8]} value={op.value} epoch={op.epoch} "
            f"by={op.served_by} {op.invoked_at - origin:.3f}..{op.completed_at - origin:.3f}s]")


def _capped(violations: list[str]) -> list[str]:
    if len(violations) <= MAX_REPORTED:
        return violations
    return [*violations[:MAX_REPORTED], f"... and {len(violations) - MAX_REPORTED} more"]


def _values(ops: Iterable[Operation]) -> list[Operation]:
    """Ok operations that applied a `next_value` in the term that answered them (a duplicate
    reply repeats the value of an earlier attempt; it hands out nothing new)."""
    return [op for op in ops if op.ok and not op.duplicate and isinstance(op.value, int)
            and not isinstance(op.value, bool)]


def both_sides_served(
    history: History, start_label: str, end_label: str, groups: Sequence[str]
) -> list[str]:
    """Each client group (one per side) got ok replies between the two markers, and no epoch
    answered two groups: two terms served at once, which is what Available is for (under
    Fenced this must never happen)."""
    start, end = history.marker(start_label).at, history.marker(end_label).at
    window = [op for op in _values(history.operations) if start <= op.completed_at <= end]
    violations = []
    epochs: dict[str, set[int]] = {}
    for group in groups:
        served = [op for op in window if op.group == group]
        if not served:
            violations.append(f"side {group!r} got no ok reply between {start_label!r} and "
                              f"{end_label!r}")
        epochs[group] = {op.epoch for op in served if op.epoch is not None}
    for index, group in enumerate(groups):
        for other in groups[index + 1:]:
            shared = epochs[group] & epochs[other]
            if shared:
                violations.append(f"sides {group!r} and {other!r} were both answered by epoch "
                                  f"{sorted(shared)}: one term served both, no split")
    return violations


def each_term_is_a_counter(history: History) -> list[str]:
    """Within one epoch (one active's term, one side of the split) the values are those of
    one counter: never handed out twice, and a call invoked after another completed got a
    higher value. Gaps are allowed (a merge jumps the counter; unknown outcomes take values)."""
    origin = history.started_at
    violations = []
    by_epoch: dict[int, list[Operation]] = defaultdict(list)
    for op in _values(history.operations):
        by_epoch[op.epoch or 0].append(op)
    for epoch, ops in sorted(by_epoch.items()):
        seen: dict[int, Operation] = {}
        for op in ops:
            if op.value in seen:
                violations.append(f"epoch {epoch} handed out {op.value} twice: "
                                  f"{_describe(seen[op.value], origin)} and "
                                  f"{_describe(op, origin)}")
            seen.setdefault(op.value, op)
        for top, later in real_time_order_violations(ops):
            violations.append(f"epoch {epoch}: {_describe(later, origin)} invoked after "
                              f"{_describe(top, origin)} completed, with a value not above")
    return _capped(violations)


def merged_counter_continues_above(history: History, merged_label: str) -> list[str]:
    """After the merge, the counter continues above every value either side handed out
    before it, and hands out no value twice: the issue's promise for id_server (its `merge`
    is max). "After" is invoked at or after the marker; "before" is completed before it."""
    origin = history.started_at
    at = history.marker(merged_label).at
    before = [op for op in _values(history.operations) if op.completed_at < at]
    after = [op for op in _values(history.operations) if op.invoked_at >= at]
    violations = []
    if not after:
        return [f"no value was handed out after {merged_label!r}"]
    if before:
        highest = max(before, key=lambda op: op.value)
        violations += [
            f"{_describe(op, origin)} after {merged_label!r} is not above "
            f"{_describe(highest, origin)} handed out before it"
            for op in after if op.value <= highest.value
        ]
    first: dict[int, Operation] = {}
    for op in after:
        if op.value in first:
            violations.append(f"{op.value} handed out twice after {merged_label!r}: "
                              f"{_describe(first[op.value], origin)} and {_describe(op, origin)}")
        first.setdefault(op.value, op)
    return _capped(violations)


def duplicates_only_across_the_split(
    history: History, split_label: str, merged_label: str
) -> list[str]:
    """A value handed out twice is the price of the split and nothing else: the two calls
    were answered by different terms, at least one during the split, both before the merge.
    (Before the split, with Async replication, the winner may also lack the loser's last
    values: those repeat too, by the other term, during the split.)"""
    origin = history.started_at
    split, merged = history.marker(split_label).at, history.marker(merged_label).at
    by_value: dict[int, list[Operation]] = defaultdict(list)
    for op in _values(history.operations):
        by_value[op.value].append(op)
    violations = []
    for value, ops in sorted(by_value.items()):
        for index, a in enumerate(ops):
            for b in ops[index + 1:]:
                explained = (
                    a.epoch != b.epoch
                    and max(a.invoked_at, b.invoked_at) >= split
                    and max(a.completed_at, b.completed_at) < merged
                )
                if not explained:
                    violations.append(f"{value} handed out twice, not explained by the split: "
                                      f"{_describe(a, origin)} and {_describe(b, origin)}")
    return _capped(violations)


def all_available_checks(
    history: History, *, groups: Sequence[str], split_label: str = "split",
    heal_label: str = "heal", merged_label: str = "merged",
) -> list[str]:
    """Every check an Available split must pass, each violation prefixed with its check."""
    results = {
        "both_sides_served": both_sides_served(history, split_label, heal_label, groups),
        "each_term_is_a_counter": each_term_is_a_counter(history),
        "merged_counter_continues_above": merged_counter_continues_above(history, merged_label),
        "duplicates_only_across_the_split": duplicates_only_across_the_split(
            history, split_label, merged_label),
    }
    return [f"{name}: {violation}" for name, found in results.items() for violation in found]


@dataclasses.dataclass(frozen=True)
class SplitFigures:
    """What one Available split cost, in seconds (figures, not checks)."""

    isolated_side_unavailable: float
    """Longest stretch without an ok reply on the faulted active's side, fault to heal."""
    other_side_failover: float
    """Fault to the first ok reply of a higher epoch on the other side (its election)."""
    other_side_unavailable_after_failover: float
    """Longest stretch without an ok reply on the other side, from its first ok reply of the
    new term to the heal."""


def split_figures(
    history: History, *, isolated: str, other: str, new_epoch_above: int,
    split_label: str = "split", heal_label: str = "heal",
) -> SplitFigures:
    split, heal = history.marker(split_label).at, history.marker(heal_label).at
    first_new = min((op.completed_at for op in history.ok()
                     if op.group == other and (op.epoch or 0) > new_epoch_above
                     and op.completed_at >= split), default=heal)
    other_side = dataclasses.replace(
        history.in_group(other),
        markers=[*history.markers, dataclasses.replace(history.marker(split_label),
                                                       at=first_new, label="failed-over")],
        started_at=first_new,
    )
    return SplitFigures(
        isolated_side_unavailable=unavailability(history, split_label, heal_label,
                                                 group=isolated),
        other_side_failover=first_new - split,
        other_side_unavailable_after_failover=unavailability(
            other_side, "failed-over", heal_label, group=other),
    )
