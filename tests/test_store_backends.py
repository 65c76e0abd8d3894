"""The asynchronous store seam on both backends: a SQLite file and a real PostgreSQL server
(tests/pg.py). Every test that takes `db` runs on each; two store objects opened on one database
stand for two processes (each has its own connection(s)); `Clock` moves time for both."""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bridge.errors import ConfigError, StoreUnavailable
from bridge.models import Attachment, ChatUser, Inbound, ThreadKey
from bridge.store import aio, codec, interfaces
from bridge.store.aio import AsyncStore, open_store
from bridge.store.migrations import migrations as sqlite_migrations
from bridge.store.postgres import PostgresStore
from bridge.store.postgres import migrations as pg_migrations
from bridge.store.sqlite.aio import AsyncSQLiteStore
from tests.pg import PgServer

ALL_MIGRATIONS = [m.name for m in sqlite_migrations._migrations]
THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")
OTHER_THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000200")
TTL = 15.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "bridge.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(db: str, clock: Clock) -> AsyncIterator[AsyncStore]:
    opened = await open_store(db, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def other(db: str, clock: Clock, store: AsyncStore) -> AsyncIterator[AsyncStore]:
    """A second process on the same database."""
    opened = await open_store(db, clock=clock)
    yield opened
    await opened.close()


def _signature(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


# --- the seam ----------------------------------------------------------------------------------


def test_the_postgresql_migrations_have_the_sqlite_names_in_the_same_order():
    assert pg_migrations.NAMES == ALL_MIGRATIONS
    assert ALL_MIGRATIONS[-1] == "m005_several_processes"


@pytest.mark.parametrize(
    ("aggregate", "protocol"),
    [
        ("links", aio.AsyncLinkQuery), ("employees", aio.AsyncEmployeeQuery), ("replies", aio.AsyncReplyQuery),
        ("inbound", aio.AsyncInboundQuery), ("events", aio.AsyncEventQuery),
        ("checkpoints", aio.AsyncCheckpointQuery), ("kv", aio.AsyncKVQuery), ("instances", aio.AsyncInstanceQuery),
        ("leases", aio.AsyncLeaseQuery), ("queue", aio.AsyncQueueQuery), ("budgets", aio.AsyncBudgetQuery),
    ],
)
async def test_both_backends_implement_every_method_of_the_async_protocols(db, store, aggregate, protocol):
    """Same names, parameters and defaults as the protocol (the SQLite wrapper forwards to the
    synchronous query object, so that one is compared); coroutines where the protocol awaits."""
    impl = getattr(store, aggregate)
    sync = getattr(store, "sync", None)
    target = getattr(sync, aggregate) if sync is not None else impl
    for name, member in vars(protocol).items():
        if name.startswith("_") or not callable(member):
            continue
        assert _signature(getattr(type(target), name))[1:] == _signature(member)[1:], (aggregate, name)
        awaited = inspect.iscoroutinefunction(member)
        assert inspect.iscoroutinefunction(getattr(impl, name)) == awaited, (aggregate, name)
    namespace = store.kv.namespace("x")
    assert await namespace.get("k") is None
    for name in ("ready", "health", "applied_migrations", "prune_history", "close"):
        assert inspect.iscoroutinefunction(getattr(store, name))
    assert store.backend == ("postgresql" if db.startswith("postgresql") else "sqlite")
    assert store.path == db


def test_the_sync_protocols_gained_the_same_aggregates():
    for name in ("instances", "leases", "queue", "budgets"):
        assert name in vars(interfaces.BridgeStore) and name in vars(aio.AsyncStore)


async def test_sqlite_behind_the_seam_is_the_synchronous_store(tmp_path):
    store = await open_store(str(tmp_path / "b.db"))
    assert isinstance(store, AsyncSQLiteStore)
    link = await store.links.insert(THREAD, "U1", "", "conv_1", {})
    assert store.sync.links.get(THREAD, "U1") == link  # one connection, both views
    await store.close()


# --- migrations --------------------------------------------------------------------------------


async def test_migrations_apply_once_and_reopening_is_a_no_op(db, clock):
    first = await open_store(db, clock=clock)
    assert await first.applied_migrations() == ALL_MIGRATIONS
    assert await first.health() == (True, "ready") and await first.ready()
    await first.close()
    again = await open_store(db, clock=clock)
    assert await again.applied_migrations() == ALL_MIGRATIONS
    await again.close()


async def test_replicas_starting_together_migrate_once(db):
    """Four processes open a new database at the same moment (each thread its own event loop
    and connection): one migrates under the lock, the others find nothing pending."""
    barrier = threading.Barrier(4)
    results: list[Any] = []

    async def start() -> list[str]:
        store = await open_store(db)
        try:
            return await store.applied_migrations()
        finally:
            await store.close()

    def process() -> None:
        barrier.wait()
        try:
            results.append(asyncio.run(start()))
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=process) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [ALL_MIGRATIONS] * 4
    assert _migration_rows(db) == ALL_MIGRATIONS  # each recorded once


def _migration_rows(db: str) -> list[str]:
    if db.startswith("postgresql"):
        with psycopg.connect(db) as conn:
            return [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY applied_at, name")]
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]


async def test_a_database_from_a_newer_release_refuses_to_start(db):
    await (await open_store(db)).close()
    if db.startswith("postgresql"):
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("INSERT INTO migrations (migration_set, name) VALUES ('moveworks_bridge', 'm999_future')")
    else:
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                         "VALUES ('moveworks_bridge', 'm999_future', '2030-01-01')")
    with pytest.raises(ConfigError, match=r"newer moveworks-bridge \(unknown migrations: m999_future\); upgrade"):
        await open_store(db)


