"""User servers shared by the runtime tests."""

from __future__ import annotations

from typing import Any

from gencluster import Context, GenServer


class Ledger(GenServer):
    """A small server exercising every path of the machine."""

    version = 2

    def init(self, args: Any) -> dict[str, Any]:
        return {"total": args or 0, "items": []}

    def handle_call(self, request: Any, ctx: Context, state: Any) -> Any:
        match request:
            case ["add", int(amount)]:
                total = state["total"] + amount
                ctx.publish("totals", total)
                return total, {**state, "total": total}
            case ["fail"]:
                raise ValueError("boom")
            case ["mutate_then_fail"]:
                state["items"].append("x")
                raise RuntimeError("half done")
            case ["stamp"]:
                return [ctx.time, ctx.random.random(), ctx.request_id, ctx.seq], state
            case ["bad_return"]:
                return "not a pair"
            case ["unencodable"]:
                return {1, 2}, {**state, "total": -1}
            case ["bad_event"]:
                ctx.publish("totals", {1, 2})
                return None, {**state, "total": -1}
            case ["publish_two", str(topic)]:
                ctx.publish(topic, "first")
                ctx.publish(topic, "second")
                return None, state
            case ["peek"]:
                return state["total"], {**state, "total": 999}
            case ["peek_publish"]:
                ctx.publish("totals", 0)
                return None, state
        return super().handle_call(request, ctx, state)

    def handle_cast(self, msg: Any, ctx: Context, state: Any) -> Any:
        if msg == ["fail"]:
            raise KeyError("cast failed")
        return {**state, "items": [*state["items"], msg]}

    def is_read_only(self, request: Any) -> bool:
        return request in (["peek"], ["peek_publish"])

    def merge(self, state_a: Any, state_b: Any) -> Any:
        return {
            "total": state_a["total"] + state_b["total"],
            "items": state_a["items"] + state_b["items"],
        }

    def code_change(self, old_version: int, state: Any) -> Any:
        if old_version == 1:
            return {"total": state, "items": []}
        raise ValueError(f"cannot upgrade from version {old_version}")
