"""HTTP plumbing of the Moveworks client, and the one place its retry policy is decided.

Every endpoint goes through `Transport`, so every call fails alike: typed errors (errors.py) carrying
HTTP status, API error code and `x-moveworks-root-uuid`; explicit timeouts (JSON calls: connect 5 s /
read 30 s; stream: read 90 s between bytes); jittered exponential backoff honouring `Retry-After`;
a 401 drops the cached token and retries once with a fresh one. Upstream error text (JSON
`message`/`code`, an HTML page's title) is scrubbed of the bearer sent and of every other known
credential (`bridge.process.logs.scrub`) before it becomes an exception message or a log line.

Retry policy per call:

=====================  ==========================================================================
GET calls              429, 500, 502, 503, 504, network errors and timeouts.
create_conversation    429 and connect-phase failures only. The POST is not idempotent: after a
                       5xx or a timeout the conversation may exist already, and a retry would
                       leave an orphan conversation (and hand the caller a different id than the
                       server may later associate with the attempt). A 429 is refused before
                       processing, so it is safe.
submit_feedback        429 and connect-phase failures only (a rating is not worth a double post).
create_response /      429 and connect-phase failures are retried; 5xx, timeouts and dropped
stream                 connections are *ambiguous*: the client lists the newest messages and, if
                       the user turn registered, continues with its response id; else it retries
                       (streaming.py).
=====================  ==========================================================================

`max_retries` bounds the total number of attempts of one call (a 401 token refresh is extra).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from bridge.process.logs import scrub

from .auth import AuthProvider, parse_retry_after
from .errors import (
    AuthError,
    InvalidRequest,
    MoveworksError,
    MoveworksUnavailable,
    NotFound,
    RateLimited,
    TokenTimeout,
)

log = logging.getLogger("bridge.moveworks")

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=60.0)
DEFAULT_STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=90.0, write=30.0, pool=60.0)
# Every streaming answer holds one connection for its whole length, so the pool must be sized
# for the number of concurrent answers, not httpx's default of 100.
DEFAULT_LIMITS = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0  # a server asking for a longer pause gets a RateLimited right away
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
USER_AGENT = "moveworks-bridge"

RetryPolicy = Literal["idempotent", "unsent_only"]
IDEMPOTENT: Final[RetryPolicy] = "idempotent"  # retry whatever is retryable
UNSENT_ONLY: Final[RetryPolicy] = "unsent_only"  # retry only what the server cannot have processed

OnRequest = Callable[[str, str, int | None, float], None]
Sleep = Callable[[float], Awaitable[Any]]


class AttemptFailed(Exception):
    """One HTTP attempt failed. `sent`: the server may have processed the request."""

    def __init__(
        self,
        error: MoveworksError,
        *,
        sent: bool,
        token: str | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent
        self.token = token
        self.retry_after = retry_after


@dataclass(frozen=True)
class Upload:
    """A multipart body: plain fields (sent first), then one file part (name, bytes, type)."""

    fields: dict[str, str]
    file: tuple[str, bytes, str]
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(60.0, connect=5.0))


def seg(value: str, what: str) -> str:
    """`value` as one URL path segment (ValueError when empty)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="-_.~")


