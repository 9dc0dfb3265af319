"""The article's two servers, driven through the replication core as the pods would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gencluster import load_server_class
from gencluster.codec import JsonCodec
from gencluster.log import CommandKind
from gencluster.replica import Replica, Submission
from gencluster_examples.chat import ChatServer
from gencluster_examples.chat.chat import room_topic
from gencluster_examples.id_server import IdServer
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

CODEC = JsonCodec()


class Cluster:
    """An active and one standby fed every entry, with a clock that advances per request."""

    def __init__(self, server_spec: str, args: Any = None, *, seed_base: int = 0) -> None:
        server_class = load_server_class(server_spec)
        self.server_class = server_class
        self.active = Replica.from_init(server_class(), CODEC, args)
        self.standby = Replica.from_snapshot(server_class(), CODEC, self.active.snapshot())
        self.clock = 1_764_000_000.0
        self.seed = seed_base  # an active draws a fresh random seed for every request

    def submit(
        self, request: Any, request_id: str = "", kind: CommandKind = CommandKind.CALL
    ) -> Submission:
        self.clock += 1.0
        self.seed += 1
        submission = self.active.submit(
            kind,
            request_id,
            CODEC.encode(request),
            epoch=1,
            time=self.clock,
            seed=self.seed,
        )
        if submission.entry is not None:
            self.standby.receive(submission.entry)
        return submission

    def call(self, request: Any, request_id: str = "") -> Any:
        record = self.submit(request, request_id).outcome.record
        if record.error is not None:
            raise AssertionError(f"{record.error.type}: {record.error.message}")
        return json.loads(record.reply or b"null")

    def error(self, request: Any) -> tuple[str, str]:
        record = self.submit(request).outcome.record
        assert record.error is not None, f"{request!r} unexpectedly succeeded"
        return record.error.type, record.error.message

    def in_step(self) -> bool:
        return self.active.snapshot() == self.standby.snapshot()


# --- id_server -----------------------------------------------------------------------------

ID_SERVER = "gencluster_examples.id_server:IdServer"


def test_next_value_counts_from_one() -> None:
    cluster = Cluster(ID_SERVER)
    assert [cluster.call("next_value") for _ in range(3)] == [1, 2, 3]
    assert cluster.in_step()


def test_next_value_continues_on_the_standby_after_failover() -> None:
    cluster = Cluster(ID_SERVER)
    for _ in range(5):
        cluster.call("next_value")
    new_active = cluster.standby
    submission = new_active.submit(
        CommandKind.CALL, "", CODEC.encode("next_value"), epoch=2, time=0.0, seed=0
    )
    assert json.loads(submission.outcome.record.reply or b"") == 6


def test_a_retried_next_value_gets_its_original_value() -> None:
    cluster = Cluster(ID_SERVER)
    first = cluster.call("next_value", "req-1")
    cluster.call("next_value", "req-2")
    assert cluster.call("next_value", "req-1") == first
    assert cluster.call("next_value") == 3


def test_current_is_read_only() -> None:
    cluster = Cluster(ID_SERVER, {"start": 41})
    submission = cluster.submit("current")
    assert submission.entry is None
    assert json.loads(submission.outcome.record.reply or b"") == 41
    assert cluster.call("next_value") == 42


@pytest.mark.parametrize("args", [{"start": -1}, {"start": "7"}, {"start": True}])
def test_id_server_rejects_bad_args(args: Any) -> None:
    with pytest.raises(ValueError, match=r"args\.start must be a non-negative integer"):
        IdServer().init(args)


def test_id_server_unknown_request_changes_nothing() -> None:
    cluster = Cluster(ID_SERVER)
    cluster.call("next_value")
    assert cluster.error("reset") == ("UnknownRequest", "IdServer has no handler for call 'reset'")
    assert cluster.call("next_value") == 2


@given(a=st.integers(0, 10**9), b=st.integers(0, 10**9))
def test_id_server_merge_continues_above_both_sides(a: int, b: int) -> None:
    merged = IdServer().merge(a, b)
    assert merged >= a and merged >= b


# --- chat ----------------------------------------------------------------------------------

CHAT = "gencluster_examples.chat:ChatServer"


def join(room: str, user: str) -> dict[str, str]:
    return {"op": "join", "room": room, "user": user}


def say(room: str, user: str, text: str) -> dict[str, str]:
    return {"op": "say", "room": room, "user": user, "text": text}


def test_chat_rooms_members_and_messages() -> None:
    cluster = Cluster(CHAT)
    assert cluster.call(join("lobby", "ann")) == ["ann"]
    assert cluster.call(join("lobby", "bob")) == ["ann", "bob"]
    message = cluster.call(say("lobby", "ann", "hello"))
    assert message["user"] == "ann" and message["text"] == "hello"
    assert message["time"] == cluster.clock
    assert cluster.call({"op": "history", "room": "lobby"}) == [message]
    assert cluster.call({"op": "leave", "room": "lobby", "user": "ann"}) == ["bob"]
    assert cluster.call({"op": "members", "room": "lobby"}) == ["bob"]
    assert cluster.call({"op": "rooms"}) == ["lobby"]
    assert cluster.call({"op": "members", "room": "nowhere"}) == []
    assert cluster.in_step()


def test_chat_publishes_room_events_in_order() -> None:
    cluster = Cluster(CHAT)
    cluster.submit(join("lobby", "ann"))
    cluster.submit(join("lobby", "ann"))  # already a member: no second event
    cluster.submit(say("lobby", "ann", "one"))
    cluster.submit(join("other", "bob"))
    cluster.submit({"op": "leave", "room": "lobby", "user": "ann"})
    read = cluster.active.machine.events_from(room_topic("lobby"), 1)
    kinds = [json.loads(event.data)["type"] for event in read.events]
    assert kinds == ["joined", "message", "left"]
    assert [event.number for event in read.events] == [1, 2, 3]
    on_standby = cluster.standby.machine.events_from(room_topic("lobby"), 2)
    assert on_standby.events == read.events[1:]


def test_read_only_chat_requests_are_not_replicated() -> None:
    cluster = Cluster(CHAT)
    cluster.call(join("lobby", "ann"))
    for request in ({"op": "members", "room": "lobby"}, {"op": "history", "room": "x"}):
        assert cluster.submit(request).entry is None
    assert cluster.active.log.last_seq == 1


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (say("lobby", "zed", "hi"), ("PermissionError", "'zed' has not joined room 'lobby'")),
        ({"op": "join", "room": "", "user": "x"}, ("ValueError", "'join' needs 'room'")),
        ({"op": "join", "room": "lobby"}, ("ValueError", "'join' needs 'user'")),
        (say("lobby", "ann", "x" * 5000), ("ValueError", "'text' is 5000 characters")),
        ({"op": "dance"}, ("UnknownRequest", "ChatServer has no handler")),
        ("lobby", ("UnknownRequest", "ChatServer has no handler")),
    ],
)
def test_bad_chat_requests_change_nothing(request_: Any, error: tuple[str, str]) -> None:
    cluster = Cluster(CHAT)
    cluster.call(join("lobby", "ann"))
    before = cluster.active.machine.snapshot()
    error_type, message = cluster.error(request_)
    assert error_type == error[0] and error[1] in message
    after = cluster.active.machine.snapshot()
    assert (after.state, after.events) == (before.state, before.events)


def test_chat_history_is_bounded() -> None:
    cluster = Cluster(CHAT, {"history": 2})
    cluster.call(join("lobby", "ann"))
    for text in ("a", "b", "c"):
        cluster.call(say("lobby", "ann", text))
    history = cluster.call({"op": "history", "room": "lobby"})
    assert [message["text"] for message in history] == ["b", "c"]


def test_chat_merge_unions_members_and_interleaves_messages() -> None:
    left, right = Cluster(CHAT), Cluster(CHAT, seed_base=1000)
    right.clock += 0.5  # the two sides' messages alternate in time
    for cluster, user in ((left, "ann"), (right, "bob")):
        cluster.call(join("lobby", user))
        cluster.call(say("lobby", user, f"{user} 1"))
        cluster.call(say("lobby", user, f"{user} 2"))
    right.call(join("kitchen", "cy"))
    server = ChatServer()
    merged = server.merge(left.active.machine.state, right.active.machine.state)
    lobby = merged["rooms"]["lobby"]
    assert lobby["members"] == ["ann", "bob"]
    assert [m["text"] for m in lobby["messages"]] == ["ann 1", "bob 1", "ann 2", "bob 2"]
    assert merged["rooms"]["kitchen"]["members"] == ["cy"]
    again = server.merge(merged, right.active.machine.state)
    assert again == merged  # merging what is already merged adds no duplicates


chat_ops = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "say"]),
        st.sampled_from(["lobby", "den"]),
        st.sampled_from(["ann", "bob"]),
    ),
    max_size=12,
)


@given(left_ops=chat_ops, right_ops=chat_ops)
def test_chat_merge_keeps_every_message_of_both_sides_once(
    left_ops: list[tuple[str, str, str]], right_ops: list[tuple[str, str, str]]
) -> None:
    sides = []
    for ops, offset, seed_base in ((left_ops, 0.0, 0), (right_ops, 0.25, 1000)):
        cluster = Cluster(CHAT, {"history": 1000}, seed_base=seed_base)
        cluster.clock += offset
        for op, room, user in ops:
            cluster.submit({"op": op, "room": room, "user": user, "text": f"{user}@{room}"})
        sides.append(cluster.active.machine.state)
    merged = ChatServer().merge(*sides)
    for room in merged["rooms"].values():
        ids = [message["id"] for message in room["messages"]]
        assert len(ids) == len(set(ids))
        times = [message["time"] for message in room["messages"]]
        assert times == sorted(times)
    all_ids = {
        message["id"]
        for side in sides
        for room in side["rooms"].values()
        for message in room["messages"]
    }
    merged_ids = {m["id"] for room in merged["rooms"].values() for m in room["messages"]}
    assert merged_ids == all_ids


def test_replication_cost_does_not_grow_with_the_state() -> None:
    """What is replicated per call is the command, not the state: the same `say` costs the
    same log bytes in an empty room and in a room with a thousand messages."""
    small, large = Cluster(CHAT, {"history": 5000}), Cluster(CHAT, {"history": 5000})
    for cluster in (small, large):
        cluster.call(join("lobby", "ann"))
    for index in range(1000):
        large.call(say("lobby", "ann", f"message {index}"))
    sizes = []
    for cluster in (small, large):
        entry = cluster.submit(say("lobby", "ann", "same text"), "same-id").entry
        assert entry is not None
        sizes.append(entry.command.size)
    assert sizes[0] == sizes[1]
    assert len(large.active.snapshot().state) > 100 * sizes[1]
