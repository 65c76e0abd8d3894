"""Inbound Teams tokens are verified without ever blocking the event loop: the channel's signing
keys are fetched off the loop with timeouts (from `TEAMS_OPENID_METADATA_URL` when set), a forged
or unverifiable request gets a 4xx (503 while the keys cannot be fetched) within seconds while every
other route keeps answering, and forged tokens cannot make the bridge fetch keys over and over.
Outbound Bot Framework tokens are never fetched on the loop either.

The hanging key endpoint is a real listener on loopback that accepts and never answers; the
"real serve process" test runs `python -m bridge serve`."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from adapters.teams.connector import CachingCredentialFactory, TokenNotReady
from adapters.teams.keys import FAILURE_BACKOFF, install_signing_keys
from bridge.process.config import Settings
from bridge.testing.waiting import until
from tests.test_hostile_http import ServeProcess, fresh_get, url_verification
from tests.test_teams_auth import KEY, FakeEntra, bearer
from tests.test_teams_e2e import Harness

APP_ID = "00000000-0000-0000-0000-00000000beef"
CHANNEL_ISSUER = "https://api.botframework.com"


def forged_token(kid: str = "forged-kid", *, key: Any = None, algorithm: str = "RS256") -> str:
    now = int(time.time())
    claims = {"iss": CHANNEL_ISSUER, "aud": APP_ID, "nbf": now - 10, "exp": now + 3600,
              "serviceurl": "http://127.0.0.1:9/"}
    signing = key if key is not None else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, signing, algorithm=algorithm, headers={"kid": kid})


def activity(text: str = "hello") -> dict[str, Any]:
    return {
        "type": "message", "id": "1", "serviceUrl": "http://127.0.0.1:9/", "channelId": "msteams",
        "from": {"id": "29:mallory", "aadObjectId": "aad-mallory"}, "recipient": {"id": f"28:{APP_ID}"},
        "conversation": {"id": "a:mallory", "conversationType": "personal", "tenantId": "tenant-1"},
        "channelData": {"tenant": {"id": "tenant-1"}}, "text": text,
    }


class HangingListener:
    """Accepts connections and never answers (an OpenID endpoint that hangs). It runs in its own
    thread, so it keeps accepting even while a blocked event loop waits for it, and it gives up
    after `give_up_after` s: a bridge that blocks on it fails its test instead of hanging it."""

    def __init__(self, give_up_after: float = 20.0) -> None:
        self.accepted = 0
        self.give_up_after = give_up_after
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/.well-known/openidconfiguration"
        self._thread = threading.Thread(target=self._run, name="hanging-openid", daemon=True)

    def _run(self) -> None:
        held: list[socket.socket] = []
        deadline = time.monotonic() + self.give_up_after
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            held.append(conn)
        for conn in held:
            conn.close()
        self._sock.close()

    async def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)


# --- A. the real process, with the key endpoint hanging ----------------------------------------------


async def test_a_forged_token_while_the_key_endpoint_hangs_freezes_nothing(sim, tmp_path):
    hanging = HangingListener()
    await hanging.start()
    serve = ServeProcess(tmp_path, sim, {
        "BRIDGE_ADAPTERS": "slack,teams", "TEAMS_APP_ID": APP_ID, "TEAMS_APP_PASSWORD": "not-a-real-secret",
        "TEAMS_OPENID_METADATA_URL": hanging.url,
    })
    await serve.start()
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            async def forged() -> tuple[int, float]:
                started = time.monotonic()
                resp = await http.post(serve.url + "/api/messages", json=activity(),
                                       headers={"Authorization": f"Bearer {forged_token()}"})
                return resp.status_code, time.monotonic() - started

            pending = asyncio.create_task(forged())
            checks = 0
            while not pending.done() or checks == 0:
                status, took, _ = await fresh_get(serve.url + "/healthz", timeout=5)
                assert status == 200 and took < 2.0, f"/healthz took {took:.1f}s while a token was checked"
                status, took, _ = await url_verification(serve.url, timeout=5)
                assert status == 200 and took < 2.0, f"Slack took {took:.1f}s while a token was checked"
                checks += 1
                await asyncio.sleep(0.3)
            status, took = await pending
            assert status in (401, 503) and took < 10.0, (status, took)
            status, took = await forged()  # the fetch just failed: no new one, an answer at once
            assert status in (401, 503) and took < 3.0, (status, took)
        assert hanging.accepted >= 1, "the keys are read from TEAMS_OPENID_METADATA_URL"
    finally:
        await serve.stop()
        await hanging.stop()
    assert "Traceback" not in serve.log()


def test_the_openid_metadata_url_is_a_setting():
    settings = Settings.from_env({"MOVEWORKS_ASSISTANT_NAME": "a", "MOVEWORKS_API_KEY": "k",
                                  "TEAMS_OPENID_METADATA_URL": "http://127.0.0.1:1/openid"})
    assert settings.teams_openid_metadata_url == "http://127.0.0.1:1/openid"
    default = Settings.from_env({"MOVEWORKS_ASSISTANT_NAME": "a", "MOVEWORKS_API_KEY": "k"})
    assert default.teams_openid_metadata_url is None


# --- forged tokens against real keys: 401, never 500, and no fetch storm -----------------------------


@pytest_asyncio.fixture
async def openid() -> AsyncIterator[SimpleNamespace]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "real-kid", "endorsements": ["msteams"]}
    hits: list[str] = []
    app = web.Application()

    async def metadata(request: web.Request) -> web.Response:
        hits.append("metadata")
        return web.json_response({"jwks_uri": str(request.url.with_path("/keys"))})

    async def keys(request: web.Request) -> web.Response:
        hits.append("keys")
        return web.json_response({"keys": [jwk]})

    app.router.add_get("/openid", metadata)
    app.router.add_get("/keys", keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/openid"
    try:
        yield SimpleNamespace(url=url, hits=hits, key=key)
    finally:
        await runner.cleanup()


class KeyedHarness(Harness):
    def settings(self) -> Settings:
        return super().settings().with_(teams_openid_metadata_url=self.options["openid"])


async def test_forged_tokens_are_401_and_cannot_make_the_bridge_fetch_keys_again_and_again(
    tmp_path: Path, openid: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    h = KeyedHarness(tmp_path, app_id=APP_ID, app_password="not-a-real-secret", openid=openid.url)
    await h.start()
    try:
        keys = install_signing_keys(openid.url)
        await until(lambda: bool(keys.keys), what="the signing keys to be loaded in the background")
        fetches = keys.fetches
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = [
            forged_token(),  # an unknown key id
            forged_token("real-kid", key=other),  # the real key id, signed by someone else
            forged_token("real-kid", key="a-shared-secret-of-32-bytes-or-more", algorithm="HS256"),
            "not-a-jwt",
        ]
        started = time.monotonic()
        with caplog.at_level("ERROR"):
            for token in forged * 5:
                status, _ = await h.post(activity(), headers={"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {token}"})
                assert status == 401, token[:20]
            status, _ = await h.post(activity(), headers={"Content-Type": "application/json"})
            assert status == 401
        assert time.monotonic() - started < 10.0
        assert "unhandled error" not in caplog.text
        assert keys.fetches - fetches <= 1, "an unknown key id refetches at most once per interval"
        assert h.runtime is not None and h.runtime.relay.in_flight == 0
    finally:
        await h.stop()


async def test_a_request_waits_a_bounded_time_for_keys_and_failures_are_not_retried_per_request() -> None:
    hanging = HangingListener()
    await hanging.start()
    keys = install_signing_keys(hanging.url)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    beat = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(keys.get("kid") for _ in range(10)), return_exceptions=True)
        took = time.monotonic() - started
        assert all(type(r).__name__ == "SigningKeysUnavailable" for r in results), results
        assert took < 12.0 and keys.fetches == 1, "ten requests share one fetch"
        started = time.monotonic()
        with pytest.raises(Exception, match="could not be fetched"):
            await keys.get("kid")
        assert time.monotonic() - started < 1.0 and keys.fetches == 1, f"no new fetch for {FAILURE_BACKOFF}s"
    finally:
        beat.cancel()
        await hanging.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 0.5, "the event loop kept running while the keys were fetched"


# --- outbound tokens: never fetched on the loop ------------------------------------------------------


class SlowEntra(FakeEntra):
    """Entra ID taking a second per token."""

    def issue(self) -> str:
        time.sleep(1.0)
        return super().issue()


async def test_a_send_before_the_first_token_neither_blocks_the_loop_nor_waits_forever() -> None:
    entra = SlowEntra()
    factory = CachingCredentialFactory(entra)
    credentials = await factory.create_credentials(*KEY)
    started = time.monotonic()
    with pytest.raises(TokenNotReady):
        credentials.signed_session()  # msrest does this on the loop before every call
    assert time.monotonic() - started < 0.5 and entra.fetch_threads == []
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    beat = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(factory.ensure(KEY, timeout=5.0) for _ in range(5)))
    finally:
        beat.cancel()
    assert len(entra.fetch_threads) == 1, "concurrent sends share one fetch"
    assert threading.get_ident() not in entra.fetch_threads
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.5
    token = factory.token(KEY)
    assert token is not None and bearer(credentials) == f"Bearer {token.value}"
    entra.fail = True
    failing = CachingCredentialFactory(entra)
    await failing.create_credentials(*KEY)
    with pytest.raises(TokenNotReady):
        await failing.ensure(KEY, timeout=5.0)
