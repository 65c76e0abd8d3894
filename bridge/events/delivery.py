"""Delivery of one Moveworks event into chat: claim -> post -> mark, in the store.

Exactly once as users see it:

* `store.claim_event` records the event (with its payload, for re-delivery after a crash) before
  anything is posted; an event already 'sent' or 'skipped' is never claimed again.
* The answer is posted inside the thread's lock (`relay.thread_lock`), so an event never
  interleaves with a live answer streaming in the same thread.
* `store.mark_shown` + `finish_event('sent')` right after the post. A crash between claim and post
  leaves the row 'claimed' and it is re-delivered at the next start; a crash between post and
  mark re-delivers once more: at most one duplicate.

Every event ends in an explicit state with a reason: 'sent', 'skipped' (unknown payload type,
missing message, history, already shown live, nowhere to deliver, gave up after N attempts) or
'retry' (transient platform error; retried with backoff by the poller, in order).

Where an event goes:

1. an active link of its conversation (Slack thread, Teams reply chain / personal chat);
2. else a direct message to the employee on the platform they used last (`adapter.open_direct`),
   and that DM is mapped to the conversation so replies there continue it.

A permanent platform error (bot removed, channel archived, writes blocked) deactivates the link
and the next route is tried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from bridge.mechanisms.gate import KeyedLock
from bridge.errors import DeliveryError, RateLimited
from bridge.models import Answer, Employee, ThreadKey, ThreadLink
from bridge.moveworks.models import Event, Message
from bridge.answers.renderer import answer_from_message

try:  # metrics are optional for library use (tests build a Poller without the app)
    from bridge.process import metrics as _metrics
except ImportError:  # pragma: no cover
    _metrics = None

log = logging.getLogger("bridge.events.poller")

MESSAGE_EVENT = "MESSAGE_EVENT"
KNOWN_CONTENT_TYPES = frozenset({"PLAIN_TEXT", "COMMONMARK_TEXT", "MARKDOWN_TEXT"})
MAX_EVENT_TEXT = 20_000  # Moveworks' own limit for Events API messages; more is a runaway
TRUNCATED_NOTE = "\n\n_…(message truncated)_"
MAX_ATTEMPTS = 10  # transient failures of one event before it is skipped (logged as an error)


class Outcome(Enum):
    SENT = "sent"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"  # already sent or skipped earlier (or by another process)
    RETRY = "retry"  # transient failure: left for a later attempt, checkpoint not advanced


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str = ""
    platform: str | None = None
    message_ids: tuple[str, ...] = ()
    retry_after: float | None = None


class _Transient(Exception):
    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# --- event (de)serialisation -------------------------------------------------------------------


def _content(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, kind.lower(): {"text": text}}


def message_to_json(m: Message) -> dict[str, Any]:
    """API-shaped JSON of a parsed message (so `Message.from_json` reads it back identically)."""
    data: dict[str, Any] = {
        "message_id": m.message_id,
        "conversation_id": m.conversation_id,
        "response_id": m.response_id,
        "actor": m.actor,
        "content": _content(m.content_type or "COMMONMARK_TEXT", m.text),
        "created_at": m.created_at,
        "citations": [
            {
                "citation_id": c.citation_id,
                "url": c.url,
                "display": {
                    "title": _content("PLAIN_TEXT", c.title),
                    "body": _content("COMMONMARK_TEXT", c.body),
                    "attributes": [{"key": k, "value": v} for k, v in c.attributes.items()],
                },
            }
            for c in m.citations
        ],
        "content_references": [
            {"citation_id": r.citation_id, "offset": r.offset} for r in m.content_references
        ],
        "actions": [
            {"type": a.type, "label": a.label, "callback_action": {"callback_id": a.callback_id}}
            if a.callback_id
            else {"type": a.type, "label": a.label, "url_action": {"url": a.url}}
            for a in m.actions
        ],
    }
    if m.feedback is not None:
        data["feedback"] = {
            k: {"callback_id": v}
            for k, v in (("helpful", m.feedback.helpful), ("unhelpful", m.feedback.unhelpful))
            if v
        }
    if m.sender_name:
        data["sender_info"] = {"display_name": m.sender_name}
    return data


def event_to_json(ev: Event) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": ev.type}
    if ev.message is not None:
        payload["message"] = message_to_json(ev.message)
    return {
        "event_id": ev.event_id,
        "conversation_id": ev.conversation_id,
        "created_at": ev.created_at,
        "event_payload": payload,
    }


def event_from_payload(payload: str | None) -> Event | None:
    """The event stored at claim time, or None if the row has no readable payload."""
    if not payload:
        return None
    try:
        return Event.from_json(json.loads(payload))
    except (ValueError, TypeError):
        return None


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 reads "Z"
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def event_time(ev: Event) -> float | None:
    """When the event was created: `created_at` (G2+), else its message's `created_at` (G1)."""
    t = parse_time(ev.created_at)
    if t is None and ev.message is not None:
        t = parse_time(ev.message.created_at)
    return t


