"""Streaming an answer, with the fall-backs that keep a user's turn from being lost or posted twice.

A stream can break at any byte, and posting a turn is not idempotent. So a stream that dies after
RESPONSE_CREATED is finished by polling GET response instead of being re-posted, and after an
ambiguous failure (5xx, timeout, dropped connection) the newest messages are checked for the turn
before any retry (`recover_turn`, shared with create_response). A COMPLETED response without
MESSAGE outputs gets its reply looked up in history.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from .errors import MoveworksError, MoveworksUnavailable, RateLimited, StreamFailed
from .models import (
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
from .transport import UNSENT_ONLY, AttemptFailed, Transport, page_params, seg

log = logging.getLogger("bridge.moveworks")

HISTORY_RECHECK_DELAY = 1.5  # re-read history once more after ~1.5 s
CLOCK_SKEW = timedelta(seconds=30)  # tolerated skew when matching a turn by its created_at
MAX_KNOWN_RESPONSES = 4096


class AnswerReads(Protocol):
    """The endpoint reads the fall-backs need (implemented by MoveworksClient)."""

    async def get_response(self, identity: str | None, conversation_id: str, response_id: str) -> Response: ...

    async def list_response_messages(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> list[Message]: ...

    async def list_conversation_messages(
        self, identity: str | None, conversation_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> Page[Message]: ...


class _StreamState:
    """Outcome of one stream attempt."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.failure: AttemptFailed | None = None
        self.lost: str | None = None  # why a started stream ended without a terminal event
        self.done = False


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _response_of(event: StreamEvent) -> Response | None:
    if isinstance(event, (ResponseCreated, ResponseInProgress, ResponseCompleted, ResponseFailed)):
        return event.response
    return None


