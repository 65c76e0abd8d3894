"""The streaming renderer: Moveworks stream events in, throttled writes to a `ReplySink` out.

`StreamRenderer` keeps the latest snapshot of every output (snapshots replace, never append),
shows the current reasoning step until answer text exists, and pushes frames to the sink with
"latest text wins" coalescing: at most one write in flight per reply, no write sooner than the
sink's declared interval, a token from the workspace's shared budget before each write, and no
write at all when nothing visible changed. Repeated rate limits stop intermediate frames (the
final answer still goes out). `EditingSink` is the generic post-then-edit sink built on an
adapter's `MessageOps`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from dataclasses import dataclass, field

from bridge.process import metrics
from bridge.mechanisms.ratelimit import Sleep, WriteBudget
from bridge.errors import DeliveryError, RateLimited, StreamExpired
from bridge.models import Answer, Capabilities, CitationLink, FeedbackTarget, Frame
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
from bridge.contract import MessageOps, ReplySink
from bridge.answers.markdown import balance_fences, normalise_markdown, split_markdown, status_line

log = logging.getLogger("bridge.answers.renderer")
T = TypeVar("T")

EMPTY_ANSWER = "I couldn't find an answer to that. Could you try rephrasing your question?"
CURSOR = " ▍"


def count_rate_limited(budget_key: str) -> None:
    metrics.PLATFORM_RATE_LIMITED.labels(budget_key.split(":", 1)[0]).inc()


def default_status_text(status: str | None) -> str:
    return f"_⏳ {status}…_" if status else "_⏳ Thinking…_"


# --- final answers --------------------------------------------------------------------------------


def answer_from_message(
    message: Message | None,
    *,
    extra: tuple[Message, ...] = (),
    response_id: str | None = None,
    conversation_id: str | None = None,
) -> Answer:
    """Build the final, platform-neutral answer: text with [n] citation markers, numbered
    citations, actions and feedback callback ids. `extra` are earlier messages of the same
    response, shown before `message`."""
    messages = [m for m in (*extra, message) if m is not None]
    numbers: dict[str, int] = {}
    links: list[CitationLink] = []
    texts: list[str] = []
    for msg in messages:
        by_id = {c.citation_id: c for c in msg.citations}

        def number(citation_id: str) -> int | None:
            if citation_id not in by_id:
                return None
            if citation_id not in numbers:
                c = by_id[citation_id]
                numbers[citation_id] = len(links) + 1
                links.append(CitationLink(len(links) + 1, c.title or c.url or "Source", c.url, c.body))
            return numbers[citation_id]

        text = msg.text
        inserts: dict[int, list[int]] = {}
        for ref in msg.content_references:  # ascending offsets; number in reading order
            n = number(ref.citation_id)
            offset = min(ref.offset, len(text))
            if n is not None and n not in inserts.setdefault(offset, []):
                inserts[offset].append(n)
        for c in msg.citations:  # cited but never referenced: still listed
            number(c.citation_id)
        for offset in sorted(inserts, reverse=True):
            text = text[:offset] + "".join(f"[{n}]" for n in inserts[offset]) + text[offset:]
        texts.append(normalise_markdown(text).strip())
    last = messages[-1] if messages else None
    feedback = None
    if last is not None and last.feedback is not None:
        feedback = FeedbackTarget(
            conversation_id=last.conversation_id or conversation_id or "",
            response_id=last.response_id or response_id or "",
            message_id=last.message_id,
            helpful=last.feedback.helpful,
            unhelpful=last.feedback.unhelpful,
        )
    actions = tuple(a for m in messages for a in m.actions)
    text = "\n\n".join(t for t in texts if t)
    if not text and not actions:
        text = EMPTY_ANSWER
    return Answer(
        text=text,
        citations=tuple(links),
        actions=actions,
        feedback=feedback,
        conversation_id=(last.conversation_id if last else None) or conversation_id,
        response_id=(last.response_id if last else None) or response_id,
        message_ids=tuple(m.message_id for m in messages),
    )


def answer_from_response(response: Response, streamed: dict[str, Message]) -> Answer:
    """The final answer of a completed response; streamed snapshots fill in if it lists none."""
    messages = [m for m in response.messages if m.actor != "USER"] or list(streamed.values())
    if not messages:
        return answer_from_message(None, response_id=response.response_id,
                                   conversation_id=response.conversation_id)
    return answer_from_message(
        messages[-1],
        extra=tuple(messages[:-1]),
        response_id=response.response_id,
        conversation_id=response.conversation_id,
    )


class AnswerFailed(Exception):
    """Moveworks ended the answer with FAILED or ERROR."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


