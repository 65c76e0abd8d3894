"""Thread links in SQLite: which Moveworks conversation a (chat thread, user) pair talks to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlite_utils.db import NotFoundError

from bridge.models import ThreadKey, ThreadLink
from bridge.store.rows import link_from_row as _link
from bridge.store.rows import thread_params as _thread
from bridge.store.sqlite.guard import Query

TABLE = "thread_links"
THREAD_WHERE = "platform = ? AND workspace = ? AND channel = ? AND thread = ?"






@dataclass
class LinkQuery(Query):

    def get(self, thread: ThreadKey, user_id: str) -> ThreadLink | None:
        rows = list(
            self.db.table(TABLE).rows_where(f"{THREAD_WHERE} AND user_id = ?", [*_thread(thread), user_id], limit=1)
        )
        return _link(rows[0]) if rows else None

    def get_by_id(self, link_id: int) -> ThreadLink | None:
        try:
            return _link(self.db.table(TABLE).get(link_id))
        except NotFoundError:
            return None

    def insert(
        self, thread: ThreadKey, user_id: str, identity: str, conversation_id: str, address: dict[str, Any]
    ) -> ThreadLink:
        """Map thread+user to a conversation; if another process won the race, return its row.

        The UNIQUE key decides the race (never an in-process lock). An inactive row for the same
        key (a conversation that was lost) is replaced; an active one is kept as it is.
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
            (*_thread(thread), user_id, identity, conversation_id, json.dumps(address), now, now),
        )
        link = self.get(thread, user_id)
        assert link is not None
        return link

    def _update(self, link_id: int, values: dict[str, Any]) -> None:
        try:
            self.db.table(TABLE).update(link_id, values)
        except NotFoundError:
            pass  # an unknown id changes nothing, as an UPDATE … WHERE id = ? would

    def touch(self, link_id: int, address: dict[str, Any] | None = None) -> None:
        values: dict[str, Any] = {"last_used_at": self.clock()}
        if address is not None:
            values["address"] = json.dumps(address)
        self._update(link_id, values)

    def deactivate(self, link_id: int) -> None:
        self._update(link_id, {"active": 0})

    def deactivate_where(self, platform: str, channel: str, thread: str | None = None) -> None:
        """Deactivate every link of `channel` (in any workspace), or of one thread of it: the bot
        can no longer write there."""
        sql = "UPDATE thread_links SET active = 0 WHERE platform = ? AND channel = ?"
        params = [platform, channel]
        if thread is not None:
            sql += " AND thread = ?"
            params.append(thread)
        self.db.execute(sql, params)

    def for_conversation(self, conversation_id: str) -> list[ThreadLink]:
        """Active links first, most recently used first."""
        rows = self.db.table(TABLE).rows_where(
            "conversation_id = ?", [conversation_id], order_by="active DESC, last_used_at DESC"
        )
        return [_link(r) for r in rows]

    def any_active_in_thread(self, thread: ThreadKey) -> bool:
        """Has the bot answered anyone in this thread (so follow-ups need no mention)?"""
        rows = self.db.table(TABLE).rows_where(f"{THREAD_WHERE} AND active = 1", _thread(thread), select="1", limit=1)
        return bool(list(rows))

    def remap(self, link_id: int, conversation_id: str, address: dict[str, Any]) -> None:
        """Point a flat chat (a personal DM) at the conversation of the notification just posted
        there, so the employee's reply continues it."""
        self._update(
            link_id,
            {"conversation_id": conversation_id, "address": json.dumps(address), "active": 1,
             "last_used_at": self.clock()},
        )
