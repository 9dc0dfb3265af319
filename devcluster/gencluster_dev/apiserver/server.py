"""The REST surface: Kubernetes API paths on aiohttp, over `Operations`.

A thin shell: it authenticates, parses paths, query parameters and bodies, picks the verb and
renders answers (objects, lists, Tables, watch streams, Status errors). Every semantic rule
lives in `operations`, `store`, `gc` and the pure helper modules.

Choices where Kubernetes leaves room or where this server is simpler:
- One port speaks plain HTTP and TLS (self-signed, `ca_pem`): kubectl only sends bearer
  tokens over TLS, Python clients are happy with `http://`.
- A list always answers the current state (its `resourceVersion` parameter is accepted and
  ignored, as `resourceVersionMatch=NotOlderThan` would for any version already reached); a
  watch from a future resourceVersion waits until the counter passes it.
- Discovery is the legacy per-group documents (kubectl falls back from aggregated discovery);
  `/openapi/v2` is an empty protobuf document (see `discovery.openapi_v2_document`),
  `/openapi/v3` serves every group/version with the CRD schemas.
- Responses are JSON only; protobuf request bodies are understood for the kinds kubectl's
  imperative `create` commands send (see `protobuf`).

Hostile clients are bounded as kube-apiserver bounds them (docs/limits.md): bodies over 3 MiB
get 413; JSON and YAML are decoded by `machinery.decoding` (alias expansion, nesting, values
JSON cannot carry) on a worker thread, so a large YAML body does not stall the event loop; a
connection that has not sent complete request headers `header_timeout` seconds after it opened
or after its last response is closed (kube-apiserver's ReadHeaderTimeout; here the same timer
closes idle keep-alive connections); a body that has not arrived `body_timeout` seconds after
its headers is answered 408; at most `max_requests_inflight` read-only and
`max_mutating_requests_inflight` other requests are worked on at once, the rest answered 429
with `Retry-After` (`machinery.inflight`, kube-apiserver's max-in-flight filter).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gencluster_dev.apiserver import authorization, podproxy, streaming, watch
from gencluster_dev.apiserver.auth import Authenticator, Identity
from gencluster_dev.apiserver.gc import GarbageCollector
from gencluster_dev.apiserver.operations import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    DeleteOptions,
    Operations,
    parse_rfc3339,
)
from gencluster_dev.apiserver.persistence import Journal
from gencluster_dev.apiserver.request_metrics import RequestCounter
from gencluster_dev.machinery import decoding, discovery, inflight, protobuf
from gencluster_dev.machinery.defaults import (
    KUBERNETES_SERVICE,
    kubernetes_endpoints,
    kubernetes_service,
)
from gencluster_dev.machinery.errors import (
    ApiError,
    bad_request,
    method_not_allowed,
    resource_not_found_for_path,
    unauthorized,
    unsupported_media_type,
)
from gencluster_dev.machinery.request_info import RequestInfo, request_info
from gencluster_dev.machinery.resources import (
    CRD_KEY,
    PODS_KEY,
    SERVICEACCOUNTS_KEY,
    SERVICES_KEY,
    Registry,
    ResourceType,
)
from gencluster_dev.machinery.store import Store, StoreEvent, parse_resource_version
from gencluster_dev.machinery.tables import table_for

log = logging.getLogger(__name__)
UNAUTHENTICATED_PATHS = {"/version", "/healthz", "/readyz", "/livez"}
NAMESPACE_SUBRESOURCES = {"status", "finalize"}
JSON_CONTENT_TYPES = {"application/json", "application/yaml", ""}
PROTOBUF = "application/vnd.kubernetes.protobuf"
PATCH_CONTENT_TYPES = {MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH, APPLY_PATCH}
MAX_BODY_BYTES = 3 * 1024 * 1024  # etcd's default request limit, as in kube-apiserver
IDENTITY_KEY = web.RequestKey("identity", Identity)
ENDPOINTS_KEY = ("", "endpoints")
BODY_TIMEOUT_KEY = web.AppKey("body_timeout", float)
HEADER_TIMEOUT_SECONDS = 32.0  # kube-apiserver's ReadHeaderTimeout
BODY_TIMEOUT_SECONDS = 60.0  # kube-apiserver's default --request-timeout
_DECODERS = concurrent.futures.ThreadPoolExecutor(max_workers=2,
                                                  thread_name_prefix="apiserver-decode")
"""Bodies are decoded here, two at a time at most, off the event loop."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ApiServer:
    """A Kubernetes API server for one machine (see docs/devcluster.md)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        admin_token: str,
        service_network: str,
        pods_dir: Path,
        data_path: Path | None = None,
        watch_history: int = 10_000,
        bookmark_interval: float = 30.0,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
        max_requests_inflight: int = inflight.DEFAULT_MAX_REQUESTS_INFLIGHT,
        max_mutating_requests_inflight: int = inflight.DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
    ) -> None:
        self.host = host
        self.inflight = inflight.InflightLimits(max_requests_inflight,
                                                max_mutating_requests_inflight)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.port = port
        self.pods_dir = Path(pods_dir)
        #: how `kubectl exec` runs a command inside a container when pods are containers
        #: (the podman runtime); the plane sets it once it has its container engine
        self.container_exec: streaming.ContainerExec | None = None
        self.data_path = data_path
        self.bookmark_interval = bookmark_interval
        self.store = Store(watch_history)
        self.registry = Registry()
        self.authenticator = Authenticator(admin_token)
        self.operations = Operations(
            self.store, self.registry, self.authenticator,
            service_network=service_network, clock=_utcnow,
        )
        self.gc = GarbageCollector(self.operations)
        self.requests = RequestCounter()
        self.journal = Journal(data_path) if data_path is not None else None
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self.ca_pem = b""
        self.url = f"http://{host}:{port}"
        self.tls_url = f"https://{host}:{port}"

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Serve; returns once the socket accepts connections."""
        if self.journal is not None:
            self.journal.load(self.store, self.authenticator)
            for crd in self.store.list(CRD_KEY):
                self.operations.register_crd(crd)
            self.store.listeners.append(self._persist)
        self.operations.bootstrap()
        for key, obj in authorization.bootstrap_objects():
            if self.store.get(key, "", obj["metadata"]["name"]) is None:
                self.operations.create(self.registry.for_key(key), "", obj)  # type: ignore[arg-type]
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[self._errors_middleware])
        app.router.add_route("*", r"/{path:[\s\S]*}", self._dispatch)  # newlines too
        app[BODY_TIMEOUT_KEY] = self.body_timeout
        # aiohttp's keep-alive timer runs from the connection's start and from each response,
        # and closes the connection if no complete request headers arrived by then.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0, keepalive_timeout=self.header_timeout)
        await self._runner.setup()
        self._tls, self.ca_pem = await self._make_tls_context()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(256)
        sock.setblocking(False)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self.tls_url = f"https://{self.host}:{self.port}"
        self._ensure_kubernetes_service()
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop())
        self.gc.start()

    def _ensure_kubernetes_service(self) -> None:
        """`default/kubernetes` and its Endpoints, naming this server's address (what
        kube-apiserver's bootstrap controller keeps); kept across restarts with `data_path`."""
        services = self.registry.for_key(SERVICES_KEY)
        endpoints = self.registry.for_key(ENDPOINTS_KEY)
        assert services is not None and endpoints is not None
        if self.store.get(SERVICES_KEY, "default", KUBERNETES_SERVICE) is None:
            self.operations.create(services, "default", kubernetes_service(self.port))
        wanted = kubernetes_endpoints(self.host, self.port)
        current = self.store.get(ENDPOINTS_KEY, "default", KUBERNETES_SERVICE)
        if current is None:
            self.operations.create(endpoints, "default", wanted)
        elif current.get("subsets") != wanted["subsets"]:
            self.operations.update(endpoints, "default", KUBERNETES_SERVICE,
                                   {**current, "subsets": wanted["subsets"]})

    async def _make_tls_context(self) -> tuple[ssl.SSLContext, bytes]:
        """A self-signed certificate for this address (kubectl sends tokens only over TLS)."""
        self._tls_dir = tempfile.TemporaryDirectory(prefix="gencluster-apiserver-tls-")
        directory = Path(self._tls_dir.name)
        cert, key = directory / "tls.crt", directory / "tls.key"
        process = await asyncio.create_subprocess_exec(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
            "-subj", "/CN=gencluster-dev-apiserver",
            "-addext", f"subjectAltName=IP:{self.host},DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"openssl could not create the API server certificate: "
                               f"{stderr.decode(errors='replace')}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context, cert.read_bytes()

    async def _accept_loop(self) -> None:
        """Accept connections; each one speaks TLS or plain HTTP, told by its first byte."""
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            connection, _ = await loop.sock_accept(self._listener)
            task = loop.create_task(self._serve_connection(connection))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve_connection(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(connection.fileno(), on_readable)
        try:
            await asyncio.wait_for(readable, 30)
            first = connection.recv(1, socket.MSG_PEEK)
        except (TimeoutError, OSError):
            first = b""
        finally:
            loop.remove_reader(connection.fileno())
        if not first or self._runner is None or self._runner.server is None:
            connection.close()
            return
        tls = self._tls if first[0] == 0x16 else None  # 0x16: TLS handshake record
        try:
            await loop.connect_accepted_socket(self._runner.server, connection, ssl=tls,
                                               ssl_handshake_timeout=10 if tls else None)
        except (OSError, ssl.SSLError, TimeoutError):
            connection.close()

    def _persist(self, event: StoreEvent) -> None:
        assert self.journal is not None
        self.journal.record(event)
        if event.key == SERVICEACCOUNTS_KEY and event.type == "DELETED":
            self.journal.record_tokens(self.authenticator)

    async def stop(self) -> None:
        """Stop serving; open watches end at once."""
        self.store.close_all_watches()
        await self.gc.stop()
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._streams) + list(self._connections):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None
        if self.journal is not None:
            self.store.listeners.remove(self._persist)
            self.journal.close()
            self.journal = None

    # -- plumbing ----------------------------------------------------------------------
    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every answer is counted for `/metrics` once it is complete (a watch when it ends,
        as kube-apiserver counts it)."""
        response = await self._answer(request, handler)
        identity = request.get(IDENTITY_KEY)
        self.requests.count(request.method, request.path, request.query, response.status,
                            identity.username if identity is not None else "",
                            request.headers.get("User-Agent"))
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            self.operations.warnings = []  # those of the failed operation
            response = _status_response(error)
            if error.code in (408, 413):
                response.force_close()  # the rest of the body is not worth waiting for
            return response
        except web.HTTPRequestEntityTooLarge:
            return _status_response(ApiError(413, "RequestEntityTooLarge",
                                             "Request entity too large: limit is 3145728"))
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except RecursionError:
            return _status_response(bad_request("the object is nested too deeply"))
        except Exception as error:  # a bug: still answer with a Status, never hang
            log.exception("internal error serving %s %s", request.method, request.path)
            return _status_response(ApiError(500, "InternalError",
                                             f"Internal error occurred: {error!r}"))

    def _identity(self, request: web.Request) -> Identity:
        identity = self.authenticator.authenticate(
            request.headers.get("Authorization"), _utcnow(),
            self.operations.service_account_uid,
        )
        if identity is None:
            raise unauthorized()
        return authorization.impersonate(identity, request.headers,
                                         request.headers.getall("Impersonate-Group", []),
                                         self.store)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in UNAUTHENTICATED_PATHS:
            if path == "/version":
                return _json(discovery.version_info())
            return web.Response(text="ok", content_type="text/plain")
        identity = self._identity(request)
        info = request_info(request.method, request.path, request.query)
        pool = inflight.pool_of(info, identity.groups)
        if not self.inflight.enter(pool):
            return web.Response(status=429, text=inflight.TOO_MANY_REQUESTS,
                                content_type="text/plain", charset="utf-8",
                                headers={"Retry-After": inflight.RETRY_AFTER_SECONDS,
                                         "X-Content-Type-Options": "nosniff"})
        try:
            return await self._serve(request, identity, info, path)
        finally:
            self.inflight.leave(pool)

    async def _serve(self, request: web.Request, identity: Identity, info: RequestInfo,
                     path: str) -> web.StreamResponse:
        self.authorize(request, identity, info)
        if path == "/metrics":
            if request.method != "GET":
                raise method_not_allowed()
            return web.Response(text=self.requests.render(), content_type="text/plain")
        parts = [p for p in path.split("/") if p]
        is_discovery = len(parts) <= (2 if parts[:1] == ["api"] else 3)
        if is_discovery and request.method != "GET":
            raise method_not_allowed()
        if not parts:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics",
                                    "/openapi/v3", "/readyz", "/version"]})
        if parts[0] == "openapi":
            return self._openapi(parts[1:])
        aggregated = discovery.wants_aggregated(request.headers.get("Accept", ""))
        if parts[0] == "api":
            if len(parts) == 1:
                if aggregated:
                    return _json(discovery.aggregated_discovery(self.registry, legacy=True),
                                 content_type=discovery.AGGREGATED_CONTENT_TYPE)
                return _json(discovery.api_versions(f"{self.host}:{self.port}"))
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                if aggregated:
                    return _json(discovery.aggregated_discovery(self.registry, legacy=False),
                                 content_type=discovery.AGGREGATED_CONTENT_TYPE)
                return _json(discovery.api_group_list(self.registry))
            if len(parts) == 2:
                if not self.registry.versions_of(parts[1]):
                    raise resource_not_found_for_path()
                return _json(discovery.api_group(self.registry, parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise resource_not_found_for_path()
        if not rest:
            document = discovery.api_resource_list(self.registry, group, version)
            if document is None:
                raise resource_not_found_for_path()
            return _json(document)
        return await self._resource_request(request, group, version, rest)

    def authorize(self, request: web.Request, identity: Identity, info: RequestInfo) -> None:
        """RBAC, as kube-apiserver enforces it (`authorization`) on the attributes the
        in-flight filter read too; the identity is kept for the escalation check of RBAC
        writes and the access reviews."""
        request[IDENTITY_KEY] = identity
        authorization.CURRENT.set(identity)
        authorization.check(identity, info, self.store)

    def _openapi(self, parts: list[str]) -> web.Response:
        if parts == ["v2"]:
            return web.Response(
                body=discovery.openapi_v2_document(),
                content_type=discovery.OPENAPI_V2_CONTENT_TYPE,
            )
        if parts[:1] != ["v3"]:
            raise resource_not_found_for_path()
        if len(parts) == 1:
            documents = {}
            for group, version in discovery.served_group_versions(self.registry):
                document = discovery.openapi_v3_document(self.registry, group, version)
                documents[discovery.openapi_path(group, version)] = hashlib.sha512(
                    json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()
            return _json(discovery.openapi_v3_index(self.registry, documents))
        rest = parts[1:]
        if rest[0] == "api" and len(rest) == 2:
            group, version = "", rest[1]
        elif rest[0] == "apis" and len(rest) == 3:
            group, version = rest[1], rest[2]
        else:
            raise resource_not_found_for_path()
        document = discovery.openapi_v3_document(self.registry, group, version)
        if document is None:
            raise resource_not_found_for_path()
        return _json(document)

    # -- resources ---------------------------------------------------------------------
    async def _resource_request(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
            len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES
        ):
            namespace, rest = rest[1], rest[2:]
        plural, name, subresource = rest[0], None, None
        if len(rest) >= 2:
            name = rest[1]
        if len(rest) >= 3:
            subresource = rest[2]
        if (group, version, plural) == ("", "v1", "pods") and len(rest) >= 3 \
                and rest[2] == "proxy" and namespace is not None:
            return await self._pod_proxy(request, namespace, rest[1])
        if len(rest) > 3:
            raise resource_not_found_for_path()
        t = self.registry.lookup(group, version, plural)
        if t is None:
            raise resource_not_found_for_path()
        if namespace is not None and not t.namespaced:
            raise resource_not_found_for_path()
        if t.namespaced and name is not None and namespace is None:
            raise resource_not_found_for_path()
        if subresource is not None and subresource not in t.subresources and not (
            t.key == ("", "namespaces") and subresource == "finalize"
        ):
            raise resource_not_found_for_path()
        ns = namespace or ""
        method = request.method
        query = request.query
        if t.group == authorization.REVIEW_GROUP:
            if method != "POST" or name is not None:
                raise method_not_allowed()
            return _json(authorization.review(request[IDENTITY_KEY], t, ns,
                                              await _read_body(request), self.store), status=201)
        if name is None:
            if method == "GET":
                if _truthy(query.get("watch")):
                    return await self._watch(request, t, namespace)
                return self._list(request, t, namespace)
            if method == "POST":
                if t.namespaced and namespace is None:
                    raise method_not_allowed()
                body = await _read_body(request)
                created = self.operations.create(
                    t, ns, body, dry_run=_dry_run(query), strict=_strict(query))
                return self._object_response(request, t, created, 201)
            if method == "DELETE":
                return await self._delete_collection(request, t, namespace)
            raise method_not_allowed()
        if subresource is None:
            return await self._object_request(request, t, ns, name)
        return await self._subresource_request(request, t, ns, name, subresource)

    async def _object_request(
        self, request: web.Request, t: ResourceType, ns: str, name: str
    ) -> web.StreamResponse:
        method, query = request.method, request.query
        ops = self.operations
        if method == "GET":
            return self._object_response(request, t, ops.get(t, ns, name), 200)
        if method == "PUT":
            body = await _read_body(request)
            updated = ops.update(t, ns, name, body, dry_run=_dry_run(query),
                                 strict=_strict(query))
            return self._object_response(request, t, updated, 200)
        if method == "PATCH":
            content_type, body = await _read_patch(request)
            result, created = ops.patch(
                t, ns, name, content_type, body, dry_run=_dry_run(query),
                strict=_strict(query), field_manager=query.get("fieldManager"))
            return self._object_response(request, t, result, 201 if created else 200)
        if method == "DELETE":
            options = await _delete_options(request)
            outcome = ops.delete(t, ns, name, options)
            if outcome.deleted:
                self.gc.wake()
            return self._object_response(request, t, outcome.object,
                                         200 if outcome.deleted else 202)
        raise method_not_allowed()

    async def _subresource_request(
        self, request: web.Request, t: ResourceType, ns: str, name: str, sub: str
    ) -> web.StreamResponse:
        method, query = request.method, request.query
        ops = self.operations
        if sub in ("status", "finalize"):
            if method == "GET":
                return self._object_response(request, t, ops.get(t, ns, name), 200)
            if method == "PUT":
                body = await _read_body(request)
                updated = ops.update(t, ns, name, body, subresource=sub,
                                     dry_run=_dry_run(query))
                if sub == "finalize":
                    self.gc.wake()
                return self._object_response(request, t, updated, 200)
            if method == "PATCH":
                content_type, body = await _read_patch(request)
                result, _ = ops.patch(t, ns, name, content_type, body, subresource="status",
                                      dry_run=_dry_run(query))
                return self._object_response(request, t, result, 200)
            raise method_not_allowed()
        if sub == "scale":
            if method == "GET":
                return _json(ops.get_scale(t, ns, name))
            if method == "PUT":
                body = await _read_body(request)
                return _json(ops.update_scale(t, ns, name, body, dry_run=_dry_run(query)))
            if method == "PATCH":
                content_type, body = await _read_patch(request)
                return _json(ops.update_scale(t, ns, name, body, content_type=content_type,
                                              dry_run=_dry_run(query)))
            raise method_not_allowed()
        if sub == "binding":
            if method != "POST":
                raise method_not_allowed()
            return _json(ops.bind(ns, name, await _read_body(request)), status=201)
        if sub == "token":
            if method != "POST":
                raise method_not_allowed()
            issued = ops.request_token(ns, name, await _read_body(request))
            if self.journal is not None:
                self.journal.record_tokens(self.authenticator)
            return _json(issued, status=201)
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return await self._pod_log(request, ns, name)
        if sub in ("exec", "portforward"):
            return await self._pod_stream(request, ns, name, sub)
        raise resource_not_found_for_path()

    # -- rendering ---------------------------------------------------------------------
    def _object_response(
        self, request: web.Request, t: ResourceType, obj: dict[str, Any], status: int
    ) -> web.Response:
        warnings, self.operations.warnings = self.operations.warnings, []
        headers = _warning_headers(warnings)
        if _wants_table(request):
            return _json(self._table(request, t, [obj]), status=status, headers=headers)
        return _json(obj, status=status, headers=headers)

    def _table(
        self, request: web.Request, t: ResourceType, items: list[dict[str, Any]],
        list_meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        include = request.query.get("includeObject") or "Metadata"
        if include not in ("None", "Metadata", "Object"):
            raise bad_request(f'invalid includeObject value: "{include}"')
        table = table_for(
            items,
            list(t.printer_columns) if t.printer_columns is not None else None,
            kind=t.kind,
            include_object=include,
            resource_version=str(self.store.resource_version),
            now=_utcnow(),
        )
        accept = request.headers.get("Accept", "")
        if "v=v1;" not in accept.replace(" ", "") + ";" and "v1beta1" in accept:
            table["apiVersion"] = "meta.k8s.io/v1beta1"
        if list_meta:
            table.setdefault("metadata", {}).update(
                {k: v for k, v in list_meta.items() if k in ("continue", "remainingItemCount")})
        return table

    def _list(
        self, request: web.Request, t: ResourceType, namespace: str | None
    ) -> web.Response:
        query = request.query
        limit = _int_param(query, "limit")
        listing = self.operations.list(
            t, namespace,
            label_selector=query.get("labelSelector"),
            field_selector=query.get("fieldSelector"),
            limit=limit,
            continue_token=query.get("continue"),
        )
        if _wants_table(request):
            return _json(self._table(request, t, listing["items"], listing["metadata"]))
        return _json(listing)

    async def _watch(
        self, request: web.Request, t: ResourceType, namespace: str | None
    ) -> web.StreamResponse:
        query = request.query
        rv_text = query.get("resourceVersion")
        initial_events = _truthy(query.get("sendInitialEvents"))
        since = None if rv_text in (None, "", "0") or initial_events else \
            parse_resource_version(rv_text)
        timeout = _int_param(query, "timeoutSeconds")
        matches = self.operations.matcher(t, query.get("labelSelector"),
                                          query.get("fieldSelector"))
        as_table = _wants_table(request)

        def render(obj: dict[str, Any]) -> dict[str, Any]:
            return self._table(request, t, [obj]) if as_table else obj

        spec = watch.WatchRequest(
            resource=t, namespace=namespace, since=since,
            timeout_seconds=float(timeout) if timeout else None,
            bookmarks=_truthy(query.get("allowWatchBookmarks")),
            matches=matches, render=render, bookmark_interval=self.bookmark_interval,
            initial_events_end=initial_events and _truthy(query.get("allowWatchBookmarks")),
        )
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            return await watch.stream(request, self.store, spec,
                                      lambda o: self.operations.present(t, o))
        finally:
            if task is not None:
                self._streams.discard(task)

    async def _delete_collection(
        self, request: web.Request, t: ResourceType, namespace: str | None
    ) -> web.Response:
        if "deletecollection" not in t.verbs:
            raise method_not_allowed()
        options = await _delete_options(request)
        listing = self.operations.list(
            t, namespace, label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"))
        for item in listing["items"]:
            meta = item["metadata"]
            try:
                self.operations.delete(t, meta.get("namespace", ""), meta["name"], options)
            except ApiError as error:
                if error.code != 404:
                    raise
        self.gc.wake()
        return _json(listing)

    async def _pod_stream(self, request: web.Request, ns: str, name: str,
                          sub: str) -> web.StreamResponse:
        """exec and port-forward (apiserver/streaming.py); open sessions end with the server."""
        if request.method not in ("GET", "POST"):
            raise method_not_allowed()
        pods = self.registry.for_key(PODS_KEY)
        assert pods is not None
        pod = self.operations.get(pods, ns, name)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            if sub == "exec":
                return await streaming.serve_exec(request, pod, self.pods_dir,
                                                  self.container_exec)
            return await streaming.serve_port_forward(request, pod)
        finally:
            if task is not None:
                self._streams.discard(task)

    async def _pod_proxy(self, request: web.Request, ns: str, segment: str) -> web.StreamResponse:
        """`pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]` (apiserver.podproxy): the rest of the raw
        path after `/proxy` goes to the pod unchanged."""
        target = podproxy.parse_target(segment)
        pods = self.registry.for_key(PODS_KEY)
        assert pods is not None
        pod = self.operations.get(pods, ns, target.name)
        pod_ip = (pod.get("status") or {}).get("podIP")
        if not pod_ip:
            raise podproxy.unreachable(f"pod {target.name} has no IP yet")
        tail = podproxy.proxied_path(request.rel_url.raw_path)
        url = podproxy.target_url(target, pod_ip, tail, request.rel_url.raw_query_string)
        return await podproxy.forward(request, url)

    async def _pod_log(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pods = self.registry.for_key(PODS_KEY)
        assert pods is not None
        pod = self.operations.get(pods, ns, name)
        query = request.query
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(str(c) for c in containers)}]")
            container = containers[0]
        elif container not in containers:
            init = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
            if container not in init:
                raise bad_request(f"container {container} is not valid for pod {name}")
        uid = pod["metadata"]["uid"]
        log_dir = self.pods_dir / f"{ns}_{name}_{uid}" / "logs"
        previous = _truthy(query.get("previous"))
        path = log_dir / (f"{container}.previous.log" if previous else f"{container}.log")
        if not path.exists():
            if previous:
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found')
            if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
                raise bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: '
                    "ContainerCreating")
            content = b""
        else:
            content = path.read_bytes()
        timestamps = _truthy(query.get("timestamps"))
        tail = _int_param(query, "tailLines")
        limit = _int_param(query, "limitBytes")
        since_seconds = _int_param(query, "sinceSeconds")
        text = _select_log_lines(content, tail, since_seconds, timestamps)
        if limit is not None and limit >= 0:
            text = text[:limit]
        follow = _truthy(query.get("follow")) and not previous
        if not follow:
            return web.Response(body=text, content_type="text/plain")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = len(text)
        await response.write(text)
        offset = len(content)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            while True:
                current = self.store.get(PODS_KEY, ns, name)
                if current is None or current["metadata"]["uid"] != uid:
                    break
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away
                if path.exists():
                    size = path.stat().st_size
                    if size < offset:
                        offset = 0
                    if size > offset:
                        with path.open("rb") as f:
                            f.seek(offset)
                            chunk = f.read(size - offset)
                        offset = size
                        chunk = _select_log_lines(chunk, None, None, timestamps)
                        if limit is not None:
                            chunk = chunk[: max(0, limit - sent)]
                        if chunk:
                            sent += len(chunk)
                            await response.write(chunk)
                        if limit is not None and sent >= limit:
                            break
                await asyncio.sleep(0.2)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            if task is not None:
                self._streams.discard(task)
        return response


# -- request helpers (pure functions of the request) -------------------------------------

def _status_response(error: ApiError) -> web.Response:
    headers = {}
    if error.retry_after_seconds is not None:
        headers["Retry-After"] = str(error.retry_after_seconds)
    return _json(error.status(), status=error.code, headers=headers)


def _json(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | CIMultiDict[str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    response = web.Response(
        # kube-apiserver's JSON encoder ends every body with a newline; clients compare bodies
        body=json.dumps(body, separators=(",", ":")).encode() + b"\n",
        status=status,
        headers=headers,
    )
    response.headers["Content-Type"] = content_type
    return response


def _warning_headers(warnings: list[str]) -> CIMultiDict[str] | None:
    """One `Warning: 299 - "..."` header per warning, as kube-apiserver sends them."""
    if not warnings:
        return None
    return CIMultiDict(("Warning", f'299 - "{_header_text(w)}"') for w in warnings)


def _header_text(text: str) -> str:
    """`text` as the inside of an HTTP quoted-string: quotes and backslashes escaped, control
    and non-ASCII characters as \\uXXXX (a warning may quote a field name a client chose, and
    a raw newline there would be a header injection)."""
    return "".join(
        "\\" + c if c in '"\\' else c if " " <= c <= "~" else f"\\u{ord(c):04x}"
        for c in text)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'invalid value for {name}: "{value}"') from None


def _dry_run(query: Mapping[str, str]) -> bool:
    value = query.get("dryRun")
    if value in (None, ""):
        return False
    if value != "All":
        raise bad_request(f'Invalid value: "{value}": supported values: "All"')
    return True


def _strict(query: Mapping[str, str]) -> bool:
    return query.get("fieldValidation", "") == "Strict"


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "").replace(" ", "")


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def _read_raw(request: web.Request) -> bytes:
    timeout = request.app[BODY_TIMEOUT_KEY]
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "RequestEntityTooLarge",
                       "Request entity too large: limit is 3145728") from None
    except TimeoutError:
        raise ApiError(408, "Timeout", f"Timeout: the request body did not arrive within "
                       f"{timeout:g} seconds") from None


async def _read_body(request: web.Request) -> Any:
    media = _media_type(request)
    if media == PROTOBUF:
        try:
            return protobuf.decode_object(await _read_raw(request))
        except (protobuf.ProtobufError, UnicodeDecodeError) as error:
            raise unsupported_media_type(["application/json", "application/yaml"]) from error
    if media not in JSON_CONTENT_TYPES:
        raise unsupported_media_type(["application/json", "application/yaml",
                                      "application/vnd.kubernetes.protobuf"])
    raw = await _read_raw(request)
    if not raw.strip():
        raise bad_request("the body of the request was empty")
    return await _decode(raw, yaml_allowed=media == "application/yaml")


async def _decode(raw: bytes, *, yaml_allowed: bool) -> Any:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            _DECODERS, lambda: decoding.decode(raw, yaml_allowed=yaml_allowed))
    except decoding.DecodeError as error:
        raise bad_request(str(error)) from None


async def _read_patch(request: web.Request) -> tuple[str, Any]:
    media = _media_type(request)
    if media not in PATCH_CONTENT_TYPES:
        raise unsupported_media_type([JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_PATCH])
    raw = await _read_raw(request)
    if not raw.strip():
        raise bad_request("the body of the request was empty")
    return media, await _decode(raw, yaml_allowed=media == APPLY_PATCH)


async def _delete_options(request: web.Request) -> DeleteOptions:
    query = request.query
    body: Any = {}
    raw = await _read_raw(request)
    if raw.strip() and _media_type(request) == PROTOBUF:
        try:
            body = protobuf.decode_delete_options(raw)
        except (protobuf.ProtobufError, UnicodeDecodeError) as error:
            raise bad_request(f"error decoding DeleteOptions: {error}") from None
    elif raw.strip():
        try:
            body = decoding.decode_json(raw)
        except decoding.DecodeError as error:
            raise bad_request(f"error decoding DeleteOptions: {error}") from None
        if not isinstance(body, dict):
            raise bad_request("DeleteOptions must be an object")
    preconditions = body.get("preconditions") or {}
    grace = body.get("gracePeriodSeconds")
    if grace is None:
        grace = _int_param(query, "gracePeriodSeconds")
    if grace is not None and not isinstance(grace, int):
        raise bad_request(f"invalid gracePeriodSeconds: {grace!r}")
    dry_run = body.get("dryRun") == ["All"] or _dry_run(query)
    if body.get("orphanDependents") is True and not body.get("propagationPolicy"):
        body["propagationPolicy"] = "Orphan"
    if query.get("orphanDependents") == "true" and not query.get("propagationPolicy"):
        policy: str | None = "Orphan"
    else:
        policy = query.get("propagationPolicy")
    return DeleteOptions(
        propagation_policy=body.get("propagationPolicy") or policy,
        grace_period_seconds=grace,
        precondition_uid=preconditions.get("uid"),
        precondition_resource_version=preconditions.get("resourceVersion"),
        dry_run=dry_run,
    )


def _select_log_lines(
    content: bytes, tail: int | None, since_seconds: int | None, timestamps: bool
) -> bytes:
    """Apply tailLines / sinceSeconds / timestamps to kubelet log content.

    Log lines are written as `RFC3339NANO-timestamp SPACE text` when the kubelet timestamps
    them; without a parsable timestamp a line is kept as is (and never dropped by sinceSeconds).
    """
    lines = content.splitlines(keepends=True)
    if since_seconds is not None:
        cutoff = _utcnow() - timedelta(seconds=since_seconds)
        lines = [line for line in lines if _line_time(line) is None or (
            _line_time(line) or cutoff) >= cutoff]
    if tail is not None and tail >= 0:
        lines = lines[-tail:] if tail else []
    if not timestamps:
        lines = [_strip_timestamp(line) for line in lines]
    return b"".join(lines)


def _line_time(line: bytes) -> datetime | None:
    head = line.split(b" ", 1)[0].decode(errors="replace")
    if not head[:4].isdigit() or "T" not in head:
        return None
    try:
        return datetime.fromisoformat(head.replace("Z", "+00:00")[:26] + "+00:00"
                                      if "." in head else head.replace("Z", "+00:00"))
    except ValueError:
        try:
            return parse_rfc3339(head)
        except ValueError:
            return None


def _strip_timestamp(line: bytes) -> bytes:
    return line.split(b" ", 1)[1] if _line_time(line) is not None and b" " in line else line
