"""The streaming renderer: Moveworks stream events in, throttled writes to a `ReplySink` out.

`StreamRenderer` keeps the latest snapshot of every output (snapshots replace, never append),
shows the current reasoning step until answer text exists, and pushes frames to the sink with
"latest text wins" coalescing: at most one write in flight per reply, no write sooner than the
sink's declared interval, a token from the workspace's shared budget before each write, and no
write at all when nothing visible changed. Repeated rate limits stop intermediate frames (the
final answer still goes out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.answers.compose import answer_from_response
from bridge.answers.markdown import normalise_markdown, status_line
from bridge.contract import ReplySink
from bridge.errors import PlatformError, PlatformRateLimited, StreamExpired
from bridge.mechanisms.ratelimit import Sleep, WriteBudget
from bridge.models import Answer, Capabilities, Frame
from bridge.moveworks.errors import StreamFailed
from bridge.moveworks.models import (
    Message,
    OutputDelta,
    ReasoningMessage,
    Response,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    StreamError,
    StreamEvent,
)
from bridge.process import metrics

log = logging.getLogger(__name__)


class AnswerTimedOut(Exception):
    """The answer did not end by its deadline (keep-alives that reset a read timeout cannot keep
    an answer open forever)."""


class AnswerFailed(Exception):
    """Moveworks ended the answer with FAILED or ERROR."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class RenderResult:
    answer: Answer
    response_id: str | None
    message_ids: list[str]
    platform_ids: list[str] = field(default_factory=list)
    frames_shown: int = 0


