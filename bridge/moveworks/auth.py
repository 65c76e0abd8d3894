"""Bearer-token providers for the three `MOVEWORKS_AUTH` modes.

* `ApiKeyAuth` — one static key, one identity for everyone.
* `ClientCredentialsAuth` — OAuth2 client credentials at the token URL, cached until shortly
  before `expires_in`, refreshed single-flight.
* `UserJwtAuth` — service-to-service: a short-lived RS256 assertion whose `sub` is the employee's
  email is exchanged (jwt-bearer grant) for a bearer acting as that employee; cached per employee,
  refreshed single-flight per employee.

Secrets (API keys, client secrets, private keys, assertions, access tokens) never appear in
exception messages, logs or reprs: every one of them is registered with the process-wide secret
registry (`bridge.process.logs.remember_secret`; access tokens and assertions until shortly after
they expire), which the log formatters and the error paths here and in transport.py scrub with.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.process.logs import remember_secret, scrub

from .errors import AuthError, MoveworksUnavailable, RateLimited, TokenTimeout

log = logging.getLogger("bridge.moveworks")

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_TOKEN_TTL = 60.0  # when the token endpoint omits expires_in (current docs: 60 s tokens)
SECRET_GRACE = 600.0  # an issued token stays masked this long after it expires (late echoes)
MAX_ASSERTION_TTL = 3600
TOKEN_READ_TIMEOUT = 10.0  # seconds


class AuthConfigError(AuthError, ValueError):
    """A missing or malformed auth setting; the message names the variable, never its value."""


@runtime_checkable
class AuthProvider(Protocol):
    per_employee: bool
    """True only for user_jwt: each employee email is its own Moveworks identity."""

    async def bearer(self, identity: str | None) -> str:
        """A bearer token for `identity` (the employee email; ignored unless per_employee)."""
        ...

    def invalidate(self, identity: str | None, token: str) -> None:
        """A request made with `token` got 401: forget it if it is still the cached one."""
        ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or HTTP date); None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def _cache_lifetime(expires_in: float) -> float:
    """How long to reuse a token: `expires_in` minus ~10 % (at least a few seconds)."""
    margin = max(expires_in * 0.1, min(5.0, expires_in / 2))
    return max(0.0, expires_in - margin)


def _require(value: str | None, variable: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AuthConfigError(f"{variable} is not set")
    return value.strip()


class ApiKeyAuth:
    """`MOVEWORKS_AUTH=api_key`: the same key (and Moveworks user) for every request."""

    per_employee = False

    def __init__(self, api_key: str) -> None:
        self._api_key = _require(api_key, "MOVEWORKS_API_KEY")
        remember_secret(self._api_key)

    async def bearer(self, identity: str | None) -> str:
        return self._api_key

    def invalidate(self, identity: str | None, token: str) -> None:
        """Nothing to refresh: a rejected API key stays rejected."""

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=***)"


class _TokenExchangeAuth:
    """Shared machinery: token endpoint call, expiry cache, single-flight refresh per key."""

    per_employee = False
    _what = "credentials"
    _max_cache = 10_000

    def __init__(
        self,
        token_url: str,
        *,
        http: httpx.AsyncClient | None,
        clock: Callable[[], float],
    ) -> None:
        self._token_url = _require(token_url, "MOVEWORKS_TOKEN_URL")
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            # A token comes back in well under a second; a hanging endpoint must end the
            # question kindly within seconds, not hold it for a minute.
            timeout=httpx.Timeout(connect=5.0, read=TOKEN_READ_TIMEOUT, write=10.0, pool=10.0)
        )
        self._clock = clock
        self._cache: dict[str | None, tuple[str, float]] = {}
        self._inflight: dict[str | None, asyncio.Future[str]] = {}
        self.token_requests = 0  # observability / tests

    # -- to be provided by subclasses --------------------------------------------------------
    def _key(self, identity: str | None) -> str | None:
        return None

    def _form(self, key: str | None) -> tuple[dict[str, str], list[str]]:
        """The token request form and the secret values it contains (scrubbed from errors)."""
        raise NotImplementedError

    # -- AuthProvider ------------------------------------------------------------------------
    async def bearer(self, identity: str | None) -> str:
        key = self._key(identity)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._refresh(key))
            self._inflight[key] = future
            future.add_done_callback(functools.partial(self._refresh_done, key))
        # shield: a cancelled caller must not cancel the refresh other callers are waiting for
        return await asyncio.shield(future)

    def invalidate(self, identity: str | None, token: str) -> None:
        try:
            key = self._key(identity)
        except AuthError:
            return
        cached = self._cache.get(key)
        if cached is not None and cached[0] == token:
            del self._cache[key]
            log.info("moveworks auth: dropped a rejected token (%s)", self._describe(key))

    async def aclose(self) -> None:
        for future in list(self._inflight.values()):
            future.cancel()
        self._cache.clear()
        if self._own_http:
            await self._http.aclose()

    # -- internals ---------------------------------------------------------------------------
    def _describe(self, key: str | None) -> str:
        return "service identity" if key is None else f"identity {key}"

    def _refresh_done(self, key: str | None, future: asyncio.Future[str]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # mark retrieved: every waiter already got it through shield()

    async def _refresh(self, key: str | None) -> str:
        form, secrets = self._form(key)
        token, expires_in = await self._exchange(form, secrets)
        ttl = expires_in if expires_in is not None else DEFAULT_TOKEN_TTL
        remember_secret(token, ttl + SECRET_GRACE)  # masked wherever an upstream echoes it
        self._store(key, token, self._clock() + _cache_lifetime(ttl))
        log.debug("moveworks auth: new token for %s, expires in %.0fs", self._describe(key), ttl)
        return token

    def _store(self, key: str | None, token: str, until: float) -> None:
        if len(self._cache) >= self._max_cache:
            now = self._clock()
            for k in [k for k, (_, exp) in self._cache.items() if exp <= now]:
                del self._cache[k]
            while len(self._cache) >= self._max_cache:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (token, until)

    async def _exchange(self, form: dict[str, str], secrets: list[str]) -> tuple[str, float | None]:
        self.token_requests += 1
        try:
            resp = await self._http.post(
                self._token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.TimeoutException as exc:
            log.warning("moveworks auth: token endpoint timed out (%s)", type(exc).__name__)
            raise TokenTimeout("Moveworks token endpoint did not answer in time") from None
        except httpx.HTTPError as exc:
            log.warning("moveworks auth: token endpoint unreachable: %s", type(exc).__name__)
            # `from None`: the chained httpx exception carries the request, whose body has secrets
            raise MoveworksUnavailable(
                f"Moveworks token endpoint unreachable ({type(exc).__name__})"
            ) from None

        root = resp.headers.get("x-moveworks-root-uuid") or resp.headers.get("x-trace-id")
        body: Any
        try:
            body = resp.json()
        except ValueError:
            body = None

        if resp.status_code == 200:
            data: Any = body.get("data") if isinstance(body, dict) and isinstance(body.get("data"), dict) else body
            token = data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                log.warning("moveworks auth: token endpoint answered 200 without access_token root_uuid=%s", root)
                raise MoveworksUnavailable(
                    "Moveworks token endpoint returned no access_token", status=200, root_uuid=root
                )
            expires_in: float | None = None
            raw = data.get("expires_in")
            try:
                if raw is not None and not isinstance(raw, bool):
                    expires_in = max(0.0, float(raw))
            except (TypeError, ValueError):
                expires_in = None
            return token, expires_in

        code, detail = _token_error_detail(body, secrets)
        status = resp.status_code
        text = f"Moveworks token endpoint refused the {self._what} (HTTP {status}"
        text += f", {code})" if code else ")"
        if detail:
            text += f": {detail}"
        log.warning(
            "moveworks auth: token request failed status=%s code=%s root_uuid=%s", status, code, root
        )
        if status == 429:
            raise RateLimited(
                text, retry_after=parse_retry_after(resp.headers.get("retry-after")),
                status=status, code=code, root_uuid=root,
            )
        if status in (400, 401, 403):
            raise AuthError(text, status=status, code=code, root_uuid=root)
        raise MoveworksUnavailable(text, status=status, code=code, root_uuid=root)


def _token_error_detail(body: Any, secrets: list[str]) -> tuple[str | None, str | None]:
    """(code, message) of a token endpoint's error body, scrubbed of `secrets` and every known
    secret before they are shortened (a cut-off secret would no longer be recognised)."""
    if not isinstance(body, dict):
        return None, None
    err = body.get("error")
    if isinstance(err, dict):  # {"error": {"code", "message"}}
        code, message = err.get("code"), err.get("message")
    elif isinstance(err, str):  # OAuth style {"error": "invalid_client", "error_description"}
        code, message = err, body.get("error_description") or body.get("message")
    else:  # flat {"code", "message"}
        code, message = body.get("code"), body.get("message")
    def clean(value: Any) -> str:
        text = str(value)
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return scrub(text)

    code = clean(code)[:60] if code else None
    message = " ".join(clean(message).split())[:200] if message else None
    return code, message


class ClientCredentialsAuth(_TokenExchangeAuth):
    """`MOVEWORKS_AUTH=client_credentials`: one service identity, token refreshed before expiry."""

    _what = "client credentials"

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_id = _require(client_id, "MOVEWORKS_CLIENT_ID")
        self._client_secret = _require(client_secret, "MOVEWORKS_CLIENT_SECRET")
        remember_secret(self._client_secret)
        super().__init__(token_url, http=http, clock=clock)

    def _form(self, key: str | None) -> tuple[dict[str, str], list[str]]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        return form, [self._client_secret]

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self._token_url!r}, client_id={self._client_id!r}, client_secret=***)"


def load_private_key(value: str) -> rsa.RSAPrivateKey:
    """An RSA private key from a PEM string (literal `\\n` tolerated) or a path to a PEM file."""
    if not isinstance(value, str) or not value.strip():
        raise AuthConfigError("MOVEWORKS_JWT_PRIVATE_KEY is not set")
    text = value.strip()
    data: bytes | None
    if "-----BEGIN" in text:
        data = text.replace("\\n", "\n").encode()
    else:
        try:
            path = Path(text).expanduser()
            data = path.read_bytes() if path.is_file() else None
        except (OSError, ValueError):
            data = None
        if data is None:
            raise AuthConfigError(
                "MOVEWORKS_JWT_PRIVATE_KEY is neither a PEM private key nor the path of a readable PEM file"
            )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuthConfigError(
            "MOVEWORKS_JWT_PRIVATE_KEY could not be loaded as an unencrypted PEM private key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthConfigError("MOVEWORKS_JWT_PRIVATE_KEY must be an RSA private key (RS256)")
    return key


class UserJwtAuth(_TokenExchangeAuth):
    """`MOVEWORKS_AUTH=user_jwt`: one Moveworks bearer per employee via a signed RS256 assertion."""

    per_employee = True
    _what = "signed assertion"

    def __init__(
        self,
        token_url: str,
        private_key_pem: str,
        issuer: str,
        audience: str,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        assertion_ttl: int = 300,
        key_id: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._private_key = load_private_key(private_key_pem)
        self._issuer = _require(issuer, "MOVEWORKS_JWT_ISSUER")
        self._audience = _require(audience, "MOVEWORKS_JWT_AUDIENCE")
        self._assertion_ttl = int(min(max(assertion_ttl, 10), MAX_ASSERTION_TTL))
        self._key_id = key_id
        self._wall_clock = wall_clock
        super().__init__(token_url, http=http, clock=clock)

    def _key(self, identity: str | None) -> str:
        if not isinstance(identity, str) or "@" not in identity or not identity.strip():
            raise AuthError("user_jwt mode needs the employee's email as the identity")
        return identity.strip().lower()

    def assertion(self, identity: str) -> str:
        """A fresh signed assertion for `identity` (exposed for diagnostics; it is a secret)."""
        now = int(self._wall_clock())
        claims = {
            "sub": identity.strip(),
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._assertion_ttl,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self._key_id} if self._key_id else None
        signed = jwt.encode(claims, self._private_key, algorithm="RS256", headers=headers)
        remember_secret(signed, self._assertion_ttl + SECRET_GRACE)
        return signed

    def _form(self, key: str | None) -> tuple[dict[str, str], list[str]]:
        assert key is not None
        signed = self.assertion(key)
        return {"grant_type": JWT_BEARER_GRANT, "assertion": signed}, [signed]

    def __repr__(self) -> str:
        return (
            f"UserJwtAuth(token_url={self._token_url!r}, issuer={self._issuer!r}, "
            f"audience={self._audience!r}, private_key=***)"
        )


__all__ = [
    "AuthConfigError",
    "AuthProvider",
    "ApiKeyAuth",
    "ClientCredentialsAuth",
    "UserJwtAuth",
    "parse_retry_after",
    "load_private_key",
    "JWT_BEARER_GRANT",
]
