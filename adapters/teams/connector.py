"""Outbound Bot Framework calls through botbuilder's own `CloudAdapter`, and their errors.

Every write runs in a continued turn (`continue_conversation` with a stored reference), so the
answer outlives the inbound HTTP turn. The continuation activity's synthetic id is cleared first:
otherwise botbuilder posts each message as a reply to that random id; without it,
messages go to the conversation itself, which in a channel is the reply chain
(`19:…;messageid=<root>`).

botbuilder creates new app credentials, and therefore a new MSAL client and token request, for
every connector it builds. `CachingCredentialFactory` keeps one credentials object per scope so
tokens are reused; validation and token logic remain botbuilder's.

botbuilder gets tokens synchronously on the event loop: msrest's credentials policy calls
`signed_session()`, which asks MSAL, which does HTTP (authority discovery, then the token request)
on the first call and whenever the token nears expiry; inbound, `_OpenIdMetadata` fetches the
channel's signing keys with `requests` on the loop once a day. Either stalls every answer on every
platform. `AuthRefresher` therefore does that HTTP in a background thread: it fetches each token
with fresh credentials (an empty MSAL cache, so it really asks Entra ID), well before the current
one expires, and the credentials botbuilder uses answer from that prefetched token; it also keeps
the OpenID signing keys loaded. Nothing falls back to botbuilder's blocking fetches: a send waits
(off the loop, at most `TOKEN_WAIT` s) for a token in `run_in_conversation`, and a credentials
object asked for a token there is none of raises `TokenNotReady` (a transient `PlatformError`)
instead of blocking; inbound signing keys come from keys.py's `SigningKeys`.

`to_platform_error` maps connector failures onto the core's errors: 429 → `PlatformRateLimited` (with
Retry-After), 412/5xx/network → transient `PlatformError`, 403 writes blocked / bot removed and
404 conversation → permanent; the streaming 403s get their own subclasses. Any other 4xx is Teams
refusing this one message (`MessageRefused`, permanent: sending it again cannot help, but the
conversation stays writable), so the caller sends it without its extras instead of retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import jwt
from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import ConversationReference
from botframework.connector.auth import (
    AppCredentials,
    AuthenticationConstants,
    MicrosoftAppCredentials,
    ServiceClientCredentialsFactory,
)
from botframework.connector.auth.channel_validation import ChannelValidation
from msal import ConfidentialClientApplication
from msrest.exceptions import HttpOperationError

from bridge.errors import PlatformError, PlatformRateLimited, StreamExpired
from bridge.moveworks.auth import parse_retry_after
from bridge.process.config import Settings

from .keys import fetch_signing_keys, in_thread, install_signing_keys, use_signing_keys

__all__ = ["fetch_signing_keys"]  # re-exported: where it lived before keys.py

log = logging.getLogger("adapters.teams")

T = TypeVar("T")
# Worth retrying: 412 and 5xx (Teams' rate-limit doc), 408 (a request timeout is the network's),
# plus 429 and network failures, handled on their own. Every other 4xx refuses this request.
TRANSIENT_STATUSES = frozenset({408, 412})


class StreamTimedOut(StreamExpired):
    """403 "Content stream finished due to exceeded streaming time" (the 2-minute limit)."""


class StreamCanceled(PlatformError):
    """403 "Content stream was canceled by user" (the Stop button)."""


class StreamNotAllowed(PlatformError):
    """Native streaming refused here (403 ContentStreamNotAllowed, 405): use edits instead."""


class MessageRefused(PlatformError):
    """Teams refused this message (400 BadSyntax/BadRequest, 413 too large, …): retrying the same
    request cannot help, yet the conversation is still writable (nothing is forgotten)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


def refused(exc: BaseException) -> bool:
    """True when Teams refused a message's content (send it again without extras, or give up)."""
    return isinstance(exc, MessageRefused)


CredentialsKey = tuple[str, str, str, bool]  # app id, OAuth scope, login endpoint, validate authority

HTTP_TIMEOUT = 10.0  # one token or metadata HTTP request
FETCH_TIMEOUT = 30.0  # one background fetch (MSAL's authority discovery + the token request)
TOKEN_WAIT = 15.0  # longest a send waits for a token being fetched
TOKEN_USABLE_MARGIN = 5 * 60.0  # a prefetched token with less left is not used (MSAL's own margin)
TOKEN_REFRESH_LEAD = 30 * 60.0  # fetch the next token at half its lifetime or 30 min before expiry
ASSUMED_LIFETIME = 55 * 60.0  # a token whose expiry cannot be read (Entra ID's last about an hour)
OPENID_INTERVAL = 6 * 3600.0  # botbuilder re-reads the signing keys itself when a day old
MIN_WAIT = 30.0
MAX_WAIT = 30 * 60.0
RETRY_WAITS = (30.0, 60.0, 120.0, 300.0)  # after failed fetches, in turn; then the last again


