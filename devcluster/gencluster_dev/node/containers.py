"""One container of a pod: its process (one session, one process group), its probes, its
exit report and its restarts with back-off.

A container sees its node and its pod only through the narrow interfaces below
(`ContainerRuntimeSettings`, `PodEvents`, `ContainerPod`), never the `Kubelet` or `PodWorker`
classes: it can be read, and run in a test, without the whole node behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gencluster_dev.client.apiclient import ApiError
from gencluster_dev.machinery.pods import resolve_port
from gencluster_dev.node.engines import (
    ArgvWrapper,
    ContainerEngine,
    LaunchPlan,
    LaunchRequest,
    ProcessEngine,
    RunningContainer,
    signal_group,
)
from gencluster_dev.node.podspec import (
    ContainerConfigError,
    ContainerView,
    EnvSources,
    ImageError,
    build_env,
    exit_details,
    log_tail,
    now_rfc3339,
    relist_delay,
    restart_delay,
    should_restart,
)
from gencluster_dev.node.probes import check, probe_loop, run_command

log = logging.getLogger(__name__)

#: How long a container must run before its restart back-off starts again from `base`.
BACKOFF_RESET_FACTOR = 2.0
#: Time a process still gets after a preStop hook that used up the grace period (kubelet's).
PRE_STOP_EXTRA_GRACE = 2.0

__all__ = ["ArgvWrapper", "ContainerRunner", "ContainerRuntimeSettings", "signal_group"]


@dataclass(frozen=True)
class ContainerRuntimeSettings:
    """The node-wide facts a container's process and restarts depend on.

    Fixed for the node's life, so a frozen value rather than a reference to the node: the
    container cannot reach anything else of it, and a test can build one in a line.
    """

    host_ip: str
    image_entrypoints: Mapping[str, list[str]]
    wrap_argv: ArgvWrapper
    restart_backoff_base: float = 10.0
    restart_backoff_max: float = 300.0
    #: seconds between relists of a real kubelet's PLEG; 0 reports an exit at once
    relist_period: float = 0.0
    #: how runs are started (None: as local processes, `ProcessEngine`)
    engine: ContainerEngine | None = None

    def container_engine(self) -> ContainerEngine:
        """The engine runs start with: the one given, else the process engine."""
        if self.engine is not None:
            return self.engine
        return ProcessEngine(self.wrap_argv, self.image_entrypoints)


class PodEvents(Protocol):
    """Where pods and containers report what happened to them, as Kubernetes Events.

    Fire-and-forget from synchronous code: Events are informative, so a container must neither
    wait for one nor fail because one could not be written.
    """

    def emit(self, pod: dict, kind: str, reason: str, message: str,
             container: str | None = None) -> None: ...


class ContainerPod(Protocol):
    """What a container needs of the pod worker that runs it (`PodWorker` is the one).

    The pod object, its address, uid and directory, when the status must be pushed, and the
    pod-level inputs of the container's environment.
    """

    pod: dict
    name: str
    namespace: str
    uid: str
    ip: str | None
    run_as: int | None
    dir: Path
    restart_policy: str

    def grace_period(self) -> float: ...

    def mark_dirty(self) -> None: ...

    async def flush(self, timeout: float) -> None: ...

    async def fetch_sources(self) -> EnvSources: ...

    def base_env(self, container: dict) -> dict[str, str]: ...


class ContainerRunner:
    """Runs one container: spawn, probes, exit report, restart with back-off."""

    def __init__(self, worker: ContainerPod, container: dict, *, runtime: ContainerRuntimeSettings,
                 events: PodEvents, init: bool = False) -> None:
        self.worker = worker
        self.runtime = runtime
        self.events = events
        self.container = container
        self.name: str = container["name"]
        self.init = init
        self.view = ContainerView(self.name, container.get("image", ""))
        self.engine = runtime.container_engine()
        self.running: RunningContainer | None = None
        self.pid: int | None = None
        self._plan: LaunchPlan | None = None
        self._request: LaunchRequest | None = None
        self.stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._probes: list[asyncio.Task] = []
        self._runs = 0
        self._backoff_count = 0
        self._kill_task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"container {self.name}")

    async def wait(self) -> int | None:
        """The final exit code (None when stopped or not started)."""
        if self._task is None:
            return None
        return await asyncio.shield(self._task)

    def request_stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def stop(self, grace: float, *, hooks: bool = False) -> None:
        """Run the preStop hook (with `hooks`), then SIGTERM the process group (and SIGCONT
        it, in case it is paused), SIGKILL when `grace` seconds have passed since the start.

        As in Kubernetes the hook counts against the grace period, and a hook that used it
        all up leaves the process a last 2 seconds after SIGTERM.
        """
        self.request_stop()
        loop = asyncio.get_running_loop()
        began = loop.time()
        if hooks and self.pid is not None and self._pre_stop_handler() is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_pre_stop(), grace)
            grace = max(grace - (loop.time() - began), PRE_STOP_EXTRA_GRACE)
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await self._task
        except Exception:
            log.exception("container %s", self.name)

    def _signal(self, sig: int) -> None:
        """Signal the current run's processes, if there is one."""
        if self.running is not None:
            self.running.signal(sig)

    def _pre_stop_handler(self) -> dict | None:
        return ((self.container.get("lifecycle") or {}).get("preStop")) or None

    async def _run_pre_stop(self) -> None:
        """The preStop hook: exec (as the container), httpGet (pod IP by default) or sleep."""
        handler = self._pre_stop_handler() or {}
        if "sleep" in handler:
            await asyncio.sleep(float(handler["sleep"].get("seconds", 0)))
            return
        worker = self.worker
        ok, message = await check(
            handler, pod_ip=worker.ip or "127.0.0.1",
            resolve_port=lambda port: resolve_port(worker.pod, port, self.container),
            exec_fn=self._exec, timeout=worker.grace_period(),
        )
        if not ok:
            self.events.emit(worker.pod, "Warning", "FailedPreStopHook",
                             f"PreStopHook failed: {message}", self.name)

    # ---------------------------------------------------------------- loop

    def _policy(self) -> str:
        if self.init:
            return "Never" if self.worker.restart_policy == "Never" else "OnFailure"
        return self.worker.restart_policy

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if self.stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self) -> int | None:
        worker = self.worker
        while not self.stopping:
            try:
                plan = await self._prepare()
            except (ContainerConfigError, ImageError) as exc:
                await self._config_failed(exc.reason, str(exc))
                continue
            except ApiError as exc:
                await self._config_failed("CreateContainerConfigError", str(exc))
                continue
            except Exception as exc:  # API unreachable, ...: retried like the kubelet does
                await self._config_failed("ContainerCreating", f"{type(exc).__name__}: {exc}")
                continue
            if self.stopping:
                break
            began = asyncio.get_running_loop().time()
            returncode = await self._run_once(plan)
            ran_for = asyncio.get_running_loop().time() - began
            if self.stopping:
                return None
            exit_code = self.view.exit_code or 0
            if returncode is None or not should_restart(self._policy(), exit_code):
                return exit_code
            await worker.flush(2.0)
            if ran_for >= BACKOFF_RESET_FACTOR * self.runtime.restart_backoff_max:
                self._backoff_count = 0
            delay = restart_delay(self._backoff_count, self.runtime.restart_backoff_base,
                                  self.runtime.restart_backoff_max)
            self._backoff_count += 1
            self.view.last_terminated = self.view.terminated_dict()
            if delay > 0:
                self.view.state = "waiting"
                self.view.reason = "CrashLoopBackOff"
                self.view.message = (f"back-off {delay:g}s restarting failed container="
                                     f"{self.name} pod={worker.name}_{worker.namespace}"
                                     f"({worker.uid})")
                worker.mark_dirty()
                self.events.emit(worker.pod, "Warning", "BackOff",
                                 "Back-off restarting failed container", self.name)
                await self._sleep(delay)
        return None

    async def _config_failed(self, reason: str, message: str) -> None:
        changed = (self.view.reason, self.view.message) != (reason, message)
        self.view.state = "waiting"
        self.view.reason, self.view.message = reason, message
        if changed:
            self.worker.mark_dirty()
            self.events.emit(self.worker.pod, "Warning", "Failed", f"Error: {message}",
                             self.name)
        await self._sleep(2.0)

    async def _prepare(self) -> LaunchPlan:
        worker = self.worker
        sources = await worker.fetch_sources()
        env = build_env(worker.pod, self.container, base=worker.base_env(self.container),
                        sources=sources, pod_ip=worker.ip or "", host_ip=self.runtime.host_ip)
        self._request = LaunchRequest(
            pod=worker.pod, container=self.container, env=env, run_as=worker.run_as,
            pod_dir=worker.dir, key=f"{worker.uid}/{self.name}", init=self.init)
        return self.engine.plan(self._request)

    def _rotate_log(self) -> int:
        logs = self.worker.dir / "logs"
        current = logs / f"{self.name}.log"
        if current.exists():
            os.replace(current, logs / f"{self.name}.previous.log")
        return os.open(current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def _run_once(self, plan: LaunchPlan) -> int | None:
        """One run of the container; None when it could not be started at all."""
        worker, view = self.worker, self.view
        if self._runs:
            view.restart_count += 1
        self._runs += 1
        log_fd = self._rotate_log()
        view.started_at = now_rfc3339()
        try:
            running = await self.engine.start(plan, log_fd)
        except OSError as exc:
            message = f"failed to start container {self.name!r}: {exc}"
            os.write(log_fd, f"{message}\n".encode())
            os.close(log_fd)
            view.state, view.exit_code, view.signal = "terminated", 128, None
            view.reason, view.message = "StartError", message
            view.finished_at = now_rfc3339()
            worker.mark_dirty()
            self.events.emit(worker.pod, "Warning", "Failed", view.message, self.name)
            return 128
        os.close(log_fd)
        self._plan = plan
        self.running = running
        self.pid = running.pid
        if self.stopping:  # a stop raced with the start: it found no pid to signal
            running.signal(signal.SIGTERM)
        view.state, view.reason, view.message = "running", None, None
        view.exit_code = view.signal = None
        view.finished_at = None
        view.container_id = self.engine.container_id(plan, running)
        probes = {k: self.container.get(k) for k in
                  ("startupProbe", "readinessProbe", "livenessProbe")}
        view.started = probes["startupProbe"] is None or self.init
        view.ready = view.started and probes["readinessProbe"] is None and not self.init
        worker.mark_dirty()
        self.events.emit(worker.pod, "Normal", "Started", f"Started container {self.name}",
                         self.name)
        if not self.init:
            self._start_probes(probes)
        returncode = await running.wait()
        # Like a real node, whose PLEG notices a death at its next relist (the pod's status,
        # the probes and the restart all wait for that).
        delay = relist_delay(time.monotonic(), self.runtime.relist_period)
        if delay:
            await asyncio.sleep(delay)
        running.signal(signal.SIGKILL)
        for task in self._probes:
            task.cancel()
        self._probes = []
        if self._kill_task is not None:
            self._kill_task.cancel()
            self._kill_task = None
        exit_code, sig, reason = exit_details(returncode)
        view.state, view.exit_code, view.signal = "terminated", exit_code, sig
        view.reason, view.message = reason, self._termination_message(exit_code)
        view.finished_at = now_rfc3339()
        view.ready = view.started = False
        self.pid = None
        self.running = None
        worker.mark_dirty()
        return returncode

    def _termination_message(self, exit_code: int) -> str | None:
        """`FallbackToLogsOnError`: a failed run's message is the tail of its log."""
        if exit_code == 0 or self.container.get("terminationMessagePolicy") != \
                "FallbackToLogsOnError":
            return None
        path = self.worker.dir / "logs" / f"{self.name}.log"
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - 64 * 1024))
                data = handle.read()
        except OSError:
            return None
        return log_tail(data) or None

    # ---------------------------------------------------------------- probes

    def _start_probes(self, probes: dict[str, dict | None]) -> None:
        if probes["startupProbe"] is not None:
            self._spawn_probe("startup", probes["startupProbe"], probes)
        else:
            self._start_running_probes(probes)

    def _start_running_probes(self, probes: dict[str, dict | None]) -> None:
        if probes["readinessProbe"] is not None:
            self._spawn_probe("readiness", probes["readinessProbe"], probes)
        if probes["livenessProbe"] is not None:
            self._spawn_probe("liveness", probes["livenessProbe"], probes)

    def _spawn_probe(self, kind: str, probe: dict, probes: dict[str, dict | None]) -> None:
        worker, view = self.worker, self.view
        pid = self.pid

        async def run_once(timeout: float) -> tuple[bool, str]:
            return await check(
                probe, pod_ip=worker.ip or "127.0.0.1",
                resolve_port=lambda port: resolve_port(worker.pod, port, self.container),
                exec_fn=self._exec, timeout=timeout,
            )

        def on_change(result: bool, message: str) -> None:
            if self.pid != pid or self.stopping:
                return
            if kind == "readiness":
                view.ready = result
                worker.mark_dirty()
            elif kind == "startup" and result:
                view.started = True
                view.ready = probes["readinessProbe"] is None
                worker.mark_dirty()
                self._start_running_probes(probes)
            else:
                what = "startup" if kind == "startup" else "liveness"
                self.events.emit(worker.pod, "Normal", "Killing",
                                 f"Container {self.name} failed {what} probe, will be "
                                 f"restarted", self.name)
                self._kill_for_restart()

        def on_failure(message: str) -> None:
            self.events.emit(worker.pod, "Warning", "Unhealthy",
                             f"{kind.capitalize()} probe failed: {message}", self.name)

        self._probes.append(asyncio.create_task(
            probe_loop(kind, probe, run_once=run_once, on_change=on_change,
                       on_failure=on_failure),
            name=f"{kind} probe {self.name}",
        ))

    def _kill_for_restart(self) -> None:
        """Liveness/startup failure: preStop hook, SIGTERM, SIGKILL once the grace period is
        over (the process's exit then drives the restart)."""
        running = self.running

        async def kill() -> None:
            loop = asyncio.get_running_loop()
            began = loop.time()
            grace = self.worker.grace_period()
            if self._pre_stop_handler() is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._run_pre_stop(), grace)
                grace = max(grace - (loop.time() - began), PRE_STOP_EXTRA_GRACE)
            if running is None:
                return
            running.signal(signal.SIGTERM)
            running.signal(signal.SIGCONT)
            await asyncio.sleep(grace)
            running.signal(signal.SIGKILL)

        self._kill_task = asyncio.create_task(kill(), name=f"kill {self.name}")

    async def _exec(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """exec probes and hooks run like the container: in it, or with its env and uid."""
        if self._plan is None or self._request is None:
            return 126, "the container is not running"
        plan = self.engine.exec_plan(self._plan, self._request, argv)
        return await run_command(plan.argv, env=plan.env, cwd=plan.cwd, timeout=timeout)
