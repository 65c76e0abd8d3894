"""The durable inbound queue in PostgreSQL.

`enqueue` is one statement: a CTE claims the dedupe row and the item is inserted only when the
claim landed, so both happen or neither. `take` runs in a short transaction that first takes a
transaction-level advisory lock: takes from every replica are serialised (each sees every earlier
take committed), so per-thread order holds even when two enqueues of one thread commit out of id
order; the rows are then picked with `FOR UPDATE SKIP LOCKED` (never waiting on a row another
transaction is finishing). Takes are a few hundred microseconds, so serialising them costs
nothing next to an answer's seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.models import ThreadKey
from bridge.store.interfaces import QueueItem, queue_thread_key
from bridge.store.postgres.guard import PgQuery

LOCK_TAKE = 0x6D77_6272_0002  # pg_advisory_xact_lock key: queue takes ("mwbr" 2)

COLUMNS = ("id, platform, dedupe_id, workspace, channel, thread, user_json, payload, attempts, owner, lease_until, "
           "enqueued_at")

READY = (
    "(q.owner IS NULL OR q.lease_until < %(now)s) "
    "AND NOT EXISTS (SELECT 1 FROM inbound_queue o WHERE o.thread_key = q.thread_key AND o.id < q.id) "
    "AND NOT EXISTS (SELECT 1 FROM inbound_queue o WHERE o.thread_key = q.thread_key AND o.id > q.id "
    "AND o.owner IS NOT NULL AND o.lease_until >= %(now)s)"
)


def _items(rows: list[dict[str, Any]]) -> list[QueueItem]:
    items = [
        QueueItem(
            id=r["id"], platform=r["platform"], dedupe_id=r["dedupe_id"],
            thread=ThreadKey(r["platform"], r["workspace"], r["channel"], r["thread"]), user=r["user_json"],
            payload=r["payload"], attempts=r["attempts"], owner=r["owner"], lease_until=r["lease_until"],
            enqueued_at=r["enqueued_at"],
        )
        for r in rows
    ]
    return sorted(items, key=lambda item: item.id)


class QueueQuery(PgQuery):

    async def enqueue(self, platform: str, dedupe_id: str, thread: ThreadKey, user: str, payload: str) -> bool:
        rows = await self._write_returning(
            "WITH claim AS (INSERT INTO inbound_deliveries (platform, delivery_id, received_at) "
            "VALUES (%(platform)s, %(dedupe)s, %(now)s) ON CONFLICT DO NOTHING RETURNING 1) "
            "INSERT INTO inbound_queue (platform, dedupe_id, workspace, channel, thread, thread_key, user_json, "
            "payload, enqueued_at) SELECT %(platform)s, %(dedupe)s, %(workspace)s, %(channel)s, %(thread)s, "
            "%(key)s, %(user)s, %(payload)s, %(now)s FROM claim RETURNING id",
            {"platform": platform, "dedupe": dedupe_id, "now": self.clock(), "workspace": thread.workspace,
             "channel": thread.channel, "thread": thread.thread, "key": queue_thread_key(thread), "user": user,
             "payload": payload},
        )
        return bool(rows)

    async def take(self, owner: str, lease_seconds: float, limit: int = 1) -> list[QueueItem]:
        now = self.clock()
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_TAKE,))
            cursor = await conn.execute(
                "UPDATE inbound_queue SET owner = %(owner)s, lease_until = %(until)s, attempts = attempts + 1 "
                f"WHERE id IN (SELECT q.id FROM inbound_queue q WHERE {READY} ORDER BY q.id LIMIT %(limit)s "
                f"FOR UPDATE OF q SKIP LOCKED) RETURNING {COLUMNS}",
                {"owner": owner, "until": now + lease_seconds, "now": now, "limit": limit},
            )
            rows = await cursor.fetchall()
        if rows:
            self.availability.recovered()
        return _items(rows)

    async def extend(self, owner: str, lease_seconds: float, item_ids: Sequence[int] | None = None) -> int:
        sql = "UPDATE inbound_queue SET lease_until = %s WHERE owner = %s"
        params: list[Any] = [self.clock() + lease_seconds, owner]
        if item_ids is not None:
            sql += " AND id = ANY(%s::bigint[])"
            params.append(list(item_ids))
        return await self._write(sql, params)

    async def done(self, item_id: int, owner: str) -> bool:
        return await self._write("DELETE FROM inbound_queue WHERE id = %s AND owner = %s", (item_id, owner)) == 1

    async def release(self, item_id: int, owner: str) -> bool:
        count = await self._write(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE id = %s AND owner = %s", (item_id, owner)
        )
        return count == 1

    async def of_owners(self, owners: Sequence[str]) -> list[QueueItem]:
        rows = await self._rows(
            f"SELECT {COLUMNS} FROM inbound_queue WHERE owner = ANY(%s::text[]) ORDER BY id", (list(owners),)
        )
        return _items(rows)

    async def release_owners(self, owners: Sequence[str]) -> list[QueueItem]:
        rows = await self._write_returning(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE owner = ANY(%s::text[]) "
            f"RETURNING {COLUMNS}",
            (list(owners),),
        )
        return _items(rows)

    async def release_orphans(self, ttl: float) -> list[QueueItem]:
        rows = await self._write_returning(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM instances i WHERE i.id = inbound_queue.owner AND i.heartbeat_at >= %s) "
            f"RETURNING {COLUMNS}",
            (self.clock() - ttl,),
        )
        return _items(rows)

    async def release_expired(self) -> int:
        return await self._write(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL AND lease_until < %s",
            (self.clock(),),
        )

    async def counts(self) -> dict[str, int]:
        row = await self._row("SELECT COUNT(*) - COUNT(owner) AS queued, COUNT(owner) AS taken FROM inbound_queue")
        assert row is not None
        return {"queued": int(row["queued"]), "taken": int(row["taken"])}