# --- the renderer ---------------------------------------------------------------------------------


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
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_strikes: int = 3,
        on_response_id: Callable[[str], None] | None = None,
        on_first_text: Callable[[float], None] | None = None,
        on_checkpoint: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.sink = sink
        self.budget = budget
        self.caps: Capabilities = sink.capabilities
        self._clock = clock
        self._sleep = sleep
        self._max_strikes = max_strikes
        self._on_response_id = on_response_id
        self._on_first_text = on_first_text
        self._on_checkpoint = on_checkpoint
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

    async def run(self, events: AsyncIterator[StreamEvent]) -> RenderResult:
        """Consume the stream and finish the sink. Raises on failure (the caller then calls
        `fail` with a kind message); the flusher is always stopped first."""
        if self._edits_enabled:
            self._flusher = asyncio.create_task(self._flush_loop(), name="stream-flusher")
            self._dirty.set()  # show the thinking line at once
        final: Response | None = None
        try:
            async for event in events:
                if self._failure is not None:
                    raise self._failure
                if isinstance(event, ResponseCreated):
                    self.response_id = event.response.response_id
                    if self._on_response_id:
                        self._on_response_id(self.response_id)
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
                    final = event.response
                    break
                elif isinstance(event, ResponseFailed):
                    err = event.response.error
                    raise AnswerFailed(err.code if err else "FAILED", err.message if err else "")
                elif isinstance(event, StreamError):
                    raise AnswerFailed(event.code, event.message)
        finally:
            await self._stop_flusher()
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        if self._failure is not None:
            raise self._failure
        if final is None:
            raise StreamFailed("the answer stream ended without a result")
        if final.response_id:
            self.response_id = final.response_id
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
                if asyncio.current_task().cancelling():
                    raise  # we are being cancelled ourselves, not just the flusher
            except Exception:  # noqa: BLE001 - a failed frame must not hide the final answer
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
            except RateLimited as exc:
                count_rate_limited(self.sink.budget_key)
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
            except DeliveryError as exc:
                if exc.permanent:
                    self._failure = exc
                    return
                log.info("intermediate frame failed: %s", exc)
                self._last_write = self._clock()
                self._dirty.set()
                continue
            except Exception as exc:  # e.g. UserCanceled: stop the answer
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
            self._save_checkpoint()
            if frame.text and self._on_first_text and self._first_delta_at is not None:
                self._on_first_text(self._clock() - self._first_delta_at)
                self._on_first_text = None

    def _save_checkpoint(self) -> None:
        """Hand the sink's checkpoint (what a restarted process needs to close this reply in
        place) to the owner when it changed: once per stream, not once per frame."""
        checkpoint = getattr(self.sink, "checkpoint", None)
        if self._on_checkpoint is None or checkpoint is None:
            return
        state = checkpoint()
        if state != self._checkpoint:
            self._checkpoint = state
            self._on_checkpoint(state)


async def write_final(
    action: Callable[[], Awaitable[T]],
    budget: WriteBudget | None,
    budget_key: str,
    *,
    sleep: Sleep = asyncio.sleep,
    attempts: int = 8,
) -> T:
    """Run one write of a final answer until it lands: a final is never dropped for a 429.

    Takes a priority token from `budget` (None: this write is not budgeted) before each try,
    waits out `Retry-After` (and makes everyone sharing the budget wait too), and backs off on
    transient platform errors. Permanent errors and the last failure are raised."""
    delay = 1.0
    for attempt in range(1, attempts + 1):
        if budget is not None:
            await budget.acquire(final=True)
        try:
            return await action()
        except RateLimited as exc:
            count_rate_limited(budget_key)
            wait = exc.retry_after if exc.retry_after is not None else delay
            if budget is not None:
                budget.penalize(wait)
            if attempt == attempts:
                raise
            await sleep(wait)
        except DeliveryError as exc:
            if exc.permanent or attempt == attempts:
                raise
            await sleep(delay)
        delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


