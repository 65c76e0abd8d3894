"""Slack's native streaming (`chat.startStream` / `appendStream` / `stopStream`) as a `ReplySink`.

Why not `slack_sdk`'s `chat_stream()` helper: it flushes only by size and gives no control over
rotation and recovery, which is where streams fail in practice. This sink:

* appends exactly the new text of each frame (the renderer already flushes at least once a
  second), in pieces of at most 11,500 characters (Slack refuses more than 12,000 per call);
* rotates to a fresh stream before Slack's undocumented ~5-minute expiry (at 4 minutes) or
  35,000 characters, closing and reopening a code fence that spans the cut;
* recovers from `message_not_in_streaming_state`: text that did not get through is carried into
  a new stream (while streaming) or finished with `chat.update` on the dead stream's ts;
* declines (`StreamDeclined`) when native streaming is refused before any text was shown, for the
  documented chat.startStream errors that mean "not here" (missing or unknown recipient, channel
  type not supported, method unavailable): the core continues the reply by edits. The documented
  errors that mean nothing can be posted there at all (thread locked, Messages tab disabled, the
  workspace's message limit) end the reply as permanent (`calls.PERMANENT`);
* never edits or deletes a message that is still streaming (Slack refuses both): a stream is
  stopped before any `chat.update`. When Slack refuses the extras of the stop (citations and
  buttons: `msg_blocks_too_long`, `invalid_blocks`), the stream is stopped without them and they
  follow in a message of their own; the extras are measured before they are sent
  (`blocks.layout_extras`);
* finishes with the exact final text: when the final text is not an extension of what was
  streamed (citation markers inserted), the streamed messages are rewritten with `chat.update`;
* pays for every call in the workspace's budgets: chat.startStream and chat.stopStream each from
  its own Tier 2 budget (admission took the first start and stop; rotations, restarts and
  failure stops take their own, and tokens never used go back), appends from the Tier 4 budget
  the renderer draws from;
* shows Moveworks' reasoning as a plan (`plans`): the first reasoning step starts the stream with
  `task_display_mode: plan`, a `plan_update` title and the step as a `task_update` in progress;
  each new step marks the previous one complete; the first answer text (or the final answer)
  marks the last one complete, a failure marks it `error`. Where Slack refuses the chunks
  (`invalid_chunks`; an older workspace) the reasoning shows in the thread status as before, and
  `on_plans_refused` keeps the workspace from trying again;
* in an agent session (`sessions.py`) ends the session with the final chat.stopStream's
  `session_status: active` and keeps it `processing` across mid-answer stops (rotations);
* after the person pressed Stop (`agent_session_stopped`, or `stopped_by_user` from an append)
  writes nothing more, and ends the reply in place: the stopped message is edited to end with
  the note;
* puts plain 👍/👎 buttons under the answer where the workspace refuses the `context_actions`
  block (remembered in `formats`, shared with the edited replies of the workspace).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

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
from .calls import (
    INVALID_BLOCKS,
    PERMANENT,
    REFUSED,
    STREAM_GONE,
    TOO_LONG,
    TRANSIENT,
    error_code,
    is_rate_limited,
    retry_after,
)
from .ops import message_payload
from .sessions import Session
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
# ...and, from chat.startStream, these documented ones too: the channel type cannot stream, or the
# recipient team/user is unknown (edits need no recipient).
START_FALLBACK_ERRORS = FALLBACK_ERRORS | {"channel_type_not_supported", "team_not_found", "user_not_found"}
# ...for every later reply in this workspace too (a configuration matter, not a glitch).
WORKSPACE_ERRORS = frozenset(
    {"unknown_method", "not_allowed_token_type", "feature_not_enabled", "method_deprecated", "missing_scope"}
)
# ...for every later reply in this channel (it cannot stream, whoever asks).
CHANNEL_ERRORS = frozenset({"channel_type_not_supported"})
# A stream that carried task/plan chunks was refused for them: no plans in this workspace (the
# text streams as before). `invalid_arguments` too: a workspace that predates chunks and
# `task_display_mode` may refuse the arguments themselves.
PLAN_ERRORS = frozenset({"invalid_chunks", "invalid_arguments"})
STOPPED_BY_USER = "stopped_by_user"  # chat.appendStream after the person pressed Stop
STEP_LIMIT = 120  # characters of a reasoning step shown as a task title


@dataclass
class Segment:
    """One streamed Slack message."""

    ts: str
    text: str  # what the message shows (including fence lines added at a rotation)
    started_at: float
    live: bool = True  # may still be streaming: never chat.update or chat.delete it
    stream: bool = True  # started with chat.startStream (not a posted part)
    ended: bool = False  # stopped by our own chat.stopStream (not by Slack or the person)


class _Fallback(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Gone(Exception):
    """This stream can take no more text (expired or full)."""


def _task(step: tuple[str, str], status: str) -> dict[str, Any]:
    return {"type": "task_update", "id": step[0], "title": step[1], "status": status}


class _Refused(Exception):
    """Slack refused what a chat.stopStream carried (its extras, or text that no longer fits); the
    stream is still open."""

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
        start_budget: WriteBudget | None = None,
        stop_budget: WriteBudget | None = None,
        prepaid: bool = False,
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
        status: StatusKeeper | None = None,
        on_write: Callable[[str], None] = lambda op: None,
        on_unavailable: Callable[[str], None] = lambda code: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        final_attempts: int = 8,
        plans: bool = False,
        plan_title: str = texts.SLACK_PLAN_TITLE,
        on_plans_refused: Callable[[str], None] = lambda code: None,
        session: Session | None = None,
        on_user_stop: Callable[[], None] = lambda: None,
        formats: dict[str, bool] | None = None,
    ) -> None:
        """`start_budget`/`stop_budget`: the workspace's Tier 2 budgets of chat.startStream and
        chat.stopStream (None: unlimited); `prepaid`: admission already took one of each.
        `plans`: show reasoning steps as a plan; `session`: the answer's agent session;
        `formats`: the workspace's refusals (`context_actions`)."""
        self.capabilities = NATIVE_CAPABILITIES
        self.budget_key = budget_key
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.stream_budget = stream_budget
        self.edit_budget = edit_budget
        self.start_budget = start_budget if start_budget is not None else WriteBudget(None)
        self.stop_budget = stop_budget if stop_budget is not None else WriteBudget(None)
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
        self._prepaid = {"start": int(prepaid), "stop": int(prepaid)}
        self._frames = 0  # text frames shown: the renderer pays an append for each after the first
        self._append_paid = False  # the renderer's token for this frame, not spent yet
        self._sources: list[dict[str, Any]] = []  # citations due in a follow-up message
        self.plans = plans
        self._plan_title = plan_title
        self._on_plans_refused = on_plans_refused
        self._plan_seg: Segment | None = None  # the stream that shows the plan
        self._step: tuple[str, str] | None = None  # (task id, title) of the step in progress
        self._steps = 0
        self.session = session
        self._on_user_stop = on_user_stop
        self.user_stopped = False  # Slack said stopped_by_user
        self.formats = formats if formats is not None else {}

    # --- ReplySink --------------------------------------------------------------------------------

    async def show(self, frame: Frame) -> bool | None:
        if self.broken or self._halted():
            return False
        if not frame.text:
            if frame.status and self.plans and await self._show_step(frame.status):
                self._frames += 1
                return None
            if self.status is not None:
                await self.status.set(frame.status)  # deduplicated, refreshed by the keeper
            # The thread status is not the streamed message: it must not hold back its first text.
            return False
        self._append_paid = self._frames > 0
        try:
            await self._show_text(frame.text)
        finally:
            if self._append_paid:  # the renderer's token bought no append: give it back
                self._append_paid = False
                self.stream_budget.refund()
        self._frames += 1
        return None

    def _halted(self) -> bool:
        """The person pressed Stop: nothing more is written until the reply's end."""
        return self.user_stopped or (self.session is not None and self.session.stop_requested)

    # --- the plan ---------------------------------------------------------------------------------

    async def _show_step(self, status: str) -> bool:
        """A reasoning step as a task of the plan. True when it was written (the renderer paid an
        append for it when it was not the first write); False: show it in the thread status."""
        seg = self._live()
        if self.segments and (seg is None or seg is not self._plan_seg):
            return False  # the plan's stream ended (expiry): the status line takes over
        title = status if len(status) <= STEP_LIMIT else status[: STEP_LIMIT - 1] + "…"
        if self._step is not None and self._step[1] == title:
            return False
        chunks: list[dict[str, Any]] = []
        if seg is None:
            chunks.append({"type": "plan_update", "title": self._plan_title})
        if self._step is not None:
            chunks.append(_task(self._step, "complete"))
        self._steps += 1
        step = (f"step-{self._steps}", title)
        chunks.append(_task(step, "in_progress"))
        self._append_paid = seg is not None and self._frames > 0
        try:
            if seg is None:
                await self._start_plan(chunks)
            else:
                if self._rotation_due(seg, 0):
                    return False
                await self._append_chunks(seg, chunks)
        except _Fallback as exc:
            if exc.code not in PLAN_ERRORS:
                await self._switch(exc.code)  # native streaming itself is unavailable here
                return False
            log.info("slack refused plan chunks (%s); reasoning shows in the thread status", exc.code)
            self.plans = False
            self._on_plans_refused(exc.code)
            return False
        except _Gone as exc:
            if seg is not None and str(exc) in TOO_LONG:
                await self._close_full(seg)
            return False  # the plan's stream ended early; the status line takes over
        finally:
            if self._append_paid:  # not spent: the renderer refunds its token when we return False
                self._append_paid = False
        self._step = step
        return True

    def _start_args(self, **content: Any) -> dict[str, Any]:
        """chat.startStream's arguments: where, for whom (required in channels), and `content`."""
        kwargs: dict[str, Any] = {"channel": self.channel, "thread_ts": self.thread_ts, **content}
        if self.recipient_user_id:
            kwargs["recipient_user_id"] = self.recipient_user_id
        if self.recipient_team_id:
            kwargs["recipient_team_id"] = self.recipient_team_id
        return kwargs

    async def _start_plan(self, chunks: list[dict[str, Any]]) -> None:
        kwargs = self._start_args(chunks=chunks, task_display_mode="plan")
        await self._pay("start")
        try:
            self._on_write("stream_start")
            response = await self.client.chat_startStream(**kwargs)
        except SlackApiError as exc:
            if error_code(exc) in PLAN_ERRORS:
                self._prepaid["start"] += 1  # the token is kept for the answer's own start
                raise _Fallback(error_code(exc)) from None
            self._raise(exc, "chat.startStream", kind="start")
        except TRANSIENT as exc:
            raise PlatformError(f"chat.startStream: {type(exc).__name__}") from None
        seg = Segment(str(response["ts"]), "", self._clock())
        self.segments.append(seg)
        self._plan_seg = seg
        await self._stop_status()  # the post replaces the status

    async def _append_chunks(self, seg: Segment, chunks: list[dict[str, Any]]) -> None:
        await self._pay("append")
        try:
            self._on_write("stream_append")
            await self.client.chat_appendStream(channel=self.channel, ts=seg.ts, chunks=chunks)
        except SlackApiError as exc:
            if error_code(exc) in PLAN_ERRORS:
                raise _Fallback(error_code(exc)) from None
            self._stream_error(exc, seg, "chat.appendStream")
        except TRANSIENT as exc:
            raise PlatformError(f"chat.appendStream: {type(exc).__name__}") from None

    def _plan_chunks(self, seg: Segment, outcome: str = "complete") -> list[dict[str, Any]]:
        """The last step's end, once, when `seg` shows the plan (first text, final, failure)."""
        if seg is not self._plan_seg or self._step is None:
            return []
        step, self._step = self._step, None
        return [_task(step, outcome)]

    async def _show_text(self, text: str) -> None:
        if not text.startswith(self.sent):
            return  # an earlier part was rewritten; finish() reconciles the messages
        delta = text[len(self.sent):]
        if not delta:
            return
        try:
            await self._deliver(delta)
        except _Fallback as exc:
            await self._switch(exc.code)

    def checkpoint(self) -> dict[str, Any] | None:
        """The open stream (and any open code fence) a restarted process must stop after a crash."""
        seg = self._live()
        if seg is None or self.broken:
            return None
        fence = open_fence(seg.text)
        return {"channel": self.channel, "ts": seg.ts, "fence": fence[0] if fence else None}

    async def finish(self, answer: Answer) -> list[str]:
        await self._stop_status()
        try:
            final = answer.text
            if not self.broken and final.strip() and final.startswith(self.sent):
                try:
                    return await self._finish_stream(final, answer)
                except _Fallback as exc:
                    if not self.segments:
                        await self._switch(exc.code)
                    log.warning("native stream unavailable at the end (%s); finishing by edits", exc.code)
            return await self._rewrite(final, answer)
        finally:
            self._release()

    async def fail(self, message: str) -> None:
        await self._stop_status()
        note = texts.failure_note(message)
        try:
            self._apply_stop()
            seg = self._live()
            if seg is not None:
                fence = open_fence(seg.text)
                text = ("\n" + fence[0] if fence else "") + "\n\n" + note
                try:
                    await self._final(lambda: self._stop_call(seg, text, None, final=True, outcome="error"))
                    return
                except _Refused:  # the note does not fit: end the stream as it is, then post it
                    with contextlib.suppress(PlatformError, _Fallback, _Gone, _Refused):
                        await self._final(lambda: self._stop_call(seg, "", None, final=True, outcome="error"))
                except _Gone:
                    log.info("the stream had ended; ending its message in place with the note")
                except (PlatformError, _Fallback):
                    log.info("could not end the stream with the failure note; posting it")
            if await self._end_in_place(note):
                return
            await self._final(lambda: self._post(note, None))
        finally:
            self._release()

    def _apply_stop(self) -> None:
        """The streams Slack stopped when the person pressed Stop take no more calls."""
        if self.session is not None and self.session.stopped_ts:
            for seg in self.segments:
                if seg.ts in self.session.stopped_ts:
                    seg.live = False

    async def _end_in_place(self, note: str) -> bool:
        """A stream Slack ended before us (the person pressed Stop, or it expired) can be edited:
        its message gets the note at its end (a code fence left open is closed first). False
        when there is no such message or the edit did not go through."""
        seg = self.segments[-1] if self.segments else None
        if seg is None or seg.live or not self._streamed(seg):
            return False
        fence = open_fence(seg.text)
        body = seg.text + ("\n" + fence[0] if fence else "")
        text = (body + "\n\n" + note) if body.strip() else note
        if len(text) > FINAL_PART_LIMIT:
            return False
        try:
            await self._final(lambda: self._update(seg.ts, text, None), budget=self.edit_budget)
        except PlatformError as exc:
            log.info("could not end the stopped stream in place (%s); posting the note", exc)
            return False
        seg.text = text
        return True

    def _streamed(self, seg: Segment) -> bool:
        return seg.stream and not seg.ended

    # --- budgets ----------------------------------------------------------------------------------

    async def _pay(self, kind: str) -> None:
        """Take the budget token of one call: `start`, `stop` (Tier 2 each) or `append` (Tier 4)."""
        if kind == "append":
            if self._append_paid:
                self._append_paid = False
                return
            await self.stream_budget.acquire(final=True)
            return
        if self._prepaid[kind] > 0:
            self._prepaid[kind] -= 1
            return
        await self._budget(kind).acquire(final=True)

    def _budget(self, kind: str) -> WriteBudget:
        return {"start": self.start_budget, "stop": self.stop_budget}.get(kind, self.stream_budget)

    def _release(self) -> None:
        """Give back what admission took for calls this reply never made."""
        for kind, unused in self._prepaid.items():
            if unused:
                self._budget(kind).refund(unused)
        self._prepaid = {"start": 0, "stop": 0}

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

    async def _deliver(self, delta: str) -> None:
        """Append `delta`, starting or rotating streams as needed. `self.sent` advances only by
        text Slack accepted, so a failure leaves the rest for the next attempt."""
        restarts = 0
        while delta and not self._halted():
            seg = self._live()
            if seg is not None and self._rotation_due(seg, len(delta)):
                await self._rotate(seg)
                seg = None
            room = APPEND_LIMIT if seg is None else min(APPEND_LIMIT, SEGMENT_LIMIT - len(seg.text))
            piece = delta[:room]
            try:
                if seg is None:
                    await self._start(piece)
                else:
                    await self._append(seg, piece)
            except _Gone as exc:
                if self.user_stopped:
                    return  # the person stopped the answer: nothing more goes out
                if seg is not None and str(exc) in TOO_LONG:
                    await self._close_full(seg)
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
        except _Refused:
            with contextlib.suppress(PlatformError, _Gone, _Refused, _Fallback):
                await self._stop_call(seg, "", None)
        self._reopen = (fence[1] + "\n") if fence else ""
        seg.live = False

    def _raise(self, exc: SlackApiError, what: str, *, kind: str) -> NoReturn:
        code = error_code(exc)
        if is_rate_limited(exc):
            wait = retry_after(exc)
            self._budget(kind).penalize(wait if wait is not None else 1.0)
            raise PlatformRateLimited(f"{what}: rate limited", retry_after=wait) from None
        if code in STREAM_GONE:
            raise _Gone(code) from None
        if kind == "start" and code in START_FALLBACK_ERRORS | REFUSED:
            raise _Fallback(code) from None
        if code in FALLBACK_ERRORS:
            raise _Fallback(code) from None
        if kind == "stop" and code in REFUSED:
            raise _Refused(code) from None
        if kind == "append" and code in TOO_LONG:
            raise _Gone(code) from None  # this message is full: continue in a new stream
        raise PlatformError(f"{what}: {code or 'error'}", permanent=code in PERMANENT) from None

    async def _start(self, piece: str) -> None:
        text = self._reopen + piece
        kwargs = self._start_args(markdown_text=text)
        await self._pay("start")
        try:
            self._on_write("stream_start")
            response = await self.client.chat_startStream(**kwargs)
        except SlackApiError as exc:
            self._raise(exc, "chat.startStream", kind="start")
        except TRANSIENT as exc:
            raise PlatformError(f"chat.startStream: {type(exc).__name__}") from None
        self.segments.append(Segment(str(response["ts"]), text, self._clock()))
        self._reopen = ""
        await self._stop_status()  # the post replaces the status

    async def _append(self, seg: Segment, piece: str) -> None:
        plan = self._plan_chunks(seg)
        kwargs: dict[str, Any] = {"channel": self.channel, "ts": seg.ts}
        if plan:  # the plan's last step ends with the first words (text as a chunk beside it)
            kwargs["chunks"] = plan + [{"type": "markdown_text", "text": piece}]
        else:
            kwargs["markdown_text"] = piece
        try:
            await self._pay("append")
            self._on_write("stream_append")
            await self.client.chat_appendStream(**kwargs)
        except SlackApiError as exc:
            self._unsent(plan)
            self._stream_error(exc, seg, "chat.appendStream")
        except TRANSIENT as exc:
            self._unsent(plan)
            raise PlatformError(f"chat.appendStream: {type(exc).__name__}") from None
        except BaseException:
            self._unsent(plan)
            raise
        seg.text += piece

    def _unsent(self, plan: list[dict[str, Any]]) -> None:
        """The plan step's end did not get through: it is due with the next call."""
        if plan:
            self._step = (plan[0]["id"], plan[0]["title"])

    def _stream_error(self, exc: SlackApiError, seg: Segment, what: str) -> NoReturn:
        """An append failed: the person stopped the stream (`stopped_by_user`: halt, and have the
        answer stopped), it ended or filled up (`_Gone`: continue in a new one), or else."""
        code = error_code(exc)
        if code == STOPPED_BY_USER:
            log.info("slack stream %s was stopped by the person", seg.ts)
            seg.live = False
            self.user_stopped = True
            self._on_user_stop()
            raise _Gone(code)
        try:
            self._raise(exc, what, kind="append")
        except _Gone:
            log.warning("slack stream %s ended early (%s); continuing in a new one", seg.ts, code)
            seg.live = False
            raise
        raise AssertionError("unreachable")

    async def _close_full(self, seg: Segment) -> None:
        """A stream Slack found full is still open: close it so it does not spin forever."""
        with contextlib.suppress(PlatformError, _Gone, _Fallback, _Refused):
            await self._stop_call(seg, "", None)
        seg.live = False

    async def _stop_call(self, seg: Segment, text: str, extras: list[dict[str, Any]] | None, *,
                         final: bool = False, outcome: str = "complete") -> None:
        """chat.stopStream of `seg`. `final`: the reply ends here (its session goes `active`);
        `outcome`: how a plan step still in progress ends (`complete`, `error`)."""
        kwargs: dict[str, Any] = {"channel": self.channel, "ts": seg.ts}
        plan = self._plan_chunks(seg, outcome)
        if plan:
            kwargs["chunks"] = plan + ([{"type": "markdown_text", "text": text}] if text else [])
        elif text:
            kwargs["markdown_text"] = text
        if extras:
            kwargs["blocks"] = extras
        session_status = None
        if self.session is not None and await self.session.settle():
            session_status = self.session.stream_status(final)
            kwargs["session_status"] = session_status
        try:
            await self._pay("stop")
            self._on_write("stream_stop")
            await self.client.chat_stopStream(**kwargs)
        except SlackApiError as exc:
            self._unsent(plan)
            try:
                self._raise(exc, "chat.stopStream", kind="stop")
            except _Gone:
                seg.live = False
                raise
        except TRANSIENT as exc:
            self._unsent(plan)
            raise PlatformError(f"chat.stopStream: {type(exc).__name__}") from None
        except BaseException:
            self._unsent(plan)
            raise
        seg.text += text
        seg.live = False
        seg.ended = True
        if session_status == "active" and self.session is not None:
            self.session.ended_by_stream()

    # --- finishing --------------------------------------------------------------------------------

    async def _final(self, action: Callable[[], Awaitable[Any]], *, budget: WriteBudget | None = None) -> Any:
        """Run a final write until it succeeds (the final text is never dropped for a 429). Stream
        calls pay their own budgets (`_pay`); `budget` is for chat.update (Tier 3)."""
        return await write_final(action, budget, "slack", sleep=self._sleep, attempts=self._final_attempts)

    async def _finish_stream(self, final: str, answer: Answer) -> list[str]:
        remaining = final[len(self.sent):]
        seg = self._live()
        fits = seg is not None and not self._rotation_due(seg, len(remaining)) and len(remaining) <= min(
            APPEND_LIMIT, SEGMENT_LIMIT - len(seg.text)
        )
        if not fits:
            await self._final(lambda: self._deliver(final[len(self.sent):]))
            remaining = ""
            seg = self._live()
        if seg is None:  # the last stream died just now; nothing left unsent
            return await self._rewrite(final, answer)
        layout = self._layout(answer)  # the stop's blocks are measured as a payload of their own
        try:
            try:
                await self._final(lambda: self._stop_call(seg, remaining, layout.blocks, final=True))
            except _Refused as exc:
                if not (exc.code in INVALID_BLOCKS and bk.has_context_actions(layout.blocks)):
                    raise
                # An older workspace without the context_actions block: plain feedback buttons.
                layout = self._layout(answer, classic=True)
                await self._final(lambda: self._stop_call(seg, remaining, layout.blocks, final=True))
                log.warning("slack refused the context_actions block (%s); using plain feedback buttons", exc.code)
                self.formats["context_actions"] = False
        except _Refused as exc:
            # The stream is still open (chat.update would fail streaming_state_conflict): end it
            # without the extras, which then follow in a message of their own.
            log.warning("slack refused the end of stream %s (%s); ending it without extras", seg.ts, exc.code)
            try:
                await self._final(lambda: self._stop_call(seg, remaining, None, final=True))
            except (_Refused, _Gone):
                return await self._rewrite(final, answer)
            self.sent += remaining
            if layout.blocks or layout.sources:
                await self._post_parts("", answer)
            return [s.ts for s in self.segments]
        except _Gone:
            # The stream ended under us, so it can be edited now: finish on the same message with
            # chat.update, or continue in new messages when the text no longer fits one.
            log.warning("slack stream %s ended before stop; finishing with chat.update", seg.ts)
            full = seg.text + remaining
            if len(full) <= FINAL_PART_LIMIT and bk.fits(bk.markdown_body(full) + self._buttons(answer)):
                await self._final(lambda: self._update(seg.ts, full, answer), budget=self.edit_budget)
                seg.text = full
                await self._flush_sources()
            elif remaining.strip() or bk.answer_extras(answer, classic=self._classic()):
                await self._post_parts(remaining, answer)
            self.sent += remaining
            return [s.ts for s in self.segments]
        self.sent += remaining
        self._sources = layout.sources
        await self._flush_sources()
        return [s.ts for s in self.segments]

    def _classic(self) -> bool:
        return not self.formats.get("context_actions", True)

    def _layout(self, answer: Answer, *, classic: bool | None = None) -> bk.Layout:
        return bk.layout_extras(answer, classic=self._classic() if classic is None else classic)

    def _buttons(self, answer: Answer | None) -> list[dict[str, Any]]:
        return bk.button_blocks(answer, classic=self._classic())

    def _final_parts(self, text: str, answer: Answer | None) -> list[str]:
        """`text` split into messages, the last one leaving room for the extras (all of them when
        they are small enough, else the buttons: the citations then go to a follow-up)."""
        parts = split_markdown(text, FINAL_PART_LIMIT) if text.strip() else [""]
        extras = bk.text_size(bk.answer_extras(answer, classic=self._classic()))
        if extras > bk.BLOCKS_TEXT_LIMIT // 2:
            extras = bk.text_size(self._buttons(answer))
        room = bk.BLOCKS_TEXT_LIMIT - extras
        if len(parts[-1]) > room:
            parts = parts[:-1] + split_markdown(parts[-1], room)
        return parts

    async def _post_parts(self, text: str, answer: Answer | None) -> None:
        """New messages after the streamed ones: `text` (may be empty) with the extras."""
        parts = self._final_parts(text, answer)
        for i, part in enumerate(parts):
            more = answer if i == len(parts) - 1 else None
            ts = await self._final(functools.partial(self._post, part, more))
            self.segments.append(Segment(ts, part, self._clock(), live=False, stream=False))
        await self._flush_sources()

    async def _rewrite(self, final: str, answer: Answer) -> list[str]:
        """Make the thread show exactly `final` by editing the streamed messages (and posting or
        deleting parts as needed). A message is stopped before it is edited; one that could not
        be stopped is left alone and its part posted anew."""
        seg = self._live()
        if seg is not None:
            try:
                await self._final(lambda: self._stop_call(seg, "", None))
            except _Gone:
                seg.live = False
            except (PlatformError, _Fallback, _Refused):
                log.warning("could not stop slack stream %s; leaving it as it is", seg.ts)
        parts = self._final_parts(final, answer)
        editable = [s for s in self.segments if not s.live]
        kept: list[Segment] = []
        for i, part in enumerate(parts):
            more = answer if i == len(parts) - 1 else None
            if i < len(editable):
                old = editable[i]
                if more is not None or old.text != part:
                    await self._final(functools.partial(self._update, old.ts, part, more), budget=self.edit_budget)
                ts = old.ts
            else:
                ts = await self._final(functools.partial(self._post, part, more))
            kept.append(Segment(ts, part, self._clock(), live=False, stream=False))
        for old in editable[len(parts):]:
            try:
                self._on_write("delete")
                await self.client.chat_delete(channel=self.channel, ts=old.ts)
            except (SlackApiError, *TRANSIENT):
                log.info("could not delete a surplus streamed message")
        self.segments = kept
        self.sent = final
        await self._flush_sources()
        return [s.ts for s in kept]

    async def _send(self, what: str, call: Callable[..., Awaitable[Any]], text: str, answer: Answer | None,
                    **kwargs: Any) -> Any:
        """One chat.update/postMessage of a final part, measured (`ops.message_payload`); when
        Slack still counts it too long, once more with the citations in a follow-up."""
        content, self._sources = message_payload(text, answer, classic=self._classic())
        try:
            self._on_write("update" if what == "chat.update" else "post")
            return await call(**kwargs, **content)
        except SlackApiError as exc:
            code = error_code(exc)
            if code in INVALID_BLOCKS and bk.has_context_actions(content.get("blocks")):
                log.warning("slack refused the context_actions block (%s); using plain feedback buttons", code)
                self.formats["context_actions"] = False
                return await self._send(what, call, text, answer, **kwargs)
            if not (code in TOO_LONG and answer is not None and answer.citations):
                self._raise_edit(exc, what)
        except TRANSIENT as exc:
            raise PlatformError(f"{what}: {type(exc).__name__}") from None
        content, self._sources = message_payload(text, answer, sources_apart=True, classic=self._classic())
        try:
            return await call(**kwargs, **content)
        except SlackApiError as exc:
            self._raise_edit(exc, what)
        except TRANSIENT as exc:
            raise PlatformError(f"{what}: {type(exc).__name__}") from None

    async def _update(self, ts: str, text: str, answer: Answer | None) -> None:
        await self._send("chat.update", self.client.chat_update, text, answer, channel=self.channel, ts=ts)

    async def _post(self, text: str, answer: Answer | None) -> str:
        response = await self._send(
            "chat.postMessage", self.client.chat_postMessage, text, answer,
            channel=self.channel, thread_ts=self.thread_ts, unfurl_links=False, unfurl_media=False,
            **bk.authorship(answer),
        )
        return str(response["ts"])

    async def _flush_sources(self) -> None:
        """Post the citations that did not fit under the final part, right after it. Best effort:
        the answer is visible already."""
        blocks, self._sources = self._sources, []
        if not blocks:
            return

        async def post() -> str:
            try:
                self._on_write("post")
                response = await self.client.chat_postMessage(
                    channel=self.channel, thread_ts=self.thread_ts, unfurl_links=False, unfurl_media=False,
                    text=texts.SOURCES, blocks=blocks,
                )
            except SlackApiError as exc:
                self._raise_edit(exc, "chat.postMessage")
            except TRANSIENT as exc:
                raise PlatformError(f"chat.postMessage: {type(exc).__name__}") from None
            return str(response["ts"])

        try:
            ts = await self._final(post)
        except PlatformError as exc:
            log.warning("could not post the sources of an answer: %s", exc)
            return
        self.segments.append(Segment(ts, "", self._clock(), live=False, stream=False))

    @staticmethod
    def _raise_edit(exc: SlackApiError, what: str) -> NoReturn:
        if is_rate_limited(exc):
            raise PlatformRateLimited(f"{what}: rate limited", retry_after=retry_after(exc)) from None
        code = error_code(exc)
        raise PlatformError(f"{what}: {code or 'error'}", permanent=code in PERMANENT) from None

    # --- fallback ---------------------------------------------------------------------------------

    async def _switch(self, code: str) -> None:
        """Native streaming is refused: before any text, decline (the core continues by edits);
        mid-answer, finish the streamed messages by edits here."""
        await self._stop_status()  # edits show their own status line
        self._on_unavailable(code)
        if self.segments:
            log.warning("native streaming failed mid-answer (%s); the final text will be edited in", code)
            self.broken = True
            return
        self._release()
        raise StreamDeclined(f"slack native streaming unavailable: {code}")

    async def _stop_status(self) -> None:
        if self.status is not None:
            await self.status.stop()
