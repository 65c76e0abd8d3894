"""Bolt listeners and the normalisation of Slack events into the core's `Inbound`.

What gets answered: DMs (including the agent/assistant DM surface, which arrives as `message` with
`channel_type=im`), `@mentions` in channels (answered in a thread on the mention), and follow-ups
without a new mention in a channel thread where the bot already answered *that same person*
(anyone else in the thread must mention the bot: two colleagues talking in a thread the bot
answered are not each answered). What is ignored: the bot's own messages, other bots, message
subtypes (edits, joins, deletes…), re-sent mentions of an edited message (`edited`), channel
messages not meant for the bot, and — with
`SLACK_ALLOWED_TEAMS` — everything from a workspace or org not on the list (`team_allowed`).
Files shared with a question (`files`, subtype `file_share` or not) go with it as attachments
(`files.py`); the core downloads, checks and passes them on, so a file without a word is a
question too. Only files Slack gives no way to fetch get `texts.FILES_ONLY` here.
A mention is delivered twice by Slack (`app_mention` and `message.*`); both map to the same
delivery id (team:channel:ts), which the relay claims once in the store, so retries of
either event and the pair itself are answered once. A channel's rule (channels.py) can widen this
(`all`: every top-level message) or narrow it (`off`).

The agent surface's events and interactions are wired here too: `app_home_opened`,
`agent_session_stopped`, `assistant_thread_started` (workspaces still on assistant_view), the
slash command, the feedback comment modal, the Home tab's prompt buttons and "Share in channel".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge import texts
from bridge.models import ChatUser, Inbound, ThreadKey

from . import forms
from .blocks import CALLBACK_ACTION_PREFIX, FEEDBACK_ACTION
from .channels import SHARE_ACTION
from .feedback import FEEDBACK_CALLBACK
from .files import attachments
from .home import PROMPT_ACTION
from .mrkdwn import mentions, to_plain

if TYPE_CHECKING:  # pragma: no cover
    from slack_bolt.async_app import AsyncApp

    from .app import SlackAdapter

log = logging.getLogger("adapters.slack")

PLATFORM = "slack"
# Subtypes that are still a person writing to us; every other subtype is an edit, join, etc.
USER_SUBTYPES = frozenset({"file_share", "thread_broadcast"})


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Notice:
    """A real person wrote something we cannot send to Moveworks: tell them, once."""

    dedupe_id: str
    channel: str
    thread_ts: str
    text: str


@dataclass(frozen=True)
class Where:
    team_id: str
    enterprise_id: str | None
    is_enterprise_install: bool
    bot_user_id: str


def ids(body: dict[str, Any], context: Any | None = None) -> Where:
    """The installation the event belongs to (team, org) and our bot user there."""
    ctx = context or {}
    auth = (body.get("authorizations") or [{}])[0] if isinstance(body.get("authorizations"), list) else {}
    team_id = ctx.get("team_id") or body.get("team_id") or auth.get("team_id") or ""
    enterprise_id = ctx.get("enterprise_id") or body.get("enterprise_id") or auth.get("enterprise_id")
    is_org = bool(ctx.get("is_enterprise_install") or body.get("is_enterprise_install"))
    bot_user_id = ctx.get("bot_user_id") or auth.get("user_id") or ""
    return Where(team_id or enterprise_id or "", enterprise_id, is_org, bot_user_id)


def team_allowed(body: dict[str, Any], context: Any, allowed: frozenset[str]) -> bool:
    """`SLACK_ALLOWED_TEAMS`: may this event or action be handled? Always, when the list is empty.

    Two parties must each be on the list by team id or enterprise (org) id: the installation the
    request was delivered to, and the person acting. They differ in shared channels (Slack Connect):
    a user of another organisation writing in a channel shared with an allowed workspace is refused.
    Bolt works out the acting user's team/org (`actor_*` in the context); when it cannot (some
    Enterprise Grid cases in externally shared channels) the request is refused, not guessed.
    """
    if not allowed:
        return True
    ctx = context if context is not None else {}

    def listed(*values: Any) -> bool:
        return any(isinstance(v, str) and v in allowed for v in values)

    if not listed(ctx.get("team_id"), ctx.get("enterprise_id")):
        return False
    actor_team, actor_org = ctx.get("actor_team_id"), ctx.get("actor_enterprise_id")
    if actor_team is None and actor_org is None:
        return body.get("is_ext_shared_channel") is not True
    if not listed(actor_team, actor_org):
        return False
    user = body.get("user")
    # Interactivity payloads name the clicking user's own workspace as well.
    if isinstance(user, dict) and isinstance(user.get("team_id"), str):
        return listed(user["team_id"], actor_org)
    return True


def message_key(team_id: str, channel: str, ts: str) -> str:
    """Same for every delivery of one Slack message: retries and the app_mention/message pair."""
    return f"{team_id}:{channel}:{ts}"


async def normalise(
    event: dict[str, Any],
    where: Where,
    *,
    mention: bool,
    followed: Callable[[ThreadKey, str], Awaitable[bool]],
    everything: bool = False,
) -> Inbound | Notice | Ignore:
    """One Slack event -> what to do with it. Pure apart from `followed(thread, user_id)` (a store
    lookup, awaited only for a reply in a thread: does this user have an active conversation in
    this thread?). `everything`: the
    channel answers every top-level message (its mode is `all`, see channels.py)."""
    if not isinstance(event, dict):
        return Ignore("not an event")
    subtype = event.get("subtype")
    if subtype and subtype not in USER_SUBTYPES:
        return Ignore(f"subtype {subtype}")
    if event.get("edited"):
        # Slack sends `app_mention` again when a message that mentions the app is edited. It was
        # answered when it was posted; the delivery key alone would not say so once its dedupe
        # row expired (INBOUND_TTL), so the edit itself is what is ignored.
        return Ignore("edited message")
    user = event.get("user")
    if event.get("bot_id") or event.get("bot_profile") or not isinstance(user, str) or not user:
        return Ignore("bot or no user")
    if user == where.bot_user_id:
        return Ignore("own message")
    channel, ts = event.get("channel"), event.get("ts")
    if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
        return Ignore("no channel or ts")
    raw: str = event["text"] if isinstance(event.get("text"), str) else ""
    thread_ts: str | None = event["thread_ts"] if isinstance(event.get("thread_ts"), str) else None
    direct = event.get("channel_type") == "im" or (not mention and channel.startswith("D"))
    root = thread_ts or ts
    thread = ThreadKey(PLATFORM, where.team_id, channel, root)
    if not mention and not direct:
        if mentions(raw, where.bot_user_id):
            return Ignore("mention: answered from app_mention")
        if not thread_ts or thread_ts == ts:
            if not everything:
                return Ignore("channel message not for the bot")
        elif not await followed(thread, user):
            return Ignore("thread where the bot is not talking with this user")
    did = message_key(where.team_id, channel, ts)
    text = to_plain(raw, bot_user_id=where.bot_user_id)
    # Shared files go with the question (the core downloads, checks and uploads them, and says
    # what it could not pass on); only files Slack gives no way to fetch get the notice here.
    files = attachments(event.get("files"), where.team_id, where.enterprise_id)
    if not text and event.get("files") and not files:
        return Notice(did, channel, root, texts.FILES_ONLY)
    profile: dict[str, Any] = event["user_profile"] if isinstance(event.get("user_profile"), dict) else {}
    name = profile.get("display_name") or profile.get("real_name") or None
    recipient_team = where.enterprise_id if where.is_enterprise_install and where.enterprise_id else where.team_id
    address = {
        "channel": channel,
        "thread_ts": root,
        "recipient_team_id": event.get("user_team") or recipient_team,
        "user": user,
    }
    if where.enterprise_id:
        address["enterprise_id"] = where.enterprise_id
    return Inbound(
        dedupe_id=did,
        thread=thread,
        user=ChatUser(PLATFORM, where.team_id, user, name=name),
        text=text,
        address=address,
        direct=direct,
        files=files,
    )


def normalise_action(
    body: dict[str, Any], action: dict[str, Any], where: Where, data: dict[str, Any]
) -> Inbound | None:
    """A pressed Moveworks callback button -> an Inbound the relay streams into the thread."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    message = body.get("message") or {}
    user = (body.get("user") or {}).get("id")
    if not (channel and user and data.get("c") and data.get("cb")):
        return None
    root = message.get("thread_ts") or message.get("ts") or (body.get("container") or {}).get("message_ts")
    if not root:
        return None
    thread = ThreadKey(PLATFORM, where.team_id, channel, root)
    label = str(data.get("l") or "")
    return Inbound(
        dedupe_id=f"action:{where.team_id}:{channel}:{action.get('action_ts') or body.get('trigger_id')}",
        thread=thread,
        user=ChatUser(PLATFORM, where.team_id, user, name=(body.get("user") or {}).get("name")),
        text=label,
        callback_id=str(data["cb"]),
        callback_conversation_id=str(data["c"]),
        callback_label=label,
        address={"channel": channel, "thread_ts": root, "recipient_team_id": where.team_id, "user": user},
        direct=channel.startswith("D"),
    )


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    """Wire bolt listeners to the adapter. Order matters: the catch-alls come last."""
    allowed = frozenset(adapter.settings.slack_allowed_teams or ())
    if allowed:
        from slack_bolt.response import BoltResponse

        async def allow_list(body: dict, context: Any, next: Any) -> Any:  # `next`: bolt passes it by this name
            # Runs after bolt's own middleware (signature, url_verification, authorization) and
            # before every listener: a request from elsewhere is acknowledged and nothing else.
            if team_allowed(body if isinstance(body, dict) else {}, context, allowed):
                return await next()
            log.info(
                "slack: ignored a request from a workspace not in SLACK_ALLOWED_TEAMS (team %s, org %s)",
                context.get("actor_team_id") or context.get("team_id"),
                context.get("actor_enterprise_id") or context.get("enterprise_id"),
            )
            return BoltResponse(status=200, body="")

        app.use(allow_list)

    # Bolt runs with process_before_response=True (see SlackAdapter._build_bolt): Slack gets its
    # acknowledgement when a listener returns. What a question needs (its submit) runs inline;
    # anything slower goes to `later` (a background task of the adapter) after `ack()`.
    later = adapter.spawn

    async def on_mention(body: dict, event: dict, context: Any) -> None:
        await adapter.on_event(body, event, context, mention=True)

    async def on_message(body: dict, event: dict, context: Any) -> None:
        await adapter.on_event(body, event, context, mention=False)

    async def ignore_event() -> None:
        return None

    async def on_feedback(ack: Any, body: dict, action: dict, context: Any) -> None:
        await ack()
        later(adapter.on_feedback(body, action, context), "slack-feedback")  # views.open within 3 s

    async def on_callback(ack: Any, body: dict, action: dict, context: Any) -> None:
        await adapter.on_callback(body, action, context)  # submitted (a store write) before the ack
        await ack()

    async def just_ack(ack: Any) -> None:
        await ack()

    async def on_open_form(ack: Any, body: dict, action: dict, context: Any) -> None:
        await ack()
        # at once: Slack allows 3 seconds from the click, and views.open must follow within them
        later(adapter.on_open_form(body, action, context), "slack-open-form")

    async def on_help_pick(ack: Any, body: dict, action: dict, context: Any) -> None:
        await ack()
        later(adapter.on_help_pick(body, action, context), "slack-help-pick")

    async def on_form_field(ack: Any, body: dict, context: Any) -> None:
        await ack()
        later(adapter.on_form_field(body, context), "slack-form-field")

    async def on_form_submit(ack: Any, body: dict, context: Any) -> None:
        await adapter.on_form_submit(ack, body, context)  # acks itself: the reply carries the outcome

    async def on_home_opened(body: dict, event: dict, context: Any) -> None:
        later(adapter.on_home_opened(body, event, context), "slack-home")

    async def on_session_stopped(body: dict, event: dict, context: Any) -> None:
        await adapter.on_session_stopped(body, event, context)  # quick: memory, or one store write

    async def on_assistant_thread(body: dict, event: dict, context: Any) -> None:
        later(adapter.on_assistant_thread_started(body, event, context), "slack-assistant-thread")

    async def on_command(ack: Any, body: dict, context: Any) -> None:
        await adapter.on_command(ack, body, context)  # acks itself: the reply is the answer

    async def on_feedback_submit(ack: Any, body: dict, context: Any) -> None:
        await adapter.on_feedback_submit(ack, body, context)  # acks itself, with the outcome

    async def on_feedback_closed(ack: Any, body: dict, context: Any) -> None:
        await ack()
        later(adapter.on_feedback_closed(body, context), "slack-feedback-closed")

    async def on_home_prompt(ack: Any, body: dict, action: dict, context: Any) -> None:
        await adapter.on_home_prompt(ack, body, action, context)  # acks itself, after the submit

    async def on_share(ack: Any, body: dict, action: dict, context: Any) -> None:
        await ack()
        later(adapter.on_share(body, action, context), "slack-share")

    app.event("app_mention")(on_mention)
    app.event("message")(on_message)
    app.event("app_home_opened")(on_home_opened)
    app.event("agent_session_stopped")(on_session_stopped)
    app.event("assistant_thread_started")(on_assistant_thread)  # workspaces still on assistant_view
    app.command(re.compile(".*"))(on_command)  # the app's one slash command, whatever it is named
    # feedback_buttons (one action id), or the plain buttons of a workspace without context_actions
    app.action(re.compile("^" + re.escape(FEEDBACK_ACTION) + "(_yes|_no)?$"))(on_feedback)
    app.view(FEEDBACK_CALLBACK)(on_feedback_submit)
    app.view_closed(FEEDBACK_CALLBACK)(on_feedback_closed)
    app.action(re.compile("^" + re.escape(PROMPT_ACTION)))(on_home_prompt)
    app.action(SHARE_ACTION)(on_share)
    app.action(re.compile("^" + re.escape(CALLBACK_ACTION_PREFIX)))(on_callback)
    app.action(re.compile("^" + re.escape(forms.OPEN_FORM_PREFIX)))(on_open_form)
    app.action(forms.HELP_ACTION)(on_help_pick)
    app.action(forms.FIELD_ACTION)(on_form_field)
    app.view(forms.FORM_CALLBACK)(on_form_submit)
    app.view_closed(forms.FORM_CALLBACK)(just_ack)
    # URL buttons, unknown actions, shortcuts and every other event: acknowledged, nothing else.
    app.action(re.compile(".*"))(just_ack)
    app.event(re.compile(".*"))(ignore_event)
