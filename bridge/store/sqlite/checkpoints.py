"""Per-identity poller checkpoints in SQLite."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils.db import NotFoundError

from bridge.store.sqlite.guard import Query

TABLE = "poll_checkpoints"


@dataclass
class CheckpointQuery(Query):

    def get(self, identity: str) -> tuple[str | None, float] | None:
        """(last handled event id, when polling of this identity started) or None if new."""
        rows = list(
            self.db.table(TABLE).rows_where("identity = ?", [identity], select="last_event_id, started_at", limit=1)
        )
        return (rows[0]["last_event_id"], rows[0]["started_at"]) if rows else None

    def start(self, identity: str) -> tuple[str | None, float]:
        """Create the checkpoint if it is missing (the primary key decides which process's
        start wins) and return the stored one."""
        now = self.clock()
        self.db.table(TABLE).insert(
            {"identity": identity, "last_event_id": None, "started_at": now, "updated_at": now}, ignore=True
        )
        checkpoint = self.get(identity)
        assert checkpoint is not None
        return checkpoint

    def advance(self, identity: str, event_id: str) -> None:
        """Advance only: a checkpoint never moves backwards (the conflict rule compares in the
        database, so racing processes cannot undo each other)."""
        now = self.clock()
        self.db.execute(
            "INSERT INTO poll_checkpoints (identity, last_event_id, started_at, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (identity) DO UPDATE SET "
            "last_event_id = excluded.last_event_id, updated_at = excluded.updated_at "
            "WHERE poll_checkpoints.last_event_id IS NULL "
            "OR poll_checkpoints.last_event_id < excluded.last_event_id",
            (identity, event_id, now, now),
        )

    def reset(self, identity: str) -> None:
        """After INVALID_CURSOR: start again from 'now' (logged by the caller)."""
        now = self.clock()
        try:
            self.db.table(TABLE).update(identity, {"last_event_id": None, "started_at": now, "updated_at": now})
        except NotFoundError:
            pass  # no checkpoint yet: the next start() begins from 'now' anyway
