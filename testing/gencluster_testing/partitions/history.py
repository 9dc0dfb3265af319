"""Jepsen-style histories: concurrent clients record every call they make while faults happen.

A `LoadRecorder` runs client threads that call the cluster in a loop through the real client
library (`Client.call_with_details`, which follows the active across failovers) and records
one `Operation` per call: when it was invoked and completed (this process's monotonic clock),
whether it is known to have happened (`ok`), known not to have happened (`failed`) or neither
(`unknown`: a timeout or an error after which the request may or may not have been applied),
the value, the epoch in the reply and the address that answered. The test adds `Marker`s
("fault", "heal") as it goes. `stop()` returns the `History` the checkers in `checkers.py`
judge.

    with LoadRecorder(addresses) as load:
        load.wait_for_ok_calls(20, deadline=30)
        load.mark("fault"); inject(); load.wait_for_ok_calls(20, deadline=60)
        load.mark("heal"); heal()
        history = load.stop()
    assert not checkers.counter_linearizable(history)

Why "unknown" matters: a call that timed out may still have been applied (an active that
appended the entry, replicated it, and died before answering), so a checker must allow the
values such calls may have taken, and nothing more.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
from gencluster.client import Client, ClusterUnavailable, RemoteError

AddressSource = Sequence[str] | Callable[[], Sequence[str]]
"""Addresses (`host:port`) a client may call, or a function returning them (called again
whenever a client starts over, so pods that moved are followed)."""

DEFAULT_GROUP = "all"
KNOWN_NOT_APPLIED = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
})
"""gRPC errors the server raises before it submits anything: the call is known not applied.
Everything else that is not a reply (DEADLINE_EXCEEDED, the client's ClusterUnavailable after
retrying UNAVAILABLE, ...) may have been applied somewhere and is `unknown`."""
PAUSE_AFTER_ERROR = 0.05
"""A client that got no reply waits this long before its next call, so a cluster that refuses
at once is not hammered in a tight loop (and the history stays readable)."""


class Outcome(StrEnum):
    OK = "ok"  # answered: the call happened, with `value`
    FAILED = "failed"  # known not applied (a handler error leaves the state unchanged, bad input)
    UNKNOWN = "unknown"  # may or may not have been applied (timeouts, no active answered)


@dataclass(frozen=True)
class Operation:
    """One call as a client saw it. Times are `time.monotonic()` in the test process."""

    client: int
    request_id: str
    request: Any
    invoked_at: float
    completed_at: float
    outcome: Outcome
    value: Any | None
    epoch: int | None
    served_by: str | None
    error: str = ""
    group: str = DEFAULT_GROUP
    duplicate: bool = False
    """The reply was the recorded outcome of an earlier attempt with the same request id (it
    was applied in an earlier term than `epoch`, possibly)."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True)
class Marker:
    """Something the test did at `at` (monotonic): "fault", "heal", ..."""

    at: float
    label: str


