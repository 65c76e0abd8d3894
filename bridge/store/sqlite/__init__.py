"""The SQLite backend of the bridge's store: one query object per aggregate behind `Store`."""

from bridge.store.sqlite.database import Store

__all__ = ["Store"]
