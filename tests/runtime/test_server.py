"""The user API: GenServer defaults, Context, and loading a class from a "module:Class" spec."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

import pytest
from gencluster import GenServer, load_server_class
from gencluster.server import (
    Context,
    InvalidServerSpec,
    MergeNotSupported,
    ModuleNotImportable,
    NotAGenServer,
    ReadOnlyViolation,
    ServerClassMissing,
    ServerLoadError,
    UnknownRequest,
    supports_merge,
)

pytestmark = pytest.mark.unit

_module_numbers = itertools.count()


class Minimal(GenServer):
    def init(self, args: Any) -> Any:
        return args


def test_context_randomness_is_a_function_of_the_seed() -> None:
    draws = [Context("r", 1.0, seed=42).random.random() for _ in range(2)]
    assert draws[0] == draws[1]
    assert Context("r", 1.0, seed=43).random.random() != draws[0]


def test_context_collects_published_events_in_order() -> None:
    ctx = Context("r", 1.0, seed=0)
    ctx.publish("a", 1)
    ctx.publish("b", {"x": 2})
    ctx.publish("a", 3)
    assert ctx.published == [("a", 1, ""), ("b", {"x": 2}, ""), ("a", 3, "")]


@pytest.mark.parametrize("topic", ["", None, 7])
def test_context_refuses_topics_that_are_not_names(topic: Any) -> None:
    with pytest.raises(ValueError, match="topic must be a non-empty string"):
        Context("r", 1.0, seed=0).publish(topic, "event")


def test_read_only_context_refuses_to_publish() -> None:
    ctx = Context("r", 1.0, seed=0, read_only=True)
    with pytest.raises(ReadOnlyViolation, match="read-only call cannot publish"):
        ctx.publish("topic", "event")
    assert ctx.published == []


def test_default_handlers_reject_requests_clearly() -> None:
    server = Minimal()
    ctx = Context("r", 1.0, seed=0)
    with pytest.raises(UnknownRequest, match="Minimal has no handler for call 'ping'"):
        server.handle_call("ping", ctx, None)
    with pytest.raises(UnknownRequest, match="Minimal has no handler for cast 'ping'"):
        server.handle_cast("ping", ctx, None)
    with pytest.raises(MergeNotSupported, match="Minimal does not define merge"):
        server.merge(1, 2)


def test_default_hooks() -> None:
    server = Minimal()
    assert server.is_read_only("anything") is False
    assert server.code_change(0, {"a": 1}) == {"a": 1}
    assert server.terminate("shutdown", None) is None
    assert Minimal.version == 1
    assert not supports_merge(Minimal)


def test_supports_merge_sees_an_override() -> None:
    class Merging(Minimal):
        def merge(self, state_a: Any, state_b: Any) -> Any:
            return state_a

    assert supports_merge(Merging)


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A fresh importable module (unique name, so import caching cannot mask a case)."""
    name = f"gencluster_test_module_{next(_module_numbers)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_loads_a_server_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = write_module(
        tmp_path,
        monkeypatch,
        """
        from gencluster import GenServer

        class Counter(GenServer):
            def init(self, args):
                return 0

            def handle_cast(self, msg, ctx, state):
                return state + 1

            class Nested(GenServer):
                def init(self, args):
                    return None

                def handle_call(self, request, ctx, state):
                    return None, state
        """,
    )
    assert load_server_class(f"{module}:Counter").__name__ == "Counter"
    assert load_server_class(f" {module} : Counter.Nested ").__name__ == "Nested"


def test_loads_the_examples() -> None:
    assert load_server_class("gencluster_examples.id_server:IdServer").__name__ == "IdServer"
    assert load_server_class("gencluster_examples.chat:ChatServer").__name__ == "ChatServer"


@pytest.mark.parametrize("spec", ["", "module", "module:", ":Class", "a:b:c"])
def test_rejects_malformed_specs(spec: str) -> None:
    with pytest.raises(InvalidServerSpec, match="is not of the form 'module:Class'"):
        load_server_class(spec)


def test_missing_module_says_where_to_look() -> None:
    with pytest.raises(ModuleNotImportable, match=r"module 'no_such_module_x\.y' not found"):
        load_server_class("no_such_module_x.y:Server")


def test_module_with_a_missing_dependency_names_the_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_module(tmp_path, monkeypatch, "import no_such_dependency_z\n")
    with pytest.raises(
        ModuleNotImportable,
        match=f"module '{module}' failed to import: ModuleNotFoundError: "
        "No module named 'no_such_dependency_z'",
    ):
        load_server_class(f"{module}:Server")


def test_module_that_raises_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = write_module(tmp_path, monkeypatch, "raise RuntimeError('bad config')\n")
    with pytest.raises(ModuleNotImportable, match="failed to import: RuntimeError: bad config"):
        load_server_class(f"{module}:Server")


def test_module_with_a_syntax_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = write_module(tmp_path, monkeypatch, "def broken(:\n")
    with pytest.raises(ModuleNotImportable, match="failed to import: SyntaxError"):
        load_server_class(f"{module}:Server")


def test_missing_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = write_module(tmp_path, monkeypatch, "X = 1\n")
    with pytest.raises(ServerClassMissing, match=f"module '{module}' has no attribute 'Server'"):
        load_server_class(f"{module}:Server")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Server = 42\n", "is a int, not a class"),
        ("def Server():\n    pass\n", "is a function, not a class"),
        ("class Server:\n    pass\n", "does not define init, handle_call, handle_cast"),
        (
            "class Server:\n"
            "    def init(self, args): ...\n"
            "    def handle_call(self, r, c, s): ...\n"
            "    def handle_cast(self, m, c, s): ...\n",
            "does not subclass gencluster.GenServer",
        ),
        (
            "from gencluster import GenServer\nclass Server(GenServer):\n    pass\n",
            "does not define init, handle_call or handle_cast",
        ),
        (
            "from gencluster import GenServer\n"
            "class Server(GenServer):\n"
            "    def handle_call(self, r, c, s): ...\n",
            "does not define init$",
        ),
        (
            "from gencluster import GenServer\n"
            "class Server(GenServer):\n"
            "    def __init__(self, config): ...\n"
            "    def init(self, args): ...\n"
            "    def handle_call(self, r, c, s): ...\n",
            "cannot be instantiated without arguments",
        ),
    ],
)
def test_rejects_what_is_not_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    module = write_module(tmp_path, monkeypatch, source)
    with pytest.raises(NotAGenServer, match=message):
        load_server_class(f"{module}:Server")


def test_every_load_error_is_a_server_load_error() -> None:
    for error in (InvalidServerSpec, ModuleNotImportable, ServerClassMissing, NotAGenServer):
        assert issubclass(error, ServerLoadError)