def page_params(cursor: str | None, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": max(1, min(100, int(limit)))}
    if cursor:
        params["cursor"] = cursor
    return params


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Transport:
    """Owns the `httpx.AsyncClient`: requests as one identity, classifies failures, retries per policy."""

    def __init__(
        self,
        base_url: str,
        assistant_name: str,
        auth: AuthProvider,
        *,
        timeout: httpx.Timeout | None,
        stream_timeout: httpx.Timeout | None,
        max_retries: int,
        sleep: Sleep,
        transport: httpx.AsyncBaseTransport | None,
        on_request: OnRequest | None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError("MOVEWORKS_BASE_URL must be an http(s) URL")
        if not assistant_name or not assistant_name.strip():
            raise ValueError("MOVEWORKS_ASSISTANT_NAME is not set")
        self.base_url = base_url.rstrip("/")
        self.assistant_name = assistant_name.strip()
        self.auth = auth
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.stream_timeout = stream_timeout or DEFAULT_STREAM_TIMEOUT
        self.max_retries = max(1, int(max_retries))
        self.sleep = sleep
        self._on_request = on_request
        self._http = httpx.AsyncClient(
            timeout=self.timeout,
            limits=DEFAULT_LIMITS,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ requests
    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Assistant-Name": self.assistant_name,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def hook(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(method, endpoint, status, seconds)
        except Exception:  # a metrics hook must never break a request
            log.exception("moveworks: on_request hook failed")

    async def bearer_or_fail(self, identity: str | None) -> str | AttemptFailed:
        """The bearer, or a retryable (unsent) failure; an AuthError propagates."""
        try:
            return await self.auth.bearer(identity)
        except TokenTimeout:
            raise
        except (RateLimited, MoveworksUnavailable) as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            return AttemptFailed(exc, sent=False, token=None, retry_after=retry_after)

    async def call(
        self,
        method: str,
        endpoint: str,
        path: str,
        identity: str | None,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        policy: RetryPolicy = IDEMPOTENT,
        upload: Upload | None = None,
    ) -> Any:
        """The parsed JSON body of a 2xx, retried per `policy`; else the typed error."""
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            try:
                return await self.once(method, endpoint, path, identity, params=params, body=body,
                                       upload=upload)
            except AttemptFailed as failure:
                if self.should_refresh(failure, refreshed):
                    refreshed = True
                    self.auth.invalidate(identity, failure.token or "")
                    attempt -= 1
                    continue
                await self.backoff_or_raise(failure, attempt, policy)

    async def once(
        self,
        method: str,
        endpoint: str,
        path: str,
        identity: str | None,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        upload: Upload | None = None,
    ) -> Any:
        """One attempt: the parsed JSON body of a 2xx, else raises AttemptFailed. `path` is
        relative to the base URL, or a whole URL (the Files API lives under another prefix)."""
        token = await self.bearer_or_fail(identity)
        if isinstance(token, AttemptFailed):
            raise token
        started = time.monotonic()
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        headers = self.headers(token)
        try:
            if upload is not None:
                # multipart: httpx writes `data` fields before the file part, as the Files API
                # requires; it sets the Content-Type with the boundary itself
                del headers["Content-Type"]
                resp = await self._http.request(
                    method, url, data=upload.fields, files={"file": upload.file}, headers=headers,
                    timeout=upload.timeout,
                )
            else:
                resp = await self._http.request(method, url, params=params, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.hook(method, endpoint, None, time.monotonic() - started)
            unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "network error"
            err = self.error(
                MoveworksUnavailable, method, endpoint,
                f"{kind} ({type(exc).__name__}) talking to Moveworks", None,
            )
            raise AttemptFailed(err, sent=not unsent, token=token) from None
        self.hook(method, endpoint, resp.status_code, time.monotonic() - started)
        if 200 <= resp.status_code < 300:
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                err = self.error(MoveworksUnavailable, method, endpoint,
                                 f"HTTP {resp.status_code} with a body that is not JSON", resp)
                raise AttemptFailed(err, sent=True, token=token) from None
        raise self.failure_from(resp, method, endpoint, token)

    def stream(self, path: str, body: dict[str, Any], token: str) -> AbstractAsyncContextManager[httpx.Response]:
        """POST `body` asking for an event stream, with the stream timeout (the response is not read)."""
        headers = self.headers(token)
        headers["Accept"] = "text/event-stream"
        headers["Cache-Control"] = "no-store"
        return self._http.stream("POST", self.url(path), json=body, headers=headers, timeout=self.stream_timeout)

    # ------------------------------------------------------------------ failures
    def failure_from(
        self, resp: httpx.Response, method: str, endpoint: str, token: str
    ) -> AttemptFailed:
        """A non-2xx response (body already read) → typed error wrapped for the retry logic."""
        status = resp.status_code
        code: str | None = None
        message: str | None = None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                code, message = err.get("code"), err.get("message")
            elif isinstance(err, str):
                code, message = err, data.get("error_description") or data.get("message")
            else:
                code, message = data.get("code"), data.get("message")
        # Scrubbed before anything is shortened: an upstream may echo a credential back, and a
        # cut-off one would no longer be recognised.
        code = self.clean(str(code), token)[:80] if code else None
        if message:
            message = self.clean(str(message), token)
        else:
            ctype = resp.headers.get("content-type", "").split(";")[0].strip() or "no content type"
            if not resp.content:
                message = "empty body"
            else:
                message = f"non-JSON body ({ctype})"
                match = re.search(r"<title[^>]*>(.*?)</title>", self.clean(resp.text[:8192], token), re.I | re.S)
                if match and match.group(1).strip():
                    message += f": {match.group(1).strip()[:100]}"
        if status == 400:
            cls: type[MoveworksError] = InvalidRequest
        elif status in (401, 403):
            cls = AuthError
        elif status == 404:
            cls = NotFound
        elif status == 429:
            cls = RateLimited
        elif status >= 500:
            cls = MoveworksUnavailable
        elif 400 <= status < 500:
            cls = InvalidRequest
        else:
            cls = MoveworksUnavailable
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        error = self.error(cls, method, endpoint, message, resp, code=code, retry_after=retry_after)
        return AttemptFailed(error, sent=status >= 500, token=token, retry_after=retry_after)

    def error(
        self,
        cls: type[MoveworksError],
        method: str,
        endpoint: str,
        detail: str,
        resp: httpx.Response | None,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> MoveworksError:
        """A typed error naming the endpoint, status and root uuid (and logged once)."""
        detail, code = scrub(detail), scrub(code) if code else code
        status = resp.status_code if resp is not None else None
        root = None
        if resp is not None:
            root = resp.headers.get("x-moveworks-root-uuid") or resp.headers.get("x-trace-id")
        where = f"Moveworks {endpoint}"
        text = f"{where} failed: HTTP {status}: {_short(detail)}" if status else f"{where} failed: {_short(detail)}"
        log.warning(
            "moveworks %s %s failed status=%s code=%s root_uuid=%s: %s",
            method, endpoint, status, code, root, _short(detail, 200),
        )
        shown = _short(detail) if resp is not None else None
        if cls is RateLimited:
            return RateLimited(text, retry_after=retry_after, status=status, code=code, root_uuid=root,
                               detail=shown)
        return cls(text, status=status, code=code, root_uuid=root, detail=shown)

    @staticmethod
    def clean(text: str, token: str | None = None) -> str:
        """Upstream text without the bearer just sent or any other known credential."""
        if token and token in text:
            text = text.replace(token, "***")
        return scrub(text)

    @staticmethod
    def ambiguous(failure: AttemptFailed) -> bool:
        """May a create-response attempt have registered the turn? (network error, timeout,
        retryable 5xx, or a 2xx we could not read)"""
        status = failure.error.status
        return failure.sent and (status is None or status in RETRY_STATUSES or 200 <= status < 300)

    @staticmethod
    def should_refresh(failure: AttemptFailed, refreshed: bool) -> bool:
        """A 401 on a token we sent, and no refresh yet in this call."""
        return (
            not refreshed
            and failure.token is not None
            and isinstance(failure.error, AuthError)
            and failure.error.status == 401
        )

    # ------------------------------------------------------------------ backoff
    def delay(self, failure: AttemptFailed, attempt: int) -> float:
        if failure.retry_after is not None:
            return min(failure.retry_after, MAX_RETRY_AFTER)
        backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # jitter: 50–100 % of the step

    async def backoff_or_raise(self, failure: AttemptFailed, attempt: int, policy: RetryPolicy) -> None:
        """Sleep before the next attempt if `policy` and `max_retries` allow one; else raise the error."""
        error = failure.error
        retryable = error.status in RETRY_STATUSES if error.status is not None else True
        if error.status is None or error.status >= 500:  # network error / 5xx / token endpoint
            retryable = retryable and (not failure.sent or policy == IDEMPOTENT)
        if not retryable or attempt >= self.max_retries:
            raise error from None
        if failure.retry_after is not None and failure.retry_after > MAX_RETRY_AFTER:
            raise error from None  # the caller can schedule a retry; we will not block that long
        delay = self.delay(failure, attempt)
        log.info("moveworks: retrying after %.2fs (attempt %d/%d, status=%s)",
                 delay, attempt + 1, self.max_retries, error.status)
        await self.sleep(delay)


__all__ = [
    "DEFAULT_STREAM_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "IDEMPOTENT",
    "UNSENT_ONLY",
    "AttemptFailed",
    "OnRequest",
    "RetryPolicy",
    "Sleep",
    "Transport",
    "page_params",
    "seg",
]