async def test_postgresql_migrations_stop_before_and_resume(pg_url):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True, row_factory=dict_row) as c:
        assert await pg_migrations.apply(c, stop_before="m005_several_processes") == ALL_MIGRATIONS[:4]
        await c.execute("INSERT INTO kv (namespace, key, value, updated_at) VALUES ('teams.references', 'a', 'x', 1)")
    store = await open_store(pg_url)
    assert await store.applied_migrations() == ALL_MIGRATIONS
    assert await store.kv.get("teams.references", "a") == "x"
    await store.close()


async def test_postgresql_m004_moves_conversation_refs_into_kv(pg_url):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True, row_factory=dict_row) as c:
        await pg_migrations.apply(c, stop_before="m004_conversation_refs_to_kv")
        for row in [
            ("teams", "a:old", "u1", True, '{"id": "old"}', 10.0),
            ("teams", "a:new", "u1", True, '{"id": "new"}', 20.0),
            ("teams", "19:chan", None, False, '{"id": "chan"}', 15.0),
            ("teams", "a:anon", None, True, '{"id": "anon"}', 40.0),
        ]:
            await c.execute("INSERT INTO conversation_refs (platform, ref_key, user_id, personal, reference, "
                            "updated_at) VALUES (%s, %s, %s, %s, %s, %s)", row)
    store = await open_store(pg_url)
    assert await store.kv.items("teams.references") == [
        ("19:chan", '{"id": "chan"}'), ("a:anon", '{"id": "anon"}'), ("a:new", '{"id": "new"}'),
        ("a:old", '{"id": "old"}'),
    ]
    assert await store.kv.items("teams.personal") == [("u1", "a:new")]
    await store.close()


# --- start-up and outages (PostgreSQL) -----------------------------------------------------------


async def test_an_unusable_postgresql_url_is_a_config_error_without_the_password(pg_server: PgServer):
    missing = pg_server.url("no_such_database").replace("postgres:@", "postgres:s3cret-pw@")
    with pytest.raises(ConfigError, match="BRIDGE_DB: cannot use the PostgreSQL database "
                                          r"\(the database does not exist\)") as caught:
        await open_store(missing)
    assert "s3cret-pw" not in str(caught.value)
    nowhere = "postgresql://bridge:s3cret-pw@/postgres?host=/nonexistent-dir&connect_timeout=1"
    with pytest.raises(ConfigError, match=r"\(server not reachable\)") as caught:
        await open_store(nowhere)
    assert "s3cret-pw" not in str(caught.value)


async def test_health_reflects_the_postgresql_connection_and_recovers(pg_server: PgServer, pg_url):
    store = await open_store(pg_url)
    assert isinstance(store, PostgresStore)
    store.health_timeout = 0.5  # seconds /readyz waits for a connection (2 s by default)
    store.db.fail_fast = 0.2  # and a call, once the database is known unreachable (1 s)
    await store.kv.set("ns", "k", "v")
    pg_server.stop()
    try:
        assert await store.health() == (False, "database unreachable")  # /readyz: 503
        assert not await store.ready()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="the database cannot be used now: database unreachable"):
            await store.kv.get("ns", "k")
        with pytest.raises(StoreUnavailable):
            await store.queue.enqueue("slack", "Ev1", THREAD, "{}", "{}")
        with pytest.raises(StoreUnavailable):
            await store.queue.take("a", 30)
        assert time.monotonic() - started < 1.5  # known down: callers fail fast (a first call waits 5 s)
    finally:
        pg_server.start()
    for _ in range(100):  # the pool reconnects by itself
        if (await store.health())[0]:
            break
        await asyncio.sleep(0.05)
    assert await store.health() == (True, "ready")
    assert await store.kv.get("ns", "k") == "v"
    await store.close()