class AnswerStreamer:
    """Streams answers and recovers turns for one MoveworksClient."""

    def __init__(self, transport: Transport, reads: AnswerReads, *, poll_timeout: float, poll_interval: float) -> None:
        self._transport = transport
        self._reads = reads
        self.poll_timeout = float(poll_timeout)
        self.poll_interval = max(0.0, float(poll_interval))
        # response ids this client already handed out: a retried turn must never be matched
        # to one of them (two identical user texts in a row are legitimate)
        self._known_responses: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------ streaming
    async def stream(
        self,
        identity: str | None,
        conversation_id: str,
        path: str,
        body: dict[str, Any],
        text: str | None,
        callback_id: str | None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The events of MoveworksClient.stream_response (`body` already validated)."""
        http = self._transport
        since = datetime.now(UTC)
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            state = _StreamState()
            token = await http.bearer_or_fail(identity)
            if isinstance(token, AttemptFailed):
                state.failure = token
            else:
                async with aclosing(
                    self._stream_attempt(identity, conversation_id, path, body, token, state)
                ) as events:
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
                err = http.error(MoveworksUnavailable, "POST", "stream",
                                 f"{state.lost} before RESPONSE_CREATED", None)
                failure = AttemptFailed(err, sent=True, token=None)
            assert failure is not None

            if http.should_refresh(failure, refreshed):
                refreshed = True
                http.auth.invalidate(identity, failure.token or "")
                attempt -= 1
                continue
            if failure.sent:
                if not http.ambiguous(failure):
                    raise failure.error from None
                found = await self.recover_turn(
                    identity, conversation_id, text, callback_id, since, failure, attempt
                )
                if found is None:
                    continue
                log.info("moveworks stream: the turn registered as response %s; polling it", found)
                yield ResponseCreated(await self._reads.get_response(identity, conversation_id, found))
                async with aclosing(self._finish_by_polling(identity, conversation_id, found)) as events:
                    async for event in events:
                        yield event
                return
            await http.backoff_or_raise(failure, attempt, UNSENT_ONLY)

    async def _stream_attempt(
        self,
        identity: str | None,
        conversation_id: str,
        path: str,
        body: dict[str, Any],
        token: str,
        state: _StreamState,
    ) -> AsyncGenerator[StreamEvent, None]:
        """One POST to the stream endpoint. Yields events; records the outcome in `state`."""
        http = self._transport
        started = time.monotonic()
        hooked = False
        try:
            async with http.stream(path, body, token) as resp:
                hooked = True
                http.hook("POST", "stream", resp.status_code, time.monotonic() - started)
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if resp.status_code != 200:
                    await resp.aread()
                    state.failure = http.failure_from(resp, "POST", "stream", token)
                    return
                if ctype != "text/event-stream":
                    await resp.aread()
                    err = http.error(MoveworksUnavailable, "POST", "stream",
                                     f"expected an event stream, got {ctype or 'no content type'}", resp)
                    state.failure = AttemptFailed(err, sent=True, token=token)
                    return
                async with aclosing(iter_stream_events(resp)) as events:
                    async for event in events:
                        known = _response_of(event)
                        if known is not None:
                            state.response_id = known.response_id
                        elif isinstance(event, OutputDelta) and state.response_id is None:
                            state.response_id = getattr(event.output, "response_id", None)
                        if state.response_id:
                            self.remember(state.response_id)
                        if isinstance(event, ResponseCompleted):
                            event = await self._complete(identity, conversation_id, event.response)
                        yield event
                        if isinstance(event, (ResponseCompleted, ResponseFailed, StreamError)):
                            state.done = True
                            return
                state.lost = "the stream closed before a terminal event"
        except httpx.HTTPError as exc:
            if not hooked:
                http.hook("POST", "stream", None, time.monotonic() - started)
            if state.response_id is None and isinstance(
                exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
            ):
                err = http.error(MoveworksUnavailable, "POST", "stream",
                                 f"{type(exc).__name__} connecting to Moveworks", None)
                state.failure = AttemptFailed(err, sent=False, token=token)
            else:
                kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "network error"
                state.lost = f"{kind} ({type(exc).__name__}) on the stream"

    # ------------------------------------------------------------------ stream completion
    async def _complete(self, identity: str | None, conversation_id: str, response: Response) -> ResponseCompleted:
        """RESPONSE_COMPLETED without MESSAGE outputs: the reply may be filed elsewhere."""
        if response.messages:
            return ResponseCompleted(response)
        try:
            found = [
                m for m in await self._reads.list_response_messages(identity, conversation_id, response.response_id)
                if m.actor != "USER"
            ]
            if not found:
                await self._transport.sleep(HISTORY_RECHECK_DELAY)
                page = await self._reads.list_conversation_messages(identity, conversation_id, limit=10)
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
    ) -> AsyncGenerator[StreamEvent, None]:
        snapshots: dict[str, str] = {}
        async with aclosing(self.poll(identity, conversation_id, response_id)) as responses:
            async for response in responses:
                if not response.terminal:
                    for output in response.outputs:  # progress while polling: changed snapshots only
                        oid = output.message_id if isinstance(output, Message) else output.reasoning_message_id
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

    async def poll(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> AsyncGenerator[Response, None]:
        """GET the response until terminal (yielding every snapshot); StreamFailed on timeout."""
        deadline = time.monotonic() + self.poll_timeout
        max_polls = int(self.poll_timeout / self.poll_interval) + 1 if self.poll_interval > 0 else 1_000
        polls = 0
        last_error: MoveworksError | None = None
        while True:
            polls += 1
            try:
                response = await self._reads.get_response(identity, conversation_id, response_id)
            except (MoveworksUnavailable, RateLimited) as exc:
                last_error = exc  # transient: keep polling until the deadline
            else:
                self.remember(response.response_id)
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
            await self._transport.sleep(self.poll_interval)

    # ------------------------------------------------------------------ turn recovery
    async def recover_turn(
        self,
        identity: str | None,
        conversation_id: str,
        text: str | None,
        callback_id: str | None,
        since: datetime,
        failure: AttemptFailed,
        attempt: int,
    ) -> str | None:
        """After an ambiguous create-response failure: the response id if the turn registered.

        Returns None when it did not and another attempt is allowed; raises the original error when
        attempts are exhausted or the history cannot be read (never guess: a blind retry could
        duplicate the user's turn).
        """
        http = self._transport
        await http.sleep(http.delay(failure, attempt))
        try:
            data = await self._raw_messages(identity, conversation_id, limit=10)
        except MoveworksError as exc:
            log.warning("moveworks: cannot verify whether the turn registered (%s); not retrying", exc)
            raise failure.error from None
        found = self._match_turn(data, text, callback_id, since)
        if found is not None:
            self.remember(found)
            return found
        if attempt >= http.max_retries:
            raise failure.error from None
        log.info("moveworks: the turn did not register after %s; retrying (attempt %d/%d)",
                 failure.error.status or "a network error", attempt + 1, http.max_retries)
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
            raw_content = item.get("content")
            content = raw_content if isinstance(raw_content, dict) else {}
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

    def remember(self, response_id: str) -> None:
        """Mark `response_id` as handed out, so turn recovery never matches it again."""
        self._known_responses[response_id] = None
        self._known_responses.move_to_end(response_id)
        while len(self._known_responses) > MAX_KNOWN_RESPONSES:
            self._known_responses.popitem(last=False)

    async def _raw_messages(self, identity: str | None, conversation_id: str, *, limit: int) -> Any:
        """The newest messages as raw JSON: matching a callback turn needs `content.callback_action`,
        which the Message model drops."""
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}/messages"
        return await self._transport.call(
            "GET", "list_conversation_messages", path, identity, params=page_params(None, limit)
        )
