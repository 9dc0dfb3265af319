"""Fixtures shared by every test folder, and the test layers.

Every test module carries exactly one layer marker (`pytestmark = pytest.mark.unit`, ...):

- `unit`: pure tests (no sockets, no subprocesses, no control plane); `make unit` runs them all
  in well under a minute. While a unit test runs, starting a process or opening a connection
  fails the test, so the marker cannot quietly become untrue.
- `integration`: real processes, sockets or a local control plane.
- `fault`: needs root and nftables (network faults keyed on a pod's uid); skipped elsewhere.
  A module that also sets `NEEDS_CONTAINER_IMAGES = True` runs pods as podman containers and
  is skipped, saying why, without podman or the images of `make images`.

A module without a layer marker (or with two) fails collection, so the split stays complete.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess
from hypothesis import HealthCheck, settings

# No wall-clock bound on a property test's example either (hypothesis's default deadline is
# 200 ms, and its too_slow health check times data generation): on a shared machine a slow
# example is the machine, not the code; speed belongs in bench/.
settings.register_profile("gencluster", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gencluster")

LAYERS = ("unit", "integration", "fault")

ROOT_AND_NFT = os.geteuid() == 0 and shutil.which("nft") is not None

CONTAINER_IMAGES = ("ghcr.io/gencluster/gencluster:0.1.0",
                    "ghcr.io/gencluster/gencluster-operator:0.1.0")
"""What a module that sets `NEEDS_CONTAINER_IMAGES = True` runs (built by `make images`)."""


@functools.cache
def containers_unavailable() -> str | None:
    """Why the container tests cannot run here (None: they can): root, podman with runc, and
    the images `make images` (a step of `make test`) builds."""
    if os.geteuid() != 0:
        return "containers run as the pods' own uids: they need root"
    podman = shutil.which("podman")
    if podman is None:
        return "podman is not installed (make system-packages, as root)"
    for image in CONTAINER_IMAGES:
        found = subprocess.run([podman, "--runtime", "runc", "image", "exists", image],
                               capture_output=True, timeout=120)
        if found.returncode != 0:
            return f"image {image} is not built (make images)"
    return None

IO_ENTRY_POINTS: tuple[tuple[Any, str, str], ...] = (
    (subprocess.Popen, "__init__", "started a subprocess"),
    (os, "fork", "forked"),
    (os, "posix_spawn", "spawned a process"),
    (os, "posix_spawnp", "spawned a process"),
    (socket.socket, "bind", "bound a socket"),
    (socket.socket, "connect", "connected a socket"),
    (socket.socket, "connect_ex", "connected a socket"),
    (grpc, "server", "started a gRPC server"),
    (grpc.aio, "server", "started a gRPC server"),
    (grpc, "insecure_channel", "opened a gRPC channel"),
    (grpc, "secure_channel", "opened a gRPC channel"),
    (grpc.aio, "insecure_channel", "opened a gRPC channel"),
    (grpc.aio, "secure_channel", "opened a gRPC channel"),
)
"""What a unit test must never reach. (asyncio's own self-pipe is a socketpair: neither bound
nor connected through these, so pure asyncio code stays allowed.)"""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail collection, before `-m` deselects anything, for a test without exactly one layer."""
    wrong: dict[str, list[str]] = {}
    for item in items:
        layers = sorted({mark.name for mark in item.iter_markers() if mark.name in LAYERS})
        if len(layers) != 1:
            wrong.setdefault(str(item.path), layers)
    if wrong:
        lines = [f"  {path}: {found or 'no layer marker'}" for path, found in sorted(wrong.items())]
        raise pytest.UsageError(
            "every test module needs exactly one of "
            + ", ".join(f"pytest.mark.{layer}" for layer in LAYERS)
            + " (pytestmark = ...):\n"
            + "\n".join(lines)
        )


@contextlib.contextmanager
def no_processes_or_sockets(item: pytest.Item) -> Iterator[None]:
    """Replace every entry point of IO_ENTRY_POINTS with one that fails naming the test."""
    if item.get_closest_marker("unit") is None:
        yield
        return

    def refusal(what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(
                f"{item.nodeid} is marked unit but {what}: mark its module integration"
            )

        return refuse

    with pytest.MonkeyPatch.context() as patch:
        for owner, name, what in IO_ENTRY_POINTS:
            patch.setattr(owner, name, refusal(what))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Skip `fault` tests without root and nft; hold the fixtures a unit test sets up (module
    scoped ones included, which are set up here for a module's first test) to the unit rule."""
    if item.get_closest_marker("fault") is not None and not ROOT_AND_NFT:
        pytest.skip("network faults need root and nft (nftables rules keyed on one uid per pod)")
    if getattr(item.module, "NEEDS_CONTAINER_IMAGES", False):
        reason = containers_unavailable()
        if reason is not None:
            pytest.skip(reason)
    with no_processes_or_sockets(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with no_processes_or_sockets(item):
        return (yield)


@pytest.fixture
def start_dev_cluster(tmp_path: Path) -> Iterator[Callable[..., DevClusterProcess]]:
    """Start `gencluster dev up` instances for one test; every one is stopped afterwards."""
    started: list[DevClusterProcess] = []

    def start(*extra: str, name: str = "dev", operator: bool = False) -> DevClusterProcess:
        cluster = DevClusterProcess(
            tmp_path / name, "--restart-backoff", "0.5", *extra, operator=operator
        )
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture(scope="module")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevClusterProcess]:
    """One `gencluster dev up` shared by a test module."""
    cluster = DevClusterProcess(
        tmp_path_factory.mktemp("devcluster") / "dev", "--restart-backoff", "0.5"
    )
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def operator(dev_cluster: DevClusterProcess) -> Iterator[OperatorProcess]:
    """One operator process for a module's shared dev cluster (started `--no-operator`, so the
    test owns the operator's lifetime and can read its output)."""
    process = OperatorProcess(dev_cluster)
    yield process
    process.stop()
