"""A discrete-event clock for virtual-time tests and benchmarks."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """Virtual time: `sleep` parks the caller until `run` advances time to its wake-up.

    Time only moves when every task is blocked on the clock, so interleavings are exact and
    the tests never wait for real."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def _settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def run(self, *aws, limit: float = 3600.0):
        """Run awaitables to completion in virtual time; returns their results."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        deadline = self.now + limit
        while not all(t.done() for t in tasks):
            await self._settle()
            if all(t.done() for t in tasks):
                break
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                await asyncio.sleep(0.001)  # real I/O in flight (loopback); let it progress
                continue
            wake, _, future = heapq.heappop(self._sleepers)
            if wake > deadline:
                raise AssertionError("virtual time limit exceeded")
            self.now = max(self.now, wake)
            future.set_result(None)
        return [t.result() for t in tasks]
