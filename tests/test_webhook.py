"""POST /moveworks/webhook: signature schemes, the documented envelope and the poll it triggers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from bridge.events.webhook import (
    TimestampedHmacSha256,
    parse_secrets,
    scheme_for,
    sign,
    sign_timestamped,
    webhook_routes,
)
from bridge.models import ThreadKey
from bridge.process.config import Settings
from tests.test_poller_helpers import close_env, make_env

SECRET = "s3cret-for-tests"


class TriggerRecorder:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    async def trigger(self, identity: str | None = None) -> int:
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
        assert await poller.trigger("stranger@example.com") == 0
        assert await poller.trigger("ANN@example.com") == 1
        assert poller.schedule.states["ann@example.com"].reason == "webhook"
    finally:
        await close_env(env)


# --- the documented envelope ------------------------------------------------------------------------

ANN, BOB, CARA = "ann@example.com", "bob@example.com", "cara@example.com"


def envelope(conversation_id: str | None = "conv_1", user_id: str | None = None,
             kind: str = "CONVERSATION_RESPONSE_RECEIVED", event_id: str = "evt_1") -> bytes:
    data: dict[str, str] = {}
    if conversation_id is not None:
        data["conversation_id"] = conversation_id
    if user_id is not None:
        data["user_id"] = user_id
    return json.dumps({"id": event_id, "type": kind, "data": data}).encode()


@pytest.fixture
async def three(tmp_path):
    """A real per-employee Poller over a real store: ann, bob and cara (all recently active);
    conv_ann is linked to ann's Slack thread, conv_bob to bob's Teams chat."""
    env = await make_env(tmp_path, per_employee=True, emails=(ANN, BOB, CARA))
    runner = None
    try:
        users = {email: env.employee(email) for email in (ANN, BOB, CARA)}
        env.store.links.insert(ThreadKey("slack", "T1", "C1", "1700000000.000100"), users[ANN].user_id, ANN,
                               "conv_ann", {"channel": "C1"})
        env.store.links.insert(ThreadKey("teams", "T1", "19:chat", ""), users[BOB].user_id, BOB, "conv_bob",
                               {"conversation": "19:chat"})
        poller = env.poller(interval=60.0)
        await poller.refresh_identities()
        calls: list[str | None] = []
        original = poller.trigger

        def spy(identity: str | None = None) -> int:
            calls.append(identity)
            return original(identity)

        poller.trigger = spy  # type: ignore[method-assign]
        runner, url = await serve(webhook_routes(poller, SECRET))
        async with aiohttp.ClientSession() as session:
            yield SimpleNamespace(env=env, poller=poller, calls=calls, url=url, session=session)
    finally:
        if runner is not None:
            await runner.cleanup()
        await close_env(env)


def webhook_polled(poller) -> set[str]:
    return {key for key, state in poller.schedule.states.items() if state.reason == "webhook"}


async def post_signed(session, url, body: bytes) -> tuple[int, dict]:
    async with session.post(url, data=body, headers={"X-Moveworks-Signature": sign(body, SECRET),
                                                     "Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


async def test_envelope_polls_only_the_identity_owning_the_conversation(three):
    assert len(three.poller.schedule.recently_active()) == 3
    # user_id is an opaque Moveworks id here: the thread link alone says whose conversation it is
    status, answer = await post_signed(three.session, three.url, envelope("conv_ann", user_id="mw-user-77"))
    assert status == 202 and answer == {"status": "accepted", "polls": 1}
    assert webhook_polled(three.poller) == {ANN}
    assert three.calls == [ANN]


async def test_envelope_conversation_wins_over_user_id(three):
    status, answer = await post_signed(three.session, three.url, envelope("conv_bob", user_id=CARA))
    assert status == 202 and answer["polls"] == 1
    assert webhook_polled(three.poller) == {BOB}


async def test_envelope_falls_back_to_a_known_user_id(three):
    status, answer = await post_signed(three.session, three.url, envelope("conv_unknown", user_id=CARA))
    assert status == 202 and answer["polls"] == 1
    assert webhook_polled(three.poller) == {CARA}
    status, answer = await post_signed(three.session, three.url, envelope(None, user_id="BOB@example.com"))
    assert status == 202 and answer["polls"] == 1
    assert webhook_polled(three.poller) == {CARA, BOB}


async def test_envelope_with_nothing_usable_polls_the_recently_active(three):
    status, answer = await post_signed(three.session, three.url, envelope("conv_unknown", user_id="stranger-9"))
    assert status == 202 and answer["polls"] == 3
    assert webhook_polled(three.poller) == {ANN, BOB, CARA}
    assert three.calls == ["stranger-9", None]  # the unknown user_id was tried, then everyone active


async def test_envelope_without_data_fields_polls_the_recently_active(three):
    status, answer = await post_signed(three.session, three.url, envelope(None))
    assert status == 202 and answer["polls"] == 3


async def test_other_event_type_is_accepted_without_a_poll_and_logged_once(three, caplog):
    caplog.set_level(logging.INFO, logger="bridge.events.webhook")
    for _ in range(3):
        status, answer = await post_signed(three.session, three.url, envelope("conv_ann", kind="USER_CREATED"))
        assert status == 202 and answer == {"status": "accepted", "polls": 0}
    assert three.calls == [] and webhook_polled(three.poller) == set()
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "USER_CREATED" in r.getMessage()]
    assert len(infos) == 1


async def test_earlier_shape_with_another_event_type_polls_nothing(hook):
    poller, url, session = hook
    body = json.dumps({"event_type": "SOMETHING_ELSE", "identity": ANN}).encode()
    status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, SECRET)})
    assert status == 202 and poller.calls == []


@pytest.mark.parametrize(
    "payload",
    [
        {"identity": ANN},
        {"user_email": ANN},
        {"email": ANN},
        {"user": {"email": ANN}},
        {"event_type": "CONVERSATION_RESPONSE_RECEIVED", "identity": ANN, "conversation_id": "conv_x",
         "event_id": "evt_x"},  # the simulator's "legacy" envelope
    ],
)
async def test_earlier_shapes_still_name_the_identity(hook, payload):
    poller, url, session = hook
    body = json.dumps(payload).encode()
    status, text = await post(session, url, body, {"X-Moveworks-Signature": sign(body, SECRET)})
    assert status == 202 and json.loads(text)["polls"] == 1
    assert poller.calls == [ANN]


async def test_earlier_shape_naming_an_unknown_identity_is_ignored(three):
    status, answer = await post_signed(three.session, three.url, json.dumps({"identity": "nobody@x.com"}).encode())
    assert status == 202 and answer["polls"] == 0
    assert webhook_polled(three.poller) == set()


async def test_simulator_documented_envelope_polls_only_the_owner(tmp_path):
    """Simulator (documented envelope, `sha256=` in X-Moveworks-Signature) -> default settings ->
    only the conversation's owner is triggered, and the event lands in its thread at once."""
    env = await make_env(tmp_path, per_employee=True, emails=(ANN, BOB))
    runner = None
    poller = None
    try:
        ann, _bob = env.employee(ANN), env.employee(BOB)
        thread = ThreadKey("slack", "T1", "C1", "1700000000.000100")
        conv = await env.mapped_thread(ANN, thread, ann)
        poller = env.poller(interval=60.0)
        calls: list[str | None] = []
        original = poller.trigger

        def spy(identity: str | None = None) -> int:
            calls.append(identity)
            return original(identity)

        poller.trigger = spy  # type: ignore[method-assign]
        settings = Settings()
        runner, url = await serve(webhook_routes(poller, SECRET, scheme=settings.webhook_signature,
                                                 header=settings.webhook_signature_header))
        env.sim.config.webhook_url = url
        env.sim.config.webhook_secret = SECRET
        env.sim.config.webhook_envelope = "documented"
        await poller.start()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if ANN in poller.schedule.states:
                break
        env.sim.inject_event(ANN, "Your ticket was updated", conversation_id=conv)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if env.slack.posts:
                break
        assert env.slack.texts() == ["Your ticket was updated"]
        assert env.slack.posts[0].thread == thread
        assert calls == [ANN]
    finally:
        if poller is not None:
            await poller.stop()
        if runner is not None:
            await runner.cleanup()
        await close_env(env)


