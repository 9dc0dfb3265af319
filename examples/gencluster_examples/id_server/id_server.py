"""id_server: the request "next_value" returns 1, 2, 3, ... and never the same value twice.

The state is the last value handed out (an int). Every `next_value` is a replicated call, so
a standby that takes over continues from the last acknowledged value. "current" is declared
read-only: it is answered by the active without replication.

After a partition both sides may have handed out values independently; `merge` continues
above every value either side handed out (values handed out on both sides may repeat across
the partition, which is the price of staying available during it; partitionPolicy `Fenced`
avoids that).
"""

from __future__ import annotations

from typing import Any

from gencluster import Context, GenServer

NEXT_VALUE = "next_value"
CURRENT = "current"


class IdServer(GenServer):
    version = 1

    def init(self, args: Any) -> int:
        """`args` may set {"start": N}: the first value handed out is N + 1."""
        settings = args if isinstance(args, dict) else {}
        start = settings.get("start", 0)
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"args.start must be a non-negative integer, got {start!r}")
        return start

    def handle_call(self, request: Any, ctx: Context, state: int) -> tuple[Any, Any]:
        if request == NEXT_VALUE:
            value = state + 1
            return value, value
        if request == CURRENT:
            return state, state
        return super().handle_call(request, ctx, state)

    def is_read_only(self, request: Any) -> bool:
        return request == CURRENT

    def merge(self, state_a: int, state_b: int) -> int:
        return max(state_a, state_b)
