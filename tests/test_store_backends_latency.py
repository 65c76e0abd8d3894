"""The durable queue's added latency per answer stays inside the issue's targets (p50 under 5 ms
on SQLite, under 10 ms on PostgreSQL) with a backlog: enqueue + take + done, minus the dedupe
claim the queue replaces. A guard against query plans that scan the whole queue (the test server
runs without fsync; see tests/pg.py for numbers with default durability)."""

from __future__ import annotations

import statistics
import time

import pytest

from bridge.models import ThreadKey
from bridge.store.aio import open_store

TARGET_P50 = {"sqlite": 0.005, "postgresql": 0.010}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "bridge.db")
    return "postgresql", str(request.getfixturevalue("pg_url"))


async def test_added_latency_per_answer_with_a_backlog(backend):
    name, db = backend
    store = await open_store(db)
    for i in range(400):  # 400 waiting questions in 40 threads, 20 of them being answered
        await store.queue.enqueue("slack", f"B{i}", ThreadKey("slack", "T1", "C1", f"t{i % 40}"), "{}", "{}")
    await store.queue.take("busy", 600, 20)
    added = []
    for i in range(100):
        thread = ThreadKey("slack", "T1", "C2", f"u{i}")
        started = time.perf_counter()
        await store.inbound.claim("slack", f"claim-{i}")
        claim = time.perf_counter() - started
        started = time.perf_counter()
        assert await store.queue.enqueue("slack", f"Q{i}", thread, "{}", "{}")
        [item] = await store.queue.take("me", 60, 1)
        assert await store.queue.done(item.id, "me")
        added.append(time.perf_counter() - started - claim)
    await store.close()
    p50 = statistics.median(added)
    print(f"{name}: added latency per answer p50 {p50 * 1000:.2f} ms")
    assert p50 < TARGET_P50[name]
