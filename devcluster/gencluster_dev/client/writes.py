"""A controller's writes, with the API errors a real controller expects and rides out.

A controller acts on a cache that is always a little behind: the object it deletes may be gone
already (404), have been replaced (409 on a uid precondition), the name it creates may exist
(409 AlreadyExists), or the namespace may be terminating (403 Forbidden: "unable to create new
content in namespace X because it is being terminated"). Kubernetes' controllers record these
and try again on the next pass; they neither crash nor log a traceback. These helpers return
None for such an answer (logged once, at INFO, in one line) and raise anything else.
"""

from __future__ import annotations

import logging
from typing import Any

from gencluster_dev.client.apiclient import ApiClient, ApiError, Informer, object_key

log = logging.getLogger(__name__)

EXPECTED_STATUSES = frozenset({403, 404, 409, 410})


def expected(error: ApiError) -> bool:
    """An answer that only says the cache was behind or the namespace is going away."""
    return error.status in EXPECTED_STATUSES


def _reason(error: ApiError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    return f"{error.status} {body.get('reason', '')}: {body.get('message', error)}"


async def create(api: ApiClient, path: str, body: dict[str, Any],
                 cache: Informer | None = None, *, who: str) -> dict[str, Any] | None:
    """POST `body`; the created object (also put in `cache` at once, so the next pass does not
    create it again before the watch delivers it: the controllers' "expectations"), or None."""
    try:
        created: dict[str, Any] = await api.create(path, body)
    except ApiError as error:
        if not expected(error):
            raise
        log.info("%s: not created (%s); retried on the next pass", who, _reason(error))
        return None
    if cache is not None:
        cache.cache[object_key(created)] = created
    return created


async def delete(api: ApiClient, path: str, obj: dict[str, Any],
                 cache: Informer | None = None, *, who: str,
                 propagation: str | None = None) -> None:
    """DELETE `obj` if it is still the same object (uid precondition); gone already is fine."""
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1",
                               "preconditions": {"uid": obj["metadata"].get("uid")}}
    if propagation is not None:
        options["propagationPolicy"] = propagation
    key = object_key(obj)
    try:
        reply = await api.delete(path, options)
    except ApiError as error:
        if not expected(error):
            raise
        if error.status in (404, 409) and cache is not None:
            cache.cache.pop(key, None)
        log.info("%s: not deleted (%s)", who, _reason(error))
        return
    if cache is None:
        return
    if isinstance(reply, dict) and reply.get("metadata", {}).get("deletionTimestamp"):
        cache.cache[key] = reply  # graceful: terminating, still there
    else:
        cache.cache.pop(key, None)


async def merge_patch(api: ApiClient, path: str, body: dict[str, Any],
                      cache: Informer | None = None, *, who: str) -> dict[str, Any] | None:
    """PATCH (merge) `body`; the result (cached at once), or None when the object is gone."""
    try:
        written: dict[str, Any] = await api.merge_patch(path, body)
    except ApiError as error:
        if not expected(error):
            raise
        log.info("%s: not updated (%s)", who, _reason(error))
        return None
    if cache is not None:
        cache.cache[object_key(written)] = written
    return written
