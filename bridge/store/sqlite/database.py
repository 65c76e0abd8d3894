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
from typing import Any

from sqlite_utils import Database

from bridge.errors import ConfigError
from bridge.models import ChatUser, Employee, ThreadKey, ThreadLink
from bridge.store.interfaces import HISTORY_TTL, INBOUND_TTL
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

    # --- transitional flat names (removed once callers use the aggregates) --------------------
    # The mapping is bridge/store/RENAMES.txt.

    def _all(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        # Not an aggregate method: tests read raw tables through it. Use `store.db.query`.
        return list(self.db.query(sql, params))

    def claim_inbound(self, platform: str, delivery_id: str) -> bool:
        return self.inbound.claim(platform, delivery_id)

    def prune_inbound(self, older_than: float = INBOUND_TTL) -> int:
        return self.inbound.prune(older_than)

    def get_link(self, thread: ThreadKey, user_id: str) -> ThreadLink | None:
        return self.links.get(thread, user_id)

    def get_link_by_id(self, link_id: int) -> ThreadLink | None:
        return self.links.get_by_id(link_id)

    def insert_link(
        self, thread: ThreadKey, user_id: str, identity: str, conversation_id: str, address: dict[str, Any]
    ) -> ThreadLink:
        return self.links.insert(thread, user_id, identity, conversation_id, address)

    def touch_link(self, link_id: int, address: dict[str, Any] | None = None) -> None:
        return self.links.touch(link_id, address)

    def deactivate_link(self, link_id: int) -> None:
        return self.links.deactivate(link_id)

    def links_for_conversation(self, conversation_id: str) -> list[ThreadLink]:
        return self.links.for_conversation(conversation_id)

    def thread_has_links(self, thread: ThreadKey) -> bool:
        return self.links.any_active_in_thread(thread)

    def remap_link(self, link_id: int, conversation_id: str, address: dict[str, Any]) -> None:
        return self.links.remap(link_id, conversation_id, address)

    def get_employee(self, platform: str, workspace: str, user_id: str) -> Employee | None:
        return self.employees.get(platform, workspace, user_id)

    def email_checked_at(self, platform: str, workspace: str, user_id: str) -> float | None:
        return self.employees.email_checked_at(platform, workspace, user_id)

    def save_employee(self, user: ChatUser, *, email_checked: bool = False, active: bool = False) -> None:
        return self.employees.save(user, email_checked=email_checked, active=active)

    def employees_by_email(self, email: str) -> list[Employee]:
        return self.employees.by_email(email)

    def identities(self) -> list[tuple[str, float | None]]:
        return self.employees.identities()

    def last_active_employee(self) -> Employee | None:
        return self.employees.last_active()

    def active_people(self) -> int:
        return self.employees.active_people()

    def last_activity(self) -> float | None:
        return self.employees.last_activity()

    def start_reply(self, link_id: int) -> int:
        return self.replies.start(link_id)

    def finish_reply(
        self,
        reply_id: int,
        status: str,
        *,
        response_id: str | None = None,
        platform_message_ids: list[str] | None = None,
    ) -> None:
        return self.replies.finish(
            reply_id, status, response_id=response_id, platform_message_ids=platform_message_ids
        )

    def checkpoint_reply(self, reply_id: int, checkpoint: dict[str, Any] | None) -> None:
        return self.replies.checkpoint(reply_id, checkpoint)

    def thread_streaming(self, thread: ThreadKey) -> bool:
        return self.replies.streaming_in(thread)

    def interrupt_streaming_replies(self) -> list[tuple[int, dict[str, Any] | None]]:
        return self.replies.interrupt_streaming()

    def mark_shown(self, message_id: str, link_id: int | None, source: str) -> None:
        return self.replies.mark_shown(message_id, link_id, source)

    def was_shown(self, message_id: str) -> bool:
        return self.replies.was_shown(message_id)

    def claim_event(self, event_id: str, identity: str, conversation_id: str, payload: str) -> bool:
        return self.events.claim(event_id, identity, conversation_id, payload)

    def finish_event(self, event_id: str, status: str, detail: str | None = None) -> None:
        return self.events.finish(event_id, status, detail)

    def event_status(self, event_id: str) -> str | None:
        return self.events.status(event_id)

    def pending_events(self, identity: str | None = None) -> list[dict[str, Any]]:
        return self.events.pending(identity)

    def event_counts(self) -> dict[str, int]:
        return self.events.counts()

    def get_checkpoint(self, identity: str) -> tuple[str | None, float] | None:
        return self.checkpoints.get(identity)

    def start_checkpoint(self, identity: str) -> tuple[str | None, float]:
        return self.checkpoints.start(identity)

    def set_checkpoint(self, identity: str, event_id: str) -> None:
        return self.checkpoints.advance(identity, event_id)

    def reset_checkpoint(self, identity: str) -> None:
        return self.checkpoints.reset(identity)

    def kv_get(self, namespace: str, key: str) -> str | None:
        return self.kv.get(namespace, key)

    def kv_set(self, namespace: str, key: str, value: str) -> None:
        return self.kv.set(namespace, key, value)

    def kv_delete(self, namespace: str, key: str | None = None) -> None:
        return self.kv.delete(namespace, key)

    def kv_prune(self, namespace: str, older_than: float = HISTORY_TTL) -> int:
        return self.kv.prune(namespace, older_than)

    def kv_items(self, namespace: str, prefix: str = "") -> list[tuple[str, str]]:
        return self.kv.items(namespace, prefix)
