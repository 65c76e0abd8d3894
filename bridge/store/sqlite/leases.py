"""Named roles held by one owner until they expire (the one active poller), in SQLite."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store.sqlite.guard import Query


@dataclass
class LeaseQuery(Query):

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """One upsert decides: the row is written only when the role is free, expired or already
        `owner`'s, and RETURNING says whether it was."""
        now = self.clock()
        rows = self.db.execute(
            "INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
            "acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at "
            "ELSE excluded.acquired_at END "
            "WHERE leases.owner = excluded.owner OR leases.expires_at < ? RETURNING owner",
            (name, owner, now, now + ttl, now),
        ).fetchall()
        return bool(rows)

    def renew(self, name: str, owner: str, ttl: float) -> bool:
        now = self.clock()
        cursor = self.db.execute(
            "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ?", (now + ttl, name, owner)
        )
        return cursor.rowcount == 1

    def release(self, name: str, owner: str) -> None:
        self.db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    def holder(self, name: str) -> str | None:
        rows = self.db.execute(
            "SELECT owner FROM leases WHERE name = ? AND expires_at >= ?", (name, self.clock())
        ).fetchall()
        return rows[0][0] if rows else None
