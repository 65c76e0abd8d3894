"""The durable inbound queue in SQLite.

`enqueue` claims the delivery's dedupe row and inserts the item in one IMMEDIATE transaction;
`take` is one UPDATE … RETURNING over the ready heads of their threads. SQLite runs every
write under the database's single write lock, so each statement sees every earlier commit and
no two processes can take the same item, or two items of one thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.models import ThreadKey
from bridge.store.interfaces import QueueItem, queue_thread_key
from bridge.store.sqlite.guard import Query

COLUMNS = ("id, platform, dedupe_id, workspace, channel, thread, user_json, payload, attempts, owner, lease_until, "
           "enqueued_at")

# An item is ready when nobody holds a live lease on it, and it is the head of its thread: no
# older item of the thread is left, and no other item of the thread is in progress (an item
# whose enqueue committed late must not overtake one already being answered).
READY = (
    "(q.owner IS NULL OR q.lease_until < :now) "
    "AND NOT EXISTS (SELECT 1 FROM inbound_queue o WHERE o.thread_key = q.thread_key AND o.id < q.id) "
    "AND NOT EXISTS (SELECT 1 FROM inbound_queue o WHERE o.thread_key = q.thread_key AND o.id > q.id "
    "AND o.owner IS NOT NULL AND o.lease_until >= :now)"
)


def _item(row: Sequence[Any]) -> QueueItem:
    (item_id, platform, dedupe_id, workspace, channel, thread, user_json, payload, attempts, owner, lease_until,
     enqueued_at) = row
    return QueueItem(
        id=item_id, platform=platform, dedupe_id=dedupe_id, thread=ThreadKey(platform, workspace, channel, thread),
        user=user_json, payload=payload, attempts=attempts, owner=owner, lease_until=lease_until,
        enqueued_at=enqueued_at,
    )


def _items(rows: list[Any]) -> list[QueueItem]:
    return sorted((_item(r) for r in rows), key=lambda item: item.id)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


@dataclass
class QueueQuery(Query):

    def enqueue(self, platform: str, dedupe_id: str, thread: ThreadKey, user: str, payload: str) -> bool:
        now = self.clock()
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = conn.execute(
                "INSERT OR IGNORE INTO inbound_deliveries (platform, delivery_id, received_at) VALUES (?, ?, ?)",
                (platform, dedupe_id, now),
            ).rowcount == 1
            if fresh:
                conn.execute(
                    "INSERT INTO inbound_queue (platform, dedupe_id, workspace, channel, thread, thread_key, "
                    "user_json, payload, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (platform, dedupe_id, thread.workspace, thread.channel, thread.thread, queue_thread_key(thread),
                     user, payload, now),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return fresh

    def take(self, owner: str, lease_seconds: float, limit: int = 1) -> list[QueueItem]:
        now = self.clock()
        rows = self.db.execute(
            "UPDATE inbound_queue SET owner = :owner, lease_until = :until, attempts = attempts + 1 "
            f"WHERE id IN (SELECT q.id FROM inbound_queue q WHERE {READY} ORDER BY q.id LIMIT :limit) "
            f"RETURNING {COLUMNS}",
            {"owner": owner, "until": now + lease_seconds, "now": now, "limit": limit},
        ).fetchall()
        return _items(rows)

    def extend(self, owner: str, lease_seconds: float, item_ids: Sequence[int] | None = None) -> int:
        sql = "UPDATE inbound_queue SET lease_until = ? WHERE owner = ?"
        params: list[Any] = [self.clock() + lease_seconds, owner]
        if item_ids is not None:
            sql += f" AND id IN ({_marks(item_ids)})"
            params.extend(item_ids)
        return self.db.execute(sql, params).rowcount

    def done(self, item_id: int, owner: str) -> bool:
        return self.db.execute("DELETE FROM inbound_queue WHERE id = ? AND owner = ?", (item_id, owner)).rowcount == 1

    def release(self, item_id: int, owner: str) -> bool:
        cursor = self.db.execute(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?", (item_id, owner)
        )
        return cursor.rowcount == 1

    def of_owners(self, owners: Sequence[str]) -> list[QueueItem]:
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM inbound_queue WHERE owner IN ({_marks(owners)}) ORDER BY id", list(owners)
        ).fetchall()
        return _items(rows)

    def release_owners(self, owners: Sequence[str]) -> list[QueueItem]:
        rows = self.db.execute(
            f"UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE owner IN ({_marks(owners)}) "
            f"RETURNING {COLUMNS}",
            list(owners),
        ).fetchall()
        return _items(rows)

    def release_orphans(self, ttl: float) -> list[QueueItem]:
        rows = self.db.execute(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL AND owner NOT IN "
            f"(SELECT id FROM instances WHERE heartbeat_at >= ?) RETURNING {COLUMNS}",
            (self.clock() - ttl,),
        ).fetchall()
        return _items(rows)

    def release_expired(self) -> int:
        return self.db.execute(
            "UPDATE inbound_queue SET owner = NULL, lease_until = NULL WHERE owner IS NOT NULL AND lease_until < ?",
            (self.clock(),),
        ).rowcount

    def counts(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT COUNT(*) - COUNT(owner), COUNT(owner) FROM inbound_queue"
        ).fetchone()
        return {"queued": row[0], "taken": row[1]}
