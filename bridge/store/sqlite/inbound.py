"""Inbound delivery dedupe in SQLite (webhook retries from Slack and Teams)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store.interfaces import INBOUND_TTL
from bridge.store.sqlite.guard import Query


@dataclass
class InboundQuery(Query):

    def claim(self, platform: str, dedupe_id: str) -> bool:
        """True the first time a delivery is seen, across processes and restarts: the primary key
        decides, and the row count says whether this caller's insert was the one that landed."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO inbound_deliveries (platform, delivery_id, received_at) VALUES (?, ?, ?)",
            (platform, dedupe_id, self.clock()),
        )
        return cursor.rowcount == 1

    def prune(self, older_than: float = INBOUND_TTL) -> int:
        cursor = self.db.execute(
            "DELETE FROM inbound_deliveries WHERE received_at < ?", (self.clock() - older_than,)
        )
        return cursor.rowcount
