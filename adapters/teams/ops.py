"""Writing into one Teams conversation: `TeamsTarget` (send/update/delete through a continued
turn, with the per-conversation rate budget) and `TeamsMessageOps` (the core's `MessageOps`, used
by `EditingSink` for channels, group chats and proactive posts).

Per-conversation limits (7/1 s, 8/2 s, 60/30 s per bot and conversation) are kept
by a token bucket per conversation, on top of the tenant budget the renderer draws from. Finals
wait with priority. A permanent failure (403 writes blocked, bot removed, conversation gone) drops
the stored reference so neither the relay nor the poller writes there again; a 404 on a channel
reply chain (its root message deleted) drops only that chain, not the channel and its other chains.
A refused message (400, 413: `MessageRefused`) drops nothing: it is sent again with less.

An answer is its text messages plus one card message for its buttons (see render.py): the text
message carries the AI label, its citation claims and (the last part) the feedback flag; when
Teams refuses those, the text goes with the label and claims only, then alone. Feedback targets
are remembered under every message id of the answer, and as the asker's latest answer in the
conversation, for ratings that name no message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ActivityTypes, Attachment, Entity

from bridge import texts
from bridge.errors import PlatformError, PlatformRateLimited
from bridge.mechanisms.ratelimit import WriteBudget
from bridge.models import Answer

from .connector import refused, run_in_conversation, to_platform_error
from .references import MESSAGE_ID_MARK, PLATFORM, ReferenceBook, StoredReference
from .render import (
    FULL,
    NO_FEEDBACK,
    TEXT_ONLY,
    answer_card,
    cited,
    growing_text,
    is_answer_text,
    render_text,
    text_extras,
)

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
        tenant_budget: WriteBudget | None = None,
        asker: str | None = None,
    ) -> None:
        self.cloud = cloud
        self.app_id = app_id
        self.stored = stored
        self.references = references
        self.budget = conversation_budget
        self.text_format = text_format
        self.count_write = count_write
        self.count_rate_limited = count_rate_limited
        self.tenant_budget = tenant_budget  # for the calls an answer makes beyond the renderer's
        self.asker = asker  # whose answers these are (None: a notification)
        self.calls = 0

    @property
    def conversation_id(self) -> str:
        return self.stored.ref_key

    def _count(self, op: str) -> None:
        self.calls += 1
        self.count_write(PLATFORM, op)

    async def _failed(self, exc: BaseException, op: str) -> PlatformError:
        error = to_platform_error(exc, op)
        if isinstance(error, PlatformRateLimited):
            self.count_rate_limited(PLATFORM)
        if not error.permanent or refused(error):
            return error  # a refused message says nothing about the conversation
        if getattr(error, "status", None) == 404 and MESSAGE_ID_MARK in self.stored.ref_key:
            log.warning("teams reply chain is gone (%s); dropping it, the channel stays", error)
            await self.references.forget_chain(self.stored.ref_key)
        else:  # 403: the bot cannot write here at all (Teams often omits the subCode)
            log.warning("teams conversation is no longer writable (%s); dropping its reference", error)
            await self.references.forget(self.stored.ref_key)
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
            raise await self._failed(exc, "stream" if op == "stream" else "post") from None
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
            raise await self._failed(exc, "update") from None

    async def delete(self, activity_id: str) -> None:
        self._count("delete")
        try:
            await run_in_conversation(
                self.cloud, self.app_id, self.stored.to_reference(), lambda ctx: ctx.delete_activity(activity_id)
            )
        except Exception as exc:  # noqa: BLE001
            raise await self._failed(exc, "delete") from None

    async def extra_call(self, *, final: bool = True) -> None:
        """Take a tenant token for a call the renderer did not pay for (a card, a fall-back)."""
        if self.tenant_budget is not None:
            await self.tenant_budget.acquire(final=final)

    def text_message(self, text: str, answer: Answer | None = None, *, last: bool = True, ai: bool = True,
                     level: int = FULL) -> Activity:
        """One text message of an answer: `text` (Markdown) and its extras (see render.py)."""
        extras = text_extras(text, answer, last=last, ai=ai, level=level)
        return self.message(text, entities=extras.entities, channel_data=extras.channel_data)

    def growing_message(self, text: str, *, level: int = FULL) -> Activity:
        """An intermediate edit of an answer (`text` ends with the cursor), rendered as the final."""
        extras = text_extras(text, None, ai=True, level=level)
        return self.message(growing_text(text, self.text_format, texts.CURSOR), entities=extras.entities,
                            raw_text=True)

    def card_message(self, answer: Answer | None) -> Activity | None:
        """The answer's buttons (and sources beyond ten) as a message of their own: no text, no AI
        label, no feedback flag (the text message has them)."""
        card = answer_card(answer)
        if card is None:
            return None
        return Activity(type=ActivityTypes.message, attachments=[card])

    async def remember_answer(self, message_ids: Iterable[str | None], answer: Answer | None) -> None:
        """Feedback arrives later as an invoke naming (at best) one message id: keep the target
        under every message of the answer, and as the asker's latest answer here."""
        if answer is None or answer.feedback is None:
            return
        ids = [message_id for message_id in message_ids if message_id]
        for message_id in ids:
            await self.references.remember_feedback(self.conversation_id, message_id, answer.feedback)
        if ids:
            await self.references.remember_latest(self.conversation_id, self.asker, answer.feedback)


