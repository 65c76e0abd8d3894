"""The `serve` process: one aiohttp application that adapters mount their routes on.

Own routes: `/healthz` (liveness), `/readyz` (database open and migrated), `/metrics`
(Prometheus). Shutdown order on SIGTERM/SIGINT: stop accepting requests, stop the poller, let
in-flight answers finish for `BRIDGE_SHUTDOWN_GRACE` seconds (the rest end with a short note in
their thread), then close the platform and Moveworks clients and the database.

Hostile or broken clients cannot take the process down:

* once a request's first byte has arrived, its line and headers must follow within
  `HEADER_TIMEOUT` seconds (else the connection is closed), its body within `BODY_TIMEOUT` (else
  408). An idle keep-alive connection is closed after `IDLE_TIMEOUT`, which is longer than the
  idle timeouts of common load balancers (a proxy must never reuse a connection we are closing),
  or at once when a new connection needs its place (below);
* `serve` accepts at most `connection_limit()` connections at once, well below the open-file
  limit (headroom for the database, outbound HTTPS and Socket Mode). At the cap a new connection
  takes the place of the longest idle one (a keep-alive connection, or one still sending its
  headers, idle for at least `EVICT_IDLE_AFTER`); when there is none it is closed at once with a
  503, counted, not logged one by one;
* a JSON body (or Slack's form-encoded `payload`) nested deeper than `MAX_JSON_DEPTH` is a 400
  before any route parses it;
* a watchdog measures the event loop's lag (`bridge_event_loop_lag_seconds`) and writes the
  summaries of log lines the repeat filter suppressed (logs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from bridge.process import logs, metrics
from bridge.process.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
MAX_BODY = 1024 * 1024  # Slack and Bot Framework payloads are far smaller; refuse giant bodies
MAX_JSON_DEPTH = 64  # Slack blocks and Teams cards nest far less; Python's parser breaks near 1,000
HEADER_TIMEOUT = 5.0  # request line + headers, from the request's first byte
BODY_TIMEOUT = 10.0
IDLE_TIMEOUT = 620.0  # idle keep-alive: above AWS ALB's 60 s, nginx's 75 s, Google's LB's 600 s
LINGERING_TIME = 2.0  # reading what is left of a refused body before closing
HANDLER_ARGS: dict[str, Any] = {
    "access_log": None,
    "keepalive_timeout": IDLE_TIMEOUT,
    "lingering_time": LINGERING_TIME,
}
FD_RESERVE_MIN = 192  # open files kept for the database, outbound HTTPS, Socket Mode, accept bursts
FD_RESERVE_SHARE = 0.25
MIN_CONNECTIONS, MAX_CONNECTIONS = 16, 16_384
EVICT_IDLE_AFTER = 1.0  # at the cap, a connection idle this long makes room for a new one
NOTE_EVERY = 60.0  # at most one log line per minute about refused or evicted connections
LAG_INTERVAL = 0.25
LAG_WARNING = 1.0
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
           b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    ready, reason = await runtime.store.health()
    if ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reason": reason}, status=503)


async def metrics_route(request: web.Request) -> web.Response:
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Does `value` (parsed JSON) nest lists/objects deeper than `limit`? (no recursion)"""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_problem(raw: bytes, content_type: str) -> str | None:
    """Why a JSON body (or a form field holding JSON, like Slack's `payload`) must be refused
    before any route parses it: nested too deeply. Anything else is left to the route."""
    if content_type == "application/json" or content_type.endswith("+json"):
        documents = [raw]
    elif content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return None
        documents = [value.encode() for _, value in fields if value[:1] in ("{", "[")]
    else:
        return None
    for document in documents:
        if document.count(b"[") + document.count(b"{") <= MAX_JSON_DEPTH:
            continue  # cannot nest deeper than it has brackets: no need to parse twice
        try:
            value = json.loads(document)
        except RecursionError:
            return "JSON nested too deeply"
        except ValueError:
            continue  # not JSON: the route answers that itself
        if isinstance(value, (dict, list)) and json_too_deep(value):
            return "JSON nested too deeply"
    return None


