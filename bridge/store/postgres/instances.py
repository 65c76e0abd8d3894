"""Running processes and their heartbeats, in PostgreSQL."""

from __future__ import annotations

from bridge.store.postgres.guard import PgQuery


class InstanceQuery(PgQuery):

    async def beat(self, instance_id: str) -> None:
        now = self.clock()
        await self._write(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat_at = GREATEST(instances.heartbeat_at, EXCLUDED.heartbeat_at)",
            (instance_id, now, now),
        )

    async def alive(self, instance_id: str, ttl: float) -> bool:
        row = await self._row(
            "SELECT 1 AS x FROM instances WHERE id = %s AND heartbeat_at >= %s", (instance_id, self.clock() - ttl)
        )
        return row is not None

    async def living(self, ttl: float) -> int:
        """How many processes beat within `ttl` (write budgets are split between them)."""
        row = await self._row("SELECT COUNT(*) AS n FROM instances WHERE heartbeat_at >= %s", (self.clock() - ttl,))
        return int(row["n"]) if row is not None else 0

    async def dead(self, ttl: float) -> list[str]:
        rows = await self._rows(
            "SELECT id FROM instances WHERE heartbeat_at < %s ORDER BY heartbeat_at, id", (self.clock() - ttl,)
        )
        return [r["id"] for r in rows]

    async def leave(self, instance_id: str) -> None:
        await self._write("DELETE FROM instances WHERE id = %s", (instance_id,))
