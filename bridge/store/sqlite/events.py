"""Moveworks event deliveries in SQLite (claim -> post -> finish)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.store.sqlite.guard import Query

TABLE = "event_deliveries"
PENDING = "('claimed', 'retry', 'new')"


@dataclass
class EventQuery(Query):

    def claim(
        self,
        event_id: str,
        identity: str,
        conversation_id: str,
        payload: str,
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> bool:
        """Claim an event for delivery. False if it was already sent or skipped, or another
        owner's claim has not expired.

        A row left 'claimed' by a crash is claimable again once its lease expired (re-delivery
        after restart; a claim without a lease at once). The conditional UPDATE decides, across
        processes, from the row's status, owner and lease.
        """
        now = self.clock()
        # Plain statements on the delivery hot path: the table helpers introspect the schema on
        # every call (a poller backlog runs these for each event).
        self.db.execute(
            "INSERT OR IGNORE INTO event_deliveries (event_id, identity, conversation_id, status, payload, "
            "claimed_at) VALUES (?, ?, ?, 'new', ?, ?)",
            (event_id, identity, conversation_id, payload, now),
        )
        cursor = self.db.execute(
            "UPDATE event_deliveries SET status = 'claimed', attempts = attempts + 1, claimed_at = ?, "
            "owner = ?, lease_until = ? WHERE event_id = ? AND (status IN ('new', 'retry') OR "
            "(status = 'claimed' AND (lease_until IS NULL OR lease_until < ? OR owner = ?)))",
            (now, owner, None if lease is None else now + lease, event_id, now, owner),
        )
        return cursor.rowcount == 1

    def finish(self, event_id: str, status: str, detail: str | None = None) -> None:
        """status: 'sent', 'skipped' (explicitly not delivered, with a reason) or 'retry'."""
        self.db.execute(  # never claimed: nothing to finish
            "UPDATE event_deliveries SET status = ?, detail = ?, finished_at = ?, lease_until = NULL "
            "WHERE event_id = ?",
            (status, detail, self.clock(), event_id),
        )

    def status(self, event_id: str) -> str | None:
        rows = list(self.db.table(TABLE).rows_where("event_id = ?", [event_id], select="status", limit=1))
        return rows[0]["status"] if rows else None

    def pending(self, identity: str | None = None) -> list[dict[str, Any]]:
        """Claimed-but-unfinished and retryable events, oldest first (re-delivered on start)."""
        where = f"status IN {PENDING}"
        params: list[Any] = []
        if identity is not None:
            where += " AND identity = ?"
            params.append(identity)
        return list(self.db.table(TABLE).rows_where(where, params, order_by="event_id"))

    def counts(self) -> dict[str, int]:
        rows = self.db.query("SELECT status, COUNT(*) AS n FROM event_deliveries GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    def recent_for(
        self, platform: str, workspace: str, user_id: str, identity: str | None, limit: int = 5
    ) -> list[dict[str, Any]]:
        """The newest events of a person: of a conversation mapped to one of their threads, or
        of their Moveworks identity (per-employee modes); newest first."""
        return list(self.db.query(
            "SELECT event_id, status, payload, claimed_at FROM event_deliveries WHERE conversation_id IN "
            "(SELECT conversation_id FROM thread_links WHERE platform = ? AND workspace = ? AND user_id = ?) "
            "OR (? IS NOT NULL AND identity = ?) ORDER BY claimed_at DESC LIMIT ?",
            [platform, workspace, user_id, identity, identity, limit],
        ))