@dataclass
class History:
    operations: list[Operation]
    markers: list[Marker]
    started_at: float = 0.0
    stopped_at: float = 0.0

    def ok(self) -> list[Operation]:
        return [op for op in self.operations if op.outcome is Outcome.OK]

    def by_outcome(self) -> dict[Outcome, list[Operation]]:
        grouped: dict[Outcome, list[Operation]] = {outcome: [] for outcome in Outcome}
        for op in self.operations:
            grouped[op.outcome].append(op)
        return grouped

    def groups(self) -> list[str]:
        return sorted({op.group for op in self.operations})

    def in_group(self, group: str) -> History:
        return dataclasses.replace(
            self, operations=[op for op in self.operations if op.group == group]
        )

    def marker(self, label: str) -> Marker:
        """The first marker with `label` (KeyError when there is none)."""
        for marker in self.markers:
            if marker.label == label:
                return marker
        raise KeyError(f"no marker {label!r} in {[m.label for m in self.markers]}")

    def after(self, label: str) -> list[Operation]:
        """Operations invoked at or after the marker."""
        at = self.marker(label).at
        return [op for op in self.operations if op.invoked_at >= at]

    def before(self, label: str) -> list[Operation]:
        """Operations completed before the marker."""
        at = self.marker(label).at
        return [op for op in self.operations if op.completed_at < at]

    def summary(self) -> str:
        counts = {outcome.value: len(ops) for outcome, ops in self.by_outcome().items()}
        epochs = sorted({op.epoch for op in self.ok() if op.epoch is not None})
        markers = ", ".join(f"{m.label}@{m.at - self.started_at:.2f}s" for m in self.markers)
        return f"{len(self.operations)} operations {counts}, epochs {epochs}, markers [{markers}]"

    def to_jsonl(self, path: Path | str) -> Path:
        """One JSON object per line: markers and operations in time order (times relative to
        the start), for reading after a failure; `from_jsonl` reads it back."""
        path = Path(path)
        rows: list[tuple[float, dict[str, Any]]] = [
            (m.at, {"type": "marker", **dataclasses.asdict(m)}) for m in self.markers
        ]
        rows += [(op.invoked_at, {"type": "operation", **dataclasses.asdict(op)})
                 for op in self.operations]
        rows.sort(key=lambda row: row[0])
        with path.open("w") as out:
            out.write(json.dumps({"type": "history", "started_at": self.started_at,
                                  "stopped_at": self.stopped_at}) + "\n")
            for _, row in rows:
                out.write(json.dumps(row, default=str) + "\n")
        return path

    @classmethod
    def from_jsonl(cls, path: Path | str) -> History:
        history = cls(operations=[], markers=[])
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            kind = row.pop("type")
            if kind == "history":
                history.started_at, history.stopped_at = row["started_at"], row["stopped_at"]
            elif kind == "marker":
                history.markers.append(Marker(**row))
            else:
                row["outcome"] = Outcome(row["outcome"])
                history.operations.append(Operation(**row))
        return history


@dataclass
class _Group:
    name: str
    addresses: AddressSource
    clients: int


