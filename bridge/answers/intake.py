"""The durable inbound queue's worker: nothing acknowledged is ever lost.

An adapter acknowledges Slack or Teams only after `Core.submit` returned, and `submit` writes the
question to the store's queue (atomically with its dedupe claim) first. Every `serve` process runs
this worker: it takes ready questions under a lease (extended by the process heartbeat while the
answer streams), answers them through the relay and marks them done. The queue hands out a
thread's questions one at a time and in order, across processes.

After a crash, the dead owner's questions are released (`bridge.process.cluster`) and taken by a
live process:

* a question whose turn had not reached Moveworks yet is answered as if nothing happened;
* a question whose turn had (its answer was streaming) is not asked again — that would post the
  turn twice. The reply sweep has already told its thread "I was restarted… please ask again";
  the item is just closed.

A graceful shutdown gives back the questions it took but had not started, so another process (or
the next start) answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from bridge import texts
from bridge.errors import StoreUnavailable
from bridge.models import Inbound
from bridge.process import metrics
from bridge.store.aio import AsyncStore, QueueItem
from bridge.store.codec import load_inbound, queue_fields

if TYPE_CHECKING:
    from bridge.answers.relay import Relay

log = logging.getLogger(__name__)

STARTED = "queue.started"  # kv: queue item id -> the owner whose answer reached Moveworks
LEASE = 30.0  # seconds a taken question stays ours without a heartbeat
POLL = 0.5  # how often questions submitted elsewhere (or released) are looked for
CONCURRENCY = 256  # answers this process streams at once
MAX_ATTEMPTS = 5  # a question taken this often without finishing is given up (and its asker told)


class Intake:
    def __init__(self, relay: Relay, store: AsyncStore, owner: str, *, lease: float = LEASE,
                 poll: float = POLL, concurrency: int = CONCURRENCY) -> None:
        self.relay = relay
        self.store = store
        self.owner = owner
        self.lease = lease
        self.poll = poll
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: dict[int, asyncio.Task] = {}
        self._started: set[int] = set()
        self._stopping = False

    # --- accepting ----------------------------------------------------------------------------

    async def submit(self, inbound: Inbound) -> bool:
        """Store the question (deduplicated) before the platform is acknowledged."""
        platform = inbound.thread.platform
        try:
            fresh = await self.store.queue.enqueue(**queue_fields(inbound))
        except StoreUnavailable:
            # The store cannot be written (disk full, database down): nothing can be made
            # durable, but the asker must not meet silence. Answer from memory; the relay tells
            # them the store is down if it cannot even record the conversation.
            log.error("the inbound queue cannot be written; answering %s from memory", platform)
            self.relay.spawn_answer(self.relay.handle(inbound, dedupe=False), name=f"answer:{platform}")
            return True
        if not fresh:
            metrics.INBOUND_DUPLICATES.labels(platform).inc()
            log.info("duplicate delivery %s dropped", inbound.dedupe_id)
            return False
        self._wake.set()
        return True

    # --- answering ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="inbound-queue")

    async def stop_taking(self) -> None:
        """Take no more questions (shutdown); answers in progress continue."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def taken(self) -> int:
        return len(self._running)

    async def _run(self) -> None:
        while not self._stopping:
            free = self.concurrency - len(self._running)
            items: list[QueueItem] = []
            if free > 0:
                try:
                    items = await self.store.queue.take(self.owner, self.lease, limit=free)
                except StoreUnavailable:
                    log.error("the inbound queue cannot be read; retrying")
                except Exception:  # the worker must outlive any one bad read
                    log.exception("inbound queue: could not take questions")
            for item in items:
                self._running[item.id] = self.relay.spawn_answer(
                    self._answer(item), name=f"answer:{item.platform}"
                )
            if items and len(items) == free:
                continue  # more may be waiting
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def _answer(self, item: QueueItem) -> None:
        finished = False
        try:
            finished = await self._answer_item(item)
        except asyncio.CancelledError:
            finished = item.id in self._started  # its thread got the restart note
            raise
        finally:
            self._running.pop(item.id, None)
            self._started.discard(item.id)
            self._wake.set()  # a slot is free, and the thread's next question may be ready
            try:
                if finished:
                    await self.store.queue.done(item.id, self.owner)
                    await self.store.kv.namespace(STARTED).delete(str(item.id))
                else:  # cut off before its turn reached Moveworks: someone else answers it
                    await self.store.queue.release(item.id, self.owner)
            except Exception:  # the lease runs out and the sweep sorts it out
                log.warning("inbound queue: could not close item %d", item.id, exc_info=True)

    async def _answer_item(self, item: QueueItem) -> bool:
        """Answer one question; True when the item is finished (answered, told, or given up)."""
        try:
            inbound, _extra = load_inbound(item.payload)
        except (ValueError, KeyError, TypeError):
            log.error("inbound queue: item %d cannot be read by this release; dropped", item.id)
            return True
        started_by = await self.store.kv.namespace(STARTED).get(str(item.id))
        if started_by is not None:
            # its turn reached Moveworks in a process that died: the reply sweep told the thread
            log.info("inbound queue: item %d was cut off mid-answer by a dead process", item.id)
            return True
        if item.attempts > MAX_ATTEMPTS:
            log.error("inbound queue: item %d was taken %d times without finishing; giving up",
                      item.id, item.attempts)
            await self.relay.tell(inbound, texts.ANSWER_FAILED)
            return True

        async def started() -> None:
            self._started.add(item.id)
            await self.store.kv.namespace(STARTED).set(str(item.id), self.owner)

        try:
            await self.relay.handle(inbound, dedupe=False, started=started)
        except asyncio.CancelledError:
            if item.id not in self._started:
                return False  # shutdown before anything was asked: give it back
            raise
        return True