# --- the aggregates of today -------------------------------------------------------------------


async def test_state_survives_a_restart_and_claims_win_once_across_processes(db, store, other):
    link = await store.links.insert(THREAD, "U1", "a@example.com", "conv_1", {"channel": "C1"})
    assert (await other.links.insert(THREAD, "U1", "", "conv_2", {})).conversation_id == "conv_1"
    assert await store.inbound.claim("slack", "Ev1")
    assert not await other.inbound.claim("slack", "Ev1")
    await store.checkpoints.advance("a@example.com", "evt_5")
    await store.kv.namespace("teams.references").set("19:abc", '{"reference": {}}')
    await store.close()
    store = await open_store(db)
    assert await store.links.get(THREAD, "U1") == link and await store.links.get_by_id(link.id) == link
    assert link.address == {"channel": "C1"}
    assert await store.checkpoints.get("a@example.com") == ("evt_5", pytest.approx(1_000_000.0))
    assert await store.kv.get("teams.references", "19:abc") == '{"reference": {}}'
    await store.close()


async def test_concurrent_first_messages_keep_one_conversation(store, other):
    results = await asyncio.gather(*(
        (store if n % 2 else other).links.insert(THREAD, "U1", "", f"conv_{n}", {}) for n in range(8)
    ))
    assert len({link.conversation_id for link in results}) == 1


async def test_links(store, clock):
    a = await store.links.insert(THREAD, "U1", "", "conv_1", {"x": 1})
    b = await store.links.insert(OTHER_THREAD, "U1", "", "conv_1", {})
    assert (await store.links.insert(THREAD, "U2", "", "conv_u2", {})).conversation_id == "conv_u2"
    assert (await store.links.insert(THREAD, "U1", "", "conv_x", {})).conversation_id == "conv_1"  # active wins
    clock.advance(100)
    await store.links.touch(a.id, {"x": 2})
    assert (await store.links.get_by_id(a.id)).address == {"x": 2}
    await store.links.touch(a.id)  # None keeps the address
    assert (await store.links.get_by_id(a.id)).address == {"x": 2}
    await store.links.deactivate(b.id)
    assert [link.id for link in await store.links.for_conversation("conv_1")] == [a.id, b.id]
    assert (await store.links.insert(OTHER_THREAD, "U1", "", "conv_new", {})).conversation_id == "conv_new"
    await store.links.remap(b.id, "conv_2", {"y": 1})
    remapped = await store.links.get_by_id(b.id)
    assert remapped.active and remapped.conversation_id == "conv_2" and remapped.address == {"y": 1}
    await store.links.touch(9999)
    await store.links.deactivate(9999)
    assert await store.links.get_by_id(9999) is None
    assert await store.links.any_active_in_thread(THREAD)
    await store.links.deactivate_where("slack", "C1", THREAD.thread)
    assert not await store.links.any_active_in_thread(THREAD)
    assert await store.links.any_active_in_thread(OTHER_THREAD)
    await store.links.deactivate_where("slack", "C1")
    assert not await store.links.any_active_in_thread(OTHER_THREAD)


async def test_employees_keep_known_email(store, clock):
    await store.employees.save(ChatUser("slack", "T1", "U1", email="A@Example.com"), email_checked=True)
    clock.advance(10)
    await store.employees.save(ChatUser("slack", "T1", "U1", name="Ann"), active=True)
    employee = await store.employees.get("slack", "T1", "U1")
    assert employee.email == "A@Example.com" and employee.name == "Ann"
    assert await store.employees.email_checked_at("slack", "T1", "U1") == 1_000_000.0
    assert await store.employees.identities() == [("a@example.com", 1_000_010.0)]
    clock.advance(10)
    await store.employees.save(ChatUser("teams", "t1", "u1", email="a@example.com"), active=True)
    clock.advance(10)
    await store.employees.save(ChatUser("teams", "t1", "u2"), active=True)
    assert [e.platform for e in await store.employees.by_email("A@EXAMPLE.COM")] == ["teams", "slack"]
    assert await store.employees.active_people() == 2
    assert (await store.employees.last_active()).user_id == "u2"
    assert await store.employees.last_activity() == 1_000_030.0
    assert await store.employees.get("slack", "T1", "nobody") is None
    assert await store.employees.email_checked_at("slack", "T1", "nobody") is None