class TokenNotReady(Exception):
    """No Bot Framework token yet (or only an expired one): the send fails, transiently, rather
    than blocking the event loop on botbuilder's own token request."""


@dataclass(frozen=True)
class PrefetchedToken:
    value: str
    fetched_at: float
    expires_at: float

    def usable(self, now: float) -> bool:
        return self.expires_at - now > TOKEN_USABLE_MARGIN

    def valid(self, now: float) -> bool:
        return self.expires_at - now > 30.0

    @property
    def refresh_at(self) -> float:
        lifetime = self.expires_at - self.fetched_at
        return self.fetched_at + max(0.0, min(lifetime / 2, lifetime - TOKEN_REFRESH_LEAD))


def token_expiry(token: str, now: float) -> float:
    """The `exp` of a JWT access token (not verified: it is our own token), else a guess."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except (jwt.PyJWTError, ValueError, TypeError):
        exp = None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else now + ASSUMED_LIFETIME


async def off_loop(fn: Callable[[], T], timeout: float) -> T:
    """`fn()` in a daemon thread, waited for at most `timeout` s. Like `run_in_executor`, but a
    request that hangs cannot hold up the loop's or the interpreter's shutdown."""
    return await asyncio.wait_for(in_thread(fn), timeout)


class CachingCredentialFactory(ServiceClientCredentialsFactory):
    """botbuilder's configuration factory, with credentials (and their token cache) reused, and
    tokens prefetched off the event loop (see the module docstring)."""

    def __init__(self, inner: ServiceClientCredentialsFactory, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._inner = inner
        self._cache: dict[CredentialsKey, Any] = {}
        self._tokens: dict[CredentialsKey, PrefetchedToken] = {}
        self._kept: list[CredentialsKey] = []  # keys whose tokens the refresher keeps fresh
        self._fetching: dict[CredentialsKey, asyncio.Future[PrefetchedToken]] = {}
        self.clock = clock

    async def is_valid_app_id(self, app_id: str) -> bool:
        return await self._inner.is_valid_app_id(app_id)

    async def is_authentication_disabled(self) -> bool:
        return await self._inner.is_authentication_disabled()

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Any:
        key = (app_id or "", oauth_scope or "", login_endpoint or "", bool(validate_authority))
        credentials = self._cache.get(key)
        if credentials is None:
            credentials = await self._inner.create_credentials(app_id, oauth_scope, login_endpoint,
                                                               validate_authority)
            self._serve_prefetched(key, credentials)
            self._cache[key] = credentials
        return credentials

    def _serve_prefetched(self, key: CredentialsKey, credentials: Any) -> None:
        """Make `credentials.get_access_token` (called by `signed_session` on the loop) answer
        from the prefetched token; botbuilder's own MSAL path stays as the fallback."""
        if not isinstance(credentials, AppCredentials) or not credentials.microsoft_app_id:
            return  # no app id: requests carry no token
        def get_access_token(force_refresh: bool = False) -> str:
            token = self._tokens.get(key)
            if token is not None and token.valid(self.clock()):
                return token.value  # nearly expired still beats blocking: a fresh one is on its way
            # botbuilder's own fetch would block the event loop (MSAL has no timeout): fail this
            # send instead; `run_in_conversation` waits for a token off the loop before sending.
            raise TokenNotReady("no Bot Framework token yet; it is being fetched in the background")

        credentials.get_access_token = get_access_token
        self._kept.append(key)

    def kept(self) -> list[CredentialsKey]:
        return list(self._kept)

    def token(self, key: CredentialsKey) -> PrefetchedToken | None:
        return self._tokens.get(key)

    async def ensure(self, key: CredentialsKey, timeout: float = TOKEN_WAIT) -> None:
        """Return once `key` has a usable token, fetching one (off the loop) if needed; raise
        `TokenNotReady` when none arrives within `timeout` s."""
        token = self._tokens.get(key)
        if key not in self._kept or (token is not None and token.usable(self.clock())):
            return
        try:
            await asyncio.wait_for(self.refresh(key, timeout), timeout)
        except Exception as exc:  # noqa: BLE001 - offline, wrong secret, Entra ID hanging
            token = self._tokens.get(key)
            if token is None or not token.valid(self.clock()):
                raise TokenNotReady(f"no Bot Framework token ({type(exc).__name__})") from None

    async def refresh(self, key: CredentialsKey, timeout: float = FETCH_TIMEOUT) -> PrefetchedToken:
        """Fetch a new token for `key` in a background thread (or join the fetch under way),
        through fresh credentials (an empty MSAL cache, so this really asks Entra ID instead of
        returning the cached token)."""
        loop = asyncio.get_running_loop()
        running = self._fetching.get(key)
        if running is None or running.done() or running.get_loop() is not loop:
            running = asyncio.ensure_future(self._fetch(key, timeout))
            running.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
            self._fetching[key] = running
        return await asyncio.shield(running)

    async def _fetch(self, key: CredentialsKey, timeout: float) -> PrefetchedToken:
        fresh = await self._inner.create_credentials(*key)

        def fetch() -> str:  # MSAL's client does HTTP from its constructor on: all in the thread
            bound_msal_requests(fresh)
            return fresh.get_access_token()

        value = await off_loop(fetch, timeout)
        now = self.clock()
        token = PrefetchedToken(value, now, token_expiry(value, now))
        self._tokens[key] = token
        return token


