"""The `gencluster` command: the one place that knows the runtime, the operator and `dev`.

Each subcommand imports its component only when it runs, so a runtime pod never imports the
local control plane, and the control plane never imports gencluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: gencluster COMMAND ...

commands:
  run                                      run the runtime in a pod (docs/runtime-config.md)
  call NAME REQUEST_JSON                   call a ClusteredServer, print the reply as JSON
  subscribe NAME TOPIC                     print a topic's events as JSON lines as they come
                                           (follows failovers and merges)
  status NAME                              a ClusteredServer's runtime status as JSON
  operator [--namespace NS | -A] ...       run the operator (kopf) against the current kubeconfig
  dev up [--dir DIR] [--apply FILE ...]   run the local control plane (API server, kubelet,
         [--no-operator]                   proxy) and the operator beside it
  dev fault KIND ...                       inject a real fault (kill, pause, resume, partition,
                                           isolate, cut-apiserver, heal)

`gencluster dev --help` and `gencluster dev up --help` give every option.
"""


def project_crds_dir() -> Path | None:
    """The CRDs of this checkout (the single source in `crds/`), when running from one."""
    candidate = Path(__file__).resolve().parents[2] / "crds"
    return candidate if candidate.is_dir() else None


def operator_command() -> str:
    """The operator as `dev up` runs it: this interpreter, metrics off (instances run side by
    side in tests, and a fixed metrics port would collide)."""
    return f"{sys.executable} -m gencluster_operator.main --all-namespaces --metrics-port 0"


def dev_arguments(args: list[str]) -> list[str]:
    """`gencluster dev up` installs gencluster's CRDs and runs the operator, unless told not to."""
    if args[:1] != ["up"]:
        return args
    crds = project_crds_dir()
    if "--crds" not in args and crds is not None:
        args = [*args, "--crds", str(crds)]
    if "--no-operator" in args:
        return [arg for arg in args if arg != "--no-operator"]
    return [*args, "--controller", operator_command()]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gencluster"]:
        # The images' ENTRYPOINT is `gencluster`: `podman run IMAGE gencluster --help` (the
        # habit from images without one) passes the command's own name again.
        args = args[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        from gencluster.run import main as run_main

        return run_main(rest)
    if command in ("call", "cast", "subscribe", "status"):
        from gencluster.commands import main as commands_main

        return commands_main([command, *rest])
    if command == "operator":
        from gencluster_operator.main import main as operator_main

        return operator_main(rest)
    if command == "dev":
        from gencluster_dev.cli import main as dev_main

        return dev_main(dev_arguments(rest))
    print(f"gencluster: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
