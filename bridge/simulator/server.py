"""`Simulator`: the aiohttp app, its lifecycle, the in-process admin helpers, and `serve_forever`.

The middleware is where cross-cutting API rules live, so handlers stay small: request log,
authentication (401 before 403), request-level faults, the error envelope for every failure
(including aiohttp's own 404/405), and `x-moveworks-root-uuid` on every response (plus the same
value as `x-trace-id` on `/rest/v1` and `/rest/v1alpha1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from aiohttp import web

from . import admin, engine, flows, webhook
from .answers import Script
from .api import IDENTITY, PREFIXES, ConversationsApi
from .auth import TokenStore, authenticate, token_endpoint
from .config import SimulatorConfig
from .errors import CODES, ApiError
from .faults import Fault, FaultBoard
from .ids import new_id, now_iso
from .state import SYSTEM_TITLE, SimState, content
from .taps import Sent

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/v1/token"
CONTENT_TYPES = ("COMMONMARK_TEXT", "MARKDOWN_TEXT", "PLAIN_TEXT")
# Handler endpoint name -> fault endpoint name (names not listed match only "any").
_FAULT_ENDPOINT = {
    "response_messages": "messages", "modal_get": "modals", "modal_refresh": "modals", "modal_submit": "modals",
}
_HTML_500 = (
    "<html><head><title>500 Internal Server Error</title></head><body><h1>500 Internal Server Error</h1></body></html>"
)


class Simulator:
    """A local Moveworks Conversations API (G1), plus admin hooks for tests and demos."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.state = SimState()
        self.tokens = TokenStore(self.config)
        self.faults = FaultBoard()
        self.scripts: list[Script] = []
        self.requests: list[dict[str, Any]] = []
        self.taps: list[Callable[[Sent], None]] = []  # see `Sent`; not cleared by reset
        # response id -> {question, first_text, end} (time.monotonic): when each answer's first text
        # and its end left the simulator, so benchmarks can measure what the bridge adds after them.
        self.timings: dict[str, dict[str, Any]] = {}
        self.url: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The newest base with a published spec, which has every feature simulated (actions,
        callback input); `/rest/v1beta1` and `/rest/v1` answer too."""
        return f"{self.url}/assistant/v1"

    @property
    def token_url(self) -> str:
        return f"{self.url}{TOKEN_PATH}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.url = f"http://{shown}:{bound_port}"

    async def stop(self) -> None:
        await self._cancel_tasks()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task | None:
        """Run a background task owned by the simulator (cancelled on stop/reset)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- admin helpers (same semantics as /_sim/*) -------------------------------------------------
    def script_answer(
        self,
        text: str = "",
        match: str | None = None,
        identity: str | None = None,
        reasoning: list[str] | None = None,
        citations: list[dict[str, Any]] | None = None,
        actions: list[dict[str, Any]] | None = None,
        chunks: int | None = None,
        delay: float | None = None,
        status: str = "COMPLETED",
        followup: dict[str, Any] | None = None,
        times: int = 1,
        content_type: str = "COMMONMARK_TEXT",
    ) -> dict[str, Any]:
        script = Script(
            text=text, match=match, identity=identity, reasoning=reasoning, citations=citations or [],
            actions=actions or [], chunks=chunks, delay=delay, status=status, followup=followup, times=times,
            content_type=content_type,
        )
        self.scripts.append(script)
        return script.as_dict()

    def inject_event(
        self,
        identity: str,
        text: str,
        conversation_id: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        citations: list[dict[str, Any]] | None = None,
        content_type: str = "COMMONMARK_TEXT",
    ) -> dict[str, Any]:
        """A system-initiated MESSAGE_EVENT (async answer or proactive notification)."""
        if content_type not in CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {CONTENT_TYPES}")
        plan = Script(text=text, citations=citations or [], actions=actions or []).plan("")
        if conversation_id is None:
            conv = self.state.new_conversation(identity, SYSTEM_TITLE)
        else:
            found = self.state.user(identity).conversations.get(conversation_id)
            if found is None:
                raise LookupError(f"Conversation {conversation_id} not found for {identity}")
            conv = found
        resp = self.state.new_response(identity, conv["conversation_id"])
        msg = engine.build_message(self, identity, conv["conversation_id"], resp["response_id"], plan,
                                   content_type=content_type)
        self.state.add_message(identity, msg)
        resp.update(status="COMPLETED", completed_at=now_iso(), outputs=[{"type": "MESSAGE", "message": msg}])
        return self.publish_event(identity, msg)

    def publish_event(self, identity: str, message: dict[str, Any]) -> dict[str, Any]:
        event = self.state.add_event(identity, message)
        cfg = self.config
        if cfg.webhook_url:
            secrets = cfg.webhook_secrets or cfg.webhook_secret
            self.spawn(webhook.deliver(cfg.webhook_url, secrets, identity, event, cfg.webhook_envelope))
        return event

    def agent_say(
        self,
        identity: str,
        conversation_id: str,
        text: str,
        display_name: str | None = None,
        avatar_url: str | None = None,
    ) -> dict[str, Any]:
        """A live agent's message (`actor: LIVE_AGENT`, `sender_info`) on its own response, added
        to history and published as an event (so pollers and the webhook deliver it)."""
        if conversation_id not in self.state.user(identity).conversations:
            raise LookupError(f"Conversation {conversation_id} not found for {identity}")
        resp = self.state.new_response(identity, conversation_id)
        msg = {
            "message_id": new_id("msg_"),
            "conversation_id": conversation_id,
            "response_id": resp["response_id"],
            "actor": "LIVE_AGENT",
            "sender_info": flows.sender_info(display_name, avatar_url),
            "content": content("PLAIN_TEXT", text),
            "created_at": now_iso(),
            "citations": [],
            "content_references": [],
            "feedback": None,
        }
        self.state.add_message(identity, msg)
        resp.update(status="COMPLETED", completed_at=now_iso(), outputs=[{"type": "MESSAGE", "message": msg}])
        return self.publish_event(identity, msg)

    def set_live(self, identity: str, conversation_id: str, active: bool) -> bool:
        """Start or end live-agent mode without a turn (admin); the handoff response is the
        conversation's latest one. Returns whether the conversation is now live."""
        user = self.state.user(identity)
        if conversation_id not in user.conversations:
            raise LookupError(f"Conversation {conversation_id} not found for {identity}")
        if not active:
            user.live.pop(conversation_id, None)
            return False
        if conversation_id not in user.live:
            latest = [r for r in user.responses.values() if r["conversation_id"] == conversation_id]
            if not latest:
                raise LookupError(f"Conversation {conversation_id} has no response to hand off from")
            engine.start_live(self, identity, conversation_id, latest[-1]["response_id"])
        return True

    def inject_fault(
        self,
        kind: str,
        endpoint: str = "any",
        count: int = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        html: bool = False,
    ) -> None:
        if kind == "expire_tokens":
            self.tokens.expire_all()
            return
        self.faults.add(Fault(kind, endpoint, count, retry_after, delay, html))

    def sent(self, item: Sent) -> None:
        for tap in list(self.taps):
            try:
                tap(item)
            except Exception:  # a tap must never break the API it watches
                log.exception("simulator: tap failed")

    def timeline(self, response_id: str, question: str) -> dict[str, Any]:
        return self.timings.setdefault(response_id, {"question": question})

    def reset(self) -> None:
        """Forget conversations, scripts, faults and the request log; minted tokens stay valid."""
        for t in list(self._tasks):
            t.cancel()
        self.state = SimState()
        self.scripts.clear()
        self.faults.clear()
        self.requests.clear()
        self.timings.clear()

    # -- HTTP -------------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        api = ConversationsApi(self)
        for prefix in PREFIXES:
            app.add_routes(api.routes(prefix))
        app.add_routes(api.files_routes())

        async def token(request: web.Request) -> web.Response:
            return await token_endpoint(request, self.config, self.tokens)

        token.endpoint = "token"  # type: ignore[attr-defined]
        app.add_routes([web.post(TOKEN_PATH, token)])
        app.add_routes(admin.routes(self))
        app.on_response_prepare.append(self._add_trace_headers)
        return app

    @staticmethod
    async def _add_trace_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-moveworks-root-uuid"] = str(uuid.uuid4())
        if request.path.startswith(("/rest/v1/", "/rest/v1alpha1/")):
            response.headers["x-trace-id"] = response.headers["x-moveworks-root-uuid"]

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()
        name = getattr(request.match_info.handler, "endpoint", None)
        record: dict[str, Any] = {
            "method": request.method, "path": request.path, "identity": None,
            "status": None, "t": time.time(), "endpoint": name,
        }
        self.requests.append(record)
        try:
            response = await self._dispatch(request, handler, name, record)
        except ApiError as exc:
            if name == "token":
                exc.flat = True
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = ApiError(exc.status, CODES.get(exc.status, "INVALID_REQUEST"), exc.reason).response()
        record["status"] = response.status
        if self.taps and isinstance(response, web.Response):
            body = response.body if isinstance(response.body, bytes) else None
            self.sent(Sent(request.method, request.path, response.status, response.content_type or "", body=body))
        return response

    async def _dispatch(self, request: web.Request, handler, name: str | None, record: dict[str, Any]):
        if name is None:  # no route: aiohttp raises 404/405, converted to the envelope
            return await handler(request)
        if name != "token":
            identity = authenticate(request, self.config, self.tokens)
            record["identity"] = request[IDENTITY] = identity
        fault_name = _FAULT_ENDPOINT.get(name, name)
        fault = self.faults.take(fault_name, ("rate_limit", "server_error"))
        if fault is not None and fault.kind == "rate_limit":
            headers = {"Retry-After": _fmt_seconds(fault.retry_after)} if fault.retry_after is not None else None
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded", headers=headers)
        if fault is not None:
            if fault.html:
                return web.Response(status=500, text=_HTML_500, content_type="text/html")
            raise ApiError(500, "INTERNAL_ERROR", "Internal server error")
        if name not in ("stream", "create_response"):
            slow = self.faults.take(fault_name, ("slow",))
            if slow is not None:
                await asyncio.sleep(float(slow.delay or 0))
        return await handler(request)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def banner(sim: Simulator) -> str:
    cfg = sim.config
    key, who = next(iter(cfg.api_keys.items()), ("(none)", ""))
    return "\n".join(
        [
            "Moveworks Conversations API simulator",
            f"  base URL        {sim.url}/rest/v1   (the current generation; also /assistant/v1, /rest/v1beta1)",
            f"  token URL       {sim.token_url}   (client_credentials: {cfg.client_id} / {cfg.client_secret})",
            f"  Assistant-Name  {cfg.assistant_name}",
            f"  demo API key    {key}   (acts as {who})",
            f"  pace            {cfg.pace}",
            "/rest/v1 flows (text turns on /rest/v1):",
            '  "...ticket..."                smart handoff: File ticket / Edit/Add details (form) / Other help',
            '  "help menu", "get help"       get-help menu (handoff categories IT and HR)',
            '  "talk to an agent", "human"   live agent: empty turns, Dana Fielding answers, "End chat" ends',
            "  chat.files                    upload with POST /rest/v1alpha1/files first; the answer names them",
            admin.SUMMARY,
        ]
    )


async def serve_forever(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8089, *, out: TextIO | None = None
) -> None:
    """What `moveworks-bridge simulator --port N` runs: print the banner, serve until cancelled/SIGINT/SIGTERM."""
    sim = Simulator(config)
    await sim.start(host, port)
    print(banner(sim), file=out or sys.stdout, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await sim.stop()


def run(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8089) -> None:
    """Blocking helper around `serve_forever`."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(config, host, port))