@web.middleware
async def request_guard(request: web.Request, handler):
    """The body must arrive within `BODY_TIMEOUT` (408) and must not nest too deeply (400). It is
    read here, once; routes get it from aiohttp's cache (`read`, `json`, `text`). Marks the
    connection busy for the `ConnectionGuard` while the request is handled."""
    protocol = request.protocol
    guarded = protocol if isinstance(protocol, GuardedHandler) else None
    if guarded is not None:
        guarded.guard.begin(guarded)
    try:
        if request.method in ("POST", "PUT", "PATCH") and request.body_exists:
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    raw = await request.read()
            except TimeoutError:
                metrics.HTTP_SLOW_REQUESTS.inc()
                response = web.json_response({"error": "the request body did not arrive in time"}, status=408)
                response.force_close()
                return response
            except RequestPayloadError:
                return web.json_response({"error": "malformed request body"}, status=400)
            problem = json_problem(raw, request.content_type)
            if problem:
                return web.json_response({"error": problem}, status=400)
        return await handler(request)
    finally:
        if guarded is not None:
            guarded.guard.end(guarded)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    """Unexpected errors become a plain 500 without internals; HTTP errors pass through."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors_middleware, request_guard])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    for adapter in runtime.adapters:
        adapter.mount(app)
    if runtime.poller is not None:
        from bridge.events.webhook import make_webhook_handler

        settings = runtime.settings
        app.router.add_post(
            "/moveworks/webhook",
            make_webhook_handler(runtime.poller, settings.webhook_secret, scheme=settings.webhook_signature,
                                 header=settings.webhook_signature_header),
        )
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_startup(app: web.Application) -> None:
    runtime = app[RUNTIME]
    await runtime.start()
    if runtime.poller is not None:
        await runtime.poller.start()


async def _on_shutdown(app: web.Application) -> None:
    runtime = app[RUNTIME]
    await runtime.stop_inbound()  # HTTP routes already stopped with the site; Socket Mode now
    if runtime.poller is not None:
        await runtime.poller.stop()
    left = await runtime.relay.drain(runtime.settings.shutdown_grace)
    if left:
        unmarked = runtime.relay.unmarked
        log.warning("%d answers did not finish before shutdown: %d marked in their threads, %d could not "
                    "be (the next start tells those that were streaming)", left, left - unmarked, unmarked)


async def _on_cleanup(app: web.Application) -> None:
    await app[RUNTIME].aclose()


# --- connections ------------------------------------------------------------------------------


def connection_limit(soft: int | None = None) -> int:
    """How many inbound connections `serve` holds at once: the open-file limit minus a reserve."""
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 2 * MAX_CONNECTIONS
    reserve = max(FD_RESERVE_MIN, int(soft * FD_RESERVE_SHARE))
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, soft - reserve))


class GuardedHandler(RequestHandler):
    """aiohttp's protocol for one connection, known to the `ConnectionGuard` that made it; closes
    the connection when a request's headers do not follow its first byte within `HEADER_TIMEOUT`."""

    __slots__ = ("busy", "guard", "header_timer", "released", "since")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.busy = 0  # requests being handled now
        self.since = time.monotonic()  # connected, or last request finished
        self.released = False
        self.header_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if data and not self.busy and self.header_timer is None and not self.released:
            self.header_timer = self.guard.loop.call_later(HEADER_TIMEOUT, self._headers_late)

    def _headers_late(self) -> None:
        self.header_timer = None
        if not self.busy and self.transport is not None:
            metrics.HTTP_SLOW_REQUESTS.inc()
            self.force_close()

    def stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.stop_header_timer()
        try:
            super().connection_lost(exc)
        finally:
            self.guard.release(self)


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503 and closed at once (its file descriptor is freed)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(REFUSED)
        transport.close()


