"""Shared write budgets: one token bucket per workspace/tenant for every concurrent answer.

Platform rate limits (Slack Tier 3 chat.update, Teams per-tenant quotas) are per workspace, not
per message, so each reply must draw from one bucket shared with every other reply. Final writes
jump the queue: an intermediate edit may always be dropped (latest text wins), a final never.

The bucket is sized so that no sliding window of `rate.per` seconds ever sees more than
`rate.count` writes: a burst of `b` plus a refill of `(count - b) / per` per second.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.models import Rate

Sleep = Callable[[float], Awaitable[None]]
_EPSILON = 1e-6


class WriteBudget:
    def __init__(
        self,
        rate: Rate | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self.share = 1.0  # this process's part of the rate, when several processes write
        self._size()
        self.tokens = float(self.burst)
        # Tokens intermediate writes leave untouched, so the finals of live answers never queue
        # behind them (the owner sets it to the number of live answers that will need one).
        self.reserve = 0
        self._updated = clock()
        self._blocked_until = 0.0
        self._waiters: list[list[Any]] = []  # heap of [priority, seq, wake event, done]
        self._seq = itertools.count()
        self.granted = 0

    def _size(self) -> None:
        rate = self.rate
        if rate is None:
            self.burst, self.refill = 0, 0.0
            return
        count = max(1, int(rate.count * self.share))
        burst = rate.burst if rate.burst is None else max(1, int(rate.burst * self.share))
        self.burst = max(1, min(burst or count // 10, count - 1)) if count > 1 else 1
        spare = count - self.burst
        self.refill = (spare if spare > 0 else count) / rate.per

    def set_share(self, share: float) -> None:
        """Several processes write to the same workspace: each keeps to `share` of the limit, so
        together they stay inside it (`Budgets.split`)."""
        share = min(1.0, max(0.01, share))
        if share != self.share:
            self._refresh()
            self.share = share
            self._size()
            self.tokens = min(self.tokens, float(self.burst))

    @property
    def unlimited(self) -> bool:
        return self.rate is None

    def _refresh(self) -> float:
        now = self._clock()
        if self.rate is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self._updated) * self.refill)
        self._updated = now
        return now

    def _delay(self, final: bool) -> float:
        now = self._refresh()
        wait = max(0.0, self._blocked_until - now)
        need = 1.0 if final else 1.0 + min(self.reserve, self.burst - 1)
        if self.tokens < need - _EPSILON:  # float refills land on 0.9999…: that is a token
            wait = max(wait, (need - self.tokens) / self.refill)
        return wait

    def _wake_head(self) -> None:
        if self._waiters:
            self._waiters[0][2].set()

    async def acquire(self, *, final: bool = False) -> None:
        """Wait for one write. Finals are served before intermediates, each in FIFO order."""
        if self.rate is None:
            self.granted += 1
            return
        entry: list[Any] = [0 if final else 1, next(self._seq), asyncio.Event(), False]
        heapq.heappush(self._waiters, entry)
        try:
            while True:
                if self._waiters[0] is entry:
                    delay = self._delay(final)
                    if delay <= 0:
                        heapq.heappop(self._waiters)
                        entry[3] = True
                        self.tokens -= 1.0
                        self.granted += 1
                        self._wake_head()
                        return
                    await self._sleep(delay)
                else:
                    entry[2].clear()
                    await entry[2].wait()
        finally:
            if not entry[3]:
                was_head = self._waiters and self._waiters[0] is entry
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
                if was_head:
                    self._wake_head()

    def try_take(self, n: int = 1) -> bool:
        """Take `n` writes only if they are free right now and nobody is queued (admission
        control: a caller that gets False picks a cheaper way instead of waiting)."""
        if self.rate is None:
            self.granted += n
            return True
        now = self._refresh()
        if self._waiters or now < self._blocked_until or self.tokens < n - _EPSILON:
            return False
        self.tokens -= n
        self.granted += n
        return True

    def charge(self, n: int = 1) -> None:
        """Account for writes made without waiting (a second call inside one update)."""
        if self.rate is not None:
            self._refresh()
            self.tokens -= n
            self.granted += n

    def refund(self, n: int = 1) -> None:
        """A granted write that turned out not to be needed."""
        if self.rate is not None:
            self._refresh()
            self.tokens = min(float(self.burst), self.tokens + n)
            self.granted -= n

    def penalize(self, retry_after: float) -> None:
        """The platform said 429: nobody sharing this budget writes until `retry_after` passed."""
        now = self._refresh()
        self._blocked_until = max(self._blocked_until, now + max(0.0, retry_after))
        self.tokens = min(self.tokens, 0.0)


class Budgets:
    """Registry of budgets by key ("slack:T123", "teams:<tenant>").

    Several processes: each live process keeps to an equal share of every limit (`split`, set
    from the heartbeats), so together they stay inside it. A load balancer spreads questions
    evenly; the cost is a share an idle process leaves unused."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep):
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[str, WriteBudget] = {}
        self.processes = 1

    def split(self, processes: int) -> None:
        """`processes` live processes share every workspace's limit from now on."""
        self.processes = max(1, processes)
        for budget in self._budgets.values():
            budget.set_share(1.0 / self.processes)

    def get(self, key: str, rate: Rate | None) -> WriteBudget:
        """The budget of `key`. A reply that writes nothing budgeted (`rate` None: a thread status
        and one post) gets an unlimited budget and leaves the key's shared budget as it is: it
        must not hand the next answer a fresh, full bucket."""
        if rate is None:
            return WriteBudget(None, clock=self._clock, sleep=self._sleep)
        budget = self._budgets.get(key)
        if budget is None or budget.rate != rate:
            budget = WriteBudget(rate, clock=self._clock, sleep=self._sleep)
            budget.set_share(1.0 / self.processes)
            self._budgets[key] = budget
        return budget
