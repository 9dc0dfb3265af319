"""kopf wiring: which events reconcile which ClusteredServer, and kopf's settings.

Every handler is one line of routing to `Reconciler.request(namespace, name)`, which runs the
pure core (`reconciler.py` says how). A ClusteredServer is reconciled:

- when it is created, changed (spec, annotations such as `gencluster.io/switchover-to`) or
  found at operator start (resume);
- every `RECONCILE_INTERVAL_SECONDS` (timer): the runtime's reports (lag, roles) change without
  any Kubernetes event, and a failed pass is retried;
- when one of its pods changes (label `gencluster.io/cluster`): a crashed container, a deleted
  pod, a pod that became Ready; this is what makes failover assist immediate;
- when its Lease changes holder, epoch or in-sync set (not on the renewals in between).

Nothing is decided here; the handlers do not even read the objects kopf hands them beyond
their names, because each pass reads fresh state itself.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from gencluster_operator import names
from gencluster_operator.cluster_io import KubernetesApi, load_configuration
from gencluster_operator.desired_network import operator_pods_from_env
from gencluster_operator.reconciler import REPORTING_COMPONENT, Reconciler
from gencluster_operator.runtime_admin import RuntimeAdmin

RECONCILE_INTERVAL_SECONDS = 5.0
"""The timer's period: how stale the runtime's reported lag may get in the status, and how
soon a failed pass is retried. Pod and Lease events trigger passes at once in between."""

CLUSTERED_SERVERS = (names.GROUP, names.VERSION, names.PLURAL)
PODS = ("v1", "pods")
LEASES = ("coordination.k8s.io", "v1", "leases")
CLAIMS = ("v1", "persistentvolumeclaims")
OWNED = {names.CLUSTER_LABEL: kopf.PRESENT}

# -- operator lifecycle -------------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings, each chosen for this operator, and the shared I/O objects."""
    # Our own finalizer name: `kubectl get csrv -o yaml` then says who holds the object. kopf
    # adds it because of the timer (it stops the timer before the object goes); the children
    # need no finalizer, garbage collection through ownerReferences removes them.
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    # Handler progress and the diff base in annotations under our own prefix, never in status:
    # the CRD's status schema has no room for kopf's fields (they would be pruned), and users
    # recognise `gencluster.io/...` keys as the operator's.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    # Events carry the operator's name. kopf's own log-to-Event posting is off: it posts every
    # handler log line with reason "Logging", while our Events keep to the documented set of
    # reasons (events.py) that users alert on; the operator's logs are in its pod's log.
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.enabled = False
    # Watches: ask the API server to end each watch after 5 minutes and give up on the client
    # side a little later, so a silently dead connection (a proxy, a restarted API server) is
    # noticed within minutes, not hours; reconnecting resumes from the last resourceVersion.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Only our pods and Leases (label gencluster.io/cluster), filtered by the API server: the
    # operator never holds every pod of the cluster in memory.
    settings.watching.label_selectors[PODS] = names.CLUSTER_LABEL
    settings.watching.label_selectors[LEASES] = names.CLUSTER_LABEL
    settings.watching.label_selectors[CLAIMS] = names.CLUSTER_LABEL
    # Peering follows the command line (`--peering NAME`; standalone by default, see main.py):
    # several replicas use `--leader-election` instead (kopf starts only in the leader, see
    # leader_election.py), and peering would need its own CRD and RBAC.
    # Per-object event workers (`settings.queueing`, formerly `settings.batching`, whose time
    # window kopf removed): no limit, since a cluster's passes are serialised and coalesced by
    # the Reconciler anyway, and idle workers exit after 5 s so that thousands of pods do not
    # keep thousands of tasks alive.
    settings.queueing.worker_limit = None
    settings.queueing.idle_timeout = 5.0
    # Reconcile passes run in kopf's executor (blocking API and gRPC calls), one per cluster
    # at a time: this bounds how many clusters are reconciled at once, not the work of one.
    settings.execution.max_workers = 16
    # A failed handler (an unexpected exception) is retried after 10 s rather than kopf's
    # 60 s: the timer would retry within RECONCILE_INTERVAL_SECONDS anyway.
    settings.execution.default_backoff = 10
    # A deleted ClusteredServer waits for its timer to exit before kopf drops the finalizer;
    # kopf checks for that exit every 60 s by default, so a delete could hang for a minute.
    settings.background.cancellation_polling = 1.0

    configuration = load_configuration(memo.get("kubeconfig"))
    memo["configuration"] = configuration
    memo["reconciler"] = Reconciler(
        KubernetesApi(configuration), RuntimeAdmin(), settings.execution.executor,
        operator_pods=operator_pods_from_env(os.environ),
    )


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials as the reconciler's calls (`--kubeconfig`,
    `$KUBECONFIG`, in-cluster): one source, so that the two can never talk to different
    clusters. Called again by kopf on a 401, which picks up a rotated token."""
    configuration = memo["configuration"]
    header = configuration.get_api_key_with_prefix(
        "BearerToken", alias="authorization"
    )
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.admin.close()
    reconciler.api.close()


# -- the ClusteredServer ------------------------------------------------------------------------


@kopf.on.resume(*CLUSTERED_SERVERS)
async def resumed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo["reconciler"].request(namespace, name)


@kopf.on.create(*CLUSTERED_SERVERS)
async def created(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo["reconciler"].request(namespace, name)


@kopf.on.update(*CLUSTERED_SERVERS)
async def updated(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo["reconciler"].request(namespace, name)


@kopf.timer(*CLUSTERED_SERVERS, interval=RECONCILE_INTERVAL_SECONDS)
async def periodically(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo["reconciler"].request(namespace, name)


@kopf.on.delete(*CLUSTERED_SERVERS, optional=True)
def deleted(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Nothing to delete (garbage collection does it); forget the memory and the metrics."""
    memo["reconciler"].forget((namespace, name))


# -- what the ClusteredServer owns --------------------------------------------------------------


@kopf.on.event(*PODS, labels=OWNED)
async def pod_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await memo["reconciler"].request(namespace, labels[names.CLUSTER_LABEL])


@kopf.on.event(*CLAIMS, labels=OWNED)
async def claim_changed(
    namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A claim bound (its pod can start: Progressing changes) or went away."""
    await memo["reconciler"].request(namespace, labels[names.CLUSTER_LABEL])


@kopf.on.event(*LEASES, labels=OWNED)
async def lease_changed(
    namespace: str, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    cluster = labels[names.CLUSTER_LABEL]
    reconciler: Reconciler = memo["reconciler"]
    if reconciler.lease_changed(namespace, cluster, body):
        await reconciler.request(namespace, cluster)

