"""A process and its descendants, read from /proc: what the benches add up (CPU seconds,
resident memory) for a pod whose container process may be a wrapper's child."""

from __future__ import annotations

import os


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants now (processes that end meanwhile are left out)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        parent = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree
