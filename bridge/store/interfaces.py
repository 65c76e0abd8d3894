"""What the bridge asks of its storage, independent of the database behind it.

One query object per aggregate (`LinkQuery`, `EmployeeQuery`, …) behind one facade
(`BridgeStore`), in the style of mautrix-go's `database` package. The SQLite implementation lives
in `bridge.store.sqlite`; `bridge.store.aio` mirrors these protocols with awaited methods (same
names, parameters and semantics), implemented by SQLite and by PostgreSQL (`bridge.store.postgres`).

Guarantees every backend must keep, because several processes (`serve` and `poll`) share one
database:

- every "create once" or "claim" operation (`links.insert`, `inbound.claim`, `events.claim`,
  `replies.mark_shown`, `checkpoints.start`, `queue.enqueue`, `queue.take`, `leases.acquire`) is
  decided by the database (a unique key, a conditional UPDATE), never by an in-process lock, so
  exactly one caller across all processes wins;
- `checkpoints.advance` never moves a checkpoint backwards, even when two processes race;
- `employees.save` never forgets a known email, name or timestamp;
- times come from the store's `clock`, so tests can move them (several hosts sharing PostgreSQL
  must keep their clocks in sync: every TTL and lease here is seconds long, skew must stay well
  below that; NTP gives milliseconds);
- a database that cannot be used now (disk full, read-only, I/O error, not a database) raises
  `bridge.errors.StoreUnavailable` (a message without data) from any method; other errors (a
  constraint the logic relies on, a programming error) are not translated.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.models import ChatUser, Employee, ThreadKey, ThreadLink

INBOUND_TTL = 24 * 3600.0  # Slack retries for ~1 hour, Teams re-sends within minutes
HISTORY_TTL = 30 * 24 * 3600.0  # finished replies, shown messages, delivered events
STREAMING_STALE = 600.0  # a 'streaming' reply older than this belongs to a dead process
INSTANCE_TTL = 15.0  # suggested: an instance whose heartbeat is older than this is dead


def new_instance_id() -> str:
    """A process's instance id: `<hostname>-<pid>-<random>` (readable in logs, unique even when
    a container reuses a hostname and pid after a restart)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def queue_thread_key(thread: ThreadKey) -> str:
    """The one value per chat thread the inbound queue orders by (unambiguous: a JSON array)."""
    return json.dumps([thread.platform, thread.workspace, thread.channel, thread.thread], separators=(",", ":"))


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

    def start(self, link_id: int, owner: str | None = None) -> int:
        """A reply begins streaming; `owner` is the instance id of the process streaming it (no
        other live process touches it). None: an unowned reply (single-process behaviour)."""
        ...

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

    def interrupt_streaming(self, owners: Sequence[str] | None = None) -> list[tuple[int, dict[str, Any] | None]]:
        """Mark 'streaming' replies 'interrupted'; return (link id, last checkpoint), oldest
        first. `owners` None: every streaming reply (one process per database); else only the
        replies of those (dead) owners."""
        ...

    def interrupt_orphans(self, ttl: float) -> list[tuple[int, dict[str, Any] | None]]:
        """Crash recovery with several processes: mark 'interrupted' and return the streaming
        replies whose owner is not alive (no heartbeat within `ttl` seconds, see
        `InstanceQuery`), and unowned ones not updated for `STREAMING_STALE`. One statement: a
        reply is returned to exactly one caller, and a live owner's replies are never touched."""
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

    def claim(
        self,
        event_id: str,
        identity: str,
        conversation_id: str,
        payload: str,
        *,
        owner: str | None = None,
        lease: float | None = None,
    ) -> bool:
        """Claim an event for delivery. False if it was already sent or skipped, or if another
        owner holds an unexpired claim. A claim left unfinished by a crash (or marked 'retry') is
        claimable again once its lease expired; a claim without `owner`/`lease` has no lease
        (claimable again at once, the single-process behaviour); an owner may re-claim its own."""
        ...

    def finish(self, event_id: str, status: str, detail: str | None = None) -> None:
        """status: 'sent', 'skipped' (explicitly not delivered, with a reason) or 'retry'. Ends
        the claim's lease."""
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


class InstanceQuery(Protocol):
    """Running processes: each registers an instance id (`new_instance_id()`) and beats every
    few seconds; work of an instance that stopped beating is taken over by a live one."""

    def beat(self, instance_id: str) -> None:
        """Register or refresh `instance_id` (call before taking any work, then every
        `ttl / 3` seconds)."""
        ...

    def alive(self, instance_id: str, ttl: float) -> bool:
        """Did `instance_id` beat within the last `ttl` seconds?"""
        ...

    def living(self, ttl: float) -> int: ...

    def dead(self, ttl: float) -> list[str]:
        """Registered instances that did not beat within `ttl` seconds, oldest beat first."""
        ...

    def leave(self, instance_id: str) -> None:
        """A clean shutdown: forget the instance (its remaining work is orphaned at once)."""
        ...


class LeaseQuery(Protocol):
    """Named roles held by one owner at a time until an expiry (e.g. 'poller': exactly one
    active poller). The holder must stop acting as the holder once its own `ttl` passed without
    a successful `renew`: another owner may acquire it then."""

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take the role if it is free, expired, or already `owner`'s (then it is renewed)."""
        ...

    def renew(self, name: str, owner: str, ttl: float) -> bool:
        """Extend `owner`'s lease to now + `ttl`; False if another owner holds it (or nobody)."""
        ...

    def release(self, name: str, owner: str) -> None:
        """Give the role up (only if `owner` holds it)."""
        ...

    def holder(self, name: str) -> str | None:
        """The owner of an unexpired lease, or None."""
        ...


@dataclass(frozen=True)
class QueueItem:
    """One durable inbound question. `user` and `payload` are the JSON strings given to
    `QueueQuery.enqueue` (`bridge.store.codec` defines the form of an `Inbound`); `attempts` is
    how many times it was taken (more than one: a process died or gave it back mid-way)."""

    id: int
    platform: str
    dedupe_id: str
    thread: ThreadKey
    user: str
    payload: str
    attempts: int
    owner: str | None
    lease_until: float | None
    enqueued_at: float


class QueueQuery(Protocol):
    """The durable inbound queue: a question is stored (atomically with its dedupe claim) before
    the platform gets its acknowledgement, taken by a worker under a lease, and deleted when
    done. Per-thread order: an item is handed out only when no older item of its thread is
    still queued or in progress, and never while another item of its thread is in progress."""

    def enqueue(self, platform: str, dedupe_id: str, thread: ThreadKey, user: str, payload: str) -> bool:
        """Claim `dedupe_id` (as `InboundQuery.claim` does) and queue the item, atomically.
        False, and nothing queued, when the delivery was already seen."""
        ...

    def take(self, owner: str, lease_seconds: float, limit: int = 1) -> list[QueueItem]:
        """Hand out up to `limit` ready items (queued, or taken under an expired lease), oldest
        first, at most one per thread, each owned by `owner` until now + `lease_seconds`."""
        ...

    def extend(self, owner: str, lease_seconds: float, item_ids: Sequence[int] | None = None) -> int:
        """Extend `owner`'s leases (all of them, or the listed items) to now + `lease_seconds`;
        return how many are still `owner`'s. Call it with the heartbeat while answering."""
        ...

    def done(self, item_id: int, owner: str) -> bool:
        """The item was answered (or its asker told): delete it. False if `owner` no longer
        holds it (its lease expired and another process took it)."""
        ...

    def release(self, item_id: int, owner: str) -> bool:
        """Give an item back unanswered (e.g. shutting down before starting it)."""
        ...

    def of_owners(self, owners: Sequence[str]) -> list[QueueItem]:
        """Items held by these owners (e.g. `instances.dead(ttl)`), oldest first."""
        ...

    def release_owners(self, owners: Sequence[str]) -> list[QueueItem]:
        """Give the items of these (dead) owners back to the queue at once (without waiting for
        their leases); return them, oldest first."""
        ...

    def release_orphans(self, ttl: float) -> list[QueueItem]:
        """Give back every item whose owner did not beat within `ttl` seconds (or is not
        registered); return them, oldest first."""
        ...

    def release_expired(self) -> int:
        """Give back the items whose lease expired (`take` takes them anyway; this keeps
        `counts` honest)."""
        ...

    def counts(self) -> dict[str, int]:
        """{'queued': n, 'taken': n}."""
        ...


class BudgetQuery(Protocol):
    """Write budgets shared by every process: one token bucket per key ('slack:T123',
    'teams:<tenant>') in the database, so several replicas together stay inside a platform's
    per-workspace limit. Buckets start full; tokens refill at `rate_per_second` up to `burst`."""

    def take_token(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> float:
        """Reserve `cost` tokens now (the bucket may go into debt) and return how many seconds
        the caller must wait before writing (0.0: write now). One atomic statement."""
        ...

    def try_take(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens only if they are there now (and the key is not penalised)."""
        ...

    def refund(self, key: str, burst: float, cost: float = 1.0) -> None:
        """Give back tokens of a write that was not made (never above `burst`)."""
        ...

    def penalize(self, key: str, retry_after: float) -> None:
        """The platform said 429: every process waits `retry_after` seconds on this key."""
        ...


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
    def instances(self) -> InstanceQuery: ...

    @property
    def leases(self) -> LeaseQuery: ...

    @property
    def queue(self) -> QueueQuery: ...

    @property
    def budgets(self) -> BudgetQuery: ...

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
        events, instances that stopped beating) older than `older_than`. Mappings (links,
        employees, kv, checkpoints, leases, budgets) stay."""
        ...

    def close(self) -> None: ...
