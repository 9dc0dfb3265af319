"""Server class versions: which state a replica may take, and how it converts it.

A server class's `version` names its state format. A replica meets a state written by another
version in four places: a snapshot it joins by (or recovers from its volume), the entries of
an active running another version, a split brain's loser merged into it, and a backup. The
rule is the same everywhere and lives here once, as pure functions:

- the same version (or 0, "not said": a runtime older than the field): taken as it is;
- an older version (an upgrade): the class's `code_change(old_version, state)` converts it;
- a newer version (a downgrade): refused (`DowngradeRefused`), because an older class cannot
  know the newer format and a silent identity `code_change` would serve a state its handlers
  misread, unless the class sets `accepts_downgrade = True`: its `code_change` is then also
  called with an `old_version` above its own `version` and must convert the newer format
  down (docs/partitions.md, "Versions across merge and upgrade").
"""

from __future__ import annotations

from typing import Any

from gencluster.server import GenServer


class DowngradeRefused(Exception):
    """A state (or entries) written by a newer version of the server class than this
    replica's, whose class does not set `accepts_downgrade`."""


class CodeChangeFailed(Exception):
    """The class's `code_change` raised: the state is not taken."""


def downgrade_refusal(server: GenServer, state_version: int, what: str) -> str | None:
    """Why this replica must not take `what` written by `state_version` (None: it may).

    A version of 0 is "not said" (an older runtime) and never refused."""
    version = server.version
    if state_version <= version or getattr(server, "accepts_downgrade", False):
        return None
    return (
        f"{what} was written by version {state_version} of the server class, this replica "
        f"runs {type(server).__name__} version {version}: a downgrade, refused (set "
        "accepts_downgrade = True on the class if its code_change converts newer states down)"
    )


def converted(server: GenServer, state_version: int, state: Any, what: str) -> Any:
    """`state` (written by `state_version`) in this replica's class format.

    Raises `DowngradeRefused` (see `downgrade_refusal`) or `CodeChangeFailed` when
    `code_change` raises (BaseException too: a `SystemExit` in user code must not take the
    replica down from a conversion)."""
    if state_version == 0 or state_version == server.version:
        return state
    refusal = downgrade_refusal(server, state_version, what)
    if refusal is not None:
        raise DowngradeRefused(refusal)
    try:
        return server.code_change(state_version, state)
    except BaseException as error:
        raise CodeChangeFailed(
            f"code_change({state_version}, state) of {type(server).__name__} version "
            f"{server.version} raised {type(error).__name__}: {error}"
        ) from error
