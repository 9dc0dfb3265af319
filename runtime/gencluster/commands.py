"""`gencluster call`, `cast`, `subscribe` and `status`: a ClusteredServer from a shell.

    gencluster call id-server '"next_value"'          # -> 1
    gencluster status id-server                       # every pod's Admin.Status, as JSON
    gencluster call --address 10.0.0.7:50051 '"current"'
    gencluster subscribe chat room:lobby              # one JSON line per event, until ^C

`subscribe` prints each event as it comes (`number`, `epoch`, `time`, `data`), resuming across
failovers and merges as the client library does; when the subscription moves to another
history (its side lost a merge) the event line carries `"renumbered": true` and a note on
stderr says from which number the survivor's numbering continues (docs/partitions.md).

Without `--address`, the cluster is found through the kubeconfig: its client Service `NAME`
(which selects the active pod) is reached at `status.loadBalancer.ingress[0]` when published
(the local control plane's Service proxy does; on a real cluster a LoadBalancer Service does),
else at its clusterIP (reachable only inside the cluster: use `--address` with a
`kubectl port-forward` then). gRPC cannot cross the API server's pods/proxy (HTTP/1.1), so a
call never goes through the API server (docs/tooling.md). `status` asks every pod of the
cluster (label `gencluster.io/cluster=NAME`) through the API server (`pods/NAME:PORT/proxy` to
the runtime's Admin bridge, `gencluster.admin_http`), so it works wherever kubectl works, with
the peer token read from the Secret `NAME-peer-token` (or `--token-file`); with `--address` it
dials those gRPC addresses instead. Output is JSON on stdout; errors go to stderr with exit
code 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from gencluster.client import Client, ClientTls, ClusterUnavailable, Event, RemoteError
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.replication import peer_metadata
from gencluster.tls_identity import client_server_name
from gencluster.wellknown import (
    ADMIN_HTTP_PATH,
    ADMIN_TOKEN_HEADER,
    CA_BUNDLE_KEY,
    CLUSTER_LABEL,
    GRPC_PORT_NAME,
    METRICS_PORT_NAME,
    PEER_TOKEN_KEY,
    ca_secret_name,
    peer_token_secret_name,
)

DEFAULT_PORT = 50051


class CommandError(Exception):
    """Something the user can fix; printed without a traceback."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gencluster")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("call", "send a call and print the reply as JSON"),
        ("cast", "send a cast (no reply)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("name", nargs="?", help="the ClusteredServer (or use --address)")
        command.add_argument("request", help="the request, as JSON")
        _common(command)
    subscribe = commands.add_parser(
        "subscribe", help="print a topic's events as JSON lines as they come (until ^C)"
    )
    subscribe.add_argument("name", nargs="?", help="the ClusteredServer (or use --address)")
    subscribe.add_argument("topic", help="the topic, e.g. room:lobby")
    subscribe.add_argument(
        "--from", dest="from_event", type=int, default=None,
        help="first event number (default: only new events)",
    )
    subscribe.add_argument(
        "--accept-gap", action="store_true",
        help="start at the oldest retained event if --from is no longer retained",
    )
    _common(subscribe)
    status = commands.add_parser("status", help="every replica's role, epoch and lag as JSON")
    status.add_argument("name", nargs="?", help="the ClusteredServer (or use --address)")
    status.add_argument("--token-file", help="a file holding the peer token")
    _common(status)
    return parser


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--address", help="HOST:PORT[,HOST:PORT...] instead of the Service")
    command.add_argument("--namespace", "-n", default=None, help="default: the kubeconfig's")
    command.add_argument("--kubeconfig", default=None)
    command.add_argument("--context", default=None, help="default: the kubeconfig's current")
    command.add_argument("--timeout", type=float, default=30.0)
    command.add_argument(
        "--ca-file", default=None,
        help="the cluster's trust bundle (PEM) for TLS; default: ca.crt of the Secret "
        "<NAME>-ca through the kubeconfig (none: plaintext)")
    command.add_argument("--server-name", default=None,
                         help="the name to verify on the pods' certificates; default: "
                         "<NAME>.<namespace>.svc")
    command.add_argument("--cert-file", default=None,
                         help="a client certificate (spec.clientAuth: MutualTLS)")
    command.add_argument("--key-file", default=None, help="its private key")

def kubernetes_api(kubeconfig: str | None, context: str | None = None) -> tuple[Any, str]:
    """An API client for the kubeconfig (or, without one, the pod's service account) and the
    namespace to default to: the chosen context's, as kubectl would use it.

    Shared with the kubectl plugin, so `gencluster status` and `kubectl gencluster status`
    resolve a cluster and its namespace the same way.
    """
    from kubernetes import client, config

    try:
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception as error:
        if kubeconfig or context:
            raise CommandError(f"cannot load kubeconfig: {error}") from None
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise CommandError(f"no kubeconfig and not in a pod: {error}") from None
        return client.ApiClient(), _in_cluster_namespace()
    if context:
        current = next((c for c in contexts or [] if c.get("name") == context), current)
    namespace = (current or {}).get("context", {}).get("namespace") or "default"
    return api, namespace


def _in_cluster_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def service_address(core: Any, name: str, namespace: str) -> str:
    """Where the client Service `name` can be reached from here."""
    try:
        service = core.read_namespaced_service(name, namespace)
    except Exception as error:
        raise CommandError(f"cannot read Service {namespace}/{name}: {error}") from None
    ports = service.spec.ports or []
    port = ports[0].port if ports else DEFAULT_PORT
    ingress = (service.status.load_balancer.ingress or []) if service.status.load_balancer else []
    host = (ingress[0].ip or ingress[0].hostname) if ingress else service.spec.cluster_ip
    if not host or host == "None":
        raise CommandError(f"Service {namespace}/{name} has no address; use --address")
    return f"{host}:{port}"


def cluster_tls(core: Any, name: str, namespace: str) -> ClientTls | None:
    """TLS for calling ClusteredServer `name`: its trust bundle from the `<name>-ca` Secret
    (through the kubeconfig's credentials: `get` on that Secret is all a caller needs), the
    client Service's DNS name verified. None when the cluster has no CA Secret
    (`spec.tls.enabled: false`)."""
    from kubernetes.client.rest import ApiException

    try:
        secret = core.read_namespaced_secret(ca_secret_name(name), namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise CommandError(
            f"cannot read Secret {namespace}/{ca_secret_name(name)} (the cluster's CA): "
            f"{error.status} {error.reason}; or pass --ca-file") from None
    bundle = base64.b64decode((secret.data or {}).get(CA_BUNDLE_KEY, ""))
    if not bundle:
        raise CommandError(f"Secret {namespace}/{ca_secret_name(name)} has no {CA_BUNDLE_KEY}")
    return ClientTls(bundle, client_server_name(name, namespace))


def peer_token(core: Any, name: str, namespace: str, token_file: str | None = None) -> str:
    """The token every Admin call must carry: from `token_file`, else the cluster's Secret."""
    if token_file:
        return Path(token_file).read_text().strip()
    secret_name = peer_token_secret_name(name)
    try:
        secret = core.read_namespaced_secret(secret_name, namespace)
    except Exception as error:
        raise CommandError(
            f"cannot read Secret {namespace}/{secret_name} for the peer token ({error}); "
            "use --token-file"
        ) from None
    return base64.b64decode((secret.data or {}).get(PEER_TOKEN_KEY, "")).decode().strip()


def status_json(reply: pb.StatusReply) -> dict[str, Any]:
    failsafe = (
        {"failsafeSeconds": reply.failsafe_seconds} if reply.HasField("failsafe_seconds")
        else {}
    )
    degraded = (
        {"syncDegradedSeconds": reply.sync_degraded_seconds,
         "unsyncedEntries": reply.unsynced_entries}
        if reply.HasField("sync_degraded_seconds") else {}
    )
    return {
        "identity": reply.identity,
        "role": pb.Role.Name(reply.role).removeprefix("ROLE_").lower(),
        "epoch": reply.epoch,
        "appliedSeq": reply.applied_seq,
        "appliedEpoch": reply.applied_epoch,
        "stateLost": reply.state_lost,
        # Serving on promises through a control-plane outage (docs/partitions.md, Failsafe).
        **failsafe,
        "failsafeEpisodes": reply.failsafe_episodes,
        "lastFailsafeSeconds": reply.last_failsafe_seconds,
        # Answering without standbys (Available policy, docs/partitions.md).
        **degraded,
        "server": reply.server,
        "serverVersion": reply.server_version,
        "codec": reply.codec,
        "active": reply.active,
        "activeAddress": reply.active_address,
        "standbys": [
            {
                "identity": standby.identity,
                "address": standby.address,
                "ackedSeq": standby.acked_seq,
                "lag": standby.lag,
                "inSync": standby.in_sync,
            }
            for standby in reply.standbys
        ],
    }


def replica_status(address: str, token: str, timeout: float) -> dict[str, Any]:
    """One replica's Admin.Status as JSON; a replica that does not answer yields `error`
    instead of raising, so one dead pod never hides the others."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = pb_grpc.AdminStub(channel).Status(
                pb.StatusRequest(), metadata=peer_metadata(token), timeout=timeout
            )
        except grpc.RpcError as error:
            return {"address": address, "error": f"{error.code().name}: {error.details()}"}
    return {"address": address, **status_json(reply)}


class AdminCallFailed(Exception):
    """An Admin call through the API server that did not succeed: `code` is the gRPC status
    name when the pod answered (UNAVAILABLE, UNAUTHENTICATED, ...), else the API server's
    HTTP status (the pod could not be reached, or RBAC refused `pods/proxy`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def admin_over_api(
    api: Any, namespace: str, pod: Any, method: str, request: Any, token: str, timeout: float,
    *, body: bytes | None = None,
) -> bytes:
    """Call `Admin.METHOD` on `pod` through the API server: `POST .../pods/NAME:PORT/proxy/
    admin/v1/METHOD` to the runtime's Admin bridge (`gencluster.admin_http`) on the pod's
    metrics port. Works wherever the kubeconfig works (no route to pod IPs needed); needs RBAC
    `create` on `pods/proxy` and the peer token. Returns the reply's bytes (a message, or
    length-prefixed frames for a streaming method); AdminCallFailed otherwise. `body` replaces
    the serialized `request` (the frames of a client-streaming method's messages)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    name = pod.metadata.name
    port = _named_port(pod, METRICS_PORT_NAME)
    if port is None:
        raise AdminCallFailed("NO_PORT", f"pod {name} declares no {METRICS_PORT_NAME!r} port")
    path = (f"/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy"
            f"{ADMIN_HTTP_PATH}/{method}")
    headers = {"Content-Type": "application/x-protobuf",
               "Accept": "application/x-protobuf, application/json", ADMIN_TOKEN_HEADER: token}
    query = [("timeout", f"{timeout:g}")]
    if body is None:
        body = request.SerializeToString()
    try:
        if hasattr(api, "param_serialize"):  # kubernetes >= 35 (openapi-generator 7)
            http_method, url, headers, _, _ = api.param_serialize(
                "POST", path, query_params=query, header_params=headers,
                auth_settings=["BearerToken"])
            response = api.call_api(http_method, url, header_params=headers, body=body,
                                    _request_timeout=timeout + 1.0)
            data = response.read()
            if not 200 <= response.status < 300:
                raise AdminCallFailed(*_proxy_error(response.status, data or b""))
            return bytes(data)
        response = api.call_api(
            path, "POST", query_params=query, header_params=headers, body=body,
            auth_settings=["BearerToken"], _preload_content=False,
            _return_http_data_only=True, _request_timeout=timeout + 1.0,
        )
        return bytes(response.data)
    except ApiException as error:
        raise AdminCallFailed(*_proxy_error(error.status, error.body or b"")) from None
    except HTTPError as error:
        raise AdminCallFailed("DEADLINE_EXCEEDED" if "timed out" in str(error).lower()
                              else "UNREACHABLE", str(error)) from None


def _proxy_error(status: int, body: bytes | str) -> tuple[str, str]:
    """(code, message) of a failed proxied call: the bridge's JSON, or the API server's Status."""
    try:
        document = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return f"HTTP_{status}", text.strip()[:300]
    if isinstance(document, dict) and document.get("kind") == "Status":
        return f"HTTP_{status}", str(document.get("message") or document.get("reason"))
    if isinstance(document, dict) and "code" in document:
        return str(document["code"]), str(document.get("message", ""))
    return f"HTTP_{status}", str(document)[:300]


def replica_status_over_api(
    api: Any, namespace: str, pod: Any, token: str, timeout: float
) -> dict[str, Any]:
    """One replica's Admin.Status through the API server, shaped as `replica_status` shapes it
    (`address` is the pod's gRPC address, for the tools that dial it); a replica that does not
    answer yields `error` instead of raising, so one dead pod never hides the others."""
    address = pod_address(pod) or ""
    try:
        body = admin_over_api(api, namespace, pod, "Status", pb.StatusRequest(), token, timeout)
    except AdminCallFailed as error:
        return {"address": address, "error": str(error)}
    return {"address": address, **status_json(pb.StatusReply.FromString(body))}


def run(arguments: argparse.Namespace) -> Any:
    core = namespace = None
    if arguments.address is None or arguments.command == "status":
        if arguments.address is None and not arguments.name:
            raise CommandError("give the ClusteredServer's NAME or --address")
        if arguments.address is None or (
            arguments.command == "status" and not arguments.token_file
        ):
            from kubernetes import client

            api, default_namespace = kubernetes_api(arguments.kubeconfig, arguments.context)
            core = client.CoreV1Api(api)
            namespace = arguments.namespace or default_namespace
    if arguments.command == "status":
        token = peer_token(core, arguments.name, namespace or "default", arguments.token_file)
        if arguments.address:
            addresses = arguments.address.split(",")
            return {"replicas": [replica_status(a, token, arguments.timeout)
                                 for a in addresses]}
        pods = [pod for pod in cluster_pods(core, arguments.name, namespace or "default")
                if pod.status and pod.status.pod_ip]
        return {"replicas": [
            {"pod": pod.metadata.name,
             **replica_status_over_api(core.api_client, namespace or "default", pod, token,
                                       arguments.timeout)}
            for pod in pods
        ]}
    address = arguments.address or service_address(core, arguments.name, namespace or "default")
    if arguments.command == "subscribe":
        return print_events(address, arguments)
    try:
        request = json.loads(arguments.request)
    except ValueError as error:
        raise CommandError(f"REQUEST is not valid JSON: {error}") from None
    tls: ClientTls | None = None
    if arguments.ca_file:
        server_name = arguments.server_name or (
            client_server_name(arguments.name, namespace or "default")
            if arguments.name and namespace else None)
        try:
            tls = ClientTls.from_files(arguments.ca_file, server_name, arguments.cert_file,
                                       arguments.key_file)
        except OSError as error:
            raise CommandError(f"--ca-file/--cert-file/--key-file: {error}") from None
    elif core is not None and arguments.name:
        tls = cluster_tls(core, arguments.name, namespace or "default")
    with Client(address, timeout=arguments.timeout, tls=tls) as client:
        if arguments.command == "call":
            return client.call(request)
        client.cast(request)
        return None


def event_line(event: Event) -> dict[str, Any]:
    """One printed event: what a person or a script watching a topic needs."""
    line = {"number": event.number, "epoch": event.epoch, "time": event.time,
            "data": event.data}
    if event.missed:
        line["missed"] = event.missed
    if event.renumbered:
        line["renumbered"] = True
    return line


def print_events(address: str, arguments: argparse.Namespace) -> None:
    """Follow a topic until interrupted: one JSON line per event on stdout, flushed at once."""
    if arguments.from_event is not None and arguments.from_event < 1:
        raise CommandError("--from must be 1 or more (event numbers start at 1)")
    with Client(address, timeout=arguments.timeout) as client:
        events = client.subscribe(
            arguments.topic, arguments.from_event, accept_gap=arguments.accept_gap
        )
        try:
            for event in events:
                if event.renumbered:
                    print(f"gencluster subscribe: numbering changed (this side's history was "
                          f"merged into epoch {event.epoch}'s); events continue from "
                          f"{event.number}", file=sys.stderr, flush=True)
                print(json.dumps(event_line(event)), flush=True)
        except KeyboardInterrupt:
            return


def cluster_pods(core: Any, name: str, namespace: str) -> list[Any]:
    """The pods of ClusteredServer `name` (by its cluster label), in name order."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"{CLUSTER_LABEL}={name}").items
    return sorted(pods, key=lambda pod: pod.metadata.name)


def pod_address(pod: Any) -> str | None:
    """`host:port` of a pod's gRPC port (IPv6 bracketed); None while it has no IP."""
    ip = pod.status.pod_ip if pod.status else None
    if not ip:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{_pod_port(pod)}"


def _pod_port(pod: Any) -> int:
    port = _named_port(pod, GRPC_PORT_NAME)
    return DEFAULT_PORT if port is None else port


def _named_port(pod: Any, name: str) -> int | None:
    for container in pod.spec.containers or []:
        for port in container.ports or []:
            if port.name == name:
                return int(port.container_port)
    return None


def main(argv: list[str]) -> int:
    arguments = parser().parse_args(argv)
    try:
        result = run(arguments)
    except (CommandError, ClusterUnavailable, OSError) as error:
        print(f"gencluster {arguments.command}: {error}", file=sys.stderr)
        return 1
    except RemoteError as error:
        print(json.dumps({"error": {"type": error.type, "message": error.message}}))
        return 1
    except grpc.RpcError as error:
        print(f"gencluster {arguments.command}: {error.code().name}: {error.details()}",
              file=sys.stderr)
        return 1
    if result is not None or arguments.command == "call":
        print(json.dumps(result, indent=2 if arguments.command == "status" else None))
    return 0
