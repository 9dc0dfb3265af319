"""Kubernetes API errors as `Status` objects.

Every failure the API server reports is an `ApiError` carrying exactly the `Status` a real
kube-apiserver would send (reason, code, message, details), because clients branch on them:
kubectl falls back from strategic merge patch on 415, client-go retries on 409 Conflict,
informers relist on 410 Expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ApiError(Exception):
    """A failed API request, rendered as a `meta/v1 Status`."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: Iterable[Mapping[str, str]] = (),
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = [dict(c) for c in causes]
        self.retry_after_seconds = retry_after_seconds

    def status(self) -> dict[str, Any]:
        """The `Status` body of this error, as kube-apiserver renders it: its fields in
        metav1.Status's order (kind, apiVersion, metadata, status, message, reason, details,
        code), empty details fields omitted."""
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = list(self.causes)
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if details:
            status["details"] = details
        status["code"] = self.code
        return status


def qualified_resource(plural: str, group: str) -> str:
    """`leases.coordination.k8s.io`, or just `pods` for the core group (as k8s prints it)."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified_resource(plural, group)} "{name}" not found',
        name=name,
        group=group or None,
        kind=plural,
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified_resource(plural, group)} "{name}" already exists',
        name=name,
        group=group or None,
        kind=plural,
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version and "
        "try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified_resource(plural, group)} "{name}": {why}',
        name=name,
        group=group or None,
        kind=plural,
    )


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(
        410, "Expired", f"too old resource version: {requested} ({oldest})"
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(
    kind: str, group: str, name: str, causes: list[tuple[str, str, str]]
) -> ApiError:
    """422 Invalid: `causes` are (reason, field, message-without-field)."""
    qualified_kind = f"{kind}.{group}" if group else kind
    rendered = [f"{field}: {message}" if field else message for _, field, message in causes]
    joined = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind} "{name}" is invalid: {joined}',
        name=name,
        group=group or None,
        kind=kind,
        causes=[
            {"reason": reason, "message": message, "field": field}
            for reason, field, message in causes
        ],
    )


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


def unsupported_media_type(accepted: Iterable[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


def resource_not_found_for_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")
