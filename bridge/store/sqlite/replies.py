"""Replies (answers streamed into chat threads) and shown messages, in SQLite."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils.db import NotFoundError

from bridge.models import ThreadKey
from bridge.store.interfaces import STREAMING_STALE
from bridge.store.sqlite.guard import Query

TABLE = "replies"
SHOWN = "shown_messages"


def _interrupted(rows: list[tuple[int, int, str | None]]) -> list[tuple[int, dict[str, Any] | None]]:
    return [(link_id, json.loads(checkpoint) if checkpoint else None) for _, link_id, checkpoint in sorted(rows)]


@dataclass
class ReplyQuery(Query):

    def start(self, link_id: int, owner: str | None = None) -> int:
        now = self.clock()
        cursor = self.db.execute(
            "INSERT INTO replies (link_id, status, owner, started_at, updated_at) VALUES (?, 'streaming', ?, ?, ?)",
            (link_id, owner, now, now),
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def _update(self, reply_id: int, values: dict[str, Any]) -> None:
        try:
            self.db.table(TABLE).update(reply_id, values)
        except NotFoundError:
            pass  # an unknown id changes nothing, as an UPDATE … WHERE id = ? would

    def finish(
        self,
        reply_id: int,
        status: str,
        *,
        response_id: str | None = None,
        platform_message_ids: list[str] | None = None,
    ) -> None:
        """Set the final status; a field passed as None keeps what was stored."""
        values: dict[str, Any] = {"status": status, "updated_at": self.clock()}
        if response_id is not None:
            values["response_id"] = response_id
        if platform_message_ids is not None:
            values["platform_message_ids"] = json.dumps(platform_message_ids)
        self._update(reply_id, values)

    def checkpoint(self, reply_id: int, checkpoint: dict[str, Any] | None) -> None:
        self._update(
            reply_id,
            {"checkpoint": json.dumps(checkpoint) if checkpoint is not None else None, "updated_at": self.clock()},
        )

    def streaming_in(self, thread: ThreadKey) -> bool:
        """Is an answer streaming into `thread` right now, in any process?"""
        rows = self.db.query(
            "SELECT 1 AS x FROM replies r JOIN thread_links l ON l.id = r.link_id "
            "WHERE r.status = 'streaming' AND r.updated_at > ? AND l.platform = ? "
            "AND l.workspace = ? AND l.channel = ? AND l.thread = ? LIMIT 1",
            (self.clock() - STREAMING_STALE, thread.platform, thread.workspace, thread.channel, thread.thread),
        )
        return bool(list(rows))

    def interrupt_streaming(self, owners: Sequence[str] | None = None) -> list[tuple[int, dict[str, Any] | None]]:
        """At start-up of the answering process: replies a crashed process left 'streaming' can
        never finish. Marks them and returns (thread link, the reply's last checkpoint), oldest
        first, so the users can be told in place. `owners`: only the replies of these (dead)
        instances."""
        # One statement: a reply another process starts meanwhile is either returned or untouched.
        sql = "UPDATE replies SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'"
        params: list[Any] = [self.clock()]
        if owners is not None:
            sql += f" AND owner IN ({', '.join('?' for _ in owners)})"
            params.extend(owners)
        return _interrupted(self.db.execute(sql + " RETURNING id, link_id, checkpoint", params).fetchall())

    def interrupt_orphans(self, ttl: float) -> list[tuple[int, dict[str, Any] | None]]:
        """Replies of owners without a heartbeat within `ttl` seconds, and unowned replies not
        updated for STREAMING_STALE: marked 'interrupted' and returned (one statement, so each
        goes to exactly one live process)."""
        now = self.clock()
        cursor = self.db.execute(
            "UPDATE replies SET status = 'interrupted', updated_at = ? WHERE status = 'streaming' AND ("
            "(owner IS NULL AND updated_at < ?) OR (owner IS NOT NULL AND owner NOT IN "
            "(SELECT id FROM instances WHERE heartbeat_at >= ?))) RETURNING id, link_id, checkpoint",
            (now, now - STREAMING_STALE, now - ttl),
        )
        return _interrupted(cursor.fetchall())

    def mark_shown(self, message_id: str, link_id: int | None, source: str) -> None:
        """The first record of a message wins (the primary key decides, across processes)."""
        self.db.execute(
            "INSERT OR IGNORE INTO shown_messages (message_id, link_id, source, shown_at) VALUES (?, ?, ?, ?)",
            (message_id, link_id, source, self.clock()),
        )

    def was_shown(self, message_id: str) -> bool:
        return bool(list(self.db.query("SELECT 1 FROM shown_messages WHERE message_id = ? LIMIT 1", [message_id])))
