"""Persistence: the store seam, its two backends and their append-only migrations.

- `bridge.store.interfaces`: the backend-neutral contract (one protocol per aggregate plus the
  facade), synchronous; `bridge.store.aio`: the same, awaited, and `open_store(BRIDGE_DB)`.
- `bridge.store.sqlite`: `Store`, the SQLite implementation (the embedded default, one host);
  behind the async seam it is called directly on the event loop (`bridge.store.sqlite.aio`).
- `bridge.store.postgres`: `PostgresStore` (`BRIDGE_DB=postgresql://…`), shared by any number
  of processes on any number of hosts.
- `bridge.store.migrations` (SQLite) and `bridge.store.postgres.migrations` define the schema:
  the same named migrations, in each database's SQL.
- `bridge.store.codec`: the JSON form of a queued `Inbound`.
"""

from bridge.store.aio import AsyncStore, open_store
from bridge.store.sqlite import Store

__all__ = ["AsyncStore", "Store", "open_store"]