# --- the generic post-then-edit sink --------------------------------------------------------------


class EditingSink:
    """A reply made of one or more platform messages, posted then edited in place.

    Parts before the last are frozen once full; only the last part changes while streaming.
    Finals wait for budget with priority and retry through rate limits until visible.
    """

    def __init__(
        self,
        ops: MessageOps,
        capabilities: Capabilities,
        budget: WriteBudget,
        budget_key: str,
        *,
        sleep: Sleep = asyncio.sleep,
        status_text: Callable[[str | None], str] = default_status_text,
        final_attempts: int = 8,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.ops = ops
        self._on_end = on_end  # called once when the reply ends (finish or fail), e.g. to free a seat
        self.capabilities = capabilities
        self.budget = budget
        self.budget_key = budget_key
        self._sleep = sleep
        self._status_text = status_text
        self._final_attempts = final_attempts
        self._limit = capabilities.max_text_len
        self.message_ids: list[str] = []
        self._texts: list[str] = []
        self._answer_shown = ""  # answer text visible so far (without cursor/status)

    async def show(self, frame: Frame) -> None:
        if frame.text:
            body = balance_fences(frame.text) + CURSOR
        else:
            body = self._status_text(frame.status)
        first = True  # the renderer already took a token for the first write of a frame
        for i, part in enumerate(split_markdown(body, self._limit)):
            if i < len(self._texts) and self._texts[i] == part:
                continue
            if not first and self._budgeted(i):
                self.budget.charge()
            first = False
            await self._write(i, part, None)
        self._answer_shown = frame.text

    def _budgeted(self, index: int) -> bool:
        return index < len(self.message_ids) or self.capabilities.budget_posts

    async def _write(self, index: int, text: str, answer: Answer | None) -> None:
        if index < len(self.message_ids):
            await self.ops.edit(self.message_ids[index], text, answer=answer)
            self._texts[index] = text
        else:
            message_id = await self.ops.post(text, answer=answer)
            self.message_ids.append(message_id)
            self._texts.append(text)

    async def _final_write(self, index: int, text: str, answer: Answer | None) -> None:
        await write_final(
            lambda: self._write(index, text, answer),
            self.budget if self._budgeted(index) else None,
            self.budget_key,
            sleep=self._sleep,
            attempts=self._final_attempts,
        )

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    async def finish(self, answer: Answer) -> list[str]:
        try:
            return await self._finish(answer)
        finally:
            self._ended()

    async def fail(self, message: str) -> None:
        try:
            await self._fail(message)
        finally:
            self._ended()

    async def _finish(self, answer: Answer) -> list[str]:
        parts = split_markdown(answer.text, self._limit)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if i < len(self._texts) and self._texts[i] == part and not last:
                continue
            await self._final_write(i, part, answer if last else None)
        for message_id in self.message_ids[len(parts):]:  # the answer got shorter than a frame
            try:
                await self.ops.delete(message_id)
            except DeliveryError:
                log.info("could not delete a surplus part")
        del self.message_ids[len(parts):]
        del self._texts[len(parts):]
        self._answer_shown = answer.text
        return list(self.message_ids)

    async def _fail(self, message: str) -> None:
        note = f"⚠️ {message}"
        if not self.message_ids:
            await self._final_write(0, note, None)
            return
        if not self._answer_shown:  # only a status line is visible: replace it
            await self._final_write(len(self.message_ids) - 1, note, None)
            return
        kept = split_markdown(balance_fences(self._answer_shown), self._limit)
        tail = kept[-1] + "\n\n" + note
        index = len(kept) - 1
        if len(tail) > self._limit:
            await self._final_write(index, kept[-1], None)
            tail, index = note, index + 1
        await self._final_write(index, tail, None)
