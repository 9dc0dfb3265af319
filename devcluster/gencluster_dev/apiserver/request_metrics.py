"""Requests the API server answered, counted per verb, resource and client, for `/metrics`.

kube-apiserver exports `apiserver_request_total{verb,resource,code}`; the local control plane
exports the same counter (Prometheus text format, same name) so a user can see what a
workload costs the control plane at rest: `bench/scale.py` reads it to count the API requests
per second of idle ClusteredServers. Two labels kube-apiserver does not have are added because
on this one-machine control plane they answer the question directly: `username` (the
authenticated user: the operator's and each pod's service account) and `client` (the product
token of the User-Agent: kubectl, kopf, the Kubernetes Python client, the dev controllers, which
all share the admin user). Pure: the server calls `count` and `render`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

METRIC = "apiserver_request_total"

MUTATING = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "PATCH"}


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def request_labels(method: str, path: str, query: Mapping[str, str]) -> tuple[str, str]:
    """(verb, resource) of a request as kube-apiserver names them: GET of a collection is
    LIST, with `watch` it is WATCH; DELETE of a collection is DELETECOLLECTION. The resource is
    `<resource>[/<subresource>]`; discovery and other non-resource paths are `""`."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        rest = []
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] if rest else ""
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    method = method.upper()
    if method == "GET":
        if _truthy(query.get("watch")):
            verb = "WATCH"
        else:
            verb = "GET" if named or not resource else "LIST"
    elif method == "DELETE":
        verb = "DELETE" if named else "DELETECOLLECTION"
    else:
        verb = MUTATING.get(method, method)
    return verb, resource


def client_name(user_agent: str | None) -> str:
    """The product token of a User-Agent (`kubectl/v1.31 (linux/amd64)` -> `kubectl`)."""
    if not user_agent:
        return ""
    return user_agent.split()[0].split("/")[0][:64]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestCounter:
    """Counts answered requests by (verb, resource, code, username, client)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str, str]] = Counter()

    def count(
        self, method: str, path: str, query: Mapping[str, str], code: int, username: str,
        user_agent: str | None,
    ) -> None:
        verb, resource = request_labels(method, path, query)
        self.counts[(verb, resource, str(code), username, client_name(user_agent))] += 1

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines = [f"# HELP {METRIC} Requests answered, by verb, resource, code, user and client.",
                 f"# TYPE {METRIC} counter"]
        for (verb, resource, code, username, client), value in sorted(self.counts.items()):
            labels = ",".join(
                f'{name}="{_escape(text)}"' for name, text in (
                    ("verb", verb), ("resource", resource), ("code", code),
                    ("username", username), ("client", client))
            )
            lines.append(f"{METRIC}{{{labels}}} {value}")
        return "\n".join(lines) + "\n"
