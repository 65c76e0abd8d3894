"""Persistence: `Store` (SQLite) with append-only migrations.

`bridge.store.interfaces` is the backend-neutral contract (one protocol per aggregate plus the
facade); `bridge.store.sqlite` implements it; `bridge.store.migrations` defines the schema.
"""

from bridge.store.sqlite import Store

__all__ = ["Store"]
