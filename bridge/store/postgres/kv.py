"""Small key/value namespaces in PostgreSQL (Slack installations, Teams references, …)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store.interfaces import HISTORY_TTL
from bridge.store.postgres.guard import PgQuery


class KVQuery(PgQuery):

    async def get(self, namespace: str, key: str) -> str | None:
        row = await self._row("SELECT value FROM kv WHERE namespace = %s AND key = %s", (namespace, key))
        return row["value"] if row else None

    async def set(self, namespace: str, key: str, value: str) -> None:
        await self._write(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            (namespace, key, value, self.clock()),
        )

    async def delete(self, namespace: str, key: str | None = None) -> None:
        if key is None:
            await self._write("DELETE FROM kv WHERE namespace = %s", (namespace,))
        else:
            await self._write("DELETE FROM kv WHERE namespace = %s AND key = %s", (namespace, key))

    async def prune(self, namespace: str, older_than: float = HISTORY_TTL) -> int:
        return await self._write(
            "DELETE FROM kv WHERE namespace = %s AND updated_at < %s", (namespace, self.clock() - older_than)
        )

    async def items(self, namespace: str, prefix: str = "") -> list[tuple[str, str]]:
        rows = await self._rows(
            "SELECT key, value FROM kv WHERE namespace = %s AND starts_with(key, %s) ORDER BY key",
            (namespace, prefix),
        )
        return [(r["key"], r["value"]) for r in rows]

    def namespace(self, namespace: str) -> KVNamespace:
        return KVNamespace(self, namespace)


@dataclass(frozen=True)
class KVNamespace:
    """One namespace of the kv table, for the component that owns it."""

    kv: KVQuery
    namespace: str

    async def get(self, key: str) -> str | None:
        return await self.kv.get(self.namespace, key)

    async def set(self, key: str, value: str) -> None:
        await self.kv.set(self.namespace, key, value)

    async def delete(self, key: str | None = None) -> None:
        await self.kv.delete(self.namespace, key)

    async def items(self, prefix: str = "") -> list[tuple[str, str]]:
        return await self.kv.items(self.namespace, prefix)

    async def prune(self, older_than: float = HISTORY_TTL) -> int:
        return await self.kv.prune(self.namespace, older_than)