class ConnectionGuard:
    """The listening socket's protocol factory: aiohttp's handler for each connection, at most
    `limit` at once (see the module docstring)."""

    def __init__(self, server: web.Server, limit: int, handler_args: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.limit = limit
        self.handler_args = handler_args
        self.loop = loop
        self.open: OrderedDict[GuardedHandler, None] = OrderedDict()  # least recently active first
        self.refused = 0
        self.evicted = 0
        self._next_note = {"refused": 0.0, "evicted": 0.0}

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.open) >= self.limit and not self._evict():
            self.refused += 1
            metrics.HTTP_CONNECTIONS_REFUSED.inc()
            self._note("refused", "connection cap of %d reached and no connection has been idle long enough "
                       "to close: refusing new connections (counted in bridge_http_connections_refused)")
            return _Refused()
        handler = GuardedHandler(self, self.server, loop=self.loop, **self.handler_args)
        self.open[handler] = None
        metrics.HTTP_CONNECTIONS.set(len(self.open))
        return handler

    def begin(self, handler: GuardedHandler) -> None:
        handler.busy += 1
        handler.stop_header_timer()  # the headers are in; the body has its own deadline

    def end(self, handler: GuardedHandler) -> None:
        handler.busy = max(0, handler.busy - 1)
        handler.since = time.monotonic()
        if handler in self.open:
            self.open.move_to_end(handler)

    def release(self, handler: GuardedHandler) -> None:
        if not handler.released:
            handler.released = True
            self.open.pop(handler, None)
            metrics.HTTP_CONNECTIONS.set(len(self.open))

    def _evict(self) -> bool:
        """Close the least recently active idle connection, if one has been idle long enough."""
        now = time.monotonic()
        for handler in self.open:
            if handler.busy or now - handler.since < EVICT_IDLE_AFTER:
                continue
            self.release(handler)
            if handler.transport is not None:  # else it never connected, or is closing already
                handler.force_close()
                self.evicted += 1
                metrics.HTTP_CONNECTIONS_EVICTED.inc()
                self._note("evicted", "connection cap of %d reached: closing the longest idle connections "
                           "to make room (counted in bridge_http_connections_evicted)")
            return True
        return False

    def _note(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now >= self._next_note[kind]:
            self._next_note[kind] = now + NOTE_EVERY
            log.warning(message, self.limit)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections come from a `ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard,
                 backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self.host, self.port, backlog=self._backlog, reuse_address=True
        )


async def watch_event_loop(interval: float = LAG_INTERVAL) -> None:
    """Sleep `interval` s, measure how late the wake-up was (the loop's lag), forever; also
    writes the summaries of suppressed repeated log lines once their window ends."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - started - interval)
        metrics.EVENT_LOOP_LAG.set(lag)
        metrics.EVENT_LOOP_LAG_SECONDS.observe(lag)
        if lag >= LAG_WARNING:
            log.warning("the event loop was blocked for %.1f s", lag)
        with contextlib.suppress(Exception):  # the watchdog must outlive a broken log handler
            logs.flush_suppressed()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the start of a graceful shutdown. Where the loop cannot
    take signal handlers (Windows, or not the main thread: embedded or test runs) the process is
    stopped another way, so their absence is not an error."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(runtime: Runtime, host: str = "0.0.0.0", port: int | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    # Some SDKs send from the default thread pool (botbuilder's connector): size it for the
    # largest need an adapter declares.
    loop = asyncio.get_running_loop()
    threads = max((adapter.worker_threads for adapter in runtime.adapters), default=0)
    if threads:
        loop.set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="io"))
    app = make_app(runtime)
    runner = web.AppRunner(app, handle_signals=False, **HANDLER_ARGS)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, connection_limit(), HANDLER_ARGS, loop)
    site = GuardedSite(runner, host, port or runtime.settings.port, guard)
    await site.start()
    watchdog = asyncio.create_task(watch_event_loop(), name="event-loop-watchdog")
    log.info("serving on %s:%s (adapters: %s, poller: %s, at most %d connections)", host,
             port or runtime.settings.port, ", ".join(a.platform for a in runtime.adapters) or "none",
             "on" if runtime.poller is not None else "off", guard.limit)
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await site.stop()
        await runner.cleanup()
        logs.flush_suppressed(everything=True)
