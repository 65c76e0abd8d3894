"""The Slack adapter: bolt's `AsyncApp` built, mounted on the bridge's aiohttp server (or run in
Socket Mode), and the `ChatAdapter` surface the relay writes through.

Thin by design: bolt verifies signatures, answers url_verification and acks; listeners normalise
the event (`events.py`) and hand it to `core.submit`, which stores it before bolt acknowledges
Slack (`process_before_response`, see `_build_bolt`); replies go out through a native stream sink
(`native.py`, which the core falls back from to edits) or the core's `EditingSink` over
`SlackMessageOps` (`ops.py`).

Forms (`forms.py`): a MODAL_ACTION button or a get-help menu pick opens a "Loading…" modal at once
with the interaction's trigger_id (3 seconds, one use), then shows the core's form with
views.update; `triggers_refresh` fields refresh it (views.update with `hash`); a submission is
answered within Slack's 3 seconds, with the outcome itself when the core is quick enough, else
with "Submitting…" and the outcome by views.update. Files (`files.py`): shared files go with the
question; `download` fetches them with the bot token of their workspace.

The agent surface: DM answers run as agent sessions with Slack's Stop button (`sessions.py`),
reasoning streams as a plan (`native.py`), 👍/👎 open a comment modal (`feedback.py`), a mention
mid-thread carries the thread's earlier messages (`context.py`), channels have rules set with
`/moveworks` and private answers can be shared (`channels.py`), and `app_home_opened` sets the
Messages tab's prompts or publishes the Home tab (`home.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import httpx
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_callback_options import AsyncCallbackOptions, AsyncFailureArgs, AsyncSuccessArgs
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge import texts
from bridge.answers.sinks import EditingSink, WithFallback
from bridge.contract import Address, ChatAdapter, CheckLine, Core, ReplySink
from bridge.errors import AttachmentRefused, PlatformError
from bridge.models import (
    Attachment,
    Capabilities,
    ChatUser,
    Employee,
    FormStep,
    Inbound,
    MessageRef,
    Rate,
    ThreadKey,
)

from . import blocks as bk
from . import channels as ch
from . import directory, files, forms, home
from . import feedback as fb
from .admission import START_RATE, STOP_RATE, Edges, Seats, StatusThenPostSink
from .calls import TRANSIENT, call, error_code, to_platform_error
from .context import ACK_DEADLINE, Names, thread_context
from .events import PLATFORM, Ignore, Notice, ids, normalise, normalise_action, register
from .install import InstallationRefused, KvInstallationStore, KvOAuthStateStore
from .mrkdwn import escape
from .native import CHANNEL_ERRORS, STREAM_RATE, WORKSPACE_ERRORS, NativeStreamSink
from .ops import SlackMessageOps
from .sessions import Session, Sessions, SessionSink
from .status import StatusKeeper

log = logging.getLogger("adapters.slack")

T = TypeVar("T")

# chat.update is Tier 3: ~50 per minute per workspace. Half may go at once (never over 50 in any
# minute), so the finals of the few live edited answers (admission.py) find a token waiting.
EDIT_RATE = Rate(50, 60.0, burst=25)
# users.info is Tier 4 (100+ a minute per workspace): a crowd's email lookups queue here instead of
# drawing 429s (the relay does them beside the answers in single-identity modes).
USERS_RATE = Rate(100, 60.0)
EDIT_CAPABILITIES = Capabilities(
    # One `markdown` block holds up to 12,000 characters; 8,000 leaves room for the status line,
    # cursor and fence lines, and for the mrkdwn-section fallback (<= 50 sections of 3,000).
    max_text_len=8_000,
    edit=True,
    native_stream=False,
    min_edit_interval=1.1,
    write_budget=EDIT_RATE,
    budget_posts=False,  # the first write is a post/startStream, not a budgeted edit
)
# Bot scopes in manifest.yml; OAuth installs request the same.
SCOPES = [
    "app_mentions:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "im:write",
    "chat:write",
    "users:read",
    "users:read.email",
    "chat:write.customize",  # a live agent's name and avatar on their messages
    "files:read",  # files employees share with the bot, passed on to Moveworks
    "assistant:write",  # the agent surface: suggested prompts (declaring the app an agent adds it)
    "commands",  # /moveworks: per-channel rules
]
TITLES_KEPT = 1_000  # questions waiting for their answer's session title (see open_reply)
COMMAND_DEADLINE = 2.0  # seconds for the admin check: a slash command is answered within 3
SIGNATURE_MAX_AGE = 5 * 60  # seconds; Slack's replay window for signed requests
# A modal's submission must be answered within 3 seconds: a submit that takes longer is answered
# with a "Submitting…" view and the outcome follows with views.update.
FORM_FAST_REPLY = 2.0
FORM_UPDATE_GRACE = 0.5  # seconds between that answer and the views.update that follows it
# views.open refuses a trigger_id that is older than 3 seconds, unknown, or already used.
TRIGGER_ERRORS = frozenset({"expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"})
FORM_METADATA = "slack.form_metadata"  # kv: private_metadata too long for Slack's 3,000 characters
FORM_METADATA_TTL = 24 * 3600.0
BACKGROUND_GRACE = 5.0  # seconds `stop` lets work begun after an acknowledgement finish


class SlackAdapter(ChatAdapter):
    platform = PLATFORM
    shows_forms = True  # MODAL_ACTIONs open as modals (forms.py)
    accepts_files = True  # shared files are downloaded with the bot token (files.py)

    def __init__(
        self,
        core: Core,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        status_refresh: float | None = None,
    ) -> None:
        settings = core.settings
        self.settings = settings
        self.core = core
        self._clock = clock
        self._sleep = sleep
        self._status_refresh = status_refresh
        self.api_url = settings.slack_api_url
        self.streaming = settings.slack_streaming
        self.channel_mode = settings.slack_channel_mode
        self.socket_mode = bool(settings.slack_app_token)
        self.oauth = bool(settings.slack_client_id and settings.slack_client_secret)
        # SLACK_ALLOWED_TEAMS: team or enterprise ids served; empty = every workspace.
        self.allowed_teams: frozenset[str] = frozenset(settings.slack_allowed_teams or ())
        self.installations = KvInstallationStore(core.kv, allowed=self.allowed_teams) if self.oauth else None
        self._clients: dict[str, AsyncWebClient] = {}
        self._native_off: set[str] = set()  # teams where native streaming is unavailable
        self._no_stream_channels: set[tuple[str, str]] = set()  # (team, channel) whose type cannot stream
        self._edit_seats = Seats()  # live edited answers per workspace (admission.py)
        self._formats: dict[str, dict[str, bool]] = {}
        self._plans_off: set[str] = set()  # teams that refused task/plan chunks
        self._titles: OrderedDict[tuple[str, str, str], str] = OrderedDict()  # (team, channel, thread) -> question
        self._prompted: dict[tuple[str, str], float] = {}  # (team, DM) -> when its prompts were set
        self.sessions = Sessions(core, count=self._count, sleep=sleep)
        self.channels = ch.ChannelRules(core, clock=clock)
        self.names = Names(core, USERS_RATE, count=self._count)
        self._socket: Any = None
        self._http_files: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # work after an acknowledgement (`spawn`)
        self.form_fast_reply = FORM_FAST_REPLY
        self.bolt = self._build_bolt()
        register(self.bolt, self)

    # --- bolt ---------------------------------------------------------------------------------

    def _build_bolt(self) -> AsyncApp:
        s = self.settings
        secret = s.slack_signing_secret or None
        common: dict[str, Any] = {
            "signing_secret": secret,
            # Without a secret only Socket Mode is served (the HTTP route is not mounted).
            "request_verification_enabled": secret is not None,
            # Acknowledge Slack only after the listener returned, in HTTP and in Socket Mode alike
            # (the socket handler sends an envelope's ack when bolt's dispatch returns): a
            # question is acknowledged once `core.submit` stored it, and a listener that fails
            # (the store is down) answers 500 / no ack, so Slack delivers the event again. With
            # False, bolt acks an event before running its listener and a crash in between would
            # lose the question. The cost: every listener must return within Slack's 3 seconds,
            # so anything slow (posts, modals, Moveworks calls) runs in a background task
            # (`spawn`) after the acknowledgement, and the one read a question waits for, the
            # thread's earlier messages, is bounded by `context.ACK_DEADLINE`.
            "process_before_response": True,
            "logger": logging.getLogger("slack_bolt"),
        }
        if self.oauth:
            return AsyncApp(
                client=AsyncWebClient(base_url=self.api_url),
                installation_store=self.installations,
                oauth_settings=AsyncOAuthSettings(
                    client_id=s.slack_client_id,
                    client_secret=s.slack_client_secret,
                    scopes=SCOPES,
                    installation_store=self.installations,
                    state_store=KvOAuthStateStore(self.core.kv),
                    install_path="/slack/install",
                    redirect_uri_path="/slack/oauth_redirect",
                    callback_options=AsyncCallbackOptions(success=_install_succeeded, failure=self._install_failed),
                ),
                **common,
            )
        client = AsyncWebClient(token=s.slack_bot_token, base_url=self.api_url)
        self._clients[s.slack_bot_token or ""] = client
        return AsyncApp(client=client, **common)  # the client carries the token

    def mount(self, app: web.Application) -> None:
        """`POST /slack/events` (events + interactivity) and, with OAuth, the install routes."""
        if self.settings.slack_signing_secret:
            app.router.add_post("/slack/events", self._http)
        flow = self.bolt.oauth_flow
        if flow is not None:
            app.router.add_get(flow.install_path, self._oauth_install)
            app.router.add_get(flow.redirect_uri_path, self._oauth_redirect)

    async def _http(self, request: web.Request) -> web.Response:
        """Unsigned (or badly signed) -> 401; signed but not a Slack payload -> 400; else bolt.

        The body is read once, as bytes, and the signature checked over those bytes here, before
        anything parses it: bolt only verifies what it can parse (and a malformed timestamp header
        would make its verifier raise), so garbage of any kind must never reach a 500."""
        raw = await request.read()
        if not self._signed(raw, request.headers):
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            log.info("slack: refused a signed request whose body is not UTF-8")
            return web.json_response({"error": "malformed body"}, status=400)
        try:
            bolt_request = AsyncBoltRequest(
                body=text, query=request.query_string, headers=request.headers  # type: ignore[arg-type]
            )
            if not isinstance(bolt_request.body, dict):
                raise ValueError("not an object")
        except (ValueError, AttributeError, TypeError, RecursionError):  # RecursionError: nested too deeply
            return web.json_response({"error": "malformed body"}, status=400)
        return await to_aiohttp_response(await self.bolt.async_dispatch(bolt_request))

    def _signed(self, raw: bytes, headers: Any) -> bool:
        """Slack's v0 request signature over the raw body, within the 5-minute replay window."""
        secret = self.settings.slack_signing_secret or ""
        timestamp = headers.get("X-Slack-Request-Timestamp") or ""
        signature = headers.get("X-Slack-Signature") or ""
        try:
            if not secret or abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE:
                return False
            base = b"v0:" + timestamp.encode() + b":" + raw
            expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected.encode(), signature.encode("utf-8", errors="replace"))
        except (ValueError, TypeError, OverflowError, UnicodeError):
            return False

    @staticmethod
    async def _get_request(request: web.Request) -> AsyncBoltRequest:
        """The install routes are GETs: their body is never used, so never allowed to fail."""
        body = (await request.read()).decode("utf-8", errors="replace")
        headers: Any = request.headers
        return AsyncBoltRequest(body=body, query=request.query_string, headers=headers)

    async def _oauth_install(self, request: web.Request) -> web.Response:
        bolt_request = await self._get_request(request)
        flow = self.bolt.oauth_flow
        assert flow is not None  # the route is mounted only with OAuth
        return await to_aiohttp_response(await flow.handle_installation(bolt_request))

    async def _oauth_redirect(self, request: web.Request) -> web.Response:
        bolt_request = await self._get_request(request)
        flow = self.bolt.oauth_flow
        assert flow is not None  # the route is mounted only with OAuth
        return await to_aiohttp_response(await flow.handle_callback(bolt_request))

    async def _install_failed(self, args: AsyncFailureArgs) -> BoltResponse:
        """A workspace outside SLACK_ALLOWED_TEAMS tried to install: say so, and give back the
        token Slack just issued so the app does not stay installed there, unanswered."""
        if not isinstance(args.error, InstallationRefused):
            return await args.default.failure(args)
        refused = args.error
        if refused.bot_token:
            try:
                await AsyncWebClient(token=refused.bot_token, base_url=self.api_url).auth_revoke()
            except (SlackApiError, *TRANSIENT) as exc:
                log.warning("could not revoke the refused installation's token: %s",
                            error_code(exc) or type(exc).__name__)
        who = f"workspace {refused.team_id}" if refused.team_id else f"organisation {refused.enterprise_id}"
        team = refused.team_id or refused.enterprise_id or ""
        page = texts.SLACK_INSTALL_REFUSED_PAGE.format(who=html.escape(who), team=html.escape(team))
        return BoltResponse(status=403, body=page, headers={"Content-Type": "text/html; charset=utf-8"})

    async def start(self, *, inbound: bool = True) -> None:
        """`inbound=False` (the separate `poll` worker): Web API only, no Socket Mode connection,
        so events are never delivered to a process that does not answer them."""
        if not inbound:
            return
        if self.oauth and not self.allowed_teams:
            log.warning(
                "slack: SLACK_ALLOWED_TEAMS is empty, so ANY Slack workspace can install this app "
                "(/slack/install) and be answered; set it to the team ids you serve"
            )
        if self.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(
                self.bolt, self.settings.slack_app_token, web_client=AsyncWebClient(base_url=self.api_url)
            )
            await self._socket.connect_async()
            log.info("slack: connected in Socket Mode")

    async def stop_inbound(self) -> None:
        """Graceful shutdown, first step: close the Socket Mode connection so no new events arrive
        while in-flight answers drain. The Web API clients stay usable for finishing them. (The
        HTTP route stops with the server.) Safe to call more than once, or without Socket Mode."""
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close_async()
            log.info("slack: Socket Mode connection closed; finishing answers in flight")

    async def stop(self) -> None:
        await self.stop_inbound()
        await self._finish_tasks(BACKGROUND_GRACE)
        await self.sessions.close()
        if self._http_files is not None:
            http, self._http_files = self._http_files, None
            await http.aclose()

    async def check(self) -> list[CheckLine]:
        """`doctor` lines; never prints tokens."""
        lines: list[tuple[str, bool, str]] = []
        if self.oauth:
            teams = await self.installations.installed_teams() if self.installations else []
            lines.append(("slack oauth", True, f"{len(teams)} workspace(s) installed"))
            return lines
        try:
            response = await self.bolt.client.auth_test()
            lines.append(("slack auth", True, f"bot @{response.get('user')} in team {response.get('team_id')}"))
        except SlackApiError as exc:
            lines.append(("slack auth", False, f"auth.test failed: {error_code(exc) or 'error'}"))
        except TRANSIENT as exc:
            lines.append(("slack auth", False, f"cannot reach Slack ({type(exc).__name__})"))
        else:
            team = response.get("team_id")
            if self.allowed_teams and team not in self.allowed_teams and \
                    response.get("enterprise_id") not in self.allowed_teams:
                lines.append(("slack allow-list", False,
                              f"SLACK_ALLOWED_TEAMS does not list this bot's team {team}: nothing is answered"))
        if self.socket_mode:
            lines.append(("slack mode", True, "Socket Mode (SLACK_APP_TOKEN set)"))
        else:
            lines.append(("slack mode", bool(self.settings.slack_signing_secret), "HTTP: POST /slack/events"))
        return lines

    # --- clients and metrics --------------------------------------------------------------------

    async def client_for(self, team_id: str, enterprise_id: str | None = None) -> AsyncWebClient:
        """A Web API client with the bot token of this workspace (OAuth) or the one bot token."""
        if self.allowed_teams and team_id not in self.allowed_teams and enterprise_id not in self.allowed_teams:
            raise PlatformError(f"slack: {team_id} is not in SLACK_ALLOWED_TEAMS", permanent=True)
        if not self.oauth:
            return self.bolt.client
        assert self.installations is not None
        bot = await self.installations.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)
        if bot is None:
            raise PlatformError(f"slack: the app is not installed in {team_id}", permanent=True)
        client = self._clients.get(bot.bot_token)
        if client is None:
            client = self._clients[bot.bot_token] = AsyncWebClient(token=bot.bot_token, base_url=self.api_url)
        return client

    def _count(self, op: str) -> None:
        self.core.count_write(PLATFORM, op)

    def spawn(self, coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run work Slack's acknowledgement must not wait for (see `_build_bolt`); a failure is
        logged, and `stop` gives what is still running `BACKGROUND_GRACE` seconds."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("slack: %s failed", name, exc_info=done.exception())

        task.add_done_callback(finished)
        return task

    async def _finish_tasks(self, grace: float) -> None:
        running = [task for task in self._tasks if not task.done()]
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    # --- inbound --------------------------------------------------------------------------------

    async def on_event(self, body: dict, event: dict, context: Any, *, mention: bool) -> None:
        """A message or a mention. Slack is acknowledged when this returns (see `_build_bolt`), so
        a question is submitted (stored) here, inline; notices go out in the background."""
        where = ids(body, context)
        channel = event.get("channel") if isinstance(event, dict) else None
        mode = ch.DEFAULT_MODE
        if isinstance(channel, str) and channel and event.get("channel_type") != "im" and not channel.startswith("D"):
            mode = await self.channels.mode(where.team_id, channel)
        if mode == "off":
            if mention:
                self.spawn(self._tell_off(context, where, event), "slack-channel-off")
            return
        decision = await normalise(event, where, mention=mention, followed=self._follows, everything=mode == "all")
        if isinstance(decision, Ignore):
            log.debug("slack event ignored: %s", decision.reason)
            return
        if isinstance(decision, Notice):
            self.spawn(self._post_notice(context, decision), "slack-notice")
            return
        inbound = decision
        thread_ts, ts = event.get("thread_ts"), event.get("ts")
        if mention and isinstance(thread_ts, str) and thread_ts != ts and isinstance(ts, str) \
                and not await self._follows(inbound.thread, inbound.user.user_id):
            # Brought into a thread: the earlier messages go with the question (context.py),
            # read within ACK_DEADLINE since Slack waits for the acknowledgement meanwhile; a
            # thread that cannot be read by then is left out and the question goes without it.
            text = await thread_context(
                context.client, self.core, self.names, team=where.team_id, channel=inbound.thread.channel,
                thread_ts=thread_ts, before=ts, bot_user_id=where.bot_user_id, bot_id=context.get("bot_id"),
                count=self._count, deadline=ACK_DEADLINE,
            )
            if text:
                inbound = replace(inbound, context=text)
        if self.channel_mode == "dm" and not inbound.direct:
            address = dict(inbound.address)
            address.update({"dm_user": inbound.user.user_id, "pointer": True})
            inbound = _replace_address(inbound, address)
        elif mode == "private" and not inbound.direct:
            address = dict(inbound.address)
            address.update({"dm_user": inbound.user.user_id, "pointer": "ephemeral",
                            "share": {"channel": address["channel"], "thread_ts": address.get("thread_ts")}})
            inbound = _replace_address(inbound, address)
        self._keep_title(inbound.thread.workspace, str(inbound.address.get("channel") or inbound.thread.channel),
                         str(inbound.address.get("thread_ts") or inbound.thread.thread), inbound.text)
        await self.core.submit(inbound)  # stored before bolt acknowledges the event

    def _keep_title(self, team: str, channel: str, thread_ts: str, question: str) -> None:
        """The question, for the title of its answer's agent session (open_reply takes it)."""
        if not question.strip():
            return
        self._titles[(team, channel, thread_ts)] = question
        while len(self._titles) > TITLES_KEPT:
            self._titles.popitem(last=False)

    async def _tell_off(self, context: Any, where: Any, event: dict) -> None:
        """A mention in a channel whose mode is `off`: say so, to the person only, once."""
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)) or event.get("edited"):
            return
        if event.get("bot_id") or user == where.bot_user_id:
            return
        if not await self.core.claim_inbound(PLATFORM, f"off:{where.team_id}:{channel}:{ts}"):
            return
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": texts.SLACK_CHANNEL_OFF}
        if isinstance(event.get("thread_ts"), str):
            kwargs["thread_ts"] = event["thread_ts"]
        try:
            self._count("ephemeral")
            await call(context.client.chat_postEphemeral, sleep=self._sleep, **kwargs)
        except (SlackApiError, *TRANSIENT) as exc:
            log.info("could not tell someone the bot is off in a channel: %s", error_code(exc) or type(exc).__name__)

    async def _follows(self, thread: ThreadKey, user_id: str) -> bool:
        """Is the bot talking with this user in this thread (so they need no new mention)?"""
        return await self.core.follows(thread, user_id)

    async def _post_notice(self, context: Any, reply: Notice) -> None:
        if not await self.core.claim_inbound(PLATFORM, reply.dedupe_id):
            return
        try:
            self._count("post")
            await call(context.client.chat_postMessage, channel=reply.channel, thread_ts=reply.thread_ts,
                       text=reply.text)
        except (SlackApiError, *TRANSIENT) as exc:
            log.warning("could not post a reply: %s", error_code(exc) or type(exc).__name__)

    async def on_feedback(self, body: dict, action: dict, context: Any) -> None:
        """A 👍/👎 click (already acked): the comment modal opens (feedback.py), and the rating goes
        with its outcome. Without a modal (the click's trigger expired, views.open refused) the
        rating goes at once. A click never goes unanswered and never raises."""
        user_id = channel = thread_ts = None
        try:
            user_id = _field(body, "user", "id")
            channel = _field(body, "channel", "id") or _field(body, "container", "channel_id")
            thread_ts = _field(body, "message", "thread_ts")
            value = action.get("value") if isinstance(action, dict) else None
            decoded = bk.feedback_target(bk.decode(value if isinstance(value, str) else None))
            if decoded is None or not user_id:
                log.info("slack feedback button without its ids")
                text = texts.FEEDBACK_UNAVAILABLE
            else:
                target, helpful = decoded
                if await self._open_comment(context, body, target, helpful, channel, thread_ts):
                    return
                user = ChatUser(PLATFORM, ids(body, context).team_id, user_id)
                text = (await self.core.feedback(user, target, helpful)).text
        except Exception:  # a click must never go unanswered or crash the listener
            log.exception("slack feedback failed unexpectedly")
            text = texts.FEEDBACK_FAILED
        if not user_id or not channel:
            log.info("slack feedback click without a user or channel; nobody to answer")
            return
        await self._tell_at(context.client, channel, user_id, thread_ts, text)

    async def _open_comment(self, context: Any, body: dict, target: Any, helpful: bool, channel: str | None,
                            thread_ts: str | None) -> bool:
        """The comment modal for a rating; False when Slack would not open it."""
        meta = await self._pack(fb.metadata(target, helpful, channel, thread_ts))
        try:
            self._count("view_open")
            await context.client.views_open(trigger_id=body.get("trigger_id"), view=fb.comment_view(helpful, meta))
        except (SlackApiError, *TRANSIENT) as exc:
            log.info("slack: no comment modal for a rating (%s); sending the rating now",
                     error_code(exc) or type(exc).__name__)
            return False
        return True

    async def _rate(self, user: ChatUser, target: Any, helpful: bool, comment: str | None) -> Any:
        try:
            return await self.core.feedback(user, target, helpful, comment)
        except Exception:
            log.exception("slack feedback failed unexpectedly")
            from bridge.contract import FeedbackAck

            return FeedbackAck(texts.FEEDBACK_FAILED, False)

    async def on_feedback_submit(self, ack: Any, body: dict, context: Any) -> None:
        """The comment modal submitted: the rating and the comment go to Moveworks in one call; the
        modal shows the outcome when it comes within Slack's 3 seconds, else closes and the
        outcome follows privately in the thread."""
        view = _obj(body.get("view"))
        user = self._actor(body, context)
        decoded = fb.from_metadata(await self._unpack(view.get("private_metadata")))
        if user is None or decoded is None:
            await ack(response_action="update", view=fb.outcome_view(texts.FEEDBACK_UNAVAILABLE))
            return
        target, helpful, channel, thread_ts = decoded
        task = self.spawn(self._rate(user, target, helpful, fb.comment(view)), "slack-rate")
        await asyncio.wait({task}, timeout=self.form_fast_reply)
        if task.done():
            await ack(response_action="update", view=fb.outcome_view(task.result().text))
            return
        await ack(response_action="clear")
        if channel:  # after the acknowledgement (sent when this listener returns)
            self.spawn(self._tell_rated(context.client, channel, user.user_id, thread_ts, task), "slack-rated")

    async def _tell_rated(self, client: AsyncWebClient, channel: str, user: str, thread_ts: str | None,
                          task: asyncio.Task[Any]) -> None:
        result = await task
        await self._tell_at(client, channel, user, thread_ts, result.text)

    async def on_feedback_closed(self, body: dict, context: Any) -> None:
        """The comment modal closed without sending ("Skip", ✕): the rating still goes, without a
        comment; the person hears back only when it did not go through."""
        view = _obj(body.get("view"))
        user = self._actor(body, context)
        decoded = fb.from_metadata(await self._unpack(view.get("private_metadata")))
        if user is None or decoded is None:
            return
        target, helpful, channel, thread_ts = decoded
        result = await self._rate(user, target, helpful, None)
        if not result.recorded and channel:
            await self._tell_at(context.client, channel, user.user_id, thread_ts, result.text)

    async def _tell_at(self, client: AsyncWebClient, channel: str, user: str, thread_ts: str | None, text: str) -> None:
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            self._count("ephemeral")
            await call(client.chat_postEphemeral, sleep=self._sleep, **kwargs)
        except (SlackApiError, *TRANSIENT) as exc:
            log.warning("could not post an ephemeral message: %s", error_code(exc) or type(exc).__name__)
        except Exception:
            log.exception("could not post an ephemeral message")

    # --- the agent surface: App Home, prompts, Stop, channel rules, sharing ----------------------------

    async def on_home_opened(self, body: dict, event: dict, context: Any) -> None:
        """`app_home_opened`: the Messages tab gets the suggested prompts, the Home tab its view."""
        team = ids(body, context).team_id
        user, channel, tab = event.get("user"), event.get("channel"), event.get("tab")
        if not isinstance(user, str) or not user:
            return
        if tab == "messages" and isinstance(channel, str) and channel:
            last = self._prompted.get((team, channel))
            if last is not None and self._clock() - last < home.PROMPTS_EVERY:
                return
            if await self._set_prompts(context.client, channel, None):
                if len(self._prompted) > 100_000:
                    self._prompted.clear()
                self._prompted[(team, channel)] = self._clock()
        elif tab == "home":
            notes = await self.core.recent_notifications(ChatUser(PLATFORM, team, user), home.NOTIFICATIONS)
            view = home.home_view(self.settings.suggested_prompts, notes)
            try:
                self._count("view_publish")
                await call(context.client.views_publish, sleep=self._sleep, user_id=user, view=view)
            except (SlackApiError, *TRANSIENT) as exc:
                log.warning("slack: could not publish the Home tab: %s", error_code(exc) or type(exc).__name__)

    async def on_assistant_thread_started(self, body: dict, event: dict, context: Any) -> None:
        """A workspace still on `assistant_view`: the prompts belong to each assistant thread."""
        thread = _obj(event.get("assistant_thread"))
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if isinstance(channel, str) and channel and isinstance(thread_ts, str) and thread_ts:
            await self._set_prompts(context.client, channel, thread_ts)

    async def _set_prompts(self, client: AsyncWebClient, channel: str, thread_ts: str | None) -> bool:
        prompts = home.suggested_prompts(self.settings.suggested_prompts)
        if not prompts:
            return False
        kwargs: dict[str, Any] = {"channel_id": channel, "prompts": prompts, "title": texts.SLACK_PROMPTS_TITLE}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            self._count("prompts")
            await call(client.assistant_threads_setSuggestedPrompts, sleep=self._sleep, **kwargs)
        except (SlackApiError, *TRANSIENT) as exc:
            log.info("slack: could not set the suggested prompts: %s", error_code(exc) or type(exc).__name__)
            return False
        return True

    async def on_session_stopped(self, body: dict, event: dict, context: Any) -> None:
        """`agent_session_stopped`: the person pressed Stop. The answer streaming in that thread
        is stopped (closing the Moveworks stream) and ends in place with "Stopped."."""
        team = ids(body, context).team_id
        channel, thread_ts = event.get("channel"), event.get("thread_ts")
        if not (isinstance(channel, str) and channel and isinstance(thread_ts, str) and thread_ts):
            log.info("slack: agent_session_stopped without its thread")
            return
        streams = [ts for ts in event.get("streaming_message_ts") or [] if isinstance(ts, str)]
        if await self.sessions.stopped(team, channel, thread_ts, streams):
            log.info("slack: the person stopped the answer")
        else:
            log.info("slack: Stop for an answer this process does not stream; passed on to the others")

    async def on_command(self, ack: Any, body: dict, context: Any) -> None:
        """`/moveworks channel [mode]` (channels.py). Answered privately, within Slack's 3 seconds."""
        try:
            text = await self._command_reply(body, context)
        except Exception:
            log.exception("slack: the slash command failed unexpectedly")
            text = texts.SLACK_COMMAND_FAILED
        await ack(text=text, response_type="ephemeral")

    async def _command_reply(self, body: dict, context: Any) -> str:
        name = str(body.get("command") or "/moveworks")
        command = ch.parse_command(str(body.get("text") or ""))
        if command.action == "help":
            return texts.SLACK_COMMAND_USAGE.format(command=name)
        channel, user = body.get("channel_id"), body.get("user_id")
        team = ids(body, context).team_id
        if not isinstance(channel, str) or not channel or channel.startswith("D") or not isinstance(user, str):
            return texts.SLACK_COMMAND_IN_CHANNEL
        if command.action == "show":
            return ch.describe(await self.channels.mode(team, channel))
        try:
            async with asyncio.timeout(COMMAND_DEADLINE):
                await self.core.budget(f"slack:{team}:users", USERS_RATE).acquire()
                self._count("users_info")
                profile = await directory.lookup(context.client, user)
        except (TimeoutError, SlackApiError, *TRANSIENT) as exc:
            log.info("slack: could not check an admin for the slash command: %s", error_code(exc) or type(exc).__name__)
            return texts.SLACK_COMMAND_FAILED
        if profile is None or not profile.is_admin:
            return texts.SLACK_COMMAND_ADMINS_ONLY
        assert command.mode is not None
        await self.channels.set(team, channel, command.mode)
        log.info("slack: channel %s of %s set to %s by an admin", channel, team, command.mode)
        return ch.describe(command.mode, changed=True)

    async def on_home_prompt(self, ack: Any, body: dict, action: dict, context: Any) -> None:
        """A suggested prompt pressed on the Home tab: asked in the person's DM (the bot posts
        "You asked: …" there, and the answer streams in that message's thread).

        The question's thread is that post, so two Slack calls come before the submit: the click
        is acknowledged once the question is submitted when that takes up to `form_fast_reply`
        seconds (Slack allows 3), else acknowledged then, and the asking goes on behind it."""
        task = self.spawn(self._ask_home_prompt(body, action, context), "slack-home-prompt")
        await asyncio.wait({task}, timeout=self.form_fast_reply)
        await ack()

    async def _ask_home_prompt(self, body: dict, action: dict, context: Any) -> None:
        user = self._actor(body, context)
        prompt = action.get("value") if isinstance(action, dict) else None
        if user is None or not isinstance(prompt, str) or not prompt.strip() or len(prompt) > texts.MAX_INPUT_CHARS:
            return
        client = context.client
        try:
            channel = await self._open_dm(client, user.user_id)
            self._count("post")
            posted = await call(client.chat_postMessage, sleep=self._sleep, channel=channel,
                                text=texts.SLACK_HOME_ASKED.format(prompt=escape(prompt)))
        except (SlackApiError, PlatformError, *TRANSIENT) as exc:
            log.warning("slack: could not ask a Home tab prompt: %s", error_code(exc) or exc)
            return
        root = str(posted["ts"])
        team = user.workspace
        address = {"channel": channel, "thread_ts": root, "recipient_team_id": team, "user": user.user_id}
        self._keep_title(team, channel, root, prompt)
        stamp = action.get("action_ts") or body.get("trigger_id") or root
        await self.core.submit(Inbound(
            dedupe_id=f"home:{team}:{user.user_id}:{stamp}", thread=ThreadKey(PLATFORM, team, channel, root),
            user=user, text=prompt, address=address, direct=True,
        ))

    async def on_share(self, body: dict, action: dict, context: Any) -> None:
        """"Share in channel" under a private answer: the answer goes into the channel's thread it
        was asked in (by its asker only, once), and the button says where it went."""
        user = self._actor(body, context)
        key = action.get("value") if isinstance(action, dict) else None
        dm = _field(body, "channel", "id") or _field(body, "container", "channel_id")
        offer_ts = _field(body, "container", "message_ts") or _field(body, "message", "ts")
        if user is None or not isinstance(key, str) or not key or not dm:
            return
        shares = self.core.kv(ch.SHARES)
        raw = await shares.get(key)
        record = json.loads(raw) if raw else None
        if not isinstance(record, dict):
            await self._tell_at(context.client, dm, user.user_id, None, texts.SLACK_SHARE_GONE)
            return
        if record.get("u") != user.user_id:
            await self._tell_at(context.client, dm, user.user_id, None, texts.SLACK_SHARE_NOT_YOURS)
            return
        channel, thread_ts = str(record.get("c") or ""), record.get("ts")
        where = f"<#{channel}>"
        answer = ch.shared_answer(record)
        name = await self.names.known(user.workspace, user.user_id) or user.name or texts.SLACK_SOMEONE
        parts = ch.share_parts(answer.text + "\n\n_" + texts.SLACK_SHARED_BY.format(user=name) + "_")
        ops = SlackMessageOps(context.client, channel, thread_ts, on_write=self._count,
                              formats=self._formats.setdefault(user.workspace, {}))
        try:
            for i, part in enumerate(parts):
                await ops.post(part, answer=answer if i == len(parts) - 1 else None)
        except PlatformError as exc:
            log.warning("slack: could not share a private answer: %s", exc)
            await self._tell_at(context.client, dm, user.user_id, None, texts.SLACK_SHARE_FAILED.format(channel=where))
            return
        await shares.delete(key)
        if offer_ts:
            done = texts.SLACK_SHARED.format(channel=where)
            try:
                self._count("update")
                await call(context.client.chat_update, sleep=self._sleep, channel=dm, ts=offer_ts, text=done,
                           blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": done}}])
            except (SlackApiError, *TRANSIENT) as exc:
                log.info("slack: could not mark a private answer shared: %s", error_code(exc) or type(exc).__name__)

    async def on_callback(self, body: dict, action: dict, context: Any) -> None:
        where = ids(body, context)
        inbound = normalise_action(body, action, where, bk.decode(action.get("value")))
        if inbound is not None:
            await self.core.submit(inbound)

    # --- forms and the get-help menu ----------------------------------------------------------------

    def _actor(self, body: dict, context: Any) -> ChatUser | None:
        user_id = _field(body, "user", "id")
        if not user_id:
            return None
        name = _field(body, "user", "name") or _field(body, "user", "username")
        return ChatUser(PLATFORM, ids(body, context).team_id, user_id, name=name)

    async def on_open_form(self, body: dict, action: dict, context: Any) -> None:
        """A MODAL_ACTION button (already acked): open the form."""
        data = bk.decode(action.get("value") if isinstance(action, dict) else None)
        ref, where, user = forms.decode_ref(data), data.get("w"), self._actor(body, context)
        if ref is None or not isinstance(where, str) or not where or user is None:
            log.info("slack: a form button without its ids")
            return
        await self._open_form(body, context, user, ref, where, str(data.get("l") or ""))

    async def _open_form(
        self, body: dict, context: Any, user: ChatUser, ref: MessageRef, where: str, title: str
    ) -> None:
        """Open a "Loading…" modal at once (the interaction's trigger_id is good for 3 seconds and
        one use), then ask the core for the form and put it in that modal. Never raises."""
        client = context.client
        title = title or texts.FORM_DEFAULT_TITLE
        try:
            self._count("view_open")
            opened = await client.views_open(trigger_id=body.get("trigger_id"), view=forms.loading_view(title))
        except (SlackApiError, *TRANSIENT) as exc:
            code = error_code(exc)
            log.warning("slack: could not open a form: %s", code or type(exc).__name__)
            await self._tell(context, body, texts.SLACK_FORM_RETRY if code in TRIGGER_ERRORS else texts.FORM_FAILED)
            return
        view = opened.get("view") or {}
        try:
            step = await self.core.open_form(user, ref, where)
        except Exception:  # the contract says never; a modal must not stay "Loading…" anyway
            log.exception("opening a form failed unexpectedly")
            step = FormStep(notice=texts.FORM_FAILED)
        await self._update_view(client, view.get("id"), view.get("hash"), await self._step_view(step, title))

    async def on_help_pick(self, body: dict, action: dict, context: Any) -> None:
        """A get-help menu pick (already acked): a form opens like its button; anything else is
        the core's (a text or link posted in the thread, a callback asked)."""
        option = _obj(action.get("selected_option") if isinstance(action, dict) else None)
        picked = forms.help_pick(action.get("block_id"), option.get("value"))
        user = self._actor(body, context)
        if picked is None or user is None:
            log.info("slack: a help menu pick without its ids")
            return
        ref, where, opens_form = picked
        if opens_form:
            label = _obj(option.get("text"))
            await self._open_form(body, context, user, ref, where, str(label.get("text") or ""))
            return
        channel = _field(body, "channel", "id") or _field(body, "container", "channel_id")
        message = _obj(body.get("message"))
        root = message.get("thread_ts") or message.get("ts") or _field(body, "container", "message_ts")
        if not channel or not isinstance(root, str) or not root:
            log.info("slack: a help menu pick outside a message")
            return
        team = ids(body, context).team_id
        thread = ThreadKey(PLATFORM, team, channel, root)
        address = {"channel": channel, "thread_ts": root, "recipient_team_id": team, "user": user.user_id}
        try:
            notice = await self.core.choose_help_item(user, thread, address, ref, where)
        except Exception:
            log.exception("a help menu pick failed unexpectedly")
            notice = texts.FORM_FAILED
        if notice:
            await self._tell(context, body, notice)

    async def on_form_field(self, body: dict, context: Any) -> None:
        """A field that `triggers_refresh` changed (already acked): refresh, keep what was typed."""
        view = _obj(body.get("view"))
        user = self._actor(body, context)
        if not view or user is None:
            return
        meta = await self._unpack(view.get("private_metadata"))
        session, title = str(meta.get("s") or ""), str(meta.get("t") or texts.FORM_DEFAULT_TITLE)
        values = forms.read_values(view.get("state"), forms.Keys(meta.get("k")), user.workspace)
        try:
            step = await self.core.refresh_form(user, session, values)
        except Exception:
            log.exception("refreshing a form failed unexpectedly")
            return  # the form stays as it is, still usable
        await self._update_view(context.client, view.get("id"), view.get("hash"),
                                await self._step_view(step, title))

    async def on_form_submit(self, ack: Any, body: dict, context: Any) -> None:
        """A form submitted. Slack wants the answer within 3 seconds: when the core is done within
        `form_fast_reply` the reply is the outcome itself (`errors` on the fields, `clear`, the
        form again, a notice); otherwise "Submitting…" now and the outcome by views.update."""
        view = _obj(body.get("view"))
        user = self._actor(body, context)
        meta = await self._unpack(view.get("private_metadata"))
        session, title = str(meta.get("s") or ""), str(meta.get("t") or texts.FORM_DEFAULT_TITLE)
        keys = forms.Keys(meta.get("k"))
        if user is None or not session:
            await ack(response_action="update", view=forms.message_view(title, texts.FORM_GONE))
            return
        values = forms.read_values(view.get("state"), keys, user.workspace)
        task = self.spawn(self._submit(user, session, values), "slack-form-submit")
        await asyncio.wait({task}, timeout=self.form_fast_reply)
        if task.done():
            await ack(**await self._submission_reply(task.result(), view, keys, title))
            return
        await ack(response_action="update", view=forms.submitting_view(title))
        # The acknowledgement goes when this listener returns: the outcome follows behind it.
        self.spawn(self._submitted_late(context.client, view, title, task), "slack-form-late")

    async def _submitted_late(self, client: AsyncWebClient, view: dict, title: str,
                              task: asyncio.Task[FormStep]) -> None:
        acked = time.monotonic()
        step = await task
        # Slack applies the "Submitting…" answer when our HTTP response reaches it; an update sent
        # before that would be overwritten by it, so the outcome waits a moment after the ack.
        await self._sleep(max(0.0, FORM_UPDATE_GRACE - (time.monotonic() - acked)))
        await self._update_view(client, view.get("id"), None, await self._step_view(step, title))

    async def _submit(self, user: ChatUser, session: str, values: dict[str, Any]) -> FormStep:
        try:
            return await self.core.submit_form(user, session, values)
        except Exception:
            log.exception("submitting a form failed unexpectedly")
            return FormStep(notice=texts.FORM_SUBMIT_FAILED)

    async def _submission_reply(self, step: FormStep, view: dict, keys: forms.Keys, title: str) -> dict[str, Any]:
        """The view_submission response for a step known within Slack's 3 seconds."""
        if step.done:
            return {"response_action": "clear"}
        if step.form is None:
            return {"response_action": "update", "view": await self._step_view(step, title)}
        shown = await self._step_view(step, title)
        same_fields = forms.input_block_ids(shown) == forms.input_block_ids(view)
        errors = forms.response_errors(step.errors, view, keys) if step.errors else None
        if errors and same_fields:
            return {"response_action": "errors", "errors": errors}
        return {"response_action": "update", "view": shown}

    async def _update_view(self, client: AsyncWebClient, view_id: Any, view_hash: Any, view: dict[str, Any]) -> None:
        """views.update, best effort: `hash` makes Slack refuse the update when the modal changed
        meanwhile (a later refresh wins); a closed modal is gone (`not_found`)."""
        if not isinstance(view_id, str) or not view_id:
            return
        kwargs: dict[str, Any] = {"view_id": view_id, "view": view}
        if isinstance(view_hash, str) and view_hash:
            kwargs["hash"] = view_hash
        try:
            self._count("view_update")
            await call(client.views_update, sleep=self._sleep, **kwargs)
        except SlackApiError as exc:
            code = error_code(exc)
            level = logging.INFO if code in ("hash_conflict", "not_found") else logging.WARNING
            log.log(level, "slack: could not update a form modal: %s", code or "error")
        except TRANSIENT as exc:
            log.warning("slack: could not update a form modal: %s", type(exc).__name__)

    async def _tell(self, context: Any, body: dict, text: str) -> None:
        """An ephemeral sentence for whoever clicked, where they clicked (best effort)."""
        user_id = _field(body, "user", "id")
        channel = _field(body, "channel", "id") or _field(body, "container", "channel_id")
        if not user_id or not channel:
            log.info("slack: nobody to tell (%s)", text[:60])
            return
        message = _obj(body.get("message"))
        kwargs: dict[str, Any] = {"channel": channel, "user": user_id, "text": text}
        if isinstance(message.get("thread_ts"), str):
            kwargs["thread_ts"] = message["thread_ts"]
        try:
            self._count("ephemeral")
            await call(context.client.chat_postEphemeral, sleep=self._sleep, **kwargs)
        except (SlackApiError, *TRANSIENT) as exc:
            log.warning("could not post an ephemeral message: %s", error_code(exc) or type(exc).__name__)

    def _packer(self, pending: list[tuple[str, str]]) -> forms.Packer:
        """A modal's private_metadata (<= 3,000 characters): the data itself, or a key to it whose
        data is added to `pending`, for `_keep_packed` to store before the view is shown."""

        def pack(data: dict[str, Any]) -> str:
            raw = forms.pack(data)
            if len(raw) <= forms.METADATA_LIMIT:
                return raw
            key = secrets.token_urlsafe(12)
            pending.append((key, raw))
            return forms.pack({"ref": key})

        return pack

    async def _keep_packed(self, pending: list[tuple[str, str]]) -> None:
        if not pending:
            return
        stored = self.core.kv(FORM_METADATA)
        for key, raw in pending:
            await stored.set(key, raw)
        await stored.prune(FORM_METADATA_TTL)

    async def _pack(self, data: dict[str, Any]) -> str:
        pending: list[tuple[str, str]] = []
        packed = self._packer(pending)(data)
        await self._keep_packed(pending)
        return packed

    async def _step_view(self, step: FormStep, title: str) -> dict[str, Any]:
        """`forms.step_view`, with the metadata too long for Slack kept in the store."""
        pending: list[tuple[str, str]] = []
        view = forms.step_view(step, title, self._packer(pending))
        await self._keep_packed(pending)
        return view

    async def _unpack(self, raw: Any) -> dict[str, Any]:
        data = forms.unpack(raw)
        if "s" not in data and isinstance(data.get("ref"), str):
            data = forms.unpack(await self.core.kv(FORM_METADATA).get(data["ref"]))
        return data

    # --- files ------------------------------------------------------------------------------------

    async def download(self, attachment: Attachment, limit: int) -> bytes:
        """A shared file's bytes, fetched with the bot token of its workspace (files.py)."""
        team = attachment.source.get("team")
        try:
            client = await self.client_for(str(team or ""), attachment.source.get("enterprise"))
        except PlatformError as exc:
            raise AttachmentRefused(f"no bot token for the file's workspace: {exc}") from None
        token = client.token
        if not token:
            raise AttachmentRefused("no bot token")
        if self._http_files is None:
            self._http_files = httpx.AsyncClient()
        return await files.fetch(self._http_files, attachment, token, limit, api_url=self.api_url)

    # --- ChatAdapter ------------------------------------------------------------------------------

    async def open_reply(
        self, thread: ThreadKey, address: Address, *, user: ChatUser | None, proactive: bool
    ) -> ReplySink:
        team = thread.workspace
        client = await self.client_for(team, address.get("enterprise_id"))
        channel = address.get("channel") or thread.channel
        thread_ts = address.get("thread_ts") if "thread_ts" in address else (thread.thread or None)
        title = self._titles.pop((team, str(channel), str(thread_ts or "")), None)
        if address.get("dm_user"):  # SLACK_CHANNEL_MODE=dm or a `private` channel: the asker's DM
            channel, thread_ts = await self._open_dm(client, address["dm_user"]), None
            if address.get("pointer") and not proactive:
                await self._post_pointer(client, address)
        session = None
        if not proactive and user is not None:
            session = self.sessions.open(client, thread, channel, thread_ts, title=title, user=user.user_id)
        sink = self._reply_sink(client, team, channel, thread_ts, address, user=user, proactive=proactive,
                                session=session)
        if session is not None:
            sink = SessionSink(sink, session)
        share = address.get("share")
        if isinstance(share, dict) and share.get("channel") and user is not None and not proactive:
            dm = channel

            async def offer(key: str, where: str) -> None:
                self._count("post")
                await call(client.chat_postMessage, sleep=self._sleep, channel=dm,
                           text=texts.SLACK_SHARE_PROMPT.format(channel=f"<#{where}>"),
                           blocks=ch.offer_blocks(key, where))

            sink = ch.ShareSink(sink, self.core, offer, team=team, user=user.user_id, channel=str(share["channel"]),
                                thread_ts=share.get("thread_ts"))
        return sink

    def _reply_sink(
        self, client: AsyncWebClient, team: str, channel: str, thread_ts: str | None, address: Address, *,
        user: ChatUser | None, proactive: bool, session: Session | None,
    ) -> ReplySink:
        formats = self._formats.setdefault(team, {})
        edit_budget = self.core.budget(f"slack:{team}", EDIT_RATE)
        ops = SlackMessageOps(client, channel, thread_ts, on_write=self._count, formats=formats)

        def editing() -> EditingSink:
            return EditingSink(ops, EDIT_CAPABILITIES, edit_budget, f"slack:{team}", platform=PLATFORM,
                               sleep=self._sleep)

        def status_keeper() -> StatusKeeper:
            assert thread_ts is not None  # a thread status needs a thread
            keeper = StatusKeeper(client, channel, thread_ts, on_write=self._count, sleep=self._sleep)
            if self._status_refresh is not None:
                keeper.refresh = self._status_refresh
            return keeper

        if proactive:
            return editing()
        native = self.streaming in ("native", "auto") and not (self.streaming == "auto" and team in self._native_off)
        native = native and (team, channel) not in self._no_stream_channels
        # Admission (see admission.py): native while a start and a stop are free (Tier 2, separate
        # buckets), else edits while seats are free, else the thread status and one post.
        edges = self._edges(team)
        if not (native and thread_ts and edges.admit()):
            release = self._edit_seats.take(team, edit_budget)
            if release is not None:
                return EditingSink(ops, EDIT_CAPABILITIES, edit_budget, f"slack:{team}", platform=PLATFORM,
                                   sleep=self._sleep, on_end=release)
            if thread_ts:
                return StatusThenPostSink(editing(), status_keeper())
            return editing()
        assert thread_ts is not None
        stream_key = f"slack:{team}:stream"
        status = status_keeper()
        recipient_user = (user.user_id if user else None) or address.get("user")
        native_sink = NativeStreamSink(
            client,
            channel,
            thread_ts,
            budget_key=stream_key,
            stream_budget=self.core.budget(stream_key, STREAM_RATE),
            edit_budget=edit_budget,
            start_budget=edges.start,
            stop_budget=edges.stop,
            prepaid=True,
            recipient_team_id=address.get("recipient_team_id") or team,
            recipient_user_id=recipient_user,
            status=status,
            on_write=self._count,
            on_unavailable=lambda code: self._native_unavailable(team, channel, code),
            clock=self._clock,
            sleep=self._sleep,
            plans=team not in self._plans_off,
            on_plans_refused=lambda code: self._plans_off.add(team),
            session=session,
            on_user_stop=(lambda: self.sessions.user_stopped(session)) if session is not None else (lambda: None),
            formats=formats,
        )
        return WithFallback(native_sink, editing, fallback_budget=edit_budget)

    def _edges(self, team: str) -> Edges:
        """The workspace's chat.startStream and chat.stopStream budgets (Tier 2 each)."""
        budget = self.core.budget
        return Edges(budget(f"slack:{team}:start", START_RATE), budget(f"slack:{team}:stop", STOP_RATE))

    def _native_unavailable(self, team: str, channel: str, code: str) -> None:
        """Remember a refusal of native streaming that will repeat: a workspace's configuration
        (in `auto` mode), or a channel whose type cannot stream."""
        if code in WORKSPACE_ERRORS:
            self._native_off.add(team)
        if code in CHANNEL_ERRORS:
            self._no_stream_channels.add((team, channel))

    async def _open_dm(self, client: AsyncWebClient, user_id: str) -> str:
        try:
            response = await call(client.conversations_open, users=user_id)
        except SlackApiError as exc:
            raise to_platform_error(exc, "conversations.open") from None
        except TRANSIENT as exc:
            raise PlatformError(f"conversations.open: {type(exc).__name__}") from None
        return str(response["channel"]["id"])

    async def _post_pointer(self, client: AsyncWebClient, address: dict[str, Any]) -> None:
        try:
            if address.get("pointer") == "ephemeral":  # a `private` channel: only the asker sees it
                kwargs: dict[str, Any] = {"channel": address["channel"], "user": address["dm_user"],
                                          "text": texts.SLACK_PRIVATE_POINTER}
                if address.get("thread_ts"):
                    kwargs["thread_ts"] = address["thread_ts"]
                self._count("ephemeral")
                await call(client.chat_postEphemeral, **kwargs)
                return
            self._count("post")
            await call(
                client.chat_postMessage, channel=address["channel"], thread_ts=address.get("thread_ts"),
                text=texts.DM_POINTER
            )
        except (SlackApiError, *TRANSIENT) as exc:
            log.warning("could not post the DM pointer: %s", error_code(exc) or type(exc).__name__)

    async def close_reply(
        self, thread: ThreadKey, address: Address, checkpoint: dict[str, Any], message: str
    ) -> bool:
        """Stop a native stream a crashed process left open, ending it with `message`."""
        channel, ts = checkpoint.get("channel"), checkpoint.get("ts")
        if not channel or not ts:
            return False
        fence = checkpoint.get("fence")
        text = ("\n" + fence if fence else "") + "\n\n" + texts.failure_note(message)
        stop = self._edges(thread.workspace).stop  # chat.stopStream: a Tier 2 call like any stop
        if not stop.try_take():
            # Many streams cut off at once (a crash) and the Tier 2 budget is spent: the asker is
            # told now by a posted note, and the stream stops when the budget allows.
            self.spawn(self._stop_later(thread, address, channel, ts, fence), name="slack-stop-orphan")
            return False
        try:
            client = await self.client_for(thread.workspace, address.get("enterprise_id"))
            await call(client.chat_stopStream, channel=channel, ts=ts, markdown_text=text, sleep=self._sleep)
        except (SlackApiError, *TRANSIENT, PlatformError) as exc:
            log.info("could not stop the interrupted stream (%s); posting the note instead", error_code(exc))
            return False
        return True

    async def _stop_later(self, thread: ThreadKey, address: Address, channel: str, ts: str, fence: Any) -> None:
        try:
            client = await self.client_for(thread.workspace, address.get("enterprise_id"))
            await self._edges(thread.workspace).stop.acquire(final=True)
            await call(client.chat_stopStream, channel=channel, ts=ts, markdown_text="\n" + fence if fence else None,
                       sleep=self._sleep)
        except (SlackApiError, *TRANSIENT, PlatformError) as exc:
            log.info("could not stop an interrupted stream (%s)", error_code(exc))

    async def open_direct(self, employee: Employee) -> tuple[ThreadKey, Address] | None:
        """The employee's DM with the bot, for proactive messages from the poller."""
        try:
            client = await self.client_for(employee.workspace)
            channel = await self._open_dm(client, employee.user_id)
        except PlatformError as exc:
            log.info("cannot open a Slack DM: %s", exc)
            return None
        return ThreadKey(PLATFORM, employee.workspace, channel, ""), {"channel": channel, "thread_ts": None}

    async def resolve_email(self, user: ChatUser) -> str | None:
        client = await self.client_for(user.workspace)
        await self.core.budget(f"slack:{user.workspace}:users", USERS_RATE).acquire()
        profile = await directory.lookup(client, user.user_id)
        return profile.email if profile else None

    def reply_thread(
        self, thread: ThreadKey, address: Address, message_ids: tuple[str, ...]
    ) -> tuple[ThreadKey, Address] | None:
        """Slack answers each top-level DM message in its own thread, so a reply to a posted
        notification comes in the thread rooted at it: map that thread to the same conversation."""
        root = message_ids[0]
        return replace(thread, thread=root), {**address, "thread_ts": root}


def _replace_address(inbound: Any, address: dict[str, Any]) -> Any:
    return replace(inbound, address=address)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _field(body: Any, outer: str, inner: str) -> str | None:
    """`body[outer][inner]` when it is a non-empty string, else None (payloads are untrusted)."""
    part = body.get(outer) if isinstance(body, dict) else None
    value = part.get(inner) if isinstance(part, dict) else None
    return value if isinstance(value, str) and value else None


async def _install_succeeded(args: AsyncSuccessArgs) -> BoltResponse:
    return await args.default.success(args)