async def test_replies_and_shown_messages(db, store, clock):
    link = await store.links.insert(THREAD, "U1", "", "conv_1", {})
    first = await store.replies.start(link.id)
    second = await store.replies.start(link.id)
    assert await store.replies.streaming_in(THREAD) and not await store.replies.streaming_in(OTHER_THREAD)
    await store.replies.checkpoint(second, {"stream": "s1"})
    await store.replies.finish(first, "final", response_id="r1", platform_message_ids=["m1"])
    await store.replies.finish(first, "final")  # None keeps what was stored
    assert _reply_row(db, first) == ("r1", json.dumps(["m1"]))
    clock.advance(interfaces.STREAMING_STALE + 1)
    assert not await store.replies.streaming_in(THREAD)
    assert await store.replies.interrupt_streaming() == [(link.id, {"stream": "s1"})]
    assert await store.replies.interrupt_streaming() == []
    await store.replies.mark_shown("msg_1", link.id, "stream")
    await store.replies.mark_shown("msg_1", None, "poll")  # the first record wins
    assert await store.replies.was_shown("msg_1") and not await store.replies.was_shown("msg_2")


def _reply_row(db: str, reply_id: int) -> tuple[str, str]:
    sql = "SELECT response_id, platform_message_ids FROM replies WHERE id = "
    if db.startswith("postgresql"):
        with psycopg.connect(db) as conn:
            return conn.execute(sql + "%s", (reply_id,)).fetchone()  # type: ignore[return-value]
    with sqlite3.connect(db) as conn:
        return conn.execute(sql + "?", (reply_id,)).fetchone()


async def test_events_without_a_lease_behave_as_before(store):
    assert await store.events.claim("evt_1", "a", "conv", "{}")
    assert await store.events.claim("evt_1", "a", "conv", "{}")  # a crash left it claimed: claim again
    assert [e["event_id"] for e in await store.events.pending("a")] == ["evt_1"]
    assert await store.events.pending("b") == []
    await store.events.finish("evt_1", "sent")
    assert not await store.events.claim("evt_1", "a", "conv", "{}")
    assert await store.events.status("evt_1") == "sent"
    await store.events.claim("evt_2", "a", "conv", "{}")
    await store.events.finish("evt_2", "retry", "busy")
    assert await store.events.claim("evt_2", "a", "conv", "{}")
    await store.events.finish("evt_2", "skipped", "no thread")
    assert not await store.events.claim("evt_2", "a", "conv", "{}")
    assert await store.events.counts() == {"sent": 1, "skipped": 1}
    await store.events.finish("never_claimed", "sent")
    assert await store.events.status("never_claimed") is None
    await store.links.insert(THREAD, "U1", "", "conv", {})
    recent = await store.events.recent_for("slack", "T1", "U1", None)
    assert {e["event_id"] for e in recent} == {"evt_1", "evt_2"}
    assert await store.events.recent_for("slack", "T1", "U9", "a", limit=1) != []
    assert await store.events.recent_for("slack", "T1", "U9", None) == []


async def test_checkpoints_never_move_backwards(store, other, clock):
    assert await store.checkpoints.get("a") is None
    assert await store.checkpoints.start("a") == (None, 1_000_000.0)
    await store.checkpoints.advance("a", "evt_0009")
    await other.checkpoints.advance("a", "evt_0005")
    await other.checkpoints.advance("a", "evt_000A")  # byte order: 'A' > '9'
    assert (await store.checkpoints.get("a"))[0] == "evt_000A"
    clock.advance(10)
    assert await other.checkpoints.start("a") == ("evt_000A", 1_000_000.0)  # the first start stays
    await store.checkpoints.reset("a")
    assert await store.checkpoints.get("a") == (None, 1_000_010.0)
    await store.checkpoints.reset("unknown")
    assert await store.checkpoints.get("unknown") is None


async def test_kv_namespaces_prefixes_and_hostile_keys(store, other):
    a, b = store.kv.namespace("teams.members"), other.kv.namespace("teams.feedback")
    await a.set("k1", "a1")
    await a.set("k2", "a2")
    await a.set("K3", "a3")
    await b.set("k1", "b1")
    await a.set("k1", "a1'")
    assert await a.get("k1") == "a1'" and await b.get("k1") == "b1"
    assert await a.items() == [("K3", "a3"), ("k1", "a1'"), ("k2", "a2")]  # byte order
    assert await a.items("k2") == [("k2", "a2")] and await a.items("k%") == []
    await a.delete("k1")
    assert await a.get("k1") is None
    await a.delete()
    assert await a.items() == [] and await b.items() == [("k1", "b1")]
    hostile = ThreadKey("slack", "T1'; DROP TABLE thread_links; --", "C1", "x")
    await store.links.insert(hostile, "U1' OR '1'='1", "", "conv_1", {})
    assert (await other.links.get(hostile, "U1' OR '1'='1")).conversation_id == "conv_1"
    assert await other.links.get(hostile, "U2") is None
    await store.kv.set("ns", "k' OR '1'='1", "v")
    assert await store.kv.items("ns", "k'") == [("k' OR '1'='1", "v")] and await store.kv.get("ns", "k") is None


