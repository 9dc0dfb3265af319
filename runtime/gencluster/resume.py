"""Where a resuming subscription continues, across failovers and merges: pure decisions.

A subscriber that reconnects names the last event it received by its number and by its place
in a history: the `seq` and `epoch` of the log entry that published it. The active compares
that with its own retained event of the same number:

- the same `(seq, epoch)`: the subscriber followed this history; it continues with the next
  number (a plain failover). Of the events a `merge` published later it gets those meant for
  the survivor's side (`AUDIENCE_A`): the merged side's news.
- another event, or a number this history has not reached: the subscriber followed another
  history. If a merge is recorded, that history is taken to be the side the newest merge
  absorbed: the stream continues from that MERGE entry's first event on this topic, with the
  events meant for the merged side (`AUDIENCE_B`: the survivor's news, which the subscriber
  never saw) and everything after. Without a merge (an Async failover that lost the tail the
  subscriber saw) it continues with the first event of a later term than its last event's.
  Either way the numbering changed: the stream says so (`renumbered`) on its first event.
- a number no longer retained here cannot be checked: it is taken as this history, and the
  usual gap rules apply (`machine.StateMachine.backlog`).

Why per-side audiences rather than replaying the survivor's events since the split: the
merged side's subscribers already hold their own side's news, the survivor's hold theirs;
only `merge` knows what each side lacks (for chat: the messages of the other side), so it
publishes each side's news to the other, and each stream delivers only its side's. Nobody
receives a message twice, and no log of the split needs to be kept to find where the two
histories forked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gencluster.log import AUDIENCE_A, AUDIENCE_B, Event


@dataclass(frozen=True, slots=True)
class LastEvent:
    """The last event a resuming subscriber received: its number, and the seq and epoch of
    the entry that published it."""

    number: int
    seq: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """Where a stream starts and which merge-published events it delivers.

    `from_number`: the first event number to read. `merged_side_of`: the seq of the MERGE
    entry whose `AUDIENCE_B` events this stream delivers (its subscriber followed the side
    that merge absorbed); for every other merge it delivers the `AUDIENCE_A` ones.
    `renumbered`: the subscriber's last event belongs to another history, so the numbers it
    knew mean other events here."""

    from_number: int
    merged_side_of: int | None = None
    renumbered: bool = False


def plan_resume(
    events: Sequence[Event], next_number: int, last: LastEvent, merge_seqs: Sequence[int]
) -> ResumePlan:
    """The plan for a subscriber whose last event is `last`, given this replica's retained
    events of the topic (consecutive numbers, oldest first), the topic's next number and the
    retained MERGE entries' seqs (oldest first)."""
    first = events[0].number if events else next_number
    if last.number < first:
        return ResumePlan(last.number + 1)  # not retained: cannot tell (gap rules apply)
    if last.number < next_number:
        mine = events[last.number - first]
        if (mine.seq, mine.epoch) == (last.seq, last.epoch):
            side = mine.seq if mine.audience == AUDIENCE_B else None
            return ResumePlan(last.number + 1, merged_side_of=side)
    if merge_seqs:
        merge = merge_seqs[-1]
        start = next((event.number for event in events if event.seq >= merge), next_number)
        return ResumePlan(start, merged_side_of=merge, renumbered=True)
    start = next((event.number for event in events if event.epoch > last.epoch), next_number)
    return ResumePlan(start, renumbered=True)


def delivers(plan_side: int | None, event: Event) -> bool:
    """Whether a stream whose plan has `merged_side_of == plan_side` delivers `event`."""
    if not event.audience:
        return True
    wanted = AUDIENCE_B if event.seq == plan_side else AUDIENCE_A
    return event.audience == wanted
