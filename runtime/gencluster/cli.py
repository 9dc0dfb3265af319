"""The `gencluster` command: the one place that knows the runtime, the operator and `dev`.

Each subcommand imports its component only when it runs, so `gencluster call` never pays for
(or depends on) the local control plane, and the runtime never imports the operator.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "dev":
        from gencluster_dev.cli import main as dev_main

        return dev_main(args[1:])
    print("usage: gencluster dev ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
