"""A bench-only GenServer: id_server's counter plus a state that can be made large on demand.

The benchmark needs a state of N bytes to time a standby's join (snapshot size) and to show
that replication bytes per call do not grow with the state. `["fill", N]` replaces the blob
with N bytes in one call whose *log entry* stays tiny (the command is replicated, not the
state), so building a 100 MB state costs one call, not 100 MB of log.

Pods import it as `bench_server:FillServer` with `bench/` on their PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

from gencluster import Context, GenServer

MAX_FILL_BYTES = 512 * 1024 * 1024
"""A typo should not make every replica try to allocate the machine's memory."""


class FillServer(GenServer):
    """State: {"n": last value handed out, "blob": a filler string}."""

    version = 1

    def init(self, args: Any) -> dict[str, Any]:
        return {"n": 0, "blob": ""}

    def handle_call(self, request: Any, ctx: Context, state: Any) -> tuple[Any, Any]:
        match request:
            case "next_value":
                value = state["n"] + 1
                return value, {"n": value, "blob": state["blob"]}
            case "current":
                return state["n"], state
            case "size":
                return len(state["blob"]), state
            case ["fill", int(size)] if 0 <= size <= MAX_FILL_BYTES:
                return size, {"n": state["n"], "blob": "x" * size}
        return super().handle_call(request, ctx, state)

    def is_read_only(self, request: Any) -> bool:
        return request in ("current", "size")

    def merge(self, state_a: Any, state_b: Any) -> Any:
        return max(state_a, state_b, key=lambda state: state["n"])
