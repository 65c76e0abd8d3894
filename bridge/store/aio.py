"""The asynchronous store seam: what the bridge asks of its storage, awaited.

`open_store(BRIDGE_DB)` picks the backend from the setting:

- a SQLite file path (the embedded default, one host) -> the synchronous `bridge.store.Store`
  behind `await` (`bridge.store.sqlite.aio`): SQLite is a local file and every statement takes
  microseconds, so its methods are called directly on the event loop, no threads;
- a `postgresql://…` (or `postgres://…`) URL -> `bridge.store.postgres.PostgresStore`, which
  several `serve`/`poll` processes on several hosts may share.

The protocols below mirror `bridge.store.interfaces` method for method, with the same names,
parameters and semantics (read the guarantees and docstrings there), so converting a call site is
mechanical: `store.links.get(...)` becomes `await store.links.get(...)`. Two differences, both on
the facade: `store.ready` (a property) becomes `await store.ready()`, and `health()`,
`applied_migrations()`, `prune_history()` and `close()` are awaited. `store.kv.namespace(name)`
stays a plain call (it only binds a name); the namespace's methods are awaited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bridge.models import ChatUser, Employee, ThreadKey, ThreadLink
from bridge.store.interfaces import HISTORY_TTL, INBOUND_TTL, QueueItem, new_instance_id

__all__ = [
    "AsyncStore",
    "QueueItem",
    "as_async",
    "is_postgres_url",
    "new_instance_id",
    "open_store",
]


class AsyncLinkQuery(Protocol):
    async def get(self, thread: ThreadKey, user_id: str) -> ThreadLink | None: ...

    async def get_by_id(self, link_id: int) -> ThreadLink | None: ...

    async def insert(
        self, thread: ThreadKey, user_id: str, identity: str, conversation_id: str, address: dict[str, Any]
    ) -> ThreadLink: ...

    async def touch(self, link_id: int, address: dict[str, Any] | None = None) -> None: ...

    async def deactivate(self, link_id: int) -> None: ...

    async def deactivate_where(self, platform: str, channel: str, thread: str | None = None) -> None: ...

    async def for_conversation(self, conversation_id: str) -> list[ThreadLink]: ...

    async def any_active_in_thread(self, thread: ThreadKey) -> bool: ...

    async def remap(self, link_id: int, conversation_id: str, address: dict[str, Any]) -> None: ...


class AsyncEmployeeQuery(Protocol):
    async def get(self, platform: str, workspace: str, user_id: str) -> Employee | None: ...

    async def email_checked_at(self, platform: str, workspace: str, user_id: str) -> float | None: ...

    async def save(self, user: ChatUser, *, email_checked: bool = False, active: bool = False) -> None: ...

    async def by_email(self, email: str) -> list[Employee]: ...

    async def identities(self) -> list[tuple[str, float | None]]: ...

    async def last_active(self) -> Employee | None: ...

    async def active_people(self) -> int: ...

    async def last_activity(self) -> float | None: ...


class AsyncReplyQuery(Protocol):
    async def start(self, link_id: int, owner: str | None = None) -> int: ...

    async def finish(
        self,
        reply_id: int,
        status: str,
        *,
        response_id: str | None = None,
        platform_message_ids: list[str] | None = None,
    ) -> None: ...

    async def checkpoint(self, reply_id: int, checkpoint: dict[str, Any] | None) -> None: ...

    async def streaming_in(self, thread: ThreadKey) -> bool: ...

    async def interrupt_streaming(
        self, owners: Sequence[str] | None = None
    ) -> list[tuple[int, dict[str, Any] | None]]: ...

    async def interrupt_orphans(self, ttl: float) -> list[tuple[int, dict[str, Any] | None]]: ...

    async def mark_shown(self, message_id: str, link_id: int | None, source: str) -> None: ...

    async def was_shown(self, message_id: str) -> bool: ...


class AsyncInboundQuery(Protocol):
    async def claim(self, platform: str, dedupe_id: str) -> bool: ...

    async def prune(self, older_than: float = INBOUND_TTL) -> int: ...


class AsyncEventQuery(Protocol):
    async def claim(
        self,
        event_id: str,
        identity: str,
        conversation_id: str,
        payload: str,
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> bool: ...

    async def finish(self, event_id: str, status: str, detail: str | None = None) -> None: ...

    async def status(self, event_id: str) -> str | None: ...

    async def pending(self, identity: str | None = None) -> list[dict[str, Any]]: ...

    async def counts(self) -> dict[str, int]: ...

    async def recent_for(
        self, platform: str, workspace: str, user_id: str, identity: str | None, limit: int = 5
    ) -> list[dict[str, Any]]: ...


class AsyncCheckpointQuery(Protocol):
    async def get(self, identity: str) -> tuple[str | None, float] | None: ...

    async def start(self, identity: str) -> tuple[str | None, float]: ...

    async def advance(self, identity: str, event_id: str) -> None: ...

    async def reset(self, identity: str) -> None: ...


class AsyncKV(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str) -> None: ...

    async def delete(self, key: str | None = None) -> None: ...

    async def items(self, prefix: str = "") -> list[tuple[str, str]]: ...

    async def prune(self, older_than: float = HISTORY_TTL) -> int: ...


class AsyncKVQuery(Protocol):
    async def get(self, namespace: str, key: str) -> str | None: ...

    async def set(self, namespace: str, key: str, value: str) -> None: ...

    async def delete(self, namespace: str, key: str | None = None) -> None: ...

    async def items(self, namespace: str, prefix: str = "") -> list[tuple[str, str]]: ...

    async def prune(self, namespace: str, older_than: float = HISTORY_TTL) -> int: ...

    def namespace(self, namespace: str) -> AsyncKV: ...


class AsyncInstanceQuery(Protocol):
    async def beat(self, instance_id: str) -> None: ...

    async def alive(self, instance_id: str, ttl: float) -> bool: ...

    async def living(self, ttl: float) -> int: ...

    async def dead(self, ttl: float) -> list[str]: ...

    async def leave(self, instance_id: str) -> None: ...


class AsyncLeaseQuery(Protocol):
    async def acquire(self, name: str, owner: str, ttl: float) -> bool: ...

    async def renew(self, name: str, owner: str, ttl: float) -> bool: ...

    async def release(self, name: str, owner: str) -> None: ...

    async def holder(self, name: str) -> str | None: ...


class AsyncQueueQuery(Protocol):
    async def enqueue(self, platform: str, dedupe_id: str, thread: ThreadKey, user: str, payload: str) -> bool: ...

    async def take(self, owner: str, lease_seconds: float, limit: int = 1) -> list[QueueItem]: ...

    async def extend(self, owner: str, lease_seconds: float, item_ids: Sequence[int] | None = None) -> int: ...

    async def done(self, item_id: int, owner: str) -> bool: ...

    async def release(self, item_id: int, owner: str) -> bool: ...

    async def of_owners(self, owners: Sequence[str]) -> list[QueueItem]: ...

    async def release_owners(self, owners: Sequence[str]) -> list[QueueItem]: ...

    async def release_orphans(self, ttl: float) -> list[QueueItem]: ...

    async def release_expired(self) -> int: ...

    async def counts(self) -> dict[str, int]: ...


class AsyncBudgetQuery(Protocol):
    async def take_token(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> float: ...

    async def try_take(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> bool: ...

    async def refund(self, key: str, burst: float, cost: float = 1.0) -> None: ...

    async def penalize(self, key: str, retry_after: float) -> None: ...


class AsyncStore(Protocol):
    """The facade: one query object per aggregate, plus lifecycle (see `BridgeStore`)."""

    backend: str  # "sqlite" | "postgresql"
    path: str  # BRIDGE_DB as given
    clock: Callable[[], float]

    @property
    def links(self) -> AsyncLinkQuery: ...

    @property
    def employees(self) -> AsyncEmployeeQuery: ...

    @property
    def replies(self) -> AsyncReplyQuery: ...

    @property
    def inbound(self) -> AsyncInboundQuery: ...

    @property
    def events(self) -> AsyncEventQuery: ...

    @property
    def checkpoints(self) -> AsyncCheckpointQuery: ...

    @property
    def kv(self) -> AsyncKVQuery: ...

    @property
    def instances(self) -> AsyncInstanceQuery: ...

    @property
    def leases(self) -> AsyncLeaseQuery: ...

    @property
    def queue(self) -> AsyncQueueQuery: ...

    @property
    def budgets(self) -> AsyncBudgetQuery: ...

    async def ready(self) -> bool:
        """`(await health())[0]`."""
        ...

    async def health(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz. The SQLite reasons of `BridgeStore.health`; PostgreSQL
        adds "database unreachable" (no connection within a short timeout)."""
        ...

    async def applied_migrations(self) -> list[str]: ...

    async def prune_history(self, older_than: float = HISTORY_TTL) -> int: ...

    async def close(self) -> None: ...


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(db: str, *, clock: Callable[[], float] | None = None) -> AsyncStore:
    """Open BRIDGE_DB: migrate it (refusing one written by a newer release) and return the store.
    An unusable database is a `ConfigError` naming BRIDGE_DB (never the URL's password)."""
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    if is_postgres_url(db):
        from bridge.store.postgres import PostgresStore  # psycopg is imported only when used

        return await PostgresStore.open(db, **kwargs)
    from bridge.store.sqlite.aio import AsyncSQLiteStore

    return AsyncSQLiteStore.open(db, **kwargs)


def as_async(store: Any) -> AsyncStore:
    """The async view of a store: an `AsyncStore` as is, a synchronous SQLite `Store` wrapped
    (both share its connection, so code and tests holding the synchronous object see the same
    data)."""
    from bridge.store.sqlite.aio import AsyncSQLiteStore
    from bridge.store.sqlite.database import Store

    if isinstance(store, Store):
        return AsyncSQLiteStore(store)
    return store


AnyStore = Any  # an AsyncStore, or a synchronous SQLite Store that `as_async` wraps