def _metric(name: str) -> Any:
    return getattr(_metrics, name, None) if _metrics is not None else None


# --- delivery ----------------------------------------------------------------------------------


class Delivery:
    def __init__(
        self,
        *,
        store: Any,
        relay: Any,
        per_employee: bool,
        wall: Callable[[], float] = time.time,
        dm_single_identity: str = "sole",
        max_attempts: int = MAX_ATTEMPTS,
        max_text: int = MAX_EVENT_TEXT,
    ) -> None:
        self.store = store
        self.relay = relay
        self.per_employee = per_employee
        self.wall = wall
        self.dm_single_identity = dm_single_identity
        self.max_attempts = max_attempts
        self.max_text = max_text
        self._attempts: dict[str, int] = {}
        self._inflight: set[str] = set()
        self._own_locks = KeyedLock()
        self.lags: deque[float] = deque(maxlen=100_000)  # recent delivery lags (benchmarks)
        self.counts: dict[str, int] = {}

    # --- helpers ------------------------------------------------------------------------------

    @property
    def adapters(self) -> dict[str, Any]:
        return getattr(self.relay, "adapters", {}) or {}

    def _lock(self, thread: ThreadKey) -> AbstractAsyncContextManager[None]:
        lock = getattr(self.relay, "thread_lock", None)
        if lock is not None:
            return lock(thread)
        return self._own_locks(thread.lock_key)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # --- the public entry point ---------------------------------------------------------------

    async def deliver(
        self, ev: Event, key: str, *, started_at: float | None = None, first_poll: bool = False
    ) -> Result:
        """Claim, post and mark one event. `key` is the checkpoint key ("service" or the email).

        `started_at`: when the bridge started polling this identity; events created before it are
        history and skipped explicitly (on the very first poll, so are events with no timestamp).
        """
        if ev.event_id in self._inflight:  # recovery and a poll met the same event
            return Result(Outcome.RETRY, "being delivered by another task")
        payload = json.dumps(event_to_json(ev), separators=(",", ":"))
        if not self.store.claim_event(ev.event_id, key, ev.conversation_id, payload):
            self._count("duplicate")
            return Result(Outcome.DUPLICATE, "already handled")
        self._inflight.add(ev.event_id)
        try:
            try:
                result = await self._handle(ev, key, started_at, first_poll)
            except _Transient as exc:
                result = Result(Outcome.RETRY, str(exc), retry_after=exc.retry_after)
            except asyncio.CancelledError:
                # shutdown mid-delivery: the row stays 'claimed' and is re-delivered at start
                raise
            except Exception as exc:  # a bug or an unexpected platform reply: never a crash loop
                log.exception("event %s: unexpected error while delivering", ev.event_id)
                result = Result(Outcome.RETRY, f"unexpected error: {type(exc).__name__}: {exc}")
            return self._record(ev, result)
        finally:
            self._inflight.discard(ev.event_id)

    def _record(self, ev: Event, result: Result) -> Result:
        if result.outcome is Outcome.SENT:
            self.store.finish_event(ev.event_id, "sent", json.dumps(list(result.message_ids)))
            self._attempts.pop(ev.event_id, None)
            self._count("sent")
            lag = None
            created = event_time(ev)
            if created is not None:
                lag = max(0.0, self.wall() - created)
                self.lags.append(lag)
            m = _metric("EVENTS_DELIVERED")
            if m is not None:
                m.labels(result.platform or "unknown").inc()
            m = _metric("EVENT_LAG_SECONDS")
            if m is not None and lag is not None:
                m.observe(lag)
            log.info("event %s delivered to %s (lag %s)", ev.event_id, result.platform,
                     f"{lag:.2f}s" if lag is not None else "unknown")
            return result
        if result.outcome is Outcome.SKIPPED:
            return self._skip(ev.event_id, result)
        attempts = self._attempts.get(ev.event_id, 0) + 1
        self._attempts[ev.event_id] = attempts
        if attempts >= self.max_attempts:
            self._attempts.pop(ev.event_id, None)
            log.error("event %s: giving up after %d attempts: %s", ev.event_id, attempts, result.detail)
            return self._skip(
                ev.event_id,
                Result(Outcome.SKIPPED, f"gave up after {attempts} attempts: {result.detail}"),
            )
        log.warning("event %s: will retry (attempt %d/%d): %s", ev.event_id, attempts,
                    self.max_attempts, result.detail)
        self.store.finish_event(ev.event_id, "retry", result.detail[:500])
        self._count("retry")
        return result

    def _skip(self, event_id: str, result: Result) -> Result:
        self.store.finish_event(event_id, "skipped", result.detail[:500])
        self._count("skipped")
        reason = result.detail.split(":")[0][:40]
        m = _metric("EVENTS_SKIPPED")
        if m is not None:
            m.labels(reason).inc()
        log.info("event %s skipped: %s", event_id, result.detail)
        return result

    # --- what to do with one claimed event ----------------------------------------------------

    async def _handle(self, ev: Event, key: str, started_at: float | None, first_poll: bool) -> Result:
        created = event_time(ev)
        if started_at is not None and (
            (created is not None and created < started_at) or (created is None and first_poll)
        ):
            return Result(Outcome.SKIPPED, "history: created before the bridge knew this identity")
        if ev.type != MESSAGE_EVENT:
            return Result(Outcome.SKIPPED, f"unknown payload type {ev.type or '(none)'!r}")
        message = ev.message
        if message is None:
            return Result(Outcome.SKIPPED, "missing message: event payload without a message")
        if message.actor == "USER":
            return Result(Outcome.SKIPPED, "user message: not posted back to its author")
        if not message.text.strip() and not message.actions:
            return Result(
                Outcome.SKIPPED, f"empty message (content type {message.content_type!r})"
            )
        if message.content_type not in KNOWN_CONTENT_TYPES:
            log.info("event %s: unknown content type %r, delivered as Markdown", ev.event_id,
                     message.content_type)
        if self.store.was_shown(message.message_id):
            return Result(Outcome.SKIPPED, "already shown live")
        answer = answer_from_message(message, conversation_id=ev.conversation_id)
        if len(answer.text) > self.max_text:
            log.warning("event %s: text of %d characters truncated to %d", ev.event_id,
                        len(answer.text), self.max_text)
            answer = replace(answer, text=answer.text[: self.max_text] + TRUNCATED_NOTE)
        conversation_id = ev.conversation_id or message.conversation_id

        # 1. the conversation's own thread
        for link in self.store.links_for_conversation(conversation_id):
            if not link.active:
                continue
            result = await self._try_link(ev, link, answer, message.message_id)
            if result is not None:
                return result
        # 2. a direct message on the platform the employee used last
        return await self._direct(ev, key, conversation_id, answer, message.message_id)

    async def _try_link(
        self, ev: Event, link: ThreadLink, answer: Answer, message_id: str
    ) -> Result | None:
        """Post into `link`; None if this route is unusable (try the next one)."""
        adapter = self.adapters.get(link.thread.platform)
        if adapter is None:
            log.info("event %s: no %s adapter running for its thread", ev.event_id, link.thread.platform)
            return None
        try:
            async with self._lock(link.thread):
                if self.store.was_shown(message_id):  # a live answer finished while we waited
                    return Result(Outcome.SKIPPED, "already shown live")
                if self.store.thread_streaming(link.thread):
                    # Another process (`serve`, with a separate `poll` worker) is streaming an
                    # answer here: the in-process lock cannot see it, the store can.
                    raise _Transient("an answer is streaming in this thread", 2.0)
                sink = await adapter.open_reply(link.thread, link.address, user=None, proactive=True)
                ids = await sink.finish(answer)
                self.store.mark_shown(message_id, link.id, "event")
        except RateLimited as exc:
            raise _Transient(f"{link.thread.platform} rate limited: {exc}", exc.retry_after) from None
        except DeliveryError as exc:
            if not exc.permanent:
                raise _Transient(f"{link.thread.platform} delivery failed: {exc}") from None
            log.warning("event %s: %s thread is gone (%s); link %d deactivated", ev.event_id,
                        link.thread.platform, exc, link.id)
            self.store.deactivate_link(link.id)
            return None
        return Result(Outcome.SENT, platform=link.thread.platform, message_ids=tuple(ids or ()))

    def _employees(self, key: str) -> list[Employee]:
        if self.per_employee:
            return list(self.store.employees_by_email(key))
        # One service identity: a brand-new conversation has no known owner. Sending it to the
        # wrong person would leak someone's notification, so by default it goes out only when
        # the bridge knows exactly one employee ("sole"); "last_active" guesses, "off" never DMs.
        if self.dm_single_identity == "sole" and self.store.active_people() != 1:
            return []
        if self.dm_single_identity in ("sole", "last_active"):
            employee = self.store.last_active_employee()
            return [employee] if employee is not None else []
        return []

    async def _direct(
        self, ev: Event, key: str, conversation_id: str, answer: Answer, message_id: str
    ) -> Result:
        employees = self._employees(key)
        link_identity = key if self.per_employee else ""
        tried = 0
        for employee in employees:
            adapter = self.adapters.get(employee.platform)
            if adapter is None or not hasattr(adapter, "open_direct"):
                continue
            tried += 1
            try:
                target = await adapter.open_direct(employee)
            except RateLimited as exc:
                raise _Transient(f"{employee.platform} rate limited opening a DM: {exc}",
                                 exc.retry_after) from None
            except DeliveryError as exc:
                if not exc.permanent:
                    raise _Transient(f"{employee.platform} could not open a DM: {exc}") from None
                log.warning("event %s: cannot DM %s user %s: %s", ev.event_id, employee.platform,
                            employee.user_id, exc)
                continue
            if target is None:
                continue
            thread, address = target
            link = self.store.insert_link(thread, employee.user_id, link_identity, conversation_id,
                                          address)
            if link.conversation_id != conversation_id:
                link = self._remap(link, conversation_id, address)
            result = await self._try_link(ev, link, answer, message_id)
            if result is not None:
                if result.outcome is Outcome.SENT:
                    self._map_reply_thread(adapter, link, result.message_ids)
                return result
        reason = "nowhere to deliver: no active thread and no reachable chat account"
        if not employees:
            reason = "nowhere to deliver: no active thread and no known chat account"
        elif not tried:
            reason = "nowhere to deliver: the employee's platforms are not running"
        log.warning("event %s (conversation %s): %s", ev.event_id, conversation_id, reason)
        return Result(Outcome.SKIPPED, reason)

    def _map_reply_thread(self, adapter: Any, link: ThreadLink, message_ids: tuple[str, ...]) -> None:
        """Map the thread a reply to the posted DM continues in, when it is not the DM itself.

        Slack answers each top-level DM message in its own thread, so a reply to the notification
        (in its thread) must find the event's conversation: the thread rooted at the posted
        message is mapped too. Adapters may say so themselves with
        `reply_thread(thread, address, message_ids) -> (ThreadKey, address) | None`; Teams
        personal chats are flat and need nothing.
        """
        if not message_ids or link.thread.thread:
            return
        hook = getattr(adapter, "reply_thread", None)
        target: tuple[ThreadKey, dict[str, Any]] | None
        if hook is not None:
            target = hook(link.thread, link.address, message_ids)
        elif link.thread.platform == "slack":
            root = message_ids[0]
            target = (replace(link.thread, thread=root), {**link.address, "thread_ts": root})
        else:
            target = None
        if target is None:
            return
        thread, address = target
        self.store.insert_link(thread, link.user_id, link.identity, link.conversation_id, address)

    def _remap(self, link: ThreadLink, conversation_id: str, address: dict[str, Any]) -> ThreadLink:
        """The DM is already mapped to another conversation (flat DM, one link per user).

        With `store.remap_link` (proposed) the DM now continues the event's conversation, as a
        new "System Initiated Conversation" would in Moveworks' own channels. Without it the event
        is still posted in the DM, and replies continue the DM's previous conversation.
        """
        remap = getattr(self.store, "remap_link", None)
        if remap is not None:
            remap(link.id, conversation_id, address)
            return replace(link, conversation_id=conversation_id, address=address)
        log.info("DM link %d stays on conversation %s (store has no remap_link)", link.id,
                 link.conversation_id)
        return link
