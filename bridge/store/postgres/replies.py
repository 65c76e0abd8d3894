"""Replies (answers streamed into chat threads) and shown messages, in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.models import ThreadKey
from bridge.store.interfaces import STREAMING_STALE
from bridge.store.postgres.guard import PgQuery


def _interrupted(rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any] | None]]:
    rows = sorted(rows, key=lambda r: r["id"])
    return [(r["link_id"], json.loads(r["checkpoint"]) if r["checkpoint"] else None) for r in rows]


class ReplyQuery(PgQuery):

    async def start(self, link_id: int, owner: str | None = None) -> int:
        now = self.clock()
        rows = await self._write_returning(
            "INSERT INTO replies (link_id, status, owner, started_at, updated_at) "
            "VALUES (%s, 'streaming', %s, %s, %s) RETURNING id",
            (link_id, owner, now, now),
        )
        return int(rows[0]["id"])

    async def finish(
        self,
        reply_id: int,
        status: str,
        *,
        response_id: str | None = None,
        platform_message_ids: list[str] | None = None,
    ) -> None:
        await self._write(
            "UPDATE replies SET status = %s, updated_at = %s, response_id = COALESCE(%s, response_id), "
            "platform_message_ids = COALESCE(%s, platform_message_ids) WHERE id = %s",
            (status, self.clock(), response_id,
             None if platform_message_ids is None else json.dumps(platform_message_ids), reply_id),
        )

    async def checkpoint(self, reply_id: int, checkpoint: dict[str, Any] | None) -> None:
        await self._write(
            "UPDATE replies SET checkpoint = %s, updated_at = %s WHERE id = %s",
            (json.dumps(checkpoint) if checkpoint is not None else None, self.clock(), reply_id),
        )

    async def streaming_in(self, thread: ThreadKey) -> bool:
        row = await self._row(
            "SELECT 1 AS x FROM replies r JOIN thread_links l ON l.id = r.link_id "
            "WHERE r.status = 'streaming' AND r.updated_at > %s AND l.platform = %s "
            "AND l.workspace = %s AND l.channel = %s AND l.thread = %s LIMIT 1",
            (self.clock() - STREAMING_STALE, thread.platform, thread.workspace, thread.channel, thread.thread),
        )
        return row is not None

    async def interrupt_streaming(self, owners: Sequence[str] | None = None) -> list[tuple[int, dict[str, Any] | None]]:
        sql = "UPDATE replies SET status = 'interrupted', updated_at = %s WHERE status = 'streaming'"
        params: list[Any] = [self.clock()]
        if owners is not None:
            sql += " AND owner = ANY(%s::text[])"
            params.append(list(owners))
        return _interrupted(await self._write_returning(sql + " RETURNING id, link_id, checkpoint", params))

    async def interrupt_orphans(self, ttl: float) -> list[tuple[int, dict[str, Any] | None]]:
        """One statement: under READ COMMITTED a racing process re-checks `status` on the row it
        waited for, so each reply is returned to exactly one caller."""
        now = self.clock()
        rows = await self._write_returning(
            "UPDATE replies SET status = 'interrupted', updated_at = %s WHERE status = 'streaming' AND ("
            "(owner IS NULL AND updated_at < %s) OR (owner IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM instances i WHERE i.id = replies.owner AND i.heartbeat_at >= %s))) "
            "RETURNING id, link_id, checkpoint",
            (now, now - STREAMING_STALE, now - ttl),
        )
        return _interrupted(rows)

    async def mark_shown(self, message_id: str, link_id: int | None, source: str) -> None:
        await self._write(
            "INSERT INTO shown_messages (message_id, link_id, source, shown_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (message_id) DO NOTHING",
            (message_id, link_id, source, self.clock()),
        )

    async def was_shown(self, message_id: str) -> bool:
        return await self._row("SELECT 1 AS x FROM shown_messages WHERE message_id = %s", (message_id,)) is not None