# --- signature schemes and rotation ---------------------------------------------------------------


async def served(recorder, secret, **options):
    runner, url = await serve(webhook_routes(recorder, secret, **options))
    return runner, url


def test_secrets_are_split_on_commas():
    assert parse_secrets(" new-key , old-key,, ") == [b"new-key", b"old-key"]
    assert parse_secrets(["a", "", "b"]) == [b"a", b"b"]
    assert parse_secrets(None) == [] and parse_secrets("") == [] and parse_secrets(" , ") == []


def test_unknown_scheme_is_refused_at_start():
    with pytest.raises(ValueError, match="unknown webhook signature scheme"):
        scheme_for("rsa-sha512")


async def test_rotation_accepts_the_old_and_the_new_secret_only():
    poller = TriggerRecorder()
    runner, url = await served(poller, "new-key,old-key")
    body = b'{"identity": "ann@example.com"}'
    try:
        async with aiohttp.ClientSession() as session:
            for key in ("new-key", "old-key"):
                status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, key)})
                assert status == 202, key
            for key in ("third-key", "new-key,old-key", ""):
                status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, key)})
                assert status == 401, key
        assert poller.calls == [ANN, ANN]
    finally:
        await runner.cleanup()


async def test_custom_signature_header():
    poller = TriggerRecorder()
    runner, url = await served(poller, SECRET, scheme="hmac-sha256", header="X-Hub-Signature-256")
    body = b'{"identity": "ann@example.com"}'
    try:
        async with aiohttp.ClientSession() as session:
            status, _ = await post(session, url, body, {"X-Hub-Signature-256": sign(body, SECRET)})
            assert status == 202
            status, _ = await post(session, url, body, {"x-hub-signature-256": sign(body, SECRET)[7:]})
            assert status == 202  # header names are case-insensitive, the prefix optional
            status, _ = await post(session, url, body, {"X-Signature": sign(body, SECRET)})
            assert status == 202  # the alias is kept
            status, _ = await post(session, url, body, {"X-Moveworks-Signature": sign(body, SECRET)})
            assert status == 401  # not the configured header
        assert poller.calls == [ANN, ANN, ANN]
    finally:
        await runner.cleanup()