async def test_history_is_pruned_but_mappings_are_kept(store, clock):
    link = await store.links.insert(THREAD, "U1", "", "conv_1", {})
    reply = await store.replies.start(link.id)
    await store.replies.finish(reply, "final")
    await store.replies.mark_shown("msg_1", link.id, "stream")
    await store.events.claim("evt_1", "", "conv_1", "{}")
    await store.events.finish("evt_1", "sent")
    await store.events.claim("evt_2", "", "conv_1", "{}")  # still pending: kept
    await store.kv.namespace("teams.feedback").set("a", "{}")
    await store.kv.set("teams.members", "a", "{}")
    await store.inbound.claim("slack", "Ev1")
    await store.instances.beat("gone")
    await store.leases.acquire("poller", "gone", 10)
    clock.advance(31 * 24 * 3600)
    await store.instances.beat("here")
    assert await store.prune_history() == 4  # reply, shown message, sent event, the old instance
    assert await store.kv.namespace("teams.feedback").prune() == 1
    assert await store.kv.get("teams.members", "a") == "{}"
    assert await store.inbound.prune() == 1
    assert await store.links.get(THREAD, "U1") is not None
    assert [e["event_id"] for e in await store.events.pending()] == ["evt_2"]
    assert await store.instances.dead(TTL) == [] and await store.instances.alive("here", TTL)


# --- instances and leases ----------------------------------------------------------------------


async def test_instances_beat_alive_dead_and_leave(store, other, clock):
    await store.instances.beat("a")
    clock.advance(10)
    await other.instances.beat("b")
    assert await other.instances.alive("a", TTL) and await store.instances.alive("b", TTL)
    assert await store.instances.dead(TTL) == []
    clock.advance(6)
    assert not await other.instances.alive("a", TTL) and await other.instances.alive("b", TTL)
    assert await other.instances.dead(TTL) == ["a"]
    await store.instances.beat("a")
    assert await other.instances.dead(TTL) == []
    await store.instances.leave("a")
    assert not await other.instances.alive("a", TTL) and await other.instances.dead(TTL) == []
    assert not await other.instances.alive("never", TTL)


async def test_a_lease_is_held_by_one_owner_renewed_and_taken_over_after_expiry(store, other, clock):
    assert await store.leases.acquire("poller", "a", 10)
    assert not await other.leases.acquire("poller", "b", 10)
    assert await other.leases.holder("poller") == "a"
    assert await store.leases.acquire("poller", "a", 10)  # already mine: renewed
    clock.advance(8)
    assert await store.leases.renew("poller", "a", 10)
    clock.advance(8)
    assert not await other.leases.acquire("poller", "b", 10)  # renewed: still a's
    assert not await other.leases.renew("poller", "b", 10)
    clock.advance(3)  # a died: its lease expired
    assert await store.leases.holder("poller") is None
    assert await other.leases.acquire("poller", "b", 10)
    assert await store.leases.holder("poller") == "b"
    assert not await store.leases.renew("poller", "a", 10)  # a learns it lost the role
    await store.leases.release("poller", "a")  # not a's: nothing happens
    assert await store.leases.holder("poller") == "b"
    await other.leases.release("poller", "b")
    assert await store.leases.holder("poller") is None
    assert await store.leases.acquire("poller", "a", 10)
    assert not await store.leases.renew("other-role", "a", 10)


async def test_racing_acquirers_get_one_winner(store, other):
    won = await asyncio.gather(*((store if n % 2 else other).leases.acquire("poller", f"p{n}", 10) for n in range(10)))
    assert won.count(True) == 1
    assert await store.leases.holder("poller") == f"p{won.index(True)}"


# --- the durable inbound queue -----------------------------------------------------------------


def _enqueue_args(n: int, thread: ThreadKey = THREAD) -> dict[str, Any]:
    return {"platform": thread.platform, "dedupe_id": f"Ev{n}", "thread": thread,
            "user": json.dumps({"user_id": f"U{n}"}), "payload": json.dumps({"n": n})}


async def test_enqueue_is_atomic_with_the_dedupe_claim(store, other):
    assert await store.queue.enqueue(**_enqueue_args(1))
    assert not await other.queue.enqueue(**_enqueue_args(1))  # a retry of the same delivery
    assert not await other.inbound.claim("slack", "Ev1")  # the same dedupe record
    assert await other.inbound.claim("slack", "Ev2")
    assert not await store.queue.enqueue(**_enqueue_args(2))  # claimed by the old path: nothing queued
    assert not await store.queue.enqueue(**{**_enqueue_args(1), "payload": "changed"})
    assert await store.queue.counts() == {"queued": 1, "taken": 0}
    assert await store.queue.enqueue(**{**_enqueue_args(1), "platform": "teams"})  # other platform, other key