class StreamRenderer:
    def __init__(
        self,
        sink: ReplySink,
        budget: WriteBudget,
        *,
        platform: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_strikes: int = 3,
        on_response_id: Callable[[str], Awaitable[None]] | None = None,
        on_first_text: Callable[[float], None] | None = None,
        on_checkpoint: Callable[[dict[str, Any] | None], Awaitable[None]] | None = None,
        on_empty: Callable[[Response], Awaitable[Answer]] | None = None,
    ) -> None:
        self.sink = sink
        self.budget = budget
        self.platform = platform  # metrics label
        self.caps: Capabilities = sink.capabilities
        self._clock = clock
        self._sleep = sleep
        self._max_strikes = max_strikes
        self.on_response_id = on_response_id
        self._on_first_text = on_first_text
        self.on_checkpoint = on_checkpoint
        # A response that completed with nothing to show (a live-agent hand-off): the answer to
        # show instead of "no answer".
        self.on_empty = on_empty
        self._checkpoint: dict[str, Any] | None = None
        self._interval = max(0.0, self.caps.min_edit_interval)
        self._latest = Frame(text="", status=None)
        self._shown: Frame | None = None
        self._dirty = asyncio.Event()
        self._closing = False
        self._strikes = 0
        self._edits_enabled = self.caps.edit or self.caps.native_stream
        self._last_write = float("-inf")
        self._first_delta_at: float | None = None
        self._flusher: asyncio.Task | None = None
        self._writing = False
        self._nap: asyncio.Future | None = None  # the flusher's interval wait, if it is waiting
        self._failure: BaseException | None = None
        self.frames_shown = 0
        self.response_id: str | None = None
        self._messages: dict[str, Message] = {}
        self._reasoning = ""

    # The answer so far, as one Markdown text (a response may hold several messages).
    def _answer_text(self) -> str:
        return "\n\n".join(normalise_markdown(m.text).strip() for m in self._messages.values() if m.text)

    def _update(self) -> None:
        text = self._answer_text()
        frame = Frame(text=text, status=None if text else status_line(self._reasoning))
        if frame != self._latest:
            self._latest = frame
            self._dirty.set()
            if self._nap is not None and self._first_words_replace_status():
                self._nap.cancel()

    def begin(self) -> None:
        """Show the thinking line now, before the answer stream opens (slow steps come first:
        directory lookups, tokens, creating the conversation). `run` does it if nobody did."""
        if self._edits_enabled and self._flusher is None and not self._closing:
            self._flusher = asyncio.create_task(self._flush_loop(), name="stream-flusher")
            self._dirty.set()

    async def run(self, events: AsyncIterator[StreamEvent], *, deadline: float | None = None) -> RenderResult:
        """Consume the stream and finish the sink. Raises on failure (the caller then calls
        `fail` with a kind message); the flusher is always stopped first. `deadline` (loop
        time): the stream is closed then and `AnswerTimedOut` raised."""
        self.begin()
        final: Response | None = None
        limit = asyncio.timeout_at(deadline)
        try:
            async with limit:
                final = await self._consume(events)
        except TimeoutError:
            if not limit.expired():
                raise
            raise AnswerTimedOut() from None
        finally:
            await self._stop_flusher()
            if isinstance(events, AsyncGenerator):
                await events.aclose()
        if self._failure is not None:
            raise self._failure
        if final is None:
            raise StreamFailed("the answer stream ended without a result")
        if final.response_id:
            self.response_id = final.response_id
        if not final.messages and not self._messages and self.on_empty is not None:
            answer = await self.on_empty(final)
        else:
            answer = answer_from_response(final, self._messages)
        platform_ids = await self.sink.finish(answer)
        if self._first_delta_at is not None and self._on_first_text:
            self._on_first_text(self._clock() - self._first_delta_at)  # first text came with the final
        return RenderResult(
            answer=answer,
            response_id=self.response_id,
            message_ids=list(answer.message_ids),
            platform_ids=list(platform_ids or []),
            frames_shown=self.frames_shown,
        )

    async def _consume(self, events: AsyncIterator[StreamEvent]) -> Response | None:
        """Read the stream until it completes (the final response) or fails (raises)."""
        async for event in events:
            if self._failure is not None:
                raise self._failure
            if isinstance(event, ResponseCreated):
                self.response_id = event.response.response_id
                if self.on_response_id:
                    await self.on_response_id(self.response_id)
            elif isinstance(event, OutputDelta):
                output = event.output
                if isinstance(output, ReasoningMessage):
                    self._reasoning = output.text
                elif isinstance(output, Message) and output.actor != "USER":
                    if self._first_delta_at is None and output.text:
                        self._first_delta_at = self._clock()
                    self._messages[output.message_id] = output
                self._update()
            elif isinstance(event, ResponseCompleted):
                return event.response
            elif isinstance(event, ResponseFailed):
                err = event.response.error
                raise AnswerFailed(err.code if err else "FAILED", err.message if err else "")
            elif isinstance(event, StreamError):
                raise AnswerFailed(event.code, event.message)
        return None

    async def fail(self, message: str) -> None:
        await self._stop_flusher()
        await self.sink.fail(message)

    def _first_words_replace_status(self) -> bool:
        """An edited message may go from its status line to the first answer words without
        waiting out the interval (one extra edit). Native streams keep their pace: Teams allows
        one streaming update a second."""
        return (
            not self.caps.native_stream
            and self._shown is not None
            and not self._shown.text
            and bool(self._latest.text)
        )

    async def _stop_flusher(self) -> None:
        self._closing = True
        self._dirty.set()
        if self._flusher is not None:
            task, self._flusher = self._flusher, None
            if not self._writing:
                # Waiting for a token or the interval: drop it, or the final would queue behind
                # an intermediate frame that finals are always served before.
                task.cancel()
            try:
                await task  # lets an in-flight write complete, never cut in half
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves, not just the flusher
            except Exception:  # a failed frame must not hide the final answer
                log.debug("intermediate frame failed", exc_info=True)

    async def _flush_loop(self) -> None:
        while not self._closing:
            await self._dirty.wait()
            self._dirty.clear()
            if self._closing:
                return
            wait = self._last_write + self._interval - self._clock()
            if self._first_words_replace_status():
                wait = 0.0  # the first words replace a status line at once: what users wait for
            if wait > 0:
                # Interruptible: the first answer words end the wait (see `_update`).
                nap = self._nap = asyncio.ensure_future(self._sleep(wait))
                try:
                    await asyncio.wait({nap})
                finally:
                    nap.cancel()
                    self._nap = None
                if self._closing:
                    return
            if self._latest == self._shown:
                continue
            budgeted = self.frames_shown > 0 or self.caps.budget_posts
            if budgeted:
                await self.budget.acquire()
            frame = self._latest  # read after the wait: latest text wins
            if frame == self._shown or self._closing:
                if budgeted:
                    self.budget.refund()
                continue
            self._writing = True
            try:
                wrote = await self.sink.show(frame)
            except PlatformRateLimited as exc:
                metrics.PLATFORM_RATE_LIMITED.labels(self.platform).inc()
                self._strikes += 1
                self._interval = max(self._interval * 2, 1.0)
                self.budget.penalize(exc.retry_after or self._interval)
                if self._strikes >= self._max_strikes:
                    log.info("rate limited %d times; showing only the final answer", self._strikes)
                    return
                self._last_write = self._clock() + (exc.retry_after or 0.0)
                self._dirty.set()
                continue
            except StreamExpired:
                self._dirty.set()  # the sink switched strategy; show the latest again
                continue
            except PlatformError as exc:
                if exc.permanent:
                    self._failure = exc
                    return
                log.info("intermediate frame failed: %s", exc)
                self._last_write = self._clock()
                self._dirty.set()
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. UserCanceled: stop the answer, raised by run()
                self._failure = exc
                return
            finally:
                self._writing = False
            self._shown = frame
            if wrote is False:  # the sink skipped it: no interval, no token spent
                if budgeted:
                    self.budget.refund()
                continue
            self._strikes = 0
            self._last_write = self._clock()
            self.frames_shown += 1
            await self.save_checkpoint()
            if frame.text and self._on_first_text and self._first_delta_at is not None:
                self._on_first_text(self._clock() - self._first_delta_at)
                self._on_first_text = None

    async def save_checkpoint(self) -> None:
        """Hand the sink's checkpoint (what a restarted process needs to close this reply in
        place) to the owner when it changed: once per stream, not once per frame."""
        if self.on_checkpoint is None:
            return
        state = self.sink.checkpoint()
        if state != self._checkpoint:
            self._checkpoint = state
            await self.on_checkpoint(state)
