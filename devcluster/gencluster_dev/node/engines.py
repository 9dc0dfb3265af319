"""How a container's run is started, signalled and waited for: the container engine.

The `ContainerRunner` (containers.py) owns a container's life (restarts, probes, status); an
engine only turns one run into a running thing and back. Two engines sit behind the same
interface: `ProcessEngine`, the default, runs the container's command as a local process (its
own session and process group, as the pod's uid); `podman.PodmanEngine` runs it from its image
with podman. Both report the host pid of the container's main process, which is what
`state.json` records and what `gencluster dev fault kill|pause|resume` signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gencluster_dev.node.podspec import container_argv

#: Turns a command into the argv that runs it as a pod's uid (None: the node's own user).
ArgvWrapper = Callable[[list[str], int | None], list[str]]


def signal_group(pid: int | None, sig: int) -> None:
    """Signal a process group, ignoring one that is already gone."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass(frozen=True)
class LaunchRequest:
    """One run of one container, as its runner asks for it: everything an engine may use.

    `env` is the container's complete environment as the process runtime builds it (base,
    envFrom, env, downward API values already resolved); an engine may translate it.
    """

    pod: dict
    container: dict
    env: dict[str, str]
    run_as: int | None
    pod_dir: Path
    #: unique on the node for this container of this pod (engines name things after it)
    key: str
    init: bool = False


@dataclass(frozen=True)
class LaunchPlan:
    """What to exec for one run: the argv, its environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    #: the uid to switch to when exec'ing `argv` (None: as it is; podman's argv says it)
    run_as: int | None = None
    #: the engine's name for the run (podman's container name)
    handle: str = ""


class RunningContainer:
    """One started run: its host pid, how to signal it, how to wait for its end."""

    def __init__(self, process: asyncio.subprocess.Process, pid: int, *,
                 group: bool) -> None:
        self.process = process
        #: the host pid of the container's main process (a process group leader if `group`)
        self.pid = pid
        self._group = group

    def signal(self, sig: int) -> None:
        """Deliver `sig` to the container's processes (its group), ignoring a gone one."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self._group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    async def wait(self) -> int:
        """The run's return code: negative for a signal (process engine), or the exit status
        the engine reports (podman: 128+signal, like a container runtime)."""
        return await self.process.wait()


class ContainerEngine(Protocol):
    """Starts runs of containers; the runner handles everything else."""

    #: what `dev up` prints and containerIDs start with
    name: str

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        """The argv of one run; raises `ImageError`/`ContainerConfigError` for a spec the
        engine cannot run (the runner reports it and retries)."""
        ...

    async def start(self, plan: LaunchPlan, log_fd: int) -> RunningContainer:
        """Start the run with stdout and stderr on `log_fd`; raises OSError if it cannot."""
        ...

    def exec_plan(self, plan: LaunchPlan, request: LaunchRequest,
                  argv: list[str]) -> LaunchPlan:
        """How to run `argv` inside the running container (exec probes, preStop hooks)."""
        ...

    def container_id(self, plan: LaunchPlan, running: RunningContainer) -> str:
        """The `containerID` of a container status."""
        ...


class ProcessEngine:
    """The container as a local process: command + args from the project's environment, in a
    session of its own, as the pod's uid (`wrap_argv`). Images are not run, only recorded;
    an image's entrypoint comes from `image_entrypoints`."""

    name = "process"

    def __init__(self, wrap_argv: ArgvWrapper,
                 image_entrypoints: Mapping[str, list[str]]) -> None:
        self.wrap_argv = wrap_argv
        self.image_entrypoints = image_entrypoints

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        argv = container_argv(request.container, request.env, self.image_entrypoints)
        return LaunchPlan(argv=argv, env=request.env, cwd=self._cwd(request),
                          run_as=request.run_as, handle=request.key)

    @staticmethod
    def _cwd(request: LaunchRequest) -> str:
        working_dir = request.container.get("workingDir")
        if working_dir and os.path.isdir(working_dir):
            return str(working_dir)
        return str(request.pod_dir)

    async def start(self, plan: LaunchPlan, log_fd: int) -> RunningContainer:
        argv = plan.argv
        if not argv or shutil.which(argv[0], path=plan.env.get("PATH")) is None:
            raise FileNotFoundError(
                f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH')
        process = await asyncio.create_subprocess_exec(
            *self.wrap_argv(argv, plan.run_as), env=plan.env, cwd=plan.cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            start_new_session=True,
        )
        return RunningContainer(process, process.pid, group=True)

    def exec_plan(self, plan: LaunchPlan, request: LaunchRequest,
                  argv: list[str]) -> LaunchPlan:
        return LaunchPlan(argv=self.wrap_argv(argv, plan.run_as), env=plan.env,
                          cwd=plan.cwd)

    def container_id(self, plan: LaunchPlan, running: RunningContainer) -> str:
        return f"gencluster-dev://{plan.handle}/{running.pid}"
