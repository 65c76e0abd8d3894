"""A fake Slack Web API (and Socket Mode endpoint) on loopback, for tests and benchmarks.

The real `slack_sdk` client talks to it through `base_url` (`SLACK_API_URL`), so requests, JSON and
form encoding, 429 handling and retries are exercised for real. It records every call, keeps message
state (so a test reads what a user would see), can inject errors, and enforces the rules Slack
documents (see the reference notes' `slack-platform-rules.md`), with an injectable clock:

* **blocks**: every `blocks` payload is parsed and validated by slack_sdk's own Block Kit models
  (`Block.parse(...).validate_json()`), plus the limits those models miss: 1-3,000 characters per
  text object, non-empty element lists, button values <= 2,000, URLs <= 3,000, action ids <= 255,
  at most 50 blocks, and at most 12,000 text characters summed over all blocks of one message
  (`msg_blocks_too_long`; `text` of every text object and markdown block counts). An empty
  `markdown` block is refused (`invalid_blocks`);
* **streaming state**: `chat.update` of a message that is still streaming fails
  `streaming_state_conflict` and leaves the stream open (what `chat.delete` does to a streaming
  message is not documented, so the fake invents no rule for it); `appendStream`/`stopStream` of a stream that ended
  fail `message_not_in_streaming_state`;
  `stopStream` refuses more than 50 blocks (`msg_blocks_too_many`);
* **tiers**: the documented per-method, per-workspace rate tiers (`TIERS`: start/stop Tier 2 in
  separate buckets, append Tier 4, update/delete/conversations.open Tier 3, ...), answered with 429,
  `ratelimited` and `Retry-After`; optionally (`enforce_post_rate`) the ~1 per second per channel of
  `chat.postMessage` (short bursts allowed). `rate_limit_writes(s)` is a whole-app outage;
* **text**: `chat.update` `text` at most 4,000 characters (`msg_too_long`); `chat.postMessage`
  truncates `text` past 40,000; `markdown_text` cannot be combined with `blocks` or `text`
  (`markdown_text_conflict`);
* **options** (in messages and views): option text 1-75 characters, value 1-150, at most 100
  options (or 100 option groups) per select, group labels 1-75 (docs.slack.dev/reference/
  block-kit/composition-objects/option-object; slack_sdk's models do not check options);
* **modals** (docs.slack.dev/reference/methods/views.open, views.update, /reference/views,
  /surfaces/modals): a `trigger_id` is minted per interaction (`mint_trigger`, and the payload
  builders below), works for one views.open and only within 3 seconds of the interaction
  (`invalid_trigger_id`, `exchanged_trigger_id`, `expired_trigger_id`); views.update by view id,
  refused on a stale `hash` (`hash_conflict`) or a closed/unknown view (`not_found`); every view is
  checked (`invalid_arguments` with the reason in `response_metadata.messages`; `view_too_large`
  past 250 kB): type modal, title/submit/close plain_text of 1-24 characters, 1-100 blocks,
  private_metadata <= 3,000, callback_id/external_id/block_id <= 255 and block ids unique, blocks
  valid for slack_sdk's models and the limits above, no `markdown` block, an input block needs a
  label (<= 2,000) and an input element, `file_input` only inside one, a select's initial options
  among its options, checkboxes <= 10 options, and a `submit` when there is an input. Slack's
  client side too: `fill` types into inputs, `submission` refuses (`MissingRequired`) while a
  non-optional input is empty, `field_changed` only for `dispatch_action` inputs, and
  `answer_submission` applies the app's response as Slack does (`errors` only on input block ids,
  `update` validated, `clear`/empty closes, later than 3 seconds is an error for the person),
  noting each departure in `view_response_problems` (as well as a views.update sent before the
  submission it follows was answered: the answer would undo it);
* **authorship**: `username`/`icon_url`/`icon_emoji` on chat.postMessage are recorded as asked
  (`asked_authorship`) and shown (`username`, `icons`) only when the workspace granted
  `chat:write.customize` (docs.slack.dev/reference/scopes/chat.write.customize); without it Slack
  silently posts under the app's own name. Each team holds `scopes` (`DEFAULT_SCOPES`);
* **files**: `add_file` registers a file shared in Slack; its `url_private(_download)` serves the
  bytes only to a bot token of its workspace that holds `files:read`, and Slack's sign-in page as
  HTML with status 200 to anyone else (docs.slack.dev/messaging/working-with-files). Every
  download is recorded (`downloads`).

The agent surface (reference notes `slack-agents.md`; docs.slack.dev/ai/agent-sessions, the method
and event pages named there, node-slack-sdk `packages/types` for chunks, slack-ruby/slack-api-ref
for error lists). Each team says what it has: `agent` (the app is declared an agent),
`agent_view` (the workspace uses the agent messaging experience, not `assistant_view`), `chunks`
(it takes task/plan chunks), `context_actions` (it takes the `context_actions` block) and
`events` (the bot events the app subscribes to):

* **sessions** (`agents.sessions.setStatus`, Tier 3, `chat:write`): `channel_id` and a `status`
  of `active|processing|suspended|closed` (`invalid_status`); `thread_ts` is required in DMs and
  channels (`thread_ts_required`); `title` at most 200 characters (`invalid_arguments`) and, with
  `initiator_user_id`, used only when the call creates the session; `not_authorized` unless the
  app is declared an agent. Without the `agent_session_stopped` subscription the call answers
  with the warning `missing_agent_session_stopped_event_subscription` and the session has no Stop
  button. The status never changes by itself: `press_stop` (a person pressing Stop, only shown
  while `processing`) stops the thread's open streams and returns the `agent_session_stopped`
  event for the test to deliver; `chat.stopStream` sets the thread's session to its
  `session_status` (default `active`);
* **streams**: `chunks` on start/append/stop are checked against the documented chunk types
  (`markdown_text{text}`, `task_update{id,title,status pending|in_progress|complete|error}`,
  `plan_update{title}`, `blocks{blocks}`), else `invalid_chunks`; a team without `chunks` refuses
  task/plan chunks with `invalid_chunks`; `task_display_mode` is `timeline` or `plan`
  (`invalid_arguments`); the markdown of one call (parameter and chunks) is at most 12,000. A
  stream a person stopped refuses `chat.appendStream` with `stopped_by_user` and
  `chat.stopStream` with `message_not_in_streaming_state`;
* **suggested prompts** (`assistant.threads.setSuggestedPrompts`, Tier 4, `assistant:write`):
  `channel_id` and 1-4 `prompts` of `{title, message}`; under `agent_view` a call with `thread_ts`
  answers ok and changes nothing (the documented silent failure);
* **blocks**: `feedback_buttons` only inside `context_actions`, which holds at most 5
  `feedback_buttons`/`icon_button` elements; a team without `context_actions` refuses the block
  (`invalid_blocks`);
* **App Home** (`views.publish`, Tier 4, no scope): `user_id` and a `home` view (1-100 blocks, no
  `markdown` block, no title/submit/close, private_metadata <= 3,000), `hash_conflict` on a stale
  `hash`; `home_opened` builds the `app_home_opened` event (`tab` `home` or `messages`);
* **threads** (`conversations.replies`, Tier 3): the history scope of the channel's type
  (`channels:history`, `groups:history`, `im:history`, `mpim:history`; `missing_scope`),
  `thread_not_found` for an unknown thread, oldest first with `limit` (1-1,000), `latest`,
  `oldest`, `inclusive` and a `cursor`; `post_as_user` records a person's message so a thread has
  history;
* **slash commands**: `command_payload` builds the signed form body of a slash command;
  `users.info` reports `is_admin`, `is_owner`, `is_primary_owner`.

Usage:
    fake = FakeSlack(); await fake.start()
    AsyncWebClient(token=fake.token, base_url=fake.url)
    fake.fail_next("chat.update", "ratelimited", retry_after=1)
    fake.visible_text(channel, ts); await fake.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

STREAM_CHUNK_LIMIT = 12_000  # markdown_text per start/append/stop call
STREAM_TOTAL_LIMIT = 40_000  # whole streamed message
TEXT_LIMIT = 40_000  # `text` of chat.postMessage: truncated past this
UPDATE_TEXT_LIMIT = 4_000  # `text` of chat.update: msg_too_long past this
BLOCKS_TEXT_LIMIT = 12_000  # text characters summed over all blocks of one message
TEXT_OBJECT_LIMIT = 3_000  # one mrkdwn/plain_text text object (slack_sdk does not check it)
BUTTON_VALUE_LIMIT = 2_000
URL_LIMIT = 3_000
ACTION_ID_LIMIT = 255
MAX_BLOCKS = 50
# Modals (docs.slack.dev/reference/views, /reference/methods/views.open, /surfaces/modals):
TRIGGER_TTL = 3.0  # a trigger_id expires 3 seconds after the interaction, and works once
VIEW_TITLE_LIMIT = 24  # title, submit, close
VIEW_MAX_BLOCKS = 100
PRIVATE_METADATA_LIMIT = 3_000
VIEW_ID_LIMIT = 255  # callback_id, external_id, block_id
VIEW_SIZE_LIMIT = 250_000  # view_too_large
INPUT_LABEL_LIMIT = 2_000
CHECKBOX_OPTIONS = 10
OPTION_TEXT_LIMIT = 75
OPTION_VALUE_LIMIT = 150
MAX_OPTIONS = 100  # per select, and option groups per select
INPUT_ELEMENTS = frozenset({
    "plain_text_input", "datepicker", "datetimepicker", "timepicker", "checkboxes", "radio_buttons",
    "static_select", "multi_static_select", "external_select", "multi_external_select", "users_select",
    "multi_users_select", "conversations_select", "multi_conversations_select", "channels_select",
    "multi_channels_select", "email_text_input", "number_input", "url_text_input", "file_input",
    "rich_text_input",
})
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Slack</title></head><body>"
    "<h1>Sign in to your workspace</h1></body></html>"
)
BODY_BLOCK_TYPES = ("markdown", "section", "rich_text", "header")
WRITE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.delete", "chat.startStream",
                           "chat.appendStream", "chat.stopStream", "chat.postEphemeral"})
# Slack's documented rate tiers, per method and per workspace (calls a minute): Tier 2 ~20,
# Tier 3 ~50, Tier 4 ~100. chat.startStream and chat.stopStream are separate Tier 2 buckets.
# chat.postMessage (~1 per second per channel) is `enforce_post_rate`; assistant.threads.setStatus
# is "special" with no published figure, so it is not limited here.
STREAM_TIERS = {"chat.startStream": 20, "chat.appendStream": 100, "chat.stopStream": 20}
TIER3_METHODS = ("chat.update", "chat.delete", "conversations.open")
TIERS: dict[str, int] = {
    **STREAM_TIERS,
    **dict.fromkeys(TIER3_METHODS, 50),
    "chat.postEphemeral": 100,
    "users.info": 100,
    # the agent surface (docs.slack.dev method pages): sessions Tier 3, prompts Tier 4 (the Java
    # SDK says Tier 3: the docs win), App Home and modals Tier 4, thread history Tier 3
    "agents.sessions.setStatus": 50,
    "assistant.threads.setSuggestedPrompts": 100,
    "views.publish": 100,
    "conversations.replies": 50,
}
SESSION_STATUSES = frozenset({"active", "processing", "suspended", "closed"})
SESSION_TITLE_LIMIT = 200
MAX_PROMPTS = 4
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
DISPLAY_MODES = frozenset({"timeline", "plan"})
CONTEXT_ACTIONS_ELEMENTS = 5
CONTEXT_ACTION_TYPES = frozenset({"feedback_buttons", "icon_button"})
HISTORY_SCOPES = {"C": "channels:history", "G": "groups:history", "D": "im:history"}
# Error codes that mean "rate limited": `ratelimited` (HTTP 429 with Retry-After) and
# `rate_limited`, which some methods document as a plain error.
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    team: str | None
    at: float
    status: int = 200
    error: str | None = None


@dataclass
class Fault:
    error: str
    count: int
    retry_after: float | None = None
    status: int | None = None


@dataclass
class FakeUser:
    id: str
    name: str
    email: str | None = None
    team: str = "T1"
    is_bot: bool = False
    real_name: str | None = None
    is_admin: bool = False
    is_owner: bool = False


# The bot scopes an installation holds unless a test says otherwise (manifest.yml's list).
DEFAULT_SCOPES = frozenset({
    "app_mentions:read", "channels:history", "groups:history", "im:history", "mpim:history", "im:write",
    "chat:write", "chat:write.customize", "users:read", "users:read.email", "files:read", "assistant:write",
    "commands",
})
# The bot events the app subscribes to unless a test says otherwise (manifest.yml's list).
DEFAULT_EVENTS = frozenset({
    "app_mention", "message.channels", "message.groups", "message.im", "message.mpim", "app_home_opened",
    "agent_session_stopped",
})


@dataclass
class Team:
    id: str
    bot_user_id: str
    bot_id: str
    enterprise_id: str | None = None
    scopes: set[str] = field(default_factory=lambda: set(DEFAULT_SCOPES))
    events: set[str] = field(default_factory=lambda: set(DEFAULT_EVENTS))
    agent: bool = True  # the app is declared an agent (agents.sessions.* allowed)
    agent_view: bool = True  # the agent messaging experience (else the legacy assistant_view)
    chunks: bool = True  # task/plan chunks in streams (older workspaces: invalid_chunks)
    context_actions: bool = True  # the context_actions block (older workspaces: invalid_blocks)


class FakeSlack:
    """See module docstring. All state is public for assertions."""

    def __init__(
        self,
        *,
        team_id: str = "T1",
        token: str = "xoxb-fake-T1",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_token: str = "xapp-fake",
        enforce_tiers: bool | None = None,
        enforce_tier3: bool | None = None,
        tier3_per_minute: int = 50,
        enforce_streams: bool | None = None,
        enforce_post_rate: bool = False,
        post_burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.enforce_post_rate = enforce_post_rate
        # Per-method, per-workspace calls per minute (`TIERS`), on unless turned off. The older
        # switches still work: `enforce_tier3=False` / `enforce_streams=False` turn those groups
        # off, and both False (with `enforce_tiers` unset) every tier, as they used to.
        if enforce_tiers is None:
            enforce_tiers = not (enforce_tier3 is False and enforce_streams is False)
        self.per_minute: dict[str, int] = dict(TIERS) if enforce_tiers else {}
        if enforce_tier3 is False:
            for method in TIER3_METHODS:
                self.per_minute.pop(method, None)
        elif enforce_tier3 or enforce_tiers:
            self.per_minute.update(dict.fromkeys(TIER3_METHODS, tier3_per_minute))
        if enforce_streams is False:
            for method in STREAM_TIERS:
                self.per_minute.pop(method, None)
        elif enforce_streams:
            self.per_minute.update(STREAM_TIERS)
        self._windows: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self.outage_until = 0.0  # every write answers 429 until then (see rate_limit_writes)
        self.post_burst = post_burst
        self._post_buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, updated at)
        self.revoked: list[str] = []  # tokens given back with auth.revoke
        self.clock = clock
        self.latency = latency  # seconds added to every Web API call (benchmarks)
        self.teams: dict[str, Team] = {}
        self.tokens: dict[str, str] = {}  # token -> team id
        self.add_team(team_id, token=token, bot_user_id=bot_user_id, bot_id=bot_id)
        self.users: dict[str, FakeUser] = {}
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.ephemerals: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.rate_limited: int = 0  # 429s answered (injected or enforced)
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future] = {}
        self.socket_connected = asyncio.Event()
        self.port = 0
        # Modals: trigger ids minted for interactions (`mint_trigger`), views by id, and what
        # Slack would have refused in the bridge's view_submission responses.
        self.trigger_ttl = TRIGGER_TTL
        self._triggers: dict[str, dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.view_response_problems: list[str] = []
        self.files: dict[str, dict[str, Any]] = {}  # file id -> {"file": object, "content": bytes}
        self.downloads: list[dict[str, Any]] = []  # every file download: id, authorized
        self._ids = itertools.count(1)
        # The agent surface: sessions by (channel, thread_ts), the prompts each DM (or legacy
        # assistant thread) shows, App Home views by user.
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.prompts: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.homes: dict[str, dict[str, Any]] = {}

    # --- setup ----------------------------------------------------------------------------------

    def add_team(
        self,
        team_id: str,
        *,
        token: str | None = None,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        enterprise_id: str | None = None,
    ) -> Team:
        team = Team(team_id, bot_user_id, bot_id, enterprise_id)
        self.teams[team_id] = team
        if token:
            self.tokens[token] = team_id
        return team

    def add_user(
        self, user_id: str, name: str, email: str | None = None, *, team: str = "T1", is_bot: bool = False,
        is_admin: bool = False, is_owner: bool = False,
    ) -> FakeUser:
        user = FakeUser(user_id, name, email, team, is_bot, real_name=name.title(), is_admin=is_admin,
                        is_owner=is_owner)
        self.users[user_id] = user
        return user

    def fail_next(
        self,
        method: str,
        error: str,
        count: int = 1,
        *,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        """The next `count` calls of `method` fail with `error` (`ratelimited` -> HTTP 429 with
        Retry-After; `rate_limited` -> the documented error of that name, HTTP 200 unless `status`).

        `message_not_in_streaming_state` also ends the stream for real, as Slack does.
        """
        self._faults[method].append(Fault(error, count, retry_after, status))

    def rate_limit_writes(self, seconds: float) -> None:
        """Every write method answers `ratelimited` (429, Retry-After = time left) for `seconds`."""
        self.outage_until = self.clock() + seconds

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{key}/{rest:.*}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    # --- reading state ----------------------------------------------------------------------------

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        return [
            c for c in self.calls if c.method == method and (ok is None or (c.error is None) == ok)
        ]

    def write_calls(self) -> list[Call]:
        """Calls that write a visible message (what a rate budget is about)."""
        return [c for c in self.calls if c.method in WRITE_METHODS]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        for m in self.messages.get(channel, []):
            if m["ts"] == ts:
                return m
        raise KeyError(f"no message {ts} in {channel}")

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Messages in a thread (root excluded), oldest first."""
        return [m for m in self.messages.get(channel, []) if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]

    def bot_messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        chans = [channel] if channel else list(self.messages)
        return [m for c in chans for m in self.messages.get(c, []) if m.get("bot_id")]

    @staticmethod
    def body_text(message: dict[str, Any]) -> str:
        """What the reader sees as the message body (context/actions blocks are furniture)."""
        if message.get("markdown_text") is not None:
            return message["markdown_text"]
        parts = []
        for block in message.get("blocks") or []:
            kind = block.get("type")
            if kind == "markdown":
                parts.append(block.get("text", ""))
            elif kind in ("section", "header") and isinstance(block.get("text"), dict):
                parts.append(block["text"].get("text", ""))
        if parts:
            return "\n".join(parts)
        return message.get("text") or ""

    def visible_text(self, channel: str, ts: str) -> str:
        return self.body_text(self.message(channel, ts))

    def thread_text(self, channel: str, thread_ts: str, *, sep: str = "") -> str:
        """Bodies of all bot replies in a thread, joined (a long answer split over messages)."""
        return sep.join(self.body_text(m) for m in self.thread(channel, thread_ts) if m.get("bot_id"))

    # --- Socket Mode ------------------------------------------------------------------------------

    async def socket_send(
        self, payload: dict[str, Any], *, kind: str = "events_api", retry_attempt: int = 0, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Deliver one envelope to the connected Socket Mode client; returns its ack."""
        await asyncio.wait_for(self.socket_connected.wait(), timeout)
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        await self._sockets[-1].send_str(json.dumps(envelope))
        return await asyncio.wait_for(future, timeout)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1, "debug_info": {}}))
        self.socket_connected.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                future = self._acks.pop(data.get("envelope_id", ""), None)
                if future and not future.done():
                    future.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self.socket_connected.clear()
        return ws

    # --- request handling -------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            ctype = request.content_type
            if ctype == "application/json":
                params.update(json.loads(raw))
            else:
                params.update(dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True)))
        for key in ("blocks", "chunks", "loading_messages", "metadata", "view"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    pass
        return params

    def _team_for(self, request: web.Request, params: dict[str, Any]) -> tuple[str | None, str | None]:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else params.get("token")
        return token, self.tokens.get(token or "")

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token, team_id = self._team_for(request, params)
        call = Call(method, params, team_id, self.clock())
        self.calls.append(call)
        if self.latency:
            await asyncio.sleep(self.latency)

        def reply(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
            call.status = status
            if not data.get("ok"):
                call.error = data.get("error")
            return web.json_response(data, status=status, headers=headers)

        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.count -= 1
            if fault.count <= 0:
                faults.popleft()
            if fault.error == "message_not_in_streaming_state" and params.get("ts"):
                self._end_stream(params.get("channel", ""), params["ts"])
            if fault.error == "ratelimited":
                self.rate_limited += 1
                headers = {"Retry-After": str(int(math.ceil(fault.retry_after or 1)))}
                return reply({"ok": False, "error": "ratelimited"}, fault.status or 429, headers)
            if fault.error in RATE_LIMIT_ERRORS:
                self.rate_limited += 1
            return reply({"ok": False, "error": fault.error}, fault.status or 200)

        if method == "apps.connections.open":
            if token != self.app_token:
                return reply({"ok": False, "error": "invalid_auth"})
            return reply({"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"})
        if method == "oauth.v2.access":
            return reply(self._oauth_access(params))
        if team_id is None:
            return reply({"ok": False, "error": "invalid_auth" if token else "not_authed"})
        team = self.teams[team_id]
        if method == "auth.revoke":
            self.tokens.pop(token or "", None)
            self.revoked.append(token or "")
            return reply({"ok": True, "revoked": True})

        if method == "chat.postMessage" and self.enforce_post_rate:
            wait = self._take_post_slot(str(params.get("channel") or ""))
            if wait > 0:
                self.rate_limited += 1
                return reply({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(int(math.ceil(wait)))})

        if method in WRITE_METHODS and self.clock() < self.outage_until:
            self.rate_limited += 1
            wait = max(1, int(math.ceil(self.outage_until - self.clock())))
            return reply({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(wait)})

        limit = self.per_minute.get(method)
        if limit is not None:
            window = self._windows[(team_id, method)]
            now = self.clock()
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= limit:
                self.rate_limited += 1
                wait = max(1, int(math.ceil(window[0] + 60.0 - now)))
                return reply({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(wait)})
            window.append(now)

        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return reply({"ok": False, "error": "unknown_method"})
        try:
            return reply(handler(team, params))
        except _ApiError as exc:
            data: dict[str, Any] = {"ok": False, "error": exc.error}
            if exc.messages:
                data["response_metadata"] = {"messages": exc.messages}
            return reply(data)

    # --- helpers for methods ----------------------------------------------------------------------

    def _take_post_slot(self, channel: str) -> float:
        """Token bucket per channel: `post_burst` at once, refilled at 1 per second. Returns 0 when
        the post may go out, else the seconds until it could."""
        now = self.clock()
        tokens, updated = self._post_buckets.get(channel, (float(self.post_burst), now))
        tokens = min(float(self.post_burst), tokens + (now - updated))
        if tokens < 1.0:
            self._post_buckets[channel] = (tokens, now)
            return 1.0 - tokens
        self._post_buckets[channel] = (tokens - 1.0, now)
        return 0.0

    def _new_ts(self) -> str:
        return f"{1700000000 + next(self._ts)}.{next(self._ts):06d}"

    def _find(self, channel: str, ts: str) -> dict[str, Any]:
        try:
            return self.message(channel, ts)
        except KeyError:
            raise _ApiError("message_not_found") from None

    def _end_stream(self, channel: str, ts: str) -> None:
        try:
            self.message(channel, ts)["streaming"] = False
        except KeyError:
            pass

    @staticmethod
    def _check_content(params: dict[str, Any], *, required: bool = True, stream: bool = False) -> None:
        text, blocks, md = params.get("text"), params.get("blocks"), params.get("markdown_text")
        if required and not (text or blocks or md):
            raise _ApiError("no_text")
        if text and len(text) > TEXT_LIMIT:
            raise _ApiError("msg_too_long")
        if md and len(md) > STREAM_CHUNK_LIMIT:
            raise _ApiError("msg_too_long")
        if md and (blocks or text) and not stream:  # markdown_text is the whole body on its own
            raise _ApiError("markdown_text_conflict")
        if blocks is not None:
            FakeSlack.check_blocks(blocks)

    @staticmethod
    def check_blocks(blocks: Any, *, stop: bool = False) -> None:
        """Slack's Block Kit rules for one message's `blocks` (see the module docstring); raises
        the error Slack answers. `stop`: the `blocks` of chat.stopStream."""
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise _ApiError("invalid_blocks_format")
        if len(blocks) > MAX_BLOCKS:
            raise _ApiError("msg_blocks_too_many" if stop else "invalid_blocks")
        for block in blocks:
            try:
                parsed = Block.parse(block)
                if parsed is None:  # a block type slack_sdk does not know
                    raise _ApiError("invalid_blocks")
                parsed.validate_json()
                shape = parsed.to_dict()
            except (SlackObjectFormationError, TypeError, ValueError, KeyError, AttributeError):
                raise _ApiError("invalid_blocks") from None
            elements = block.get("elements")
            if block.get("type") in ("context", "actions", "context_actions"):
                if not elements or None in (shape.get("elements") or [None]):
                    raise _ApiError("invalid_blocks")  # empty, or an element type nobody knows
            if block.get("type") == "context_actions":
                # docs.slack.dev/reference/block-kit/blocks/context-actions-block: at most 5
                # feedback_buttons / icon_button elements
                kinds = [e.get("type") if isinstance(e, dict) else None for e in elements or []]
                if len(kinds) > CONTEXT_ACTIONS_ELEMENTS or not set(kinds) <= CONTEXT_ACTION_TYPES:
                    raise _ApiError("invalid_blocks")
            elif "feedback_buttons" in _types_in(block):
                raise _ApiError("invalid_blocks")  # feedback_buttons only go in context_actions
            _check_limits(block)
        if sum(_text_chars(b) for b in blocks) > BLOCKS_TEXT_LIMIT:
            raise _ApiError("msg_blocks_too_long")

    def _require_channel(self, params: dict[str, Any]) -> str:
        channel = params.get("channel") or params.get("channel_id")
        if not channel:
            raise _ApiError("channel_not_found")
        if channel.startswith("CGONE"):
            raise _ApiError("channel_not_found")
        return channel

    # --- Web API methods --------------------------------------------------------------------------

    def _m_auth_test(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{team.id.lower()}.slack.com/",
            "team": f"Team {team.id}",
            "user": "moveworks",
            "team_id": team.id,
            "user_id": team.bot_user_id,
            "bot_id": team.bot_id,
            "enterprise_id": team.enterprise_id,
            "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        if isinstance(params.get("text"), str) and len(params["text"]) > TEXT_LIMIT:
            params = {**params, "text": params["text"][:TEXT_LIMIT]}  # Slack truncates, it does not refuse
        self._check_content(params)
        self._team_blocks(team, params.get("blocks"))
        message = {
            "ts": self._new_ts(),
            "channel": channel,
            "thread_ts": params.get("thread_ts"),
            "text": params.get("text"),
            "blocks": params.get("blocks"),
            "markdown_text": params.get("markdown_text"),
            "metadata": params.get("metadata"),
            "bot_id": team.bot_id,
            "user": team.bot_user_id,
            "team": team.id,
            "streaming": False,
            "edits": 0,
        }
        self._authorship(team, params, message)
        self.messages[channel].append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": dict(message)}

    @staticmethod
    def _authorship(team: Team, params: dict[str, Any], message: dict[str, Any]) -> None:
        """`username` / `icon_url` / `icon_emoji` on a post: kept as asked (`asked_*`), and shown
        (`username`, `icons`) only when the token has `chat:write.customize`; without it Slack
        posts with the app's own name and icon and says nothing (docs.slack.dev/reference/scopes/
        chat.write.customize: the scope is what allows "a customized username and avatar")."""
        asked = {k: params[k] for k in ("username", "icon_url", "icon_emoji") if params.get(k)}
        if not asked:
            return
        message["asked_authorship"] = asked
        if "chat:write.customize" not in team.scopes:
            return
        if asked.get("username"):
            message["username"] = asked["username"]
        icons = {k: v for k, v in asked.items() if k != "username"}
        if icons:
            message["icons"] = icons

    def _m_chat_update(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        message = self._find(channel, params.get("ts", ""))
        if message.get("streaming"):  # end it with chat.stopStream first; the stream stays open
            raise _ApiError("streaming_state_conflict")
        if isinstance(params.get("text"), str) and len(params["text"]) > UPDATE_TEXT_LIMIT:
            raise _ApiError("msg_too_long")
        self._check_content(params)
        self._team_blocks(team, params.get("blocks"))
        if params.get("markdown_text") is not None:
            message["markdown_text"], message["blocks"] = params["markdown_text"], None
        if params.get("blocks") is not None:
            message["blocks"], message["markdown_text"] = params["blocks"], None
        if params.get("text") is not None:
            message["text"] = params["text"]
            if params.get("blocks") is None and params.get("markdown_text") is None:
                message["blocks"] = message["markdown_text"] = None
        message["streaming"] = False
        message["edits"] += 1
        return {"ok": True, "channel": channel, "ts": message["ts"], "text": message.get("text")}

    def _m_chat_delete(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        message = self._find(channel, params.get("ts", ""))
        self.messages[channel].remove(message)
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _m_chat_postEphemeral(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        if not params.get("user"):
            raise _ApiError("user_not_in_channel")
        self._check_content(params)
        self._team_blocks(team, params.get("blocks"))
        ts = self._new_ts()
        self.ephemerals.append({**params, "channel": channel, "message_ts": ts, "team": team.id})
        return {"ok": True, "message_ts": ts}

    def _m_chat_startStream(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        if not params.get("thread_ts"):
            raise _ApiError("invalid_arguments")
        if not channel.startswith("D"):
            if not params.get("recipient_team_id"):
                raise _ApiError("missing_recipient_team_id")
            if not params.get("recipient_user_id"):
                raise _ApiError("missing_recipient_user_id")
        mode = params.get("task_display_mode")
        if mode is not None and mode not in DISPLAY_MODES:
            raise _ApiError("invalid_arguments")
        self._check_content(params, required=False, stream=True)
        pieces = self._check_chunks(team, params)
        message = {
            "ts": self._new_ts(),
            "channel": channel,
            "thread_ts": params["thread_ts"],
            "text": None,
            "blocks": None,
            "markdown_text": params.get("markdown_text") or "",
            "bot_id": team.bot_id,
            "user": team.bot_user_id,
            "team": team.id,
            "streaming": True,
            "stream_calls": 1,
            "edits": 0,
            "recipient": (params.get("recipient_team_id"), params.get("recipient_user_id")),
            "task_display_mode": mode or "timeline",
            "tasks": {},
            "plan_title": None,
        }
        self._apply_chunks(message, pieces)
        self.messages[channel].append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _check_chunks(self, team: Team, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The documented chunk types (node-slack-sdk `packages/types/src/chunk.ts`, slack_sdk
        `models/messages/chunk.py`), else `invalid_chunks`; task and plan chunks only where the
        workspace takes them. The markdown of one call, parameter and chunks, is <= 12,000."""
        chunks = params.get("chunks")
        if chunks is None:
            return []
        if not isinstance(chunks, list):
            raise _ApiError("invalid_chunks")
        markdown = len(params.get("markdown_text") or "")
        for chunk in chunks:
            kind = chunk.get("type") if isinstance(chunk, dict) else None
            if kind == "markdown_text":
                if not isinstance(chunk.get("text"), str):
                    raise _ApiError("invalid_chunks")
                markdown += len(chunk["text"])
            elif kind == "task_update":
                if not (isinstance(chunk.get("id"), str) and chunk["id"] and isinstance(chunk.get("title"), str)
                        and chunk["title"] and chunk.get("status") in TASK_STATUSES):
                    raise _ApiError("invalid_chunks")
            elif kind == "plan_update":
                if not isinstance(chunk.get("title"), str) or not chunk["title"]:
                    raise _ApiError("invalid_chunks")
            elif kind == "blocks":
                self.check_blocks(chunk.get("blocks"), stop=True)
                self._team_blocks(team, chunk.get("blocks"))
            else:
                raise _ApiError("invalid_chunks")
            if kind in ("task_update", "plan_update") and not team.chunks:
                raise _ApiError("invalid_chunks")
        if markdown > STREAM_CHUNK_LIMIT:
            raise _ApiError("msg_too_long")
        return chunks

    @staticmethod
    def _apply_chunks(message: dict[str, Any], chunks: list[dict[str, Any]]) -> None:
        for chunk in chunks:
            kind = chunk["type"]
            if kind == "markdown_text":
                message["markdown_text"] += chunk["text"]
            elif kind == "task_update":
                task = message["tasks"].setdefault(chunk["id"], {})
                task.update({k: v for k, v in chunk.items() if k != "type"})
            elif kind == "plan_update":
                message["plan_title"] = chunk["title"]
            elif kind == "blocks":
                message.setdefault("chunk_blocks", []).extend(chunk["blocks"])

    def _streaming(self, params: dict[str, Any], team: Team, *, append: bool = False) -> dict[str, Any]:
        channel = self._require_channel(params)
        message = self._find(channel, params.get("ts", ""))
        if not message.get("streaming"):
            if append and message.get("stopped_by_user"):
                raise _ApiError("stopped_by_user")
            raise _ApiError("message_not_in_streaming_state")
        self._check_content(params, required=False, stream=True)
        pieces = self._check_chunks(team, params)
        md = params.get("markdown_text") or ""
        added = len(md) + sum(len(c["text"]) for c in pieces if c["type"] == "markdown_text")
        if len(message["markdown_text"]) + added > STREAM_TOTAL_LIMIT:
            raise _ApiError("msg_too_long")
        message["markdown_text"] += md
        self._apply_chunks(message, pieces)
        message["stream_calls"] += 1
        return message

    def _m_chat_appendStream(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(params, team, append=True)
        return {"ok": True, "channel": message["channel"], "ts": message["ts"]}

    def _m_chat_stopStream(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        status = params.get("session_status")
        if status is not None and status not in SESSION_STATUSES:
            raise _ApiError("invalid_arguments")
        if self._find(channel, params.get("ts", "")).get("streaming") and params.get("blocks") is not None:
            self.check_blocks(params["blocks"], stop=True)  # refused before anything changes
            self._team_blocks(team, params["blocks"])
        message = self._streaming({k: v for k, v in params.items() if k != "blocks"}, team)
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        message["streaming"] = False
        # docs.slack.dev/reference/methods/chat.stopStream: `session_status`, default `active`
        session = self.sessions.get((channel, str(message.get("thread_ts") or "")))
        if session is not None:
            self._set_session(session, status or "active", "chat.stopStream")
        return {"ok": True, "channel": message["channel"], "ts": message["ts"], "message": dict(message)}

    def _team_blocks(self, team: Team, blocks: Any) -> None:
        """What this workspace refuses of blocks that are valid in general."""
        if blocks and not team.context_actions and "context_actions" in _types_in(blocks):
            raise _ApiError("invalid_blocks")

    def _m_assistant_threads_setStatus(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        if not team.scopes & {"chat:write", "assistant:write"}:  # changelog 2026-03-05
            raise _ApiError("missing_scope")
        if not params.get("channel_id") or not params.get("thread_ts"):
            raise _ApiError("invalid_arguments")
        self.statuses.append({**params, "team": team.id, "at": self.clock()})
        return {"ok": True}

    def _m_assistant_threads_setSuggestedPrompts(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        """docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts: `assistant:write`,
        `channel_id` and 1-4 prompts of {title, message}; under agent_view a `thread_ts` makes
        the call fail silently (ok, and nothing changes)."""
        _scope(team, "assistant:write")
        channel = params.get("channel_id")
        if not channel:
            raise _ApiError("channel_not_found")
        prompts = params.get("prompts")
        if isinstance(prompts, str):
            try:
                prompts = json.loads(prompts)
            except ValueError:
                raise _ApiError("invalid_arguments") from None
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS or not all(
            isinstance(p, dict) and isinstance(p.get("title"), str) and p["title"]
            and isinstance(p.get("message"), str) and p["message"] for p in prompts
        ):
            raise _ApiError("invalid_arguments")
        thread_ts = params.get("thread_ts") or None
        if thread_ts and team.agent_view:
            return {"ok": True}  # the documented silent failure
        self.prompts[(channel, thread_ts)] = {"prompts": prompts, "title": params.get("title"), "team": team.id}
        return {"ok": True}

    # --- agent sessions (docs.slack.dev/ai/agent-sessions, reference/methods/agents.sessions.*) ----

    def _m_agents_sessions_setStatus(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        _scope(team, "chat:write")
        if not team.agent:
            raise _ApiError("not_authorized")  # only apps declared as agents have sessions
        channel = params.get("channel_id")
        if not channel:
            raise _ApiError("channel_not_found")
        status = params.get("status")
        if status not in SESSION_STATUSES:
            raise _ApiError("invalid_status")
        thread_ts = params.get("thread_ts")
        if not thread_ts:
            raise _ApiError("thread_ts_required")  # DMs and channels hold thread sessions
        title = params.get("title")
        if title is not None and (not isinstance(title, str) or len(title) > SESSION_TITLE_LIMIT):
            raise _ApiError("invalid_arguments")
        key = (channel, str(thread_ts))
        session = self.sessions.get(key)
        if session is None:  # created now: title and initiator count only here
            session = self.sessions[key] = {
                "channel": channel, "thread_ts": str(thread_ts), "team": team.id, "status": None,
                "title": title, "initiator": params.get("initiator_user_id"),
                "stoppable": "agent_session_stopped" in team.events, "history": [],
            }
        self._set_session(session, status, "agents.sessions.setStatus")
        response: dict[str, Any] = {"ok": True, "status": status, "agent_status": status, "title": session["title"]}
        if not session["stoppable"]:
            response["warning"] = "missing_agent_session_stopped_event_subscription"
        return response

    def _set_session(self, session: dict[str, Any], status: str, via: str) -> None:
        session["status"] = status
        session["history"].append((status, via, self.clock()))

    def session(self, channel: str, thread_ts: str) -> dict[str, Any] | None:
        return self.sessions.get((channel, thread_ts))

    def press_stop(self, channel: str, thread_ts: str, *, user: str = "U1") -> dict[str, Any]:
        """A person presses the native Stop button of the thread's session (shown only while it is
        `processing`, and only when the app subscribes to `agent_session_stopped`): Slack stops
        the thread's open streams and sends the event, which is returned for the test to deliver
        (docs.slack.dev/reference/events/agent_session_stopped). The session's status does not
        change: the app must leave `processing` itself."""
        session = self.sessions.get((channel, thread_ts))
        if session is None or session["status"] != "processing":
            raise AssertionError(f"no Stop button in {channel}/{thread_ts}: the session is not processing")
        if not session["stoppable"]:
            raise AssertionError("no Stop button: the app does not subscribe to agent_session_stopped")
        stopped = []
        for message in self.messages.get(channel, []):
            if message.get("thread_ts") == thread_ts and message.get("streaming"):
                message["streaming"] = False
                message["stopped_by_user"] = True
                stopped.append(message["ts"])
        return {"type": "agent_session_stopped", "channel": channel, "user": user, "thread_ts": thread_ts,
                "streaming_message_ts": stopped, "event_ts": f"{time.time():.6f}"}

    # --- App Home ------------------------------------------------------------------------------

    def home_opened(self, user: str, tab: str = "home", *, channel: str | None = None) -> dict[str, Any]:
        """The `app_home_opened` event of `user` opening the app's Home or Messages tab."""
        event: dict[str, Any] = {"type": "app_home_opened", "user": user, "channel": channel or "D" + user.lstrip("UW"),
                                 "tab": tab, "event_ts": f"{time.time():.6f}"}
        if tab == "home" and user in self.homes:
            event["view"] = self._public(self.homes[user])
        return event

    def _m_views_publish(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user_id")
        if not isinstance(user, str) or not user:
            raise _ApiError("invalid_arguments", ["[ERROR] missing required field: user_id"])
        view = params.get("view")
        self.check_view(view, surface="home")
        assert isinstance(view, dict)
        old = self.homes.get(user)
        if params.get("hash") and old is not None and params["hash"] != old["hash"]:
            raise _ApiError("hash_conflict")
        stored = self._store_view(team, view, user=user, old=old)
        self.homes[user] = stored
        return {"ok": True, "view": self._public(stored)}

    def home(self, user: str) -> dict[str, Any] | None:
        return self.homes.get(user)

    def home_action(self, user: str, action_id: str, *, team: str = "T1") -> dict[str, Any]:
        """The block_actions payload of pressing a button (by action_id) on `user`'s Home tab."""
        view = self.homes[user]
        for block in view.get("blocks") or []:
            for element in list(block.get("elements") or []) + ([block["accessory"]] if block.get("accessory") else []):
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    action = {"action_id": action_id, "block_id": block.get("block_id") or "b",
                              "type": element["type"], "value": element.get("value"),
                              "action_ts": f"{time.time():.6f}"}
                    return {"type": "block_actions", "team": {"id": team}, "user": self._actor(user, team),
                            "api_app_id": "A1", "token": "unused",
                            "trigger_id": self.mint_trigger(user=user, team=team),
                            "container": {"type": "view", "view_id": view["id"]},
                            "view": self._public(view), "actions": [action]}
        raise KeyError(f"no element {action_id} on {user}'s Home tab")

    # --- threads and people's messages ---------------------------------------------------------

    def post_as_user(self, channel: str, text: str, *, user: str = "U1", thread_ts: str | None = None,
                     team: str = "T1", mention: bool = False) -> dict[str, Any]:
        """A person's message, kept in the channel's history (conversations.replies sees it);
        returns the event Slack sends for it (`app_mention` when `mention`)."""
        ts = self._new_ts()
        message: dict[str, Any] = {"ts": ts, "channel": channel, "thread_ts": thread_ts, "text": text, "user": user,
                                   "team": team, "type": "message"}
        known = self.users.get(user)
        if known is not None:
            message["user_profile"] = {"display_name": known.name, "real_name": known.real_name}
        self.messages[channel].append(message)
        event = {"type": "app_mention" if mention else "message", "channel": channel, "user": user, "text": text,
                 "ts": ts, "team": team}
        if not mention:
            event["channel_type"] = {"D": "im", "G": "group"}.get(channel[:1], "channel")
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def _m_conversations_replies(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        """docs.slack.dev/reference/methods/conversations.replies: the history scope of the channel's
        type, the parent first then its replies oldest first, `limit`/`cursor` pages,
        `latest`/`oldest` bounds (`inclusive`)."""
        channel = self._require_channel(params)
        _scope(team, HISTORY_SCOPES.get(channel[:1], "channels:history"))
        ts = str(params.get("ts") or "")
        if not ts:
            raise _ApiError("invalid_arguments")
        thread = [m for m in self.messages.get(channel, []) if m["ts"] == ts or m.get("thread_ts") == ts]
        if not any(m["ts"] == ts for m in thread):
            raise _ApiError("thread_not_found")
        thread.sort(key=lambda m: float(m["ts"]))
        inclusive = str(params.get("inclusive") or "").lower() in ("1", "true")
        latest, oldest = params.get("latest"), params.get("oldest")
        if latest:
            thread = [m for m in thread if float(m["ts"]) < float(latest) or (inclusive and m["ts"] == latest)]
        if oldest:
            thread = [m for m in thread if float(m["ts"]) > float(oldest) or (inclusive and m["ts"] == oldest)]
        try:
            limit = int(params.get("limit") or 1000)
            start = int(params.get("cursor") or 0)
        except ValueError:
            raise _ApiError("invalid_cursor") from None
        limit = max(1, min(limit, 1000))
        page = thread[start:start + limit]
        more = start + limit < len(thread)
        return {"ok": True, "messages": [self._history_json(m) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _history_json(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message as conversations.replies shows it (a stream's text is its markdown)."""
        out: dict[str, Any] = {"type": "message", "ts": message["ts"], "user": message.get("user"),
                               "text": message.get("text") or message.get("markdown_text") or ""}
        for key in ("thread_ts", "bot_id", "blocks", "user_profile", "username"):
            if message.get(key):
                out[key] = message[key]
        if message.get("bot_id"):
            out["bot_profile"] = {"id": message["bot_id"], "name": message.get("username") or "Moveworks"}
        return out

    # --- slash commands ------------------------------------------------------------------------

    def command_payload(self, text: str, *, user: str = "U1", channel: str = "C1", team: str = "T1",
                        command: str = "/moveworks") -> dict[str, str]:
        """The form fields Slack POSTs for a slash command (docs.slack.dev/interactivity/
        implementing-slash-commands), with a fresh trigger_id."""
        known = self.users.get(user)
        return {"token": "unused", "team_id": team, "team_domain": team.lower(), "channel_id": channel,
                "channel_name": channel.lower(), "user_id": user, "user_name": known.name if known else user,
                "command": command, "text": text, "api_app_id": "A1", "is_enterprise_install": "false",
                "response_url": f"http://127.0.0.1:{self.port}/commands/{next(self._ids)}",
                "trigger_id": self.mint_trigger(user=user, team=team)}

    def _user_json(self, user: FakeUser) -> dict[str, Any]:
        return {
            "id": user.id,
            "team_id": user.team,
            "name": user.name,
            "real_name": user.real_name,
            "is_bot": user.is_bot,
            "is_admin": user.is_admin or user.is_owner,  # owners are admins too
            "is_owner": user.is_owner,
            "is_primary_owner": False,
            "deleted": False,
            "profile": {
                "email": user.email,
                "display_name": user.name,
                "real_name": user.real_name,
            },
        }

    def _m_users_info(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(params.get("user", ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"ok": True, "user": self._user_json(user)}

    def _m_users_lookupByEmail(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        email = (params.get("email") or "").lower()
        for user in self.users.values():
            if user.email and user.email.lower() == email and user.team == team.id:
                return {"ok": True, "user": self._user_json(user)}
        raise _ApiError("users_not_found")

    def _m_conversations_open(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        users = params.get("users") or ""
        if isinstance(users, list):
            users = ",".join(users)
        if not users or "," in users:
            raise _ApiError("invalid_arguments" if not users else "not_supported")
        if users not in self.users:
            raise _ApiError("user_not_found")
        return {"ok": True, "channel": {"id": "D" + users.lstrip("UW")}}

    # --- modals: trigger ids, views.open / views.update, and Slack's side of interactions ----------

    def mint_trigger(self, *, user: str = "U1", team: str = "T1", age: float = 0.0) -> str:
        """A trigger_id as Slack puts in an interaction payload: valid for `trigger_ttl` seconds
        (3) from the interaction and for one views.open. `age`: the interaction was that long ago."""
        n = next(self._ids)
        trigger = f"{1700000000 + n}.{n:010d}.{uuid.uuid4().hex[:32]}"
        self._triggers[trigger] = {"at": self.clock() - age, "used": False, "user": user, "team": team}
        return trigger

    def _take_trigger(self, trigger: Any) -> dict[str, Any]:
        """views.open's documented trigger errors: unknown (`invalid_trigger_id`), older than 3
        seconds (`expired_trigger_id`), used before (`exchanged_trigger_id`)."""
        if not isinstance(trigger, str) or not trigger:
            raise _ApiError("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
        known = self._triggers.get(trigger)
        if known is None:
            raise _ApiError("invalid_trigger_id")
        if self.clock() - known["at"] > self.trigger_ttl:
            raise _ApiError("expired_trigger_id")
        if known["used"]:
            raise _ApiError("exchanged_trigger_id")
        known["used"] = True
        return known

    @staticmethod
    def check_view(view: Any, *, surface: str = "modal") -> None:
        """Slack's rules for a modal (or, `surface="home"`, an App Home tab) view payload; raises what
        views.open/views.update/views.publish answer (`invalid_arguments` with the reason in
        `response_metadata.messages`, `view_too_large`)."""

        def bad(reason: str) -> _ApiError:
            return _ApiError("invalid_arguments", [f"[ERROR] {reason}"])

        if not isinstance(view, dict):
            raise bad("view must be a JSON object")
        if len(json.dumps(view)) > VIEW_SIZE_LIMIT:
            raise _ApiError("view_too_large")
        if view.get("type") != surface:
            raise bad(f"type must be {surface}")
        for key, required in (("title", surface == "modal"), ("submit", False), ("close", False)):
            text = view.get(key)
            if text is None and not required:
                continue
            if not isinstance(text, dict) or text.get("type") != "plain_text" or not isinstance(text.get("text"), str) \
                    or not 1 <= len(text["text"]) <= VIEW_TITLE_LIMIT:
                raise bad(f"{key} must be plain_text of 1-{VIEW_TITLE_LIMIT} characters")
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= VIEW_MAX_BLOCKS:
            raise bad(f"blocks must hold 1-{VIEW_MAX_BLOCKS} blocks")
        metadata = view.get("private_metadata")
        if metadata is not None and (not isinstance(metadata, str) or len(metadata) > PRIVATE_METADATA_LIMIT):
            raise bad(f"private_metadata must be a string of at most {PRIVATE_METADATA_LIMIT} characters")
        for key in ("callback_id", "external_id"):
            if isinstance(view.get(key), str) and len(view[key]) > VIEW_ID_LIMIT:
                raise bad(f"{key} must be at most {VIEW_ID_LIMIT} characters")
        try:
            View(**{k: v for k, v in view.items() if k != "state"}).to_dict()
        except (SlackObjectFormationError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise bad(str(exc)) from None
        seen: set[str] = set()
        inputs = 0
        for i, block in enumerate(blocks):
            where = f"[json-pointer:/view/blocks/{i}]"
            if not isinstance(block, dict):
                raise bad(f"a block must be an object {where}")
            kind = block.get("type")
            if kind == "markdown":  # the markdown block is for messages only
                raise bad(f"markdown blocks are not supported in modals {where}")
            try:
                parsed = Block.parse(block)
                if parsed is None:
                    raise bad(f"unknown block type {kind} {where}")
                parsed.validate_json()
                shape = parsed.to_dict()
            except (SlackObjectFormationError, TypeError, ValueError, KeyError, AttributeError) as exc:
                raise bad(f"{exc} {where}") from None
            try:
                _check_limits(block)
            except _ApiError:
                raise bad(f"a text, value, url or action_id is past its limit {where}") from None
            known = shape.get("elements") or [None]
            if kind in ("context", "actions") and (not block.get("elements") or None in known):
                raise bad(f"{kind} needs known elements {where}")
            block_id = block.get("block_id")
            if block_id is not None:
                if not isinstance(block_id, str) or not block_id or len(block_id) > VIEW_ID_LIMIT:
                    raise bad(f"block_id must be 1-{VIEW_ID_LIMIT} characters {where}")
                if block_id in seen:
                    raise bad(f"block_id {block_id} is used twice {where}")
                seen.add(block_id)
            if kind == "input":
                inputs += 1
                label, element = block.get("label"), block.get("element")
                if not isinstance(label, dict) or label.get("type") != "plain_text" \
                        or not 1 <= len(str(label.get("text") or "")) <= INPUT_LABEL_LIMIT:
                    raise bad(f"an input block needs a plain_text label of 1-{INPUT_LABEL_LIMIT} characters {where}")
                if not isinstance(element, dict) or element.get("type") not in INPUT_ELEMENTS:
                    raise bad(f"an input block needs an input element {where}")
                _check_element(element, where)
            elif "file_input" in json.dumps(block):
                raise bad(f"file_input only goes in an input block {where}")
            accessory = block.get("accessory")
            if isinstance(accessory, dict):
                _check_element(accessory, where)
        if inputs and view.get("submit") is None and surface == "modal":
            raise bad("submit is required when the view has an input block")

    def _store_view(self, team: Team, view: dict[str, Any], *, user: str, old: dict[str, Any] | None) -> dict[str, Any]:
        n = next(self._ids)
        view_id = old["id"] if old else f"V{n:08d}"
        state: dict[str, Any] = {"values": {}}
        if old:  # Slack keeps what was entered in inputs whose block_id and action_id stay
            kept = {(b.get("block_id"), (b.get("element") or {}).get("action_id"))
                    for b in view.get("blocks") or [] if b.get("type") == "input"}
            for block_id, actions in (old.get("state") or {}).get("values", {}).items():
                for action_id, value in actions.items():
                    if (block_id, action_id) in kept:
                        state["values"].setdefault(block_id, {})[action_id] = value
        stored = {
            **view,
            "id": view_id,
            "team_id": team.id,
            "state": state,
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "private_metadata": view.get("private_metadata") or "",
            "callback_id": view.get("callback_id") or "",
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": "A1",
            "bot_id": team.bot_id,
            "user": user,
            "closed": False,
            "errors": {},
            "versions": (old or {}).get("versions", 0) + 1,
        }
        self.views[view_id] = stored
        return stored

    @staticmethod
    def _public(view: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in view.items() if k not in ("user", "closed", "errors", "versions", "submitting")}

    def _m_views_open(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        trigger = self._take_trigger(params.get("trigger_id"))
        view = params.get("view")
        self.check_view(view)
        assert isinstance(view, dict)
        stored = self._store_view(team, view, user=trigger["user"], old=None)
        return {"ok": True, "view": self._public(stored)}

    def _m_views_update(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        view_id, external = params.get("view_id"), params.get("external_id")
        if not view_id and not external:
            raise _ApiError("invalid_arguments", ["[ERROR] view_id or external_id is required"])
        old = self.views.get(view_id or "") if view_id else next(
            (v for v in self.views.values() if v.get("external_id") == external), None)
        if old is None or old["closed"] or old["team_id"] != team.id:
            raise _ApiError("not_found")
        if params.get("hash") and params["hash"] != old["hash"]:
            raise _ApiError("hash_conflict")
        if old.get("submitting"):
            # Slack has not had the app's answer to this view's submission yet: whichever lands
            # last wins, so an update sent now may be undone by that answer.
            self.view_response_problems.append(f"views.update of {old['id']} before its submission was answered")
        view = params.get("view")
        self.check_view(view)
        assert isinstance(view, dict)
        stored = self._store_view(team, view, user=old["user"], old=old)
        return {"ok": True, "view": self._public(stored)}

    def view(self, view_id: str) -> dict[str, Any]:
        return self.views[view_id]

    def open_views(self, user: str | None = None) -> list[dict[str, Any]]:
        return [v for v in self.views.values() if not v["closed"] and (user is None or v["user"] == user)]

    @staticmethod
    def view_text(view: dict[str, Any]) -> str:
        """Everything a person reads in a modal: title, section/header/context texts, labels."""
        parts = [str((view.get("title") or {}).get("text") or "")]
        for block in view.get("blocks") or []:
            for key in ("text", "label", "hint"):
                if isinstance(block.get(key), dict):
                    parts.append(str(block[key].get("text") or ""))
            for element in block.get("elements") or []:
                if isinstance(element, dict) and isinstance(element.get("text"), str):
                    parts.append(element["text"])
        return "\n".join(p for p in parts if p)

    # --- a person using a modal (what the Slack client does) ---------------------------------------

    def fill(self, view_id: str, entries: dict[str, Any]) -> None:
        """Type or pick into a modal's inputs, by block_id: a str (text input; datepicker
        `YYYY-MM-DD`; a select's option *value*), a list (multi select values; file ids for a
        file_input), an int (datetimepicker, unix seconds), a bool (checkboxes: tick or untick
        all). The view's state then holds what Slack would send."""
        view = self.views[view_id]
        blocks = {b.get("block_id"): b for b in view.get("blocks") or [] if b.get("type") == "input"}
        for block_id, value in entries.items():
            block = blocks.get(block_id)
            if block is None:
                raise KeyError(f"no input block {block_id} in view {view_id}")
            element = block["element"]
            view["state"]["values"].setdefault(block_id, {})[element["action_id"]] = self._entry(element, value)

    def _entry(self, element: dict[str, Any], value: Any) -> dict[str, Any]:
        kind = element["type"]
        options = _options_of(element)
        if kind in ("plain_text_input", "email_text_input", "url_text_input", "number_input"):
            return {"type": kind, "value": value}
        if kind == "datepicker":
            return {"type": kind, "selected_date": value}
        if kind == "datetimepicker":
            return {"type": kind, "selected_date_time": value}
        if kind == "checkboxes":
            return {"type": kind, "selected_options": list(options) if value else []}
        if kind == "static_select":
            picked = next((o for o in options if o["value"] == value), None)
            if value is not None and picked is None:
                raise KeyError(f"no option {value!r}")
            return {"type": kind, "selected_option": picked}
        if kind == "multi_static_select":
            chosen = [o for o in options if o["value"] in (value or [])]
            if len(chosen) != len(value or []):
                raise KeyError(f"not all of {value!r} are options")
            return {"type": kind, "selected_options": chosen}
        if kind == "file_input":
            return {"type": kind, "files": [self.files[f]["file"] for f in value or []]}
        raise KeyError(f"the fake cannot fill a {kind}")

    def _state(self, view: dict[str, Any]) -> dict[str, Any]:
        """The state Slack sends: every input, with what was entered or its initial value."""
        values: dict[str, Any] = {}
        for block in view.get("blocks") or []:
            if block.get("type") != "input":
                continue
            element = block["element"]
            entered = (view["state"]["values"].get(block["block_id"]) or {}).get(element["action_id"])
            values.setdefault(block["block_id"], {})[element["action_id"]] = entered or _initial(element)
        return {"values": values}

    def view_payload(self, view_id: str) -> dict[str, Any]:
        view = self.views[view_id]
        return {**self._public(view), "state": self._state(view)}

    def field_changed(self, view_id: str, block_id: str, *, user: str = "U1", team: str = "T1") -> dict[str, Any]:
        """The block_actions payload Slack sends when an input with `dispatch_action` changes."""
        view = self.views[view_id]
        block = next(b for b in view["blocks"] if b.get("block_id") == block_id)
        if not block.get("dispatch_action"):
            raise AssertionError(f"{block_id} has no dispatch_action: Slack sends nothing when it changes")
        state = self._state(view)
        element = block["element"]
        action = {**state["values"][block_id][element["action_id"]], "action_id": element["action_id"],
                  "block_id": block_id, "action_ts": f"{time.time():.6f}"}
        return {
            "type": "block_actions", "team": {"id": team}, "user": self._actor(user, team), "api_app_id": "A1",
            "token": "unused", "trigger_id": self.mint_trigger(user=user, team=team),
            "container": {"type": "view", "view_id": view_id},
            "view": {**self._public(view), "state": state}, "actions": [action],
        }

    def submission(
        self, view_id: str, *, user: str = "U1", team: str = "T1", client_checks: bool = True
    ) -> dict[str, Any]:
        """The view_submission payload of pressing Submit. Like the Slack client, refuses (raises
        `MissingRequired`) while an input that is not `optional` is empty, unless `client_checks`
        is off (a payload as a script or an old client could send it)."""
        view = self.views[view_id]
        if view["closed"]:
            raise AssertionError(f"view {view_id} is closed")
        state = self._state(view)
        if client_checks:
            missing = [b["block_id"] for b in view["blocks"] if b.get("type") == "input" and not b.get("optional")
                       and _empty(state["values"][b["block_id"]][b["element"]["action_id"]])]
            if missing:
                raise MissingRequired(missing)
        view["submitting"] = True
        return {
            "type": "view_submission", "team": {"id": team}, "user": self._actor(user, team), "api_app_id": "A1",
            "token": "unused", "trigger_id": self.mint_trigger(user=user, team=team),
            "view": {**self._public(view), "state": state}, "response_urls": [],
        }

    def closing(self, view_id: str, *, user: str = "U1", team: str = "T1") -> dict[str, Any] | None:
        """A person closes (cancels) a modal: Slack sends `view_closed` only when the view asked
        for it with `notify_on_close` (docs.slack.dev/reference/interaction-payloads/view-interactions-payload);
        returns that payload, or None when Slack sends nothing."""
        view = self.views[view_id]
        view["closed"] = True
        if not view.get("notify_on_close"):
            return None
        return {"type": "view_closed", "team": {"id": team}, "user": self._actor(user, team), "api_app_id": "A1",
                "token": "unused", "view": {**self._public(view), "state": self._state(view)}, "is_cleared": False}

    def answer_submission(self, view_id: str, status: int, body: str, elapsed: float) -> None:
        """What Slack does with the app's HTTP response to a view_submission: nothing after 3
        seconds (the person sees an error and the modal stays); an empty 200 closes the view;
        `response_action` `clear` closes it, `update` replaces it (validated like views.update),
        `errors` shows messages under inputs (only input block ids are valid keys)."""
        view = self.views[view_id]
        view["submitting"] = False
        if elapsed > 3.0:
            self.view_response_problems.append(f"answered after {elapsed:.1f}s")
            return
        if status != 200:
            self.view_response_problems.append(f"HTTP {status}")
            return
        data = json.loads(body) if body.strip() else {}
        action = data.get("response_action") if isinstance(data, dict) else None
        if action in (None, "clear"):
            view["closed"] = True
            return
        if action == "update":
            try:
                self.check_view(data.get("view"))
            except _ApiError as exc:
                self.view_response_problems.append(f"update refused: {exc.error} {exc.messages}")
                return
            team = self.teams[view["team_id"]]
            self._store_view(team, data["view"], user=view["user"], old=view)
            return
        if action == "errors":
            errors = data.get("errors")
            inputs = {b.get("block_id") for b in view["blocks"] if b.get("type") == "input"}
            if not isinstance(errors, dict) or not errors or not set(errors) <= inputs:
                self.view_response_problems.append(f"errors not on input blocks: {errors!r}")
                return
            view["errors"] = errors
            return
        self.view_response_problems.append(f"unknown response_action {action!r}")

    def message_action(self, message: dict[str, Any], channel: str, action_id: str, *, user: str = "U1",
                       team: str = "T1", age: float = 0.0) -> dict[str, Any]:
        """The block_actions payload of clicking an element (by action_id) of a message, with
        a fresh trigger_id (`age`: the click was that long ago). Buttons send their value; a
        static select needs `pick` (see `message_pick`)."""
        for block in message.get("blocks") or []:
            elements = list(block.get("elements") or []) + ([block["accessory"]] if block.get("accessory") else [])
            for element in elements:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    action = {"action_id": action_id, "block_id": block.get("block_id") or "b", "type": element["type"],
                              "action_ts": f"{time.time():.6f}"}
                    if "value" in element:
                        action["value"] = element["value"]
                    return self._message_payload(message, channel, action, user=user, team=team, age=age)
        raise KeyError(f"no element {action_id} in the message")

    def feedback_click(self, message: dict[str, Any], channel: str, *, helpful: bool, user: str = "U1",
                       team: str = "T1", age: float = 0.0) -> dict[str, Any]:
        """The block_actions payload of clicking 👍 (`helpful`) or 👎 under a message: the native
        `feedback_buttons` (the clicked button's value), or the plain buttons of a workspace
        without `context_actions` (action ids ending `_yes` / `_no`)."""
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if not isinstance(element, dict):
                    continue
                if element.get("type") == "feedback_buttons":
                    button = element["positive_button" if helpful else "negative_button"]
                    action = {"action_id": element["action_id"], "block_id": block.get("block_id") or "b",
                              "type": "feedback_buttons", "value": button["value"],
                              "action_ts": f"{time.time():.6f}"}
                    return self._message_payload(message, channel, action, user=user, team=team, age=age)
                action_id = str(element.get("action_id") or "")
                if element.get("type") == "button" and action_id.endswith("_yes" if helpful else "_no") \
                        and action_id.startswith("mw_feedback"):
                    return self.message_action(message, channel, action_id, user=user, team=team, age=age)
        raise KeyError("no feedback buttons under the message")

    def message_pick(self, message: dict[str, Any], channel: str, label: str, *, user: str = "U1",
                     team: str = "T1", age: float = 0.0) -> dict[str, Any]:
        """Picking the option shown as `label` in a select of a message."""
        for block in message.get("blocks") or []:
            accessory = block.get("accessory") or {}
            for option in _options_of(accessory):
                if option["text"]["text"] == label:
                    action = {"action_id": accessory["action_id"], "block_id": block.get("block_id"),
                              "type": accessory["type"], "selected_option": option,
                              "action_ts": f"{time.time():.6f}"}
                    return self._message_payload(message, channel, action, user=user, team=team, age=age)
        raise KeyError(f"no option {label!r} in the message")

    def _message_payload(self, message: dict[str, Any], channel: str, action: dict[str, Any], *, user: str,
                         team: str, age: float) -> dict[str, Any]:
        return {
            "type": "block_actions", "team": {"id": team}, "user": self._actor(user, team), "api_app_id": "A1",
            "token": "unused", "trigger_id": self.mint_trigger(user=user, team=team, age=age),
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
            "channel": {"id": channel},
            "message": {"ts": message["ts"], "thread_ts": message.get("thread_ts"), "type": "message",
                        "blocks": message.get("blocks")},
            "actions": [action],
        }

    def _actor(self, user: str, team: str) -> dict[str, Any]:
        known = self.users.get(user)
        return {"id": user, "username": known.name if known else user, "name": known.name if known else user,
                "team_id": team}

    # --- files -------------------------------------------------------------------------------------

    def add_file(self, name: str, content: bytes, mimetype: str = "image/png", *, team: str = "T1",
                 user: str = "U1") -> dict[str, Any]:
        """A file someone shared in Slack; returns the file object events and file_input carry."""
        file_id = f"F{next(self._ids):08d}"
        base = f"http://127.0.0.1:{self.port}/files-pri/{team}-{file_id}"
        file = {
            "id": file_id, "created": int(time.time()), "timestamp": int(time.time()), "name": name, "title": name,
            "mimetype": mimetype, "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "user": user, "user_team": team, "mode": "hosted", "is_external": False, "size": len(content),
            "url_private": f"{base}/{name}", "url_private_download": f"{base}/download/{name}",
        }
        self.files[file_id] = {"file": file, "content": content, "team": team}
        return file

    async def _file(self, request: web.Request) -> web.Response:
        """A file's `url_private(_download)`: its bytes for a bot token of its workspace that holds
        `files:read`; anything else gets Slack's sign-in page, as HTML with status 200
        (docs.slack.dev/messaging/working-with-files: "requires an Authorization header")."""
        team_id, _, file_id = request.match_info["key"].partition("-")
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        owner = self.tokens.get(token)
        stored = self.files.get(file_id)
        allowed = stored is not None and owner == team_id == stored["team"] \
            and "files:read" in self.teams[owner].scopes
        self.downloads.append({"file": file_id, "authorized": allowed})
        if not allowed or stored is None:
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        return web.Response(body=stored["content"], content_type=stored["file"]["mimetype"])

    def _oauth_access(self, params: dict[str, Any]) -> dict[str, Any]:
        data = self.oauth_codes.pop(params.get("code", ""), None)
        if data is None:
            return {"ok": False, "error": "invalid_code"}
        return {"ok": True, **data}

    def add_oauth_code(self, code: str, team_id: str, bot_token: str, *, bot_user_id: str = "UBOT") -> None:
        """Make `oauth.v2.access?code=...` install the app into `team_id` with `bot_token`."""
        if team_id not in self.teams:
            self.add_team(team_id, token=bot_token, bot_user_id=bot_user_id)
        self.tokens[bot_token] = team_id
        self.oauth_codes[code] = {
            "app_id": "A1",
            "authed_user": {"id": "UADMIN"},
            "scope": "chat:write",
            "token_type": "bot",
            "access_token": bot_token,
            "bot_user_id": bot_user_id,
            "team": {"id": team_id, "name": f"Team {team_id}"},
            "enterprise": None,
            "is_enterprise_install": False,
        }


def _types_in(value: Any) -> set[str]:
    """Every `type` named anywhere inside a block."""
    if isinstance(value, dict):
        found = {value["type"]} if isinstance(value.get("type"), str) else set()
        for item in value.values():
            found |= _types_in(item)
        return found
    if isinstance(value, list):
        return set().union(*(_types_in(v) for v in value)) if value else set()
    return set()


def _text_chars(value: Any) -> int:
    """Text characters of a block: every `text` string in it (markdown, text objects, labels)."""
    if isinstance(value, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else _text_chars(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0


def _check_limits(value: Any) -> None:
    """The limits slack_sdk's models do not check, anywhere inside a block."""
    if isinstance(value, list):
        for item in value:
            _check_limits(item)
        return
    if not isinstance(value, dict):
        return
    if value.get("type") in ("mrkdwn", "plain_text"):
        text = value.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= TEXT_OBJECT_LIMIT:
            raise _ApiError("invalid_blocks")
    for key, limit in (("value", BUTTON_VALUE_LIMIT), ("url", URL_LIMIT), ("action_id", ACTION_ID_LIMIT)):
        if isinstance(value.get(key), str) and len(value[key]) > limit:
            raise _ApiError("invalid_blocks")
    if "options" in value or "option_groups" in value or "initial_option" in value:
        _check_options(value)
    for item in value.values():
        if isinstance(item, dict | list):
            _check_limits(item)


def _check_options(element: dict[str, Any]) -> None:
    """Option objects (docs.slack.dev/reference/block-kit/composition-objects/option-object): text
    at most 75 characters, value at most 150; a select or option group holds at most 100 options
    and 100 groups, a group label at most 75. slack_sdk's models do not check options."""
    groups = element.get("option_groups")
    if groups is not None:
        if not isinstance(groups, list) or not 1 <= len(groups) <= MAX_OPTIONS:
            raise _ApiError("invalid_blocks")
        for group in groups:
            label = (group.get("label") or {}).get("text") if isinstance(group, dict) else None
            if not isinstance(label, str) or not 1 <= len(label) <= OPTION_TEXT_LIMIT:
                raise _ApiError("invalid_blocks")
    options = element.get("options")
    if options is not None and (not isinstance(options, list) or len(options) > MAX_OPTIONS):
        raise _ApiError("invalid_blocks")
    chosen = list(element.get("initial_options") or []) + [element.get("initial_option") or {}][:1]
    for option in _options_of(element) + [o for o in chosen if o]:
        text = (option.get("text") or {}).get("text") if isinstance(option, dict) else None
        value = option.get("value") if isinstance(option, dict) else None
        if not isinstance(text, str) or not 1 <= len(text) <= OPTION_TEXT_LIMIT:
            raise _ApiError("invalid_blocks")
        if not isinstance(value, str) or not 1 <= len(value) <= OPTION_VALUE_LIMIT:
            raise _ApiError("invalid_blocks")


def _options_of(element: dict[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    return options


def _initial(element: dict[str, Any]) -> dict[str, Any]:
    """An input's state before anyone touched it: its initial value, as Slack reports it."""
    kind = element["type"]
    if kind in ("plain_text_input", "email_text_input", "url_text_input", "number_input"):
        return {"type": kind, "value": element.get("initial_value")}
    if kind == "datepicker":
        return {"type": kind, "selected_date": element.get("initial_date")}
    if kind == "datetimepicker":
        return {"type": kind, "selected_date_time": element.get("initial_date_time")}
    if kind in ("checkboxes", "multi_static_select"):
        return {"type": kind, "selected_options": list(element.get("initial_options") or [])}
    if kind == "static_select":
        return {"type": kind, "selected_option": element.get("initial_option")}
    if kind == "file_input":
        return {"type": kind, "files": []}
    return {"type": kind}


def _empty(entry: dict[str, Any]) -> bool:
    return not any(entry.get(k) for k in ("value", "selected_date", "selected_date_time", "selected_option",
                                          "selected_options", "files"))


def _check_element(element: dict[str, Any], where: str) -> None:
    """Element rules slack_sdk's models leave out: a select's initial option(s) must be among its
    options, checkboxes hold at most 10 options."""
    options = _options_of(element)
    if element.get("type") == "checkboxes" and len(options) > CHECKBOX_OPTIONS:
        raise _ApiError("invalid_arguments", [f"[ERROR] checkboxes hold at most {CHECKBOX_OPTIONS} options {where}"])
    initial = list(element.get("initial_options") or [])
    if element.get("initial_option"):
        initial.append(element["initial_option"])
    for option in initial:
        if not any(o.get("value") == option.get("value") and o.get("text") == option.get("text") for o in options):
            raise _ApiError("invalid_arguments", [f"[ERROR] an initial option is not one of the options {where}"])


def _scope(team: Team, scope: str) -> None:
    if scope not in team.scopes:
        raise _ApiError("missing_scope")


class MissingRequired(Exception):
    """The Slack client would not submit: these required inputs are empty."""

    def __init__(self, block_ids: list[str]) -> None:
        super().__init__(", ".join(block_ids))
        self.block_ids = block_ids


class _ApiError(Exception):
    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []
