"""Agent sessions: every answer in a DM of the agent surface runs as one, so Slack shows its
native Stop button while the answer streams (docs.slack.dev/ai/agent-sessions).

* When the answer starts, `agents.sessions.setStatus` `processing` (creating the session, with the
  question as its title, clipped to Slack's 200 characters, and the asker as its initiator; Slack
  keeps both only when the call creates the session). At the end the session goes back to
  `active`: through the final `chat.stopStream`'s `session_status` when the answer was streamed
  natively (no extra call), else with `agents.sessions.setStatus`. A stream that stops in the
  middle of an answer (rotation) carries `session_status: processing`, because
  `chat.stopStream` otherwise sets the documented default, `active`.
* The calls are Tier 3 (about 50 a minute per workspace): an answer takes both of its tokens when
  it starts, or runs without a session (its status line still shows) when the workspace's budget
  is spent, so a session never stays `processing` for want of a token.
* A workspace where the app is not declared an agent (`not_authorized`, `feature_disabled`, or
  a method or scope it does not have) gets no more attempts: its answers keep the thread status
  of `assistant.threads.setStatus` alone. Nothing here ever fails an answer.
* Stop: `agent_session_stopped` names the thread; the session there (or, without one in this
  process, the thread itself) is stopped with `core.stop_answer`. Slack delivers the event to any
  process (HTTP behind a balancer, several Socket Mode connections), so when this process streams
  nothing there it leaves a mark in the shared store (`slack.stops`) that the process streaming it
  picks up within `STOP_POLL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.contract import Core, ReplySink
from bridge.models import Answer, Frame, Rate, ThreadKey

from .calls import TRANSIENT, call, error_code

log = logging.getLogger("adapters.slack")

PLATFORM = "slack"
SESSION_RATE = Rate(50, 60.0, burst=20)  # agents.sessions.setStatus: Tier 3, per workspace
TITLE_LIMIT = 200  # a session title
# The app is not an agent here, or cannot call the method: no session for this workspace again.
REFUSED = frozenset(
    {"not_authorized", "feature_disabled", "unknown_method", "missing_scope", "not_allowed_token_type",
     "method_deprecated", "not_implemented"}
)
MISSING_STOP_EVENT = "missing_agent_session_stopped_event_subscription"
STOPS = "slack.stops"  # kv: "team:channel:thread_ts" -> wall time someone pressed Stop there
STOP_POLL = 0.25  # seconds between looks at STOPS while this process streams sessions
STOP_TTL = 300.0  # a mark older than this is dropped


def session_key(team: str, channel: str, thread_ts: str) -> str:
    return f"{team}:{channel}:{thread_ts}"


def clip_title(text: str) -> str:
    title = " ".join(text.split())
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


class Session:
    """One answer's agent session (see module docstring). `state`: `new` until the answer shows
    something, `processing` while it streams, `ended` once back to `active`; `none` when it runs
    without a session (refused, no budget, a failed call)."""

    def __init__(self, owner: Sessions, client: AsyncWebClient, thread: ThreadKey, channel: str, thread_ts: str,
                 *, title: str | None, user: str | None) -> None:
        self.owner = owner
        self.client = client
        self.thread = thread
        self.team = thread.workspace
        self.channel = channel
        self.thread_ts = thread_ts
        self.title = clip_title(title) if title and title.strip() else None
        self.user = user
        self.key = session_key(self.team, channel, thread_ts)
        self.state = "new"
        self.started_at = time.time()  # wall clock: compared with Stop marks of other processes
        self.stopped_ts: set[str] = set()  # streams Slack stopped when the person pressed Stop
        self.stop_requested = False
        self._begin: asyncio.Task[None] | None = None
        self._tokens = 0  # budget tokens taken and not yet spent

    # --- lifecycle ---------------------------------------------------------------------------------

    def begin(self) -> None:
        """Set `processing` (once), in the background: the answer's first frame does not wait.
        From now on a Stop in this thread is this answer's (an answer waiting for the thread's
        current one to end is not)."""
        if self._begin is None and self.state == "new":
            self.started_at = time.time()
            self.owner.register(self)
            self._begin = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        if self.team in self.owner.off:
            self.state = "none"
            return
        if not self.owner.budget(self.team).try_take(2):  # processing now, active at the end
            log.info("slack: the workspace's agents.sessions budget is spent; answering without a session")
            self.state = "none"
            return
        self._tokens = 2
        body: dict[str, Any] = {"title": self.title, "initiator_user_id": self.user}
        if await self._set("processing", {k: v for k, v in body.items() if v}):
            self.state = "processing"
        else:
            self.state = "none"
            self._give_back()

    async def settle(self) -> bool:
        """Wait for `processing` to be set (or given up); True when the session is live."""
        if self._begin is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._begin)
        return self.state == "processing"

    def stream_status(self, final: bool) -> str | None:
        """The `session_status` a chat.stopStream of this answer carries (None: no session)."""
        if self.state != "processing":
            return None
        return "active" if final else "processing"

    def ended_by_stream(self) -> None:
        """The final chat.stopStream carried `session_status: active`."""
        if self.state == "processing":
            self.state = "ended"
            self._give_back()  # the token kept for the end was not needed
        self.owner.forget(self)

    async def end(self) -> None:
        """Back to `active` unless the final stream already did it. Never raises."""
        try:
            if await self.settle():
                self.state = "ended"
                await self._set("active", {})
                self._tokens = 0
            self._give_back()
        finally:
            self.owner.forget(self)

    def _give_back(self) -> None:
        if self._tokens > 0:
            self.owner.budget(self.team).refund(self._tokens)
        self._tokens = 0

    async def _set(self, status: str, extra: dict[str, Any]) -> bool:
        body = {"channel_id": self.channel, "thread_ts": self.thread_ts, "status": status, **extra}
        try:
            self.owner.count("session_status")
            response = await call(self.client.api_call, attempts=2, sleep=self.owner.sleep,
                                  api_method="agents.sessions.setStatus", json=body)
        except SlackApiError as exc:
            code = error_code(exc)
            if code in REFUSED:
                self.owner.refused(self.team, code)
            else:
                log.info("slack: agents.sessions.setStatus %s failed: %s", status, code or "error")
            return False
        except TRANSIENT as exc:
            log.info("slack: agents.sessions.setStatus %s failed: %s", status, type(exc).__name__)
            return False
        if self._tokens > 0:
            self._tokens -= 1
        warning = str(response.get("warning") or "")
        if MISSING_STOP_EVENT in warning:
            self.owner.warn_once(self.team, "slack: the app does not subscribe to the agent_session_stopped "
                                 "event, so people get no Stop button: add it to the bot events (manifest.yml) "
                                 "and reinstall")
        return True

    # --- Stop --------------------------------------------------------------------------------------

    def note_stopped(self, streams: list[str]) -> None:
        self.stop_requested = True
        self.stopped_ts.update(streams)


class SessionSink(ReplySink):
    """A reply that runs as an agent session: `processing` from its first frame, `active` again
    when it ends, whatever way it ends."""

    def __init__(self, inner: ReplySink, session: Session) -> None:
        self.inner = inner
        self.session = session
        self.capabilities = inner.capabilities
        self.budget_key = inner.budget_key

    async def show(self, frame: Frame) -> bool | None:
        self.session.begin()
        return await self.inner.show(frame)

    async def finish(self, answer: Answer) -> list[str]:
        try:
            return await self.inner.finish(answer)
        finally:
            await self.session.end()

    async def fail(self, message: str) -> None:
        try:
            await self.inner.fail(message)
        finally:
            await self.session.end()

    def checkpoint(self) -> dict[str, Any] | None:
        return self.inner.checkpoint()

    def resume(self, checkpoint: dict[str, Any]) -> bool:
        return self.inner.resume(checkpoint)


class Sessions:
    """The agent sessions of one process, and Stop."""

    def __init__(
        self,
        core: Core,
        *,
        count: Callable[[str], None] = lambda op: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll: float = STOP_POLL,
    ) -> None:
        self.core = core
        self.count = count
        self.sleep = sleep
        self.poll = poll
        self.off: set[str] = set()  # workspaces where the app has no sessions
        self.live: dict[str, Session] = {}
        self._warned: set[tuple[str, str]] = set()
        self._marks = core.kv(STOPS)
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def budget(self, team: str) -> Any:
        return self.core.budget(f"slack:{team}:sessions", SESSION_RATE)

    def open(self, client: AsyncWebClient, thread: ThreadKey, channel: str, thread_ts: str | None, *,
             title: str | None, user: str | None) -> Session | None:
        """A session for an answer about to stream into a DM thread; None where there is none
        (a channel, a DM's top level, a workspace without sessions)."""
        if thread.workspace in self.off or not channel.startswith("D") or not thread_ts:
            return None
        return Session(self, client, thread, channel, thread_ts, title=title, user=user)

    def register(self, session: Session) -> None:
        """The session's answer started (its thread's answers take turns, so it is the one a
        Stop there is for)."""
        self.live[session.key] = session
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch())

    def forget(self, session: Session) -> None:
        if self.live.get(session.key) is session:
            del self.live[session.key]

    def refused(self, team: str, code: str) -> None:
        if team not in self.off:
            self.off.add(team)
            log.info("slack: no agent sessions in workspace %s (%s): the app is not declared an agent there; "
                     "answers keep the thread status", team, code)

    def warn_once(self, team: str, message: str) -> None:
        if (team, message) not in self._warned:
            self._warned.add((team, message))
            log.warning("%s (workspace %s)", message, team)

    async def stopped(self, team: str, channel: str, thread_ts: str, streams: list[str]) -> bool:
        """A person pressed Stop in `channel`/`thread_ts`: stop the answer there. True when this
        process stopped one; False leaves a mark for the process that streams it."""
        key = session_key(team, channel, thread_ts)
        session = self.live.get(key)
        if session is not None:  # answered here
            session.note_stopped(streams)
            if not self.core.stop_answer(session.thread) and session.state != "ended":
                # Not streaming yet (the conversation is still being set up), or already stopping
                # (a stream write was refused with stopped_by_user): try again until it ends.
                self._spawn(self._stop_when_streaming(session))
            return True
        if self.core.stop_answer(ThreadKey(PLATFORM, team, channel, thread_ts)):
            return True
        try:
            await self._marks.set(key, repr(time.time()))
            await self._marks.prune(STOP_TTL)
        except Exception:  # the store is down: nothing more to do for this Stop
            log.warning("slack: could not pass a Stop on to the other processes", exc_info=True)
        return False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_when_streaming(self, session: Session, *, every: float = 0.05, limit: float = 30.0) -> None:
        waited = 0.0
        while self.live.get(session.key) is session and waited < limit:
            await self.sleep(every)
            waited += every
            if self.core.stop_answer(session.thread):
                return

    def user_stopped(self, session: Session) -> None:
        """Slack refused a stream write with `stopped_by_user`: the person pressed Stop and the
        event may not have arrived yet."""
        session.note_stopped([])
        self.core.stop_answer(session.thread)

    async def _watch(self) -> None:
        """While this process streams sessions: pick up the Stops other processes received."""
        while self.live:
            await self.sleep(self.poll)
            if not self.live:
                return
            try:
                marks = await self._marks.items()
            except Exception:  # noqa: BLE001 - the store is down; try again at the next look
                continue
            for key, value in marks:
                session = self.live.get(key)
                if session is None:
                    continue
                try:
                    pressed = float(value)
                except ValueError:
                    pressed = 0.0
                with contextlib.suppress(Exception):
                    await self._marks.delete(key)
                if pressed >= session.started_at - 1.0:  # not a Stop of an earlier answer there
                    session.note_stopped([])
                    if not self.core.stop_answer(session.thread):
                        self._spawn(self._stop_when_streaming(session))

    async def close(self) -> None:
        task, self._watcher = self._watcher, None
        for pending in [*([task] if task is not None else []), *self._tasks]:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
