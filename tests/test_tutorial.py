"""docs/tutorial.md's server class, exactly as the page prints it, through the runtime's state
machine: init, a replicated call, a read-only call, a handler error that changes nothing, and
a merge of two sides after a split."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gencluster.codec import JsonCodec
from gencluster.log import Command, CommandKind, LogEntry, Snapshot
from gencluster.machine import StateMachine
from gencluster.wire import merge_payload

pytestmark = pytest.mark.unit

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
CODEC = JsonCodec()


def tutorial_module() -> ModuleType:
    """The first python block of the page, compiled as `mycounter.server` would be."""
    (source, *_) = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    module = ModuleType("mycounter.server")
    exec(compile(source, str(TUTORIAL), "exec"), module.__dict__)  # our own page
    return module


def entry(seq: int, payload: Any, kind: CommandKind = CommandKind.CALL) -> LogEntry:
    encoded = CODEC.encode(payload)
    if kind is CommandKind.MERGE:
        encoded = merge_payload(Snapshot(applied_seq=1, applied_epoch=1, server_version=1,
                                         codec=CODEC.name, state=encoded, replies=()))
    return LogEntry(seq, 1, Command(kind, f"req-{seq}", encoded, 1000.0, 1))


def reply(machine: StateMachine, seq: int, payload: Any) -> Any:
    outcome = machine.apply(entry(seq, payload))
    return outcome.record


def test_the_tutorial_counter_runs_as_the_page_says() -> None:
    counter = tutorial_module().Counter()
    machine = StateMachine.from_init(counter, CODEC, {"start": 100})
    record = reply(machine, 1, {"op": "add", "amount": 5, "who": "me"})
    assert json.loads(record.reply) == 105
    assert json.loads(reply(machine, 2, "get").reply) == 105
    assert counter.is_read_only("get") and not counter.is_read_only({"op": "add"})
    failed = reply(machine, 3, {"op": "subtract"})
    assert failed.error is not None, "an unknown request is an error reply"
    assert json.loads(reply(machine, 4, "get").reply) == 105, "and the state is unchanged"
    other_side = {"value": 120, "by": {"me": 1, "them": 4}}
    machine.apply(entry(5, other_side, CommandKind.MERGE))
    assert json.loads(reply(machine, 6, "get").reply) == 120
    assert counter.merge({"value": 1, "by": {"a": 2}}, {"value": 3, "by": {"a": 1, "b": 1}}) == {
        "value": 3, "by": {"a": 2, "b": 1}}
