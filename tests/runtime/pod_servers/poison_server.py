"""A server for tests/runtime/test_cluster_poison.py, imported by the pods (on PYTHONPATH, not
a package of the tests): a counter, a handler that raises SystemExit, and one that ends its
process as a crash in C code would."""

from __future__ import annotations

import os
from typing import Any

from gencluster import GenServer
from gencluster.server import Context


class PoisonServer(GenServer):
    def init(self, args: Any) -> int:
        return 0

    def handle_call(self, request: Any, ctx: Context, state: int) -> tuple[Any, int]:
        if request == "next_value":
            return state + 1, state + 1
        if request == "current":
            return state, state
        if request == "exit":
            raise SystemExit(1)
        if request == "crash":
            os._exit(1)
        return super().handle_call(request, ctx, state)

    def is_read_only(self, request: Any) -> bool:
        return request == "current"
