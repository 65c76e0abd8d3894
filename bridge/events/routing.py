"""Where a claimed event goes, and posting it there.

1. an active link of its conversation (Slack thread, Teams reply chain / personal chat);
2. else a direct message to the employee on the platform they used last (`open_direct`), and
   that DM is mapped to the conversation so replies there continue it (and, where the platform
   answers a top-level message in a thread of its own, that thread too: `reply_thread`).

A permanent platform error (bot removed, channel archived, writes blocked) deactivates the link
and the next route is tried. Posting happens through the thread gate, so an event never
interleaves with a live answer streaming in the same thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

from bridge.contract import Address, ChatAdapter
from bridge.errors import PlatformError, PlatformRateLimited
from bridge.mechanisms.gate import ThreadGate
from bridge.models import Answer, Employee, ThreadLink
from bridge.moveworks.models import Event
from bridge.store.aio import AnyStore, as_async

log = logging.getLogger(__name__)


class Outcome(Enum):
    SENT = "sent"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"  # already sent or skipped earlier (or by another process)
    RETRY = "retry"  # transient failure: left for a later attempt, checkpoint not advanced
    # The thread is busy (an answer is streaming there): stored for the next poll, and the poll
    # goes on with other conversations, so one busy or stuck thread never holds the rest back.
    DEFERRED = "deferred"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str = ""
    platform: str | None = None
    message_ids: tuple[str, ...] = ()
    retry_after: float | None = None


class Transient(Exception):
    """A temporary platform failure: the event is retried later, in order."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Busy(Transient):
    """Something is being written into the event's thread right now: never wait for it."""


class Routes:
    def __init__(
        self,
        store: AnyStore,
        adapters: Mapping[str, ChatAdapter],
        gate: ThreadGate,
        *,
        per_employee: bool,
        dm_single_identity: str = "sole",
    ) -> None:
        self.store = as_async(store)
        self.adapters = adapters
        self.gate = gate
        self.per_employee = per_employee
        self.dm_single_identity = dm_single_identity

    async def post(self, ev: Event, key: str, conversation_id: str, answer: Answer, message_id: str) -> Result:
        for link in await self.store.links.for_conversation(conversation_id):
            if not link.active:
                continue
            result = await self._try_link(ev, link, answer, message_id)
            if result is not None:
                return result
        return await self._direct(ev, key, conversation_id, answer, message_id)

    async def _try_link(
        self, ev: Event, link: ThreadLink, answer: Answer, message_id: str
    ) -> Result | None:
        """Post into `link`; None if this route is unusable (try the next one)."""
        adapter = self.adapters.get(link.thread.platform)
        if adapter is None:
            log.info("event %s: no %s adapter running for its thread", ev.event_id, link.thread.platform)
            return None
        if self.gate.busy(link.thread):
            raise Busy("an answer is streaming in this thread")
        try:
            async with self.gate.hold(link.thread):
                if await self.store.replies.was_shown(message_id):  # a live answer showed it already
                    return Result(Outcome.SKIPPED, "already shown live")
                if await self.store.replies.streaming_in(link.thread):
                    # Another process (`serve`, with a separate `poll` worker) is streaming an
                    # answer here: the in-process gate cannot see it, the store can.
                    raise Busy("an answer is streaming in this thread (another process)")
                sink = await adapter.open_reply(link.thread, link.address, user=None, proactive=True)
                ids = await sink.finish(answer)
                await self.store.replies.mark_shown(message_id, link.id, "event")
        except PlatformRateLimited as exc:
            raise Transient(f"{link.thread.platform} rate limited: {exc}", exc.retry_after) from None
        except PlatformError as exc:
            if not exc.permanent:
                raise Transient(f"{link.thread.platform} delivery failed: {exc}") from None
            log.warning("event %s: %s thread is gone (%s); link %d deactivated", ev.event_id,
                        link.thread.platform, exc, link.id)
            await self.store.links.deactivate(link.id)
            return None
        return Result(Outcome.SENT, platform=link.thread.platform, message_ids=tuple(ids or ()))

    async def _employees(self, key: str) -> list[Employee]:
        if self.per_employee:
            return list(await self.store.employees.by_email(key))
        # One service identity: a brand-new conversation has no known owner. Sending it to the
        # wrong person would leak someone's notification, so by default it goes out only when
        # the bridge knows exactly one employee ("sole"); "last_active" guesses, "off" never DMs.
        if self.dm_single_identity == "sole" and await self.store.employees.active_people() != 1:
            return []
        if self.dm_single_identity in ("sole", "last_active"):
            employee = await self.store.employees.last_active()
            return [employee] if employee is not None else []
        return []

    async def _direct(
        self, ev: Event, key: str, conversation_id: str, answer: Answer, message_id: str
    ) -> Result:
        employees = await self._employees(key)
        link_identity = key if self.per_employee else ""
        tried = 0
        for employee in employees:
            adapter = self.adapters.get(employee.platform)
            if adapter is None:
                continue
            tried += 1
            try:
                target = await adapter.open_direct(employee)
            except PlatformRateLimited as exc:
                raise Transient(f"{employee.platform} rate limited opening a DM: {exc}",
                                 exc.retry_after) from None
            except PlatformError as exc:
                if not exc.permanent:
                    raise Transient(f"{employee.platform} could not open a DM: {exc}") from None
                log.warning("event %s: cannot DM %s user %s: %s", ev.event_id, employee.platform,
                            employee.user_id, exc)
                continue
            if target is None:
                continue
            thread, address = target
            link = await self.store.links.insert(thread, employee.user_id, link_identity, conversation_id,
                                          address)
            if link.conversation_id != conversation_id:
                link = await self._remap(link, conversation_id, address)
            result = await self._try_link(ev, link, answer, message_id)
            if result is not None:
                if result.outcome is Outcome.SENT:
                    await self._map_reply_thread(adapter, link, result.message_ids)
                return result
        reason = "nowhere to deliver: no active thread and no reachable chat account"
        if not employees:
            reason = "nowhere to deliver: no active thread and no known chat account"
        elif not tried:
            reason = "nowhere to deliver: the employee's platforms are not running"
        log.warning("event %s (conversation %s): %s", ev.event_id, conversation_id, reason)
        return Result(Outcome.SKIPPED, reason)

    async def _map_reply_thread(self, adapter: ChatAdapter, link: ThreadLink, message_ids: tuple[str, ...]) -> None:
        """Map the thread a reply to the posted DM continues in, when the adapter says it is
        not the DM itself (`reply_thread`), so that reply finds the event's conversation."""
        if not message_ids or link.thread.thread:
            return
        target = adapter.reply_thread(link.thread, link.address, message_ids)
        if target is None:
            return
        thread, address = target
        await self.store.links.insert(thread, link.user_id, link.identity, link.conversation_id, address)

    async def _remap(self, link: ThreadLink, conversation_id: str, address: Address) -> ThreadLink:
        """The DM is already mapped to another conversation (flat DM, one link per user): it now
        continues the event's conversation, as a new "System Initiated Conversation" would in
        Moveworks' own channels."""
        await self.store.links.remap(link.id, conversation_id, address)
        return replace(link, conversation_id=conversation_id, address=address)
