"""`python -m gencluster_operator.main` (and `gencluster operator`): run the operator.

    gencluster operator --all-namespaces --metrics-port 8080
    gencluster operator --namespace team-a --namespace team-b --kubeconfig ~/.kube/config

Credentials: `--kubeconfig`, else `$KUBECONFIG`, else the pod's ServiceAccount (in-cluster),
else `~/.kube/config`. The operator runs until SIGINT or SIGTERM and then exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

DEFAULT_METRICS_PORT = 8080


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gencluster operator",
        description="Reconcile ClusteredServers (gencluster.io/v1alpha1) into HA server pods.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NAMESPACE",
        help="watch this namespace (repeatable; globs like 'team-*' allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster)")
    parser.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics (0: off; default %(default)s)",
    )
    parser.add_argument(
        "--metrics-host", default="", metavar="ADDRESS",
        help="address to serve metrics on (default: every address)",
    )
    parser.add_argument(
        "--liveness", metavar="URL",
        help="kopf's liveness endpoint for a probe, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument(
        "--peering", metavar="NAME",
        help="coordinate with other operator replicas through this KopfPeering object "
        "(default: standalone, one replica)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything, kopf included")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    kopf.configure(verbose=arguments.verbose, debug=arguments.debug)
    logging.getLogger("gencluster_operator").setLevel(
        logging.DEBUG if arguments.debug else logging.INFO
    )
    if not (arguments.verbose or arguments.debug):
        # kopf logs every handler run ("Handler 'pod_changed' succeeded") at INFO: with a pass
        # per pod event that drowns the operator's own lines, which say what it did.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from gencluster_operator import handlers, metrics  # noqa: F401 - registers the handlers

    if arguments.metrics_port:
        try:
            metrics.serve(arguments.metrics_port, arguments.metrics_host)
        except OSError as error:
            print(f"gencluster operator: cannot serve metrics on port "
                  f"{arguments.metrics_port}: {error}", file=sys.stderr)
            return 1
    kopf.run(
        standalone=arguments.peering is None,
        peering_name=arguments.peering,
        clusterwide=not arguments.namespace,
        namespaces=arguments.namespace,
        liveness_endpoint=arguments.liveness,
        memo=kopf.Memo(kubeconfig=arguments.kubeconfig),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
