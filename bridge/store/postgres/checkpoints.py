"""Per-identity poller checkpoints in PostgreSQL."""

from __future__ import annotations

from bridge.store.postgres.guard import PgQuery


class CheckpointQuery(PgQuery):

    async def get(self, identity: str) -> tuple[str | None, float] | None:
        row = await self._row("SELECT last_event_id, started_at FROM poll_checkpoints WHERE identity = %s", (identity,))
        return (row["last_event_id"], row["started_at"]) if row else None

    async def start(self, identity: str) -> tuple[str | None, float]:
        now = self.clock()
        await self._write(
            "INSERT INTO poll_checkpoints (identity, last_event_id, started_at, updated_at) "
            "VALUES (%s, NULL, %s, %s) ON CONFLICT DO NOTHING",
            (identity, now, now),
        )
        checkpoint = await self.get(identity)
        assert checkpoint is not None
        return checkpoint

    async def advance(self, identity: str, event_id: str) -> None:
        """Advance only: the conflict rule compares in the database (byte order, COLLATE "C")."""
        now = self.clock()
        await self._write(
            "INSERT INTO poll_checkpoints (identity, last_event_id, started_at, updated_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (identity) DO UPDATE SET "
            "last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at "
            "WHERE poll_checkpoints.last_event_id IS NULL "
            "OR poll_checkpoints.last_event_id < EXCLUDED.last_event_id",
            (identity, event_id, now, now),
        )

    async def reset(self, identity: str) -> None:
        now = self.clock()
        await self._write(
            "UPDATE poll_checkpoints SET last_event_id = NULL, started_at = %s, updated_at = %s WHERE identity = %s",
            (now, now, identity),
        )
