"""The botbuilder `ActivityHandler`: Teams activities in, `Inbound` to the relay out.

The turn stays short: remember the conversation reference, send a typing indicator, hand the
question to `core.submit` and return, so the HTTP POST is answered long before Teams' ~15 s
timeout and redelivery. The POST is answered when the turn returns, so only after `core.submit`
stored the question (a turn that fails answers 500 and Teams delivers the activity again). The
answer is written later through the stored reference.

Clicks: a 👍/👎 (`message/submitAction` invoke) goes to Moveworks with the text typed with it,
for the message it names or, when it names none (the Agents Playground), the clicker's latest
answer in the conversation; an action button (a card's `Action.Submit`) runs once per person, a
second press gets a short note; a get-help menu item goes to `core.choose_help_item`.

Forms are Teams dialogs (forms.py): `task/fetch` opens one (`core.open_form`), `task/submit`
refreshes or submits it. An invoke's HTTP answer is what the dialog shows, so each is answered
within `INVOKE_DEADLINE` even when Moveworks is slow (teams.md §4.6: the Bot Framework waits
about 10-15 s for the HTTP answer, then Teams sends the activity again). A form still loading
then gets "press again" (the result is kept a while for that press); a submit still running gets
"Still submitting…" and its outcome is posted in the chat when it lands. A redelivered invoke
joins the one still running instead of submitting twice.

Files (files.py): a message's attachments ride along as `Inbound.files`; the core decides what a
message with files and no text means.

Where answers go: personal chats always; channels and group chats only when the bot is
@mentioned (the mention is stripped). In a channel the reply goes into the message's reply chain
and the chain's root id is the thread; follow-ups in the chain or the personal chat continue the
same Moveworks conversation (one per person: the relay keys links by thread and user). Someone
who brings the bot into a chain with a mention in a reply gets the chain's earlier messages sent
along (`Inbound.context`, read through Microsoft Graph: thread_context.py).

Install events: the conversation reference is kept (proactive messages), and a personal install
gets the welcome card once (welcome.py).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import Activity, ActivityTypes, Attachment, ChannelAccount

from bridge import texts
from bridge.contract import FeedbackAck
from bridge.errors import PlatformError
from bridge.models import ChatUser, FormStep, Inbound, MessageRef, ThreadKey

from .files import attachments_of
from .forms import (
    DIALOG,
    HELP_ITEM,
    OPEN_FORM,
    REFRESH,
    message_response,
    parse_values,
    ref_of,
    step_response,
    task_data,
    zone_name,
)
from .references import (
    MESSAGE_ID_MARK,
    PLATFORM,
    StoredReference,
    bare_conversation,
    tenant_of,
)
from .render import ADAPTIVE_CARD, CALLBACK_KEY
from .thread_context import chain_of
from .welcome import welcome_card

if TYPE_CHECKING:
    from .app import TeamsAdapter

log = logging.getLogger("adapters.teams")

FEEDBACK_TIMEOUT = 8.0  # Teams waits ~15 s for an invoke response
FEEDBACK_NOTE_TIMEOUT = 4.0  # the refusal/failure note, sent before the invoke is answered
NOTE_TIMEOUT = 4.0  # a short note answering a click, sent within its turn
WELCOME_TIMEOUT = 8.0  # the welcome, sent within the install event's turn
INVOKE_DEADLINE = 8.0  # a dialog invoke is answered by then, whatever Moveworks does
LATE_TTL = 120.0  # a result that missed its invoke waits this long for the next press
MAX_PENDING = 1000
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
    def __init__(self, adapter: TeamsAdapter, *, invoke_deadline: float = INVOKE_DEADLINE) -> None:
        self.adapter = adapter
        self.invoke_deadline = invoke_deadline
        # key -> (task, started): core calls an invoke could not wait for (see `_in_time`)
        self._pending: OrderedDict[str, tuple[asyncio.Task[FormStep], float]] = OrderedDict()
        self._late: dict[str, Callable[[FormStep], Coroutine[Any, Any, None]]] = {}  # missed, with a follow-up
        self._background: set[asyncio.Task[Any]] = set()

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
        help_pick = ref_of(value) if value.get(CALLBACK_KEY) == HELP_ITEM else None
        if scope != "personal" and not callback and not help_pick and not mentions_bot(activity):
            return  # channel/group traffic not addressed to the bot
        if not callback and not help_pick and not (activity.text or "").strip() and value:
            return  # a card submit that is not ours
        thread, write_to = thread_of(activity, tenant, scope)
        user = user_of(activity, tenant)
        stored = await self.adapter.references.remember(
            activity, ref_key=write_to, scope=scope, user_id=user.user_id if scope == "personal" else None
        )
        if sender.id:
            await self.adapter.references.remember_member(
                tenant, user.user_id, member_id=sender.id, ref_key=write_to,
                service_url=activity.service_url or "", bot=stored.bot,
            )
        if help_pick is not None:
            if activity.id and not await self.adapter.core.claim_inbound(
                    PLATFORM, f"help|{thread.channel}|{activity.id}"):
                return  # a redelivery of a pick already handled
            ref, where = help_pick
            self._spawn(self._help_item(activity, user, thread, {"ref_key": write_to, "scope": scope}, ref, where),
                        "help-item")
            return
        if callback and not await self.adapter.references.press(
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
            files=() if callback else attachments_of(activity),
        )
        budget = self.adapter.tenant_budget(tenant)
        if budget.try_take():  # a courtesy: skipped when the tenant's budget is busy
            try:
                await turn_context.send_activity(Activity(type=ActivityTypes.typing))
            except Exception as exc:  # noqa: BLE001 - the answer matters, not the indicator
                log.info("teams typing indicator failed: %s", exc)
        if scope == "channel" and not callback:
            inbound = replace(inbound, context=await self._thread_context(activity, thread, user))
        # Stored before the turn returns, so before botbuilder answers the POST: a question Teams
        # got its 200/201 for is never lost (a failure here answers 500 and Teams sends it again).
        await self.adapter.core.submit(inbound)

    async def _thread_context(self, activity: Activity, thread: ThreadKey, user: ChatUser) -> str:
        """The reply chain's earlier messages when someone brings the bot into it with a mention
        in a reply (thread_context.py); "" for a chain's root, and for someone the bot is already
        talking with there (their Moveworks conversation has the chain already)."""
        chain = chain_of(activity, thread.thread)
        if chain is None or await self.adapter.core.follows(thread, user.user_id):
            return ""
        return await self.adapter.threads.context(chain)

    async def _help_item(self, activity: Activity, user: ChatUser, thread: ThreadKey, address: dict[str, Any],
                         ref: MessageRef, where: str) -> None:
        """A get-help menu item that is not a form: the core posts what it gives; a refusal (not
        theirs, expired) is told to whoever pressed (Teams has no private replies: in a channel
        it goes into the reply chain, like the other click notes)."""
        refusal = await self.adapter.core.choose_help_item(user, thread, address, ref, where)
        if refusal:
            await self._note(activity, refusal)

    # --- install events: remember where to reach people proactively ----------------------------

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        if bot_id and bot_id in [m.id for m in activity.members_removed or []]:
            await self.adapter.references.forget(activity.conversation.id or "")
            await self.adapter.welcomes.removed(activity.conversation.id or "")
        elif bot_id and bot_id in [m.id for m in activity.members_added or []]:
            await self._remember_install(activity)
            await self._welcome(activity)

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        await self._remember_install(turn_context.activity)
        if turn_context.activity.action == "add":  # not "add-upgrade": a new version is no install
            await self._welcome(turn_context.activity)

    async def on_installation_update_remove(self, turn_context: TurnContext) -> None:
        await self.adapter.references.forget(turn_context.activity.conversation.id or "")
        if turn_context.activity.action == "remove":
            await self.adapter.welcomes.removed(turn_context.activity.conversation.id or "")

    async def _welcome(self, activity: Activity) -> None:
        """The welcome card, once per personal install (welcome.py). A welcome that cannot be sent
        is logged and left to the next install event; it never fails the install event."""
        chat = (activity.conversation.id or "") if activity.conversation else ""
        if scope_of(activity) != "personal" or not chat:
            return
        welcomes = self.adapter.welcomes
        generation = await welcomes.claim(chat)
        if generation is None:
            return  # welcomed already, or the other install event is doing it
        card = Attachment(content_type=ADAPTIVE_CARD, content=welcome_card(self.adapter.settings.suggested_prompts))
        try:
            await asyncio.wait_for(
                self._send_into(activity, Activity(type=ActivityTypes.message, attachments=[card])), WELCOME_TIMEOUT)
        except (PlatformError, TimeoutError) as exc:
            log.warning("teams welcome could not be sent: %s", str(exc) or "timed out")
            await welcomes.failed(chat, generation)
            return
        await welcomes.sent(chat, generation)
        log.info("teams: welcomed a new personal install")

    async def _remember_install(self, activity: Activity) -> None:
        """The app was installed here: keep the reference (and, in a personal chat, the user's)
        so the poller can post before anyone has asked anything."""
        scope = scope_of(activity)
        tenant = tenant_of(activity)
        write_to = activity.conversation.id or ""
        user = user_of(activity, tenant)
        personal = scope == "personal"
        stored = await self.adapter.references.remember(
            activity, ref_key=write_to, scope=scope, user_id=user.user_id if personal else None
        )
        if personal and activity.from_property and activity.from_property.id:
            await self.adapter.references.remember_member(
                tenant, user.user_id, member_id=activity.from_property.id, ref_key=write_to,
                service_url=activity.service_url or "", bot=stored.bot,
            )

    # --- invokes -------------------------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        name = turn_context.activity.name
        if name == "message/submitAction":
            await self._feedback(turn_context)
            return InvokeResponse(status=200, body=None)  # Teams wants 200 with an empty body
        if name == "task/fetch":
            return InvokeResponse(status=200, body=await self._open_form(turn_context.activity))
        if name == "task/submit":
            return InvokeResponse(status=200, body=await self._dialog_submit(turn_context.activity))
        return await super().on_invoke_activity(turn_context)

    # --- forms (dialogs) ---------------------------------------------------------------------------

    async def _open_form(self, activity: Activity) -> dict[str, Any] | None:
        data = task_data(activity)
        located = ref_of(data) if data.get(CALLBACK_KEY) == OPEN_FORM else None
        if located is None:
            log.info("teams task/fetch without a form reference")
            return message_response(texts.FORM_GONE)
        ref, where = located
        user = user_of(activity, tenant_of(activity))
        key = f"open|{user.platform}|{user.user_id}|{ref.conversation_id}|{ref.message_id}|{where}"
        step = await self._in_time(key, lambda: self.adapter.core.open_form(user, ref, where), texts.FORM_FAILED)
        if step is None:
            return message_response(texts.TEAMS_FORM_SLOW)  # kept for the next press
        # task/fetch must show something: a dialog, or a message (never an empty answer)
        return step_response(step, tz=zone_name(activity)) or message_response(texts.FORM_GONE)

    async def _dialog_submit(self, activity: Activity) -> dict[str, Any] | None:
        data = task_data(activity)
        session = data.get("s")
        if data.get(CALLBACK_KEY) != DIALOG or not isinstance(session, str):
            log.info("teams task/submit that is not one of our forms")
            return message_response(texts.FORM_GONE)
        user = user_of(activity, tenant_of(activity))
        values, tz = parse_values(data)
        core = self.adapter.core
        refresh = data.get("op") == REFRESH
        redelivery = f"{activity.conversation.id or ''}|{activity.id}" if activity.id else uuid.uuid4().hex
        key = f"{'refresh' if refresh else 'submit'}|{redelivery}"
        if refresh:
            step = await self._in_time(key, lambda: core.refresh_form(user, session, values), texts.FORM_FAILED)
            return step_response(step, tz=tz) if step is not None else message_response(texts.TEAMS_FORM_SLOW)
        step = await self._in_time(key, lambda: core.submit_form(user, session, values), texts.FORM_FAILED,
                                   late=lambda late: self._submitted_late(activity, late))
        if step is None:
            return message_response(texts.TEAMS_FORM_STILL_SUBMITTING)
        return step_response(step, tz=tz, typed=values if step.errors else None)

    async def _in_time(
        self,
        key: str,
        call: Callable[[], Awaitable[FormStep]],
        failed: str,
        *,
        late: Callable[[FormStep], Coroutine[Any, Any, None]] | None = None,
    ) -> FormStep | None:
        """`call()`'s step if it comes within the invoke deadline, else None: the call goes on,
        its result is kept under `key` (a redelivery or the next press with the same key takes
        it) and, with `late`, handed to `late` when it lands. A failure is a `failed` notice."""
        now = time.monotonic()
        for stale in [k for k, (t, at) in self._pending.items() if now - at > LATE_TTL and t.done()]:
            self._pending.pop(stale, None)
        found = self._pending.get(key)
        if found is None:
            async def run() -> FormStep:
                try:
                    return await call()
                except Exception:
                    log.warning("teams form step failed", exc_info=True)
                    return FormStep(notice=failed)

            task = asyncio.create_task(run(), name="teams-form-step")
            self._pending[key] = (task, now)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            task.add_done_callback(lambda done: self._landed(key, done))
        else:
            task = found[0]
        try:
            step = await asyncio.wait_for(asyncio.shield(task), self.invoke_deadline)
        except TimeoutError:
            log.info("teams: a form step is taking longer than the invoke deadline; answering now")
            if late is not None:
                self._late[key] = late
                if task.done():  # landed just now, before it was marked
                    self._landed(key, task)
            return None
        if not key.startswith("submit|"):
            self._pending.pop(key, None)  # an open or refresh result is taken once
        return step

    def _landed(self, key: str, done: asyncio.Task[FormStep]) -> None:
        late = self._late.pop(key, None)
        if late is not None and not done.cancelled():
            self._spawn(late(done.result()), "teams-form-late")

    async def _submitted_late(self, activity: Activity, step: FormStep) -> None:
        """A submit that outlived its invoke: its dialog shows "Still submitting…", so the
        outcome goes into the chat (a success's receipt is there already)."""
        if step.done:
            return
        if step.notice:
            await self._note(activity, step.notice)
        elif step.errors:
            errors = " ".join(dict.fromkeys(step.errors.values()))
            await self._note(activity, texts.TEAMS_FORM_LATE_ERRORS.format(errors=errors))

    async def close(self, grace: float = 5.0) -> None:
        """Let form steps and follow-ups still running finish (at most `grace` s), then cancel."""
        tasks = [*self._background, *(task for task, _ in self._pending.values())]
        running = [task for task in tasks if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._pending.clear()
        self._late.clear()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Run work a turn must not wait for; failures are logged."""
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.warning("teams %s failed", name, exc_info=done.exception())

        task.add_done_callback(finished)

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
            target = await references.feedback(conversation_id, activity.reply_to_id)
        else:
            target = await references.latest_feedback(conversation_id, user.user_id)
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
        await self._send_into(activity, None, text=text)

    async def _send_into(self, activity: Activity, message: Activity | None, *, text: str = "") -> None:
        """Post `message` (or `text` as a plain message) into the conversation of `activity`."""
        scope = scope_of(activity)
        conversation_id = activity.conversation.id or ""
        reference = TurnContext.get_conversation_reference(activity)
        reference.activity_id = None  # into the conversation, not as a reply to the invoke
        tenant = tenant_of(activity)
        target = self.adapter.target_of(StoredReference(conversation_id, reference.serialize(), tenant, scope))
        await self.adapter.tenant_budget(tenant).acquire(final=True)
        await target.send(message if message is not None else target.text_message(text, ai=False), final=True)
