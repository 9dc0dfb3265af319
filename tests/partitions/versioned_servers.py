"""Two versions of one server class whose state format changes, for the tests of rolling
updates, merges and downgrades across versions (importable with the project root on
`PYTHONPATH`, as `merge_servers`).

Version 1 is id_server: the state is the last value handed out, an int. Version 2 keeps it in
a dict, `{"last": N, "format": 2}`, and its `code_change(1, n)` converts. Version 2's `merge`
and handlers refuse an int: a v1 state reaching them unconverted (a merge payload without its
version, a snapshot joined without `code_change`) fails loudly instead of passing unnoticed.
Version 1 does not accept downgrades (the default); `DowngradableIdServerV1` does.
"""

from __future__ import annotations

from typing import Any

from gencluster import Context, GenServer
from gencluster_examples.id_server import IdServer

NEXT_VALUE = "next_value"
CURRENT = "current"


class VersionedIdServerV1(IdServer):
    """id_server as it is (state: an int), declared version 1."""

    version = 1


def _checked(state: Any) -> dict[str, Any]:
    if not (isinstance(state, dict) and state.get("format") == 2):
        raise TypeError(f"a version 2 state is a dict with format 2, got {state!r}")
    return state


class VersionedIdServerV2(GenServer):
    """id_server with its state in a dict (version 2)."""

    version = 2

    def init(self, args: Any) -> dict[str, Any]:
        return {"last": 0, "format": 2}

    def handle_call(self, request: Any, ctx: Context, state: Any) -> tuple[Any, Any]:
        current = _checked(state)
        if request == NEXT_VALUE:
            value = current["last"] + 1
            return value, {"last": value, "format": 2}
        if request == CURRENT:
            return current["last"], current
        return super().handle_call(request, ctx, state)

    def is_read_only(self, request: Any) -> bool:
        return request == CURRENT

    def merge(self, state_a: Any, state_b: Any) -> dict[str, Any]:
        return {"last": max(_checked(state_a)["last"], _checked(state_b)["last"]), "format": 2}

    def code_change(self, old_version: int, state: Any) -> Any:
        if old_version == 1 and isinstance(state, int):
            return {"last": state, "format": 2}
        raise ValueError(f"cannot convert a version {old_version} state {state!r}")


class DowngradableIdServerV1(VersionedIdServerV1):
    """Version 1 that declares it reads version 2 states (`accepts_downgrade`)."""

    accepts_downgrade = True

    def code_change(self, old_version: int, state: Any) -> Any:
        if old_version == 2 and isinstance(state, dict):
            return int(_checked(state)["last"])
        return super().code_change(old_version, state)
