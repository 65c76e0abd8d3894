"""Persistence: `Store` over SQLite with append-only migrations."""

from bridge.store.store import Store

__all__ = ["Store"]
