"""The SQLite store: one connection, its pragmas, migrations and readiness, and the facade that
holds one query object per aggregate (like mautrix-go's `database.Database`).

Methods are synchronous: every statement is a single indexed row operation that takes
microseconds, so they run directly on the event loop thread on one connection. Several processes
(`serve` and `poll`) may share the file: WAL mode and a busy timeout make that safe, and every
"create once" operation relies on a UNIQUE constraint rather than on in-process locks alone.
All SQL is parameterised. `bridge.store.migrations` is the only place the schema is defined.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from bridge.errors import ConfigError
from bridge.store.interfaces import HISTORY_TTL
from bridge.store.migrations import migrations
from bridge.store.sqlite.checkpoints import CheckpointQuery
from bridge.store.sqlite.employees import EmployeeQuery
from bridge.store.sqlite.events import EventQuery
from bridge.store.sqlite.inbound import InboundQuery
from bridge.store.sqlite.kv import KVQuery
from bridge.store.sqlite.links import LinkQuery
from bridge.store.sqlite.replies import ReplyQuery


def connect(path: str) -> Database:
    """Open the file with the pragmas every process uses; ConfigError if it cannot be opened."""
    try:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"BRIDGE_DB: cannot open the database: {exc}") from None
    db = Database(conn)
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA foreign_keys = ON")
    if path != ":memory:":
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    return db


def migrate(db: Database) -> None:
    """Apply pending migrations; refuse a database written by a newer release."""
    known = {m.name for m in migrations._migrations}
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise ConfigError(
            f"BRIDGE_DB: the database was written by a newer moveworks-bridge "
            f"(unknown migrations: {', '.join(unknown)}); upgrade before starting"
        )
    migrations.apply(db)


class Store:
    """The SQLite implementation of `bridge.store.interfaces.BridgeStore`."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self.db = connect(self.path)
        try:
            migrate(self.db)
        except BaseException:
            self.db.conn.close()
            raise
        self.links = LinkQuery(self.db, self._now)
        self.employees = EmployeeQuery(self.db, self._now)
        self.replies = ReplyQuery(self.db, self._now)
        self.inbound = InboundQuery(self.db, self._now)
        self.events = EventQuery(self.db, self._now)
        self.checkpoints = CheckpointQuery(self.db, self._now)
        self.kv = KVQuery(self.db, self._now)

    def _now(self) -> float:
        return self.clock()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        try:
            return not migrations.pending(self.db)
        except sqlite3.Error:
            return False

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]

    def close(self) -> None:
        self.db.conn.close()

    def prune_history(self, older_than: float = HISTORY_TTL) -> int:
        """Forget finished bookkeeping older than a month, so the database stays small. The
        mappings (thread links, employees, kv, checkpoints) are kept."""
        cutoff = self.clock() - older_than
        removed = 0
        for sql in (
            "DELETE FROM replies WHERE status != 'streaming' AND updated_at < ?",
            "DELETE FROM shown_messages WHERE shown_at < ?",
            "DELETE FROM event_deliveries WHERE status IN ('sent', 'skipped') AND finished_at < ?",
        ):
            removed += self.db.execute(sql, (cutoff,)).rowcount
        return removed
