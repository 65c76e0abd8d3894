"""POST /moveworks/webhook: HMAC verification and the immediate poll it triggers."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from bridge.events.webhook import sign, webhook_routes
from tests.test_poller_helpers import close_env, make_env

SECRET = "s3cret-for-tests"


class TriggerRecorder:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def trigger(self, identity: str | None = None) -> int:
        self.calls.append(identity)
        return 1


async def serve(routes) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/moveworks/webhook"


@pytest.fixture
async def hook():
    poller = TriggerRecorder()
    runner, url = await serve(webhook_routes(poller, SECRET))
    async with aiohttp.ClientSession() as session:
        yield poller, url, session
    await runner.cleanup()


async def post(session, url, body: bytes, headers=None):
    async with session.post(url, data=body, headers=headers or {}) as resp:
        return resp.status, await resp.text()


async def test_valid_signature_triggers_the_named_identity(hook):
    poller, url, session = hook
    body = json.dumps({"event_type": "CONVERSATION_RESPONSE_RECEIVED", "identity": "ann@example.com"}).encode()
    status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, SECRET)})
    assert status == 202
    assert poller.calls == ["ann@example.com"]


async def test_a_body_sent_in_many_chunks_is_verified_whole(hook):
    poller, url, session = hook
    body = json.dumps({"identity": "ann@example.com", "padding": "x" * 200_000}).encode()

    async def chunks():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]
            await asyncio.sleep(0)

    async with session.post(url, data=chunks(), headers={"X-Moveworks-Signature": sign(body, SECRET)}) as resp:
        assert resp.status == 202
    assert poller.calls == ["ann@example.com"]


async def test_bare_hex_signature_and_user_email_field(hook):
    poller, url, session = hook
    body = json.dumps({"user_email": "bob@example.com"}).encode()
    bare = sign(body, SECRET).split("=", 1)[1]
    status, _ = await post(session, url, body, {"X-Moveworks-Signature": bare})
    assert status == 202 and poller.calls == ["bob@example.com"]


async def test_payload_without_identity_triggers_recently_active(hook):
    poller, url, session = hook
    body = b'{"event_type": "CONVERSATION_RESPONSE_RECEIVED"}'
    status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, SECRET)})
    assert status == 202 and poller.calls == [None]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Moveworks-Signature": "sha256=" + "0" * 64},
        {"X-Moveworks-Signature": "garbage"},
        {"X-Moveworks-Signature": sign(b"another body", SECRET)},
        {"X-Moveworks-Signature": sign(b'{"identity": "ann@example.com"}', "wrong-secret")},
    ],
)
async def test_forged_webhook_is_401_without_side_effect(hook, headers):
    poller, url, session = hook
    status, text = await post(session, url, b'{"identity": "ann@example.com"}', headers)
    assert status == 401
    assert "signature" in text
    assert poller.calls == []


async def test_unsigned_accepted_when_no_secret_is_set():
    poller = TriggerRecorder()
    runner, url = await serve(webhook_routes(poller, None))
    try:
        async with aiohttp.ClientSession() as session:
            status, _ = await post(session, url, b"not json at all")
        assert status == 202 and poller.calls == [None]
    finally:
        await runner.cleanup()


async def test_oversized_body_is_refused(hook):
    poller, url, session = hook
    body = b"x" * (1024 * 1024 + 10)
    status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, SECRET)})
    assert status == 413 and poller.calls == []


async def test_webhook_triggers_an_immediate_poll(tmp_path):
    """Simulator -> signed webhook -> bridge -> poll now (the regular interval is 60 s)."""
    env = await make_env(tmp_path)
    runner = None
    try:
        user = env.employee("ann@example.com")
        poller = env.poller(interval=60.0)
        runner, url = await serve(webhook_routes(poller, SECRET))
        env.sim.config.webhook_url = url
        env.sim.config.webhook_secret = SECRET
        await poller.start()
        for _ in range(100):  # the first (start-at-now) poll
            await asyncio.sleep(0.02)
            if poller.schedule.states and poller.schedule.states["service"].polls:
                break
        before = len([r for r in env.sim.requests if r["endpoint"] == "events"])
        started = time.monotonic()
        env.sim.inject_event(user.email, "Your laptop has shipped")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if env.slack.posts:
                break
        elapsed = time.monotonic() - started
        assert env.slack.texts() == ["Your laptop has shipped"]
        assert elapsed < 2.0
        assert len([r for r in env.sim.requests if r["endpoint"] == "events"]) == before + 1
        await poller.stop()
    finally:
        if runner is not None:
            await runner.cleanup()
        await close_env(env)


async def test_webhook_for_unknown_identity_is_ignored(tmp_path):
    env = await make_env(tmp_path, per_employee=True, emails=("ann@example.com",))
    try:
        env.employee("ann@example.com")
        poller = env.poller()
        assert poller.trigger("stranger@example.com") == 0
        assert poller.trigger("ANN@example.com") == 1
        assert poller.schedule.states["ann@example.com"].reason == "webhook"
    finally:
        await close_env(env)
