"""chat: the article's highly available chat server, on gencluster.

Users join and leave rooms and say things in them; everything said in room R is published on
topic `room:R`, so clients follow a room with `Subscribe("room:R")` and, after a failover,
resume from their last event number without losing or repeating a message.

Requests are JSON objects with an "op":

    {"op": "join",    "room": R, "user": U}             -> the room's members
    {"op": "leave",   "room": R, "user": U}             -> the room's members
    {"op": "say",     "room": R, "user": U, "text": T}  -> the message (id, time, user, text)
    {"op": "members", "room": R}                        -> members (read-only)
    {"op": "history", "room": R}                        -> recent messages (read-only)
    {"op": "rooms"}                                     -> room names (read-only)

The state keeps each room's members and its last `history` messages. Message ids come from
`ctx.random` and times from `ctx.time`, so every replica stores identical messages.
`merge` (after a partition) unions the members and interleaves both sides' messages by time,
without duplicates, and publishes to each side's subscribers the messages the other side
posted (`ctx.publish(..., to="a"|"b")`), so every subscriber of a room receives every message
of the split exactly once (docs/partitions.md, "Subscribers across a merge").
"""

from __future__ import annotations

import uuid
from typing import Any

from gencluster import Context, GenServer

DEFAULT_HISTORY = 100
MAX_TEXT_LENGTH = 4096
READ_ONLY_OPS = frozenset({"members", "history", "rooms"})


def room_topic(room: str) -> str:
    """The topic a room's events are published on."""
    return f"room:{room}"


class ChatServer(GenServer):
    version = 1

    def init(self, args: Any) -> dict[str, Any]:
        """`args` may set {"history": N}: messages kept per room (default 100)."""
        settings = args if isinstance(args, dict) else {}
        history = settings.get("history", DEFAULT_HISTORY)
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ValueError(f"args.history must be a positive integer, got {history!r}")
        return {"history": history, "rooms": {}}

    def is_read_only(self, request: Any) -> bool:
        return isinstance(request, dict) and request.get("op") in READ_ONLY_OPS

    def handle_call(self, request: Any, ctx: Context, state: dict[str, Any]) -> tuple[Any, Any]:
        op = request.get("op") if isinstance(request, dict) else None
        if op == "rooms":
            return sorted(state["rooms"]), state
        if op not in {"join", "leave", "say", "members", "history"}:
            return super().handle_call(request, ctx, state)
        room_name = _text_field(request, "room")
        room = state["rooms"].get(room_name, {"members": [], "messages": []})
        if op == "members":
            return room["members"], state
        if op == "history":
            return room["messages"], state
        user = _text_field(request, "user")
        if op == "join":
            if user not in room["members"]:
                room = {**room, "members": sorted([*room["members"], user])}
                ctx.publish(room_topic(room_name), {"type": "joined", "user": user})
            return room["members"], _with_room(state, room_name, room)
        if op == "leave":
            if user in room["members"]:
                room = {**room, "members": [m for m in room["members"] if m != user]}
                ctx.publish(room_topic(room_name), {"type": "left", "user": user})
            return room["members"], _with_room(state, room_name, room)
        text = _text_field(request, "text", max_length=MAX_TEXT_LENGTH)
        if user not in room["members"]:
            raise PermissionError(f"{user!r} has not joined room {room_name!r}")
        message = {
            "id": str(uuid.UUID(int=ctx.random.getrandbits(128), version=4)),
            "time": ctx.time,
            "user": user,
            "text": text,
        }
        messages = [*room["messages"], message][-state["history"] :]
        ctx.publish(room_topic(room_name), {"type": "message", **message})
        return message, _with_room(state, room_name, {**room, "messages": messages})

    def merge(
        self, state_a: dict[str, Any], state_b: dict[str, Any], ctx: Context | None = None
    ) -> dict[str, Any]:
        """Union each room's members, interleave both sides' messages by time; with a `ctx`,
        publish each side's messages to the other side's subscribers (`to="a"`: the messages
        only side b has, news to side a's subscribers; `to="b"` the reverse), so that every
        subscriber, on either side, ends up with every message exactly once."""
        history = max(state_a["history"], state_b["history"])
        rooms: dict[str, Any] = {}
        for name in sorted(state_a["rooms"].keys() | state_b["rooms"].keys()):
            room_a = state_a["rooms"].get(name, {"members": [], "messages": []})
            room_b = state_b["rooms"].get(name, {"members": [], "messages": []})
            by_id = {message["id"]: message for message in room_a["messages"]}
            by_id.update({message["id"]: message for message in room_b["messages"]})
            messages = sorted(by_id.values(), key=lambda message: (message["time"], message["id"]))
            if ctx is not None:
                _publish_news(ctx, name, room_a["messages"], room_b["messages"],
                              state_a["history"], state_b["history"])
            rooms[name] = {
                "members": sorted(set(room_a["members"]) | set(room_b["members"])),
                "messages": messages[-history:],
            }
        return {"history": history, "rooms": rooms}


def _publish_news(
    ctx: Context, room: str, messages_a: list[dict[str, Any]], messages_b: list[dict[str, Any]],
    history_a: int, history_b: int,
) -> None:
    """Each side's messages the other side never had, in each side's own order, published to
    the other side's subscribers."""
    for message in _news(messages_b, messages_a, history_a):
        ctx.publish(room_topic(room), {"type": "message", **message}, to="a")
    for message in _news(messages_a, messages_b, history_b):
        ctx.publish(room_topic(room), {"type": "message", **message}, to="b")


def _news(
    theirs: list[dict[str, Any]], mine: list[dict[str, Any]], my_history: int
) -> list[dict[str, Any]]:
    """The messages of `theirs` that a side holding `mine` never had. A message missing from
    `mine` may also be one this side had and trimmed (its history keeps the last
    `my_history`): once its history is full, a message older than its oldest kept one is
    taken as trimmed, not news, so its subscribers, who saw it, do not get it twice."""
    known = {message["id"] for message in mine}
    oldest = (mine[0]["time"], mine[0]["id"]) if mine and len(mine) >= my_history else None
    return [
        message for message in theirs
        if message["id"] not in known
        and (oldest is None or (message["time"], message["id"]) > oldest)
    ]


def _with_room(state: dict[str, Any], name: str, room: dict[str, Any]) -> dict[str, Any]:
    """A new state with one room replaced: earlier states (and replies) stay untouched."""
    return {**state, "rooms": {**state["rooms"], name: room}}


def _text_field(request: dict[str, Any], name: str, *, max_length: int = 200) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{request.get('op')!r} needs {name!r}: a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"{name!r} is {len(value)} characters, over the limit of {max_length}")
    return value