async def test_take_respects_per_thread_order_across_processes(store, other, clock):
    for n, thread in enumerate([THREAD, THREAD, OTHER_THREAD, THREAD]):
        clock.advance(0.001)
        await store.queue.enqueue(**_enqueue_args(n, thread))
    first = await store.queue.take("a", 30, limit=10)
    # one per thread: the oldest of THREAD and the only one of OTHER_THREAD
    assert [(i.dedupe_id, i.thread) for i in first] == [("Ev0", THREAD), ("Ev2", OTHER_THREAD)]
    item = first[0]
    assert item.owner == "a" and item.attempts == 1 and item.lease_until == clock.now + 30
    assert json.loads(item.payload) == {"n": 0} and json.loads(item.user) == {"user_id": "U0"}
    assert await other.queue.take("b", 30, limit=10) == []  # Ev1 waits for Ev0, Ev3 for Ev1
    assert await other.queue.done(item.id, "b") is False  # not b's
    assert await store.queue.done(item.id, "a")
    assert await store.queue.done(item.id, "a") is False  # already done
    [second] = await other.queue.take("b", 30, limit=10)
    assert second.dedupe_id == "Ev1" and second.owner == "b"
    assert await store.queue.take("a", 30) == []
    assert await other.queue.done(second.id, "b")
    assert [i.dedupe_id for i in await store.queue.take("a", 30)] == ["Ev3"]
    assert await store.queue.counts() == {"queued": 0, "taken": 2}


async def test_a_late_enqueue_never_overtakes_an_item_in_progress(db, store, other):
    """Two replicas acknowledge two messages of one thread at once and the lower id commits
    last, while the higher one is already being answered: it waits for that answer."""
    await store.queue.enqueue(**_enqueue_args(1))
    [in_progress] = await store.queue.take("a", 30)
    _insert_item_with_id(db, 0, _enqueue_args(0))  # the late committer, with a lower id
    assert await other.queue.take("b", 30) == []
    assert await store.queue.done(in_progress.id, "a")
    [late] = await other.queue.take("b", 30)
    assert late.id == 0 and late.dedupe_id == "Ev0"


def _insert_item_with_id(db: str, item_id: int, args: dict[str, Any]) -> None:
    thread = args["thread"]
    values = (item_id, args["platform"], args["dedupe_id"], thread.workspace, thread.channel, thread.thread,
              interfaces.queue_thread_key(thread), args["user"], args["payload"], 0.0)
    columns = "id, platform, dedupe_id, workspace, channel, thread, thread_key, user_json, payload, enqueued_at"
    if db.startswith("postgresql"):
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f"INSERT INTO inbound_queue ({columns}) OVERRIDING SYSTEM VALUE "
                         f"VALUES ({', '.join(['%s'] * 10)})", values)
    else:
        with sqlite3.connect(db) as conn:
            conn.execute(f"INSERT INTO inbound_queue ({columns}) VALUES ({', '.join('?' * 10)})", values)


async def test_concurrent_takes_hand_each_item_out_once_and_one_per_thread(store, other):
    threads = [ThreadKey("slack", "T1", "C1", f"t{k}") for k in range(5)]
    for n in range(20):
        await store.queue.enqueue(**_enqueue_args(n, threads[n % 5]))
    handed: list[interfaces.QueueItem] = []
    while True:
        batches = await asyncio.gather(*((store if k % 2 else other).queue.take(f"w{k}", 30, limit=3)
                                         for k in range(6)))
        batch = [item for b in batches for item in b]
        if not batch:
            break
        in_flight = [item.thread for item in batch]
        assert len(in_flight) == len(set(in_flight))  # never two items of one thread at once
        handed.extend(batch)
        for item in batch:
            assert await store.queue.done(item.id, item.owner or "")
    assert sorted(item.dedupe_id for item in handed) == sorted(f"Ev{n}" for n in range(20))
    for thread in threads:
        order = [int(item.dedupe_id[2:]) for item in handed if item.thread == thread]
        assert order == sorted(order)