def bound_msal_requests(credentials: Any) -> None:
    """botbuilder builds its MSAL client without an HTTP timeout; give fresh password credentials
    one with `HTTP_TIMEOUT` (other kinds are bounded by `FETCH_TIMEOUT` alone)."""
    if isinstance(credentials, MicrosoftAppCredentials) and getattr(credentials, "app", None) is None:
        credentials.app = ConfidentialClientApplication(
            client_id=credentials.microsoft_app_id,
            client_credential=credentials.microsoft_app_password,
            authority=credentials.oauth_endpoint,
            timeout=HTTP_TIMEOUT,
        )


def outbound_credentials_key(cloud: CloudAdapter, app_id: str) -> CredentialsKey:
    """The key botbuilder's connector factory asks `create_credentials` for (outbound calls)."""
    auth = cloud.bot_framework_authentication
    inner = getattr(auth, "_inner", auth)
    login = getattr(inner, "_login_endpoint", None) or AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX
    return (app_id, auth.get_originating_audience(), login, True)


def channel_openid_url() -> str:
    """Where botbuilder reads the Bot Framework channel's signing keys (inbound tokens)."""
    return (ChannelValidation.open_id_metadata_endpoint
            or AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)


class AuthRefresher:
    """Background task: keeps the bot's tokens and the channel's signing keys fresh, fetching
    them in a background thread so the event loop never waits for Entra ID or the Bot Framework.
    Never raises: failures are logged and retried with back-off."""

    def __init__(self, credentials: CachingCredentialFactory, key: CredentialsKey | None, *,
                 openid_urls: Iterable[str] = (), fetch_timeout: float = FETCH_TIMEOUT) -> None:
        self.credentials = credentials
        self.key = key
        self.openid_urls = tuple(openid_urls)
        self.fetch_timeout = fetch_timeout
        self.failures = 0  # consecutive failed rounds
        self.rounds = 0
        self._openid_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="teams-auth-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                if self.key is not None:  # the outbound credentials exist before the first send
                    await self.credentials.create_credentials(*self.key)  # cached after the first
                wait = await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("teams auth refresher failed unexpectedly", exc_info=True)
                wait = RETRY_WAITS[-1]
            await asyncio.sleep(wait)

    async def refresh_once(self) -> float:
        """Fetch what is due; return how long to sleep before the next round."""
        now = self.credentials.clock()
        waits: list[float] = [MAX_WAIT]
        failed = False
        for key in self.credentials.kept():
            token = self.credentials.token(key)
            if token is None or now >= token.refresh_at:
                try:
                    token = await self.credentials.refresh(key, self.fetch_timeout)
                except Exception as exc:  # noqa: BLE001 - offline, wrong secret, Entra ID down
                    failed = True
                    log.warning("teams: could not fetch a Bot Framework token in the background "
                                "(%s: %s); will retry", type(exc).__name__, str(exc)[:200] or "timed out")
                    continue
            waits.append(token.refresh_at - self.credentials.clock())
        if self.openid_urls:
            if self._openid_at is None or now - self._openid_at >= OPENID_INTERVAL:
                try:
                    await self._load_signing_keys()
                    self._openid_at = self.credentials.clock()
                except Exception as exc:  # noqa: BLE001
                    failed = True
                    log.warning("teams: could not load the Bot Framework signing keys in the background "
                                "(%s: %s); will retry", type(exc).__name__, str(exc)[:200] or "timed out")
            if self._openid_at is not None:
                waits.append(self._openid_at + OPENID_INTERVAL - self.credentials.clock())
        self.rounds += 1
        if failed:
            self.failures += 1
            waits.append(RETRY_WAITS[min(self.failures, len(RETRY_WAITS)) - 1])
        else:
            self.failures = 0
        return min(max(min(waits), MIN_WAIT), MAX_WAIT)

    async def _load_signing_keys(self) -> None:
        for url in self.openid_urls:
            await install_signing_keys(url).refresh(self.fetch_timeout)  # botbuilder's shared cache


