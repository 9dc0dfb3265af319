"""Whole-state encoding off the event loop: a forked child encodes, the loop keeps running.

Encoding a large state (a snapshot for a joining standby, for export and backup, a
persistence checkpoint every `SNAPSHOT_EVERY_ENTRIES` entries) takes seconds to minutes: a
state of many small records encodes at about 13 MB/s. On the event loop that blocks the Lease
renewals, and the active loses its Lease. A thread does not help: the codecs' C encoders hold
the GIL for the whole value, so the loop's thread would not run either.

So the encoding runs in a child process made by `fork()` at the moment the snapshot is taken:

- consistency: the child sees the parent's memory as it was at the fork, copy-on-write, so
  later calls that mutate the user's state objects in place (the default: no copy per call)
  change the parent's pages only. The reply table, retained events and positions are copied
  (small, bounded) on the loop in the same step (`machine.StateSnapshot`), so all of it is one
  point in the sequence.
- the loop stalls only for the fork itself (copying page tables: milliseconds per GB): the
  child writes to an unlinked temporary file, and a worker thread waits for the child and
  reads the file back in one `os.pread` into one new bytes object (the read releases the GIL;
  no join or slice copies the state again under the GIL, which stalled the loop by about a
  second per 500 MB through a pipe).
- the child runs only the codec: no logging, no locks, no gRPC, no asyncio (a fork of a
  threaded process may hold other threads' locks in a state nobody will release), garbage
  collection off (it would touch every object's page and copy it), and leaves with
  `os._exit`.
- memory: pages the parent writes while the child runs are copied (at most the state's size,
  in practice the pages that calls touch), and the child's reference counting copies the pages
  it reads: budget up to twice the state's memory during a snapshot (docs/limits.md).

`in_process` encodes on the caller's thread: for unit tests of the journal's logic (they may
not fork) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

from gencluster.codec import CodecError
from gencluster.log import Snapshot
from gencluster.machine import StateSnapshot

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BQ")  # status (0 encoded, 1 codec error), length of what follows


class SnapshotEncodingFailed(OSError):
    """The child could not encode the state (its codec error, or it died): an OSError, so the
    journal treats it as a failed write (acknowledgements that need it stop; nothing is
    claimed durable). `died`: the child ended without an answer (a signal, an exit code),
    which a new attempt may not meet; a codec error would recur."""

    def __init__(self, message: str, *, died: bool = False) -> None:
        super().__init__(message)
        self.died = died


class PendingSnapshot(Protocol):
    """A snapshot whose state is being encoded; `result` blocks (call it off the loop)."""

    @property
    def applied_seq(self) -> int: ...

    def result(self) -> Snapshot: ...

    def abandon(self) -> None:
        """The snapshot is no longer wanted: reap its child without waiting here."""


StateEncoder = Callable[[StateSnapshot], PendingSnapshot]
"""Starts encoding a `StateSnapshot` now (the consistent moment) and returns the pending
result."""


class Encoded:
    """A snapshot encoded already (in process, or received encoded by a joining standby)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    @property
    def applied_seq(self) -> int:
        return self._snapshot.applied_seq

    def result(self) -> Snapshot:
        return self._snapshot

    def abandon(self) -> None:
        """Nothing runs for it."""


def in_process(parts: StateSnapshot) -> PendingSnapshot:
    """Encode on the caller's thread (unit tests of the journal only: they may not fork)."""
    return Encoded(parts.encoded())


