"""Async client of the Moveworks Conversations API (reference §1–§3, §7.1).

Every call acts as one identity (the employee email, handed to the `AuthProvider`). The client adds
the policies the API itself leaves to callers:

* typed errors (errors.py) carrying HTTP status, API error code and `x-moveworks-root-uuid`;
* explicit timeouts (JSON calls: connect 5 s / read 30 s; stream: read 90 s between bytes);
* retries with jittered exponential backoff honouring `Retry-After`, for idempotent calls only;
* a 401 drops the cached token and retries once with a fresh one;
* create-response is never retried blindly (a retry could post the user's turn twice): after an
  ambiguous failure the conversation's newest messages are checked for the turn first;
* a stream that dies after RESPONSE_CREATED is finished by polling GET response.

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
                       the user turn registered, continues with its response id; else it retries.
=====================  ==========================================================================

`max_retries` bounds the total number of attempts of one call (a 401 token refresh is extra).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx

from .auth import AuthProvider, parse_retry_after
from .errors import (
    AuthError,
    InvalidRequest,
    MoveworksError,
    MoveworksUnavailable,
    NotFound,
    RateLimited,
    StreamFailed,
)
from .models import (
    Conversation,
    Event,
    Message,
    OutputDelta,
    Page,
    Response,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    ResponseInProgress,
    StreamError,
    StreamEvent,
)
from .sse import iter_stream_events

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
HISTORY_RECHECK_DELAY = 1.5  # reference §3.3: re-read history once more after ~1.5 s
CLOCK_SKEW = timedelta(seconds=30)  # tolerated skew when matching a turn by its created_at
USER_AGENT = "moveworks-bridge"

# retry policies
_IDEMPOTENT = "idempotent"
_UNSENT_ONLY = "unsent_only"

OnRequest = Callable[[str, str, "int | None", float], None]


class _AttemptFailed(Exception):
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


class _StreamState:
    """Outcome of one stream attempt."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.failure: _AttemptFailed | None = None
        self.lost: str | None = None  # why a started stream ended without a terminal event
        self.done = False


def _input_body(text: str | None, callback_id: str | None) -> dict[str, Any]:
    if (text is None) == (callback_id is None):
        raise ValueError("give exactly one of text or callback_id")
    if text is not None:
        if not text.strip():
            raise ValueError("text must not be empty")
        return {"input": {"text": text}}
    if not callback_id:
        raise ValueError("callback_id must not be empty")
    return {"input": {"callback_id": callback_id}}


def _seg(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="-_.~")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _items(data: Any, key: str, parse: Callable[[Any], Any], kind: str) -> tuple[Any, ...]:
    raw = data.get(key) if isinstance(data, dict) else None
    out = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(parse(item))
        except ValueError as exc:
            log.warning("moveworks: skipping malformed %s: %s", kind, exc)
    return tuple(out)


def _next_cursor(data: Any) -> str | None:
    meta = data.get("metadata") if isinstance(data, dict) else None
    cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _response_of(event: StreamEvent) -> Response | None:
    if isinstance(event, (ResponseCreated, ResponseInProgress, ResponseCompleted, ResponseFailed)):
        return event.response
    return None


