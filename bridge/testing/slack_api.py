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
  (`markdown_text_conflict`).

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
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

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
}
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


@dataclass
class Team:
    id: str
    bot_user_id: str
    bot_id: str
    enterprise_id: str | None = None


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
        self, user_id: str, name: str, email: str | None = None, *, team: str = "T1", is_bot: bool = False
    ) -> FakeUser:
        user = FakeUser(user_id, name, email, team, is_bot, real_name=name.title())
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
        for key in ("blocks", "chunks", "loading_messages", "metadata"):
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
            return reply({"ok": False, "error": exc.error})

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
        self.messages[channel].append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": dict(message)}

    def _m_chat_update(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        message = self._find(channel, params.get("ts", ""))
        if message.get("streaming"):  # end it with chat.stopStream first; the stream stays open
            raise _ApiError("streaming_state_conflict")
        if isinstance(params.get("text"), str) and len(params["text"]) > UPDATE_TEXT_LIMIT:
            raise _ApiError("msg_too_long")
        self._check_content(params)
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
        self._check_content(params, required=False, stream=True)
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
        }
        self.messages[channel].append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _streaming(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        message = self._find(channel, params.get("ts", ""))
        if not message.get("streaming"):
            raise _ApiError("message_not_in_streaming_state")
        self._check_content(params, required=False, stream=True)
        md = params.get("markdown_text") or ""
        if len(message["markdown_text"]) + len(md) > STREAM_TOTAL_LIMIT:
            raise _ApiError("msg_too_long")
        message["markdown_text"] += md
        message["stream_calls"] += 1
        return message

    def _m_chat_appendStream(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(params)
        return {"ok": True, "channel": message["channel"], "ts": message["ts"]}

    def _m_chat_stopStream(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._require_channel(params)
        if self._find(channel, params.get("ts", "")).get("streaming") and params.get("blocks") is not None:
            self.check_blocks(params["blocks"], stop=True)  # refused before anything changes
        message = self._streaming({k: v for k, v in params.items() if k != "blocks"})
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        message["streaming"] = False
        return {"ok": True, "channel": message["channel"], "ts": message["ts"], "message": dict(message)}

    def _m_assistant_threads_setStatus(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel_id") or not params.get("thread_ts"):
            raise _ApiError("invalid_arguments")
        self.statuses.append({**params, "team": team.id, "at": self.clock()})
        return {"ok": True}

    def _m_assistant_threads_setSuggestedPrompts(self, team: Team, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def _user_json(self, user: FakeUser) -> dict[str, Any]:
        return {
            "id": user.id,
            "team_id": user.team,
            "name": user.name,
            "real_name": user.real_name,
            "is_bot": user.is_bot,
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
    for item in value.values():
        if isinstance(item, dict | list):
            _check_limits(item)


class _ApiError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error
