"""The clients' retry policy, driven by hand: no sockets, no clocks, no sleeping."""

from __future__ import annotations

import grpc
import pytest
from gencluster.retry import (
    RESUBSCRIBE_DELAY,
    RETRY_BACKOFF_MAX,
    RETRY_BACKOFF_START,
    Attempt,
    CallRetries,
    ClusterUnavailable,
    Failure,
    GiveUp,
    RequestIdReusedError,
    RetryWindowExpired,
    Route,
    Wait,
    after_stream_break,
)
from gencluster.wellknown import (
    ACTIVE_ADDRESS_METADATA,
    REFUSAL_METADATA,
    REFUSAL_REQUEST_ID_REUSED,
)

pytestmark = pytest.mark.unit

A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"


class FakeRpcError(grpc.RpcError):
    """The two accessors the policy reads, as grpc's errors have them."""

    def __init__(self, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code.name)
        self._code = code
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


def failure(code: grpc.StatusCode, active_address: str = "") -> Failure:
    return Failure(FakeRpcError(code), code, active_address)


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def retries(route: Route, *, timeout: float = 30.0, attempt_timeout: float = 2.0,
            now: float = 100.0) -> CallRetries:
    return CallRetries(route, timeout=timeout, now=now, attempt_timeout=attempt_timeout)


def test_failure_reads_the_code_and_the_redirect_of_a_grpc_error() -> None:
    error = FakeRpcError(UNAVAILABLE, (("gencluster-epoch", "4"), (ACTIVE_ADDRESS_METADATA, B)))
    assert Failure.of(error) == Failure(error, UNAVAILABLE, B)
    assert Failure.of(FakeRpcError(UNAVAILABLE)).active_address == ""

    class Opaque(grpc.RpcError):
        """An RpcError without code() or trailing_metadata() (a channel-level failure)."""

    opaque = Opaque()
    assert Failure.of(opaque) == Failure(opaque, None, "", "")


def test_a_route_needs_an_address_and_ignores_blanks() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Route(" , ")
    assert Route(f" {A} ,, {B} ").addresses == [A, B]


def test_the_first_attempt_goes_to_the_first_address_with_the_attempt_timeout() -> None:
    call = retries(Route(f"{A},{B}"), timeout=30, attempt_timeout=2)
    assert call.next_attempt(100.0) == Attempt(A, 2.0)


def test_the_attempt_timeout_never_outlasts_the_call() -> None:
    call = retries(Route(A), timeout=1.5, attempt_timeout=2)
    assert call.next_attempt(100.0) == Attempt(A, 1.5)
    assert call.next_attempt(101.0) == Attempt(A, 0.5)


def test_without_a_redirect_the_next_address_is_tried_after_a_growing_capped_backoff() -> None:
    route = Route(f"{A},{B},{C}")
    call = retries(route)
    waits, addresses = [], []
    for _ in range(8):
        step = call.next_attempt(100.0)
        assert isinstance(step, Attempt)
        addresses.append(step.address)
        after = call.after_failure(failure(UNAVAILABLE), 100.0)
        assert isinstance(after, Wait)
        waits.append(after.seconds)
    assert addresses == [A, B, C, A, B, C, A, B]
    assert waits[:5] == [RETRY_BACKOFF_START * 2**n for n in range(4)] + [RETRY_BACKOFF_MAX]
    assert waits[0] == RETRY_BACKOFF_START
    assert max(waits) == RETRY_BACKOFF_MAX == waits[-1]


def test_a_redirect_is_followed_at_once_and_remembered_by_later_calls() -> None:
    route = Route(f"{A},{B}")
    call = retries(route)
    assert call.next_attempt(100.0) == Attempt(A, 2.0)
    assert call.after_failure(failure(UNAVAILABLE, C), 100.1) == Attempt(C, 2.0)
    # The next call of the same client starts at the active the standby named.
    assert retries(route).next_attempt(100.2) == Attempt(C, 2.0)


def test_a_redirect_does_not_grow_the_backoff() -> None:
    call = retries(Route(f"{A},{B}"))
    call.next_attempt(100.0)
    call.after_failure(failure(UNAVAILABLE, B), 100.0)
    assert call.after_failure(failure(UNAVAILABLE), 100.0) == Wait(RETRY_BACKOFF_START)


def test_a_failing_redirect_is_dropped_and_the_rotation_resumes() -> None:
    route = Route(f"{A},{B}")
    call = retries(route)
    call.next_attempt(100.0)
    assert call.after_failure(failure(UNAVAILABLE, C), 100.0) == Attempt(C, 2.0)
    assert isinstance(call.after_failure(failure(UNAVAILABLE), 100.0), Wait)
    # Back to where the rotation was (the redirect was not the rotation's fault).
    assert call.next_attempt(100.1) == Attempt(A, 2.0)


