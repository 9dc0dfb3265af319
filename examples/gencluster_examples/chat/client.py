"""A tiny terminal client of the chat example: watch a room across failovers and merges.

    python -m gencluster_examples.chat.client lobby ann --address 127.0.0.5:50051
    python -m gencluster_examples.chat.client lobby ann --name chat -n demo

It joins ROOM as NICK, prints the room's events as they come (`<nick> text`, joins, leaves),
posts every line read from stdin, and leaves the room at the end of input. The subscription is
the client library's: it resumes after a failover without losing or repeating a message, and
when this side of a split loses the merge it continues on the survivor, printing a
`-- numbering changed --` line, then the messages the other side posted meanwhile, each once.

Without `--address` the ClusteredServer NAME is found through the kubeconfig, as
`gencluster call NAME` finds it (`--address` also reads `GENCLUSTER_ADDRESS`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any, TextIO

from gencluster import Client
from gencluster.client import ClusterUnavailable, Event, RemoteError

from gencluster_examples.chat.chat import room_topic

JOIN_WAIT = 5.0


def render(event: Event) -> list[str]:
    """The lines printed for one room event (a renumbered event first says so)."""
    lines = []
    if event.renumbered:
        lines.append(
            f"-- numbering changed: this side was merged into epoch {event.epoch}; "
            f"continuing from event {event.number} --"
        )
    data: Any = event.data
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "message":
        lines.append(f"<{data.get('user')}> {data.get('text')}")
    elif kind in ("joined", "left"):
        lines.append(f"* {data.get('user')} {kind}")
    else:
        lines.append(f"? {data!r}")
    return lines


def follow(client: Client, room: str, out: TextIO, ready: threading.Event) -> None:
    """Print the room's events until the client is closed."""
    try:
        for event in client.subscribe(room_topic(room)):
            ready.set()
            for line in render(event):
                print(line, file=out, flush=True)
    except ClusterUnavailable as error:
        print(f"-- subscription ended: {error} --", file=out, flush=True)
    finally:
        ready.set()


def chat(client: Client, room: str, nick: str, lines: TextIO, out: TextIO) -> int:
    """Follow the room in a thread, join, post each input line, leave at end of input.

    The subscription starts with new events only; posting waits (up to `JOIN_WAIT` seconds)
    until it delivered our own `joined` event, so our first lines are printed too (a nick
    that was already a member publishes no `joined`: then the wait just runs out)."""
    ready = threading.Event()
    follower = threading.Thread(target=follow, args=(client, room, out, ready), daemon=True)
    follower.start()
    members = client.call({"op": "join", "room": room, "user": nick})
    print(f"-- joined {room}: {', '.join(members)} --", file=out, flush=True)
    ready.wait(JOIN_WAIT)
    for line in lines:
        text = line.rstrip("\n")
        if not text:
            continue
        try:
            client.call({"op": "say", "room": room, "user": nick, "text": text})
        except RemoteError as error:
            print(f"-- not posted: {error} --", file=out, flush=True)
    client.call({"op": "leave", "room": room, "user": nick})
    return 0


def address_of(arguments: argparse.Namespace) -> str:
    if arguments.address:
        return str(arguments.address)
    if not arguments.name:
        raise SystemExit("chat client: give --address HOST:PORT (or GENCLUSTER_ADDRESS) or --name")
    from gencluster.commands import kubernetes_api, service_address
    from kubernetes import client as kubernetes_client

    api, namespace = kubernetes_api(None)
    core = kubernetes_client.CoreV1Api(api)
    return service_address(core, arguments.name, arguments.namespace or namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gencluster_examples.chat.client",
        description="Join ROOM as NICK: print the room, post the lines read from stdin.",
    )
    parser.add_argument("room")
    parser.add_argument("nick")
    parser.add_argument("--address", default=os.environ.get("GENCLUSTER_ADDRESS"),
                        help="HOST:PORT[,HOST:PORT...] of the cluster")
    parser.add_argument("--name", help="the ClusteredServer, found through the kubeconfig")
    parser.add_argument("--namespace", "-n", default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    arguments = parser.parse_args(argv)
    with Client(address_of(arguments), timeout=arguments.timeout) as client:
        try:
            return chat(client, arguments.room, arguments.nick, sys.stdin, sys.stdout)
        except (RemoteError, ClusterUnavailable) as error:
            print(f"chat client: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
