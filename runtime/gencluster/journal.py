"""Group commit of a replica's log to its volume: append on the event loop, fsync in a thread.

`append` only encodes the entry into a buffer (no I/O on the event loop). One writer task
takes everything buffered, writes and fsyncs it in a worker thread, then advances
`durable_seq` and wakes whoever waits for it (`wait_durable`): a Sync call on the active, a
standby's next acknowledgement. Entries appended while an fsync runs are covered by the next
one, so one fsync serves every entry that arrived during the previous: under load the cost of
an fsync is shared by many calls, and an idle replica pays one per call.

Every `SNAPSHOT_EVERY_ENTRIES` entries the replica hands a snapshot at the current position
(`rotate`): the writer fsyncs the entries before it, starts a new segment at that position,
and a second thread writes the snapshot atomically and deletes what it covers, so
acknowledgements never wait for a snapshot write. `install` replaces everything (a join by
snapshot, a restore, the first active's `init`), and entries after it are durable only once
the snapshot is.

A write or fsync that fails ends the journal for good (`failure`): after a failed fsync the
kernel may have dropped the dirty pages, so retrying it could report success for data that
never reached the disk (PostgreSQL's "fsyncgate"). Every waiter gets `VolumeFailed`, and the
process is expected to stop (`run.serve`), as PostgreSQL PANICs: its state is rebuilt from the
volume and the log at the restart, where the disk says what is really there.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gencluster import storage
from gencluster.log import LogEntry, Snapshot
from gencluster.machine import StateSnapshot
from gencluster.state_encoding import Encoded, PendingSnapshot, StateEncoder, forked

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_ENTRIES = 50_000
"""Entries between two snapshots: bounds recovery time (replaying the log after the newest
snapshot) and the volume's size, at the cost of encoding the state once per this many."""


class VolumeFailed(Exception):
    """The volume refused a write or an fsync: nothing after `durable_seq` will be on disk."""


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """A snapshot at the last appended entry: a new segment starts here. Its state is being
    encoded by a child process (`state_encoding`) while the writer goes on."""

    snapshot: PendingSnapshot


@dataclass(frozen=True, slots=True)
class _Install:
    """The state is replaced by `snapshot`: everything before is forgotten."""

    snapshot: PendingSnapshot


_Item = bytes | _Checkpoint | _Install


