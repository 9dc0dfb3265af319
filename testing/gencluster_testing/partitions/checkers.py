"""Checkers of recorded histories (`history.History`): pure functions, no sockets.

Each check returns a list of human-readable violations, empty when the history is fine, so a
test can fail with all of them at once. `unavailability` is a figure, not a check.

The model is the id_server counter: every ok `next_value` returns the new value of one shared
counter (the value before the history started is unknown, so the first value can be anything).
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence

from gencluster_testing.partitions.history import History, Operation, Outcome

MAX_REPORTED = 10
"""Violations of one kind listed one by one before the rest are summed up."""


def _capped(violations: list[str], kind: str) -> list[str]:
    if len(violations) <= MAX_REPORTED:
        return violations
    return [*violations[:MAX_REPORTED], f"... and {len(violations) - MAX_REPORTED} more {kind}"]


def _describe(op: Operation, origin: float = 0.0) -> str:
    return (
        f"[client {op.client} {op.request_id[:8]} {op.outcome.value} value={op.value} "
        f"epoch={op.epoch} by={op.served_by} "
        f"{op.invoked_at - origin:.3f}..{op.completed_at - origin:.3f}s]"
    )


def _int_values(ops: Iterable[Operation]) -> tuple[list[Operation], list[str]]:
    good: list[Operation] = []
    bad: list[str] = []
    for op in ops:
        if isinstance(op.value, int) and not isinstance(op.value, bool):
            good.append(op)
        else:
            bad.append(f"ok reply is not a counter value: {_describe(op)}")
    return good, bad


def real_time_order_violations(
    operations: Sequence[Operation],
) -> list[tuple[Operation, Operation]]:
    """Pairs (a, b) where b was invoked after a completed but got a value not above a's: what
    one counter can never do. For each b, a is the op with the largest value among those
    completed before b was invoked (one sort and a running maximum: O(n log n))."""
    by_completion = sorted(operations, key=lambda op: op.completed_at)
    completions = [op.completed_at for op in by_completion]
    running_max: list[Operation] = list(
        itertools.accumulate(by_completion, lambda best, op: op if op.value > best.value else best)
    )
    pairs = []
    for b in operations:
        index = bisect.bisect_left(completions, b.invoked_at) - 1
        if index >= 0 and running_max[index].value >= b.value:
            pairs.append((running_max[index], b))
    return pairs


def counter_linearizable(history: History) -> list[str]:
    """The ok replies are consistent with one linearizable counter.

    1. **Unique**: no two ok operations returned the same value (a value handed out twice is
       two writers, or a lost write re-applied).
    2. **Real time**: when `a` completed before `b` was invoked and both are ok,
       `a.value < b.value` (a later call never sees an older counter).
    3. **No unexplained gap**: a value `v` between the smallest and the largest ok value that no
       ok operation returned was taken by a call whose client never learnt it: an `unknown`
       operation (a `failed` one is known not applied). The call that took `v` was applied
       before the call that took the next ok value above `v` (call it `u`), so it was invoked
       before `u` completed. The exact rule: there is a one-to-one assignment of missing values
       to unknown operations with `unknown.invoked_at < u(v).completed_at`. Because each
       missing value only asks for an unknown op invoked before a deadline, such an assignment
       exists iff for every deadline `d`, the number of missing values whose deadline is
       `<= d` is at most the number of unknown operations invoked before `d` (Hall's condition
       for nested sets); that is what is checked.
    """
    origin = history.started_at
    oks, violations = _int_values(history.ok())
    if not oks:
        return violations

    by_value: dict[int, list[Operation]] = defaultdict(list)
    for op in oks:
        by_value[op.value].append(op)
    duplicates = [
        f"value {value} returned {len(ops)} times: " + ", ".join(_describe(o, origin) for o in ops)
        for value, ops in sorted(by_value.items()) if len(ops) > 1
    ]
    violations += _capped(duplicates, "duplicate values")

    stale = [
        f"{_describe(b, origin)} returned {b.value} although {_describe(a, origin)} had "
        f"already returned {a.value}"
        for a, b in real_time_order_violations(oks)
    ]
    violations += _capped(stale, "real-time order violations")

    violations += _unexplained_gaps(history, sorted(by_value), by_value)
    return violations


def _unexplained_gaps(
    history: History, values: list[int], by_value: dict[int, list[Operation]]
) -> list[str]:
    deadlines: list[tuple[float, int]] = []  # (deadline, missing value)
    for low, high in itertools.pairwise(values):
        if high - low <= 1:
            continue
        upper_completed = min(op.completed_at for op in by_value[high])
        deadlines += [(upper_completed, missing) for missing in range(low + 1, high)]
    if not deadlines:
        return []
    unknown_invoked = sorted(
        op.invoked_at for op in history.operations if op.outcome is Outcome.UNKNOWN
    )
    deadlines.sort()
    for needed, (deadline, _missing) in enumerate(deadlines, start=1):
        available = bisect.bisect_left(unknown_invoked, deadline)
        if needed > available:
            missing = [v for d, v in deadlines if d <= deadline]
            return [
                f"{needed} values no ok call returned ({_ranges(sorted(missing))}) must have "
                f"been taken by calls invoked before {deadline - history.started_at:.3f}s, "
                f"but only {available} unknown calls were (of {len(unknown_invoked)} unknown "
                f"in all): an acknowledged reply skipped a value"
            ]
    return []


def _ranges(values: Sequence[int]) -> str:
    parts = []
    for _, run in itertools.groupby(enumerate(values), lambda pair: pair[1] - pair[0]):
        items = [value for _, value in run]
        parts.append(str(items[0]) if len(items) == 1 else f"{items[0]}..{items[-1]}")
    return ", ".join(parts[:20]) + (" ..." if len(parts) > 20 else "")


def no_lost_acknowledged(history: History, final_value: int) -> list[str]:
    """Every acknowledged value survived: the counter read from the cluster at the end
    (`final_value`, after the load stopped and the cluster converged) is at least every ok
    value. Also, the counter did not run ahead by more than the calls that might have been
    applied without an answer could explain (`final - max ok <= unknown calls`): more would
    mean calls were applied twice or applied without being asked for."""
    oks, violations = _int_values(history.ok())
    if not oks:
        return violations
    highest = max(oks, key=lambda op: op.value)
    if final_value < highest.value:
        lost = sorted(op.value for op in oks if op.value > final_value)
        violations.append(
            f"final counter {final_value} is below {len(lost)} acknowledged values "
            f"({_ranges(lost)}); the highest was {_describe(highest, history.started_at)}"
        )
    unknown = len(history.by_outcome()[Outcome.UNKNOWN])
    if final_value - highest.value > unknown:
        violations.append(
            f"final counter {final_value} is {final_value - highest.value} above the highest "
            f"acknowledged value {highest.value}, but only {unknown} calls have an unknown "
            "outcome"
        )
    return violations


def single_writer_per_instant(history: History) -> list[str]:
    """Two terms never served writes at once (`partitionPolicy: Fenced`), from the epochs in
    the replies:

    1. **One address per epoch**: every ok reply of an epoch came from the same address.
    2. **A deposed active never serves after its successor served**: no ok operation of epoch
       `e` was invoked after an ok operation of a higher epoch had completed (the new term
       served, so the old one must have stopped before).
    3. **Values increase with the epoch**: for ok operations applied in their reply's term
       (not `duplicate`), `a.epoch < b.epoch` implies `a.value < b.value`. A duplicate reply
       carries the answering term's epoch but the value of the term that applied it, so it is
       left out of this rule (it is still in rules 1 and 2).
    """
    origin = history.started_at
    oks = [op for op in history.ok() if op.epoch is not None]
    violations: list[str] = []

    served: dict[int, dict[str, Operation]] = defaultdict(dict)
    for op in oks:
        served[op.epoch].setdefault(op.served_by or "?", op)  # type: ignore[index]
    for epoch, by_address in sorted(served.items()):
        if len(by_address) > 1:
            violations.append(
                f"epoch {epoch} served by {len(by_address)} addresses: "
                + ", ".join(f"{address} {_describe(op, origin)}"
                            for address, op in sorted(by_address.items()))
            )

    by_completion = sorted(oks, key=lambda op: op.completed_at)
    completions = [op.completed_at for op in by_completion]
    highest_epoch_so_far = list(itertools.accumulate(
        by_completion, lambda best, op: op if op.epoch > best.epoch else best  # type: ignore[operator]
    ))
    stale = []
    for op in oks:
        index = bisect.bisect_left(completions, op.invoked_at) - 1
        if index >= 0 and highest_epoch_so_far[index].epoch > op.epoch:  # type: ignore[operator]
            newer = highest_epoch_so_far[index]
            stale.append(f"{_describe(op, origin)} served by epoch {op.epoch} after "
                         f"{_describe(newer, origin)} of epoch {newer.epoch} had completed")
    violations += _capped(stale, "stale-term replies")

    applied, bad = _int_values(op for op in oks if not op.duplicate)
    violations += bad
    ranges: dict[int, tuple[Operation, Operation]] = {}
    for op in applied:
        low, high = ranges.get(op.epoch, (op, op))  # type: ignore[arg-type]
        ranges[op.epoch] = (  # type: ignore[index]
            op if op.value < low.value else low, op if op.value > high.value else high
        )
    epochs = sorted(ranges)
    for index, epoch in enumerate(epochs):
        highest = ranges[epoch][1]
        for later in epochs[index + 1:]:
            lowest = ranges[later][0]
            if lowest.value <= highest.value:
                violations.append(
                    f"epoch {later} handed out {lowest.value} {_describe(lowest, origin)}, not "
                    f"above epoch {epoch}'s {highest.value} {_describe(highest, origin)}"
                )
    return violations


def terms_do_not_overlap(history: History) -> list[str]:
    """The stronger form of `single_writer_per_instant` that Fenced's timing rule promises:
    every ok reply of a term completed before the first ok reply of any later term completed.
    The deposed active stops at its renew deadline, a standby may take the Lease a full
    `retryPeriodSeconds` later at the earliest (docs/partitions.md, "The timing rule"), so on
    loopback a reply of the old term cannot arrive after one of the new term unless both
    served at once."""
    origin = history.started_at
    oks = [op for op in history.ok() if op.epoch is not None]
    last: dict[int, Operation] = {}
    first: dict[int, Operation] = {}
    for op in oks:
        epoch = op.epoch
        assert epoch is not None
        if epoch not in last or op.completed_at > last[epoch].completed_at:
            last[epoch] = op
        if epoch not in first or op.completed_at < first[epoch].completed_at:
            first[epoch] = op
    violations = []
    epochs = sorted(last)
    for index, epoch in enumerate(epochs):
        for later in epochs[index + 1:]:
            if last[epoch].completed_at > first[later].completed_at:
                violations.append(
                    f"epoch {epoch} still answered {_describe(last[epoch], origin)} after epoch "
                    f"{later} had answered {_describe(first[later], origin)}"
                )
    return violations


def unavailability(
    history: History, start_label: str, end_label: str | None = None, *,
    group: str | None = None,
) -> float:
    """The longest time without an ok completion around the fault window: the longest gap
    between consecutive ok completions (of `group`'s clients, when given) that overlaps the
    window from the `start_label` marker to the `end_label` marker (default: the end of the
    history). The history's start and stop count as boundaries, so a side that never got an
    answer after the fault is unavailable until the history stopped. A figure, not a check."""
    start = history.marker(start_label).at
    end = history.marker(end_label).at if end_label else history.stopped_at
    ops = history.ok() if group is None else [op for op in history.ok() if op.group == group]
    times = sorted([history.started_at, *(op.completed_at for op in ops), history.stopped_at])
    longest = 0.0
    for before, after in itertools.pairwise(times):
        if before <= end and after >= start:
            longest = max(longest, after - before)
    return longest


def unavailability_by_group(
    history: History, start_label: str, end_label: str | None = None
) -> dict[str, float]:
    """`unavailability` of each client group (e.g. "majority", "minority")."""
    return {
        group: unavailability(history, start_label, end_label, group=group)
        for group in history.groups()
    }


def all_fenced_checks(history: History, final_value: int) -> list[str]:
    """Every check that must hold under `partitionPolicy: Fenced`, each violation prefixed with
    its checker's name."""
    results = {
        "counter_linearizable": counter_linearizable(history),
        "no_lost_acknowledged": no_lost_acknowledged(history, final_value),
        "single_writer_per_instant": single_writer_per_instant(history),
        "terms_do_not_overlap": terms_do_not_overlap(history),
    }
    return [f"{name}: {violation}" for name, found in results.items() for violation in found]


__all__ = [
    "all_fenced_checks", "counter_linearizable", "no_lost_acknowledged",
    "single_writer_per_instant", "terms_do_not_overlap", "unavailability",
    "unavailability_by_group",
]
