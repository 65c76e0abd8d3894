"""Delivery of one Moveworks event into chat: claim -> post -> mark, in the store.

Exactly once as users see it:

* `store.events.claim` records the event (with its payload, for re-delivery after a crash) before
  anything is posted; an event already 'sent' or 'skipped' is never claimed again.
* The answer is posted through the thread gate (`routing.py`), so an event never interleaves
  with a live answer streaming in the same thread.
* `store.replies.mark_shown` + `await store.events.finish("sent")` right after the post. A crash
  between claim and post leaves the row 'claimed' and it is re-delivered at the next start; a
  crash between post and mark re-delivers once more: at most one duplicate.

Every event ends in an explicit state with a reason: 'sent', 'skipped' (unknown payload type,
missing message, history, already shown live, nowhere to deliver, gave up after N attempts) or
'retry' (transient platform error; retried with backoff by the poller, in order).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace

from bridge import texts
from bridge.answers.compose import answer_from_message
from bridge.answers.relay import LIVE_AGENTS
from bridge.contract import ChatAdapter
from bridge.events.codec import event_time, event_to_json
from bridge.events.routing import Busy, Outcome, Result, Routes, Transient
from bridge.mechanisms.gate import ThreadGate
from bridge.moveworks.models import Event
from bridge.process import metrics
from bridge.store.aio import AnyStore, as_async

log = logging.getLogger(__name__)

MESSAGE_EVENT = "MESSAGE_EVENT"
KNOWN_CONTENT_TYPES = frozenset({"PLAIN_TEXT", "COMMONMARK_TEXT", "MARKDOWN_TEXT"})
MAX_EVENT_TEXT = 20_000  # Moveworks' own limit for Events API messages; more is a runaway
CLAIM_LEASE = 120.0  # seconds another process leaves a claimed event alone (one delivery at most)
MAX_ATTEMPTS = 10  # transient failures of one event before it is skipped (logged as an error)


class Delivery:
    def __init__(
        self,
        *,
        store: AnyStore,
        adapters: Mapping[str, ChatAdapter],
        gate: ThreadGate,
        per_employee: bool,
        wall: Callable[[], float] = time.time,
        dm_single_identity: str = "sole",
        max_attempts: int = MAX_ATTEMPTS,
        max_text: int = MAX_EVENT_TEXT,
        owner: str | None = None,
        claim_lease: float = CLAIM_LEASE,
    ) -> None:
        self.store = as_async(store)
        self.owner = owner  # claims carry this process's id and a lease (several processes)
        self.claim_lease = claim_lease
        self.routes = Routes(store, adapters, gate, per_employee=per_employee,
                             dm_single_identity=dm_single_identity)
        self.wall = wall
        self.max_attempts = max_attempts
        self.max_text = max_text
        self._attempts: dict[str, int] = {}
        self._inflight: set[str] = set()
        self.lags: deque[float] = deque(maxlen=100_000)  # recent delivery lags (benchmarks)
        self.counts: dict[str, int] = {}

    # --- helpers ------------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # --- the public entry points --------------------------------------------------------------

    async def defer(self, ev: Event, key: str, reason: str) -> None:
        """Store `ev` for the next poll without trying it (an earlier event of its conversation
        is waiting for a busy thread, and order within a conversation holds)."""
        if ev.event_id in self._inflight:
            return
        payload = json.dumps(event_to_json(ev), separators=(",", ":"))
        if await self._claim(ev, key, payload):
            await self.store.events.finish(ev.event_id, "retry", reason)
            self._count("deferred")

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
        if not await self._claim(ev, key, payload):
            self._count("duplicate")
            return Result(Outcome.DUPLICATE, "already handled")
        self._inflight.add(ev.event_id)
        try:
            try:
                result = await self._handle(ev, key, started_at, first_poll)
            except Busy as exc:
                result = Result(Outcome.DEFERRED, str(exc))
            except Transient as exc:
                result = Result(Outcome.RETRY, str(exc), retry_after=exc.retry_after)
            except asyncio.CancelledError:
                # shutdown mid-delivery: the row stays 'claimed' and is re-delivered at start
                raise
            except Exception as exc:  # a bug or an unexpected platform reply: never a crash loop
                log.exception("event %s: unexpected error while delivering", ev.event_id)
                result = Result(Outcome.RETRY, f"unexpected error: {type(exc).__name__}: {exc}")
            return await self._record(ev, result)
        finally:
            self._inflight.discard(ev.event_id)

    async def _claim(self, ev: Event, key: str, payload: str) -> bool:
        if self.owner is None:
            return await self.store.events.claim(ev.event_id, key, ev.conversation_id, payload)
        return await self.store.events.claim(ev.event_id, key, ev.conversation_id, payload,
                                             owner=self.owner, lease=self.claim_lease)

    async def _record(self, ev: Event, result: Result) -> Result:
        if result.outcome is Outcome.SENT:
            await self.store.events.finish(ev.event_id, "sent", json.dumps(list(result.message_ids)))
            self._attempts.pop(ev.event_id, None)
            self._count("sent")
            lag = None
            created = event_time(ev)
            if created is not None:
                lag = max(0.0, self.wall() - created)
                self.lags.append(lag)
            metrics.EVENTS_DELIVERED.labels(result.platform or "unknown").inc()
            if lag is not None:
                metrics.EVENT_LAG_SECONDS.observe(lag)
            log.info("event %s delivered to %s (lag %s)", ev.event_id, result.platform,
                     f"{lag:.2f}s" if lag is not None else "unknown")
            return result
        if result.outcome is Outcome.SKIPPED:
            return await self._skip(ev.event_id, result)
        if result.outcome is Outcome.DEFERRED:  # not a failure: no attempt counted
            await self.store.events.finish(ev.event_id, "retry", result.detail[:500])
            self._count("deferred")
            log.info("event %s deferred: %s", ev.event_id, result.detail)
            return result
        attempts = self._attempts.get(ev.event_id, 0) + 1
        self._attempts[ev.event_id] = attempts
        if attempts >= self.max_attempts:
            self._attempts.pop(ev.event_id, None)
            log.error("event %s: giving up after %d attempts: %s", ev.event_id, attempts, result.detail)
            return await self._skip(
                ev.event_id,
                Result(Outcome.SKIPPED, f"gave up after {attempts} attempts: {result.detail}"),
            )
        log.warning("event %s: will retry (attempt %d/%d): %s", ev.event_id, attempts,
                    self.max_attempts, result.detail)
        await self.store.events.finish(ev.event_id, "retry", result.detail[:500])
        self._count("retry")
        return result

    async def _skip(self, event_id: str, result: Result) -> Result:
        await self.store.events.finish(event_id, "skipped", result.detail[:500])
        self._count("skipped")
        reason = result.detail.split(":")[0][:40]
        metrics.EVENTS_SKIPPED.labels(reason).inc()
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
        if not message.text.strip() and not message.actions and not message.help_menu:
            return Result(
                Outcome.SKIPPED, f"empty message (content type {message.content_type!r})"
            )
        if message.content_type not in KNOWN_CONTENT_TYPES:
            log.info("event %s: unknown content type %r, delivered as Markdown", ev.event_id,
                     message.content_type)
        if await self.store.replies.was_shown(message.message_id):
            return Result(Outcome.SKIPPED, "already shown live")
        answer = answer_from_message(message, conversation_id=ev.conversation_id)
        if len(answer.text) > self.max_text:
            log.warning("event %s: text of %d characters truncated to %d", ev.event_id,
                        len(answer.text), self.max_text)
            answer = replace(answer, text=answer.text[: self.max_text] + texts.TRUNCATED)
        conversation_id = ev.conversation_id or message.conversation_id
        if answer.sender is not None and conversation_id:
            # a human agent is on this conversation: the employee's next turns complete empty
            await self.store.kv.namespace(LIVE_AGENTS).set(conversation_id, answer.sender.name)
        return await self.routes.post(ev, key, conversation_id, answer, message.message_id)
