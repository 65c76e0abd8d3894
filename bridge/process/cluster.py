"""Several processes on one store (CONTRACT.md, "Several processes"): who is alive, and what
happens to the work of one that died.

Each process has an instance id and writes a heartbeat every `BEAT` seconds; a process whose
heartbeat is older than `TTL` is dead. The heartbeat also extends the leases of the questions this
process is answering (`bridge.answers.intake`). Whichever live `serve` process notices first:

* ends the replies a dead process was streaming, in place where the platform allows ("I was
  restarted… please ask again"): only replies whose owner is dead, never a live one's;
* gives the questions a dead process had taken back to the queue, where a live worker takes them.

Exactly one process polls Moveworks events at a time: the holder of the `poller` lease
(`bridge.events.poller`), which another process takes over within `TTL` of the holder's death.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bridge.answers.intake import LEASE
from bridge.answers.recovery import Interrupted
from bridge.errors import StoreUnavailable
from bridge.mechanisms.ratelimit import Budgets
from bridge.store.aio import AsyncStore

log = logging.getLogger(__name__)

BEAT = 2.0  # seconds between heartbeats
TTL = 10.0  # a process silent this long is dead (takeover time; also the poller lease)
STALE_UNOWNED = 600.0  # replies of releases before owners existed: interrupted after this long


class Membership:
    def __init__(
        self,
        store: AsyncStore,
        instance_id: str,
        *,
        sweep: bool,
        announce: Callable[[Interrupted], None] | None = None,
        budgets: Budgets | None = None,
        beat: float = BEAT,
        ttl: float = TTL,
        lease: float = LEASE,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.sweep_orphans = sweep  # `serve` sweeps; a `poll` worker does not answer questions
        self.announce = announce
        self.beat_every = beat
        self.ttl = ttl
        self.lease = lease
        self.budgets = budgets
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.store.instances.beat(self.instance_id)
        if self.budgets is not None:  # from the first write on, not from the first heartbeat
            self.budgets.split(await self.store.instances.living(self.ttl))
        await self.sweep()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # the others find out from the missing heartbeat
            await self.store.instances.leave(self.instance_id)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.beat_every)
            try:
                await self.store.instances.beat(self.instance_id)
                await self.store.queue.extend(self.instance_id, self.lease)
                if self.budgets is not None:
                    self.budgets.split(await self.store.instances.living(self.ttl))
                await self.sweep()
            except StoreUnavailable:
                log.error("heartbeat: the store cannot be written")
            except Exception:  # never let the heartbeat die
                log.exception("heartbeat failed")

    async def sweep(self) -> None:
        """Hand the work of dead processes to the living (see the module docstring)."""
        if not self.sweep_orphans:
            return
        interrupted = await self.store.replies.interrupt_orphans(self.ttl)
        if interrupted:
            log.warning("%d answers were cut off by a process that died; telling their threads",
                        len(interrupted))
            if self.announce is not None:
                self.announce(interrupted)  # posted in the background: the heartbeat goes on
        released = await self.store.queue.release_orphans(self.ttl)
        if released:
            log.warning("%d questions taken by a process that died are queued again", len(released))
