"""The relay: one inbound question from any adapter → one streamed Moveworks answer in chat.

Order of work for a question: dedupe the delivery (store, so it holds across processes),
resolve the employee's Moveworks identity, then, under the thread's lock, get or create the
conversation of this (thread, employee) pair and stream the answer into the adapter's sink.
Every way this can fail ends with a short, kind message in the thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

from bridge.process import metrics
from bridge.mechanisms.ratelimit import Budgets
from bridge.mechanisms.gate import KeyedLock, TaskSet
from bridge.errors import DeliveryError, UserCanceled
from bridge.models import ChatUser, FeedbackTarget, Inbound, ThreadKey, ThreadLink
from bridge.moveworks.errors import (
    AuthError,
    InvalidRequest,
    MoveworksError,
    NotFound,
    RateLimited,
)
from bridge.contract import ChatAdapter, ReplySink
from bridge.store import Store
from bridge.answers.renderer import AnswerFailed, StreamRenderer

log = logging.getLogger("bridge.answers.relay")

MAX_INPUT_CHARS = 8000
EMAIL_RECHECK_SECONDS = 24 * 3600.0

MSG_EMPTY = "It looks like your message was empty. What can I help you with?"
MSG_TOO_LONG = (
    f"That message is too long for me to send to the assistant (the limit is {MAX_INPUT_CHARS:,} "
    "characters). Could you shorten it, or ask about one part at a time?"
)
MSG_NO_IDENTITY = (
    "I couldn't match your chat account to an employee email, so I can't ask the assistant on "
    "your behalf. Please contact your IT team."
)
MSG_BUSY = "The assistant is very busy right now. Please try again in a minute."
MSG_AUTH = "I couldn't sign in to the assistant for you just now. Please try again later."
MSG_FAILED = "Sorry, the assistant ran into a problem answering that. Please try again."
MSG_UNAVAILABLE = "Sorry, I can't reach the assistant right now. Please try again in a few minutes."
MSG_BUG = "Sorry, something went wrong on my side. Please try again."
MSG_RESTART = "I was restarted before I could finish this answer. Please ask again."
MSG_NOT_OWNER = "That button belongs to someone else's conversation, so only they can use it."
MSG_CALLBACK_GONE = "That button has expired. Please ask your question again."
MSG_FEEDBACK_FAILED = "Sorry, I couldn't record your feedback right now. Please try again later."


def kind_message(exc: BaseException) -> str:
    """The short, kind text a user sees for a failure (never the exception itself)."""
    if isinstance(exc, RateLimited):
        return MSG_BUSY
    if isinstance(exc, AuthError):
        return MSG_AUTH
    if isinstance(exc, AnswerFailed):
        return MSG_FAILED
    if isinstance(exc, MoveworksError):
        return MSG_UNAVAILABLE
    return MSG_BUG


class FeedbackAck(str):
    """The text to show whoever clicked a rating; `recorded` says whether Moveworks took it
    (platforms that confirm ratings themselves show only the refusals and failures)."""

    recorded: bool

    def __new__(cls, text: str, recorded: bool) -> FeedbackAck:
        ack = super().__new__(cls, text)
        ack.recorded = recorded
        return ack


class NoIdentity(Exception):
    pass


class Relay:
    def __init__(
        self,
        *,
        store: Store,
        client,  # bridge.moveworks.client.MoveworksClient (typed loosely to keep imports light)
        per_employee: bool,
        budgets: Budgets | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep=asyncio.sleep,
    ) -> None:
        self.store = store
        self.client = client
        self.per_employee = per_employee
        self.budgets = budgets or Budgets(clock=clock, sleep=sleep)
        self.adapters: dict[str, ChatAdapter] = {}
        self._clock = clock
        self._sleep = sleep
        self._locks = KeyedLock()
        self._tasks = TaskSet()
        self._first_text_observers: list[Callable[[str, float], None]] = []
        self._activity_observers: list[Callable[[str | None], object]] = []

    # --- wiring ------------------------------------------------------------------------------

    def register(self, adapter: ChatAdapter) -> None:
        self.adapters[adapter.platform] = adapter

    def thread_lock(self, thread: ThreadKey) -> AbstractAsyncContextManager[None]:
        """Held while anything is written into `thread`: answers and events never interleave."""
        return self._locks(thread.lock_key)

    def observe_first_text(self, callback: Callable[[str, float], None]) -> None:
        """Benchmarks: called with (platform, seconds from first delta to first visible text)."""
        self._first_text_observers.append(callback)

    def on_activity(self, callback: Callable[[str | None], object]) -> None:
        """Called with the Moveworks identity of every employee who asks something (the poller
        starts polling a new employee at once instead of at its next refresh)."""
        self._activity_observers.append(callback)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, inbound: Inbound) -> None:
        """Accept a question and return at once; the answer streams in a background task."""
        self._tasks.spawn(self.handle(inbound), name=f"answer:{inbound.thread.platform}")

    def background(self, coro, name: str) -> None:
        """Run bookkeeping work (e.g. restart notes) without holding up the caller; drained
        like answers at shutdown."""
        self._tasks.spawn(coro, name=name)

    async def drain(self, timeout: float) -> int:
        """Graceful shutdown: let answers finish for `timeout` s; the rest end with a note."""
        return await self._tasks.drain(timeout)

    # --- identity ----------------------------------------------------------------------------

    async def identity_for(self, user: ChatUser) -> str | None:
        """The Moveworks identity of a chat user: their email in user_jwt mode, else None
        (the one service identity). Raises NoIdentity when an email is needed but unknown.

        The email is also worth knowing in single-identity modes (proactive DMs), so it is
        looked up there too, but at most once a day per user."""
        email = user.email
        looked_up = False
        checked = self.store.email_checked_at(user.platform, user.workspace, user.user_id)
        stale = checked is None or time.time() - checked > EMAIL_RECHECK_SECONDS
        if not email:
            known = self.store.get_employee(user.platform, user.workspace, user.user_id)
            email = known.email if known else None
            if email and self.per_employee and stale and checked is not None:
                # Directory emails change (renames, re-used accounts): in user_jwt mode the email
                # decides whom we act as, so re-check it daily; keep the cached one on failure.
                email = await self._lookup_email(user) or email
                looked_up = True
        if not email:
            due = self.per_employee or stale
            if due:
                looked_up = True
                email = await self._lookup_email(user)
        if email or looked_up:
            self.store.save_employee(replace(user, email=email or None), email_checked=looked_up)
        if not self.per_employee:
            return None
        if not email:
            raise NoIdentity()
        return email.lower()

    async def _lookup_email(self, user: ChatUser) -> str | None:
        adapter = self.adapters.get(user.platform)
        if adapter is None:
            return None
        try:
            return await adapter.resolve_email(user)
        except Exception:  # noqa: BLE001 - a directory outage must not lose the question
            log.warning("email lookup failed for a %s user", user.platform, exc_info=True)
            return None

    # --- questions ---------------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> None:
        platform = inbound.thread.platform
        if not self.store.claim_inbound(platform, inbound.delivery_id):
            metrics.INBOUND_DUPLICATES.labels(platform).inc()
            log.info("duplicate delivery %s dropped", inbound.delivery_id)
            return
        metrics.INBOUND.labels(platform).inc()
        adapter = self.adapters.get(platform)
        if adapter is None:
            log.error("no adapter registered for %s", platform)
            return
        try:
            sink = await adapter.open_reply(
                inbound.thread, inbound.address, user=inbound.user, proactive=False
            )
        except Exception:  # noqa: BLE001 - nowhere to write, so nothing kinder to do
            log.warning("cannot open a reply in a %s thread", platform, exc_info=True)
            metrics.ANSWERS.labels(platform, "undeliverable").inc()
            return
        outcome = "failed"
        try:
            async with self.thread_lock(inbound.thread):
                metrics.ACTIVE_ANSWERS.inc()
                try:
                    outcome = await self._answer(inbound, sink)
                finally:
                    metrics.ACTIVE_ANSWERS.dec()
        except _Interrupted:
            outcome = "interrupted"
            raise
        except asyncio.CancelledError:
            # Shutdown before the answer started streaming (waiting for the thread, looking up
            # the employee, creating the conversation): say so rather than go silent. Once
            # streaming, `_stream` has already said it.
            if outcome != "interrupted":
                outcome = "interrupted"
                await self._note_restart(sink)
            raise
        finally:
            metrics.ANSWERS.labels(platform, outcome).inc()

    @staticmethod
    async def _note_restart(sink: ReplySink) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(sink.fail(MSG_RESTART)), 5.0)
        except Exception:  # noqa: BLE001 - best effort while shutting down
            log.info("could not mark an interrupted answer")

    async def _answer(self, inbound: Inbound, sink: ReplySink) -> str:
        text = inbound.text.strip()
        if inbound.callback_id is None:
            if not text:
                await sink.fail(MSG_EMPTY)
                return "rejected"
            if len(text) > MAX_INPUT_CHARS:
                await sink.fail(MSG_TOO_LONG)
                return "rejected"
        try:
            identity = await self.identity_for(inbound.user)
        except NoIdentity:
            await sink.fail(MSG_NO_IDENTITY)
            return "rejected"
        self.store.save_employee(inbound.user, active=True)
        for observer in self._activity_observers:
            try:
                observer(identity)
            except Exception:  # noqa: BLE001 - an observer must never cost an answer
                log.warning("activity observer failed", exc_info=True)
        try:
            link = await self._link_for(inbound, identity)
        except _Refused as refused:
            await sink.fail(refused.message)
            return "rejected"
        except MoveworksError as exc:
            log.warning("could not create a conversation: %s", exc)
            await sink.fail(kind_message(exc))
            return "failed"
        return await self._stream(inbound, link, sink, retry_lost=True)

    async def _link_for(self, inbound: Inbound, identity: str | None) -> ThreadLink:
        if inbound.callback_id is not None:
            links = self.store.links_for_conversation(inbound.callback_conversation_id or "")
            if not links:
                raise _Refused(MSG_CALLBACK_GONE)
            owner = links[0]
            if owner.user_id != inbound.user.user_id or owner.thread.platform != inbound.thread.platform:
                raise _Refused(MSG_NOT_OWNER)
            return owner
        link = self.store.get_link(inbound.thread, inbound.user.user_id)
        if link is not None and link.active:
            self.store.touch_link(link.id, inbound.address or None)
            return link
        conversation = await self.client.create_conversation(identity)
        return self.store.insert_link(
            inbound.thread,
            inbound.user.user_id,
            identity or "",
            conversation.conversation_id,
            inbound.address,
        )

    async def _stream(self, inbound: Inbound, link: ThreadLink, sink: ReplySink, *, retry_lost: bool) -> str:
        identity = link.identity or None
        budget = self.budgets.get(sink.budget_key, sink.capabilities.write_budget)
        reply_id = self.store.start_reply(link.id)
        platform = inbound.thread.platform

        def first_text(seconds: float) -> None:
            metrics.FIRST_TEXT_SECONDS.labels(platform).observe(seconds)
            for observer in self._first_text_observers:
                observer(platform, seconds)

        renderer = StreamRenderer(
            sink,
            budget,
            clock=self._clock,
            sleep=self._sleep,
            on_response_id=lambda rid: self.store.finish_reply(reply_id, "streaming", response_id=rid),
            on_first_text=first_text,
            on_checkpoint=lambda checkpoint: self.store.checkpoint_reply(reply_id, checkpoint),
        )
        events = self.client.stream_response(
            identity,
            link.conversation_id,
            text=None if inbound.callback_id else inbound.text.strip(),
            callback_id=inbound.callback_id,
        )
        try:
            result = await renderer.run(events)
        except asyncio.CancelledError:
            self.store.finish_reply(reply_id, "interrupted")
            try:
                await asyncio.wait_for(asyncio.shield(renderer.fail(MSG_RESTART)), 5.0)
            except Exception:  # noqa: BLE001 - best effort while shutting down
                log.info("could not mark an interrupted answer")
            raise _Interrupted() from None
        except UserCanceled:
            self.store.finish_reply(reply_id, "canceled")
            log.info("the user stopped the answer")
            return "canceled"
        except NotFound as exc:
            self.store.finish_reply(reply_id, "failed")
            if retry_lost and renderer.response_id is None and inbound.callback_id is None:
                # The conversation is gone on the Moveworks side: start a new one once.
                log.info("conversation %s not found; starting a new one", link.conversation_id)
                self.store.deactivate_link(link.id)
                try:
                    fresh = await self._link_for(inbound, identity)
                except MoveworksError as err:
                    await renderer.fail(kind_message(err))
                    return "failed"
                return await self._stream(inbound, fresh, sink, retry_lost=False)
            await renderer.fail(kind_message(exc))
            return "failed"
        except InvalidRequest as exc:
            self.store.finish_reply(reply_id, "failed")
            log.warning("Moveworks refused the request: %s", exc)
            await renderer.fail(MSG_CALLBACK_GONE if inbound.callback_id else MSG_FAILED)
            return "failed"
        except DeliveryError as exc:
            self.store.finish_reply(reply_id, "failed")
            if exc.permanent:
                log.warning("cannot write into the thread any more: %s", exc)
                self.store.deactivate_link(link.id)
                return "undeliverable"
            log.warning("delivery failed: %s", exc)
            await self._fail_quietly(renderer)
            return "failed"
        except (MoveworksError, AnswerFailed) as exc:
            self.store.finish_reply(reply_id, "failed")
            log.warning("answer failed: %s", exc)
            await self._fail_quietly(renderer, kind_message(exc))
            return "failed"
        except Exception:
            self.store.finish_reply(reply_id, "failed")
            log.exception("unexpected error while answering")
            await self._fail_quietly(renderer, MSG_BUG)
            return "failed"
        self.store.finish_reply(
            reply_id, "final", response_id=result.response_id, platform_message_ids=result.platform_ids
        )
        for message_id in result.message_ids:
            self.store.mark_shown(message_id, link.id, "stream")
        return "answered"

    async def announce_interrupted(self, interrupted: list[tuple[int, dict[str, Any] | None]]) -> None:
        """After a crash: tell each thread whose answer was cut off to ask again, closing the cut-off
        reply in place when its checkpoint allows (no stream left spinning), else in a new message."""
        for link_id, checkpoint in interrupted:
            link = self.store.get_link_by_id(link_id)
            adapter = self.adapters.get(link.thread.platform) if link and link.active else None
            if link is None or adapter is None:
                continue
            try:
                async with self.thread_lock(link.thread):
                    close = getattr(adapter, "close_reply", None)
                    if checkpoint and close is not None and await close(
                        link.thread, link.address, checkpoint, MSG_RESTART
                    ):
                        continue
                    sink = await adapter.open_reply(link.thread, link.address, user=None, proactive=True)
                    await sink.fail(MSG_RESTART)
            except Exception:  # noqa: BLE001 - best effort; the thread may be gone
                log.info("could not tell a thread about its interrupted answer", exc_info=True)

    @staticmethod
    async def _fail_quietly(renderer: StreamRenderer, message: str = MSG_FAILED) -> None:
        try:
            await renderer.fail(message)
        except Exception:  # noqa: BLE001 - the platform itself is failing; nothing more to do
            log.warning("could not post the failure message", exc_info=True)

    # --- feedback ----------------------------------------------------------------------------

    async def feedback(self, user: ChatUser, target: FeedbackTarget, helpful: bool) -> FeedbackAck:
        """Send a 👍/👎 to Moveworks as the asker; returns the acknowledgement for the user."""
        links = self.store.links_for_conversation(target.conversation_id)
        if links and links[0].user_id != user.user_id:
            return FeedbackAck("Only the person who asked can rate this answer.", False)
        callback = target.helpful if helpful else target.unhelpful
        if not callback:
            return FeedbackAck("Feedback isn't available for this answer.", False)
        identity = (links[0].identity or None) if links else None
        try:
            await self.client.submit_feedback(
                identity, target.conversation_id, target.response_id, target.message_id, callback
            )
        except MoveworksError as exc:
            log.warning("feedback failed: %s", exc)
            return FeedbackAck(MSG_FEEDBACK_FAILED, False)
        except Exception:  # noqa: BLE001 - a bad button value must still get an answer
            log.exception("feedback failed unexpectedly")
            return FeedbackAck(MSG_FEEDBACK_FAILED, False)
        text = "Thanks for the feedback!" if helpful else "Thanks, that helps the assistant improve."
        return FeedbackAck(text, True)


class _Interrupted(asyncio.CancelledError):
    """Cancelled while streaming; the thread already shows the restart note."""


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
