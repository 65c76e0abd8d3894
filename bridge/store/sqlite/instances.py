"""Running processes and their heartbeats, in SQLite."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store.sqlite.guard import Query


@dataclass
class InstanceQuery(Query):

    def beat(self, instance_id: str) -> None:
        now = self.clock()
        self.db.execute(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat_at = max(instances.heartbeat_at, excluded.heartbeat_at)",
            (instance_id, now, now),
        )

    def alive(self, instance_id: str, ttl: float) -> bool:
        rows = self.db.execute(
            "SELECT 1 FROM instances WHERE id = ? AND heartbeat_at >= ?", (instance_id, self.clock() - ttl)
        ).fetchall()
        return bool(rows)

    def living(self, ttl: float) -> int:
        """How many processes beat within `ttl` (write budgets are split between them)."""
        row = self.db.execute("SELECT COUNT(*) FROM instances WHERE heartbeat_at >= ?",
                              (self.clock() - ttl,)).fetchone()
        return int(row[0])

    def dead(self, ttl: float) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM instances WHERE heartbeat_at < ? ORDER BY heartbeat_at, id", (self.clock() - ttl,)
        ).fetchall()
        return [r[0] for r in rows]

    def leave(self, instance_id: str) -> None:
        self.db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
