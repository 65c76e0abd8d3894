"""The `serve` process: one aiohttp application that adapters mount their routes on.

Own routes: `/healthz` (liveness), `/readyz` (database open and migrated), `/metrics`
(Prometheus). Shutdown order on SIGTERM/SIGINT: stop accepting requests, stop the poller, let
in-flight answers finish for `BRIDGE_SHUTDOWN_GRACE` seconds (the rest end with a short note in
their thread), then close the platform and Moveworks clients and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from bridge.process import metrics
from bridge.process.runtime import Runtime

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
MAX_BODY = 1024 * 1024  # Slack and Bot Framework payloads are far smaller; refuse giant bodies


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.store.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reason": "database not migrated"}, status=503)


async def metrics_route(request: web.Request) -> web.Response:
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})


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
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors_middleware])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    for adapter in runtime.adapters:
        adapter.mount(app)
    if runtime.poller is not None:
        from bridge.events.webhook import make_webhook_handler

        app.router.add_post(
            "/moveworks/webhook", make_webhook_handler(runtime.poller, runtime.settings.webhook_secret)
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
        log.warning("%d answers did not finish before shutdown; marked in their threads", left)


async def _on_cleanup(app: web.Application) -> None:
    await app[RUNTIME].aclose()


async def serve(runtime: Runtime, host: str = "0.0.0.0", port: int | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    # Some SDKs send from the default thread pool (botbuilder's connector): size it for the
    # largest need an adapter declares.
    threads = max((adapter.worker_threads for adapter in runtime.adapters), default=0)
    if threads:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="io"))
    app = make_app(runtime)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port or runtime.settings.port)
    await site.start()
    log.info("serving on %s:%s (adapters: %s, poller: %s)", host, port or runtime.settings.port,
             ", ".join(a.platform for a in runtime.adapters) or "none",
             "on" if runtime.poller is not None else "off")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await site.stop()
        await runner.cleanup()
