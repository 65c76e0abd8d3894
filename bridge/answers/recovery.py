"""Crash recovery for answers: replies a dead process left streaming are told to ask again.

At start-up the answering process marks every reply still 'streaming' as interrupted (the
process that streamed it is gone) and tells each thread, closing the cut-off reply in place when
its checkpoint allows (the adapter's `close_reply` stops a native stream that would otherwise
keep spinning; a post-then-edit reply is edited to drop its cursor and end with the note), else
with a new message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from bridge import texts
from bridge.contract import ChatAdapter
from bridge.mechanisms.gate import ThreadGate
from bridge.store.aio import AnyStore, as_async

log = logging.getLogger(__name__)

ANNOUNCE_CONCURRENCY = 64
Interrupted = list[tuple[int, dict[str, Any] | None]]  # (thread link id, the reply's checkpoint)


async def announce_interrupted(
    interrupted: Interrupted, *, store: AnyStore, adapters: Mapping[str, ChatAdapter], gate: ThreadGate
) -> None:
    """Tell every thread, all at once (bounded): each platform paces its own writes, and a
    thread whose close waits for a spent budget must not hold up the others."""
    slots = asyncio.Semaphore(ANNOUNCE_CONCURRENCY)

    async def tell(link_id: int, checkpoint: dict[str, Any] | None) -> None:
        async with slots:
            await _announce_one(link_id, checkpoint, store=store, adapters=adapters, gate=gate)

    await asyncio.gather(*(tell(link_id, checkpoint) for link_id, checkpoint in interrupted))


async def _announce_one(
    link_id: int, checkpoint: dict[str, Any] | None, *, store: AnyStore, adapters: Mapping[str, ChatAdapter],
    gate: ThreadGate,
) -> None:
    link = await as_async(store).links.get_by_id(link_id)
    adapter = adapters.get(link.thread.platform) if link and link.active else None
    if link is None or adapter is None:
        return
    try:
        async with gate.hold(link.thread):
            if checkpoint and await adapter.close_reply(
                link.thread, link.address, checkpoint, texts.RESTARTED
            ):
                return
            sink = await adapter.open_reply(link.thread, link.address, user=None, proactive=True)
            if checkpoint:
                sink.resume(checkpoint)  # an edited reply: end it in place, cursor gone
            await sink.fail(texts.RESTARTED)
    except Exception:  # best effort; the thread may be gone
        log.info("could not tell a thread about its interrupted answer", exc_info=True)
