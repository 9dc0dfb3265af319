"""`python -m gencluster_operator.main` (and `gencluster operator`): run the operator.

    gencluster operator --all-namespaces --metrics-port 8080
    gencluster operator --namespace team-a --namespace team-b --kubeconfig ~/.kube/config

Credentials: `--kubeconfig`, else `$KUBECONFIG`, else the pod's ServiceAccount (in-cluster),
else `~/.kube/config`. The operator runs until SIGINT or SIGTERM and then exits 0.

With `--leader-election` (the chart's default, two replicas) the process first waits to hold
the Lease `--leader-election-lease` in `--leader-election-namespace`, and only then starts kopf;
it exits 1 if it loses the Lease and releases it on SIGTERM (`leader_election.py`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

import kopf

if TYPE_CHECKING:
    from gencluster_operator.leader_election import LeaderElector

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
    election = parser.add_argument_group("leader election (several operator replicas)")
    election.add_argument(
        "--leader-election", action="store_true",
        help="act only while holding a coordination.k8s.io Lease; wait as a standby otherwise",
    )
    election.add_argument("--leader-election-lease", default=None, metavar="NAME",
                          help="the Lease's name (default: gencluster-operator)")
    election.add_argument("--leader-election-namespace", default=None, metavar="NAMESPACE",
                          help="the Lease's namespace (default: $POD_NAMESPACE, in-cluster "
                          "namespace, else default)")
    election.add_argument("--leader-election-identity", default=None, metavar="ID",
                          help="this process's holderIdentity (default: $POD_NAME_PID)")
    election.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                          help="how long a standby waits for a silent leader (default 15)")
    election.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS",
                          help="a leader that cannot renew this long stops (default 10)")
    election.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS",
                          help="how often the Lease is renewed or looked at (default 2)")
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
    elector = None
    if arguments.leader_election:
        elector = _lead_or_wait(arguments)
        if elector is None:
            return 0  # stopped (SIGTERM) while waiting to lead
    try:
        _run_kopf(arguments)
    finally:
        if elector is not None:
            elector.release()
            elector.close()
    return 0


def _lead_or_wait(arguments: argparse.Namespace) -> LeaderElector | None:
    """Block until this process leads (its elector, renewing from now on), or None when a
    signal stopped the wait. /healthz answers meanwhile, where kopf will serve it later."""
    from gencluster_operator.cluster_io import load_configuration
    from gencluster_operator.leader_election import (
        DEFAULT_LEASE_NAME,
        LeaderElector,
        StandbyHealth,
        default_identity,
        default_namespace,
    )
    from gencluster_operator.leadership import LeadershipConfig, LeadershipConfigError

    try:
        config = LeadershipConfig(arguments.lease_duration, arguments.renew_deadline,
                                  arguments.retry_period)
    except LeadershipConfigError as error:
        print(f"gencluster operator: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    elector = LeaderElector(
        load_configuration(arguments.kubeconfig),
        arguments.leader_election_lease or DEFAULT_LEASE_NAME,
        arguments.leader_election_namespace or default_namespace(),
        arguments.leader_election_identity or default_identity(),
        config,
    )

    def stop_waiting(signum: int, frame: FrameType | None) -> None:
        elector.stopping.set()

    previous = {sig: signal.signal(sig, stop_waiting) for sig in (signal.SIGTERM, signal.SIGINT)}
    health = StandbyHealth(arguments.liveness) if arguments.liveness else None
    try:
        leading = elector.wait_until_leading()
    finally:
        if health is not None:
            health.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not leading:
        elector.close()
        return None
    elector.start_renewing()
    return elector


def _run_kopf(arguments: argparse.Namespace) -> None:
    kopf.run(
        standalone=arguments.peering is None,
        peering_name=arguments.peering,
        clusterwide=not arguments.namespace,
        namespaces=arguments.namespace,
        liveness_endpoint=arguments.liveness,
        memo=kopf.Memo(kubeconfig=arguments.kubeconfig),
    )


if __name__ == "__main__":
    sys.exit(main())
