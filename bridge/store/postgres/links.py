"""Thread links in PostgreSQL: which Moveworks conversation a (chat thread, user) pair talks to."""

from __future__ import annotations

import json
from typing import Any

from bridge.models import ThreadKey, ThreadLink
from bridge.store.postgres.guard import PgQuery
from bridge.store.rows import link_from_row as _link
from bridge.store.rows import thread_params as _thread

THREAD_WHERE = "platform = %s AND workspace = %s AND channel = %s AND thread = %s"






class LinkQuery(PgQuery):

    async def get(self, thread: ThreadKey, user_id: str) -> ThreadLink | None:
        row = await self._row(f"SELECT * FROM thread_links WHERE {THREAD_WHERE} AND user_id = %s",
                              [*_thread(thread), user_id])
        return _link(row) if row else None

    async def get_by_id(self, link_id: int) -> ThreadLink | None:
        row = await self._row("SELECT * FROM thread_links WHERE id = %s", (link_id,))
        return _link(row) if row else None

    async def insert(
        self, thread: ThreadKey, user_id: str, identity: str, conversation_id: str, address: dict[str, Any]
    ) -> ThreadLink:
        """The UNIQUE key decides the race; an inactive row for the key is replaced, an active one
        kept (then it is read back: the winner's row)."""
        now = self.clock()
        rows = await self._write_returning(
            "INSERT INTO thread_links (platform, workspace, channel, thread, user_id, identity, "
            "conversation_id, address, active, created_at, last_used_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, TRUE, %s, %s) "
            "ON CONFLICT (platform, workspace, channel, thread, user_id) DO UPDATE SET "
            "identity = EXCLUDED.identity, conversation_id = EXCLUDED.conversation_id, "
            "address = EXCLUDED.address, active = TRUE, last_used_at = EXCLUDED.last_used_at "
            "WHERE NOT thread_links.active RETURNING *",
            (*_thread(thread), user_id, identity, conversation_id, json.dumps(address), now, now),
        )
        if rows:
            return _link(rows[0])
        link = await self.get(thread, user_id)
        assert link is not None
        return link

    async def touch(self, link_id: int, address: dict[str, Any] | None = None) -> None:
        await self._write(
            "UPDATE thread_links SET last_used_at = %s, address = COALESCE(%s, address) WHERE id = %s",
            (self.clock(), None if address is None else json.dumps(address), link_id),
        )

    async def deactivate(self, link_id: int) -> None:
        await self._write("UPDATE thread_links SET active = FALSE WHERE id = %s", (link_id,))

    async def deactivate_where(self, platform: str, channel: str, thread: str | None = None) -> None:
        sql = "UPDATE thread_links SET active = FALSE WHERE platform = %s AND channel = %s"
        params = [platform, channel]
        if thread is not None:
            sql += " AND thread = %s"
            params.append(thread)
        await self._write(sql, params)

    async def for_conversation(self, conversation_id: str) -> list[ThreadLink]:
        rows = await self._rows(
            "SELECT * FROM thread_links WHERE conversation_id = %s ORDER BY active DESC, last_used_at DESC, id",
            (conversation_id,),
        )
        return [_link(r) for r in rows]

    async def any_active_in_thread(self, thread: ThreadKey) -> bool:
        row = await self._row(f"SELECT 1 AS x FROM thread_links WHERE {THREAD_WHERE} AND active LIMIT 1",
                              _thread(thread))
        return row is not None

    async def remap(self, link_id: int, conversation_id: str, address: dict[str, Any]) -> None:
        await self._write(
            "UPDATE thread_links SET conversation_id = %s, address = %s, active = TRUE, last_used_at = %s "
            "WHERE id = %s",
            (conversation_id, json.dumps(address), self.clock(), link_id),
        )
