"""Small key/value namespaces in SQLite (Slack installations, Teams references, …)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store.interfaces import HISTORY_TTL
from bridge.store.sqlite.guard import Query

TABLE = "kv"


@dataclass
class KVQuery(Query):

    def get(self, namespace: str, key: str) -> str | None:
        rows = list(
            self.db.table(TABLE).rows_where("namespace = ? AND key = ?", [namespace, key], select="value", limit=1)
        )
        return rows[0]["value"] if rows else None

    def set(self, namespace: str, key: str, value: str) -> None:
        # Plain SQL, not sqlite-utils' upsert: that one probes ON CONFLICT support with a CREATE
        # TABLE once per connection, and when the probe fails (a full disk) it falls back for
        # good to INSERT OR IGNORE + UPDATE, which silently stores nothing for a new key.
        self.db.execute(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (namespace, key, value, self.clock()),
        )

    def delete(self, namespace: str, key: str | None = None) -> None:
        """Delete one key, or the whole namespace when `key` is None."""
        if key is None:
            self.db.table(TABLE).delete_where("namespace = ?", [namespace])
        else:
            self.db.table(TABLE).delete_where("namespace = ? AND key = ?", [namespace, key])

    def prune(self, namespace: str, older_than: float = HISTORY_TTL) -> int:
        """Drop entries of `namespace` not written for `older_than` seconds."""
        return self.db.execute(
            "DELETE FROM kv WHERE namespace = ? AND updated_at < ?", (namespace, self.clock() - older_than)
        ).rowcount

    def items(self, namespace: str, prefix: str = "") -> list[tuple[str, str]]:
        rows = self.db.table(TABLE).rows_where(
            "namespace = ? AND substr(key, 1, ?) = ?", [namespace, len(prefix), prefix],
            select="key, value", order_by="key",
        )
        return [(r["key"], r["value"]) for r in rows]

    def namespace(self, namespace: str) -> KVNamespace:
        return KVNamespace(self, namespace)


@dataclass(frozen=True)
class KVNamespace:
    """One namespace of the kv table, for the component that owns it."""

    kv: KVQuery
    namespace: str

    def get(self, key: str) -> str | None:
        return self.kv.get(self.namespace, key)

    def set(self, key: str, value: str) -> None:
        self.kv.set(self.namespace, key, value)

    def delete(self, key: str | None = None) -> None:
        """Delete one key, or the whole namespace when `key` is None."""
        self.kv.delete(self.namespace, key)

    def items(self, prefix: str = "") -> list[tuple[str, str]]:
        return self.kv.items(self.namespace, prefix)

    def prune(self, older_than: float = HISTORY_TTL) -> int:
        return self.kv.prune(self.namespace, older_than)
