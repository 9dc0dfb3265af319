"""SQLite persistence of the API server's objects and ServiceAccount tokens.

Optional (`ApiServer(data_path=...)`): every committed change is written through to one
SQLite file, so a restarted control plane comes back with the same objects, the same
resourceVersion counter (it never goes backwards) and tokens that still work. The watch
history is not kept: watches from before the restart get 410 and relist, as after an etcd
compaction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from gencluster_dev.apiserver.auth import Authenticator, IssuedToken
from gencluster_dev.machinery.resources import ResourceKey
from gencluster_dev.machinery.store import Store, StoreEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    grp TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (grp, resource, namespace, name));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY, namespace TEXT NOT NULL, service_account TEXT NOT NULL,
    service_account_uid TEXT NOT NULL, expires TEXT NOT NULL);
"""


class Journal:
    """Writes store events and issued tokens through to SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._tokens_seen: set[str] = set()

    def load(self, store: Store, authenticator: Authenticator) -> None:
        rows = self._db.execute("SELECT grp, resource, body FROM objects").fetchall()
        objects: list[tuple[ResourceKey, dict[str, Any]]] = [
            ((group, resource), json.loads(body)) for group, resource, body in rows]
        row = self._db.execute(
            "SELECT value FROM counters WHERE name = 'resourceVersion'").fetchone()
        store.restore(objects, row[0] if row else 0)
        for token, namespace, account, uid, expires in self._db.execute(
            "SELECT token, namespace, service_account, service_account_uid, expires FROM tokens"
        ):
            authenticator.restore(token, IssuedToken(namespace, account, uid,
                                                     datetime.fromisoformat(expires)))
            self._tokens_seen.add(token)

    def record(self, event: StoreEvent) -> None:
        meta = event.object["metadata"]
        where = (event.key[0], event.key[1], meta.get("namespace", ""), meta["name"])
        if event.type == "DELETED":
            self._db.execute("DELETE FROM objects WHERE grp=? AND resource=? AND namespace=? "
                             "AND name=?", where)
        else:
            self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                             (*where, json.dumps(event.object, separators=(",", ":"))))
        self._db.execute("INSERT OR REPLACE INTO counters VALUES ('resourceVersion', ?)",
                         (event.resource_version,))

    def record_tokens(self, authenticator: Authenticator) -> None:
        """Store tokens issued since the last call and forget revoked ones."""
        live = authenticator.issued_tokens()
        for token, issued in live.items():
            if token not in self._tokens_seen:
                self._db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?)", (
                    token, issued.namespace, issued.service_account,
                    issued.service_account_uid, issued.expires.isoformat()))
        for token in self._tokens_seen - set(live):
            self._db.execute("DELETE FROM tokens WHERE token = ?", (token,))
        self._tokens_seen = set(live)

    def close(self) -> None:
        self._db.close()
