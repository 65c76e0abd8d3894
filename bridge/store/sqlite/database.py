"""The SQLite store: one connection, its pragmas, migrations and readiness, and the facade that
holds one query object per aggregate (like mautrix-go's `database.Database`).

Methods are synchronous: every statement is a single indexed row operation that takes
microseconds, so they run directly on the event loop thread on one connection. Several processes
(`serve` and `poll`) may share the file: WAL mode and a busy timeout make that safe, and every
"create once" operation relies on a UNIQUE constraint rather than on in-process locks alone.
All SQL is parameterised. `bridge.store.migrations` is the only place the schema is defined.

Faults (`bridge.store.sqlite.guard`): a database that cannot be used now (disk full, read-only,
I/O error, a file that is not a database) raises `StoreUnavailable` from every method; at
start-up it is a `ConfigError` naming BRIDGE_DB. `Store.health()` is the readiness view.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from bridge.errors import ConfigError, StoreUnavailable
from bridge.store import interfaces
from bridge.store.interfaces import HISTORY_TTL
from bridge.store.migrations import migrations
from bridge.store.sqlite.budgets import BudgetQuery
from bridge.store.sqlite.checkpoints import CheckpointQuery
from bridge.store.sqlite.employees import EmployeeQuery
from bridge.store.sqlite.events import EventQuery
from bridge.store.sqlite.guard import Availability, guard, startup_error, unavailable_reason
from bridge.store.sqlite.inbound import InboundQuery
from bridge.store.sqlite.instances import InstanceQuery
from bridge.store.sqlite.kv import KVQuery
from bridge.store.sqlite.leases import LeaseQuery
from bridge.store.sqlite.links import LinkQuery
from bridge.store.sqlite.queue import QueueQuery
from bridge.store.sqlite.replies import ReplyQuery

log = logging.getLogger("bridge.store")

PROBE_INTERVAL = 10.0  # seconds between write probes by health() while writes are failing
PROBE_NAMESPACE = "bridge.store"  # kv row written and deleted again by the write probe


def _memory(path: str) -> bool:
    return path in ("", ":memory:")


def _identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the database file, None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def connect(path: str) -> Database:
    """Open the file with the pragmas every process uses; ConfigError if it cannot be opened."""
    try:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise startup_error(exc) or ConfigError(f"BRIDGE_DB: cannot open the database: {exc}") from None
    db = Database(conn)
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA foreign_keys = ON")
        if not _memory(path):
            _wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        conn.close()
        error = startup_error(exc)
        if error is None:
            raise
        raise error from None
    return db


def _wal(db: Database, timeout: float = 10.0) -> None:
    """Switch to WAL. Two processes creating a new file at the same moment can get "database is
    locked" here without SQLite's busy handler waiting, so retry for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def migrate(db: Database) -> None:
    """Apply pending migrations; refuse a database written by a newer release.

    Processes starting together on one file (`serve` and `poll`, an overlapping deploy) are
    serialised by the write lock, taken first (BEGIN IMMEDIATE; the others wait up to the busy
    timeout): one migrates, the next finds nothing pending. Each migration runs in a savepoint
    inside that transaction, so a failing one leaves nothing behind."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        known = {m.name for m in migrations._migrations}
        unknown = [m.name for m in migrations.applied(db) if m.name not in known]
        if unknown:
            raise ConfigError(
                f"BRIDGE_DB: the database was written by a newer moveworks-bridge "
                f"(unknown migrations: {', '.join(unknown)}); upgrade before starting"
            )
        migrations.apply(db)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


class Store:
    """The SQLite implementation of `bridge.store.interfaces.BridgeStore`."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self.availability = Availability()
        self.probe_interval = PROBE_INTERVAL
        self._file = None if _memory(self.path) else os.path.abspath(self.path)
        self._moved_logged = False
        self.db = connect(self.path)
        try:
            migrate(self.db)
            self._commit_probe()  # a read-only or unwritable database stops start-up, not the first answer
        except sqlite3.Error as exc:
            self.db.conn.close()
            error = startup_error(exc)
            if error is None:
                raise
            raise error from None
        except BaseException:
            self.db.conn.close()
            raise
        # the file this connection writes to; health() notices when the path no longer names it
        self._opened = _identity(self._file) if self._file else None
        self.links = LinkQuery(self.db, self._now, self.availability)
        self.employees = EmployeeQuery(self.db, self._now, self.availability)
        self.replies = ReplyQuery(self.db, self._now, self.availability)
        self.inbound = InboundQuery(self.db, self._now, self.availability)
        self.events = EventQuery(self.db, self._now, self.availability)
        self.checkpoints = CheckpointQuery(self.db, self._now, self.availability)
        self.kv = KVQuery(self.db, self._now, self.availability)
        self.instances = InstanceQuery(self.db, self._now, self.availability)
        self.leases = LeaseQuery(self.db, self._now, self.availability)
        self.queue = QueueQuery(self.db, self._now, self.availability)
        self.budgets = BudgetQuery(self.db, self._now, self.availability)

    def _now(self) -> float:
        return self.clock()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.health()[0]

    def health(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz: the file at BRIDGE_DB is still the one opened, writes are
        not failing, and the schema is complete. Cheap: one stat, and a small write probe at most
        every `probe_interval` seconds while writes are failing (so readiness recovers by itself
        once space is freed, even without traffic)."""
        if self._file is not None and _identity(self._file) != self._opened:
            if not self._moved_logged:
                self._moved_logged = True
                log.error(
                    "BRIDGE_DB: the database file %s was deleted or replaced while the bridge was "
                    "running; what it writes now is lost at the next restart (answered messages "
                    "would be answered again). Restore the file, or restart the bridge",
                    self._file,
                )
            return False, "database file replaced or deleted"
        if self.availability.reason is not None:
            if time.monotonic() - self.availability.failed_at >= self.probe_interval:
                try:
                    self._write_probe()
                except StoreUnavailable:
                    pass
            if self.availability.reason is not None:
                return False, "database not writable"
        try:
            pending = migrations.pending(self.db)
        except sqlite3.Error as exc:
            if unavailable_reason(exc) is not None:
                return False, "database not writable"
            return False, "database not migrated"
        if pending:
            return False, "database not migrated"
        return True, "ready"

    def _commit_probe(self) -> None:
        """Commit a real write that leaves nothing behind (a kv row inserted and deleted)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT OR REPLACE INTO kv (namespace, key, value, updated_at) VALUES (?, 'probe', '', ?)",
                (PROBE_NAMESPACE, self.clock()),
            )
            conn.execute("DELETE FROM kv WHERE namespace = ?", (PROBE_NAMESPACE,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    _write_probe = guard(_commit_probe)  # the same probe, reported to `availability`

    @guard
    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]

    def close(self) -> None:
        self.db.conn.close()

    @guard
    def prune_history(self, older_than: float = HISTORY_TTL) -> int:
        """Forget finished bookkeeping older than a month, so the database stays small. The
        mappings (thread links, employees, kv, checkpoints, leases, budgets) are kept."""
        cutoff = self.clock() - older_than
        removed = 0
        for sql in (
            "DELETE FROM replies WHERE status != 'streaming' AND updated_at < ?",
            "DELETE FROM shown_messages WHERE shown_at < ?",
            "DELETE FROM event_deliveries WHERE status IN ('sent', 'skipped') AND finished_at < ?",
            "DELETE FROM instances WHERE heartbeat_at < ?",
        ):
            removed += self.db.execute(sql, (cutoff,)).rowcount
        return removed


def _conforms(store: Store) -> interfaces.BridgeStore:
    return store  # mypy checks the facade and every query object against the protocols here