@dataclass
class _Shared:
    """What the client threads and the test share, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    operations: list[Operation] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class LoadRecorder:
    """Concurrent clients calling `request` against a cluster until stopped, recording every
    call. A context manager: `__enter__` starts the clients, `__exit__` stops them (if `stop`
    was not called).

    `addresses`: every client may call all of them (the client library follows the active).
    `groups`: named sets of clients, e.g. `{"majority": all_pods, "minority": [faulted_pod]}`,
    each with `clients` threads; operations carry their group, so `checkers.unavailability`
    can report each side. With `addresses` too, those clients form the group "all".
    """

    def __init__(
        self,
        addresses: AddressSource = (),
        clients: int = 4,
        request: Any = "next_value",
        call_timeout: float = 5.0,
        *,
        groups: Mapping[str, AddressSource] | None = None,
    ) -> None:
        self._groups: list[_Group] = []
        if callable(addresses) or addresses:
            self._groups.append(_Group(DEFAULT_GROUP, addresses, clients))
        for name, source in (groups or {}).items():
            self._groups.append(_Group(name, source, clients))
        if not self._groups:
            raise ValueError("LoadRecorder needs addresses or groups")
        self.request = request
        self.call_timeout = call_timeout
        self._shared = _Shared()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client_ids = itertools.count()
        self._started_at = 0.0
        self._history: History | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> LoadRecorder:
        self._started_at = time.monotonic()
        for group in self._groups:
            for _ in range(group.clients):
                thread = threading.Thread(
                    target=self._client_loop, args=(next(self._client_ids), group),
                    name=f"load-{group.name}", daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        return self

    def __enter__(self) -> LoadRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> History:
        """Stop every client (each finishes its call in flight, at most `call_timeout` more)
        and return the history. Idempotent."""
        if self._history is None:
            self._stop.set()
            for thread in self._threads:
                thread.join(self.call_timeout + 10)
            with self._shared.lock:
                self._history = History(
                    operations=sorted(self._shared.operations, key=lambda op: op.invoked_at),
                    markers=list(self._shared.markers),
                    started_at=self._started_at,
                    stopped_at=time.monotonic(),
                )
        return self._history

    # -- what the test does while the load runs ---------------------------------------------

    def mark(self, label: str) -> None:
        with self._shared.lock:
            self._shared.markers.append(Marker(time.monotonic(), label))

    def record(self, operation: Operation) -> None:
        """Add a call the test made itself (a probe that wrote, or may have written), so the
        checkers account for it."""
        with self._shared.changed:
            self._shared.operations.append(operation)
            self._shared.changed.notify_all()

    def operations(self) -> list[Operation]:
        """A copy of what was recorded so far."""
        with self._shared.lock:
            return list(self._shared.operations)

    def wait_for_ok_calls(
        self, count: int, deadline: float, *, group: str | None = None,
        epoch_above: int | None = None,
    ) -> list[Operation]:
        """Wait until `count` calls invoked after this method was called completed ok (in
        `group`, when given; answered by an epoch above `epoch_above`, when given): the
        cluster makes progress again. `deadline` is in seconds from now; past it, fail with
        what the clients saw. Returns those operations."""
        since = time.monotonic()
        until = since + deadline

        def progressed() -> list[Operation]:
            return [
                op for op in self._shared.operations
                if op.ok and op.invoked_at >= since
                and (group is None or op.group == group)
                and (epoch_above is None or (op.epoch or 0) > epoch_above)
            ]

        with self._shared.changed:
            while True:
                done = progressed()
                if len(done) >= count:
                    return done[:count]
                remaining = until - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    recent = [op for op in self._shared.operations if op.invoked_at >= since]
                    errors = sorted({op.error[:200] for op in recent if op.error})
                    raise AssertionError(
                        f"{len(done)}/{count} ok calls (group {group}, epoch above "
                        f"{epoch_above}) within {deadline}s; {len(recent)} calls since, "
                        f"errors: {errors[:5]}"
                    )
                self._shared.changed.wait(min(remaining, 0.5))

    # -- the clients ------------------------------------------------------------------------

    def _client_loop(self, client_id: int, group: _Group) -> None:
        addresses: list[str] = []
        client: Client | None = None
        try:
            while not self._stop.is_set():
                if client is None:
                    addresses = self._resolve(group)
                    if not addresses:
                        self._stop.wait(PAUSE_AFTER_ERROR)
                        continue
                    client = Client(",".join(addresses), timeout=self.call_timeout)
                operation = call_once(client, self.request, client_id, group.name,
                                      self.call_timeout)
                self.record(operation)
                if not operation.ok:
                    self._stop.wait(PAUSE_AFTER_ERROR)
                    # Keep the client (it knows where it was redirected) unless the pods
                    # moved: what a long-lived application does.
                    if self._resolve(group) != addresses:
                        client.close()
                        client = None
        finally:
            if client is not None:
                client.close()

    @staticmethod
    def _resolve(group: _Group) -> list[str]:
        try:
            return list(group.addresses() if callable(group.addresses) else group.addresses)
        except Exception:  # a kubectl hiccup under load: keep what we have
            return []


def call_once(
    client: Client, request: Any, client_id: int = -1, group: str = DEFAULT_GROUP,
    timeout: float | None = None, request_id: str | None = None,
) -> Operation:
    """One call through `client`, classified: ok, failed (known not applied) or unknown."""
    request_id = request_id or uuid.uuid4().hex
    invoked_at = time.monotonic()
    outcome, value, epoch, served_by, error = Outcome.UNKNOWN, None, None, None, ""
    duplicate = False
    try:
        details = client.call_with_details(request, timeout, request_id=request_id)
    except RemoteError as remote:
        outcome, error = Outcome.FAILED, f"RemoteError: {remote}"
    except ClusterUnavailable as unavailable:
        error = f"ClusterUnavailable: {unavailable}"
    except grpc.RpcError as rpc_error:
        code = getattr(rpc_error, "code", lambda: None)()
        if code in KNOWN_NOT_APPLIED:
            outcome = Outcome.FAILED
        error = f"{getattr(code, 'name', code)}: {getattr(rpc_error, 'details', str)()}"
    else:
        outcome, value, epoch = Outcome.OK, details.value, details.epoch
        served_by, duplicate = details.served_by, details.duplicate
    return Operation(
        client=client_id, request_id=request_id, request=request, invoked_at=invoked_at,
        completed_at=time.monotonic(), outcome=outcome, value=value, epoch=epoch,
        served_by=served_by, error=error, group=group, duplicate=duplicate,
    )


__all__ = [
    "AddressSource", "History", "LoadRecorder", "Marker", "Operation", "Outcome", "call_once",
]
