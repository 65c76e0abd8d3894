"""What the bridge asks of its storage, independent of the database behind it.

One query object per aggregate (`LinkQuery`, `EmployeeQuery`, …) behind one facade
(`BridgeStore`), in the style of mautrix-go's `database` package. The SQLite implementation lives
in `bridge.store.sqlite`; another backend (PostgreSQL) implements these same protocols.

Guarantees every backend must keep, because several processes (`serve` and `poll`) share one
database:

- every "create once" or "claim" operation (`links.insert`, `inbound.claim`, `events.claim`,
  `replies.mark_shown`, `checkpoints.start`) is decided by the database (a unique key), never by
  an in-process lock, so exactly one caller across all processes wins;
- `checkpoints.advance` never moves a checkpoint backwards, even when two processes race;
- `employees.save` never forgets a known email, name or timestamp;
- times come from the store's `clock`, so tests can move them;
- a database that cannot be used now (disk full, read-only, I/O error, not a database) raises
  `bridge.errors.StoreUnavailable` (a message without data) from any method; other errors (a
  constraint the logic relies on, a programming error) are not translated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bridge.models import ChatUser, Employee, ThreadKey, ThreadLink

INBOUND_TTL = 24 * 3600.0  # Slack retries for ~1 hour, Teams re-sends within minutes
HISTORY_TTL = 30 * 24 * 3600.0  # finished replies, shown messages, delivered events
STREAMING_STALE = 600.0  # a 'streaming' reply older than this belongs to a dead process


class LinkQuery(Protocol):
    """Thread links: which Moveworks conversation a (chat thread, user) pair talks to."""

    def get(self, thread: ThreadKey, user_id: str) -> ThreadLink | None: ...

    def get_by_id(self, link_id: int) -> ThreadLink | None: ...

    def insert(
        self, thread: ThreadKey, user_id: str, identity: str, conversation_id: str, address: dict[str, Any]
    ) -> ThreadLink:
        """Map thread+user to a conversation; if another process won the race, return its row.
        An inactive row for the same key (a conversation that was lost) is replaced."""
        ...

    def touch(self, link_id: int, address: dict[str, Any] | None = None) -> None: ...

    def deactivate(self, link_id: int) -> None: ...

    def deactivate_where(self, platform: str, channel: str, thread: str | None = None) -> None:
        """Deactivate every link of a channel (any workspace), or of one thread of it."""
        ...

    def for_conversation(self, conversation_id: str) -> list[ThreadLink]:
        """Active links first, most recently used first."""
        ...

    def any_active_in_thread(self, thread: ThreadKey) -> bool:
        """Has the bot answered anyone in this thread (so follow-ups need no mention)?"""
        ...

    def remap(self, link_id: int, conversation_id: str, address: dict[str, Any]) -> None:
        """Point a flat chat (a personal DM) at another conversation and reactivate it."""
        ...


class EmployeeQuery(Protocol):
    """Chat users and what we know of them (email, name, activity)."""

    def get(self, platform: str, workspace: str, user_id: str) -> Employee | None: ...

    def email_checked_at(self, platform: str, workspace: str, user_id: str) -> float | None: ...

    def save(self, user: ChatUser, *, email_checked: bool = False, active: bool = False) -> None:
        """Upsert what we know of a chat user; never forgets a known email or name."""
        ...

    def by_email(self, email: str) -> list[Employee]:
        """Chat accounts of one employee (email matched case-insensitively), most recently
        active first."""
        ...

    def identities(self) -> list[tuple[str, float | None]]:
        """Every known employee email (lower-cased) with its last activity."""
        ...

    def last_active(self) -> Employee | None: ...

    def active_people(self) -> int:
        """How many different people have asked something (same email = one person)."""
        ...

    def last_activity(self) -> float | None: ...


class ReplyQuery(Protocol):
    """Answers being streamed into chat threads, and the Moveworks messages already shown."""

    def start(self, link_id: int) -> int: ...

    def finish(
        self,
        reply_id: int,
        status: str,
        *,
        response_id: str | None = None,
        platform_message_ids: list[str] | None = None,
    ) -> None:
        """Set the final status; a None field keeps what was stored."""
        ...

    def checkpoint(self, reply_id: int, checkpoint: dict[str, Any] | None) -> None: ...

    def streaming_in(self, thread: ThreadKey) -> bool:
        """Is an answer streaming into `thread` right now, in any process (not stale)?"""
        ...

    def interrupt_streaming(self) -> list[tuple[int, dict[str, Any] | None]]:
        """Mark every 'streaming' reply 'interrupted'; return (link id, last checkpoint),
        oldest first."""
        ...

    def mark_shown(self, message_id: str, link_id: int | None, source: str) -> None:
        """Record that a message was shown; the first record wins."""
        ...

    def was_shown(self, message_id: str) -> bool: ...


class InboundQuery(Protocol):
    """Dedupe of inbound platform deliveries (webhook retries)."""

    def claim(self, platform: str, dedupe_id: str) -> bool:
        """True the first time a delivery is seen, across processes and restarts."""
        ...

    def prune(self, older_than: float = INBOUND_TTL) -> int: ...


class EventQuery(Protocol):
    """Delivery of Moveworks events (claim -> post -> finish)."""

    def claim(self, event_id: str, identity: str, conversation_id: str, payload: str) -> bool:
        """Claim an event for delivery. False if it was already sent or skipped. A claim left
        unfinished by a crash (or marked 'retry') is claimable again."""
        ...

    def finish(self, event_id: str, status: str, detail: str | None = None) -> None:
        """status: 'sent', 'skipped' (explicitly not delivered, with a reason) or 'retry'."""
        ...

    def status(self, event_id: str) -> str | None: ...

    def pending(self, identity: str | None = None) -> list[dict[str, Any]]:
        """Claimed-but-unfinished and retryable events, oldest (lowest event id) first."""
        ...

    def counts(self) -> dict[str, int]: ...

    def recent_for(
        self, platform: str, workspace: str, user_id: str, identity: str | None, limit: int = 5
    ) -> list[dict[str, Any]]:
        """A person's newest events (`event_id`, `status`, `payload`, `claimed_at`), newest first."""


