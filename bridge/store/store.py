"""The bridge's state in SQLite, through sqlite-utils. The only module that runs SQL.

Methods are synchronous: every statement is a single indexed row operation that takes
microseconds, so they run directly on the event loop thread on one connection. Several processes
(`serve` and `poll`) may share the file: WAL mode and a busy timeout make that safe, and every
"create once" operation relies on a UNIQUE constraint rather than on in-process locks alone.
All SQL is parameterised.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bridge.errors import ConfigError
from bridge.models import ChatUser, Employee, ThreadKey, ThreadLink
from bridge.store.migrations import migrations

INBOUND_TTL = 24 * 3600.0  # Slack retries for ~1 hour, Teams re-sends within minutes
HISTORY_TTL = 30 * 24 * 3600.0  # finished replies, shown messages, delivered events
STREAMING_STALE = 600.0  # a 'streaming' reply older than this belongs to a dead process


class Store:
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        memory = self.path == ":memory:"
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"BRIDGE_DB: cannot open the database: {exc}") from None
        self.db = Database(conn)
        self.db.execute("PRAGMA busy_timeout = 10000")
        self.db.execute("PRAGMA foreign_keys = ON")
        if not memory:
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    # --- lifecycle ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        known = {m.name for m in migrations._migrations}
        unknown = [m.name for m in migrations.applied(self.db) if m.name not in known]
        if unknown:
            raise ConfigError(
                f"BRIDGE_DB: the database was written by a newer moveworks-bridge "
                f"(unknown migrations: {', '.join(unknown)}); upgrade before starting"
            )
        migrations.apply(self.db)

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

    def _one(self, sql: str, params: tuple | list = ()) -> dict[str, Any] | None:
        cursor = self.db.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cursor.description], row))

    def _all(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    # --- inbound dedupe -----------------------------------------------------------------------

    def claim_inbound(self, platform: str, delivery_id: str) -> bool:
        """True the first time a delivery is seen, across processes and restarts."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO inbound_deliveries (platform, delivery_id, received_at) "
            "VALUES (?, ?, ?)",
            (platform, delivery_id, self.clock()),
        )
        return cursor.rowcount == 1

    def prune_inbound(self, older_than: float = INBOUND_TTL) -> int:
        cursor = self.db.execute(
            "DELETE FROM inbound_deliveries WHERE received_at < ?", (self.clock() - older_than,)
        )
        return cursor.rowcount

    def prune_history(self, older_than: float = HISTORY_TTL) -> int:
        """Forget finished bookkeeping older than a month, so the database stays small. The
        mappings (thread links, employees, references, checkpoints) are kept."""
        cutoff = self.clock() - older_than
        removed = 0
        for sql in (
            "DELETE FROM replies WHERE status != 'streaming' AND updated_at < ?",
            "DELETE FROM shown_messages WHERE shown_at < ?",
            "DELETE FROM event_deliveries WHERE status IN ('sent', 'skipped') AND finished_at < ?",
        ):
            removed += self.db.execute(sql, (cutoff,)).rowcount
        return removed

    # --- thread links -------------------------------------------------------------------------

    @staticmethod
    def _link(row: dict[str, Any]) -> ThreadLink:
        return ThreadLink(
            id=row["id"],
            thread=ThreadKey(row["platform"], row["workspace"], row["channel"], row["thread"]),
            user_id=row["user_id"],
            identity=row["identity"],
            conversation_id=row["conversation_id"],
            address=json.loads(row["address"] or "{}"),
            active=bool(row["active"]),
        )

    def get_link(self, thread: ThreadKey, user_id: str) -> ThreadLink | None:
        row = self._one(
            "SELECT * FROM thread_links WHERE platform = ? AND workspace = ? AND channel = ? "
            "AND thread = ? AND user_id = ?",
            (thread.platform, thread.workspace, thread.channel, thread.thread, user_id),
        )
        return self._link(row) if row else None

    def insert_link(
        self,
        thread: ThreadKey,
        user_id: str,
        identity: str,
        conversation_id: str,
        address: dict[str, Any],
    ) -> ThreadLink:
        """Map thread+user to a conversation; if another process won the race, return its row.

        An inactive row for the same key (a conversation that was lost) is replaced.
        """
        now = self.clock()
        self.db.execute(
            "INSERT INTO thread_links (platform, workspace, channel, thread, user_id, identity, "
            "conversation_id, address, active, created_at, last_used_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (platform, workspace, channel, thread, user_id) DO UPDATE SET "
            "identity = excluded.identity, conversation_id = excluded.conversation_id, "
            "address = excluded.address, active = 1, last_used_at = excluded.last_used_at "
            "WHERE thread_links.active = 0",
            (
                thread.platform,
                thread.workspace,
                thread.channel,
                thread.thread,
                user_id,
                identity,
                conversation_id,
                json.dumps(address),
                now,
                now,
            ),
        )
        link = self.get_link(thread, user_id)
        assert link is not None
        return link

    def touch_link(self, link_id: int, address: dict[str, Any] | None = None) -> None:
        if address is None:
            self.db.execute(
                "UPDATE thread_links SET last_used_at = ? WHERE id = ?", (self.clock(), link_id)
            )
        else:
            self.db.execute(
                "UPDATE thread_links SET last_used_at = ?, address = ? WHERE id = ?",
                (self.clock(), json.dumps(address), link_id),
            )

    def deactivate_link(self, link_id: int) -> None:
        self.db.execute("UPDATE thread_links SET active = 0 WHERE id = ?", (link_id,))

    def links_for_conversation(self, conversation_id: str) -> list[ThreadLink]:
        """Active links first, most recently used first."""
        rows = self._all(
            "SELECT * FROM thread_links WHERE conversation_id = ? "
            "ORDER BY active DESC, last_used_at DESC",
            (conversation_id,),
        )
        return [self._link(r) for r in rows]

    def thread_has_links(self, thread: ThreadKey) -> bool:
        """Has the bot answered anyone in this thread (so follow-ups need no mention)?"""
        return (
            self._one(
                "SELECT 1 AS x FROM thread_links WHERE platform = ? AND workspace = ? "
                "AND channel = ? AND thread = ? AND active = 1 LIMIT 1",
                (thread.platform, thread.workspace, thread.channel, thread.thread),
            )
            is not None
        )

    # --- employees ----------------------------------------------------------------------------

    @staticmethod
    def _employee(row: dict[str, Any]) -> Employee:
        return Employee(
            platform=row["platform"],
            workspace=row["workspace"],
            user_id=row["user_id"],
            email=row["email"],
            name=row["name"],
            last_active_at=row["last_active_at"],
        )

    def get_employee(self, platform: str, workspace: str, user_id: str) -> Employee | None:
        row = self._one(
            "SELECT * FROM employees WHERE platform = ? AND workspace = ? AND user_id = ?",
            (platform, workspace, user_id),
        )
        return self._employee(row) if row else None

    def email_checked_at(self, platform: str, workspace: str, user_id: str) -> float | None:
        row = self._one(
            "SELECT email_checked_at FROM employees WHERE platform = ? AND workspace = ? "
            "AND user_id = ?",
            (platform, workspace, user_id),
        )
        return row["email_checked_at"] if row else None

    def save_employee(self, user: ChatUser, *, email_checked: bool = False, active: bool = False) -> None:
        """Upsert what we know of a chat user; never forgets a known email or name."""
        now = self.clock()
        self.db.execute(
            "INSERT INTO employees (platform, workspace, user_id, email, name, email_checked_at, "
            "last_active_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, workspace, user_id) DO UPDATE SET "
            "email = COALESCE(excluded.email, employees.email), "
            "name = COALESCE(excluded.name, employees.name), "
            "email_checked_at = COALESCE(excluded.email_checked_at, employees.email_checked_at), "
            "last_active_at = COALESCE(excluded.last_active_at, employees.last_active_at)",
            (
                user.platform,
                user.workspace,
                user.user_id,
                user.email,
                user.name,
                now if email_checked else None,
                now if active else None,
            ),
        )

    def employees_by_email(self, email: str) -> list[Employee]:
        """Chat accounts of one employee, the most recently active first."""
        rows = self._all(
            "SELECT * FROM employees WHERE email = ? COLLATE NOCASE "
            "ORDER BY last_active_at IS NULL, last_active_at DESC",
            (email,),
        )
        return [self._employee(r) for r in rows]

    def identities(self) -> list[tuple[str, float | None]]:
        """Every known employee email with its last activity, for the per-employee poller."""
        rows = self._all(
            "SELECT lower(email) AS email, MAX(last_active_at) AS last_active_at FROM employees "
            "WHERE email IS NOT NULL AND email != '' GROUP BY lower(email)"
        )
        return [(r["email"], r["last_active_at"]) for r in rows]

    def last_active_employee(self) -> Employee | None:
        row = self._one(
            "SELECT * FROM employees WHERE last_active_at IS NOT NULL "
            "ORDER BY last_active_at DESC LIMIT 1"
        )
        return self._employee(row) if row else None

    def active_people(self) -> int:
        """How many different people have asked something (chat accounts with the same email
        are one person)."""
        row = self._one(
            "SELECT COUNT(DISTINCT COALESCE(lower(email), platform || ':' || workspace || ':' || "
            "user_id)) AS n FROM employees WHERE last_active_at IS NOT NULL"
        )
        return int(row["n"]) if row else 0

    def remap_link(self, link_id: int, conversation_id: str, address: dict[str, Any]) -> None:
        """Point a flat chat (a personal DM) at the conversation of the notification just posted
        there, so the employee's reply continues it."""
        self.db.execute(
            "UPDATE thread_links SET conversation_id = ?, address = ?, active = 1, last_used_at = ? "
            "WHERE id = ?",
            (conversation_id, json.dumps(address), self.clock(), link_id),
        )

    def last_activity(self) -> float | None:
        row = self._one("SELECT MAX(last_active_at) AS t FROM employees")
        return row["t"] if row else None

    # --- replies and shown messages -----------------------------------------------------------

    def start_reply(self, link_id: int) -> int:
        now = self.clock()
        cursor = self.db.execute(
            "INSERT INTO replies (link_id, status, started_at, updated_at) VALUES (?, 'streaming', ?, ?)",
            (link_id, now, now),
        )
        return int(cursor.lastrowid)

    def finish_reply(
        self,
        reply_id: int,
        status: str,
        *,
        response_id: str | None = None,
        platform_message_ids: list[str] | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE replies SET status = ?, response_id = COALESCE(?, response_id), "
            "platform_message_ids = COALESCE(?, platform_message_ids), updated_at = ? WHERE id = ?",
            (
                status,
                response_id,
                json.dumps(platform_message_ids) if platform_message_ids is not None else None,
                self.clock(),
                reply_id,
            ),
        )

    def thread_streaming(self, thread: ThreadKey) -> bool:
        """Is an answer streaming into `thread` right now, in any process?"""
        return (
            self._one(
                "SELECT 1 AS x FROM replies r JOIN thread_links l ON l.id = r.link_id "
                "WHERE r.status = 'streaming' AND r.updated_at > ? AND l.platform = ? "
                "AND l.workspace = ? AND l.channel = ? AND l.thread = ? LIMIT 1",
                (self.clock() - STREAMING_STALE, thread.platform, thread.workspace,
                 thread.channel, thread.thread),
            )
            is not None
        )

    def checkpoint_reply(self, reply_id: int, checkpoint: dict[str, Any] | None) -> None:
        self.db.execute(
            "UPDATE replies SET checkpoint = ?, updated_at = ? WHERE id = ?",
            (json.dumps(checkpoint) if checkpoint is not None else None, self.clock(), reply_id),
        )

    def interrupt_streaming_replies(self) -> list[tuple[int, dict[str, Any] | None]]:
        """At start-up of the answering process: replies a crashed process left 'streaming' can
        never finish. Marks them and returns (thread link, the reply's last checkpoint), oldest
        first, so the users can be told in place."""
        rows = self._all(
            "SELECT id, link_id, checkpoint FROM replies WHERE status = 'streaming' ORDER BY id"
        )
        self.db.execute(
            "UPDATE replies SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'",
            (self.clock(),),
        )
        return [(r["link_id"], json.loads(r["checkpoint"]) if r["checkpoint"] else None) for r in rows]

    def get_link_by_id(self, link_id: int) -> ThreadLink | None:
        row = self._one("SELECT * FROM thread_links WHERE id = ?", (link_id,))
        return self._link(row) if row else None

    def mark_shown(self, message_id: str, link_id: int | None, source: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO shown_messages (message_id, link_id, source, shown_at) "
            "VALUES (?, ?, ?, ?)",
            (message_id, link_id, source, self.clock()),
        )

    def was_shown(self, message_id: str) -> bool:
        return (
            self._one("SELECT 1 AS x FROM shown_messages WHERE message_id = ?", (message_id,))
            is not None
        )

    # --- event deliveries (claim -> post -> mark) ---------------------------------------------

    def claim_event(self, event_id: str, identity: str, conversation_id: str, payload: str) -> bool:
        """Claim an event for delivery. False if it was already sent or skipped.

        A row left 'claimed' by a crash is claimable again (re-delivery after restart).
        """
        now = self.clock()
        self.db.execute(
            "INSERT OR IGNORE INTO event_deliveries (event_id, identity, conversation_id, status, "
            "payload, claimed_at) VALUES (?, ?, ?, 'new', ?, ?)",
            (event_id, identity, conversation_id, payload, now),
        )
        cursor = self.db.execute(
            "UPDATE event_deliveries SET status = 'claimed', attempts = attempts + 1, claimed_at = ? "
            "WHERE event_id = ? AND status IN ('new', 'claimed', 'retry')",
            (now, event_id),
        )
        return cursor.rowcount == 1

    def finish_event(self, event_id: str, status: str, detail: str | None = None) -> None:
        """status: 'sent', 'skipped' (explicitly not delivered, with a reason) or 'retry'."""
        self.db.execute(
            "UPDATE event_deliveries SET status = ?, detail = ?, finished_at = ? WHERE event_id = ?",
            (status, detail, self.clock(), event_id),
        )

    def event_status(self, event_id: str) -> str | None:
        row = self._one("SELECT status FROM event_deliveries WHERE event_id = ?", (event_id,))
        return row["status"] if row else None

    def pending_events(self, identity: str | None = None) -> list[dict[str, Any]]:
        """Claimed-but-unfinished and retryable events, oldest first (re-delivered on start)."""
        sql = "SELECT * FROM event_deliveries WHERE status IN ('claimed', 'retry', 'new')"
        params: list[Any] = []
        if identity is not None:
            sql += " AND identity = ?"
            params.append(identity)
        return self._all(sql + " ORDER BY event_id", params)

    def event_counts(self) -> dict[str, int]:
        rows = self._all("SELECT status, COUNT(*) AS n FROM event_deliveries GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    # --- poller checkpoints -------------------------------------------------------------------

    def get_checkpoint(self, identity: str) -> tuple[str | None, float] | None:
        """(last handled event id, when polling of this identity started) or None if new."""
        row = self._one(
            "SELECT last_event_id, started_at FROM poll_checkpoints WHERE identity = ?", (identity,)
        )
        return (row["last_event_id"], row["started_at"]) if row else None

    def start_checkpoint(self, identity: str) -> tuple[str | None, float]:
        now = self.clock()
        self.db.execute(
            "INSERT OR IGNORE INTO poll_checkpoints (identity, last_event_id, started_at, updated_at) "
            "VALUES (?, NULL, ?, ?)",
            (identity, now, now),
        )
        checkpoint = self.get_checkpoint(identity)
        assert checkpoint is not None
        return checkpoint

    def set_checkpoint(self, identity: str, event_id: str) -> None:
        """Advance only: a checkpoint never moves backwards."""
        now = self.clock()
        self.db.execute(
            "INSERT INTO poll_checkpoints (identity, last_event_id, started_at, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (identity) DO UPDATE SET "
            "last_event_id = excluded.last_event_id, updated_at = excluded.updated_at "
            "WHERE poll_checkpoints.last_event_id IS NULL "
            "OR poll_checkpoints.last_event_id < excluded.last_event_id",
            (identity, event_id, now, now),
        )

    def reset_checkpoint(self, identity: str) -> None:
        """After INVALID_CURSOR: start again from 'now' (logged by the caller)."""
        now = self.clock()
        self.db.execute(
            "UPDATE poll_checkpoints SET last_event_id = NULL, started_at = ?, updated_at = ? "
            "WHERE identity = ?",
            (now, now, identity),
        )

    # --- platform conversation references (Teams proactive messages) --------------------------

    def save_reference(
        self,
        platform: str,
        ref_key: str,
        reference: dict[str, Any],
        *,
        tenant: str | None = None,
        service_url: str | None = None,
        user_id: str | None = None,
        personal: bool = False,
    ) -> None:
        self.db.execute(
            "INSERT INTO conversation_refs (platform, ref_key, tenant, service_url, user_id, personal, "
            "reference, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, ref_key) DO UPDATE SET tenant = excluded.tenant, "
            "service_url = excluded.service_url, user_id = COALESCE(excluded.user_id, "
            "conversation_refs.user_id), personal = excluded.personal, "
            "reference = excluded.reference, updated_at = excluded.updated_at",
            (
                platform,
                ref_key,
                tenant,
                service_url,
                user_id,
                int(personal),
                json.dumps(reference),
                self.clock(),
            ),
        )

    def get_reference(self, platform: str, ref_key: str) -> dict[str, Any] | None:
        row = self._one(
            "SELECT reference FROM conversation_refs WHERE platform = ? AND ref_key = ?",
            (platform, ref_key),
        )
        return json.loads(row["reference"]) if row else None

    def personal_reference(self, platform: str, user_id: str) -> tuple[str, dict[str, Any]] | None:
        row = self._one(
            "SELECT ref_key, reference FROM conversation_refs WHERE platform = ? AND user_id = ? "
            "AND personal = 1 ORDER BY updated_at DESC LIMIT 1",
            (platform, user_id),
        )
        return (row["ref_key"], json.loads(row["reference"])) if row else None

    def delete_reference(self, platform: str, ref_key: str) -> None:
        self.db.execute(
            "DELETE FROM conversation_refs WHERE platform = ? AND ref_key = ?", (platform, ref_key)
        )
        self.db.execute(
            "UPDATE thread_links SET active = 0 WHERE platform = ? AND channel = ?",
            (platform, ref_key),
        )

    # --- small key/value namespace (e.g. Slack installations) ---------------------------------

    def kv_get(self, namespace: str, key: str) -> str | None:
        row = self._one("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        return row["value"] if row else None

    def kv_set(self, namespace: str, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (namespace, key, value, self.clock()),
        )

    def kv_delete(self, namespace: str, key: str | None = None) -> None:
        if key is None:
            self.db.execute("DELETE FROM kv WHERE namespace = ?", (namespace,))
        else:
            self.db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    def kv_prune(self, namespace: str, older_than: float = HISTORY_TTL) -> int:
        """Drop entries of `namespace` not written for `older_than` seconds."""
        return self.db.execute(
            "DELETE FROM kv WHERE namespace = ? AND updated_at < ?",
            (namespace, self.clock() - older_than),
        ).rowcount

    def kv_items(self, namespace: str, prefix: str = "") -> list[tuple[str, str]]:
        rows = self._all(
            "SELECT key, value FROM kv WHERE namespace = ? AND substr(key, 1, ?) = ? ORDER BY key",
            (namespace, len(prefix), prefix),
        )
        return [(r["key"], r["value"]) for r in rows]
