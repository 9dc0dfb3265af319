"""`gencluster dev`: run the local control plane, and inject real faults into it.

Usable on its own as `python -m gencluster_dev`; the `gencluster` command delegates here and
adds the project's CRDs.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path

from gencluster_dev.machinery.inflight import (
    DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
    DEFAULT_MAX_REQUESTS_INFLIGHT,
)

DEFAULT_DIR = Path(".gencluster/dev")
DIR_HELP = "state directory (default %(default)s)"

FAULTS_HELP = {
    "kill": "SIGKILL every container process of POD (the kubelet restarts it per restartPolicy)",
    "pause": "SIGSTOP every container process of POD (a paused process, e.g. past its lease)",
    "resume": "SIGCONT a paused POD",
    "partition": "drop traffic between POD_A and POD_B, both ways",
    "isolate": "drop traffic between POD and every other pod and the API server",
    "cut-apiserver": "drop traffic from POD to the API server",
    "heal": "remove every fault rule of this instance",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gencluster dev",
        description="A local Kubernetes control plane: API server, process kubelet, Service proxy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the control plane in the foreground until Ctrl-C")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=DIR_HELP)
    up.add_argument(
        "--crds",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a CRD file or a folder of them to install at start (repeatable)",
    )
    up.add_argument(
        "--apply",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a manifest to apply once the API serves (repeatable)",
    )
    up.add_argument(
        "--controller",
        action="append",
        default=[],
        metavar="COMMAND",
        help="a controller (operator) command to run beside the control plane, with KUBECONFIG "
        "set; restarted if it exits (repeatable)",
    )
    up.add_argument("--node-name", default="dev-node", help="the node's name (default %(default)s)")
    up.add_argument(
        "--runtime",
        choices=("process", "podman"),
        default="process",
        help="how the kubelet runs containers: as local processes (default), or from their "
        "images with podman (root; see docs/devcluster.md, Containers)",
    )
    up.add_argument(
        "--restart-backoff",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="first crash-loop back-off, doubled up to 300 s (Kubernetes: 10)",
    )
    up.add_argument(
        "--max-requests-inflight",
        type=int,
        default=DEFAULT_MAX_REQUESTS_INFLIGHT,
        metavar="N",
        help="read-only requests the API server works on at once, the rest answered 429 "
        "(kube-apiserver's flag; default %(default)s, 0: no limit)",
    )
    up.add_argument(
        "--max-mutating-requests-inflight",
        type=int,
        default=DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
        metavar="N",
        help="the same for writes (default %(default)s, 0: no limit)",
    )

    fault = commands.add_parser("fault", help="inject a real fault into a running instance")
    fault.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=DIR_HELP)
    kinds = fault.add_subparsers(dest="fault", required=True)
    # `--dir` after the verb as well (`fault kill POD --dir DIR`): SUPPRESS leaves the value
    # parsed before the verb (or the default) alone unless the option is given here.
    after_verb = argparse.ArgumentParser(add_help=False)
    after_verb.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help=DIR_HELP)
    for kind in ("kill", "pause", "resume", "isolate", "cut-apiserver"):
        kinds.add_parser(kind, help=FAULTS_HELP[kind], parents=[after_verb]).add_argument(
            "pod", metavar="POD", help="NAME or NAMESPACE/NAME"
        )
    partition = kinds.add_parser("partition", help=FAULTS_HELP["partition"],
                                 parents=[after_verb])
    partition.add_argument("pod_a", metavar="POD_A")
    partition.add_argument("pod_b", metavar="POD_B")
    kinds.add_parser("heal", help=FAULTS_HELP["heal"], parents=[after_verb])
    return parser


def yaml_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            files.append(path)
    return files


def run_up(arguments: argparse.Namespace) -> int:
    from gencluster_dev.up import DevCluster, DevClusterError, run_until_signalled

    cluster = DevCluster(
        dev_dir=arguments.dir,
        crd_files=yaml_files(arguments.crds),
        manifest_files=arguments.apply,
        node_name=arguments.node_name,
        restart_backoff_base=arguments.restart_backoff,
        max_requests_inflight=arguments.max_requests_inflight,
        max_mutating_requests_inflight=arguments.max_mutating_requests_inflight,
        runtime=arguments.runtime,
        controller_commands=[shlex.split(command) for command in arguments.controller],
        announce=lambda line: print(line, flush=True),
    )
    try:
        asyncio.run(run_until_signalled(cluster))
    except DevClusterError as error:
        print(f"gencluster dev up: {error}", file=sys.stderr)
        return 1
    return 0


def run_fault(arguments: argparse.Namespace) -> int:
    from gencluster_dev.network.faults import FaultError, FaultInjector

    try:
        injector = FaultInjector(arguments.dir)
        match arguments.fault:
            case "partition":
                injector.partition(arguments.pod_a, arguments.pod_b)
            case "heal":
                injector.heal()
            case "cut-apiserver":
                injector.cut_apiserver(arguments.pod)
            case kind:
                getattr(injector, kind)(arguments.pod)
    except FaultError as error:
        print(f"gencluster dev fault {arguments.fault}: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command == "up":
        return run_up(arguments)
    return run_fault(arguments)


if __name__ == "__main__":
    sys.exit(main())
