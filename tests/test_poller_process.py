"""`moveworks-bridge poll` as a real subprocess: kill -9 between claim and post, then restart.

The Slack Web API is the fake Slack behind a small proxy that can hold `chat.postMessage`
forever (the process has claimed the event and is posting when it dies; Slack never saw it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.models import ChatUser, ThreadKey
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store
from bridge.testing.slack_api import FakeSlack
from bridge.testing.waiting import until

ASSISTANT = "moveworks-bridge-dev"
IDENTITY = "employee@example.com"
ROOT = "1700000000.000100"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class HoldingProxy:
    """Forwards /api/* to the fake Slack; holds chat.postMessage while `hold` is set."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.hold = True
        self.held = 0
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.session: aiohttp.ClientSession | None = None
        self.release = asyncio.Event()

    async def start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/api/"
        self.session = aiohttp.ClientSession()

    async def stop(self) -> None:
        self.release.set()
        if self.session:
            await self.session.close()
        if self.runner:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        body = await request.read()
        if method == "chat.postMessage" and self.hold:
            self.held += 1
            await self.release.wait()  # never answers while the client lives; it dies first
            return web.Response(status=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        assert self.session is not None
        async with self.session.request(request.method, self.target + method, data=body, headers=headers,
                                        params=request.query) as resp:
            data = await resp.read()
            out = {"Content-Type": resp.headers.get("Content-Type", "application/json")}
            if "Retry-After" in resp.headers:
                out["Retry-After"] = resp.headers["Retry-After"]
            return web.Response(body=data, status=resp.status, headers=out)




def status_of(db: str, event_id: str) -> str | None:
    store = Store(db)
    try:
        return store.events.status(event_id)
    finally:
        store.close()


async def start_poll(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "poll", env=env, stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
        cwd=str(Path(__file__).resolve().parent.parent),
    )


async def test_kill_9_between_claim_and_post_then_restart(tmp_path):
    fake = FakeSlack()
    fake.add_user("U1", "alice", "alice@example.com")
    await fake.start()
    proxy = HoldingProxy(fake.url)
    await proxy.start()
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0))
    await sim.start()
    db = str(tmp_path / "bridge.db")
    log = tmp_path / "poll.log"
    procs: list[asyncio.subprocess.Process] = []
    try:
        # the bridge already knows alice and her thread (as the relay would have recorded them)
        conv = sim.state.new_conversation(IDENTITY, None)["conversation_id"]
        store = Store(db)
        store.employees.save(ChatUser("slack", "T1", "U1", email="alice@example.com"), email_checked=True,
                            active=True)
        store.links.insert(ThreadKey("slack", "T1", "C1", ROOT), "U1", "", conv, {"channel": "C1", "thread_ts": ROOT})
        store.checkpoints.start("service")
        store.close()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "SLACK_", "MOVEWORKS_", "TEAMS_"))},
            "BRIDGE_DB": db,
            "BRIDGE_ADAPTERS": "slack",
            "BRIDGE_POLL_INTERVAL": "0.2",
            "SLACK_BOT_TOKEN": fake.token,
            "SLACK_SIGNING_SECRET": "unused-by-poll",
            "SLACK_API_URL": proxy.url,
            "MOVEWORKS_BASE_URL": sim.base_url,
            "MOVEWORKS_ASSISTANT_NAME": ASSISTANT,
            "MOVEWORKS_API_KEY": "sim-key",
        }
        first = await start_poll(env, log)
        procs.append(first)
        await until(lambda: any(r["endpoint"] == "events" for r in sim.requests), what="the first poll")
        event = sim.inject_event(IDENTITY, "Your PTO was approved", conversation_id=conv)
        await until(lambda: proxy.held and status_of(db, event["event_id"]) == "claimed", what="claim + post")
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert fake.bot_messages("C1") == []  # claimed, never posted

        proxy.hold = False
        second = await start_poll(env, log)
        procs.append(second)
        await until(lambda: fake.bot_messages("C1"), what="re-delivery after restart")
        await until(lambda: status_of(db, event["event_id"]) == "sent", what="marked sent")
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0

        third = await start_poll(env, log)  # a further restart posts nothing twice
        procs.append(third)
        polls = len([r for r in sim.requests if r["endpoint"] == "events"])
        await until(lambda: len([r for r in sim.requests if r["endpoint"] == "events"]) >= polls + 3,
                    what="polls after the restart")
        third.send_signal(signal.SIGTERM)
        await asyncio.wait_for(third.wait(), 20)
        messages = fake.bot_messages("C1")
        assert len(messages) == 1 and "PTO was approved" in fake.body_text(messages[0])
        assert messages[0].get("thread_ts") == ROOT
    except BaseException:
        print(log.read_text(errors="replace")[-5000:] if log.exists() else "(no log)")
        raise
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await sim.stop()
        await proxy.stop()
        await fake.stop()
