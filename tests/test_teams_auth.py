"""Teams authentication HTTP stays off the event loop: the Bot Framework token is fetched in a
background thread and kept fresh before it expires (botbuilder's synchronous `signed_session` then
answers from it), the channel's OpenID signing keys are pre-loaded the same way, and start-up with
credentials but without a network neither hangs nor fails. Also `start(inbound=False)` (the `poll`
worker) and `stop_inbound()`.

Fake credentials record the thread every token fetch runs on; the signing keys come from a real
HTTP server on loopback. Clocks are injected: nothing here waits for a refresh interval."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from botframework.connector.auth import (
    AppCredentials,
    ServiceClientCredentialsFactory,
    jwt_token_extractor,
)
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from adapters.teams.app import TeamsAdapter
from adapters.teams.connector import (
    RETRY_WAITS,
    AuthRefresher,
    CachingCredentialFactory,
    PrefetchedToken,
    channel_openid_url,
)
from bridge.mechanisms.ratelimit import Budgets
from bridge.process.config import Settings
from bridge.process.services import Services
from bridge.store import Store
from tests.test_teams_e2e import Harness, until

KEY = ("bot-app-id", "https://api.botframework.com", "https://login.microsoftonline.com/", True)


class FakeEntra(ServiceClientCredentialsFactory):
    """Stands in for botbuilder's credential factory; every token fetch is recorded."""

    def __init__(self, clock: Any = time.time, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.fetch_threads: list[int] = []
        self.fail = False

    async def is_valid_app_id(self, app_id: str) -> bool:
        return True

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Any:
        return FakeCredentials(self, app_id, oauth_scope)

    def issue(self) -> str:
        self.fetch_threads.append(threading.get_ident())
        if self.fail:
            raise PermissionError("Failed to get access token with error: network down")
        claims = {"exp": int(self.clock() + self.lifetime), "n": len(self.fetch_threads)}
        return jwt.encode(claims, "not-a-real-signing-key-0123456789", algorithm="HS256")


class FakeCredentials(AppCredentials):
    def __init__(self, entra: FakeEntra, app_id: str, scope: str) -> None:
        super().__init__(app_id=app_id, oauth_scope=scope)
        self.entra = entra

    def get_access_token(self, force_refresh: bool = False) -> str:
        return self.entra.issue()


def bearer(credentials: Any) -> str:
    """What msrest's credentials policy does before every Bot Framework call (on the loop)."""
    return credentials.signed_session().headers["Authorization"]


async def test_the_token_is_fetched_off_the_loop_and_signed_sessions_use_it() -> None:
    entra = FakeEntra()
    factory = CachingCredentialFactory(entra)
    refresher = AuthRefresher(factory, KEY)
    refresher.start()
    try:
        await until(lambda: factory.token(KEY) is not None, what="the first background fetch")
        credentials = await factory.create_credentials(*KEY)
        for _ in range(3):
            assert bearer(credentials) == f"Bearer {factory.token(KEY).value}"
    finally:
        await refresher.stop()
    assert not refresher.running
    assert len(entra.fetch_threads) == 1
    assert threading.get_ident() not in entra.fetch_threads, "no token HTTP on the event loop"


async def test_the_token_is_replaced_well_before_it_expires() -> None:
    now = [1_000_000.0]
    entra = FakeEntra(clock=lambda: now[0])
    factory = CachingCredentialFactory(entra, clock=lambda: now[0])
    refresher = AuthRefresher(factory, KEY)
    credentials = await factory.create_credentials(*KEY)
    assert await refresher.refresh_once() == 1800.0  # a one-hour token: renewed after 30 min
    first = bearer(credentials)
    now[0] += 1000
    assert await refresher.refresh_once() == 800.0 and len(entra.fetch_threads) == 1
    now[0] += 800
    await refresher.refresh_once()
    second = bearer(credentials)
    assert len(entra.fetch_threads) == 2 and second != first
    # Entra ID unreachable at the next renewal: retried soon, the current token is still served
    entra.fail = True
    now[0] += 1800
    assert await refresher.refresh_once() == RETRY_WAITS[0]
    assert await refresher.refresh_once() == RETRY_WAITS[1]
    assert refresher.failures == 2 and bearer(credentials) == second
    entra.fail = False
    await refresher.refresh_once()
    assert refresher.failures == 0 and bearer(credentials) not in (first, second)
    assert threading.get_ident() not in entra.fetch_threads


def test_renewal_schedule() -> None:
    hour = PrefetchedToken("t", 0.0, 3600.0)
    assert hour.refresh_at == 1800.0 and hour.usable(3000.0) and not hour.usable(3400.0)
    assert PrefetchedToken("t", 0.0, 5400.0).refresh_at == 2700.0  # Entra ID's 60-90 min tokens
    assert PrefetchedToken("t", 0.0, 86400.0).refresh_at == 43200.0
    assert PrefetchedToken("t", 0.0, 600.0).refresh_at == 0.0  # short-lived: at once


# --- OpenID signing keys (inbound token validation) -------------------------------------------------


@pytest_asyncio.fixture
async def openid() -> AsyncIterator[SimpleNamespace]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "key-1", "endorsements": ["msteams"]}
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
    port = runner.addresses[0][1]
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/openid", hits=hits)
    finally:
        await runner.cleanup()