class CheckpointQuery(Protocol):
    """Per-identity poller checkpoints."""

    def get(self, identity: str) -> tuple[str | None, float] | None:
        """(last handled event id, when polling of this identity started) or None if new."""
        ...

    def start(self, identity: str) -> tuple[str | None, float]:
        """Create the checkpoint if missing (the first process wins) and return it."""
        ...

    def advance(self, identity: str, event_id: str) -> None:
        """Advance only: a checkpoint never moves backwards."""
        ...

    def reset(self, identity: str) -> None:
        """Start again from 'now' (after INVALID_CURSOR)."""
        ...


class KV(Protocol):
    """A key/value namespace owned by one component (e.g. `teams.references`); the same shape as
    `bridge.contract.KeyValue`, which adapters are handed."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str | None = None) -> None:
        """Delete one key, or the whole namespace when `key` is None."""
        ...

    def items(self, prefix: str = "") -> list[tuple[str, str]]:
        """(key, value) pairs whose key starts with `prefix`, ordered by key."""
        ...

    def prune(self, older_than: float = HISTORY_TTL) -> int:
        """Drop entries not written for `older_than` seconds."""
        ...


class KVQuery(Protocol):
    """Small key/value storage for adapters (Slack installations, Teams references, …)."""

    def get(self, namespace: str, key: str) -> str | None: ...

    def set(self, namespace: str, key: str, value: str) -> None: ...

    def delete(self, namespace: str, key: str | None = None) -> None: ...

    def items(self, namespace: str, prefix: str = "") -> list[tuple[str, str]]: ...

    def prune(self, namespace: str, older_than: float = HISTORY_TTL) -> int: ...

    def namespace(self, namespace: str) -> KV: ...


class BridgeStore(Protocol):
    """The facade: one query object per aggregate, plus lifecycle."""

    path: str
    clock: Callable[[], float]

    @property
    def links(self) -> LinkQuery: ...

    @property
    def employees(self) -> EmployeeQuery: ...

    @property
    def replies(self) -> ReplyQuery: ...

    @property
    def inbound(self) -> InboundQuery: ...

    @property
    def events(self) -> EventQuery: ...

    @property
    def checkpoints(self) -> CheckpointQuery: ...

    @property
    def kv(self) -> KVQuery: ...

    @property
    def ready(self) -> bool:
        """`health()[0]`: the database is the file opened, writable, and migrated."""
        ...

    def health(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz. Not ready after a `StoreUnavailable` until a later write
        succeeds ("database not writable"), when the file was deleted or replaced since it was
        opened ("database file replaced or deleted", logged once), or with pending migrations
        ("database not migrated")."""
        ...

    def applied_migrations(self) -> list[str]: ...

    def prune_history(self, older_than: float = HISTORY_TTL) -> int:
        """Forget finished bookkeeping (finished replies, shown messages, sent or skipped
        events) older than `older_than`. Mappings (links, employees, kv, checkpoints) stay."""
        ...

    def close(self) -> None: ...
