"""Writing into one Teams conversation: `TeamsTarget` (send/update/delete through a continued
turn, with the per-conversation rate budget) and `TeamsMessageOps` (the core's `MessageOps`, used
by `EditingSink` for channels, group chats and proactive posts).

Per-conversation limits (7/1 s, 8/2 s, 60/30 s per bot and conversation) are kept
by a token bucket per conversation, on top of the tenant budget the renderer draws from. Finals
wait with priority. A permanent failure (403 writes blocked, bot removed, conversation gone) drops
the stored reference so neither the relay nor the poller writes there again; a 404 on a channel
reply chain (its root message deleted) drops only that chain, not the channel and its other chains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ActivityTypes, Attachment, Entity

from bridge.errors import PlatformError, PlatformRateLimited
from bridge.mechanisms.ratelimit import WriteBudget
from bridge.models import Answer

from .connector import run_in_conversation, to_platform_error
from .references import MESSAGE_ID_MARK, PLATFORM, ReferenceBook, StoredReference
from .render import answer_extras, render_text

log = logging.getLogger("adapters.teams")


class TeamsTarget:
    """One conversation (chat or reply chain) the bot writes into."""

    def __init__(
        self,
        cloud: CloudAdapter,
        app_id: str,
        stored: StoredReference,
        references: ReferenceBook,
        conversation_budget: WriteBudget,
        *,
        text_format: str = "markdown",
        count_write: Callable[[str, str], None] = lambda platform, op: None,
        count_rate_limited: Callable[[str], None] = lambda platform: None,
    ) -> None:
        self.cloud = cloud
        self.app_id = app_id
        self.stored = stored
        self.references = references
        self.budget = conversation_budget
        self.text_format = text_format
        self.count_write = count_write
        self.count_rate_limited = count_rate_limited
        self.calls = 0

    @property
    def conversation_id(self) -> str:
        return self.stored.ref_key

    def _count(self, op: str) -> None:
        self.calls += 1
        self.count_write(PLATFORM, op)

    def _failed(self, exc: BaseException, op: str) -> PlatformError:
        error = to_platform_error(exc, op)
        if isinstance(error, PlatformRateLimited):
            self.count_rate_limited(PLATFORM)
        if not error.permanent:
            return error
        if getattr(error, "status", None) == 404 and MESSAGE_ID_MARK in self.stored.ref_key:
            log.warning("teams reply chain is gone (%s); dropping it, the channel stays", error)
            self.references.forget_chain(self.stored.ref_key)
        else:  # 403: the bot cannot write here at all (Teams often omits the subCode)
            log.warning("teams conversation is no longer writable (%s); dropping its reference", error)
            self.references.forget(self.stored.ref_key)
        return error

    def message(self, text: str, *, kind: str = ActivityTypes.message, entities: list[Entity] | None = None,
                attachments: list[Attachment] | None = None, channel_data: dict[str, Any] | None = None,
                raw_text: bool = False) -> Activity:
        activity = Activity(type=kind, text=text if raw_text else render_text(text, self.text_format))
        if kind == ActivityTypes.message:
            activity.text_format = "extendedmarkdown" if self.text_format == "extendedmarkdown" else "markdown"
        if entities:
            activity.entities = entities
        if attachments:
            activity.attachments = attachments
        if channel_data:
            activity.channel_data = channel_data
        return activity

    async def send(self, activity: Activity, *, op: str = "post", final: bool = False) -> str:
        await self.budget.acquire(final=final)
        self._count(op)
        try:
            response = await run_in_conversation(
                self.cloud, self.app_id, self.stored.to_reference(), lambda ctx: ctx.send_activity(activity)
            )
        except Exception as exc:  # noqa: BLE001 - mapped onto the core's delivery errors
            raise self._failed(exc, "stream" if op == "stream" else "post") from None
        return str(getattr(response, "id", "") or "")

    async def update(self, activity_id: str, activity: Activity, *, final: bool = False) -> None:
        activity.id = activity_id
        await self.budget.acquire(final=final)
        self._count("update")
        try:
            await run_in_conversation(
                self.cloud, self.app_id, self.stored.to_reference(), lambda ctx: ctx.update_activity(activity)
            )
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc, "update") from None

    async def delete(self, activity_id: str) -> None:
        self._count("delete")
        try:
            await run_in_conversation(
                self.cloud, self.app_id, self.stored.to_reference(), lambda ctx: ctx.delete_activity(activity_id)
            )
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc, "delete") from None

    def remember_answer(self, message_id: str, answer: Answer | None) -> None:
        """Feedback arrives later as an invoke naming only the message id: keep the target."""
        if answer is not None and answer.feedback is not None and message_id:
            self.references.remember_feedback(self.conversation_id, message_id, answer.feedback)

    def final_message(self, text: str, answer: Answer | None, *, plain: bool = False) -> Activity:
        extras = answer_extras(answer, with_citations=not plain, with_card=not plain)
        return self.message(text, entities=extras.entities, attachments=extras.attachments,
                            channel_data=extras.channel_data)


class TeamsMessageOps:
    """`MessageOps` for `EditingSink`: post / update_activity / delete of one Teams message."""

    def __init__(self, target: TeamsTarget) -> None:
        self.target = target

    async def _with_fallback(self, write, text: str, answer: Answer | None) -> Any:
        try:
            return await write(self.target.final_message(text, answer))
        except PlatformError as exc:
            # A 400 on a message with extras (entity or card Teams refused): the text matters
            # more than the decorations, so send it plainly rather than lose it.
            if answer is None or getattr(exc, "status", None) not in (400, 413):
                raise
            log.warning("teams refused a message's extras (%s); sending it without them", exc)
            return await write(self.target.final_message(text, answer, plain=True))

    async def post(self, text: str, *, answer: Answer | None = None) -> str:
        final = answer is not None
        message_id = await self._with_fallback(
            lambda activity: self.target.send(activity, op="post", final=final), text, answer
        )
        self.target.remember_answer(message_id, answer)
        return message_id

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None:
        final = answer is not None
        await self._with_fallback(
            lambda activity: self.target.update(message_id, activity, final=final), text, answer
        )
        self.target.remember_answer(message_id, answer)

    async def delete(self, message_id: str) -> None:
        await self.target.delete(message_id)
