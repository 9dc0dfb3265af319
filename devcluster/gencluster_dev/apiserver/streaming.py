"""`pods/NAME/exec` and `pods/NAME/portforward`: what kube-apiserver and the kubelet do together.

Real Kubernetes proxies these to the node's kubelet, which asks the container runtime. Here the
node is this machine and a container is a process whose pid the kubelet publishes in
`pods/<ns>_<name>_<uid>/state.json` (docs/devcluster.md), so the API server serves them itself
from that file, as it serves `pods/NAME/log` from the log files:

- exec runs the command in the container's environment, in a session of its own (with a
  pseudo-terminal for `-t`), and reports its exit code on the error channel (protocol:
  `remotecommand`). With the process runtime that is the environment and working directory of
  the container's process (read from /proc), as the pod's uid (`runAsUser` of state.json,
  when the control plane runs as root); with the podman runtime it is `podman exec` into the
  container (its user, environment, working directory, filesystem and capabilities);
- port-forward connects, per forwarded connection, to the pod's IP and port (every pod listens
  on its own loopback address) and relays bytes over SPDY-in-WebSocket (`spdy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import struct
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from gencluster_dev.machinery import remotecommand as rc
from gencluster_dev.machinery import spdy
from gencluster_dev.machinery.errors import bad_request

log = logging.getLogger(__name__)

READ_CHUNK = 32 * 1024
# After the command exits, output its children still write is collected this long.
DRAIN_AFTER_EXIT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest WebSocket message accepted (kubectl sends stdin and tunnelled SPDY in chunks of
32 KiB at most)."""
HIGH_WATER_FRAMES = 256
"""Outgoing frames a port-forward session queues before its relays stop reading from pods."""


def _upgrade(request: web.Request, protocols: tuple[str, ...]) -> web.WebSocketResponse:
    """The WebSocket answer, or kube-apiserver's 400 for a request that is not an upgrade to
    one of `protocols` (kubectl then reports it; its SPDY fallback gets the same answer)."""
    ws = web.WebSocketResponse(protocols=protocols, max_msg_size=MAX_MESSAGE_BYTES,
                               autoping=True)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise bad_request("Upgrade request required")
    if ready.protocol is None:
        raise bad_request(
            f"unable to upgrade: none of the offered subprotocols is supported "
            f"(this server speaks {', '.join(protocols)})")
    return ws


# -- exec -----------------------------------------------------------------------------------

