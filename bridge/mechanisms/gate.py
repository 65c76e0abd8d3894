"""The thread gate: everything written into one chat thread goes through it in order.

Answers and notifications in the same thread never interleave (a notification waits for the
live answer to finish), and two questions in one thread are answered in the order they came.
One lock per thread, kept only while someone holds or waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from bridge.models import ThreadKey


class KeyedLock:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it.

    Serialises everything written into one chat thread (answers in order, events never
    interleaved with a live answer) without keeping a lock per thread forever.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)

    def held(self, key: str) -> bool:
        """Does someone hold or wait for `key` right now?"""
        return key in self._locks


class ThreadGate:
    """Per-thread ordering for answers and event deliveries in this process (the store's reply
    rows tell other processes when an answer is streaming)."""

    def __init__(self) -> None:
        self._locks = KeyedLock()

    def hold(self, thread: ThreadKey) -> AbstractAsyncContextManager[None]:
        """Held while anything is written into `thread`."""
        return self._locks(thread.lock_key)

    def busy(self, thread: ThreadKey) -> bool:
        """Is something being written into `thread` (or waiting to be)? Checked and then held
        with no await in between, a False stays true until `hold` has the thread."""
        return self._locks.held(thread.lock_key)

    def __len__(self) -> int:
        return len(self._locks)
