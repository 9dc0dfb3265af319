"""Allocation of the per-pod resources the kubelet hands out: loopback IPs and uids.

Both pools hand values out round-robin rather than lowest-free, so a value released by a
deleted pod is not immediately given to the next one: a fresh pod must not inherit the old
one's TIME_WAIT sockets, nftables fault rules keyed on its uid, or clients still pointed at it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class PoolExhausted(Exception):
    """Every value of a pool is in use."""


class Pool(Generic[T]):
    """Round-robin allocator of distinct values, each owned by one key (e.g. a pod uid)."""

    def __init__(self, values: Sequence[T]) -> None:
        self._values = values
        self._next = 0
        self._owner_of: dict[T, Hashable] = {}
        self._value_of: dict[Hashable, T] = {}

    def allocate(self, owner: Hashable) -> T:
        """The value held by `owner`, allocating the next free one the first time."""
        if owner in self._value_of:
            return self._value_of[owner]
        for step in range(len(self._values)):
            index = (self._next + step) % len(self._values)
            value = self._values[index]
            if value not in self._owner_of:
                self._next = index + 1
                self._owner_of[value] = owner
                self._value_of[owner] = value
                return value
        raise PoolExhausted(f"all {len(self._values)} values are in use")

    def release(self, owner: Hashable) -> None:
        """Give back what `owner` holds (no-op if it holds nothing)."""
        value = self._value_of.pop(owner, None)
        if value is not None:
            del self._owner_of[value]

    def in_use(self) -> dict[Hashable, T]:
        """A copy of owner → value for everything allocated."""
        return dict(self._value_of)


def pod_ip_pool(pod_network: str) -> Pool[str]:
    """Pod IPs from `pod_network` (e.g. "127.5.64.0/18"), from network+1 to broadcast-1."""
    network = ipaddress.ip_network(pod_network)

    class _Hosts(Sequence[str]):
        def __len__(self) -> int:
            return max(network.num_addresses - 2, 0)

        def __getitem__(self, index):  # type: ignore[override]
            if not 0 <= index < len(self):
                raise IndexError(index)
            return str(network.network_address + 1 + index)

    return Pool(_Hosts())


def uid_pool(run_as_users: range) -> Pool[int]:
    """uids the pods run as, one per pod."""
    return Pool(run_as_users)