class _Forked:
    """The child encoding one snapshot's state, and the pipe it writes it to."""

    def __init__(self, parts: StateSnapshot, pid: int, fd: int) -> None:
        """`fd`: the unlinked file the child writes (header, then the encoded state)."""
        self._parts = parts
        self._pid = pid
        self._fd = fd
        self._snapshot: Snapshot | None = None
        self._error: SnapshotEncodingFailed | None = None

    @property
    def applied_seq(self) -> int:
        return self._parts.header.applied_seq

    def result(self) -> Snapshot:
        """Read the child's output and reap it (blocking; idempotent)."""
        if self._snapshot is None and self._error is None:
            try:
                self._snapshot = self._read()
            except SnapshotEncodingFailed as error:
                self._error = error
        if self._error is not None:
            raise self._error
        assert self._snapshot is not None
        return self._snapshot

    def abandon(self) -> None:
        """Reap the child in a daemon thread (no zombie, no open file left behind)."""
        threading.Thread(target=self._reap, name="snapshot-reaper", daemon=True).start()

    def _reap(self) -> None:
        with contextlib.suppress(SnapshotEncodingFailed):
            self.result()

    def _read(self) -> Snapshot:
        try:
            _, status = os.waitpid(self._pid, 0)
            code = os.waitstatus_to_exitcode(status)
            header = os.pread(self._fd, _HEADER.size, 0)
            if len(header) < _HEADER.size or code != 0:
                raise SnapshotEncodingFailed(
                    f"the process encoding the snapshot at seq {self.applied_seq} ended with "
                    f"code {code} before writing it", died=True,
                )
            kind, length = _HEADER.unpack(header)
            body = _read_exactly(self._fd, length, _HEADER.size)
        finally:
            os.close(self._fd)
        if len(body) != length:
            raise SnapshotEncodingFailed(
                f"the process encoding the snapshot at seq {self.applied_seq} wrote "
                f"{len(body)} of {length} bytes"
            )
        if kind != 0:
            raise SnapshotEncodingFailed(body.decode("utf-8", "replace"))
        return dataclasses.replace(self._parts.header, state=body)


def _read_exactly(fd: int, length: int, offset: int) -> bytes:
    """One `pread` (one allocation, GIL released while reading); more only when the kernel
    returns less (over 2 GiB at once on Linux), joined then."""
    first = os.pread(fd, length, offset)
    if len(first) == length or not first:
        return first
    parts = [first]
    got = len(first)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def forked(parts: StateSnapshot) -> PendingSnapshot:
    """Fork now; the child encodes `parts.state` into an unlinked temporary file (in the
    default temporary directory), then exits."""
    fd, path = tempfile.mkstemp(prefix="gencluster-snapshot-")
    os.unlink(path)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
        _child(parts, fd)
    return _Forked(parts, pid, fd)


def _child(parts: StateSnapshot, write_fd: int) -> None:
    """The child's whole life: encode, write, `_exit` (never return into the parent's code)."""
    code = 0
    try:
        gc.disable()
        try:
            body = parts.codec.encode(parts.state, what="state", bounded=False)
            kind = 0
        except CodecError as error:
            body = str(error).encode()
            kind = 1
        for part in (_HEADER.pack(kind, len(body)), body):
            view = memoryview(part)
            while view:
                view = view[os.write(write_fd, view) :]
    except BaseException:
        code = 70
    finally:
        os._exit(code)


ENCODING_ATTEMPTS = 3
"""Forks per snapshot stream when a child dies without an answer (a codec error is final)."""

MAX_CONCURRENT_ENCODINGS = 2
"""Snapshot streams (Peer.Snapshot, Admin.ExportState) encoding at once on one pod: each child
may cost up to the state's memory again (copy-on-write), so more streams wait their turn."""

_encodings: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
"""One semaphore per event loop (a process has one; tests run several in turn)."""


async def encode_off_loop(
    take: Callable[[], StateSnapshot], encoder: StateEncoder = forked
) -> Snapshot:
    """Take a snapshot with `take` (e.g. `machine.snapshot_parts`) and encode it in a child
    process without blocking the loop. The snapshot is taken only once one of the
    `MAX_CONCURRENT_ENCODINGS` places is free, in the same step as the fork: taken earlier,
    its header would describe a moment the forked state has moved past."""
    loop = asyncio.get_running_loop()
    places = _encodings.get(loop)
    if places is None:
        places = _encodings[loop] = asyncio.Semaphore(MAX_CONCURRENT_ENCODINGS)
    async with places:
        for attempt in range(1, ENCODING_ATTEMPTS + 1):
            pending = encoder(take())
            try:
                return await loop.run_in_executor(None, pending.result)
            except SnapshotEncodingFailed as error:
                if not error.died or attempt == ENCODING_ATTEMPTS:
                    raise
                # A fork of a threaded process can die of what another thread held at the
                # fork (seen here: SIGSEGV, rarely, with many gRPC threads). A new fork is a
                # new consistent moment: the snapshot is simply later.
                log.warning("%s; encoding a new snapshot (attempt %d of %d)", error,
                            attempt + 1, ENCODING_ATTEMPTS)
        raise AssertionError("unreachable")
