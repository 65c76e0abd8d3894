"""Moveworks event deliveries in PostgreSQL (claim -> post -> finish)."""

from __future__ import annotations

from typing import Any

from bridge.store.postgres.guard import PgQuery

PENDING = "('claimed', 'retry', 'new')"


class EventQuery(PgQuery):

    async def claim(
        self,
        event_id: str,
        identity: str,
        conversation_id: str,
        payload: str,
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> bool:
        """One statement: a new event is inserted claimed; a known one is claimed again only when
        it is retryable or its claim's lease expired (or is `owner`'s), decided on the row."""
        now = self.clock()
        rows = await self._write_returning(
            "INSERT INTO event_deliveries (event_id, identity, conversation_id, status, attempts, payload, "
            "claimed_at, owner, lease_until) VALUES (%(event)s, %(identity)s, %(conversation)s, 'claimed', 1, "
            "%(payload)s, %(now)s, %(owner)s, %(until)s) "
            "ON CONFLICT (event_id) DO UPDATE SET status = 'claimed', attempts = event_deliveries.attempts + 1, "
            "claimed_at = %(now)s, owner = %(owner)s, lease_until = %(until)s "
            "WHERE event_deliveries.status IN ('new', 'retry') OR (event_deliveries.status = 'claimed' AND "
            "(event_deliveries.lease_until IS NULL OR event_deliveries.lease_until < %(now)s "
            "OR event_deliveries.owner = %(owner)s)) RETURNING 1 AS claimed",
            {"event": event_id, "identity": identity, "conversation": conversation_id, "payload": payload,
             "now": now, "owner": owner, "until": None if lease is None else now + lease},
        )
        return bool(rows)

    async def finish(self, event_id: str, status: str, detail: str | None = None) -> None:
        await self._write(
            "UPDATE event_deliveries SET status = %s, detail = %s, finished_at = %s, lease_until = NULL "
            "WHERE event_id = %s",
            (status, detail, self.clock(), event_id),
        )

    async def status(self, event_id: str) -> str | None:
        row = await self._row("SELECT status FROM event_deliveries WHERE event_id = %s", (event_id,))
        return row["status"] if row else None

    async def pending(self, identity: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT * FROM event_deliveries WHERE status IN {PENDING}"
        params: list[Any] = []
        if identity is not None:
            sql += " AND identity = %s"
            params.append(identity)
        return await self._rows(sql + " ORDER BY event_id", params)

    async def counts(self) -> dict[str, int]:
        rows = await self._rows("SELECT status, COUNT(*) AS n FROM event_deliveries GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    async def recent_for(
        self, platform: str, workspace: str, user_id: str, identity: str | None, limit: int = 5
    ) -> list[dict[str, Any]]:
        return await self._rows(
            "SELECT event_id, status, payload, claimed_at FROM event_deliveries WHERE conversation_id IN "
            "(SELECT conversation_id FROM thread_links WHERE platform = %s AND workspace = %s AND user_id = %s) "
            "OR (%s::text IS NOT NULL AND identity = %s) ORDER BY claimed_at DESC LIMIT %s",
            (platform, workspace, user_id, identity, identity, limit),
        )