def _container_state(pods_dir: Path, pod: dict[str, Any], container: str
                     ) -> tuple[int, dict[str, Any]]:
    """The running container's host pid and its pod's state.json (the kubelet's record);
    kubelet's "container not found" when it has no running process."""
    meta = pod["metadata"]
    state_path = pods_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / "state.json"
    try:
        state = json.loads(state_path.read_text())
        pid = state["containers"][container]["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        raise rc.container_not_found(container) from None
    if not isinstance(pid, int):
        raise rc.container_not_found(container)
    return pid, state


def _container_process(pods_dir: Path, pod: dict[str, Any], container: str
                       ) -> tuple[dict[str, str], str, int | None, list[str]]:
    """(environment, working directory, uid, ambient capabilities) of the container's running
    process."""
    pid, state = _container_state(pods_dir, pod, container)
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
        capabilities = rc.ambient_capabilities(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        raise rc.container_not_found(container) from None
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    run_as = state.get("runAsUser")
    return env, cwd, run_as if isinstance(run_as, int) else None, capabilities


def _take_controlling_tty() -> None:
    """In the child, after setsid: its pseudo-terminal (stdin) becomes its controlling tty."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


#: What a container runtime's exec command itself needs on PATH (podman: conmon, runc); the
#: command's own PATH is the container's.
RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ContainerExec = Callable[[dict[str, Any], str, list[str], bool, bool], list[str]]
"""(pod, container, command, stdin, tty) -> the argv that runs the command inside the running
container (the podman runtime's `podman exec`)."""


async def serve_exec(request: web.Request, pod: dict[str, Any], pods_dir: Path,
                     container_exec: ContainerExec | None = None) -> web.StreamResponse:
    """`GET|POST pods/NAME/exec?command=...&container=&stdin=&stdout=&stderr=&tty=`.

    `container_exec` (given when pods are containers: the podman runtime) makes the command
    run inside the container; without it the command is a local process.
    """
    rc.require_not_completed(pod)
    options = rc.exec_options(pod, request.query, request.query.getall("command", []))
    session: _ExecSession
    if container_exec is not None:
        _container_state(pods_dir, pod, options.container)
        argv = container_exec(pod, options.container, list(options.command), options.stdin,
                              options.tty)
        ws = _upgrade(request, rc.EXEC_PROTOCOLS)
        session = _ExecSession(ws, options, {"PATH": RUNTIME_PATH}, "/", None, [], argv=argv)
    else:
        env, cwd, run_as, capabilities = _container_process(pods_dir, pod, options.container)
        ws = _upgrade(request, rc.EXEC_PROTOCOLS)
        session = _ExecSession(ws, options, env, cwd, run_as, capabilities)
    await ws.prepare(request)
    try:
        await session.run()
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:  # a bug: end this stream, keep serving
        log.exception("exec into %s/%s failed", pod["metadata"]["namespace"],
                      pod["metadata"]["name"])
    finally:
        await ws.close()
    return ws


class _ExecSession:
    """One exec: the process, its pumps to the channels, and the client's input."""

    def __init__(self, ws: web.WebSocketResponse, options: rc.ExecOptions,
                 env: dict[str, str], cwd: str, run_as: int | None,
                 capabilities: list[str], argv: list[str] | None = None) -> None:
        self.ws = ws
        #: the complete argv when a runtime runs the command (podman exec), else None
        self.argv = argv
        self.options = options
        self.env = env
        self.cwd = cwd
        self.run_as = run_as if os.geteuid() == 0 else None
        self.capabilities = capabilities
        self.v5 = ws.ws_protocol == rc.EXEC_PROTOCOLS[0]
        self.process: asyncio.subprocess.Process | None = None
        self.master: int | None = None
        self.stdin: asyncio.WriteTransport | None = None

    async def send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self.ws.send_bytes(bytes([channel]) + data)

    async def _start(self) -> list[asyncio.Task[None]]:
        """Start the process; the tasks that copy its output."""
        options, loop = self.options, asyncio.get_running_loop()
        identity: dict[str, Any] = {}
        argv = self.argv if self.argv is not None else self._local_argv(identity)
        if options.tty:
            master, slave = os.openpty()
            self.master = master
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, env=self.env,
                    cwd=self.cwd, start_new_session=True,
                    preexec_fn=_take_controlling_tty, **identity)
            finally:
                os.close(slave)
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         os.fdopen(os.dup(master), "rb", buffering=0))
            if options.stdin:
                self.stdin, _ = await loop.connect_write_pipe(
                    asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0))
            return [loop.create_task(self._pump(reader, rc.STDOUT))]
        self.process = await asyncio.create_subprocess_exec(
            *argv, env=self.env, cwd=self.cwd, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if options.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if options.stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE if options.stderr else asyncio.subprocess.DEVNULL,
            **identity)
        if self.process.stdin is not None:
            self.stdin = self.process.stdin.transport  # type: ignore[assignment]
        pumps = []
        if self.process.stdout is not None:
            pumps.append(loop.create_task(self._pump(self.process.stdout, rc.STDOUT)))
        if self.process.stderr is not None:
            pumps.append(loop.create_task(self._pump(self.process.stderr, rc.STDERR)))
        return pumps

    def _local_argv(self, identity: dict[str, Any]) -> list[str]:
        """The argv of the command as a local process (process runtime): found on the
        container's PATH, as its uid (setpriv; else `identity` gets the uid to switch to)."""
        options = self.options
        program = shutil.which(options.command[0], path=self.env.get("PATH", os.defpath))
        if program is None and "/" in options.command[0]:
            program = options.command[0]
        if program is None:
            raise FileNotFoundError(
                f'exec: "{options.command[0]}": executable file not found in $PATH')
        argv = [program, *options.command[1:]]
        setpriv = shutil.which("setpriv")
        if self.run_as is not None and setpriv is not None:
            # as the kubelet starts the container: its uid, no groups, its capabilities
            argv = [*rc.identity_argv(setpriv, self.run_as, self.capabilities), *argv]
        elif self.run_as is not None:
            identity.update(user=self.run_as, group=self.run_as, extra_groups=[])
        return argv

    async def _pump(self, reader: asyncio.StreamReader, channel: int) -> None:
        while True:
            try:
                chunk = await reader.read(READ_CHUNK)
            except OSError:  # EIO: the terminal's last holder closed it
                return
            if not chunk:
                return
            await self.send(channel, chunk)

    async def _client_input(self) -> None:
        """Stdin, stdin's close (v5) and terminal resizes; returns when the client goes."""
        async for message in self.ws:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            data: bytes = message.data
            channel, payload = data[0], data[1:]
            if channel == rc.STDIN and self.stdin is not None and payload:
                self.stdin.write(payload)
            elif channel == rc.CLOSE and payload[:1] == bytes([rc.STDIN]):
                self._close_stdin()
            elif channel == rc.RESIZE and self.master is not None:
                size = rc.terminal_size(payload)
                if size is not None:
                    with contextlib.suppress(OSError):
                        fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", size[0], size[1], 0, 0))

    def _close_stdin(self) -> None:
        if self.stdin is None:
            return
        if self.master is not None:
            # A terminal has no half-close: end-of-file is the EOF character (^D).
            self.stdin.write(b"\x04")
        elif self.stdin.can_write_eof():
            self.stdin.write_eof()
        else:
            self.stdin.close()
        self.stdin = None

    def _kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pumps = await self._start()
        except OSError as error:
            await self.send(rc.STDERR if not self.options.tty else rc.STDOUT,
                            f"{error.strerror or error}\n".encode())
            await self.send(rc.ERROR, rc.status_json(
                rc.exit_status(rc.start_failure_code(error), self.options.command)))
            return
        assert self.process is not None
        client = loop.create_task(self._client_input())
        exited = loop.create_task(self.process.wait())
        try:
            await asyncio.wait({client, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():  # the client went away: so does its command
                self._kill()
                await exited
                return
            if pumps:
                _, pending = await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT_SECONDS)
                for task in pending:
                    task.cancel()
            await self.send(rc.ERROR, rc.status_json(
                rc.exit_status(exited.result(), self.options.command)))
        finally:
            self._kill()
            client.cancel()
            for task in pumps:
                task.cancel()
            if self.stdin is not None:
                self.stdin.close()
            if self.master is not None:
                os.close(self.master)


# -- port-forward -----------------------------------------------------------------------------

async def serve_port_forward(request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
    """`GET pods/NAME/portforward` upgraded to SPDY/3.1 inside a WebSocket."""
    rc.require_not_completed(pod)
    ip = (pod.get("status") or {}).get("podIP")
    if (pod.get("status") or {}).get("phase") != "Running" or not ip:
        raise bad_request(f"unable to upgrade connection: pod {pod['metadata']['name']} "
                          "is not running")
    ws = _upgrade(request, rc.PORT_FORWARD_PROTOCOLS)
    await ws.prepare(request)
    try:
        await _ForwardSession(ws, str(ip), pod["metadata"]["name"],
                              pod["metadata"]["uid"]).run()
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:  # a bug: end this session, keep serving
        log.exception("port-forward to %s failed", pod["metadata"]["name"])
    finally:
        await ws.close()
    return ws


def _dial_error(error: BaseException) -> str:
    """Go's wording of a failed dial ("connect: connection refused"), as kubelet reports it."""
    if isinstance(error, TimeoutError):
        return "i/o timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connect: connection refused"
    code = getattr(error, "errno", None)
    return f"connect: {os.strerror(code).lower()}" if code else f"connect: {error}"


class _ForwardSession:
    """One port-forward session: SPDY streams in pairs (error, data), one TCP connection each.

    Every outgoing frame goes through one queue, in the order it was made, because SYN_REPLY
    header blocks share one zlib stream. Control frames are queued at once (the reader must
    never block); the relays wait while the queue is above its high-water mark, which is how a
    slow client slows the pods' reads down.
    """

    def __init__(self, ws: web.WebSocketResponse, ip: str, pod_name: str, pod_uid: str) -> None:
        self.ws = ws
        self.ip = ip
        self.pod_name = pod_name
        self.pod_uid = pod_uid
        self.reader = spdy.FrameReader()
        self.writer = spdy.FrameWriter()
        self.outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self.pending: dict[str, dict[str, int]] = {}  # requestID -> {"data"|"error": stream}
        self.inbound: dict[int, asyncio.Queue[bytes | None]] = {}  # data stream -> bytes
        self.connections: dict[int, asyncio.Task[None]] = {}  # data stream -> its relay

    def _queue(self, frame: bytes) -> None:
        self.outgoing.put_nowait(frame)

    async def _send_data(self, frames: list[bytes]) -> None:
        """Queue a relay's frames, waiting for room first."""
        for frame in frames:
            while self.outgoing.qsize() >= HIGH_WATER_FRAMES:
                self._room.clear()
                await self._room.wait()
            self.outgoing.put_nowait(frame)

    async def _sender(self) -> None:
        try:
            while (frame := await self.outgoing.get()) is not None:
                if self.outgoing.qsize() < HIGH_WATER_FRAMES:
                    self._room.set()
                if self.ws.closed:
                    return
                try:
                    await self.ws.send_bytes(frame)
                except (ConnectionResetError, RuntimeError):
                    return
        finally:
            self._room.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._sender())
        try:
            async for message in self.ws:
                if message.type != WSMsgType.BINARY:
                    continue
                try:
                    frames = self.reader.feed(message.data)
                except spdy.ProtocolError as error:
                    log.warning("port-forward to %s: %s", self.pod_name, error)
                    self._queue(spdy.FrameWriter.goaway(0, spdy.PROTOCOL_ERROR))
                    break
                if not self._handle(frames):
                    break
        finally:
            relays = list(self.connections.values())
            for task in relays:
                task.cancel()
            if relays:
                await asyncio.gather(*relays, return_exceptions=True)
            self.outgoing.put_nowait(None)
            await asyncio.wait({sender}, timeout=1.0)
            sender.cancel()

    def _handle(self, frames: list[spdy.Frame]) -> bool:
        """Act on the client's frames; False once it says goodbye."""
        for frame in frames:
            if isinstance(frame, spdy.SynStream):
                self._open(frame)
            elif isinstance(frame, spdy.DataFrame):
                queue = self.inbound.get(frame.stream_id)
                if queue is not None:
                    if frame.data:
                        queue.put_nowait(frame.data)
                    if frame.fin:
                        queue.put_nowait(None)
            elif isinstance(frame, spdy.RstStream):
                task = self.connections.get(frame.stream_id)
                if task is not None:
                    task.cancel()
            elif isinstance(frame, spdy.Ping):
                self._queue(spdy.FrameWriter.ping(frame.ping_id))
            elif isinstance(frame, spdy.GoAway):
                return False
        return True

    def _open(self, frame: spdy.SynStream) -> None:
        stream = rc.forward_stream(frame.headers)
        if isinstance(stream, str):
            log.info("port-forward to %s: refusing stream %d: %s",
                     self.pod_name, frame.stream_id, stream)
            self._queue(spdy.FrameWriter.rst_stream(frame.stream_id, spdy.REFUSED_STREAM))
            return
        self._queue(self.writer.syn_reply(frame.stream_id))
        pair = self.pending.setdefault(stream.request_id, {})
        pair[stream.kind] = frame.stream_id
        if stream.kind == "data":
            self.inbound[frame.stream_id] = asyncio.Queue()
        if "data" in pair and "error" in pair:
            del self.pending[stream.request_id]
            data_id = pair["data"]
            self.connections[data_id] = asyncio.get_running_loop().create_task(
                self._relay(stream.port, data_id, pair["error"]))

    async def _relay(self, port: int, data_id: int, error_id: int) -> None:
        """One forwarded connection: the pod's port <-> the data stream; errors on the other."""
        try:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.ip, port), CONNECT_TIMEOUT_SECONDS)
            except (OSError, TimeoutError) as error:
                message = (f"error forwarding port {port} to pod {self.pod_name}, uid "
                           f"{self.pod_uid}: dial tcp {self.ip}:{port}: {_dial_error(error)}")
                await self._send_data(spdy.FrameWriter.data(error_id, message.encode(),
                                                             fin=True))
                await self._send_data(spdy.FrameWriter.data(data_id, b"", fin=True))
                return
            upstream = asyncio.get_running_loop().create_task(
                self._to_pod(self.inbound[data_id], writer))
            try:
                while chunk := await reader.read(READ_CHUNK):
                    await self._send_data(spdy.FrameWriter.data(data_id, chunk))
            except OSError:
                pass
            finally:
                upstream.cancel()
                writer.close()
            await self._send_data(spdy.FrameWriter.data(data_id, b"", fin=True))
            await self._send_data(spdy.FrameWriter.data(error_id, b"", fin=True))
        finally:
            self.inbound.pop(data_id, None)
            self.connections.pop(data_id, None)

    @staticmethod
    async def _to_pod(queue: asyncio.Queue[bytes | None], writer: asyncio.StreamWriter) -> None:
        try:
            while (chunk := await queue.get()) is not None:
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass
