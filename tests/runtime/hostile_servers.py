"""The user server the hostile-input and fuzz tests run in real pods
(`tests.runtime.hostile_servers:BlobServer`): replies and events of a size the caller picks,
so that bounds on replies, events and batches can be reached over the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gencluster import Context, GenServer

PROJECT = Path(__file__).resolve().parents[2]
BLOB_SPEC = {"template": {"spec": {"env": [{"name": "PYTHONPATH", "value": str(PROJECT)}]}}}
"""The ClusteredServer spec that lets its pods import this module (tests/ is not installed)."""

SIZES = range(16 * 1024 * 1024 + 1)
"""Sizes the test asks for (up to 16 MiB): a bound of the test server itself, so that random
input from the fuzz tests cannot make it allocate without limit."""

COUNTS = range(101)


class BlobServer(GenServer):
    """Counts the calls that changed its state; `blob` replies with `size` bytes, `publish`
    publishes `count` events of `size` bytes, `raise` raises with a message of `size`
    characters, `calls` (read-only) reads the count."""

    def init(self, args: Any) -> dict[str, int]:
        return {"calls": 0}

    def handle_call(self, request: Any, ctx: Context, state: Any) -> Any:
        match request:
            case ["blob", int(size)] if size in SIZES:
                return "x" * size, {"calls": state["calls"] + 1}
            case ["publish", str(topic), int(count), int(size)] if (
                count in COUNTS and size in SIZES
            ):
                for _ in range(count):
                    ctx.publish(topic, "e" * size)
                return count, {"calls": state["calls"] + 1}
            case ["raise", int(size)] if size in SIZES:
                raise ValueError("m" * size)
            case ["calls"]:
                return state["calls"], state
        return super().handle_call(request, ctx, state)

    def handle_cast(self, msg: Any, ctx: Context, state: Any) -> Any:
        if msg == ["bump"]:
            return {"calls": state["calls"] + 1}
        return super().handle_cast(msg, ctx, state)

    def is_read_only(self, request: Any) -> bool:
        return request == ["calls"]

    def merge(self, state_a: Any, state_b: Any) -> Any:
        return {"calls": max(state_a["calls"], state_b["calls"])}
