"""The PostgreSQL store: the pool, migrations at start-up, readiness, and the facade holding one
query object per aggregate (the twin of `bridge.store.sqlite.database.Store`, asynchronous)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge.errors import ConfigError, StoreUnavailable
from bridge.store.interfaces import HISTORY_TTL
from bridge.store.postgres import migrations
from bridge.store.postgres.budgets import BudgetQuery
from bridge.store.postgres.checkpoints import CheckpointQuery
from bridge.store.postgres.employees import EmployeeQuery
from bridge.store.postgres.events import EventQuery
from bridge.store.postgres.guard import CONNECTION, PgAvailability, Pool, guard, startup_error, unavailable
from bridge.store.postgres.inbound import InboundQuery
from bridge.store.postgres.instances import InstanceQuery
from bridge.store.postgres.kv import KVQuery
from bridge.store.postgres.leases import LeaseQuery
from bridge.store.postgres.links import LinkQuery
from bridge.store.postgres.queue import QueueQuery
from bridge.store.postgres.replies import ReplyQuery

if TYPE_CHECKING:
    from bridge.store import aio

log = logging.getLogger("bridge.store")

MIN_SERVER_VERSION = 140000  # PostgreSQL 14
CONNECT_TIMEOUT = 5  # seconds, unless the URL says `connect_timeout=`
POOL_TIMEOUT = 5.0  # seconds a store call waits for a connection before StoreUnavailable
HEALTH_TIMEOUT = 2.0  # seconds /readyz waits for a connection
RECONNECT_TIMEOUT = 10.0  # a pool slot stops retrying after this; the next call starts afresh
PROBE_INTERVAL = 10.0  # seconds between write probes by health() while writes are failing
PROBE_NAMESPACE = "bridge.store"


def connection_kwargs(url: str) -> dict[str, Any]:
    """Every connection: autocommit (one statement, one transaction, unless a method opens one),
    rows as dicts, and a connect timeout unless the URL sets one."""
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
    if "connect_timeout" not in conninfo_to_dict(url):
        kwargs["connect_timeout"] = CONNECT_TIMEOUT
    return kwargs


async def _probe(conn: Any, now: float) -> None:
    """Commit a real write that leaves nothing behind (a kv row inserted and deleted)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES (%s, 'probe', '', %s) "
            "ON CONFLICT (namespace, key) DO UPDATE SET updated_at = EXCLUDED.updated_at",
            (PROBE_NAMESPACE, now),
        )
        await conn.execute("DELETE FROM kv WHERE namespace = %s", (PROBE_NAMESPACE,))


class PostgresStore:
    """`bridge.store.aio.AsyncStore` on PostgreSQL 14+, shared by any number of processes."""

    backend = "postgresql"

    def __init__(self, url: str, pool: AsyncConnectionPool[Any], *, clock: Callable[[], float] = time.time) -> None:
        self.path = url
        self.clock = clock
        self.availability = PgAvailability()
        self.probe_interval = PROBE_INTERVAL
        self.health_timeout = HEALTH_TIMEOUT
        self.db = Pool(pool)
        args = (self.db, self._now, self.availability)
        self.links = LinkQuery(*args)
        self.employees = EmployeeQuery(*args)
        self.replies = ReplyQuery(*args)
        self.inbound = InboundQuery(*args)
        self.events = EventQuery(*args)
        self.checkpoints = CheckpointQuery(*args)
        self.kv = KVQuery(*args)
        self.instances = InstanceQuery(*args)
        self.leases = LeaseQuery(*args)
        self.queue = QueueQuery(*args)
        self.budgets = BudgetQuery(*args)

    def _now(self) -> float:
        return self.clock()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = POOL_TIMEOUT,
    ) -> PostgresStore:
        """Connect, check the server (14+), apply pending migrations under the advisory lock
        (refusing a database written by a newer release), prove it takes writes, then open the
        pool. Any failure is a `ConfigError` naming BRIDGE_DB."""
        kwargs = connection_kwargs(url)
        try:
            conn = await psycopg.AsyncConnection.connect(url, **kwargs)
        except psycopg.Error as exc:
            log.debug("BRIDGE_DB: connecting failed: %s", exc)
            raise startup_error(exc) from None
        try:
            if conn.info.server_version < MIN_SERVER_VERSION:
                raise ConfigError("BRIDGE_DB: PostgreSQL 14 or newer is required; upgrade the server")
            applied = await migrations.apply(conn)
            if applied:
                log.info("BRIDGE_DB: applied migrations %s", ", ".join(applied))
            await _probe(conn, clock())  # a read-only database stops start-up, not the first answer
        except psycopg.Error as exc:
            log.debug("BRIDGE_DB: start-up failed: %s", exc)
            raise startup_error(exc) from None
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            check=AsyncConnectionPool.check_connection,  # a connection broken while idle is replaced, not used
            timeout=timeout,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="bridge-store",
        )
        try:
            await pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise startup_error(exc) from None
        return cls(url, pool, clock=clock)

    # --- lifecycle ----------------------------------------------------------------------------

    async def ready(self) -> bool:
        return (await self.health())[0]

    async def health(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz: one round trip through the pool (at most
        `health_timeout` seconds) reading the applied migrations; "database unreachable" when it
        fails, "database not writable" while writes fail (a write probe at most every
        `probe_interval` seconds lets it recover without traffic), "database not migrated" with
        pending migrations."""
        try:
            async with self.db.pool.connection(timeout=self.health_timeout) as conn:
                names = await migrations.applied(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            if unavailable(self.availability, exc) is None:
                log.warning("BRIDGE_DB: reading the applied migrations failed: %s", type(exc).__name__)
                return False, "database not migrated"  # e.g. the migrations table is not readable
            if self.availability.kind == CONNECTION:
                return False, "database unreachable"
            return False, "database not writable"
        self.availability.reached()
        if self.availability.reason is not None:
            if time.monotonic() - self.availability.failed_at >= self.probe_interval:
                try:
                    await self._write_probe()
                except StoreUnavailable:
                    pass
            if self.availability.reason is not None:
                return False, "database not writable"
        if any(name not in names for name in migrations.NAMES):
            return False, "database not migrated"
        return True, "ready"

    @guard
    async def _write_probe(self) -> None:
        async with self.db.pool.connection(timeout=self.health_timeout) as conn:
            await _probe(conn, self.clock())
        self.availability.recovered()

    @guard
    async def applied_migrations(self) -> list[str]:
        async with self.db.pool.connection() as conn:
            return await migrations.applied(conn)

    @guard
    async def prune_history(self, older_than: float = HISTORY_TTL) -> int:
        """Forget finished bookkeeping older than a month; mappings are kept."""
        cutoff = self.clock() - older_than
        removed = 0
        async with self.db.pool.connection() as conn:
            for sql in (
                "DELETE FROM replies WHERE status != 'streaming' AND updated_at < %s",
                "DELETE FROM shown_messages WHERE shown_at < %s",
                "DELETE FROM event_deliveries WHERE status IN ('sent', 'skipped') AND finished_at < %s",
                "DELETE FROM instances WHERE heartbeat_at < %s",
            ):
                cursor = await conn.execute(sql, (cutoff,))
                removed += cursor.rowcount
        return removed

    async def close(self) -> None:
        await self.db.pool.close()


def _conforms(store: PostgresStore) -> aio.AsyncStore:
    return store  # mypy checks the facade and every query object against the protocols here
