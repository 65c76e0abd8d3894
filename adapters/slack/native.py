"""Slack's native streaming (`chat.startStream` / `appendStream` / `stopStream`) as a `ReplySink`.

Why not `slack_sdk`'s `chat_stream()` helper: it flushes only by size and gives no control over
rotation and recovery, which is where streams fail in practice. This sink:

* appends exactly the new text of each frame (the renderer already flushes at least once a
  second), in pieces of at most 11,500 characters (Slack refuses more than 12,000 per call);
* rotates to a fresh stream before Slack's undocumented ~5-minute expiry (at 4 minutes) or
  35,000 characters, closing and reopening a code fence that spans the cut;
* recovers from `message_not_in_streaming_state`: text that did not get through is carried into
  a new stream (while streaming) or finished with `chat.update` on the dead stream's ts;
* declines (`StreamDeclined`) when native streaming is refused (missing recipient, method
  unavailable) before any text was shown: the core continues the reply by edits;
* finishes with the exact final text: when the final text is not an extension of what was
  streamed (citation markers inserted), the streamed messages are rewritten with `chat.update`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge import texts
from bridge.answers.markdown import open_fence, split_markdown
from bridge.answers.sinks import write_final
from bridge.contract import ReplySink
from bridge.errors import PlatformError, PlatformRateLimited, StreamDeclined
from bridge.mechanisms.ratelimit import WriteBudget
from bridge.models import Answer, Capabilities, Frame, Rate

from . import blocks as bk
from .calls import PERMANENT, STREAM_GONE, TOO_LONG, TRANSIENT, error_code, is_rate_limited, retry_after
from .mrkdwn import preview
from .status import StatusKeeper

log = logging.getLogger("adapters.slack")

APPEND_LIMIT = 11_500  # per start/append/stop call; Slack's limit is 12,000
SEGMENT_LIMIT = 35_000  # rotate before Slack's ~40k per streamed message
ROTATE_AFTER = 240.0  # seconds; Slack ends streams after about 5 minutes
FINAL_PART_LIMIT = 11_000  # one markdown block when a part is rewritten with chat.update
STREAM_RATE = Rate(100, 60.0)  # chat.appendStream is Tier 4, per workspace

NATIVE_CAPABILITIES = Capabilities(
    max_text_len=SEGMENT_LIMIT,
    edit=True,
    native_stream=True,
    min_edit_interval=1.0,
    write_budget=STREAM_RATE,
    budget_posts=False,  # the first write is a post/startStream, not a budgeted edit
)

# Native streaming is unavailable for this reply: decline, the core continues by edits.
FALLBACK_ERRORS = frozenset(
    {
        "missing_recipient_team_id",
        "missing_recipient_user_id",
        "unknown_method",
        "not_allowed_token_type",
        "feature_not_enabled",
        "method_deprecated",
        "invalid_arguments",
        "missing_scope",
        "not_implemented",
    }
)
# ...and for every later reply in this workspace too (a configuration matter, not a glitch).
WORKSPACE_ERRORS = frozenset(
    {"unknown_method", "not_allowed_token_type", "feature_not_enabled", "method_deprecated", "missing_scope"}
)

@dataclass
class Segment:
    """One streamed Slack message."""

    ts: str
    text: str  # what the message shows (including fence lines added at a rotation)
    started_at: float
    live: bool = True


class _Fallback(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class NativeStreamSink(ReplySink):
    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        budget_key: str,
        stream_budget: WriteBudget,
        edit_budget: WriteBudget,
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
        status: StatusKeeper | None = None,
        on_write: Callable[[str], None] = lambda op: None,
        on_unavailable: Callable[[str], None] = lambda code: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        final_attempts: int = 8,
    ) -> None:
        self.capabilities = NATIVE_CAPABILITIES
        self.budget_key = budget_key
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.stream_budget = stream_budget
        self.edit_budget = edit_budget
        self.recipient_team_id = recipient_team_id
        self.recipient_user_id = recipient_user_id
        self.status = status
        self._on_write = on_write
        self._on_unavailable = on_unavailable
        self._clock = clock
        self._sleep = sleep
        self._final_attempts = final_attempts
        self.segments: list[Segment] = []
        self.sent = ""  # answer text delivered so far (without fence lines added at rotations)
        self.broken = False  # native failed after text was shown: finish() rewrites by edits
        self._reopen = ""  # fence line to start the next stream with

    # --- ReplySink --------------------------------------------------------------------------------

    async def show(self, frame: Frame) -> bool | None:
        if self.broken:
            return False
        if not frame.text:
            if self.status is not None:
                await self.status.set(frame.status)  # deduplicated, refreshed by the keeper
            # The thread status is not the streamed message: it must not hold back its first text.
            return False
        if not frame.text.startswith(self.sent):
            return None  # an earlier part was rewritten; finish() reconciles the messages
        delta = frame.text[len(self.sent):]
        if not delta:
            return None
        try:
            await self._deliver(delta, charge=False)
        except _Fallback as exc:
            await self._switch(exc.code)
        return None

    def checkpoint(self) -> dict[str, Any] | None:
        """The open stream (and any open code fence) a restarted process must stop after a crash."""
        seg = self._live()
        if seg is None or self.broken:
            return None
        fence = open_fence(seg.text)
        return {"channel": self.channel, "ts": seg.ts, "fence": fence[0] if fence else None}

    async def finish(self, answer: Answer) -> list[str]:
        await self._stop_status()
        extras = bk.answer_extras(answer)
        final = answer.text
        if not self.broken and final.strip() and final.startswith(self.sent):
            try:
                return await self._finish_stream(final, extras)
            except _Fallback as exc:
                if not self.segments:
                    await self._switch(exc.code)
                log.warning("native stream unavailable at the end (%s); finishing by edits", exc.code)
        return await self._rewrite(final, extras)

    async def fail(self, message: str) -> None:
        await self._stop_status()
        note = texts.failure_note(message)
        seg = self._live()
        if seg is not None:
            fence = open_fence(seg.text)
            text = ("\n" + fence[0] if fence else "") + "\n\n" + note
            try:
                await self._final(lambda: self._stop_call(seg, text, None), budget=self.stream_budget)
                return
            except (PlatformError, _Fallback, _Gone):
                log.info("could not end the stream with the failure note; posting it")
        await self._final(lambda: self._post(note, []), budget=self.edit_budget)

    # --- streaming --------------------------------------------------------------------------------

    def _live(self) -> Segment | None:
        if self.segments and self.segments[-1].live:
            return self.segments[-1]
        return None

    def _rotation_due(self, seg: Segment, incoming: int) -> bool:
        return (
            self._clock() - seg.started_at >= ROTATE_AFTER
            or len(seg.text) + min(incoming, APPEND_LIMIT) > SEGMENT_LIMIT
        )

    async def _deliver(self, delta: str, *, charge: bool) -> None:
        """Append `delta`, starting or rotating streams as needed. `self.sent` advances only by
        text Slack accepted, so a failure leaves the rest for the next attempt."""
        calls = 0
        restarts = 0
        while delta:
            seg = self._live()
            if seg is not None and self._rotation_due(seg, len(delta)):
                await self._rotate(seg)
                calls += 1
                seg = None
            room = APPEND_LIMIT if seg is None else min(APPEND_LIMIT, SEGMENT_LIMIT - len(seg.text))
            piece = delta[:room]
            if calls and charge is False:
                self.stream_budget.charge()  # the renderer paid for the first call only
            calls += 1
            try:
                if seg is None:
                    await self._start(piece)
                else:
                    await self._append(seg, piece)
            except _Gone:
                restarts += 1
                if restarts > 3:
                    raise PlatformError("slack: streams keep ending") from None
                continue  # the text is carried into a fresh stream
            self.sent += piece
            delta = delta[len(piece):]

    async def _rotate(self, seg: Segment) -> None:
        fence = open_fence(seg.text)
        closing = ("\n" + fence[0]) if fence else ""
        try:
            await self._stop_call(seg, closing, None)
        except _Gone:
            pass
        self._reopen = (fence[1] + "\n") if fence else ""
        seg.live = False

    def _raise(self, exc: SlackApiError, what: str, *, fresh: bool) -> None:
        code = error_code(exc)
        if is_rate_limited(exc):
            raise PlatformRateLimited(f"{what}: rate limited", retry_after=retry_after(exc)) from None
        if code in STREAM_GONE:
            raise _Gone(code) from None
        if code in FALLBACK_ERRORS or (fresh and code in TOO_LONG):
            raise _Fallback(code) from None
        if code in TOO_LONG:
            raise _Gone(code) from None  # this message is full: continue in a new stream
        raise PlatformError(f"{what}: {code or 'error'}", permanent=code in PERMANENT) from None

    async def _start(self, piece: str) -> None:
        text = self._reopen + piece
        kwargs: dict[str, Any] = {"channel": self.channel, "thread_ts": self.thread_ts, "markdown_text": text}
        if self.recipient_user_id:
            kwargs["recipient_user_id"] = self.recipient_user_id
        if self.recipient_team_id:
            kwargs["recipient_team_id"] = self.recipient_team_id
        try:
            self._on_write("stream_start")
            response = await self.client.chat_startStream(**kwargs)
        except SlackApiError as exc:
            self._raise(exc, "chat.startStream", fresh=True)
        except TRANSIENT as exc:
            raise PlatformError(f"chat.startStream: {type(exc).__name__}") from None
        self.segments.append(Segment(str(response["ts"]), text, self._clock()))
        self._reopen = ""
        await self._stop_status()  # the post replaces the status

    async def _append(self, seg: Segment, piece: str) -> None:
        try:
            self._on_write("stream_append")
            await self.client.chat_appendStream(channel=self.channel, ts=seg.ts, markdown_text=piece)
        except SlackApiError as exc:
            try:
                self._raise(exc, "chat.appendStream", fresh=False)
            except _Gone:
                code = error_code(exc)
                log.warning("slack stream %s ended early (%s); continuing in a new one", seg.ts, code)
                seg.live = False
                if code in TOO_LONG:  # full, but still open: close it so it does not spin forever
                    with contextlib.suppress(PlatformError, _Gone, _Fallback):
                        await self._stop_call(seg, "", None)
                raise
        except TRANSIENT as exc:
            raise PlatformError(f"chat.appendStream: {type(exc).__name__}") from None
        seg.text += piece

    async def _stop_call(self, seg: Segment, text: str, extras: list[dict[str, Any]] | None) -> None:
        kwargs: dict[str, Any] = {"channel": self.channel, "ts": seg.ts}
        if text:
            kwargs["markdown_text"] = text
        if extras:
            kwargs["blocks"] = extras
        try:
            self._on_write("stream_stop")
            await self.client.chat_stopStream(**kwargs)
        except SlackApiError as exc:
            try:
                self._raise(exc, "chat.stopStream", fresh=False)
            except _Gone:
                seg.live = False
                raise
        except TRANSIENT as exc:
            raise PlatformError(f"chat.stopStream: {type(exc).__name__}") from None
        seg.text += text
        seg.live = False

    # --- finishing --------------------------------------------------------------------------------

    async def _final(self, action: Callable[[], Awaitable[Any]], *, budget: WriteBudget) -> Any:
        """Run a final write until it succeeds (the final text is never dropped for a 429)."""
        return await write_final(action, budget, "slack", sleep=self._sleep, attempts=self._final_attempts)

    async def _finish_stream(self, final: str, extras: list[dict[str, Any]]) -> list[str]:
        remaining = final[len(self.sent):]
        seg = self._live()
        fits = seg is not None and not self._rotation_due(seg, len(remaining)) and len(remaining) <= min(
            APPEND_LIMIT, SEGMENT_LIMIT - len(seg.text)
        )
        if not fits:
            await self._final(lambda: self._deliver(final[len(self.sent):], charge=True), budget=self.stream_budget)
            remaining = ""
            seg = self._live()
        if seg is None:  # the last stream died just now; nothing left unsent
            return await self._rewrite(final, extras)
        try:
            await self._final(lambda: self._stop_call(seg, remaining, extras), budget=self.stream_budget)
            self.sent += remaining
        except _Gone:
            # Stream ended under us: finish on the same message with chat.update, or continue in
            # a new message when the text no longer fits one block.
            log.warning("slack stream %s ended before stop; finishing with chat.update", seg.ts)
            full = seg.text + remaining
            if len(full) <= FINAL_PART_LIMIT:
                await self._final(lambda: self._update(seg.ts, full, extras), budget=self.edit_budget)
                seg.text = full
            else:
                ts = await self._final(lambda: self._post(remaining, extras), budget=self.edit_budget)
                self.segments.append(Segment(ts, remaining, self._clock(), live=False))
            self.sent += remaining
        return [s.ts for s in self.segments]

    async def _rewrite(self, final: str, extras: list[dict[str, Any]]) -> list[str]:
        """Make the thread show exactly `final` by editing the streamed messages (and posting or
        deleting parts as needed)."""
        seg = self._live()
        if seg is not None:
            try:
                await self._final(lambda: self._stop_call(seg, "", None), budget=self.stream_budget)
            except (PlatformError, _Gone, _Fallback):
                seg.live = False
        parts = split_markdown(final, FINAL_PART_LIMIT) if final.strip() else [""]
        existing = [s.ts for s in self.segments]
        kept: list[str] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            more = extras if last else []
            if i < len(existing):
                ts = existing[i]
                if not (not last and self.segments[i].text == part):
                    await self._final(functools.partial(self._update, ts, part, more), budget=self.edit_budget)
            else:
                ts = await self._final(functools.partial(self._post, part, more), budget=self.edit_budget)
            kept.append(ts)
        for ts in existing[len(parts):]:
            try:
                self._on_write("delete")
                await self.client.chat_delete(channel=self.channel, ts=ts)
            except (SlackApiError, *TRANSIENT):
                log.info("could not delete a surplus streamed message")
        self.segments = [Segment(ts, p, self._clock(), live=False) for ts, p in zip(kept, parts, strict=True)]
        self.sent = final
        return kept

    def _content(self, text: str, extras: list[dict[str, Any]]) -> dict[str, Any]:
        body = bk.markdown_body(text) if text.strip() else []
        return {"text": preview(text) if text.strip() else texts.ANSWER_PREVIEW, "blocks": body + extras}

    async def _update(self, ts: str, text: str, extras: list[dict[str, Any]]) -> None:
        try:
            self._on_write("update")
            await self.client.chat_update(channel=self.channel, ts=ts, **self._content(text, extras))
        except SlackApiError as exc:
            self._raise_edit(exc, "chat.update")
        except TRANSIENT as exc:
            raise PlatformError(f"chat.update: {type(exc).__name__}") from None

    async def _post(self, text: str, extras: list[dict[str, Any]]) -> str:
        try:
            self._on_write("post")
            response = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, unfurl_links=False, unfurl_media=False,
                **self._content(text, extras),
            )
        except SlackApiError as exc:
            self._raise_edit(exc, "chat.postMessage")
        except TRANSIENT as exc:
            raise PlatformError(f"chat.postMessage: {type(exc).__name__}") from None
        return str(response["ts"])

    @staticmethod
    def _raise_edit(exc: SlackApiError, what: str) -> None:
        if is_rate_limited(exc):
            raise PlatformRateLimited(f"{what}: rate limited", retry_after=retry_after(exc)) from None
        code = error_code(exc)
        raise PlatformError(f"{what}: {code or 'error'}", permanent=code in PERMANENT) from None

    # --- fallback ---------------------------------------------------------------------------------

    async def _switch(self, code: str) -> None:
        """Native streaming is refused: before any text, decline (the core continues by edits);
        mid-answer, finish the streamed messages by edits here."""
        await self._stop_status()  # edits show their own status line
        if code in WORKSPACE_ERRORS:
            self._on_unavailable(code)
        if self.segments:
            log.warning("native streaming failed mid-answer (%s); the final text will be edited in", code)
            self.broken = True
            return
        raise StreamDeclined(f"slack native streaming unavailable: {code}")

    async def _stop_status(self) -> None:
        if self.status is not None:
            await self.status.stop()


class _Gone(Exception):
    """This stream can take no more text (expired or full)."""
