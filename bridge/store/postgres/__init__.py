"""The PostgreSQL backend of the bridge's store (`BRIDGE_DB=postgresql://…`, PostgreSQL 14+):
the same aggregates, semantics and named migrations as the SQLite store, shared by any number of
`serve` and `poll` processes on any number of hosts.

Driver: psycopg 3 (async) with `psycopg_pool.AsyncConnectionPool`, rather than asyncpg:
- one project maintains the driver and its pool (and the sync driver, should a tool need one);
  binary wheels (`psycopg[binary]`) bundle libpq, so nothing is compiled or installed system-wide;
- the pool checks a connection before handing it out (`check_connection`), replaces broken ones
  and reconnects by itself after a server restart or failover;
- parameters are sent separately from the SQL (server-side binding with `%s`/`%(name)s`
  placeholders): every statement here is parameterised, nothing is formatted into SQL;
- it works behind PgBouncer: the store uses no session state (transaction-level advisory locks
  only, autocommit statements or short explicit transactions). psycopg prepares a statement after
  5 executions; PgBouncer 1.21+ supports that in transaction mode (`max_prepared_statements`).

The URL is libpq's: `postgresql://user:password@host:5432/dbname?sslmode=require`, and any
libpq parameter (`connect_timeout`, `application_name`, `options=-csearch_path%3Dbridge` to keep
the tables in their own schema). It is never logged or put in an error message.

Faults (`bridge.store.postgres.guard`): an unreachable server, a full disk or a read-only server
raise `StoreUnavailable` from every method; at start-up they are a `ConfigError` naming BRIDGE_DB.
`PostgresStore.health()` reflects the connection for /readyz.
"""

from bridge.store.postgres.database import PostgresStore

__all__ = ["PostgresStore"]
