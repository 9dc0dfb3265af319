"""What the chat example's terminal client and `gencluster subscribe` print for an event,
including the signal that a subscription moved to the survivor of a merge."""

from __future__ import annotations

import pytest
from gencluster.client import Event
from gencluster.commands import event_line, parser
from gencluster_examples.chat.client import render

pytestmark = pytest.mark.unit


def room_event(data: object, *, renumbered: bool = False, missed: int = 0) -> Event:
    return Event("room:lobby", 7, data, seq=12, time=1000.0, epoch=3, missed=missed,
                 origin_epoch=3, renumbered=renumbered)


def test_the_chat_client_prints_messages_joins_and_leaves() -> None:
    assert render(room_event({"type": "message", "user": "ann", "text": "hi"})) == ["<ann> hi"]
    assert render(room_event({"type": "joined", "user": "bob"})) == ["* bob joined"]
    assert render(room_event({"type": "left", "user": "bob"})) == ["* bob left"]
    assert render(room_event("odd")) == ["? 'odd'"]


def test_the_chat_client_says_when_numbering_changed() -> None:
    lines = render(room_event({"type": "message", "user": "bob", "text": "x"}, renumbered=True))
    assert lines == [
        "-- numbering changed: this side was merged into epoch 3; continuing from event 7 --",
        "<bob> x",
    ]


def test_subscribe_prints_one_json_object_per_event() -> None:
    assert event_line(room_event({"type": "joined", "user": "bob"})) == {
        "number": 7, "epoch": 3, "time": 1000.0, "data": {"type": "joined", "user": "bob"}}
    marked = event_line(room_event("x", renumbered=True, missed=2))
    assert (marked["renumbered"], marked["missed"]) == (True, 2)


def test_subscribe_takes_a_name_or_an_address_and_a_topic() -> None:
    arguments = parser().parse_args(["subscribe", "chat", "room:lobby", "--from", "3"])
    assert (arguments.name, arguments.topic, arguments.from_event) == ("chat", "room:lobby", 3)
    arguments = parser().parse_args(["subscribe", "--address", "h:1", "room:lobby"])
    assert (arguments.name, arguments.topic) == (None, "room:lobby")
