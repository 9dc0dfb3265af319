"""A snapshot stream survives a forked encoder that dies (a fork of a threaded process can):
a new fork at a new moment, at most ENCODING_ATTEMPTS times; a codec error is final."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gencluster import state_encoding
from gencluster.log import Snapshot
from gencluster.state_encoding import SnapshotEncodingFailed, encode_off_loop

pytestmark = pytest.mark.unit


class Pending:
    def __init__(self, seq: int, failure: SnapshotEncodingFailed | None) -> None:
        self.applied_seq = seq
        self.failure = failure

    def result(self) -> Snapshot:
        if self.failure is not None:
            raise self.failure
        return Snapshot(applied_seq=self.applied_seq, applied_epoch=1, server_version=1,
                        codec="json", state=b"{}")

    def abandon(self) -> None:
        """Nothing to reap."""


def encoder(failures: list[SnapshotEncodingFailed | None]) -> tuple[Any, list[int]]:
    taken: list[int] = []

    def encode(moment: Any) -> Pending:
        taken.append(moment)
        return Pending(moment, failures.pop(0) if failures else None)

    return encode, taken


def run(failures: list[SnapshotEncodingFailed | None]) -> tuple[Snapshot, list[int]]:
    encode, taken = encoder(failures)
    moments = iter(range(1, 100))
    snapshot = asyncio.run(encode_off_loop(lambda: next(moments), encode))  # type: ignore[arg-type]
    return snapshot, taken


def test_a_dead_child_is_retried_at_a_new_moment() -> None:
    died = SnapshotEncodingFailed("ended with code -11", died=True)
    snapshot, taken = run([died, died])
    assert taken == [1, 2, 3] and snapshot.applied_seq == 3


def test_a_codec_error_is_not_retried() -> None:
    with pytest.raises(SnapshotEncodingFailed, match="unencodable"):
        run([SnapshotEncodingFailed("unencodable value")])


def test_a_child_that_keeps_dying_fails_after_the_last_attempt() -> None:
    died = SnapshotEncodingFailed("ended with code -11", died=True)
    with pytest.raises(SnapshotEncodingFailed):
        run([died] * state_encoding.ENCODING_ATTEMPTS)