async def test_a_dead_owners_items_are_taken_over_and_a_live_owners_are_not(store, other, clock):
    await store.instances.beat("a")
    await other.instances.beat("b")
    for n, thread in enumerate([THREAD, OTHER_THREAD, THREAD]):
        await store.queue.enqueue(**_enqueue_args(n, thread))
    taken_by_a = await store.queue.take("a", 60, limit=1)
    taken_by_b = await other.queue.take("b", 60, limit=1)
    assert [i.dedupe_id for i in taken_by_a] == ["Ev0"] and [i.dedupe_id for i in taken_by_b] == ["Ev1"]
    clock.advance(10)
    await other.instances.beat("b")
    assert await other.queue.release_orphans(TTL) == []  # both alive
    clock.advance(10)
    await other.instances.beat("b")  # a stopped beating 20 s ago: dead
    assert await other.instances.dead(TTL) == ["a"]
    assert [i.dedupe_id for i in await other.queue.of_owners(["a"])] == ["Ev0"]
    released = await other.queue.release_orphans(TTL)
    assert [(i.dedupe_id, i.attempts) for i in released] == [("Ev0", 1)]
    assert await other.queue.of_owners(["a"]) == []
    [again] = await other.queue.take("b", 60)
    assert again.dedupe_id == "Ev0" and again.attempts == 2  # the taker sees a second attempt
    assert not await store.queue.done(again.id, "a")  # a, if it were still running, lost it
    assert await other.queue.done(again.id, "b")
    [third] = await other.queue.take("b", 60)
    assert third.dedupe_id == "Ev2"
    assert [i.dedupe_id for i in await store.queue.of_owners(["b"])] == ["Ev1", "Ev2"]


async def test_leases_expire_extend_release_and_owner_release(store, other, clock):
    await store.queue.enqueue(**_enqueue_args(1))
    await store.queue.enqueue(**_enqueue_args(2, OTHER_THREAD))
    [one, two] = await store.queue.take("a", 10, limit=2)
    clock.advance(8)
    assert await store.queue.extend("a", 10) == 2  # the heartbeat keeps a's answers a's
    assert await store.queue.extend("a", 10, [one.id]) == 1
    assert await store.queue.extend("b", 10) == 0
    clock.advance(9)
    assert await other.queue.take("b", 10, limit=5) == []
    clock.advance(2)  # a died 11 s ago: both leases expired
    assert await store.queue.counts() == {"queued": 0, "taken": 2}
    assert await other.queue.release_expired() == 2
    assert await store.queue.counts() == {"queued": 2, "taken": 0}
    taken = await other.queue.take("b", 10, limit=5)
    assert {i.id for i in taken} == {one.id, two.id}
    assert await other.queue.release(one.id, "b") and not await other.queue.release(one.id, "b")
    assert [i.id for i in await store.queue.take("a", 10)] == [one.id]
    released = await store.queue.release_owners(["a", "b"])
    assert [i.id for i in released] == [one.id, two.id] and all(i.owner is None for i in released)
    assert await store.queue.release_owners([]) == [] and await store.queue.of_owners([]) == []
    [by_c] = await store.queue.take("c", 5)
    clock.advance(6)
    [by_d] = await other.queue.take("d", 5)  # an expired lease is taken over without a release
    assert by_c.id == by_d.id == one.id and by_d.attempts == by_c.attempts + 1 and by_d.owner == "d"


async def test_queued_questions_round_trip_through_the_codec(store):
    inbound = Inbound(
        dedupe_id="Ev9", thread=THREAD, user=ChatUser("slack", "T1", "U1", name="Ann", email="ann@example.com"),
        text="How do I reset my password? ✓", callback_id="cb", callback_conversation_id="conv",
        callback_label="Yes", address={"channel": "C1", "thread_ts": "1700000000.000100"}, direct=True,
        files=(Attachment("a.png", "image/png", 10, {"url": "https://files/a"}),), context="Bob: hi",
    )
    assert await store.queue.enqueue(**codec.queue_fields(inbound, {"style": "thread"}))
    [item] = await store.queue.take("a", 30)
    assert codec.load_inbound(item.payload) == (inbound, {"style": "thread"})
    assert codec.load_user(item.user) == inbound.user
    with pytest.raises(ValueError, match="newer"):
        codec.load_inbound(json.dumps({"v": 2}))
    with pytest.raises(ValueError):
        codec.load_inbound("[]")


# --- replies and events with owners ------------------------------------------------------------


