"""The replicated quarantine of poison requests: a request that took down an active (a handler
that kills or hangs its process: `os._exit`, a crash in C code, an endless loop, memory
exhaustion) is refused by the next active instead of taking it down too.

A handler runs on the active before its entry reaches any standby, so a request that kills
the active mid-handler leaves no trace anywhere: its client retries on the next active, and
without a record there the poison would go round the whole cluster. The record is written
ahead, but only for requests that may have been in flight at an earlier active's end (so no
ordinary call pays for it):

- a request is *suspect* when its client's first attempt (`first_attempt_unix_ms`, the same on
  every retry) is older than this term: the previous active may have been running it when it
  went away;
- before running a suspect request the active replicates a QUARANTINE entry (the request id
  and its digest) and waits until every connected standby has it;
- applying that entry records a quarantine outcome under `marker_id(request_id)` in the reply
  table (so snapshots, merges and expiry carry it like any record);
- when the request's own entry is applied, its real outcome is recorded under its id and wins;
- an active that finds a quarantine for a request id and the same digest, and no outcome under
  the id itself, answers it with the quarantine's error and does not run it.

A poison request thus takes down at most two actives: the one it first reached (unknown) and
the one that marked it; the third refuses it. The cost of a false suspicion (a client whose
first attempt failed for other reasons, or whose clock runs behind) is one extra replicated
entry; an innocent request that is marked and whose active then fails for another reason
is refused too: its client gets the quarantine error and may send it again under a new id.
"""

from __future__ import annotations

import hashlib

from gencluster.log import CommandKind, HandlerError, ReplyRecord

QUARANTINED = "gencluster.RequestQuarantined"
"""The error type of a quarantine outcome: a dotted name no handler's exception class has, so
no handler's error can pass for a quarantine."""

_MARKER_PREFIX = "\x00quarantine\x00"


def digest(kind: CommandKind, payload: bytes) -> str:
    """The request's identity beside its id: the same id with other content is another
    request and is not refused for this one's sake."""
    return hashlib.sha256(kind.value.encode() + b"\x00" + payload).hexdigest()


def marker_id(request_id: str) -> str:
    """Where a request's quarantine is recorded in the reply table (beside its own outcome)."""
    return _MARKER_PREFIX + request_id


def is_suspect(kind: CommandKind, request_id: str, first_attempt: float, term_start: float) -> bool:
    """Whether the active must mark the request before running it: a call or cast with an id
    whose client first tried it before this term began (0: the client did not say)."""
    return (
        (kind is CommandKind.CALL or kind is CommandKind.CAST)
        and bool(request_id)
        and 0 < first_attempt < term_start
    )


def marker_record(request_id: str, request_digest: str, seq: int, time: float) -> ReplyRecord:
    """The quarantine outcome of a QUARANTINE entry (`seq`) for `request_id`."""
    message = (
        f"request {request_id!r} (sha256 {request_digest}) was being handled when an active "
        "stopped and may be what stopped it; it is refused so that it cannot take down the "
        "next active. Send it again with a new request id if it is safe to"
    )
    return ReplyRecord(
        marker_id(request_id), seq, error=HandlerError(QUARANTINED, message), time=time
    )


def refusal(
    request_id: str, request_digest: str, marker: ReplyRecord | None
) -> ReplyRecord | None:
    """The outcome to answer `request_id` with instead of running it (None: run it), given
    the table's record under `marker_id(request_id)`."""
    if marker is None or marker.error is None or marker.error.type != QUARANTINED:
        return None
    if f"sha256 {request_digest})" not in marker.error.message:
        return None  # the same id with another request: not the quarantined one
    return ReplyRecord(request_id, marker.seq, error=marker.error, time=marker.time)
