"""Inbound delivery dedupe in PostgreSQL (webhook retries from Slack and Teams)."""

from __future__ import annotations

from bridge.store.interfaces import INBOUND_TTL
from bridge.store.postgres.guard import PgQuery


class InboundQuery(PgQuery):

    async def claim(self, platform: str, dedupe_id: str) -> bool:
        count = await self._write(
            "INSERT INTO inbound_deliveries (platform, delivery_id, received_at) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (platform, dedupe_id, self.clock()),
        )
        return count == 1

    async def prune(self, older_than: float = INBOUND_TTL) -> int:
        return await self._write("DELETE FROM inbound_deliveries WHERE received_at < %s", (self.clock() - older_than,))
