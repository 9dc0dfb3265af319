"""Pod spec → the `podman run` of one container: the pure half of the podman engine.

The process runtime hands every container the host paths of its volumes through env
variables, because a process shares the host's filesystem. In a container the volumes are real
bind mounts at their `mountPath`, so the engine turns those variables back into mounts and
drops them (and the host's `PATH` and `HOME`: the image's apply). Everything else of the
environment (downward API, secrets, service links) is passed through as the process runtime
resolved it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gencluster_dev.node.podspec import (
    MOUNT_ENV_PREFIX,
    MOUNTS_ENV,
    SERVICE_ACCOUNT_MOUNT,
    ContainerConfigError,
    expand,
)
from gencluster_dev.node.resolvconf import ResolvConf

#: Where a container finds the pod's kubeconfig (env `KUBECONFIG`), mounted read-only.
KUBECONFIG_MOUNT = "/var/run/secrets/gencluster.dev/kubeconfig"
#: Variables of the process runtime that name host paths or the host's programs.
HOST_ONLY_ENV = ("PATH", "HOME", "GENCLUSTER_DEV_POD_DIR", MOUNTS_ENV)
#: The label every container of one kubelet carries (value: its pods directory), so that the
#: leftovers of an instance that died can be found and removed.
INSTANCE_LABEL = "gencluster.dev/pods-dir"

#: Volume sources Kubernetes always mounts read-only.
READ_ONLY_SOURCES = frozenset({"secret", "configMap", "downwardAPI", "projected"})

_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class Mount:
    """A bind mount: host `source` at `target` in the container."""

    source: str
    target: str
    read_only: bool

    def flag(self) -> str:
        """podman's `--mount` value (commas would split it, so they are refused)."""
        for path in (self.source, self.target):
            if "," in path:
                raise ContainerConfigError(f"mount path {path!r}: commas are not supported")
        text = f"type=bind,source={self.source},destination={self.target}"
        return text + (",ro=true" if self.read_only else "")


def container_name(pod: dict, container: dict) -> str:
    """The podman name of a pod's container, after the kubelet's `k8s_<c>_<pod>_<ns>_<uid>`."""
    meta = pod["metadata"]
    parts = [container["name"], meta["name"], meta.get("namespace", "default"), meta["uid"]]
    return "k8s_" + "_".join(_NAME_SAFE.sub("-", str(part)) for part in parts)


def container_mounts(container: dict, env: Mapping[str, str],
                     volumes: Sequence[dict] = ()) -> list[Mount]:
    """The bind mounts of a container: every volumeMount (secret, configMap, downwardAPI,
    projected and the service account token read-only, as Kubernetes mounts them; the others
    read-only when the mount says so), and the pod's kubeconfig file when `KUBECONFIG` names
    it. The host side comes from the process runtime's mount table in `env`."""
    try:
        table = json.loads(env.get(MOUNTS_ENV) or "{}")
    except ValueError as exc:
        raise ContainerConfigError(f"{MOUNTS_ENV} is not JSON: {exc}") from None
    always_read_only = {v["name"] for v in volumes if READ_ONLY_SOURCES & set(v)}
    read_only = {m["mountPath"]: bool(m.get("readOnly")) or m["name"] in always_read_only
                 for m in container.get("volumeMounts") or []}
    mounts = [Mount(str(source), str(target), read_only.get(target, True))
              for target, source in sorted(table.items())]
    if env.get("KUBECONFIG"):
        mounts.append(Mount(env["KUBECONFIG"], KUBECONFIG_MOUNT, True))
    return mounts


def container_env(container: dict, env: Mapping[str, str]) -> dict[str, str]:
    """The environment inside the container: the process runtime's, less what names the host
    (unless the container's own `env` sets it), `KUBECONFIG` pointing at its mount."""
    own = {item.get("name") for item in container.get("env") or []}
    out: dict[str, str] = {}
    for name, value in env.items():
        host_only = name in HOST_ONLY_ENV or name.startswith(MOUNT_ENV_PREFIX)
        if host_only and name not in own:
            continue
        out[name] = value
    if "KUBECONFIG" in out and "KUBECONFIG" not in own:
        out["KUBECONFIG"] = KUBECONFIG_MOUNT
    return out


