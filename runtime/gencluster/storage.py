"""A replica's log and snapshots on its own volume (`GENCLUSTER_DATA_DIR`): the format, and
recovery from whatever a crash left there.

Files in the data directory:

- `snapshot-<seq>.snap`: a whole state at `seq` (the `Snapshot` stream format of
  `wire.snapshot_to_chunks`, one record per chunk). Written to a temporary name, fsynced,
  renamed, then the directory fsynced: a snapshot file is complete or absent.
- `log-<base>.seg`: the entries after `base` (`pb.LogEntry`, one record each), appended. A
  segment starts at every snapshot point, so the segments chained from the newest snapshot
  hold everything after it; older segments and snapshots are deleted once a newer snapshot is
  durable.

A record is `length (4 bytes, big-endian) | CRC-32 of the payload (4 bytes) | payload`. A crash
can leave the last record of the newest segment torn (short) or, after a disk fault, a record
whose CRC does not match: recovery keeps every record before it and truncates the file there
(and says so in the log). An entry that does not directly follow its predecessor ends the
chain the same way.

`journal.Journal` appends and fsyncs (group commit); this module is the format and the
recovery, run once at start before the replica exists.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gencluster.log import LogEntry, Snapshot
from gencluster.proto import gencluster_pb2 as pb
from gencluster.wire import (
    WireError,
    entry_from_message,
    entry_to_message,
    snapshot_from_chunks,
    snapshot_to_chunks,
)

HEADER = struct.Struct(">II")
"""Record header: payload length, CRC-32 of the payload."""

SEGMENT_PATTERN = re.compile(r"^log-(\d{20})\.seg$")
SNAPSHOT_PATTERN = re.compile(r"^snapshot-(\d{20})\.snap$")
TEMPORARY_SUFFIX = ".tmp"


def segment_name(base_seq: int) -> str:
    return f"log-{base_seq:020d}.seg"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def frame(payload: bytes) -> bytes:
    """One record: header and payload."""
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Unframed:
    """The valid records at the start of a file; `valid_bytes` is where they end, `problem`
    (None for a clean end) why reading stopped there."""

    records: tuple[bytes, ...]
    valid_bytes: int
    problem: str | None


def unframe(data: bytes) -> Unframed:
    """Split `data` into records, stopping at the first torn or corrupt one."""
    records: list[bytes] = []
    offset = 0
    size = len(data)
    while offset < size:
        if size - offset < HEADER.size:
            return Unframed(tuple(records), offset, f"torn record header at byte {offset}")
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + length
        if end > size:
            return Unframed(
                tuple(records),
                offset,
                f"torn record at byte {offset}: {length} bytes announced, {size - start} present",
            )
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return Unframed(tuple(records), offset, f"corrupt record at byte {offset} (CRC)")
        records.append(payload)
        offset = end
    return Unframed(tuple(records), offset, None)


def entry_record(entry: LogEntry) -> bytes:
    return frame(entry_to_message(entry).SerializeToString())


def snapshot_records(snapshot: Snapshot) -> bytes:
    chunks = snapshot_to_chunks(snapshot, epoch=snapshot.applied_epoch)
    return b"".join(frame(chunk.SerializeToString()) for chunk in chunks)


def snapshot_from_records(data: bytes) -> Snapshot:
    """Raises `WireError` for anything but a complete, valid snapshot file."""
    unframed = unframe(data)
    if unframed.problem is not None:
        raise WireError(unframed.problem)
    chunks = []
    for record in unframed.records:
        chunk = pb.SnapshotChunk()
        try:
            chunk.ParseFromString(record)
        except Exception as error:  # protobuf's DecodeError has no stable import path
            raise WireError(f"undecodable snapshot chunk: {error}") from error
        chunks.append(chunk)
    snapshot, _ = snapshot_from_chunks(chunks)
    return snapshot


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a data directory holds: the newest valid snapshot (None: the replica never held
    state here), the entries after it, the segment to keep appending to (None: start a new
    one at the position), and what was truncated or ignored (for the log)."""

    snapshot: Snapshot | None
    entries: tuple[LogEntry, ...]
    segment: Path | None
    notes: tuple[str, ...]

    @property
    def position(self) -> tuple[int, int]:
        """(applied_epoch, applied_seq) of the recovered state."""
        if self.entries:
            return self.entries[-1].epoch, self.entries[-1].seq
        if self.snapshot is None:
            return 0, 0
        return self.snapshot.applied_epoch, self.snapshot.applied_seq


