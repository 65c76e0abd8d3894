"""Which reply style a new answer gets, so a busy workspace never runs into Slack's 429s.

Slack's limits are per workspace and per method: chat.startStream and chat.stopStream are Tier 2
(about 20 a minute each, in separate buckets), chat.update is Tier 3 (about 50 a minute), while
chat.postMessage is limited per channel only. So each answer takes the best style that still has room:
  1. a native stream, when a start is free in the workspace's chat.startStream budget and a stop
     in its chat.stopStream budget now (both taken at once; the sink spends them, and takes its
     own for rotations and restarts);
  2. else post + edits, while fewer than `EDIT_SEATS` edited answers are live in the workspace;
  3. else the thread status ("is thinking…") while Moveworks works, then one post of the whole
     answer: no shared budget at all, and the final never queues behind other answers' edits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bridge import texts
from bridge.answers.sinks import EditingSink
from bridge.contract import ReplySink
from bridge.mechanisms.ratelimit import WriteBudget
from bridge.models import Answer, Capabilities, Frame, Rate

from .status import StatusKeeper

# chat.startStream and chat.stopStream: Tier 2 each, per workspace, separate buckets. A burst of 10
# and ~10 more a minute never puts more than 20 calls of either method in any minute.
START_RATE = Rate(20, 60.0, burst=10)
STOP_RATE = Rate(20, 60.0, burst=10)
EDIT_SEATS = 5  # live edited answers per workspace: ~10 chat.update a minute each within Tier 3
SEAT_TTL = 900.0  # a seat whose answer never ended (a bug, a lost task) is reclaimed after this


class Edges:
    """The two Tier 2 stream budgets of one workspace: chat.startStream and chat.stopStream."""

    def __init__(self, start: WriteBudget, stop: WriteBudget) -> None:
        self.start = start
        self.stop = stop

    def admit(self) -> bool:
        """Take a start and a stop for one native answer, only if both are free right now."""
        if not self.start.try_take():
            return False
        if not self.stop.try_take():
            self.start.refund()
            return False
        return True


class Seats:
    """Live edited answers per workspace, each seat released when its answer ends."""

    def __init__(self, size: int = EDIT_SEATS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self._clock = clock
        self._held: dict[str, dict[int, float]] = {}
        self._next = 0

    def take(self, team: str, budget: WriteBudget) -> Callable[[], None] | None:
        """A seat in `team`, or None when all are taken. While seats are held, `budget` keeps a
        token in reserve for each of their finals. Returns the seat's release."""
        now = self._clock()
        held = self._held.setdefault(team, {})
        for seat, taken in list(held.items()):
            if now - taken > SEAT_TTL:
                del held[seat]
        if len(held) >= self.size:
            return None
        self._next += 1
        seat = self._next
        held[seat] = now
        budget.reserve = len(held)

        def release() -> None:
            held.pop(seat, None)
            budget.reserve = len(held)

        return release


class StatusThenPostSink(ReplySink):
    """Progress in the thread status; the answer posted once, complete (see module docstring)."""

    def __init__(self, post: EditingSink, status: StatusKeeper) -> None:
        self._post = post
        self._status = status
        # `edit` so the renderer passes status frames on; `show` never writes a message, so no
        # frame costs an interval or a budget token.
        self.capabilities = Capabilities(
            max_text_len=post.capabilities.max_text_len, edit=True, native_stream=False,
            min_edit_interval=1.0, write_budget=None, budget_posts=False,
        )
        self.budget_key = post.budget_key

    async def show(self, frame: Frame) -> bool:
        await self._status.set(frame.status if not frame.text else texts.WRITING)
        return False

    async def finish(self, answer: Answer) -> list[str]:
        await self._status.stop()
        return await self._post.finish(answer)

    async def fail(self, message: str) -> None:
        await self._status.stop()
        await self._post.fail(message)
