"""The podman container engine: each run of a container is `podman run` of its image.

`gencluster dev up --runtime podman` uses it instead of the process engine. The `podman run`
stays in the foreground, attached, so its output is the container's log file and its exit
status the container's; `--pidfile` tells the host pid of the container's main process, the
leader of its process group, which the runner signals (SIGTERM, then SIGKILL after the grace
period) and `state.json` records for `gencluster dev fault kill|pause|resume`.

Facts of these machines (docs/devcluster.md, "Containers"): podman's default runtime crun
refuses hybrid cgroup layouts, so runc is named; rlimits may not be raised, so the containers
get the node's current hard `nofile` and a modest `nproc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import subprocess
from pathlib import Path

from gencluster_dev.node.engines import LaunchPlan, LaunchRequest, RunningContainer
from gencluster_dev.node.podmanspec import (
    INSTANCE_LABEL,
    container_env,
    container_name,
    exec_argv,
    run_argv,
)
from gencluster_dev.node.resolvconf import ResolvConf, parse_resolv_conf, pod_resolv_conf

log = logging.getLogger(__name__)

#: What podman itself needs to find conmon and runc (the container's PATH is the image's).
PODMAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: How often the engine looks for the pid file of a starting container.
PIDFILE_POLL = 0.02
#: `podman run`'s own failures (no such image, bad flag, ...), as opposed to the container's.
PODMAN_ERROR = 125
#: RLIMIT_NPROC of the containers (per uid, and every pod has its own uid).
CONTAINER_NPROC = 4096
#: The node's resolver configuration (what `dnsPolicy: Default` pods get).
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


class PodmanUnavailable(RuntimeError):
    """podman is missing or does not work here; the message says what to do."""


def container_ulimits() -> list[str]:
    """`--ulimit` values that raise nothing: the current hard `nofile`, `nproc` at most
    `CONTAINER_NPROC`."""
    _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    nofile_value = 1024 if nofile == resource.RLIM_INFINITY else nofile
    nproc_value = CONTAINER_NPROC if nproc == resource.RLIM_INFINITY else min(nproc,
                                                                              CONTAINER_NPROC)
    return [f"nofile={nofile_value}:{nofile_value}", f"nproc={nproc_value}:{nproc_value}"]


class PodmanEngine:
    """Runs containers from their images with podman (host network, pod uid, mounts)."""

    name = "podman"

    def __init__(self, *, instance: str, podman: str = "podman", oci_runtime: str = "runc",
                 cluster_dns: str | None = None, cluster_domain: str = "cluster.local") -> None:
        path = shutil.which(podman, path=PODMAN_PATH)
        if path is None:
            raise PodmanUnavailable(
                "--runtime podman needs podman (Debian: apt-get install podman runc)")
        self.podman = [path, "--runtime", oci_runtime]
        #: the label value every container of this kubelet carries (its pods directory)
        self.instance = instance
        self.ulimits = container_ulimits()
        #: the kubelet's --cluster-dns and --cluster-domain: what ClusterFirst pods resolve with
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        try:
            self.host_resolv = parse_resolv_conf(HOST_RESOLV_CONF.read_text())
        except OSError:
            self.host_resolv = ResolvConf()

    def check(self) -> None:
        """Fail early, with podman's own words, when podman cannot work here."""
        try:
            subprocess.run([*self.podman, "info"], capture_output=True, check=True,
                           timeout=60, env=self._env({}))
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise PodmanUnavailable(f"podman does not work here: {exc} "
                                    f"{detail.decode(errors='replace').strip()}") from None

    def remove_leftovers(self) -> None:
        """Remove the containers an earlier kubelet of the same directory left behind (a
        control plane killed before it could stop them)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*self.podman, "rm", "--force", "--time", "0", "--filter",
                            f"label={INSTANCE_LABEL}={self.instance}"],
                           capture_output=True, timeout=120, env=self._env({}))

    @staticmethod
    def _env(container_env_values: dict[str, str]) -> dict[str, str]:
        """podman's environment: the container's variables (`--env NAME` reads them here),
        and a PATH of podman's own."""
        return {**container_env_values, "PATH": PODMAN_PATH}

    def _pidfile(self, request: LaunchRequest) -> Path:
        return request.pod_dir / f".{request.container['name']}.pid"

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        argv = run_argv(podman=self.podman, pod=request.pod, container=request.container,
                        env=request.env, run_as=request.run_as,
                        pidfile=str(self._pidfile(request)), instance=self.instance,
                        ulimits=self.ulimits, resolv=self.resolv_conf(request.pod))
        values = container_env(request.container, request.env)
        values.pop("PATH", None)
        return LaunchPlan(argv=argv, env=self._env(values), cwd=str(request.pod_dir),
                          handle=container_name(request.pod, request.container))

    def resolv_conf(self, pod: dict) -> ResolvConf:
        """The pod's /etc/resolv.conf (its dnsPolicy and dnsConfig, the cluster DNS)."""
        return pod_resolv_conf(pod, cluster_dns=self.cluster_dns,
                               cluster_domain=self.cluster_domain, host=self.host_resolv)

    async def start(self, plan: LaunchPlan, log_fd: int) -> RunningContainer:
        pidfile = Path(plan.argv[plan.argv.index("--pidfile") + 1])
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        process = await asyncio.create_subprocess_exec(
            *plan.argv, env=plan.env, cwd=plan.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd, stderr=log_fd, start_new_session=True,
        )
        # No deadline: podman either starts the container (the pid file appears) or exits.
        while True:
            pid = _read_pid(pidfile)
            if pid is not None:
                break
            if process.returncode == PODMAN_ERROR:
                raise OSError(f"podman could not run the container (status {PODMAN_ERROR}; "
                              "its message is in the log)")
            if process.returncode is not None:  # it ran and ended before we saw its pid
                return RunningContainer(process, process.pid, group=False)
            await asyncio.sleep(PIDFILE_POLL)
        try:
            group = os.getpgid(pid) == pid
        except ProcessLookupError:
            group = False
        return RunningContainer(process, pid, group=group)

    def exec_plan(self, plan: LaunchPlan, request: LaunchRequest,
                  argv: list[str]) -> LaunchPlan:
        return LaunchPlan(argv=[*self.podman, "exec", plan.handle, *argv],
                          env=self._env({}), cwd=plan.cwd)

    def exec_command(self, pod: dict, container: str, command: list[str], stdin: bool,
                     tty: bool) -> list[str]:
        """The `podman exec` of `kubectl exec` (the API server runs it)."""
        return exec_argv(self.podman, pod, container, command, stdin=stdin, tty=tty)

    def container_id(self, plan: LaunchPlan, running: RunningContainer) -> str:
        return f"podman://{plan.handle}/{running.pid}"


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
