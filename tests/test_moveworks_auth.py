"""Auth providers against the simulator's real token endpoint over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge.moveworks.auth import (
    JWT_BEARER_GRANT,
    ApiKeyAuth,
    AuthConfigError,
    AuthProvider,
    ClientCredentialsAuth,
    UserJwtAuth,
)
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import AuthError, MoveworksUnavailable, NotFound, RateLimited
from bridge.simulator import Simulator, SimulatorConfig

ASSISTANT = "moveworks-bridge-dev"
ISSUER = "moveworks-bridge-tests"
AUDIENCE = "https://api.moveworks.ai"


def _rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


PRIVATE_PEM, PUBLIC_PEM = _rsa_pem()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _start(**overrides: Any) -> Simulator:
    config = dict(
        assistant_name=ASSISTANT,
        api_keys={"sim-key": "employee@example.com"},
        client_id="sim-client",
        client_secret="sim-secret",
        client_identity="service@example.com",
        token_ttl=3600,
        token_body="flat",
        pace=0,
        jwt_public_key=PUBLIC_PEM,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    config.update(overrides)
    sim = Simulator(SimulatorConfig(**config))
    await sim.start(host="127.0.0.1", port=0)
    return sim


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = await _start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def token_calls(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["method"] == "POST" and r["path"].endswith("/oauth/v1/token")]


# --------------------------------------------------------------------------- api_key
@pytest.mark.asyncio
async def test_api_key(sim):
    auth = ApiKeyAuth("sim-key")
    assert isinstance(auth, AuthProvider) and auth.per_employee is False
    assert await auth.bearer(None) == "sim-key" and await auth.bearer("x@example.com") == "sim-key"
    auth.invalidate(None, "sim-key")
    assert await auth.bearer(None) == "sim-key"
    assert "sim-key" not in repr(auth)
    async with MoveworksClient(sim.base_url, ASSISTANT, auth) as client:
        conv = await client.create_conversation(None)
    assert sim.requests[-1]["identity"] == "employee@example.com"
    assert conv.conversation_id
    with pytest.raises(AuthConfigError, match="MOVEWORKS_API_KEY"):
        ApiKeyAuth("")


# --------------------------------------------------------------------------- client_credentials
@pytest.mark.asyncio
@pytest.mark.parametrize("shape", ["flat", "data"])
async def test_client_credentials_body_shapes(shape):
    sim = await _start(token_body=shape)
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "sim-secret")
    try:
        assert isinstance(auth, AuthProvider) and auth.per_employee is False
        token = await auth.bearer(None)
        assert token and token != "sim-secret"
        assert await auth.bearer("ignored@example.com") == token  # cached, one identity
        assert len(token_calls(sim)) == 1
        async with MoveworksClient(sim.base_url, ASSISTANT, auth) as client:
            await client.list_conversations(None)
        assert sim.requests[-1]["identity"] == "service@example.com"
        assert "sim-secret" not in repr(auth)
    finally:
        await auth.aclose()
        await sim.stop()


@pytest.mark.asyncio
async def test_client_credentials_refreshes_before_expiry():
    sim = await _start(token_ttl=100)
    clock = Clock()
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "sim-secret", clock=clock)
    try:
        first = await auth.bearer(None)
        clock.now += 85  # within the lifetime minus the safety margin
        assert await auth.bearer(None) == first
        clock.now += 6  # 91 s: inside the last ~10 %, refresh early
        second = await auth.bearer(None)
        assert second != first and len(token_calls(sim)) == 2
        auth.invalidate(None, first)  # stale token: no effect on the current one
        assert await auth.bearer(None) == second
        auth.invalidate(None, second)
        assert await auth.bearer(None) != second and len(token_calls(sim)) == 3
    finally:
        await auth.aclose()
        await sim.stop()


@pytest.mark.asyncio
async def test_client_credentials_single_flight(sim):
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "sim-secret")
    try:
        tokens = await asyncio.gather(*(auth.bearer(None) for _ in range(50)))
        assert len(set(tokens)) == 1 and len(token_calls(sim)) == 1
    finally:
        await auth.aclose()


@pytest.mark.asyncio
async def test_client_credentials_refresh_after_expire_tokens_fault(sim, caplog):
    caplog.set_level(logging.DEBUG)
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "sim-secret")
    client = MoveworksClient(sim.base_url, ASSISTANT, auth, sleep=Sleeps())
    try:
        conv = await client.create_conversation(None)
        old = await auth.bearer(None)
        sim.inject_fault("expire_tokens")
        page = await client.list_conversations(None)
        assert [c.conversation_id for c in page.items] == [conv.conversation_id]
        new = await auth.bearer(None)
        assert new != old and len(token_calls(sim)) == 2
        assert "401" in caplog.text or "UNAUTHORIZED" in caplog.text  # the expiry was seen...
        for secret in (old, new, "sim-secret"):  # ...but no token or secret was logged
            assert secret not in caplog.text
    finally:
        await client.aclose()
        await auth.aclose()


@pytest.mark.asyncio
async def test_wrong_client_secret_is_auth_error_without_secrets(sim, caplog):
    caplog.set_level(logging.DEBUG)
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "hunter2-super-secret")
    client = MoveworksClient(sim.base_url, ASSISTANT, auth, sleep=Sleeps())
    try:
        with pytest.raises(AuthError) as info:
            await client.list_conversations(None)
        assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"
        assert len(token_calls(sim)) == 1  # a refused credential is not retried
        for text in (str(info.value), repr(info.value), caplog.text, repr(auth)):
            assert "hunter2-super-secret" not in text
    finally:
        await client.aclose()
        await auth.aclose()


@pytest.mark.asyncio
async def test_token_endpoint_rate_limit_and_outage(sim):
    sleeps = Sleeps()
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "sim-secret")
    client = MoveworksClient(sim.base_url, ASSISTANT, auth, sleep=sleeps)
    try:
        sim.inject_fault("rate_limit", endpoint="token", retry_after=3)
        with pytest.raises(RateLimited) as info:
            await auth.bearer(None)
        assert info.value.retry_after == 3
        sim.inject_fault("rate_limit", endpoint="token", retry_after=3)
        await client.list_conversations(None)  # the client retries a refused token request
        assert sleeps.calls == [3.0]
        auth.invalidate(None, await auth.bearer(None))
        sim.inject_fault("server_error", endpoint="token", count=3)
        with pytest.raises(MoveworksUnavailable):
            await client.list_conversations(None)
    finally:
        await client.aclose()
        await auth.aclose()


def test_config_errors_name_the_variable():
    with pytest.raises(AuthConfigError, match="MOVEWORKS_CLIENT_SECRET"):
        ClientCredentialsAuth("http://127.0.0.1:9/token", "id", "")
    with pytest.raises(AuthConfigError, match="MOVEWORKS_TOKEN_URL"):
        ClientCredentialsAuth("", "id", "secret")


# --------------------------------------------------------------------------- user_jwt
@pytest.mark.asyncio
async def test_user_jwt_per_employee_tokens(sim):
    auth = UserJwtAuth(sim.token_url, PRIVATE_PEM, ISSUER, AUDIENCE)
    client = MoveworksClient(sim.base_url, ASSISTANT, auth, sleep=Sleeps())
    try:
        assert auth.per_employee is True and isinstance(auth, AuthProvider)
        a1 = await auth.bearer("alice@example.com")
        b1 = await auth.bearer("bob@example.com")
        assert a1 != b1 and await auth.bearer("alice@example.com") == a1
        assert len(token_calls(sim)) == 2

        conv = await client.create_conversation("alice@example.com", title="Alice's")
        assert sim.requests[-1]["identity"] == "alice@example.com"
        with pytest.raises(NotFound):
            await client.get_conversation("bob@example.com", conv.conversation_id)
        assert (await client.list_conversations("bob@example.com")).items == ()
        assert [c.title for c in (await client.list_conversations("alice@example.com")).items] == ["Alice's"]

        with pytest.raises(AuthError):
            await auth.bearer(None)  # user_jwt acts as an employee, never as nobody
    finally:
        await client.aclose()
        await auth.aclose()


def test_user_jwt_assertion_claims():
    auth = UserJwtAuth("http://127.0.0.1:9/token", PRIVATE_PEM, ISSUER, AUDIENCE, assertion_ttl=7200)
    one = auth.assertion("carol@example.com")
    two = auth.assertion("carol@example.com")
    assert jwt.get_unverified_header(one)["alg"] == "RS256"
    claims = jwt.decode(one, PUBLIC_PEM, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == "carol@example.com"
    assert 0 < claims["exp"] - claims["iat"] <= 3600  # capped at one hour
    other = jwt.decode(two, PUBLIC_PEM, algorithms=["RS256"], audience=AUDIENCE)
    assert claims["jti"] != other["jti"]
    assert JWT_BEARER_GRANT == "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.mark.asyncio
async def test_user_jwt_single_flight_per_employee(sim):
    auth = UserJwtAuth(sim.token_url, PRIVATE_PEM, ISSUER, AUDIENCE)
    try:
        tokens = await asyncio.gather(*(auth.bearer("a@x.example") for _ in range(50)))
        assert len(set(tokens)) == 1 and len(token_calls(sim)) == 1
        mixed = await asyncio.gather(*(auth.bearer(f"user{i % 3}@x.example") for i in range(30)))
        assert len(set(mixed)) == 3 and len(token_calls(sim)) == 4
    finally:
        await auth.aclose()


@pytest.mark.asyncio
async def test_user_jwt_single_flight_shares_failures(sim):
    auth = UserJwtAuth(sim.token_url, PRIVATE_PEM, ISSUER, "https://wrong-audience.example")
    try:
        results = await asyncio.gather(*(auth.bearer("a@x.example") for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results)
        assert len(token_calls(sim)) == 1
        assert results[0].status == 400 and results[0].code == "INVALID_GRANT"
    finally:
        await auth.aclose()


@pytest.mark.asyncio
async def test_user_jwt_refresh_after_expiry_via_client(sim):
    auth = UserJwtAuth(sim.token_url, PRIVATE_PEM, ISSUER, AUDIENCE)
    client = MoveworksClient(sim.base_url, ASSISTANT, auth, sleep=Sleeps())
    try:
        await client.create_conversation("dave@example.com")
        sim.inject_fault("expire_tokens")
        page = await client.list_conversations("dave@example.com")
        assert len(page.items) == 1 and len(token_calls(sim)) == 2
    finally:
        await client.aclose()
        await auth.aclose()


@pytest.mark.asyncio
async def test_user_jwt_key_from_file_and_secrets_stay_out_of_errors(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "key.pem"
    path.write_text(PRIVATE_PEM)
    auth = UserJwtAuth(sim.token_url, str(path), ISSUER, "https://wrong-audience.example")
    try:
        with pytest.raises(AuthError) as info:
            await auth.bearer("erin@example.com")
        body = PRIVATE_PEM.splitlines()[1]
        for text in (str(info.value), caplog.text, repr(auth)):
            assert body not in text and "eyJ" not in text  # no key material, no assertion
    finally:
        await auth.aclose()

    escaped = PRIVATE_PEM.replace("\n", "\\n")  # as it often arrives through an env var
    ok = UserJwtAuth(sim.token_url, escaped, ISSUER, AUDIENCE)
    try:
        assert await ok.bearer("erin@example.com")
    finally:
        await ok.aclose()


def test_user_jwt_bad_keys_are_clear():
    garbage = "-----BEGIN PRIVATE KEY-----\nTm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----"
    with pytest.raises(ValueError, match="MOVEWORKS_JWT_PRIVATE_KEY") as info:
        UserJwtAuth("http://127.0.0.1:9/token", garbage, ISSUER, AUDIENCE)
    assert "Tm90IGEga2V5" not in str(info.value)
    assert isinstance(info.value, AuthError)

    with pytest.raises(AuthConfigError, match="MOVEWORKS_JWT_PRIVATE_KEY"):
        UserJwtAuth("http://127.0.0.1:9/token", "/no/such/key.pem", ISSUER, AUDIENCE)
    with pytest.raises(AuthConfigError, match="MOVEWORKS_JWT_PRIVATE_KEY"):
        UserJwtAuth("http://127.0.0.1:9/token", "", ISSUER, AUDIENCE)

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(AuthConfigError, match="RSA"):
        UserJwtAuth("http://127.0.0.1:9/token", ec_pem, ISSUER, AUDIENCE)
    with pytest.raises(AuthConfigError, match="MOVEWORKS_JWT_AUDIENCE"):
        UserJwtAuth("http://127.0.0.1:9/token", PRIVATE_PEM, ISSUER, "")