class Journal:
    """The durable log of one replica in `directory` (recovered with `storage.recover`)."""

    def __init__(
        self,
        directory: Path,
        *,
        segment: Path | None,
        position: int,
        encoder: StateEncoder = forked,
    ) -> None:
        """`segment`: the recovered segment to append to (None: a new one at `position`, the
        recovered last seq); everything up to `position` is durable already. `encoder`
        starts encoding a snapshot's state off the event loop (`state_encoding.forked`)."""
        self.directory = directory
        self._encoder = encoder
        self.durable_seq = position
        self._appended_seq = position
        self._since_snapshot = 0
        self._items: list[_Item] = []
        self._generation = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._segment_path = segment or directory / storage.segment_name(position)
        self._file: BinaryIO | None = None
        self._created = False
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="journal-fsync")
        self._snapshot_thread = ThreadPoolExecutor(1, thread_name_prefix="journal-snapshot")
        self._snapshot_job: Future[None] | None = None
        self.failure: VolumeFailed | None = None
        """Set once a write or fsync failed; the journal accepts nothing after it."""
        self.failed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._write_loop())

    # -- the event loop's side ------------------------------------------------------------------

    def append(self, entry: LogEntry) -> None:
        self._items.append(storage.entry_record(entry))
        self._appended_seq = entry.seq
        self._since_snapshot += 1
        self._wake.set()

    def snapshot_due(self) -> bool:
        return self._since_snapshot >= SNAPSHOT_EVERY_ENTRIES and (
            self._snapshot_job is None or self._snapshot_job.done()
        )

    def rotate(self, snapshot: StateSnapshot) -> None:
        """`snapshot` is the state at the last appended entry: start a new segment there and
        write it in the background. Its encoding starts now, in a child process (the loop
        never encodes the whole state)."""
        self._since_snapshot = 0
        self._items.append(_Checkpoint(self._encoder(snapshot)))
        self._wake.set()

    def install(self, snapshot: Snapshot | StateSnapshot) -> None:
        """The state is now `snapshot` (nothing before it counts): durable once written. An
        unencoded one is encoded off the loop, like a checkpoint."""
        pending = (
            self._encoder(snapshot) if isinstance(snapshot, StateSnapshot) else Encoded(snapshot)
        )
        self._generation += 1
        self._since_snapshot = 0
        self._appended_seq = pending.applied_seq
        # Not even the snapshot's own position counts as durable before the snapshot is.
        self.durable_seq = min(self.durable_seq, pending.applied_seq - 1)
        for item in self._items:
            if not isinstance(item, bytes):
                item.snapshot.abandon()  # replaced before the writer took it: reap its child
        self._items = [_Install(pending)]
        self._wake.set()

    async def wait_durable(self, seq: int) -> None:
        """Return once every entry up to `seq` is on disk; `VolumeFailed` if it never will be."""
        if self.durable_seq >= seq:
            return
        if self.failure is not None:
            raise self.failure
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), future))
        await future

    async def close(self) -> None:
        """Write what is buffered (and the snapshot being written), then stop. After a failure
        nothing more is written: whatever waits has been told already."""
        if not self._task.done() and self.failure is None:
            await self.wait_durable(self._appended_seq)
        job = self._snapshot_job
        if job is not None and self.failure is None:
            await asyncio.get_running_loop().run_in_executor(None, self._wait_for_snapshot_job)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer_thread.shutdown(wait=True)
        self._snapshot_thread.shutdown(wait=True)
        if self._file is not None:
            # After a failure its buffer holds what the volume refused: flushing it fails
            # again (and must not count), closing releases the descriptor all the same.
            with contextlib.suppress(*((OSError,) if self.failure is not None else ())):
                self._file.close()

    # -- the writer -----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            items, self._items = self._items, []
            if not items:
                continue
            generation = self._generation
            target = self._appended_seq
            try:
                await loop.run_in_executor(self._writer_thread, self._write, items)
            except OSError as error:
                self._fail(error)
                return
            if generation == self._generation:
                self._durable(target)

    def _durable(self, seq: int) -> None:
        self.durable_seq = max(self.durable_seq, seq)
        while self._waiters and self._waiters[0][0] <= self.durable_seq:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def _fail(self, error: OSError) -> None:
        """The volume failed: nothing after `durable_seq` can be acknowledged. Every waiter is
        told now (a Sync call answers UNAVAILABLE and its retry finds the new active) rather
        than left to its deadline, and `failed` tells the process to stop."""
        log.critical("cannot write the log to %s: %s", self.directory, error)
        self.failure = VolumeFailed(
            f"the volume at {self.directory} failed ({error.strerror or error}): nothing "
            f"after seq {self.durable_seq} is on disk"
        )
        waiters, self._waiters = self._waiters, []
        for _, _, future in waiters:
            if not future.done():
                future.set_exception(self.failure)
        self.failed.set()

    def _write(self, items: list[_Item]) -> None:
        """In the writer thread: write `items` in order, then fsync what they touched."""
        for item in items:
            if isinstance(item, bytes):
                self._open().write(item)
            elif isinstance(item, _Checkpoint):
                # The entries before the snapshot are durable in the old segment before the
                # new one starts: until the snapshot is, recovery needs them.
                self._sync_file()
                self._new_segment(item.snapshot.applied_seq)
                self._snapshot_job = self._snapshot_thread.submit(
                    self._write_snapshot, item.snapshot
                )
            else:
                self._wait_for_snapshot_job()  # an older snapshot must not land after this
                self._close_file()
                storage.remove_all(self.directory)
                storage.write_snapshot(self.directory, item.snapshot.result())
                self._new_segment(item.snapshot.applied_seq)
        self._sync_file()
        if self._created:
            storage.fsync_directory(self.directory)
            self._created = False

    def _new_segment(self, base_seq: int) -> None:
        self._close_file()
        self._segment_path = self.directory / storage.segment_name(base_seq)
        self._file = self._segment_path.open("wb")
        self._created = True

    def _wait_for_snapshot_job(self) -> None:
        job = self._snapshot_job
        if job is not None:
            try:
                job.result()
            except OSError:
                log.exception("a background snapshot failed")

    def _write_snapshot(self, snapshot: PendingSnapshot) -> None:
        """In the snapshot thread: wait for the child's encoding, then write it."""
        storage.write_snapshot(self.directory, snapshot.result())
        storage.remove_before(self.directory, snapshot.applied_seq)

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._created = not self._segment_path.exists()
            self._file = self._segment_path.open("ab")
        return self._file

    def _sync_file(self) -> None:
        """`fdatasync`: the appended data and the file size (what reading it back needs),
        without the timestamps an `fsync` would also write (as PostgreSQL syncs its WAL)."""
        if self._file is not None:
            self._file.flush()
            os.fdatasync(self._file.fileno())

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
