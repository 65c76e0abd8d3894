"""The SQLite store behind the asynchronous seam (`bridge.store.aio.AsyncStore`).

SQLite is a local file and every statement is a small indexed operation, so the synchronous query
objects are called directly on the event loop (as the synchronous call sites do today): no
threads, no second connection. Each aggregate is the synchronous query object wrapped by
`Awaiting`, whose methods are coroutines returning what the synchronous method returns and
raising what it raises (`StoreUnavailable` included), so both seams have one implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bridge.store.interfaces import HISTORY_TTL
from bridge.store.sqlite.database import Store

if TYPE_CHECKING:
    from bridge.store import aio


class Awaiting:
    """Every public method of `target` as a coroutine function; `plain` names stay plain calls
    whose result is wrapped in turn (`kv.namespace(name)` binds a name, it does no I/O)."""

    def __init__(self, target: Any, plain: tuple[str, ...] = ()) -> None:
        self._target = target
        self._plain = plain

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self._target, name)
        if not callable(method):
            return method
        if name in self._plain:
            def bind(*args: Any, **kwargs: Any) -> Awaiting:
                return Awaiting(method(*args, **kwargs))

            wrapped: Callable[..., Any] = bind
        else:
            async def call(*args: Any, **kwargs: Any) -> Any:
                return method(*args, **kwargs)

            wrapped = call
        wrapped.__name__ = name
        wrapped.__doc__ = method.__doc__
        setattr(self, name, wrapped)  # built once per name
        return wrapped

    def __repr__(self) -> str:
        return f"Awaiting({self._target!r})"


class AsyncSQLiteStore:
    """`bridge.store.aio.AsyncStore` over the synchronous SQLite `Store` (available as `.sync`,
    e.g. for call sites not converted yet: both views share one connection)."""

    backend = "sqlite"

    def __init__(self, store: Store) -> None:
        self.sync = store
        self.path = store.path
        self.links = cast("aio.AsyncLinkQuery", Awaiting(store.links))
        self.employees = cast("aio.AsyncEmployeeQuery", Awaiting(store.employees))
        self.replies = cast("aio.AsyncReplyQuery", Awaiting(store.replies))
        self.inbound = cast("aio.AsyncInboundQuery", Awaiting(store.inbound))
        self.events = cast("aio.AsyncEventQuery", Awaiting(store.events))
        self.checkpoints = cast("aio.AsyncCheckpointQuery", Awaiting(store.checkpoints))
        self.kv = cast("aio.AsyncKVQuery", Awaiting(store.kv, plain=("namespace",)))
        self.instances = cast("aio.AsyncInstanceQuery", Awaiting(store.instances))
        self.leases = cast("aio.AsyncLeaseQuery", Awaiting(store.leases))
        self.queue = cast("aio.AsyncQueueQuery", Awaiting(store.queue))
        self.budgets = cast("aio.AsyncBudgetQuery", Awaiting(store.budgets))

    @classmethod
    def open(cls, path: str | Path, *, clock: Callable[[], float] = time.time) -> AsyncSQLiteStore:
        return cls(Store(path, clock=clock))

    @property
    def clock(self) -> Callable[[], float]:
        return self.sync.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.sync.clock = clock

    async def ready(self) -> bool:
        return self.sync.ready

    async def health(self) -> tuple[bool, str]:
        return self.sync.health()

    async def applied_migrations(self) -> list[str]:
        return self.sync.applied_migrations()

    async def prune_history(self, older_than: float = HISTORY_TTL) -> int:
        return self.sync.prune_history(older_than)

    async def close(self) -> None:
        self.sync.close()


def _conforms(store: AsyncSQLiteStore) -> aio.AsyncStore:
    return store  # mypy checks the facade against the protocol here
