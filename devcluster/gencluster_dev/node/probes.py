"""Container probes (grpc, tcpSocket, httpGet, exec) and the threshold logic around them.

The threshold bookkeeping (`ProbeState`) is pure so that success/failure thresholds can be
tested without timing; `probe_loop` is the thin periodic driver the kubelet runs per probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

#: exec probe runner given by the kubelet: (argv, timeout) → (exit code, output).
ExecFn = Callable[[list[str], float], Awaitable[tuple[int, str]]]
#: named or numbered port → number (None when the name is unknown).
PortResolver = Callable[[int | str], int | None]


@dataclass(frozen=True)
class ProbeSettings:
    """Timing and thresholds of one probe, with Kubernetes' defaults."""

    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_spec(cls, probe: dict) -> ProbeSettings:
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


class ProbeState:
    """The result of a probe as thresholds turn consecutive outcomes into a verdict.

    `result` flips to True after `success_threshold` consecutive successes and to False after
    `failure_threshold` consecutive failures; in between it keeps its last value.
    """

    def __init__(self, settings: ProbeSettings, initial: bool) -> None:
        self.settings = settings
        self.result = initial
        self._successes = 0
        self.failures = 0

    def record(self, ok: bool) -> bool:
        """Account one outcome; True when `result` changed."""
        if ok:
            self._successes += 1
            self.failures = 0
            if not self.result and self._successes >= self.settings.success_threshold:
                self.result = True
                return True
        else:
            self.failures += 1
            self._successes = 0
            if self.result and self.failures >= self.settings.failure_threshold:
                self.result = False
                return True
        return False


class ProbeError(Exception):
    """A probe is malformed (no handler, unknown named port)."""


async def check(
    probe: dict, *, pod_ip: str, resolve_port: PortResolver, exec_fn: ExecFn, timeout: float
) -> tuple[bool, str]:
    """Run a probe once: (success, message for an Event when it failed)."""
    try:
        if "exec" in probe:
            return await _check_exec(probe["exec"], exec_fn, timeout)
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            return await _check_tcp(spec.get("host") or pod_ip, _port(spec, resolve_port),
                                    timeout)
        if "httpGet" in probe:
            spec = probe["httpGet"]
            return await _check_http(spec, spec.get("host") or pod_ip,
                                     _port(spec, resolve_port), timeout)
        if "grpc" in probe:
            spec = probe["grpc"]
            return await _check_grpc(pod_ip, int(spec["port"]), spec.get("service") or "",
                                     timeout)
    except ProbeError as exc:
        return False, str(exc)
    return False, "probe has no exec, tcpSocket, httpGet or grpc handler"


def _port(spec: dict, resolve_port: PortResolver) -> int:
    port = resolve_port(spec.get("port"))
    if port is None:
        raise ProbeError(f"unknown named port {spec.get('port')!r}")
    return port


async def _check_tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return False, f"dial tcp {host}:{port}: {exc or 'timeout'}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def _check_http(spec: dict, host: str, port: int, timeout: float) -> tuple[bool, str]:
    scheme = str(spec.get("scheme", "HTTP")).lower()
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/1.30")
    url = f"{scheme}://{host}:{port}{path}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                http.get(url, headers=headers, allow_redirects=False, ssl=False) as response:
            await response.read()
            if 200 <= response.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {response.status}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return False, f'Get "{url}": {exc or "timeout"}'


async def _check_grpc(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{host}:{port}"
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            return False, f"grpc probe {target}: {exc.code().name} {exc.details()}"
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return True, ""
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return False, f"service unhealthy (responded with {status!r})"


async def _check_exec(spec: dict, exec_fn: ExecFn, timeout: float) -> tuple[bool, str]:
    command = [str(part) for part in spec.get("command") or []]
    if not command:
        raise ProbeError("exec probe without command")
    code, output = await exec_fn(command, timeout)
    if code == 0:
        return True, ""
    return False, f"exec {command}: exit code {code}: {output.strip()[-300:]}"


async def run_command(
    argv: list[str], *, env: dict[str, str], cwd: str | None, timeout: float
) -> tuple[int, str]:
    """Run a command in a session of its own, killing the whole group on timeout."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return 126, str(exc)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return -1, f"command timed out after {timeout}s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode or 0, output.decode("utf-8", "replace")


async def probe_loop(
    kind: str,
    probe: dict,
    *,
    run_once: Callable[[float], Awaitable[tuple[bool, str]]],
    on_change: Callable[[bool, str], None],
    on_failure: Callable[[str], None] | None = None,
) -> None:
    """Probe every `periodSeconds` after `initialDelaySeconds` until cancelled or decided.

    `kind` is "startup", "readiness" or "liveness". `on_change(result, message)` is called
    when the verdict is reached or flips: a startup probe ends at its first success (True) or
    after `failureThreshold` consecutive failures (False); a liveness probe starts passing and
    ends when it fails (False: the kubelet restarts the container); a readiness probe starts
    failing and reports every flip for the life of the container. `on_failure` sees every
    failed attempt (for Events).
    """
    settings = ProbeSettings.from_spec(probe)
    state = ProbeState(settings, initial=(kind == "liveness"))
    await asyncio.sleep(settings.initial_delay)
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        ok, message = await run_once(settings.timeout)
        if not ok and on_failure is not None:
            on_failure(message)
        changed = state.record(ok)
        if kind == "startup" and not ok and state.failures >= settings.failure_threshold:
            on_change(False, message)
            return
        if changed:
            on_change(state.result, message)
            if kind != "readiness":
                return
        await asyncio.sleep(max(0.0, settings.period - (loop.time() - began)))