class TeamsMessageOps:
    """`MessageOps` for `EditingSink`: post / update_activity / delete of one answer's messages,
    plus the answer's card message after its final text."""

    def __init__(self, target: TeamsTarget) -> None:
        self.target = target
        self.card_id: str | None = None
        self.parts: dict[str, str] = {}  # message id -> Markdown last written, in posting order

    def _activity(self, text: str, answer: Answer | None, level: int) -> Activity:
        if answer is not None:
            return self.target.text_message(text, answer, level=level)
        if text.endswith(texts.CURSOR):
            return self.target.growing_message(text, level=level)
        return self.target.text_message(text, None, ai=is_answer_text(text), level=level)

    async def _write(self, write: Callable[[Activity], Any], text: str, answer: Answer | None) -> Any:
        """Write the text message; when Teams refuses it, again with less (see the module doc)."""
        levels = (FULL, NO_FEEDBACK, TEXT_ONLY) if answer is not None else (FULL, TEXT_ONLY)
        for n, level in enumerate(levels):
            if n:
                await self.target.extra_call(final=answer is not None)
            try:
                return await write(self._activity(text, answer, level))
            except PlatformError as exc:
                if not refused(exc) or level == levels[-1]:
                    raise
                log.warning("teams refused a message (%s); sending it with less", exc)
        raise AssertionError("unreachable")

    async def post(self, text: str, *, answer: Answer | None = None) -> str:
        final = answer is not None
        message_id = await self._write(
            lambda activity: self.target.send(activity, op="post", final=final), text, answer
        )
        self.parts[message_id] = text
        if answer is not None:
            await self._finish(message_id, answer)
        return str(message_id)

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None:
        final = answer is not None
        await self._write(lambda activity: self.target.update(message_id, activity, final=final), text, answer)
        self.parts[message_id] = text
        if answer is not None:
            await self._finish(message_id, answer)

    async def delete(self, message_id: str) -> None:
        await self.target.delete(message_id)
        self.parts.pop(message_id, None)

    async def _finish(self, last_id: str, answer: Answer) -> None:
        """After the last part's final text: claims on earlier parts that show citation markers,
        the card message, and the feedback targets."""
        for message_id, text in list(self.parts.items()):
            if message_id == last_id or not cited(text, answer, last=False):
                continue
            await self.target.extra_call()
            try:
                await self.target.update(message_id, self.target.text_message(text, answer, last=False),
                                         final=True)
            except PlatformError as exc:
                if not refused(exc):
                    raise
                log.warning("teams refused the citations of an earlier part (%s)", exc)
        await self._card(answer)
        await self.target.remember_answer([*self.parts, self.card_id], answer)

    async def _card(self, answer: Answer) -> None:
        activity = self.target.card_message(answer)
        if activity is None:
            return
        await self.target.extra_call()
        try:
            if self.card_id is None:
                self.card_id = await self.target.send(activity, op="post", final=True)
            else:  # the final is written again (a retry): the card is there already
                await self.target.update(self.card_id, activity, final=True)
        except PlatformError as exc:
            if not refused(exc):
                raise
            log.warning("teams refused an answer's card (%s); the answer stands without it", exc)
