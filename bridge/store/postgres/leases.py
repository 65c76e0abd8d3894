"""Named roles held by one owner until they expire (the one active poller), in PostgreSQL."""

from __future__ import annotations

from bridge.store.postgres.guard import PgQuery


class LeaseQuery(PgQuery):

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """One upsert decides (the row lock serialises racing acquirers; the loser re-checks the
        condition on the winner's row and gets no row back)."""
        now = self.clock()
        rows = await self._write_returning(
            "INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES (%(name)s, %(owner)s, %(now)s, "
            "%(until)s) ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, "
            "acquired_at = CASE WHEN leases.owner = EXCLUDED.owner THEN leases.acquired_at "
            "ELSE EXCLUDED.acquired_at END "
            "WHERE leases.owner = EXCLUDED.owner OR leases.expires_at < %(now)s RETURNING owner",
            {"name": name, "owner": owner, "now": now, "until": now + ttl},
        )
        return bool(rows)

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        count = await self._write(
            "UPDATE leases SET expires_at = %s WHERE name = %s AND owner = %s", (self.clock() + ttl, name, owner)
        )
        return count == 1

    async def release(self, name: str, owner: str) -> None:
        await self._write("DELETE FROM leases WHERE name = %s AND owner = %s", (name, owner))

    async def holder(self, name: str) -> str | None:
        row = await self._row(
            "SELECT owner FROM leases WHERE name = %s AND expires_at >= %s", (name, self.clock())
        )
        return row["owner"] if row else None
