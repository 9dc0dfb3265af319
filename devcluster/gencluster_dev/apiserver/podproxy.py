"""`pods/proxy`: the API server forwards an HTTP request to a pod, as kube-apiserver does.

    GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS
        /api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]

is sent to `SCHEME://podIP:PORT/PATH` (scheme `http` or `https`; port 80 when left out, as
kube-apiserver does for pods) with the query string, the body and the request headers except
the caller's credentials (`Authorization`, which the API server consumed) and hop-by-hop
headers; the pod's status, headers and body are streamed back. Who may do this is the RBAC
question `create`/`get`/... on the `pods/proxy` subresource (the one authorizer seam is
`ApiServer.authorize`). A pod without an IP or that does not answer is a 503 Status whose
message starts `error trying to reach service:`, kube-apiserver's words. `https` targets are
not verified (kube-apiserver does not verify pod certificates either).

The parsing is pure (`parse_target`, `forwarded_headers`); `forward` is the thin shell.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gencluster_dev.machinery.errors import ApiError, bad_request

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
"""Headers that describe one connection, not the request, so they are never forwarded (RFC
9110 7.6.1), plus Host and Content-Length, which the forwarding client sets itself."""
STRIPPED_REQUEST_HEADERS = HOP_BY_HOP | {"authorization"}
"""The caller's bearer token authenticated it to the API server; the pod never sees it."""
CONNECT_TIMEOUT_SECONDS = 10.0
SCHEMES = ("http", "https")


@dataclass(frozen=True)
class ProxyTarget:
    """Which pod, port and scheme a `pods/.../proxy` path names."""

    scheme: str
    name: str
    port: int


def parse_target(segment: str) -> ProxyTarget:
    """`NAME`, `NAME:PORT`, `SCHEME:NAME:PORT` or `SCHEME:NAME:` (kube-apiserver's
    `net.SplitSchemeNamePort`); ApiError 400 for anything else."""
    parts = segment.split(":")
    scheme, port_text = "http", ""
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        name, port_text = parts
    elif len(parts) == 3:
        scheme, name, port_text = parts
    else:
        raise bad_request(f"invalid request {segment!r}: too many colons")
    if scheme not in SCHEMES or not name:
        raise bad_request(f"invalid request {segment!r}: want [http|https:]NAME[:PORT]")
    if not port_text:
        return ProxyTarget(scheme, name, 80)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad_request(f"invalid port {port_text!r} in {segment!r}: pod proxies take a "
                          "port number")
    return ProxyTarget(scheme, name, int(port_text))


def proxied_path(raw_path: str) -> str:
    """The path the pod receives: what follows `/proxy` in the raw (still percent-encoded)
    `/api/v1/namespaces/NS/pods/SEGMENT/proxy[/PATH]`, `/` when nothing does. Cut by position,
    never by searching for `/proxy`, which a pod or namespace name may contain."""
    parts = raw_path.split("/")
    if len(parts) < 8 or parts[1:4] != ["api", "v1", "namespaces"] or parts[5] != "pods" \
            or parts[7] != "proxy":
        raise bad_request(f"not a pods/proxy path: {raw_path!r}")
    return "/" + "/".join(parts[8:])


def forwarded_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers the pod receives (order and repeats kept)."""
    return [(k, v) for k, v in headers if k.lower() not in STRIPPED_REQUEST_HEADERS]


def returned_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pod's response headers the caller receives (repeats kept)."""
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def unreachable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", f"error trying to reach service: {message}")


def target_url(target: ProxyTarget, pod_ip: str, raw_path: str, query_string: str) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    path = raw_path if raw_path.startswith("/") else "/" + raw_path
    return f"{target.scheme}://{host}:{target.port}{path}" + (
        f"?{query_string}" if query_string else "")


async def forward(request: web.Request, url: str) -> web.StreamResponse:
    """Send `request` to `url` and stream the answer back to the caller."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS)
    # Streamed as it arrives, never buffered: kube-apiserver puts no size limit on a proxied
    # body (a restore through pods/proxy may be larger than any API object).
    body = request.content.iter_chunked(64 * 1024) if request.can_read_body else None
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        try:
            upstream = await session.request(
                request.method, url, headers=forwarded_headers(request.headers.items()),
                data=body, ssl=insecure if url.startswith("https:") else True,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise unreachable(f"{type(error).__name__}: {error}" if str(error)
                              else type(error).__name__) from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                          headers=CIMultiDict(
                                              returned_headers(upstream.headers.items())))
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError):
                pass  # the pod or the caller went away mid-body: end what was sent
            await response.write_eof()
            return response
