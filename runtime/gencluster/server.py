"""The user API: a `GenServer` class in the style of Erlang's gen_server, and its `Context`.

A user writes one subclass; every pod of the cluster instantiates it. The active pod runs each
request through it and replicates the *request* (with the time and random seed it ran with) to
the standbys, which run the same handler on the same input and so reach the same state. That
is why handlers must be deterministic functions of `(request, ctx, state)`: everything that
would differ between pods (the clock, randomness, the request id) comes from `ctx`.

Rules a handler must follow, and why:

- Read time and randomness only from `ctx` (`ctx.time`, `ctx.random`), never from `time` or
  `random` directly: a standby replaying the entry must compute the same new state.
- Keep the state codec-friendly (dicts with string keys, lists, str, int, float, bool, None, and
  bytes with msgpack): a standby that joins receives the state encoded in a snapshot, and must
  see the very same value the active holds. Tuples come back as lists, int keys as strings.
- Raise before mutating: a handler that raises leaves the state it *returned* untouched (the old
  state object is kept), but in-place changes made before the exception cannot be undone
  without copying the whole state on every call. Every replica makes the same in-place change,
  so replicas never diverge; set `copy_state_before_handling = True` on the class to get full
  isolation at the cost of a deep copy per call.
- Declare calls that change nothing by overriding `is_read_only(request)`: they are answered
  by the active without replication (their new state is discarded, and `ctx.publish` refuses).

A complete server (the article's id_server):

    class IdServer(GenServer):
        def init(self, args):
            return 0

        def handle_call(self, request, ctx, state):
            if request == "next_value":
                return state + 1, state + 1
            if request == "current":
                return state, state
            return super().handle_call(request, ctx, state)  # UnknownRequest

        def is_read_only(self, request):
            return request == "current"

        def merge(self, state_a, state_b, ctx):
            return max(state_a, state_b)

`load_server_class("module:Class")` imports the class named in a ClusteredServer spec, with
error messages written for the operator's Degraded condition.
"""

from __future__ import annotations

import importlib
import inspect
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

MERGE_SIDE_A = "a"
"""`ctx.publish(..., to=MERGE_SIDE_A)` in `merge`: news to the survivor's subscribers."""
MERGE_SIDE_B = "b"
"""`ctx.publish(..., to=MERGE_SIDE_B)` in `merge`: news to the merged side's subscribers."""


class UnknownRequest(Exception):
    """Raised by the default handlers: the server has no clause for this request."""


class MergeNotSupported(Exception):
    """Raised by the default `merge`: the server cannot reconcile two diverged states."""


class ReadOnlyViolation(Exception):
    """A read-only call tried to publish an event (which would need replication)."""


@dataclass(eq=False)
class Context:
    """What a handler may use that must be identical on every replica.

    `time` is the active's wall clock when it accepted the request (seconds since the Unix
    epoch), stored in the log entry; `seed` seeds `random`; `seq` is the log sequence number of
    the entry being applied (the applied sequence for a read-only call). Events passed to
    `publish` are delivered to subscribers only if the handler returns normally.
    """

    request_id: str
    time: float
    seed: int
    seq: int = 0
    read_only: bool = False
    merging: bool = False
    """True in the `ctx` given to `merge`: `publish` then takes an audience (`to=`)."""
    published: list[tuple[str, Any, str]] = field(default_factory=list, init=False)
    """(topic, event, audience) in publication order; audience "" means every subscriber."""
    _random: random.Random | None = field(default=None, init=False, repr=False)

    @property
    def random(self) -> random.Random:
        """A random source seeded from the log entry: the same draws on every replica."""
        if self._random is None:
            self._random = random.Random(self.seed)
        return self._random

    def publish(self, topic: str, event: Any, *, to: str | None = None) -> None:
        """Publish `event` to subscribers of `topic` once this handler succeeds.

        In `merge` only, `to` says whose news it is: `"a"` for the subscribers that followed
        the surviving active's history (`state_a`'s side), `"b"` for those that followed the
        merged side's (`state_b`'s); None for every subscriber. Each stream delivers only the
        events meant for it, so `merge` can publish each side's messages to the other side
        without anyone receiving one twice (docs/partitions.md)."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if self.read_only:
            raise ReadOnlyViolation(
                f"a read-only call cannot publish (topic {topic!r}); "
                "remove it from is_read_only or do not publish"
            )
        if to is not None and not self.merging:
            raise ValueError(
                f"publish(..., to={to!r}) is for merge only: a handler's events reach every "
                "subscriber"
            )
        if to is not None and to not in (MERGE_SIDE_A, MERGE_SIDE_B):
            raise ValueError(f"to must be {MERGE_SIDE_A!r} or {MERGE_SIDE_B!r}, got {to!r}")
        self.published.append((topic, event, to or ""))


class GenServer:
    """Base class of a clustered server; override the handlers your server needs.

    `version` identifies the state format: a pod running a newer version that receives a
    snapshot from an older one calls `code_change(old_version, state)` first (rolling upgrades).
    """

    version: ClassVar[int] = 1
    copy_state_before_handling: ClassVar[bool] = False
    verify_state: ClassVar[bool] = True
    """Check, on every replica, that each new state is made only of values the codec carries
    unchanged before it is kept (the determinism guard, docs/poison.md): a call whose state
    would not survive a snapshot fails instead. It costs a walk over at most 20,000 of the
    state's values per call (`MachineLimits.verify_state_max_nodes`); False skips it."""
    handler_budget_seconds: ClassVar[float] = 1.0
    """A handler that runs longer on the active is reported (log and
    `gencluster_runtime_slow_handlers_total`); it still completes (docs/poison.md)."""
    handler_hang_seconds: ClassVar[float | None] = 60.0
    """A handler still running after this long on the active is taken as hung: the process
    exits so that a standby takes over, and the request is quarantined on retry (None: never;
    docs/poison.md)."""

    def init(self, args: Any) -> Any:
        """Return the initial state from the ClusteredServer's `args`."""
        raise NotImplementedError(f"{type(self).__name__} must define init(args)")

    def handle_call(self, request: Any, ctx: Context, state: Any) -> tuple[Any, Any]:
        """Answer `request`: return `(reply, new_state)`."""
        raise UnknownRequest(f"{type(self).__name__} has no handler for call {request!r}")

    def handle_cast(self, msg: Any, ctx: Context, state: Any) -> Any:
        """Handle a message that needs no reply: return the new state."""
        raise UnknownRequest(f"{type(self).__name__} has no handler for cast {msg!r}")

    def merge(self, state_a: Any, state_b: Any, ctx: Context | None = None) -> Any:
        """Reconcile two states that diverged during a partition into one.

        `state_a` is the surviving active's state, `state_b` the demoted one's. Needed only with
        partitionPolicy `Available`.

        Declare a third parameter to receive a `ctx` (time, seeded random, request id, and
        `publish`); a `merge(self, a, b)` without it keeps working. Events published here
        follow the merged state: `ctx.publish(topic, event, to="a")` reaches only the
        subscribers that followed `state_a`'s side (news from `state_b`), `to="b"` only those
        that followed `state_b`'s (events for one side are numbered before the events for
        everyone of the same merge); a subscriber of the demoted side is moved to the survivor
        and continues with the `to="b"` events, its stream marked `renumbered`
        (docs/partitions.md, "Subscribers across a merge").
        """
        raise MergeNotSupported(f"{type(self).__name__} does not define merge(state_a, state_b)")

    def is_read_only(self, request: Any) -> bool:
        """True for calls that never change the state: they skip replication."""
        return False

    def terminate(self, reason: str, state: Any) -> None:
        """Called once when this replica stops serving (reason: "shutdown", "demoted", ...)."""

    def code_change(self, old_version: int, state: Any) -> Any:
        """Convert a state written by `old_version` of this class to the current format."""
        return state


