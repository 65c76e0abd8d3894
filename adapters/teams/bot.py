"""The botbuilder `ActivityHandler`: Teams activities in, `Inbound` to the relay out.

The turn stays short: remember the conversation reference, send a typing indicator, hand the
question to `core.submit` and return, so the HTTP POST is answered long before Teams' ~15 s
timeout and redelivery. The answer is written later through the stored reference.

Clicks: a 👍/👎 (`message/submitAction` invoke) goes to Moveworks with the text typed with it,
for the message it names or, when it names none (the Agents Playground), the clicker's latest
answer in the conversation; an action button (a card's `Action.Submit`) runs once per person, a
second press gets a short note.

Where answers go: personal chats always; channels and group chats only when the bot is
@mentioned (the mention is stripped). In a channel the reply goes into the message's reply chain
and the chain's root id is the thread; follow-ups in the chain or the personal chat continue the
same Moveworks conversation (one per person: the relay keys links by thread and user).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import Activity, ActivityTypes, ChannelAccount

from bridge import texts
from bridge.contract import FeedbackAck
from bridge.errors import PlatformError
from bridge.models import ChatUser, Inbound, ThreadKey

from .references import (
    MESSAGE_ID_MARK,
    PLATFORM,
    StoredReference,
    bare_conversation,
    tenant_of,
)
from .render import CALLBACK_KEY

if TYPE_CHECKING:
    from .app import TeamsAdapter

log = logging.getLogger("adapters.teams")

FEEDBACK_TIMEOUT = 8.0  # Teams waits ~15 s for an invoke response
FEEDBACK_NOTE_TIMEOUT = 4.0  # the refusal/failure note, sent before the invoke is answered
NOTE_TIMEOUT = 4.0  # a short note answering a click, sent within its turn
_AT_TAG = re.compile(r"<at[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?(?:p|div|span|br|b|i|strong|em)\b[^>]*>", re.IGNORECASE)


class TenantRefused(Exception):
    """The activity comes from a tenant outside `TEAMS_ALLOWED_TENANTS`."""


def scope_of(activity: Activity) -> str:
    conversation = activity.conversation
    kind = (conversation.conversation_type if conversation else None) or ""
    if kind in ("personal", "groupChat", "channel"):
        return kind
    if conversation is not None and conversation.is_group:
        return "channel" if MESSAGE_ID_MARK in (conversation.id or "") else "groupChat"
    return "personal"  # the Emulator and Agents Playground's 1:1 chats send no type


def user_of(activity: Activity, tenant: str) -> ChatUser:
    sender: ChannelAccount = activity.from_property or ChannelAccount()
    return ChatUser(PLATFORM, tenant, sender.aad_object_id or sender.id or "", name=sender.name or None)


def thread_of(activity: Activity, tenant: str, scope: str) -> tuple[ThreadKey, str]:
    """(ThreadKey, the conversation id to write replies to)."""
    conversation_id = activity.conversation.id or ""
    channel = bare_conversation(conversation_id)
    if scope != "channel":
        return ThreadKey(PLATFORM, tenant, channel, ""), conversation_id
    if MESSAGE_ID_MARK in conversation_id:
        root = conversation_id.split(MESSAGE_ID_MARK, 1)[1]
    else:  # a client that does not put the chain in the id: the replied-to (or this) message
        root = activity.reply_to_id or activity.id or ""
    return ThreadKey(PLATFORM, tenant, channel, root), f"{channel}{MESSAGE_ID_MARK}{root}"


def mentions_bot(activity: Activity) -> bool:
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        if entity.type != "mention":
            continue
        mentioned = (entity.additional_properties or {}).get("mentioned") or {}
        if bot_id and mentioned.get("id") == bot_id:
            return True
    return False


def feedback_comment(raw: Any) -> str | None:
    """The text typed into Teams' feedback box: `{"feedbackText": …}` as a JSON string (Teams),
    or the text itself (the Microsoft 365 Agents Playground)."""
    data: Any = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
        if not isinstance(data, dict):
            data = raw  # typed text that happens to be JSON ("42"): still what was typed
    if isinstance(data, dict):
        data = data.get("feedbackText")
    if not isinstance(data, str) or not data.strip():
        return None
    return data.strip()[: texts.MAX_INPUT_CHARS]


def question_text(activity: Activity) -> str:
    """The question without the bot's @mention; other people's mentions keep their name."""
    text = activity.text or ""
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        props = entity.additional_properties or {}
        if entity.type == "mention" and (props.get("mentioned") or {}).get("id") == bot_id and props.get("text"):
            text = text.replace(props["text"], " ")
    text = _AT_TAG.sub(lambda m: m.group(1), text)
    text = _TAG.sub(" ", text)
    return html.unescape(text).replace("\xa0", " ").strip()


class TeamsBot(TeamsActivityHandler):
    def __init__(self, adapter: TeamsAdapter) -> None:
        self.adapter = adapter

    async def on_turn(self, turn_context: TurnContext) -> None:
        allowed = self.adapter.settings.teams_allowed_tenants
        if allowed and tenant_of(turn_context.activity) not in allowed:
            raise TenantRefused(tenant_of(turn_context.activity) or "(none)")
        await super().on_turn(turn_context)

    # --- messages ------------------------------------------------------------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        sender = activity.from_property
        if sender is None or (activity.recipient and sender.id == activity.recipient.id):
            return
        tenant = tenant_of(activity)
        scope = scope_of(activity)
        value = activity.value if isinstance(activity.value, dict) else {}
        callback = value.get(CALLBACK_KEY) == "action" and isinstance(value.get("callback_id"), str)
        if scope != "personal" and not callback and not mentions_bot(activity):
            return  # channel/group traffic not addressed to the bot
        if not callback and not (activity.text or "").strip() and value:
            return  # a card submit that is not ours
        thread, write_to = thread_of(activity, tenant, scope)
        user = user_of(activity, tenant)
        stored = self.adapter.references.remember(
            activity, ref_key=write_to, scope=scope, user_id=user.user_id if scope == "personal" else None
        )
        if sender.id:
            self.adapter.references.remember_member(
                tenant, user.user_id, member_id=sender.id, ref_key=write_to,
                service_url=activity.service_url or "", bot=stored.bot,
            )
        if callback and not self.adapter.references.press(
            str(value.get("conversation_id") or ""), value["callback_id"], user.user_id, activity.id
        ):
            log.info("teams: an action button was pressed again; it runs once")
            await self._note(activity, texts.ACTION_ALREADY_RUN)
            return
        inbound = Inbound(
            # A redelivery repeats the activity id; without one there is nothing to recognise a
            # redelivery by, and two different messages must never be taken for one.
            dedupe_id=f"{thread.channel}|{activity.id}" if activity.id else f"{thread.channel}|no-id:{uuid.uuid4()}",
            thread=thread,
            user=user,
            text=str(value.get("label") or "") if callback else question_text(activity),
            callback_id=value.get("callback_id") if callback else None,
            callback_conversation_id=value.get("conversation_id") if callback else None,
            callback_label=value.get("label") if callback else None,
            address={"ref_key": write_to, "scope": scope},
            direct=scope == "personal",
        )
        budget = self.adapter.tenant_budget(tenant)
        if budget.try_take():  # a courtesy: skipped when the tenant's budget is busy
            try:
                await turn_context.send_activity(Activity(type=ActivityTypes.typing))
            except Exception as exc:  # noqa: BLE001 - the answer matters, not the indicator
                log.info("teams typing indicator failed: %s", exc)
        self.adapter.core.submit(inbound)

    # --- install events: remember where to reach people proactively ----------------------------

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        if bot_id and bot_id in [m.id for m in activity.members_removed or []]:
            self.adapter.references.forget(activity.conversation.id or "")
        elif bot_id and bot_id in [m.id for m in activity.members_added or []]:
            self._remember_install(activity)

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        self._remember_install(turn_context.activity)

    async def on_installation_update_remove(self, turn_context: TurnContext) -> None:
        self.adapter.references.forget(turn_context.activity.conversation.id or "")

    def _remember_install(self, activity: Activity) -> None:
        """The app was installed here: keep the reference (and, in a personal chat, the user's)
        so the poller can post before anyone has asked anything."""
        scope = scope_of(activity)
        tenant = tenant_of(activity)
        write_to = activity.conversation.id or ""
        user = user_of(activity, tenant)
        personal = scope == "personal"
        stored = self.adapter.references.remember(
            activity, ref_key=write_to, scope=scope, user_id=user.user_id if personal else None
        )
        if personal and activity.from_property and activity.from_property.id:
            self.adapter.references.remember_member(
                tenant, user.user_id, member_id=activity.from_property.id, ref_key=write_to,
                service_url=activity.service_url or "", bot=stored.bot,
            )

    # --- invokes -------------------------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        if turn_context.activity.name == "message/submitAction":
            await self._feedback(turn_context)
            return InvokeResponse(status=200, body=None)  # Teams wants 200 with an empty body
        return await super().on_invoke_activity(turn_context)

    async def _feedback(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        value: dict[str, Any] = activity.value if isinstance(activity.value, dict) else {}
        action: dict[str, Any] = value["actionValue"] if isinstance(value.get("actionValue"), dict) else {}
        reaction = action.get("reaction")
        if value.get("actionName") != "feedback" or reaction not in ("like", "dislike"):
            log.info("teams submitAction ignored: not a feedback reaction")
            return
        user = user_of(activity, tenant_of(activity))
        conversation_id = activity.conversation.id or ""
        references = self.adapter.references
        # Teams names the rated message (any message of the answer: its targets are kept under
        # each); the Agents Playground names none: then it is the clicker's latest answer here.
        if activity.reply_to_id:
            target = references.feedback(conversation_id, activity.reply_to_id)
        else:
            target = references.latest_feedback(conversation_id, user.user_id)
        comment = feedback_comment(action.get("feedback"))
        if target is None:
            log.info("teams feedback for a message with no rating target")
            ack = FeedbackAck(texts.FEEDBACK_UNAVAILABLE, False)
        else:
            try:
                ack = await asyncio.wait_for(
                    self.adapter.core.feedback(user, target, reaction == "like", comment=comment), FEEDBACK_TIMEOUT)
            except Exception:
                log.warning("teams feedback could not be recorded", exc_info=True)
                ack = FeedbackAck(texts.FEEDBACK_FAILED, False)
        log.info("teams feedback: %s%s", ack.text, " (with a comment)" if comment and ack.recorded else "")
        # Teams confirms a recorded rating itself: only refusals and failures are worth a message.
        if not ack.recorded:
            await self._note(activity, ack.text, timeout=FEEDBACK_NOTE_TIMEOUT)

    async def _note(self, activity: Activity, text: str, *, timeout: float = NOTE_TIMEOUT) -> None:
        """A short note to whoever clicked, within the click's turn; never raises."""
        try:
            await asyncio.wait_for(self._send_note(activity, text), timeout)
        except (PlatformError, TimeoutError) as exc:
            log.warning("teams note could not be sent: %s", str(exc) or "timed out")

    async def _send_note(self, activity: Activity, text: str) -> None:
        """Tell the user who clicked why their click did not count: in a personal chat as a
        message, in a channel or group chat in the conversation of the click (the reply chain)."""
        scope = scope_of(activity)
        conversation_id = activity.conversation.id or ""
        if scope == "channel" and MESSAGE_ID_MARK not in conversation_id:
            log.info("teams note skipped: the click names no reply chain to answer in")
            return
        reference = TurnContext.get_conversation_reference(activity)
        reference.activity_id = None  # into the conversation, not as a reply to the invoke
        tenant = tenant_of(activity)
        target = self.adapter.target_of(StoredReference(conversation_id, reference.serialize(), tenant, scope))
        await self.adapter.tenant_budget(tenant).acquire(final=True)
        await target.send(target.text_message(text, ai=False), final=True)
