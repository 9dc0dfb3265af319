"""What `pods/exec` and `pods/portforward` requests mean, apart from any socket (pure).

kubectl 1.30+ runs `exec` over a WebSocket with the channel protocol `v5.channel.k8s.io`: every
binary message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize), and
v5 adds message `[255, channel]`, "the client closed that channel" (stdin's end). The error
channel carries one `metav1.Status` once the command ends; a non-zero exit is
`reason: NonZeroExitCode` with the code in a cause of type `ExitCode`, which kubectl turns into
its own exit code. kubectl 1.31+ runs `port-forward` as SPDY/3.1 inside a WebSocket (see
`spdy`); each forwarded connection is a pair of SPDY streams, `error` and `data`, named by the
headers `streamType`, `port` and `requestID`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gencluster_dev.machinery.errors import ApiError, bad_request

# Channel subprotocols the server speaks, best first (kube-apiserver accepts v1..v5; kubectl
# asks for v5 and, for older servers, v4).
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORT_FORWARD_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io",)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass(frozen=True)
class ExecOptions:
    """The query of `pods/NAME/exec` (PodExecOptions)."""

    command: tuple[str, ...]
    container: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise bad_request(f'invalid value for {name}: "{value}"')


def container_names(pod: Mapping[str, Any]) -> list[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]


def choose_container(pod: Mapping[str, Any], requested: str | None) -> str:
    """The container a streaming request addresses, with kube-apiserver's errors."""
    name = pod["metadata"]["name"]
    containers = container_names(pod)
    if not requested:
        if len(containers) != 1:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: "
                f"[{' '.join(containers)}]")
        return containers[0]
    if requested not in containers:
        raise bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def exec_options(pod: Mapping[str, Any], query: Mapping[str, str],
                 commands: Sequence[str]) -> ExecOptions:
    """PodExecOptions from the query (`command` repeats); 400 for what kube-apiserver refuses."""
    if not commands:
        raise bad_request("you must specify at least 1 command")
    options = ExecOptions(
        command=tuple(commands),
        container=choose_container(pod, query.get("container")),
        stdin=_flag(query, "stdin", False),
        stdout=_flag(query, "stdout", True),
        stderr=_flag(query, "stderr", True),
        tty=_flag(query, "tty", False),
    )
    if not (options.stdin or options.stdout or options.stderr):
        raise bad_request("you must specify at least one of stdin, stdout, stderr")
    if options.tty and options.stderr:
        # kubelet: with a TTY, stderr is merged into stdout (kubectl never asks for both).
        options = ExecOptions(options.command, options.container, options.stdin,
                              options.stdout, False, True)
    return options


def require_not_completed(pod: Mapping[str, Any]) -> None:
    """kube-apiserver refuses streaming into a pod that has completed."""
    phase = (pod.get("status") or {}).get("phase", "Pending")
    if phase in ("Succeeded", "Failed"):
        raise bad_request(f"cannot exec into or attach to a container in a completed pod; "
                          f"current phase is {phase}")


def container_not_found(container: str) -> ApiError:
    """kubelet's answer when the container has no running process."""
    return bad_request(f'unable to upgrade connection: container not found ("{container}")')


def exit_status(returncode: int, command: Sequence[str]) -> dict[str, Any]:
    """The error channel's last message: Success, or the exit code as kubelet reports it.

    A process killed by a signal exits, as container runtimes report it, with 128 + signal.
    """
    code = returncode if returncode >= 0 else 128 - returncode
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (f"command terminated with non-zero exit code: error executing command "
                    f"[{' '.join(command)}], exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def status_json(status: Mapping[str, Any]) -> bytes:
    """A Status as the error channel carries it."""
    return json.dumps(status, separators=(",", ":")).encode()


def start_failure_code(error: OSError) -> int:
    """The exit code a runtime gives a command that cannot start: 127 not found, else 126."""
    return 127 if isinstance(error, FileNotFoundError) else 126


def terminal_size(payload: bytes) -> tuple[int, int] | None:
    """The resize channel's `{"Width": W, "Height": H}` as (rows, columns); None when bad."""
    try:
        size = json.loads(payload)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError):
        return None
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        return None
    return height, width


@dataclass(frozen=True)
class ForwardStream:
    """One SPDY stream of a port-forward session, from its SYN_STREAM headers."""

    kind: str  # "data" or "error"
    port: int
    request_id: str


def forward_stream(headers: Mapping[str, list[str]]) -> ForwardStream | str:
    """The stream a SYN_STREAM opens, or the reason it is refused (kubelet's checks)."""
    kind = (headers.get("streamtype") or [""])[0]
    if kind not in ("data", "error"):
        return f"invalid stream type {kind!r}"
    port_text = (headers.get("port") or [""])[0]
    try:
        port = int(port_text)
    except ValueError:
        return f"unable to parse {port_text!r} as a port"
    if not 0 < port < 65536:
        return f"port {port} must be between 1 and 65535"
    request_id = (headers.get("requestid") or [""])[0]
    if not request_id:
        return "stream has no requestID"
    return ForwardStream(kind, port, request_id)



# Linux capability numbers -> names, as setpriv(1) takes them (linux/capability.h order).
CAPABILITIES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin",
    "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace",
    "sys_pacct", "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
    "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read",
    "perfmon", "bpf", "checkpoint_restore",
)


def ambient_capabilities(proc_status: str) -> list[str]:
    """The names of the ambient capabilities in a /proc/PID/status text (`CapAmb:` mask), so
    an exec'd command gets what its container has (the kubelet gives containers
    CAP_DAC_READ_SEARCH); unknown bits are left out."""
    for line in proc_status.splitlines():
        if line.startswith("CapAmb:"):
            try:
                mask = int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                return []
            return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]
    return []


def identity_argv(setpriv: str, uid: int, capabilities: list[str]) -> list[str]:
    """The setpriv prefix that runs a command as the container runs: its uid and gid, no
    supplementary groups, and its ambient capabilities."""
    argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    if capabilities:
        names = ",".join(f"+{name}" for name in capabilities)
        argv += [f"--inh-caps={names}", f"--ambient-caps={names}"]
    return [*argv, "--"]
