"""The core's reply sinks and final-write policy, shared by every platform.

* `write_final`: one write of a final answer, retried until it lands (never dropped for a 429).
* `EditingSink`: the generic post-then-edit reply over an adapter's `MessageOps`.
* `WithFallback`: a native stream that may decline before it showed anything; the reply then
  continues as post-then-edit. This is the only place that fall-back lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bridge import texts
from bridge.answers.markdown import balance_fences, split_markdown
from bridge.contract import MessageOps, ReplySink
from bridge.errors import PlatformError, PlatformRateLimited, StreamDeclined
from bridge.mechanisms.ratelimit import Sleep, WriteBudget
from bridge.models import Answer, Capabilities, Frame
from bridge.process import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


async def write_final(
    action: Callable[[], Awaitable[T]],
    budget: WriteBudget | None,
    platform: str,
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
        except PlatformRateLimited as exc:
            metrics.PLATFORM_RATE_LIMITED.labels(platform).inc()
            wait = exc.retry_after if exc.retry_after is not None else delay
            if budget is not None:
                budget.penalize(wait)
            if attempt == attempts:
                raise
            await sleep(wait)
        except PlatformError as exc:
            if exc.permanent or attempt == attempts:
                raise
            await sleep(delay)
        delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


class EditingSink(ReplySink):
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
        platform: str = "",
        sleep: Sleep = asyncio.sleep,
        status_text: Callable[[str | None], str] = texts.status_line,
        final_attempts: int = 8,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.ops = ops
        self._on_end = on_end  # called once when the reply ends (finish or fail), e.g. to free a seat
        self.capabilities = capabilities
        self.budget = budget
        self.budget_key = budget_key
        self.platform = platform
        self._sleep = sleep
        self._status_text = status_text
        self._final_attempts = final_attempts
        self._limit = capabilities.max_text_len
        self.message_ids: list[str] = []
        self._texts: list[str] = []
        self._answer_shown = ""  # answer text visible so far (without cursor/status)

    async def show(self, frame: Frame) -> None:
        if frame.text:
            body = balance_fences(frame.text) + texts.CURSOR
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
            self.platform,
            sleep=self._sleep,
            attempts=self._final_attempts,
        )

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def checkpoint(self) -> dict[str, Any] | None:
        """The message that shows the growing answer and its text (without the cursor; "" while
        it shows the status line), so a restarted process can end it in place with its note
        instead of leaving it frozen."""
        if not self.message_ids:
            return None
        shown = self._texts[-1] if self._answer_shown else ""
        if shown.endswith(texts.CURSOR):
            shown = shown[: -len(texts.CURSOR)]
        return {"edited": {"message_id": self.message_ids[-1], "text": shown}}

    def resume(self, checkpoint: dict[str, Any]) -> bool:
        edited = checkpoint.get("edited")
        if not isinstance(edited, dict) or not edited.get("message_id"):
            return False
        shown = str(edited.get("text") or "")
        self.message_ids = [str(edited["message_id"])]
        self._texts = [shown + texts.CURSOR if shown else ""]
        self._answer_shown = shown
        return True

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
            except PlatformError:
                log.info("could not delete a surplus part")
        del self.message_ids[len(parts):]
        del self._texts[len(parts):]
        self._answer_shown = answer.text
        return list(self.message_ids)

    async def _fail(self, message: str) -> None:
        note = texts.failure_note(message)
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


class WithFallback(ReplySink):
    """A native streaming sink that may decline (`StreamDeclined`) until it has shown something;
    the reply then continues as `fallback()` builds it (post-then-edit), replaying the frame or
    final answer that was declined. After the switch, every intermediate frame also takes a
    token from `fallback_budget` when the fall-back writes against a different budget than the
    one the renderer draws from (Slack: chat.update's Tier 3 rather than the stream methods')."""

    def __init__(
        self,
        native: ReplySink,
        fallback: Callable[[], ReplySink],
        *,
        fallback_budget: WriteBudget | None = None,
    ) -> None:
        self.capabilities = native.capabilities
        self.budget_key = native.budget_key
        self.sink = native
        self._make_fallback = fallback
        self._fallback_budget = fallback_budget
        self.declined: str | None = None  # why native streaming was declined, once it was

    def _switch(self, exc: StreamDeclined) -> None:
        log.info("native streaming declined (%s); continuing by edits", exc)
        self.declined = str(exc)
        self.sink = self._make_fallback()

    async def show(self, frame: Frame) -> bool | None:
        if self.declined is not None:
            if self._fallback_budget is not None:
                await self._fallback_budget.acquire()
            return await self.sink.show(frame)
        try:
            return await self.sink.show(frame)
        except StreamDeclined as exc:
            self._switch(exc)
        if self._fallback_budget is not None:
            self._fallback_budget.charge()  # the renderer paid the declined call's budget
        return await self.sink.show(frame)

    async def finish(self, answer: Answer) -> list[str]:
        if self.declined is None:
            try:
                return await self.sink.finish(answer)
            except StreamDeclined as exc:
                self._switch(exc)
        return await self.sink.finish(answer)

    async def fail(self, message: str) -> None:
        await self.sink.fail(message)

    def checkpoint(self) -> dict[str, Any] | None:
        return self.sink.checkpoint()

    def resume(self, checkpoint: dict[str, Any]) -> bool:
        return self.sink.resume(checkpoint)
