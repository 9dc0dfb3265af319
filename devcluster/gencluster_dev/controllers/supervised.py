"""Controllers (operators) run beside the control plane as supervised local processes.

A real cluster would run an operator as a Deployment's pod; `gencluster dev up --controller CMD`
is the shortcut for a laptop: the command runs as a process of the invoking user with
`KUBECONFIG` pointing at the instance, its output in `DIR/controllers/<n>.log`, restarted with
back-off if it exits, and stopped (SIGTERM, then SIGKILL) with the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STOP_GRACE = 10.0


def next_backoff(previous: float | None) -> float:
    """Doubling back-off, like a kubelet's, so a crash-looping controller does not spin."""
    return FIRST_BACKOFF if previous is None else min(previous * 2, MAX_BACKOFF)


class SupervisedController:
    """One controller command, kept running until `stop()`."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        environment: dict[str, str],
        announce: Callable[[str], object],
    ) -> None:
        self.command = list(command)
        self._log_path = log_path
        self._environment = environment
        self._announce = announce
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        backoff: float | None = None
        while not self._stopping.is_set():
            with open(self._log_path, "ab") as log:
                try:
                    self._process = await asyncio.create_subprocess_exec(
                        *self.command,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                        env=self._environment,
                        start_new_session=True,
                    )
                except OSError as error:
                    self._announce(f"controller {self.command[0]!r} cannot start: {error}")
                    return
            self._announce(f"controller started: {' '.join(self.command)} (log {self._log_path})")
            code = await self._process.wait()
            if self._stopping.is_set():
                return
            backoff = next_backoff(backoff)
            self._announce(
                f"controller {' '.join(self.command)} exited with {code}; "
                f"restarting in {backoff:.0f}s (log {self._log_path})"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)

    async def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._task is not None:
            await self._task
