"""The one place where PostgreSQL failures that mean "the database cannot be used now" become
`bridge.errors.StoreUnavailable` (the PostgreSQL twin of `bridge.store.sqlite.guard`).

Two kinds, because they recover differently:

- the connection: no connection within the pool's timeout, a connection lost mid-statement, the
  server shutting down or refusing connections (SQLSTATE classes 08, 57P, 53300 …). Any later
  successful round trip clears it.
- writes: a full disk (53100), a read-only server (25006: a standby after a failover, or
  `default_transaction_read_only`), an I/O error (58030). Only a later write that changes rows
  (or the readiness probe's own write) clears it, as with SQLite.

Callers get one exception type whose message is a fixed phrase (never data, never SQL, never
the URL); every other error (a constraint the logic relies on, a programming error) passes
through unchanged. Every public coroutine method of a `PgQuery` subclass is guarded when the
class is created.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from bridge.errors import ConfigError, StoreUnavailable
from bridge.store.sqlite.guard import Availability

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("bridge.store")

CONNECTION = "connection"
WRITES = "writes"

UNREACHABLE = "database unreachable"
FAIL_FAST = 1.0  # seconds a call waits for a connection while the database is known unreachable

# SQLSTATE (exact, then class) -> (fixed phrase, kind)
_BY_STATE: dict[str, tuple[str, str]] = {
    "53100": ("database or disk is full", WRITES),
    "53200": ("database out of memory", CONNECTION),
    "53300": ("too many connections to the database", CONNECTION),
    "25006": ("database is read-only", WRITES),
    "58030": ("disk I/O error", WRITES),
    "57014": ("database statement timed out", CONNECTION),
    "57P01": ("database is shutting down", CONNECTION),
    "57P02": ("database is shutting down", CONNECTION),
    "57P03": ("database is not accepting connections yet", CONNECTION),
    "XX001": ("database disk image is malformed", WRITES),
    "XX002": ("database index is corrupted", WRITES),
}
_BY_CLASS: dict[str, tuple[str, str]] = {
    "08": (UNREACHABLE, CONNECTION),
    "53": ("database out of resources", CONNECTION),
    "57": ("database unavailable", CONNECTION),
    "58": ("database system error", WRITES),
}


def classify(exc: BaseException) -> tuple[str, str] | None:
    """(fixed phrase, kind) when `exc` means the database cannot be used now, else None."""
    if isinstance(exc, PoolTimeout):
        return UNREACHABLE, CONNECTION
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate
    if state is None:
        # Raised by the client: a lost connection, a closed connection, no server at all.
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return UNREACHABLE, CONNECTION
        return None
    return _BY_STATE.get(state) or _BY_CLASS.get(state[:2])


def unavailable_reason(exc: BaseException) -> str | None:
    kind = classify(exc)
    return kind[0] if kind else None


def startup_error(exc: BaseException) -> ConfigError:
    """The one-line start-up error for a PostgreSQL database that cannot be used (naming
    BRIDGE_DB and what to fix; never the URL, which may hold a password)."""
    text = str(exc).lower()
    if "authentication failed" in text or ("role" in text and "does not exist" in text):
        reason, fix = "authentication failed", "check the user and password in the URL and the server's pg_hba.conf"
    elif "database" in text and "does not exist" in text:
        reason, fix = "the database does not exist", "create it (CREATE DATABASE) or fix the URL's database name"
    elif (kind := classify(exc)) is not None and kind[0] != UNREACHABLE:
        reason, fix = kind[0], "fix the PostgreSQL server"
    elif isinstance(exc, psycopg.Error) and exc.sqlstate not in (None, "08000", "08001", "08006"):
        reason, fix = f"error {exc.sqlstate}", "check the database and the URL"
    else:
        reason, fix = "server not reachable", "check the host and port in the URL and that PostgreSQL 14 or newer runs"
    return ConfigError(f"BRIDGE_DB: cannot use the PostgreSQL database ({reason}); {fix}")


class PgAvailability(Availability):
    """`Availability` that knows which kind of failure it is tracking."""

    def __init__(self) -> None:
        super().__init__()
        self.kind: str | None = None

    def failed(self, reason: str) -> None:
        if self.reason is None and self.kind == CONNECTION:
            log.error("BRIDGE_DB: the database cannot be reached (%s); /readyz answers 503 until it can", reason)
            self.reason = reason  # logged here, not again by Availability.failed
        super().failed(reason)

    def failed_kind(self, reason: str, kind: str) -> None:
        # a write failure is not hidden by a later connection failure: it needs a write to clear
        if self.kind != WRITES or kind == WRITES:
            self.kind = kind
        self.failed(reason if self.kind == kind else self.reason or reason)

    def reached(self) -> None:
        """A round trip succeeded: a connection failure is over."""
        if self.reason is not None and self.kind == CONNECTION:
            self.recovered()

    def recovered(self) -> None:
        if self.reason is not None and self.kind == CONNECTION:
            log.warning("BRIDGE_DB: the database is reachable again")
            self.reason = None
        super().recovered()
        self.kind = None


F = TypeVar("F", bound=Callable[..., Any])


def unavailable(availability: PgAvailability, exc: BaseException) -> StoreUnavailable | None:
    """Record `exc` and return the `StoreUnavailable` to raise, or None to let it pass."""
    kind = classify(exc)
    if kind is None:
        return None
    reason, which = kind
    availability.failed_kind(reason, which)
    return StoreUnavailable(f"the database cannot be used now: {reason}")


def guard(method: F) -> F:
    """Wrap a coroutine method of an object with `availability`."""

    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        availability: PgAvailability = self.availability
        try:
            result = await method(self, *args, **kwargs)
        except (psycopg.Error, PoolTimeout) as exc:
            error = unavailable(availability, exc)
            if error is None:
                raise
            raise error from exc
        availability.reached()
        return result

    return guarded  # type: ignore[return-value]


class Pool:
    """Holds the store's connection pool (one object shared by the query objects, so the store
    can replace a pool that stopped reconnecting)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self.fail_fast = FAIL_FAST


@dataclass
class PgQuery:
    """Base of the PostgreSQL query objects: the pool, the store's clock and its availability.
    Every public coroutine method a subclass defines is wrapped by `guard`. Connections are in
    autocommit mode with dict rows: one statement is one transaction unless a method opens one."""

    db: Pool
    clock: Callable[[], float]
    availability: PgAvailability

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(value):
                setattr(cls, name, guard(value))

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; while the database is known unreachable, callers fail within
        FAIL_FAST seconds instead of each waiting the pool's full timeout."""
        timeout = self.db.fail_fast if self.availability.kind == CONNECTION else None
        async with self.db.pool.connection(timeout=timeout) as conn:
            yield conn

    async def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def _row(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def _write(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run a write; return its row count. A write that changed rows ends a write failure."""
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            count = cursor.rowcount
        if count > 0:
            self.availability.recovered()
        return count

    async def _write_returning(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        if rows:
            self.availability.recovered()
        return rows