def test_a_redirect_to_the_address_just_tried_is_not_followed_at_once() -> None:
    call = retries(Route(f"{A},{B}"))
    call.next_attempt(100.0)
    assert isinstance(call.after_failure(failure(UNAVAILABLE, A), 100.0), Wait)
    assert call.next_attempt(100.1) == Attempt(B, 2.0)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_retryable_codes_are_retried(code: grpc.StatusCode) -> None:
    call = retries(Route(A))
    call.next_attempt(100.0)
    assert isinstance(call.after_failure(failure(code), 100.0), Wait)


@pytest.mark.parametrize("code", [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.INTERNAL,
    None,
])
def test_other_codes_give_up_with_the_attempts_own_error(code: grpc.StatusCode | None) -> None:
    call = retries(Route(f"{A},{B}"))
    call.next_attempt(100.0)
    failed = Failure(FakeRpcError(grpc.StatusCode.UNKNOWN), code, B)
    assert call.after_failure(failed, 100.0) == GiveUp(failed.error)


def test_an_attempt_that_timed_out_before_the_call_did_is_retried_elsewhere() -> None:
    call = retries(Route(f"{A},{B}"), timeout=10, attempt_timeout=2)
    assert call.next_attempt(100.0) == Attempt(A, 2.0)
    assert isinstance(call.after_failure(failure(grpc.StatusCode.DEADLINE_EXCEEDED), 102.0),
                      Wait)
    assert call.next_attempt(102.02) == Attempt(B, 2.0)


def test_an_attempt_that_timed_out_with_the_call_gives_up_with_deadline_exceeded() -> None:
    call = retries(Route(f"{A},{B}"), timeout=10, attempt_timeout=2)
    call.next_attempt(100.0)
    call.after_failure(failure(UNAVAILABLE), 100.0)
    assert call.next_attempt(108.5) == Attempt(B, pytest.approx(1.5))
    timed_out = failure(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert call.after_failure(timed_out, 110.0) == GiveUp(timed_out.error)


def test_the_deadline_ends_the_call_with_cluster_unavailable_naming_the_last_error() -> None:
    call = retries(Route(A), timeout=1.0)
    call.next_attempt(100.0)
    last = failure(UNAVAILABLE)
    wait = call.after_failure(last, 100.99)
    assert wait == Wait(pytest.approx(0.01)), "the back-off never sleeps past the deadline"
    step = call.next_attempt(101.0)
    assert isinstance(step, GiveUp) and isinstance(step.error, ClusterUnavailable)
    assert step.error.last_error is last.error
    assert str(step.error) == "no active answered within 1.0s (UNAVAILABLE)"


def test_a_redirect_after_the_deadline_gives_up_instead_of_attempting() -> None:
    call = retries(Route(A), timeout=1.0)
    call.next_attempt(100.0)
    step = call.after_failure(failure(UNAVAILABLE, B), 101.5)
    assert isinstance(step, GiveUp) and isinstance(step.error, ClusterUnavailable)


def test_a_call_with_no_time_gives_up_before_any_attempt() -> None:
    step = retries(Route(A), timeout=0).next_attempt(100.0)
    assert isinstance(step, GiveUp) and isinstance(step.error, ClusterUnavailable)
    assert step.error.last_error is None


def test_a_broken_stream_is_reopened_at_the_named_active_at_once() -> None:
    route = Route(f"{A},{B}")
    assert after_stream_break(route, failure(UNAVAILABLE, C)) == Wait(0.0)
    assert route.current() == C


def test_a_broken_stream_without_a_redirect_moves_on_after_a_short_pause() -> None:
    route = Route(f"{A},{B}")
    assert after_stream_break(route, failure(grpc.StatusCode.CANCELLED)) == Wait(
        RESUBSCRIBE_DELAY
    )
    assert route.current() == B


def test_a_stream_ending_with_another_code_is_not_reopened() -> None:
    route = Route(f"{A},{B}")
    out_of_range = failure(grpc.StatusCode.OUT_OF_RANGE)
    assert after_stream_break(route, out_of_range) == GiveUp(out_of_range.error)
    assert route.current() == A


def test_a_reused_request_id_is_told_apart_from_an_expired_retry_and_not_retried() -> None:
    """Both are FAILED_PRECONDITION; the server's `gencluster-refusal` trailer says which."""
    reused = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION,
                          ((REFUSAL_METADATA, REFUSAL_REQUEST_ID_REUSED),))
    step = retries(Route(A)).after_failure(Failure.of(reused), 100.0)
    assert isinstance(step, GiveUp) and isinstance(step.error, RequestIdReusedError)
    assert step.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    expired = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION)
    step = retries(Route(A)).after_failure(Failure.of(expired), 100.0)
    assert isinstance(step, GiveUp) and isinstance(step.error, RetryWindowExpired)