@pytest.fixture
async def timestamped():
    poller = TriggerRecorder()
    runner, url = await served(poller, "new-key, old-key", scheme="hmac-sha256-timestamped")
    async with aiohttp.ClientSession() as session:
        yield poller, url, session
    await runner.cleanup()


def stamped(body: bytes, secret: str, at: float, *, signed_at: float | None = None) -> dict[str, str]:
    stamp = str(int(at))
    signed = str(int(signed_at if signed_at is not None else at))
    return {"X-Moveworks-Timestamp": stamp, "X-Moveworks-Signature": sign_timestamped(body, secret, signed)}


async def test_timestamped_fresh_signature_is_accepted(timestamped):
    poller, url, session = timestamped
    body = envelope(None, user_id=ANN)
    now = time.time()
    for headers in (stamped(body, "new-key", now), stamped(body, "old-key", now - 200),
                    stamped(body, "new-key", now + 200)):
        status, _ = await post(session, url, body, headers)
        assert status == 202
    assert poller.calls == [ANN, ANN, ANN]


@pytest.mark.parametrize(
    "case",
    ["stale", "future", "tampered body", "tampered timestamp", "no timestamp", "not seconds",
     "body-only signature", "third key"],
)
async def test_timestamped_refusals(timestamped, case, caplog):
    poller, url, session = timestamped
    body = envelope(None, user_id=ANN)
    now = time.time()
    sent = body
    headers = stamped(body, "new-key", now)
    if case == "stale":
        headers = stamped(body, "new-key", now - 301)
    elif case == "future":
        headers = stamped(body, "new-key", now + 400)
    elif case == "tampered body":
        sent = envelope(None, user_id=BOB)
    elif case == "tampered timestamp":
        headers = stamped(body, "new-key", now, signed_at=now - 1)
    elif case == "no timestamp":
        del headers["X-Moveworks-Timestamp"]
    elif case == "not seconds":
        headers["X-Moveworks-Timestamp"] = f"{now:.3f}"
    elif case == "body-only signature":
        headers["X-Moveworks-Signature"] = sign(body, "new-key")
    elif case == "third key":
        headers = stamped(body, "third-key", now)
    status, text = await post(session, url, sent, headers)
    assert status == 401 and "signature" in text
    assert poller.calls == []


def test_timestamped_window_uses_the_injected_clock():
    scheme = TimestampedHmacSha256(clock=lambda: 1_800_000_000.0)
    body = b"{}"
    secrets = [b"k"]
    assert scheme.check(body, scheme.sign(body, "k"), secrets) is None
    assert scheme.check(body, scheme.sign(body, "k", timestamp=1_800_000_000 - 300), secrets) is None
    assert "replay" in (scheme.check(body, scheme.sign(body, "k", timestamp=1_800_000_000 - 301), secrets) or "")


# --- serve wiring -------------------------------------------------------------------------------


class StubRuntime:
    """Just enough of `Runtime` for `make_app` to mount the webhook route."""

    def __init__(self, settings: Settings, poller) -> None:
        self.settings = settings
        self.poller = poller
        self.adapters: list = []

        async def drain(_grace: float) -> int:
            return 0

        self.relay = SimpleNamespace(drain=drain, unmarked=0)

    async def start(self) -> None: ...

    async def stop_inbound(self) -> None: ...

    async def aclose(self) -> None: ...


class StartablePoller(TriggerRecorder):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def test_serve_mounts_the_configured_scheme_and_header():
    from bridge.process.server import make_app

    settings = Settings(webhook_secret="new-key,old-key", webhook_signature="hmac-sha256-timestamped",
                        webhook_signature_header="X-Custom-Signature")
    poller = StartablePoller()
    runner = web.AppRunner(make_app(StubRuntime(settings, poller)), access_log=None)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/moveworks/webhook"
    try:
        body = envelope(None, user_id=ANN)
        stamp = str(int(time.time()))
        async with aiohttp.ClientSession() as session:
            good = {"X-Moveworks-Timestamp": stamp, "X-Custom-Signature": sign_timestamped(body, "old-key", stamp)}
            status, _ = await post(session, url, body, good)
            assert status == 202
            status, _ = await post(session, url, body, {"X-Custom-Signature": sign(body, "new-key")})
            assert status == 401  # the plain scheme is not the configured one
        assert poller.calls == [ANN]
    finally:
        await runner.cleanup()


async def test_envelope_with_an_earlier_identity_field_beside_data(three):
    body = json.dumps({"id": "evt_2", "type": "CONVERSATION_RESPONSE_RECEIVED", "identity": CARA,
                       "data": {"conversation_id": "conv_unknown", "user_id": "mw-user-77"}}).encode()
    status, answer = await post_signed(three.session, three.url, body)
    assert status == 202 and answer["polls"] == 1
    assert webhook_polled(three.poller) == {CARA}