class ServerLoadError(Exception):
    """The `server` of a ClusteredServer spec cannot be loaded; the message says why."""


class InvalidServerSpec(ServerLoadError):
    """The spec string is not of the form "module:Class"."""


class ModuleNotImportable(ServerLoadError):
    """The module is missing, or raised while being imported."""


class ServerClassMissing(ServerLoadError):
    """The module has no attribute of the given name."""


class NotAGenServer(ServerLoadError):
    """The attribute is not a usable server class."""


REQUIRED_METHODS = ("init", "handle_call", "handle_cast")


def load_server_class(spec: str) -> type[GenServer]:
    """Import the server class named by `spec` ("package.module:Class")."""
    module_name, _, attribute = spec.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip()
    if not module_name or not attribute or ":" in attribute:
        raise InvalidServerSpec(
            f"server {spec!r} is not of the form 'module:Class' (for example "
            "'gencluster_examples.id_server:IdServer')"
        )
    module = _import_module(module_name)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ServerClassMissing(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return _check_server_class(spec, target)


def merge_takes_ctx(server: GenServer) -> bool:
    """Whether the server's `merge` accepts a third (ctx) argument; a class written before
    merge got a ctx, `merge(self, a, b)`, is called without one."""
    try:
        signature = inspect.signature(server.merge)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(None, None, None)
    except TypeError:
        return False
    return True


def supports_merge(server_class: type[GenServer]) -> bool:
    """Whether the class defines its own `merge` (partitionPolicy `Available` needs one)."""
    return getattr(server_class, "merge", None) is not GenServer.merge


def _import_module(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ModuleNotImportable(
                f"module {module_name!r} not found (is it installed in the image or on PYTHONPATH?)"
            ) from error
        raise ModuleNotImportable(
            f"module {module_name!r} failed to import: {type(error).__name__}: {error}"
        ) from error
    except Exception as error:
        raise ModuleNotImportable(
            f"module {module_name!r} failed to import: {type(error).__name__}: {error}"
        ) from error


def _check_server_class(spec: str, target: Any) -> type[GenServer]:
    if not inspect.isclass(target):
        raise NotAGenServer(f"{spec!r} is a {type(target).__name__}, not a class")
    if issubclass(target, GenServer):
        missing = [] if target.init is not GenServer.init else ["init"]
        if target.handle_call is GenServer.handle_call and (
            target.handle_cast is GenServer.handle_cast
        ):
            missing.append("handle_call or handle_cast")
    else:
        missing = [name for name in REQUIRED_METHODS if not callable(getattr(target, name, None))]
        if not missing:
            raise NotAGenServer(
                f"{spec!r} has the gen_server methods but does not subclass "
                "gencluster.GenServer; inherit from it so the defaults (merge, is_read_only, "
                "code_change, terminate, version) exist"
            )
    if missing:
        raise NotAGenServer(f"{spec!r} does not define {', '.join(missing)}")
    try:
        inspect.signature(target).bind()
    except TypeError as error:
        raise NotAGenServer(
            f"{spec!r} cannot be instantiated without arguments ({error}); take "
            "configuration in init(args) instead"
        ) from None
    # A class that is not a GenServer subclass was checked method by method above: it is
    # used exactly like one (duck typing), which the type system cannot see.
    return cast("type[GenServer]", target)
