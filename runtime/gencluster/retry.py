"""The retry policy of `Client` and `AsyncClient`: every decision, no sockets, no clocks.

The two clients differ only in how they wait and call (blocking or asyncio); what to do after
an attempt is decided here, once, from data: the attempt's status code, the redirect a standby
put in the trailing metadata, and the time the caller passes in. So the policy is tested
without a server, and a change to it cannot make the two clients drift apart.

A call is a sequence of steps:

- `Attempt(address, timeout)`: call `address`, giving up on this attempt after `timeout`;
- `Wait(seconds)`: back off, then ask `CallRetries.next_attempt` again;
- `GiveUp(error)`: raise `error` (the attempt's own `grpc.RpcError` when it is not worth
  retrying, `RetryWindowExpired` when the cluster refused a retry older than it remembers,
  `RequestIdReusedError` when the request id is recorded for a different request,
  `ClusterUnavailable` when the call's deadline passed).

`Route` is shared by all calls of a client, so that once a standby named the active every
later call goes there first instead of bouncing off the same standby again.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gencluster.wellknown import (
    ACTIVE_ADDRESS_METADATA,
    REFUSAL_METADATA,
    REFUSAL_REQUEST_ID_REUSED,
)

RETRY_BACKOFF_START = 0.02
RETRY_BACKOFF_MAX = 0.25
ATTEMPT_TIMEOUT = 2.0
"""The longest one attempt of a call may take before the next address is tried (with the same
request id, so it is still applied once: a retry that reaches the active while the first
attempt's entry waits for acknowledgements waits for that same entry)."""
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
"""Retried with the same request id (so applied once). CANCELLED is in because this library
never cancels a call it will not retry, while a gRPC server that shuts down answers CANCELLED
for calls it had not handed to a handler yet (grpc/grpc#41785): a graceful handover must not
surface that to the caller."""
RESUBSCRIBE_DELAY = RETRY_BACKOFF_MAX / 5
"""The pause before reopening a broken event stream without a redirect: long enough not to
spin on a replica that is going away, short enough to be invisible next to a failover."""


class ClusterUnavailable(Exception):
    """No replica answered as active before the deadline; `last_error` is the last failure."""

    def __init__(self, message: str, last_error: BaseException | None) -> None:
        super().__init__(message)
        self.last_error = last_error


class RetryWindowExpired(grpc.RpcError):
    """The cluster refused the request: its request id is older than the reply table
    remembers (the deduplication window, or less under heavy traffic), so the cluster cannot
    tell whether an earlier attempt was applied, and it did not apply this one. Not retried:
    the same request id would be refused again, and a new one might apply the request twice.
    Check the state (a read), then send the request again, with a new request id, if it is
    still needed. A `grpc.RpcError` with code FAILED_PRECONDITION, so handlers of gRPC
    errors see it too."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self._details = _details(error)
        super().__init__(self._details)

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.FAILED_PRECONDITION

    def details(self) -> str:
        return self._details


class RequestIdReusedError(grpc.RpcError):
    """The cluster refused the request: its request id is recorded for a different request
    (another method or payload), applied earlier. Nothing changed; not retried (it would be
    refused again). A request id names one request: send a new request with a new id. A
    `grpc.RpcError` with code FAILED_PRECONDITION."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self._details = _details(error)
        super().__init__(self._details)

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.FAILED_PRECONDITION

    def details(self) -> str:
        return self._details


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt tells the policy: its status code and the active it was sent to
    (`active_address`, "" when the server named none)."""

    error: BaseException
    code: grpc.StatusCode | None
    active_address: str = ""
    refusal: str = ""
    """The `gencluster-refusal` trailing metadata of a FAILED_PRECONDITION ("" if none)."""

    @classmethod
    def of(cls, error: grpc.RpcError) -> Failure:
        """Read a gRPC error once (both the blocking and the asyncio errors have these)."""
        return cls(error, _code(error), _trailing(error, ACTIVE_ADDRESS_METADATA),
                   _trailing(error, REFUSAL_METADATA))


@dataclass(frozen=True, slots=True)
class Attempt:
    """Call `address` now, with at most `timeout` seconds for this attempt."""

    address: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep `seconds`, then ask for the next attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Raise `error`: the call failed for good."""

    error: BaseException


class Route:
    """Where the next attempt goes: the active a standby named, else the addresses in turn."""

    def __init__(self, addresses: str) -> None:
        self.addresses = [part.strip() for part in addresses.split(",") if part.strip()]
        if not self.addresses:
            raise ValueError("Client needs at least one host:port address")
        self._index = 0
        self.redirect: str | None = None

    def current(self) -> str:
        return self.redirect or self.addresses[self._index % len(self.addresses)]

    def failed(self, active_address: str) -> bool:
        """Record a retryable failure of `current()`; True when the server named another
        active (go there at once). A redirect that fails too is dropped, so a stale one
        (the named active died as well) costs one attempt, not the call."""
        if active_address and active_address != self.current():
            self.redirect = active_address
            return True
        if self.redirect:
            self.redirect = None
        else:
            self._index += 1
        return False


class CallRetries:
    """The decisions of one call: its deadline, its back-off, its last error."""

    __slots__ = ("_attempt_capped", "_backoff", "_deadline", "_last_error", "_route",
                 "attempt_timeout", "backoff_max", "timeout")

    def __init__(
        self,
        route: Route,
        *,
        timeout: float,
        now: float,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        backoff_start: float = RETRY_BACKOFF_START,
        backoff_max: float = RETRY_BACKOFF_MAX,
    ) -> None:
        self._route = route
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.backoff_max = backoff_max
        self._deadline = now + timeout
        self._backoff = backoff_start
        self._last_error: BaseException | None = None
        self._attempt_capped = False

    def next_attempt(self, now: float) -> Attempt | GiveUp:
        """The next attempt, or `ClusterUnavailable` once the call's time is up."""
        remaining = self._deadline - now
        if remaining <= 0:
            return GiveUp(ClusterUnavailable(
                f"no active answered within {self.timeout}s ({self._last_error})",
                self._last_error,
            ))
        # Whether this attempt ends before the call does: then its DEADLINE_EXCEEDED means
        # "this replica did not answer" (try another), not "the caller's time is up".
        self._attempt_capped = self.attempt_timeout < remaining
        return Attempt(self._route.current(), min(remaining, self.attempt_timeout))

    def after_failure(self, failure: Failure, now: float) -> Attempt | Wait | GiveUp:
        """After the attempt from `next_attempt` failed: retry (at once when redirected, else
        after a back-off that doubles up to `backoff_max`), or give up with its error."""
        if failure.code is grpc.StatusCode.FAILED_PRECONDITION:
            if failure.refusal == REFUSAL_REQUEST_ID_REUSED:
                return GiveUp(RequestIdReusedError(failure.error))
            return GiveUp(RetryWindowExpired(failure.error))
        if not self._retryable(failure.code):
            return GiveUp(failure.error)
        self._last_error = failure.error
        if self._route.failed(failure.active_address):
            return self.next_attempt(now)
        delay = min(self._backoff, max(0.0, self._deadline - now))
        self._backoff = min(self._backoff * 2, self.backoff_max)
        return Wait(delay)

    def _retryable(self, code: grpc.StatusCode | None) -> bool:
        return code in RETRYABLE or (
            code is grpc.StatusCode.DEADLINE_EXCEEDED and self._attempt_capped
        )


def after_stream_break(route: Route, failure: Failure) -> Wait | GiveUp:
    """An open event stream ended with `failure`: resubscribe (after `Wait`, from the last
    event received) or give up. A stream has no deadline of its own, so the reopening is a
    fresh call with its own."""
    if failure.code not in RETRYABLE:
        return GiveUp(failure.error)
    if route.failed(failure.active_address):
        return Wait(0.0)
    return Wait(RESUBSCRIBE_DELAY)


def _trailing(error: grpc.RpcError, key: str) -> str:
    try:
        metadata = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:
        return ""
    for item_key, value in metadata:
        if item_key == key:
            return value if isinstance(value, str) else value.decode()
    return ""


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    try:
        return error.code()  # type: ignore[attr-defined]
    except Exception:
        return None


def _details(error: BaseException) -> str:
    try:
        details = error.details()  # type: ignore[attr-defined]
    except Exception:
        return str(error)
    return details if isinstance(details, str) else str(error)
