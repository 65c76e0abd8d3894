"""The one place where SQLite failures that mean "the database cannot be used now" become
`bridge.errors.StoreUnavailable`, and are remembered for readiness.

A full disk, a read-only file, an I/O error, a file that cannot be opened, or bytes that are not
(or no longer) a database: the callers cannot fix any of these, so they get one exception type
whose message is a fixed phrase (never data, never SQL). Every other error (an `IntegrityError`
that logic relies on, a programming error) passes through unchanged.

Every public method of a query object (a subclass of `Query`) is guarded when the class is
created, and the facade's own methods use `@guard`. `Availability` is shared by the facade and
its query objects: failing after a `StoreUnavailable` until a later write succeeds.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlite_utils import Database

from bridge.errors import ConfigError, StoreUnavailable

log = logging.getLogger("bridge.store")

_WRITABLE = ("make sure the file and its directory exist and are writable by this user, "
             "or point BRIDGE_DB at a writable path")
_NOT_A_DB = "point BRIDGE_DB at the bridge's database or at a new file"

# primary result code -> (fixed phrase, what the operator fixes at start-up)
_UNAVAILABLE: dict[int, tuple[str, str]] = {
    sqlite3.SQLITE_FULL: ("database or disk is full", "free space on its disk"),
    sqlite3.SQLITE_READONLY: ("attempt to write a readonly database", _WRITABLE),
    sqlite3.SQLITE_PERM: ("access permission denied", _WRITABLE),
    sqlite3.SQLITE_CANTOPEN: ("unable to open database file", _WRITABLE),
    sqlite3.SQLITE_IOERR: ("disk I/O error", "check the disk it lives on and that the file is writable"),
    sqlite3.SQLITE_CORRUPT: ("database disk image is malformed", _NOT_A_DB),
    sqlite3.SQLITE_NOTADB: ("file is not a database", _NOT_A_DB),
    sqlite3.SQLITE_BUSY: ("database is locked", "stop the process that keeps it locked"),
}


def _kind(exc: BaseException) -> tuple[str, str] | None:
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    return _UNAVAILABLE.get(code & 0xFF)  # extended codes (SQLITE_IOERR_WRITE, …) share the primary


def unavailable_reason(exc: BaseException) -> str | None:
    """The fixed phrase when `exc` means the database cannot be used now, else None."""
    kind = _kind(exc)
    return kind[0] if kind else None


def startup_error(exc: BaseException) -> ConfigError | None:
    """The one-line start-up error for an unusable database (naming BRIDGE_DB and what to fix),
    or None when `exc` is something else."""
    kind = _kind(exc)
    if kind is None:
        return None
    reason, fix = kind
    return ConfigError(f"BRIDGE_DB: cannot open the database for writing ({reason}); {fix}")


class Availability:
    """Are the store's writes failing? Set by a `StoreUnavailable`, cleared by the next write
    that changes rows (so it recovers by itself once space is freed)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.failed_at = 0.0  # time.monotonic() of the latest failure

    def failed(self, reason: str) -> None:
        if self.reason is None:
            log.error("BRIDGE_DB: the database cannot be written (%s); /readyz answers 503 until a "
                      "write succeeds again", reason)
        self.reason = reason
        self.failed_at = time.monotonic()

    def recovered(self) -> None:
        if self.reason is not None:
            log.warning("BRIDGE_DB: the database is writable again")
        self.reason = None


F = TypeVar("F", bound=Callable[..., Any])


def guard(method: F) -> F:
    """Wrap a method of an object with `db` (sqlite-utils Database) and `availability`."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        availability: Availability = self.availability
        failing = availability.reason is not None
        changes = self.db.conn.total_changes if failing else 0
        try:
            result = method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            availability.failed(reason)
            raise StoreUnavailable(f"the database cannot be used now: {reason}") from exc
        if failing and self.db.conn.total_changes > changes:
            availability.recovered()
        return result

    return guarded  # type: ignore[return-value]


@dataclass
class Query:
    """Base of the per-aggregate query objects: the connection, the store's clock and its
    availability. Every public method a subclass defines is wrapped by `guard`."""

    db: Database
    clock: Callable[[], float]
    availability: Availability = field(default_factory=Availability)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, guard(value))
