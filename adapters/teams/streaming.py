"""Teams native streaming for personal chats, as a core `ReplySink`.

The protocol: `typing` activities carrying a `streaminfo` entity (informative updates with the
current reasoning step, then cumulative `streaming` text, sequence numbers 1, 2, 3…), ended by a
`message` with `streamType: final` that carries the exact final text, AI entity, cards and
feedback flag. The renderer already guarantees one call at a time, at least a second apart.

Teams requires every streamed text to extend the one before, so only what the Markdown rewrite
will not change later is streamed (`render.streamable`: an unfinished heading, table row or code
span waits for its end) and the text keeps moving through headings and tables.

The final message carries the text, the AI label, the citation claims and the feedback flag; the
action buttons follow as a card message of their own (a final with text and a card shows as two
messages, each with a label and 👍/👎). A 4xx is never retried: Teams refused the message, so it
is sent again without the feedback flag, then as text alone, and if the stream cannot be ended
with it at all, ended by an update.

Recovery paths, so an answer is never lost:
* a frame whose text does not extend what was streamed (an upstream rewrite) is skipped: the
  final message carries the exact text anyway;
* 403 "exceeded streaming time" (2 minutes): the streamed message is finished with a plain
  `update_activity` of the full text (and intermediate frames keep updating it that way);
* 403 "canceled by user" (the person pressed Stop): `UserCanceled`, and `on_canceled` tells the
  core at once (`core.stop_answer`), so the Moveworks request is closed now rather than at its
  next event; nothing more is written (Teams ended the stream and shows what was streamed);
* streaming refused before anything was shown (ContentStreamNotAllowed, 405): the sink declines
  (`StreamDeclined`) and the core continues the reply by edits;
* an answer longer than one message: when the streamed message is full it is ended with its part
  and the answer streams on in a new message, so the text never stands still until the end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.schema import ActivityTypes

from bridge import texts
from bridge.answers.markdown import balance_fences, split_markdown
from bridge.contract import ReplySink
from bridge.errors import PlatformError, PlatformRateLimited, StreamDeclined, StreamExpired, UserCanceled
from bridge.mechanisms.ratelimit import Sleep, WriteBudget
from bridge.models import Answer, Capabilities, Frame

from .connector import StreamCanceled, StreamNotAllowed, StreamTimedOut, refused
from .entities import StreamInfoEntity
from .ops import TeamsTarget
from .render import FULL, NO_FEEDBACK, TEXT_ONLY, cited, is_answer_text, render_text, status_text, streamable

log = logging.getLogger("adapters.teams")


class TeamsStreamSink(ReplySink):
    def __init__(
        self,
        target: TeamsTarget,
        capabilities: Capabilities,
        budget: WriteBudget,
        budget_key: str,
        *,
        sleep: Sleep = asyncio.sleep,
        final_attempts: int = 8,
        on_canceled: Callable[[], Any] | None = None,
    ) -> None:
        self.target = target
        self.on_canceled = on_canceled
        self.capabilities = capabilities
        self.budget = budget
        self.budget_key = budget_key
        self._sleep = sleep
        self._final_attempts = final_attempts
        self._limit = capabilities.max_text_len
        self.stream_id: str | None = None
        self._sequence = 0
        self._streamed = ""  # wire text of the last `streaming` update
        self._shown_answer = ""  # answer Markdown visible so far
        self._state = "new"  # new | streaming | expired | canceled | done
        self.message_ids: list[str] = []
        self._full: list[str] = []  # parts of a long answer already ended as their own messages
        self._full_ids: list[str] = []
        self.card_id: str | None = None

    def checkpoint(self) -> dict[str, Any] | None:
        """The open stream a restarted process must end after a crash (Teams keeps it spinning)."""
        if self._state != "streaming" or self.stream_id is None:
            return None
        return {"stream_id": self.stream_id}

    def adopt(self, stream_id: str) -> None:
        """Continue a stream another (crashed) process opened, so `fail` can end it in place."""
        self.stream_id, self._state = stream_id, "streaming"

    # --- intermediate frames -------------------------------------------------------------------

    async def show(self, frame: Frame) -> bool | None:
        if self._state == "canceled":
            raise UserCanceled()
        if self._state == "expired":
            await self._show_by_update(frame)
            return None
        if not frame.text:
            if self._streamed or self._full:
                return False  # informative updates only before the first text
            await self._stream(status_text(frame.status), "informative")
            return None
        text = frame.text
        if self._full or len(text) > self._limit:
            parts = split_markdown(text, self._limit)
            if parts[:len(self._full)] != self._full:
                return False  # an ended part was rewritten: the final reconciles it
            if len(parts) > len(self._full) + 1 and self._state == "streaming":
                await self._rotate(parts[len(self._full)])
            text = parts[min(len(self._full), len(parts) - 1)]
        if self.target.text_format != "extendedmarkdown":
            text = streamable(text)  # never what the rewrite may still change
        wire = render_text(text, self.target.text_format)
        if not wire.strip() or wire == self._streamed:
            return False  # nothing new that is safe to show yet
        if not wire.startswith(self._streamed):
            return False  # not cumulative (Moveworks rewrote its text): the final reconciles it
        await self._stream(wire, "streaming")
        self._streamed = wire
        self._shown_answer = text
        return None

    async def _rotate(self, part: str) -> None:
        """The streamed message is full: end it with its part; the next frame opens a new stream."""
        self._full_ids.append(await self._end_stream(part, None))
        self._full.append(part)
        self.stream_id, self._sequence, self._streamed, self._shown_answer = None, 0, "", ""
        self._state = "new"

    async def _stream(self, text: str, stream_type: str) -> None:
        sequence = self._sequence + 1
        activity = self.target.message(
            text,
            kind=ActivityTypes.typing,
            entities=[StreamInfoEntity(stream_type=stream_type, stream_sequence=sequence, stream_id=self.stream_id)],
            raw_text=True,
        )
        try:
            stream_id = await self.target.send(activity, op="stream")
        except StreamCanceled:
            self._state = "canceled"
            if self.on_canceled is not None:
                self.on_canceled()
            raise UserCanceled() from None
        except StreamTimedOut:
            self._state = "expired"
            raise
        except StreamNotAllowed as exc:
            if self.stream_id is None:
                raise StreamDeclined(f"teams refused native streaming here: {exc}") from None
            self._state = "expired"
            raise StreamExpired(str(exc)) from None
        self._sequence = sequence
        if self.stream_id is None:
            self.stream_id = stream_id
            self._state = "streaming"

    async def _show_by_update(self, frame: Frame) -> None:
        if not frame.text or not self.stream_id or len(frame.text) > self._limit:
            return
        body = balance_fences(frame.text) + texts.CURSOR
        await self.target.update(self.stream_id, self.target.growing_message(body))
        self._shown_answer = frame.text

    # --- the end -------------------------------------------------------------------------------

    async def _final(self, write: Callable[[], Awaitable[Any]]) -> Any:
        """A write that must happen: retries 429 (Retry-After) and transient errors with jitter."""
        delay = 1.0
        for attempt in range(1, self._final_attempts + 1):
            await self.budget.acquire(final=True)
            try:
                return await write()
            except PlatformRateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else delay * random.uniform(0.5, 1.5)
                self.budget.penalize(wait)
                if attempt == self._final_attempts:
                    raise
                await self._sleep(wait)
            except (StreamTimedOut, StreamCanceled, StreamNotAllowed):
                raise
            except PlatformError as exc:
                if exc.permanent or attempt == self._final_attempts:
                    raise
                await self._sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _end_stream(self, text: str, answer: Answer | None, *, last: bool = True, ai: bool = True) -> str:
        """Finish the stream with `text` (Markdown): the final streaming message, or a plain
        update of the streamed message when the stream has ended on Teams' side. When Teams
        refuses the message (a 4xx), it goes again with less (no feedback flag, then the text
        alone) at once, never retried as it was."""
        assert self.stream_id is not None
        stream_id = self.stream_id
        levels = [FULL, NO_FEEDBACK, TEXT_ONLY] if answer is not None else [FULL, TEXT_ONLY]
        if self._state == "streaming":
            for level in levels:
                activity = self.target.text_message(text, answer, last=last, ai=ai, level=level)
                activity.entities = [StreamInfoEntity(stream_type="final", stream_id=stream_id),
                                     *(activity.entities or [])]
                try:
                    await self._final(functools.partial(self.target.send, activity, op="stream", final=True))
                    self._state = "done"
                    return stream_id
                except StreamCanceled:
                    self._state = "canceled"
                    raise UserCanceled() from None
                except (StreamTimedOut, StreamNotAllowed) as exc:
                    log.info("teams stream ended early (%s); finishing with an update", exc)
                    self._state = "expired"
                    break
                except PlatformError as exc:
                    if not refused(exc):
                        raise
                    log.warning("teams refused the final stream message (%s); sending it with less", exc)
            else:
                log.warning("teams refused every final stream message; ending the stream by an update")
        for n, level in enumerate(levels):
            activity = self.target.text_message(text, answer, last=last, ai=ai, level=level)
            try:
                await self._final(functools.partial(self.target.update, stream_id, activity, final=True))
                break
            except PlatformError as exc:
                if not refused(exc) or n == len(levels) - 1:
                    raise
                log.warning("teams refused the update ending the stream (%s); sending it with less", exc)
        self._state = "done"
        return stream_id

    async def _write_part(self, write: Callable[[Any], Awaitable[Any]], text: str, answer: Answer | None,
                          last: bool) -> Any:
        """A final text message (post or update), with less when Teams refuses it."""
        levels = [FULL, NO_FEEDBACK, TEXT_ONLY] if answer is not None else [FULL, TEXT_ONLY]
        for n, level in enumerate(levels):
            activity = self.target.text_message(text, answer, last=last, level=level)
            try:
                return await self._final(functools.partial(write, activity))
            except PlatformError as exc:
                if not refused(exc) or n == len(levels) - 1:
                    raise
                log.warning("teams refused a final message (%s); sending it with less", exc)
        raise AssertionError("unreachable")

    async def _card(self, answer: Answer) -> None:
        """The answer's buttons as a message of their own, after its text."""
        activity = self.target.card_message(answer)
        if activity is None:
            return
        try:
            self.card_id = await self._final(
                functools.partial(self.target.send, activity, op="post", final=True))
        except PlatformError as exc:
            if not refused(exc):
                raise
            log.warning("teams refused an answer's card (%s); the answer stands without it", exc)

    async def finish(self, answer: Answer) -> list[str]:
        if self._state == "canceled":
            raise UserCanceled()
        parts = split_markdown(answer.text, self._limit)
        ids: list[str] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if i < len(self._full):  # already ended while streaming: fix it only if it changed
                message_id = self._full_ids[i]
                if part != self._full[i] or last or cited(part, answer, last=False):
                    await self._write_part(functools.partial(self.target.update, message_id, final=True),
                                           part, answer, last)
                ids.append(message_id)
            elif i == len(self._full) and self.stream_id is not None:
                ids.append(await self._end_stream(part, answer, last=last))
            else:
                ids.append(await self._write_part(
                    functools.partial(self.target.send, op="post", final=True), part, answer, last))
        for message_id in self._full_ids[len(parts):]:  # the final answer is shorter than streamed
            try:
                await self.target.delete(message_id)
            except PlatformError:
                log.info("could not delete a surplus part")
        await self._card(answer)
        await self.target.remember_answer([*ids, self.card_id], answer)
        self._state = "done"
        self._shown_answer = answer.text
        self.message_ids = ids
        return ids

    async def fail(self, message: str) -> None:
        if self._state in ("canceled", "done"):
            return
        note = texts.failure_note(message)
        if self.stream_id is None:
            await self._final(lambda: self.target.send(self.target.text_message(note, ai=False), op="post",
                                                       final=True))
            return
        kept = balance_fences(self._shown_answer) if self._shown_answer else ""
        text = f"{kept}\n\n{note}" if kept else note
        if len(text) > self._limit:
            text = split_markdown(kept, self._limit - len(note) - 2)[0] + "\n\n" + note
        try:
            await self._end_stream(text, None, ai=is_answer_text(text))
        except UserCanceled:
            return