async def test_signing_keys_are_preloaded_so_validation_does_no_http_on_the_loop(
    openid: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresher = AuthRefresher(CachingCredentialFactory(FakeEntra()), None, openid_urls=(openid.url,))
    await refresher.refresh_once()
    assert openid.hits == ["metadata", "keys"] and refresher.failures == 0

    def blocking_get(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("botbuilder fetched the signing keys on the event loop")

    monkeypatch.setattr(jwt_token_extractor, "requests", SimpleNamespace(get=blocking_get))
    found = await jwt_token_extractor.JwtTokenExtractor.get_open_id_metadata(openid.url).get("key-1")
    assert found is not None and found.endorsements == ["msteams"]


async def test_unreachable_signing_keys_are_retried_without_raising() -> None:
    refresher = AuthRefresher(CachingCredentialFactory(FakeEntra()), None,
                              openid_urls=("http://127.0.0.1:9/openid",))
    assert await refresher.refresh_once() == RETRY_WAITS[0]
    assert refresher.failures == 1


# --- the adapter: start-up offline, the poll worker, shutdown ----------------------------------------


async def test_startup_with_credentials_and_no_network_neither_hangs_nor_fails(tmp_path: Path) -> None:
    h = Harness(tmp_path, app_id="00000000-0000-0000-0000-000000000001", app_password="not-a-real-secret")
    await h.start()  # tests run offline: the real MSAL and OpenID requests fail in the background
    try:
        refresher = h.adapter.auth_refresher
        assert refresher is not None and refresher.running
        assert refresher.openid_urls == (channel_openid_url(),)
        await until(lambda: refresher.rounds >= 1, timeout=60.0, what="the first background round")
        assert refresher.failures == 1 and refresher.running
        status, _ = await h.post(h.alice.personal("still answering HTTP"))
        assert status == 401
    finally:
        await h.stop()
    assert not refresher.running and h.adapter.auth_refresher is None


def _adapter(tmp_path: Path, app_id: str | None) -> TeamsAdapter:
    settings = Settings(db=str(tmp_path / "bridge.db"), adapters=("teams",), teams_app_id=app_id,
                        teams_app_password="not-a-real-secret" if app_id else None)
    core = Services(settings=settings, store=Store(settings.db), relay=None, budgets=Budgets())  # type: ignore[arg-type]
    return TeamsAdapter(core)


async def test_poll_worker_start_keeps_tokens_fresh_and_loads_no_signing_keys(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, "00000000-0000-0000-0000-000000000002")
    await adapter.start(inbound=False)
    refresher = adapter.auth_refresher
    try:
        assert refresher is not None and refresher.running and refresher.openid_urls == ()
        await adapter.stop_inbound()  # nothing to stop: the token refresher keeps running
        assert refresher.running
    finally:
        await adapter.stop()
        await adapter.core.store.close()  # type: ignore[attr-defined]
    assert not refresher.running
    await adapter.stop()  # twice is harmless


async def test_without_an_app_id_nothing_runs_in_the_background(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, None)
    await adapter.start()
    await adapter.stop_inbound()
    assert adapter.auth_refresher is None
    await adapter.stop()
    await adapter.core.store.close()  # type: ignore[attr-defined]