def _merged_security(pod: dict, container: dict) -> dict:
    """The container's securityContext over the pod's (the fields both may set)."""
    pod_context = pod.get("spec", {}).get("securityContext") or {}
    merged = {k: pod_context[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot")
              if k in pod_context}
    merged.update(container.get("securityContext") or {})
    return merged


def security_flags(pod: dict, container: dict, run_as: int | None) -> list[str]:
    """User, read-only root, capabilities and no-new-privileges, as the spec asks.

    `run_as` (the uid the kubelet gives every pod when it runs as root) wins over
    `runAsUser`, like in the process runtime: network faults select a pod by its uid.
    """
    context = _merged_security(pod, container)
    flags: list[str] = []
    uid = run_as if run_as is not None else context.get("runAsUser")
    if uid is not None:
        gid = run_as if run_as is not None else context.get("runAsGroup", uid)
        if context.get("runAsNonRoot") and int(uid) == 0:
            raise ContainerConfigError(
                "container's runAsUser breaks non-root policy (runAsNonRoot: true, uid 0)")
        flags += ["--user", f"{int(uid)}:{int(gid)}"]
    if context.get("privileged"):
        raise ContainerConfigError("privileged containers are not supported by the dev kubelet")
    if context.get("readOnlyRootFilesystem"):
        # No tmpfs on /tmp, /run, /var/tmp either: Kubernetes mounts none.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    capabilities = context.get("capabilities") or {}
    for cap in capabilities.get("drop") or []:
        flags += ["--cap-drop", str(cap).upper()]
    for cap in capabilities.get("add") or []:
        flags += ["--cap-add", str(cap).upper()]
    return flags


def entrypoint_and_args(container: dict, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """`--entrypoint` and the positional args: `command` replaces the image's ENTRYPOINT,
    `args` its CMD, `$(VAR)` expanded with the container's environment (Kubernetes' rules)."""
    mapping = dict(env)
    command = [expand(str(part), mapping) for part in container.get("command") or []]
    args = [expand(str(part), mapping) for part in container.get("args") or []]
    flags = ["--entrypoint", json.dumps(command)] if command else []
    return flags, args


def dns_flags(resolv: ResolvConf | None) -> list[str]:
    """podman's flags for the container's /etc/resolv.conf (None: podman's default, a copy of
    the node's). Without nameservers podman keeps the node's ones and uses the rest."""
    if resolv is None:
        return []
    flags: list[str] = []
    for server in resolv.nameservers:
        flags += ["--dns", server]
    for domain in resolv.searches:
        flags += ["--dns-search", domain]
    for option in resolv.options:
        flags += ["--dns-option", option]
    return flags


def exec_argv(podman: Sequence[str], pod: dict, container: str, command: Sequence[str], *,
              stdin: bool, tty: bool) -> list[str]:
    """`podman exec` of `command` in a pod's running container (`kubectl exec`).

    podman gives the command what the container was started with: its user, environment,
    working directory, capabilities and security options, its mount and pid namespaces.
    """
    flags = (["--interactive"] if stdin else []) + (["--tty"] if tty else [])
    return [*podman, "exec", *flags, container_name(pod, {"name": container}), *command]


def run_argv(
    *,
    podman: Sequence[str],
    pod: dict,
    container: dict,
    env: Mapping[str, str],
    run_as: int | None,
    pidfile: str,
    instance: str,
    ulimits: Sequence[str],
    resolv: ResolvConf | None = None,
) -> list[str]:
    """The `podman run` of one container run, in the foreground (its output is the log).

    Host networking: the pod keeps its own loopback address and the node's nftables faults
    keep matching its uid; its /etc/resolv.conf is the pod's (`resolv`, podman writes it
    even with host networking). The values of `env` are not on the command line (`--env NAME`
    takes them from podman's own environment), so secrets never show in `ps`.
    """
    image = container.get("image") or ""
    if not image:
        raise ContainerConfigError(f"container {container['name']!r} has no image")
    meta = pod["metadata"]
    argv = [*podman, "run", "--rm", "--replace", "--name", container_name(pod, container),
            "--pull", "never", "--network", "host", "--sig-proxy=false",
            "--pidfile", pidfile, "--log-driver", "none",
            "--label", f"{INSTANCE_LABEL}={instance}",
            "--label", f"io.kubernetes.pod.name={meta['name']}",
            "--label", f"io.kubernetes.pod.namespace={meta.get('namespace', 'default')}",
            "--label", f"io.kubernetes.pod.uid={meta['uid']}",
            "--label", f"io.kubernetes.container.name={container['name']}"]
    for limit in ulimits:
        argv += ["--ulimit", limit]
    argv += security_flags(pod, container, run_as)
    argv += dns_flags(resolv)
    for mount in container_mounts(container, env, pod.get("spec", {}).get("volumes") or []):
        argv += ["--mount", mount.flag()]
    for name, value in sorted(container_env(container, env).items()):
        # PATH is podman's own too: the container's travels on the command line.
        argv += ["--env", f"PATH={value}" if name == "PATH" else name]
    if container.get("workingDir"):
        argv += ["--workdir", str(container["workingDir"])]
    entrypoint, args = entrypoint_and_args(container, env)
    return [*argv, *entrypoint, image, *args]


__all__ = [
    "INSTANCE_LABEL", "KUBECONFIG_MOUNT", "SERVICE_ACCOUNT_MOUNT", "Mount", "container_env",
    "container_mounts", "container_name", "dns_flags", "entrypoint_and_args", "exec_argv",
    "run_argv", "security_flags",
]