def numbered(directory: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    """The files of `directory` named by `pattern`, with their number, ascending."""
    found = []
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def recover(directory: Path) -> Recovered:
    """Read the newest valid snapshot and the chain of segments after it; truncate a torn or
    corrupt tail at its last valid record, and delete every file the chain does not use (an
    invalid snapshot, segments a newer snapshot covers, segments past a break)."""
    notes: list[str] = []
    for leftover in directory.glob(f"*{TEMPORARY_SUFFIX}"):
        leftover.unlink()
    snapshot: Snapshot | None = None
    snapshot_path: Path | None = None
    for seq, path in reversed(numbered(directory, SNAPSHOT_PATTERN)):
        try:
            snapshot = snapshot_from_records(path.read_bytes())
        except WireError as error:
            notes.append(f"ignored snapshot {path.name}: {error}")
            continue
        if snapshot.applied_seq != seq:
            notes.append(f"ignored snapshot {path.name}: it holds seq {snapshot.applied_seq}")
            snapshot = None
            continue
        snapshot_path = path
        break
    if snapshot is None:
        _remove(directory, keep=(), notes=notes)
        return Recovered(None, (), None, tuple(notes))
    position, epoch = snapshot.applied_seq, snapshot.applied_epoch
    entries: list[LogEntry] = []
    chain: list[Path] = []
    segments = dict(numbered(directory, SEGMENT_PATTERN))
    while position in segments:
        path = segments[position]
        chain.append(path)
        read, valid_bytes, problem = _read_segment(path.read_bytes(), position, epoch)
        entries.extend(read)
        if read:
            position, epoch = read[-1].seq, read[-1].epoch
        if problem is not None:
            notes.append(f"truncated {path.name} at byte {valid_bytes}: {problem}")
            with path.open("r+b") as file:
                file.truncate(valid_bytes)
                os.fsync(file.fileno())
            break
        if not read:
            break
    keep = [snapshot_path, *chain]
    _remove(directory, keep=keep, notes=notes)
    return Recovered(snapshot, tuple(entries), chain[-1] if chain else None, tuple(notes))


def _read_segment(
    data: bytes, base: int, epoch: int
) -> tuple[list[LogEntry], int, str | None]:
    """The entries of one segment that follow (`base`, `epoch`) in order; where they end."""
    unframed = unframe(data)
    entries: list[LogEntry] = []
    offset = 0
    last_seq, last_epoch = base, epoch
    for record in unframed.records:
        message = pb.LogEntry()
        try:
            message.ParseFromString(record)
            entry = entry_from_message(message)
        except Exception as error:
            return entries, offset, f"undecodable entry: {error}"
        if entry.seq != last_seq + 1 or entry.epoch < last_epoch:
            return entries, offset, (
                f"entry {entry.seq} (epoch {entry.epoch}) does not follow {last_seq} "
                f"(epoch {last_epoch})"
            )
        entries.append(entry)
        last_seq, last_epoch = entry.seq, entry.epoch
        offset += HEADER.size + len(record)
    return entries, unframed.valid_bytes, unframed.problem


def _remove(directory: Path, *, keep: Iterable[Path | None], notes: list[str]) -> None:
    kept = {path for path in keep if path is not None}
    removed = False
    for pattern in (SNAPSHOT_PATTERN, SEGMENT_PATTERN):
        for _, path in numbered(directory, pattern):
            if path not in kept:
                path.unlink()
                notes.append(f"removed {path.name} (not on the recovered chain)")
                removed = True
    if removed:
        fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (creations, renames, deletions) durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_snapshot(directory: Path, snapshot: Snapshot) -> Path:
    """Write `snapshot` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = directory / snapshot_name(snapshot.applied_seq)
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    with temporary.open("wb") as file:
        file.write(snapshot_records(snapshot))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    fsync_directory(directory)
    return path


def remove_before(directory: Path, seq: int) -> None:
    """Delete the snapshots and segments that the durable snapshot at `seq` covers."""
    removed = False
    for number, path in numbered(directory, SNAPSHOT_PATTERN):
        if number < seq:
            path.unlink()
            removed = True
    for number, path in numbered(directory, SEGMENT_PATTERN):
        if number < seq:
            path.unlink()
            removed = True
    if removed:
        fsync_directory(directory)


def remove_all(directory: Path) -> None:
    """Forget everything (a join by snapshot replaces a diverged history), durably, before
    the new snapshot is written: a crash in between leaves no state rather than an old one."""
    for pattern in (SNAPSHOT_PATTERN, SEGMENT_PATTERN):
        for _, path in numbered(directory, pattern):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    fsync_directory(directory)