def bot_configuration(settings: Settings) -> SimpleNamespace:
    """The attribute names botbuilder's configuration classes read."""
    return SimpleNamespace(
        APP_ID=settings.teams_app_id or "",
        APP_PASSWORD=settings.teams_app_password or "",
        APP_TYPE=settings.teams_app_type or "MultiTenant",
        APP_TENANTID=settings.teams_app_tenant_id or "",
    )


_FACTORIES: weakref.WeakKeyDictionary[CloudAdapter, CachingCredentialFactory] = weakref.WeakKeyDictionary()


def build_cloud_adapter(settings: Settings) -> tuple[CloudAdapter, CachingCredentialFactory]:
    use_signing_keys(settings.teams_openid_metadata_url)  # inbound keys never fetched on the loop
    config = bot_configuration(settings)
    credentials = CachingCredentialFactory(ConfigurationServiceClientCredentialFactory(config))
    auth = ConfigurationBotFrameworkAuthentication(config, credentials_factory=credentials)
    cloud = CloudAdapter(auth)
    _FACTORIES[cloud] = credentials
    return cloud, credentials


async def token_ready(cloud: CloudAdapter, app_id: str) -> None:
    """Wait (off the loop) until outbound calls of `cloud` have a token; `TokenNotReady` if none
    comes. Nothing to wait for without an app id (unauthenticated development mode)."""
    credentials = _FACTORIES.get(cloud)
    if credentials is not None and app_id:
        await credentials.ensure(outbound_credentials_key(cloud, app_id))


async def run_in_conversation(
    cloud: CloudAdapter,
    app_id: str,
    reference: ConversationReference,
    fn: Callable[[TurnContext], Awaitable[T]],
) -> T:
    """Run `fn` in a continued turn of `reference` and return its result."""
    result: list[T] = []

    async def callback(context: TurnContext) -> None:
        context.activity.id = None  # send into the conversation, not as a reply to a random id
        result.append(await fn(context))

    await token_ready(cloud, app_id)
    await cloud.continue_conversation(reference, callback, app_id)
    return result[0]


def error_details(exc: BaseException) -> tuple[int | None, str, str, dict[str, str]]:
    """(HTTP status, error code, message, headers) of a connector failure."""
    if isinstance(exc, HttpOperationError):
        response = exc.response
        status = getattr(response, "status_code", None)
        headers = dict(getattr(response, "headers", None) or {})
        code, message = "", ""
        error = getattr(getattr(exc, "error", None), "error", None)
        if error is not None:
            code, message = error.code or "", error.message or ""
        if not code and not message:
            text = _body_text(response)
            try:
                body = json.loads(text).get("error") or {}
                code, message = str(body.get("code") or ""), str(body.get("message") or "")
            except (ValueError, AttributeError):
                message = text[:300]
        if "MessageWritesBlocked" in _body_text(response):
            code = code or "MessageWritesBlocked"
            message = f"{message} (MessageWritesBlocked)"
        return status, code, message, headers
    return None, type(exc).__name__, str(exc)[:300], {}


def _body_text(response: Any) -> str:
    try:
        text = response.text() if callable(getattr(response, "text", None)) else getattr(response, "text", "")
    except Exception:  # noqa: BLE001
        return ""
    return str(text or "")


def to_platform_error(exc: BaseException, op: str) -> PlatformError:
    error = _classify(exc, op)
    error.status = error_details(exc)[0]  # type: ignore[attr-defined]
    return error


def _classify(exc: BaseException, op: str) -> PlatformError:
    status, code, message, headers = error_details(exc)
    detail = f"teams {op}: {status or ''} {code} {message}".strip()
    lowered = message.lower()
    if status == 429:
        return PlatformRateLimited(detail, retry_after=parse_retry_after(headers.get("Retry-After")))
    if status == 403 and ("streaming time" in lowered or "exceeded" in lowered and "stream" in lowered):
        return StreamTimedOut(detail)
    if status == 403 and "cancel" in lowered:
        return StreamCanceled(detail)
    if status == 405 or (status == 403 and code == "ContentStreamNotAllowed"):
        return StreamNotAllowed(detail)
    if status == 401:  # our credentials, not the conversation: keep every reference
        return PlatformError(detail)
    if status == 403:
        return PlatformError(detail, permanent=True)
    if status == 404:
        # A missing conversation is permanent; a missing message (deleted by a user) is not.
        return PlatformError(detail, permanent=op in ("post", "create"))
    if status is None or status in TRANSIENT_STATUSES or status >= 500:
        return PlatformError(detail)  # network failures, timeouts, 412, 5xx: try again
    return MessageRefused(detail)  # 400 BadSyntax, 413 too large, …: send it differently