async def test_crash_recovery_touches_only_replies_of_dead_owners(store, other, clock):
    link = await store.links.insert(THREAD, "U1", "", "conv_1", {})
    link2 = await store.links.insert(OTHER_THREAD, "U1", "", "conv_2", {})
    await store.instances.beat("a")
    await other.instances.beat("b")
    mine = await store.replies.start(link.id, owner="a")
    theirs = await other.replies.start(link2.id, owner="b")
    await store.replies.checkpoint(mine, {"stream": "s-a"})
    await store.replies.start(link2.id)  # unowned (a release before owners)
    # b starts after a: nothing of a live process is touched
    assert await other.replies.interrupt_orphans(TTL) == []
    clock.advance(20)
    await other.instances.beat("b")  # a is dead now
    assert await other.replies.interrupt_orphans(TTL) == [(link.id, {"stream": "s-a"})]
    assert await store.replies.interrupt_orphans(TTL) == []  # exactly one process tells the asker
    assert await other.replies.streaming_in(OTHER_THREAD)
    clock.advance(interfaces.STREAMING_STALE)
    await other.instances.beat("b")
    await other.replies.checkpoint(theirs, None)  # b's own reply stays b's, however long it streams
    assert await other.replies.interrupt_orphans(TTL) == [(link2.id, None)]  # the stale unowned one
    await other.replies.finish(theirs, "final")
    assert await store.replies.interrupt_streaming(["b"]) == []
    await store.replies.start(link.id, owner="c")
    assert await store.replies.interrupt_streaming(["c", "d"]) == [(link.id, None)]
    assert await store.replies.interrupt_streaming([]) == []


async def test_a_claimed_event_is_not_claimed_again_by_another_live_process(store, other, clock):
    assert await store.events.claim("evt_1", "a", "conv", "{}", owner="serve-1", lease=30)
    assert not await other.events.claim("evt_1", "a", "conv", "{}", owner="poll-1", lease=30)
    assert not await other.events.claim("evt_1", "a", "conv", "{}")  # an unowned claim respects it too
    assert await store.events.claim("evt_1", "a", "conv", "{}", owner="serve-1", lease=30)  # its own again
    clock.advance(31)  # serve-1 died mid-delivery: the lease expired
    assert await other.events.claim("evt_1", "a", "conv", "{}", owner="poll-1", lease=30)
    [pending] = await other.events.pending()
    assert pending["owner"] == "poll-1" and pending["attempts"] == 3
    await other.events.finish("evt_1", "sent")
    clock.advance(100)
    assert not await store.events.claim("evt_1", "a", "conv", "{}", owner="serve-1", lease=30)
    assert await store.events.claim("evt_2", "a", "conv", "{}", owner="serve-1", lease=30)
    await store.events.finish("evt_2", "retry", "rate limited")
    assert await other.events.claim("evt_2", "a", "conv", "{}", owner="poll-1", lease=30)  # retry: free


async def test_racing_event_claims_have_one_winner(store, other):
    won = await asyncio.gather(*(
        (store if n % 2 else other).events.claim("evt_1", "a", "conv", "{}", owner=f"p{n}", lease=30)
        for n in range(10)
    ))
    assert won.count(True) == 1


# --- shared write budgets ----------------------------------------------------------------------


async def test_two_processes_draw_from_one_write_budget(store, other, clock):
    # 1 write per second, a burst of 3, shared by both processes
    waits = [await (store if n % 2 else other).budgets.take_token("slack:T1", 1.0, 3) for n in range(6)]
    assert waits == pytest.approx([0, 0, 0, 1, 2, 3])  # reservations: each waits its turn
    clock.advance(3)
    assert await store.budgets.take_token("slack:T1", 1.0, 3) == pytest.approx(1)
    assert not await other.budgets.try_take("slack:T1", 1.0, 3)
    clock.advance(2)
    assert await other.budgets.try_take("slack:T1", 1.0, 3)
    assert not await store.budgets.try_take("slack:T1", 1.0, 3)
    await store.budgets.refund("slack:T1", 3)
    assert await store.budgets.try_take("slack:T1", 1.0, 3)
    assert await other.budgets.take_token("slack:T2", 1.0, 3) == 0  # keys are separate
    clock.advance(100)
    assert await store.budgets.take_token("slack:T1", 1.0, 3) == 0  # refilled, never above the burst
    assert await store.budgets.take_token("slack:T1", 1.0, 3) == 0
    assert await store.budgets.take_token("slack:T1", 1.0, 3) == 0
    assert await store.budgets.take_token("slack:T1", 1.0, 3) == pytest.approx(1)


async def test_a_429_pauses_every_process_on_the_key(store, other, clock):
    await store.budgets.penalize("teams:t1", 5)
    assert await other.budgets.take_token("teams:t1", 10.0, 5) == pytest.approx(5)
    assert not await other.budgets.try_take("teams:t1", 10.0, 5)
    clock.advance(5)
    assert await store.budgets.try_take("teams:t1", 10.0, 5)
    assert await store.budgets.try_take("new:key", 1.0, 1)
    assert not await store.budgets.try_take("too:big", 1.0, 1, cost=2)


async def test_concurrent_takers_never_exceed_the_bucket(store, other):
    waits = await asyncio.gather(*((store if n % 2 else other).budgets.take_token("k", 2.0, 4) for n in range(20)))
    assert sorted(waits) == pytest.approx([0.0] * 4 + [0.5 * k for k in range(1, 17)])