class MoveworksClient:
    def __init__(
        self,
        base_url: str,
        assistant_name: str,
        auth: AuthProvider,
        *,
        timeout: httpx.Timeout | None = None,
        stream_timeout: httpx.Timeout | None = None,
        max_retries: int = 3,
        poll_timeout: float = 150.0,
        poll_interval: float = 1.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError("MOVEWORKS_BASE_URL must be an http(s) URL")
        if not assistant_name or not assistant_name.strip():
            raise ValueError("MOVEWORKS_ASSISTANT_NAME is not set")
        self.base_url = base_url.rstrip("/")
        self.assistant_name = assistant_name.strip()
        self.auth = auth
        self._timeout = timeout or DEFAULT_TIMEOUT
        self._stream_timeout = stream_timeout or DEFAULT_STREAM_TIMEOUT
        self.max_retries = max(1, int(max_retries))
        self.poll_timeout = float(poll_timeout)
        self.poll_interval = max(0.0, float(poll_interval))
        self._sleep = sleep
        self._on_request = on_request
        self._http = httpx.AsyncClient(
            timeout=self._timeout,
            limits=DEFAULT_LIMITS,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        # response ids this client already handed out: a retried turn must never be matched
        # to one of them (two identical user texts in a row are legitimate)
        self._known_responses: OrderedDict[str, None] = OrderedDict()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> MoveworksClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"MoveworksClient(base_url={self.base_url!r}, assistant_name={self.assistant_name!r})"

    # ------------------------------------------------------------------ conversations
    async def create_conversation(self, identity: str | None, title: str | None = None) -> Conversation:
        body: dict[str, Any] = {"title": title} if title else {}
        data = await self._call(
            "POST", "create_conversation", "/conversations", identity, body=body, policy=_UNSENT_ONLY
        )
        return Conversation.from_json(data)

    async def get_conversation(self, identity: str | None, conversation_id: str) -> Conversation:
        path = f"/conversations/{_seg(conversation_id, 'conversation_id')}"
        return Conversation.from_json(await self._call("GET", "get_conversation", path, identity))

    async def list_conversations(
        self, identity: str | None, *, cursor: str | None = None, limit: int = 20
    ) -> Page[Conversation]:
        params = self._page_params(cursor, limit)
        data = await self._call("GET", "list_conversations", "/conversations", identity, params=params)
        return Page(_items(data, "conversations", Conversation.from_json, "conversation"), _next_cursor(data))

    # ------------------------------------------------------------------ responses
    async def create_response(
        self,
        identity: str | None,
        conversation_id: str,
        *,
        text: str | None = None,
        callback_id: str | None = None,
    ) -> Response:
        """POST a turn (202, usually status CREATED). Never posts the same turn twice."""
        body = _input_body(text, callback_id)
        path = f"/conversations/{_seg(conversation_id, 'conversation_id')}/responses"
        since = datetime.now(timezone.utc)
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            try:
                data = await self._once("POST", "create_response", path, identity, body=body)
                response = Response.from_json(data)
                self._remember(response.response_id)
                return response
            except _AttemptFailed as failure:
                if self._should_refresh(failure, refreshed):
                    refreshed = True
                    self.auth.invalidate(identity, failure.token or "")
                    attempt -= 1
                    continue
                if failure.sent:
                    if not self._ambiguous(failure):
                        raise failure.error from None
                    found = await self._recover_turn(
                        identity, conversation_id, text, callback_id, since, failure, attempt
                    )
                    if found is not None:
                        return await self.get_response(identity, conversation_id, found)
                    continue
                await self._backoff_or_raise(failure, attempt, _UNSENT_ONLY)

    async def get_response(self, identity: str | None, conversation_id: str, response_id: str) -> Response:
        path = (
            f"/conversations/{_seg(conversation_id, 'conversation_id')}"
            f"/responses/{_seg(response_id, 'response_id')}"
        )
        return Response.from_json(await self._call("GET", "get_response", path, identity))

    async def wait_for_response(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> Response:
        """Poll GET response every `poll_interval` until COMPLETED/FAILED; StreamFailed after
        `poll_timeout`. Transient failures while polling are tolerated until the deadline."""
        async with aclosing(self._poll(identity, conversation_id, response_id)) as responses:
            async for response in responses:
                if response.terminal:
                    return response
        raise AssertionError("unreachable")  # _poll either yields a terminal response or raises

    def stream_response(
        self,
        identity: str | None,
        conversation_id: str,
        *,
        text: str | None = None,
        callback_id: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """POST a turn to the stream endpoint and yield typed events until a terminal one.

        Yields ResponseCreated, ResponseInProgress, OutputDelta (cumulative snapshots: replace the
        previous snapshot of the same output id), then exactly one of ResponseCompleted,
        ResponseFailed or StreamError. A stream that breaks after RESPONSE_CREATED is finished by
        polling; raises StreamFailed if the response does not finish within `poll_timeout`.
        Close the iterator (`aclose()` / `contextlib.aclosing`) if you stop early.
        """
        body = _input_body(text, callback_id)
        path = f"/conversations/{_seg(conversation_id, 'conversation_id')}/responses/stream"
        return self._stream(identity, conversation_id, path, body, text, callback_id)

    async def _stream(
        self,
        identity: str | None,
        conversation_id: str,
        path: str,
        body: dict[str, Any],
        text: str | None,
        callback_id: str | None,
    ) -> AsyncIterator[StreamEvent]:
        since = datetime.now(timezone.utc)
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            state = _StreamState()
            token = await self._bearer_or_fail(identity)
            if isinstance(token, _AttemptFailed):
                state.failure = token
            else:
                async with aclosing(self._stream_attempt(identity, conversation_id, path, body, token, state)) as events:
                    async for event in events:
                        yield event
                if state.done:
                    return

            if state.lost is not None and state.response_id is not None:
                log.warning("moveworks stream: %s (response %s); polling for the result",
                            state.lost, state.response_id)
                async with aclosing(self._finish_by_polling(identity, conversation_id, state.response_id)) as events:
                    async for event in events:
                        yield event
                return
            failure = state.failure
            if state.lost is not None:
                err = self._error(MoveworksUnavailable, "POST", "stream",
                                  f"{state.lost} before RESPONSE_CREATED", None)
                failure = _AttemptFailed(err, sent=True, token=None)
            assert failure is not None

            if self._should_refresh(failure, refreshed):
                refreshed = True
                self.auth.invalidate(identity, failure.token or "")
                attempt -= 1
                continue
            if failure.sent:
                if not self._ambiguous(failure):
                    raise failure.error from None
                found = await self._recover_turn(
                    identity, conversation_id, text, callback_id, since, failure, attempt
                )
                if found is None:
                    continue
                log.info("moveworks stream: the turn registered as response %s; polling it", found)
                yield ResponseCreated(await self.get_response(identity, conversation_id, found))
                async with aclosing(self._finish_by_polling(identity, conversation_id, found)) as events:
                    async for event in events:
                        yield event
                return
            await self._backoff_or_raise(failure, attempt, _UNSENT_ONLY)

    async def _stream_attempt(
        self,
        identity: str | None,
        conversation_id: str,
        path: str,
        body: dict[str, Any],
        token: str,
        state: _StreamState,
    ) -> AsyncIterator[StreamEvent]:
        """One POST to the stream endpoint. Yields events; records the outcome in `state`."""
        headers = self._headers(token)
        headers["Accept"] = "text/event-stream"
        headers["Cache-Control"] = "no-store"
        started = time.monotonic()
        hooked = False
        try:
            async with self._http.stream(
                "POST", self._url(path), json=body, headers=headers, timeout=self._stream_timeout
            ) as resp:
                hooked = True
                self._hook("POST", "stream", resp.status_code, time.monotonic() - started)
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if resp.status_code != 200:
                    await resp.aread()
                    state.failure = self._failure_from(resp, "POST", "stream", token)
                    return
                if ctype != "text/event-stream":
                    await resp.aread()
                    err = self._error(MoveworksUnavailable, "POST", "stream",
                                      f"expected an event stream, got {ctype or 'no content type'}", resp)
                    state.failure = _AttemptFailed(err, sent=True, token=token)
                    return
                async with aclosing(iter_stream_events(resp)) as events:
                    async for event in events:
                        known = _response_of(event)
                        if known is not None:
                            state.response_id = known.response_id
                        elif isinstance(event, OutputDelta) and state.response_id is None:
                            state.response_id = getattr(event.output, "response_id", None)
                        if state.response_id:
                            self._remember(state.response_id)
                        if isinstance(event, ResponseCompleted):
                            event = await self._complete(identity, conversation_id, event.response)
                        yield event
                        if isinstance(event, (ResponseCompleted, ResponseFailed, StreamError)):
                            state.done = True
                            return
                state.lost = "the stream closed before a terminal event"
        except httpx.HTTPError as exc:
            if not hooked:
                self._hook("POST", "stream", None, time.monotonic() - started)
            if state.response_id is None and isinstance(
                exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
            ):
                err = self._error(MoveworksUnavailable, "POST", "stream",
                                  f"{type(exc).__name__} connecting to Moveworks", None)
                state.failure = _AttemptFailed(err, sent=False, token=token)
            else:
                kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "network error"
                state.lost = f"{kind} ({type(exc).__name__}) on the stream"

    # ------------------------------------------------------------------ messages, events, feedback
    async def list_conversation_messages(
        self, identity: str | None, conversation_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> Page[Message]:
        data = await self._raw_messages(identity, conversation_id, cursor=cursor, limit=limit)
        return Page(_items(data, "messages", Message.from_json, "message"), _next_cursor(data))

    async def list_response_messages(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> list[Message]:
        path = (
            f"/conversations/{_seg(conversation_id, 'conversation_id')}"
            f"/responses/{_seg(response_id, 'response_id')}/messages"
        )
        data = await self._call("GET", "list_response_messages", path, identity)
        return list(_items(data, "messages", Message.from_json, "message"))

    async def list_events(
        self,
        identity: str | None,
        conversation_id: str = "-",
        *,
        starting_after: str | None = None,
        ending_at: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Event]:
        params = self._page_params(cursor, limit)
        if starting_after:
            params["starting_after"] = starting_after
        if ending_at:
            params["ending_at"] = ending_at
        path = f"/conversations/{_seg(conversation_id, 'conversation_id')}/events"
        data = await self._call("GET", "list_events", path, identity, params=params)
        return Page(_items(data, "events", Event.from_json, "event"), _next_cursor(data))

    async def submit_feedback(
        self,
        identity: str | None,
        conversation_id: str,
        response_id: str,
        message_id: str,
        callback_id: str,
        additional_feedback: str | None = None,
    ) -> None:
        if not callback_id:
            raise ValueError("callback_id must not be empty")
        body: dict[str, Any] = {"callback_id": callback_id}
        if additional_feedback:
            body["additional_feedback"] = additional_feedback
        path = (
            f"/conversations/{_seg(conversation_id, 'conversation_id')}"
            f"/responses/{_seg(response_id, 'response_id')}"
            f"/messages/{_seg(message_id, 'message_id')}/feedback"
        )
        await self._call("POST", "submit_feedback", path, identity, body=body, policy=_UNSENT_ONLY)

    # ------------------------------------------------------------------ stream completion
    async def _complete(self, identity: str | None, conversation_id: str, response: Response) -> ResponseCompleted:
        """RESPONSE_COMPLETED without MESSAGE outputs: the reply may be filed elsewhere (§3.3)."""
        if response.messages:
            return ResponseCompleted(response)
        try:
            found = [
                m for m in await self.list_response_messages(identity, conversation_id, response.response_id)
                if m.actor != "USER"
            ]
            if not found:
                await self._sleep(HISTORY_RECHECK_DELAY)
                page = await self.list_conversation_messages(identity, conversation_id, limit=10)
                for message in page.items:  # newest first: the replies since the latest user turn
                    if message.actor == "USER":
                        break
                    found.append(message)
                found.reverse()
        except MoveworksError as exc:
            log.warning("moveworks: could not look up the messages of an empty response %s: %s",
                        response.response_id, exc)
            return ResponseCompleted(response)
        if found:
            log.info("moveworks: response %s had no outputs; attached %d message(s) from history",
                     response.response_id, len(found))
            response = replace(response, outputs=tuple(response.outputs) + tuple(found))
        return ResponseCompleted(response)

    async def _finish_by_polling(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> AsyncIterator[StreamEvent]:
        snapshots: dict[str, str] = {}
        async with aclosing(self._poll(identity, conversation_id, response_id)) as responses:
            async for response in responses:
                if not response.terminal:
                    for output in response.outputs:  # progress while polling: changed snapshots only
                        oid = getattr(output, "message_id", None) or getattr(output, "reasoning_message_id", "")
                        if snapshots.get(oid) != output.text:
                            snapshots[oid] = output.text
                            yield OutputDelta(output)
                    continue
                if response.status == "COMPLETED":
                    for message in response.messages:
                        yield OutputDelta(message)
                    yield await self._complete(identity, conversation_id, response)
                else:
                    yield ResponseFailed(response)
                return

    async def _poll(self, identity: str | None, conversation_id: str, response_id: str) -> AsyncIterator[Response]:
        """GET the response until terminal (yielding every snapshot); StreamFailed on timeout."""
        deadline = time.monotonic() + self.poll_timeout
        max_polls = int(self.poll_timeout / self.poll_interval) + 1 if self.poll_interval > 0 else 1_000
        polls = 0
        last_error: MoveworksError | None = None
        while True:
            polls += 1
            try:
                response = await self.get_response(identity, conversation_id, response_id)
            except (MoveworksUnavailable, RateLimited) as exc:
                last_error = exc  # transient: keep polling until the deadline
            else:
                self._remember(response.response_id)
                yield response
                if response.terminal:
                    return
            if polls >= max_polls or time.monotonic() >= deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                log.warning("moveworks: response %s not finished after %.0fs%s",
                            response_id, self.poll_timeout, detail)
                raise StreamFailed(
                    f"Moveworks response {response_id} did not finish within {self.poll_timeout:.0f}s{detail}",
                    code="TIMEOUT",
                )
            await self._sleep(self.poll_interval)

    # ------------------------------------------------------------------ turn recovery
    async def _recover_turn(
        self,
        identity: str | None,
        conversation_id: str,
        text: str | None,
        callback_id: str | None,
        since: datetime,
        failure: _AttemptFailed,
        attempt: int,
    ) -> str | None:
        """After an ambiguous create-response failure: the response id if the turn registered.

        Returns None when it did not and another attempt is allowed; raises the original error when
        attempts are exhausted or the history cannot be read (never guess: a blind retry could
        duplicate the user's turn).
        """
        await self._sleep(self._delay(failure, attempt))
        try:
            data = await self._raw_messages(identity, conversation_id, limit=10)
        except MoveworksError as exc:
            log.warning("moveworks: cannot verify whether the turn registered (%s); not retrying", exc)
            raise failure.error from None
        found = self._match_turn(data, text, callback_id, since)
        if found is not None:
            self._remember(found)
            return found
        if attempt >= self.max_retries:
            raise failure.error from None
        log.info("moveworks: the turn did not register after %s; retrying (attempt %d/%d)",
                 failure.error.status or "a network error", attempt + 1, self.max_retries)
        return None

    def _match_turn(self, data: Any, text: str | None, callback_id: str | None, since: datetime) -> str | None:
        raw = data.get("messages") if isinstance(data, dict) else None
        for item in raw if isinstance(raw, list) else []:  # newest first
            if not isinstance(item, dict) or item.get("actor") != "USER":
                continue
            # only the newest user message can be the turn we just posted
            response_id = item.get("response_id")
            if not isinstance(response_id, str) or not response_id or response_id in self._known_responses:
                return None
            created = _parse_time(item.get("created_at"))
            if created is not None and created < since - CLOCK_SKEW:
                return None
            content = item.get("content") if isinstance(item.get("content"), dict) else {}
            if text is not None:
                try:
                    same = Message.from_json(item).text.strip() == text.strip()
                except ValueError:
                    same = False
            else:
                action = content.get("callback_action")
                same = isinstance(action, dict) and action.get("callback_id") == callback_id
            return response_id if same else None
        return None

    def _remember(self, response_id: str) -> None:
        self._known_responses[response_id] = None
        self._known_responses.move_to_end(response_id)
        while len(self._known_responses) > 4096:
            self._known_responses.popitem(last=False)

    async def _raw_messages(
        self, identity: str | None, conversation_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> Any:
        path = f"/conversations/{_seg(conversation_id, 'conversation_id')}/messages"
        return await self._call(
            "GET", "list_conversation_messages", path, identity, params=self._page_params(cursor, limit)
        )

    # ------------------------------------------------------------------ HTTP plumbing
    def _url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def _page_params(cursor: str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": max(1, min(100, int(limit)))}
        if cursor:
            params["cursor"] = cursor
        return params

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Assistant-Name": self.assistant_name,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def _hook(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(method, endpoint, status, seconds)
        except Exception:  # a metrics hook must never break a request
            log.exception("moveworks: on_request hook failed")

    async def _bearer_or_fail(self, identity: str | None) -> str | _AttemptFailed:
        """The bearer, or a retryable (unsent) failure; an AuthError propagates."""
        try:
            return await self.auth.bearer(identity)
        except (RateLimited, MoveworksUnavailable) as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            return _AttemptFailed(exc, sent=False, token=None, retry_after=retry_after)

    async def _call(
        self,
        method: str,
        endpoint: str,
        path: str,
        identity: str | None,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        policy: str = _IDEMPOTENT,
    ) -> Any:
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            try:
                return await self._once(method, endpoint, path, identity, params=params, body=body)
            except _AttemptFailed as failure:
                if self._should_refresh(failure, refreshed):
                    refreshed = True
                    self.auth.invalidate(identity, failure.token or "")
                    attempt -= 1
                    continue
                await self._backoff_or_raise(failure, attempt, policy)

    async def _once(
        self,
        method: str,
        endpoint: str,
        path: str,
        identity: str | None,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One attempt: the parsed JSON body of a 2xx, else raises _AttemptFailed."""
        token = await self._bearer_or_fail(identity)
        if isinstance(token, _AttemptFailed):
            raise token
        started = time.monotonic()
        try:
            resp = await self._http.request(
                method, self._url(path), params=params, json=body, headers=self._headers(token)
            )
        except httpx.HTTPError as exc:
            self._hook(method, endpoint, None, time.monotonic() - started)
            unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "network error"
            err = self._error(
                MoveworksUnavailable, method, endpoint,
                f"{kind} ({type(exc).__name__}) talking to Moveworks", None,
            )
            raise _AttemptFailed(err, sent=not unsent, token=token) from None
        self._hook(method, endpoint, resp.status_code, time.monotonic() - started)
        if 200 <= resp.status_code < 300:
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                err = self._error(MoveworksUnavailable, method, endpoint,
                                  f"HTTP {resp.status_code} with a body that is not JSON", resp)
                raise _AttemptFailed(err, sent=True, token=token) from None
        raise self._failure_from(resp, method, endpoint, token)

    def _failure_from(
        self, resp: httpx.Response, method: str, endpoint: str, token: str
    ) -> _AttemptFailed:
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
        code = str(code)[:80] if code else None
        if message:
            message = str(message)
            if token and token in message:
                message = message.replace(token, "***")
        else:
            ctype = resp.headers.get("content-type", "").split(";")[0].strip() or "no content type"
            if not resp.content:
                message = "empty body"
            else:
                message = f"non-JSON body ({ctype})"
                match = re.search(r"<title[^>]*>(.*?)</title>", resp.text[:4096], re.I | re.S)
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
        error = self._error(cls, method, endpoint, message, resp, code=code, retry_after=retry_after)
        return _AttemptFailed(error, sent=status >= 500, token=token, retry_after=retry_after)

    def _error(
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
        if cls is RateLimited:
            return RateLimited(text, retry_after=retry_after, status=status, code=code, root_uuid=root)
        return cls(text, status=status, code=code, root_uuid=root)

    @staticmethod
    def _ambiguous(failure: _AttemptFailed) -> bool:
        """May a create-response attempt have registered the turn? (network error, timeout,
        retryable 5xx, or a 2xx we could not read)"""
        status = failure.error.status
        return failure.sent and (status is None or status in RETRY_STATUSES or 200 <= status < 300)

    @staticmethod
    def _should_refresh(failure: _AttemptFailed, refreshed: bool) -> bool:
        return (
            not refreshed
            and failure.token is not None
            and isinstance(failure.error, AuthError)
            and failure.error.status == 401
        )

    def _delay(self, failure: _AttemptFailed, attempt: int) -> float:
        if failure.retry_after is not None:
            return min(failure.retry_after, MAX_RETRY_AFTER)
        backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # jitter: 50–100 % of the step

    async def _backoff_or_raise(self, failure: _AttemptFailed, attempt: int, policy: str) -> None:
        error = failure.error
        retryable = error.status in RETRY_STATUSES if error.status is not None else True
        if error.status is None or error.status >= 500:  # network error / 5xx / token endpoint
            retryable = retryable and (not failure.sent or policy == _IDEMPOTENT)
        if not retryable or attempt >= self.max_retries:
            raise error from None
        if failure.retry_after is not None and failure.retry_after > MAX_RETRY_AFTER:
            raise error from None  # the caller can schedule a retry; we will not block that long
        delay = self._delay(failure, attempt)
        log.info("moveworks: retrying after %.2fs (attempt %d/%d, status=%s)",
                 delay, attempt + 1, self.max_retries, error.status)
        await self._sleep(delay)


__all__ = ["MoveworksClient", "DEFAULT_TIMEOUT", "DEFAULT_STREAM_TIMEOUT"]
