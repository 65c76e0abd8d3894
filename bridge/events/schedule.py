"""Scheduling for the events poller: a global request budget and per-identity due times.

`RequestBudget` bounds every Moveworks request the poller makes (each page counts): in any
half-open window of one second at most `rps` requests start, whatever the number of identities,
and a 429 pauses everybody until its `Retry-After` passed. The clock and sleep are injectable so
tests can check the bound over 10,000 identities in virtual time.

`Schedule` decides *when* each identity is polled next:

* recently active identities (activity within `active_window`, default 10 min) every `interval`;
* idle ones progressively less often: `interval * idle / active_window`, capped at
  `max_idle_interval` (default 300 s) - an hour idle gives 6x, ten hours or more gives the cap;
* an identity whose poll failed backs off exponentially (`interval * 2**errors`, capped), so one
  identity's errors never slow the others down;
* `trigger()` (webhook) makes an identity due now.

Due identities come out oldest-due first; the budget, not the schedule, sets the pace when more
identities are due than the budget allows (they are then polled late, round-robin, never faster).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

MIN_WAIT = 1e-6
ACTIVE_WINDOW = 600.0  # seconds of inactivity after which an identity counts as idle


class RequestBudget:
    """At most `rps` request starts in any half-open one-second window (a sliding log), and
    evenly spaced (one every 1/rps s): a steady rate, never a burst.

    Waiters are served in FIFO order (one asyncio.Lock), so no poll starves.
    """

    def __init__(self, rps: float, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 window: float = 1.0, jitter: float = 0.02) -> None:
        if rps <= 0:
            raise ValueError("rps must be positive")
        # a fractional rate (0.5 rps) becomes 1 request per 2 s windows
        if rps >= 1:
            self.count, self.window = int(rps), float(window)
        else:
            self.count, self.window = 1, float(window) / rps
        self.rps = rps
        self.spacing = self.window / self.count
        # The window is checked `jitter` s wider than Moveworks counts it: requests that reach the
        # server a few ms early or late (measured: 11 in one second without it) stay within `rps`.
        self._checked_window = self.window + max(0.0, jitter)
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[float] = deque(maxlen=self.count)
        self._lock = asyncio.Lock()
        self.blocked_until = float("-inf")
        self.granted = 0

    def _delay(self) -> float:
        # differences, not sums, and a floor: float rounding (or a timer firing a hair early)
        # must never let an 11th request into a window
        now = self._clock()
        wait = 0.0
        if now < self.blocked_until:
            wait = max(self.blocked_until - now, MIN_WAIT)
        if len(self._grants) >= self.count:
            age = now - self._grants[0]
            if age < self._checked_window:
                wait = max(wait, self._checked_window - age, MIN_WAIT)
        if self._grants:
            # evenly spaced, no bursts: network jitter between here and the server cannot
            # squeeze a burst of one window into the next as seen by Moveworks
            gap = now - self._grants[-1]
            if gap < self.spacing:
                wait = max(wait, self.spacing - gap, MIN_WAIT)
        return wait

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                delay = self._delay()
                if delay <= 0:
                    break
                await self._sleep(delay)
            self._grants.append(self._clock())
            self.granted += 1

    def penalize(self, retry_after: float) -> None:
        """Moveworks said 429: nobody polls until `retry_after` seconds passed."""
        self.blocked_until = max(self.blocked_until, self._clock() + max(0.0, retry_after))


@dataclass
class IdentityState:
    key: str  # checkpoint key: the employee email, or "service" in single-identity modes
    last_active: float | None = None  # wall time of the employee's last chat activity
    last_event: float | None = None  # wall time an event was last delivered for it
    next_due: float = 0.0  # monotonic
    errors: int = 0
    running: bool = False
    again: bool = False  # triggered while running: poll again right after
    reason: str = "scheduled"  # why the next poll happens ("webhook", "retry", ...)
    polls: int = 0


class Schedule:
    def __init__(
        self,
        *,
        interval: float,
        max_idle_interval: float = 300.0,
        active_window: float = ACTIVE_WINDOW,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.interval = max(0.05, float(interval))
        self.max_idle_interval = max(self.interval, float(max_idle_interval))
        self.active_window = active_window
        self._clock = clock
        self._wall = wall
        self.states: dict[str, IdentityState] = {}
        self._heap: list[tuple[float, int, str]] = []  # (due, seq, key): not due yet
        self._ready: list[tuple[float, int, str, float]] = []  # (deadline, seq, key, due): due
        self._seq = itertools.count()

    # --- classification -------------------------------------------------------------------

    def activity(self, state: IdentityState) -> float | None:
        times = [t for t in (state.last_active, state.last_event) if t is not None]
        return max(times) if times else None

    def is_active(self, state: IdentityState) -> bool:
        last = self.activity(state)
        return last is not None and self._wall() - last <= self.active_window

    def klass(self, state: IdentityState) -> str:
        return "active" if self.is_active(state) else "idle"

    def interval_for(self, state: IdentityState) -> float:
        if state.errors:
            return min(self.max_idle_interval, self.interval * 2 ** min(state.errors, 20))
        last = self.activity(state)
        if last is None:
            return self.max_idle_interval
        idle = max(0.0, self._wall() - last)
        if idle <= self.active_window:
            return self.interval
        return min(self.max_idle_interval, self.interval * idle / self.active_window)

    # --- membership -----------------------------------------------------------------------

    def add(self, key: str, last_active: float | None, *, spread: bool = True) -> IdentityState:
        """Add (or refresh the activity of) an identity. A new one is first due within its
        interval, spread out so a start with thousands of identities does not burst."""
        state = self.states.get(key)
        if state is not None:
            if last_active is not None and (state.last_active is None or last_active > state.last_active):
                became_active = not self.is_active(state)
                state.last_active = last_active
                if became_active and self.is_active(state) and not state.running:
                    # just came back: poll at the active pace from now on
                    self._set_due(state, min(state.next_due, self._clock() + self.interval))
            return state
        state = IdentityState(key, last_active=last_active)
        self.states[key] = state
        offset = 0.0
        if spread:
            # deterministic spread over the identity's interval
            offset = (zlib.crc32(key.encode()) % 10_000) / 10_000 * self.interval_for(state)
        self._set_due(state, self._clock() + offset)
        return state

    def _set_due(self, state: IdentityState, due: float) -> None:
        state.next_due = due
        heapq.heappush(self._heap, (due, next(self._seq), state.key))

    # --- the dispatcher's side ------------------------------------------------------------

    def trigger(self, key: str, reason: str = "webhook") -> bool:
        state = self.states.get(key)
        if state is None:
            return False
        state.reason = reason
        if state.running:
            state.again = True
        else:
            self._set_due(state, self._clock())
        return True

    def recently_active(self) -> list[str]:
        return [k for k, s in self.states.items() if self.is_active(s)]

    def _valid(self, key: str, due: float) -> IdentityState | None:
        state = self.states.get(key)
        if state is None or state.running or state.next_due != due:
            return None
        return state

    def _promote(self) -> None:
        """Move every identity that is due now from the time heap to the ready heap.

        The ready heap is ordered by deadline = due + the identity's interval (a webhook trigger:
        its due time alone). When more identities are due than the budget can poll, active
        identities (short interval) therefore go first, while idle ones still age towards the
        front: nobody starves, and the active pace degrades last.
        """
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            state = self._valid(key, due)
            if state is None:
                continue
            deadline = due if state.reason == "webhook" else due + self.interval_for(state)
            heapq.heappush(self._ready, (deadline, next(self._seq), key, due))

    def next_due(self) -> float | None:
        """Monotonic time of the earliest due identity (stale heap entries dropped)."""
        self._promote()
        while self._ready:
            _, _, key, due = self._ready[0]
            if self._valid(key, due) is None:
                heapq.heappop(self._ready)
                continue
            return due
        while self._heap:
            due, _, key = self._heap[0]
            if self._valid(key, due) is None:
                heapq.heappop(self._heap)
                continue
            return due
        return None

    def take_due(self) -> IdentityState | None:
        """The most urgent due identity, marked running; None if nobody is due yet."""
        self._promote()
        while self._ready:
            _, _, key, due = heapq.heappop(self._ready)
            state = self._valid(key, due)
            if state is None:
                continue
            state.running = True
            state.again = False
            return state
        return None

    @property
    def backlog(self) -> int:
        """Identities due now and waiting for the budget (a gauge for benchmarks)."""
        self._promote()
        return sum(1 for _, _, key, due in self._ready if self._valid(key, due) is not None)

    def done(self, state: IdentityState, *, ok: bool, delivered: int = 0,
             retry_after: float | None = None) -> None:
        """A poll of `state` ended: schedule the next one."""
        state.running = False
        state.polls += 1
        if delivered:
            state.last_event = self._wall()
        if ok:
            state.errors = 0
        else:
            state.errors += 1
        if state.again:
            state.again = False
            delay = 0.0
        else:
            delay = self.interval_for(state)
            state.reason = "retry" if not ok else "scheduled"
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._set_due(state, self._clock() + delay)
