"""The SQLite store: migrations, restart, races between processes, idempotency records."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
from sqlite_utils import Database

from bridge.errors import ConfigError
from bridge.models import ChatUser, ThreadKey
from bridge.store import Store, interfaces
from bridge.store.migrations import migrations

THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")
ALL_MIGRATIONS = ["m001_initial", "m002_lookup_indexes", "m003_reply_checkpoints", "m004_conversation_refs_to_kv",
                  "m005_several_processes"]


def test_migrations_apply_once_and_twice_is_a_no_op(tmp_path):
    path = tmp_path / "b.db"
    first = Store(path)
    schema = first.db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    first.close()
    again = Store(path)
    assert again.applied_migrations() == ALL_MIGRATIONS
    assert again.db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert again.ready
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_from_a_newer_release_refuses_to_start(tmp_path):
    path = tmp_path / "b.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('moveworks_bridge', 'm999_from_the_future', '2030-01-01')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="newer moveworks-bridge"):
        Store(path)


def test_an_unopenable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot open"):
        Store(tmp_path / "missing-dir" / "b.db")


def test_the_sqlite_store_implements_the_backend_neutral_interfaces():
    store: interfaces.BridgeStore = Store(":memory:")
    for name in ("links", "employees", "replies", "inbound", "events", "checkpoints", "kv"):
        assert getattr(store, name) is not None
    namespace: interfaces.KV = store.kv.namespace("x")
    assert namespace.get("k") is None


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "b.db"
    store = Store(path)
    store.links.insert(THREAD, "U1", "a@example.com", "conv_1", {"channel": "C1"})
    store.inbound.claim("slack", "Ev1")
    store.checkpoints.advance("a@example.com", "evt_5")
    store.kv.namespace("teams.references").set("19:abc", '{"reference": {}}')
    store.close()
    store = Store(path)
    link = store.links.get(THREAD, "U1")
    assert link and link.conversation_id == "conv_1" and link.address == {"channel": "C1"}
    assert store.links.get_by_id(link.id) == link
    assert store.inbound.claim("slack", "Ev1") is False
    assert store.checkpoints.get("a@example.com")[0] == "evt_5"
    assert store.kv.get("teams.references", "19:abc") == '{"reference": {}}'


def test_concurrent_first_messages_from_two_processes_keep_one_conversation(tmp_path):
    path = tmp_path / "b.db"
    Store(path).close()
    results = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        store = Store(path)  # its own connection, like a second process
        barrier.wait()
        results.append(store.links.insert(THREAD, "U1", "", f"conv_{n}", {}).conversation_id)
        store.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1  # every racer sees the single winner
    store = Store(path)
    assert store.db.execute("SELECT COUNT(*) FROM thread_links").fetchone()[0] == 1


def test_claims_succeed_once_across_two_stores_on_one_file(tmp_path):
    path = tmp_path / "b.db"
    serve, poll = Store(path), Store(path)  # two processes' connections
    assert serve.inbound.claim("slack", "Ev1")
    assert not poll.inbound.claim("slack", "Ev1")
    assert poll.events.claim("evt_1", "a", "conv", "{}")
    poll.events.finish("evt_1", "sent")
    assert not serve.events.claim("evt_1", "a", "conv", "{}")
    assert serve.events.status("evt_1") == "sent"
    assert poll.checkpoints.start("a") == serve.checkpoints.start("a")
    serve.checkpoints.advance("a", "evt_9")
    poll.checkpoints.advance("a", "evt_3")
    assert poll.checkpoints.get("a")[0] == "evt_9"
    link = serve.links.insert(THREAD, "U1", "", "conv_1", {})
    poll.replies.mark_shown("msg_1", link.id, "stream")
    serve.replies.mark_shown("msg_1", None, "poll")
    assert serve.db.execute("SELECT source FROM shown_messages").fetchall() == [("stream",)]


def test_concurrent_event_claims_have_one_winner(tmp_path):
    path = tmp_path / "b.db"
    Store(path).close()
    won = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        store = Store(path)
        barrier.wait()
        if store.events.claim("evt_1", "a", "conv", "{}"):
            won.append(1)
            store.events.finish("evt_1", "sent")
        store.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a claim left unfinished is claimable again, so racers that all claim before the winner
    # finishes may each win; after a 'sent' nobody does
    assert won
    assert not Store(path).events.claim("evt_1", "a", "conv", "{}")


def test_two_people_in_one_thread_have_separate_links_and_an_inactive_link_is_replaced():
    store = Store(":memory:")
    a = store.links.insert(THREAD, "U1", "", "conv_a", {})
    b = store.links.insert(THREAD, "U2", "", "conv_b", {})
    assert a.conversation_id != b.conversation_id
    assert store.links.insert(THREAD, "U1", "", "conv_other", {}).conversation_id == "conv_a"  # active wins
    store.links.deactivate(a.id)
    assert store.links.insert(THREAD, "U1", "", "conv_new", {}).conversation_id == "conv_new"
    assert store.links.any_active_in_thread(THREAD)


def test_links_touch_remap_and_list_by_conversation():
    now = [100.0]
    store = Store(":memory:", clock=lambda: now[0])
    a = store.links.insert(THREAD, "U1", "", "conv_1", {"x": 1})
    b = store.links.insert(ThreadKey("slack", "T1", "C1", "t2"), "U1", "", "conv_1", {})
    now[0] = 200.0
    store.links.touch(a.id, {"x": 2})
    assert store.links.get_by_id(a.id).address == {"x": 2}
    store.links.deactivate(b.id)
    assert [link.id for link in store.links.for_conversation("conv_1")] == [a.id, b.id]
    store.links.remap(b.id, "conv_2", {"y": 1})
    remapped = store.links.get_by_id(b.id)
    assert remapped.active and remapped.conversation_id == "conv_2" and remapped.address == {"y": 1}
    store.links.touch(9999)  # an unknown id changes nothing
    store.links.deactivate(9999)
    assert store.links.get_by_id(9999) is None


def test_deactivate_where_touches_only_the_named_channel_or_thread():
    store = Store(":memory:")
    chain_a = store.links.insert(ThreadKey("teams", "t1", "19:chan", "root_a"), "u1", "", "c1", {})
    chain_a2 = store.links.insert(ThreadKey("teams", "t2", "19:chan", "root_a"), "u2", "", "c2", {})
    chain_b = store.links.insert(ThreadKey("teams", "t1", "19:chan", "root_b"), "u1", "", "c3", {})
    other = store.links.insert(ThreadKey("teams", "t1", "19:other", "root_a"), "u1", "", "c4", {})
    slack = store.links.insert(ThreadKey("slack", "T1", "19:chan", "root_a"), "U1", "", "c5", {})

    def active() -> set[int]:
        return {i for i in (chain_a.id, chain_a2.id, chain_b.id, other.id, slack.id)
                if store.links.get_by_id(i).active}

    store.links.deactivate_where("teams", "19:chan", "root_a")
    assert active() == {chain_b.id, other.id, slack.id}
    store.links.deactivate_where("teams", "19:chan")
    assert active() == {other.id, slack.id}


def test_event_claims_allow_redelivery_after_a_crash_but_never_after_sent():
    store = Store(":memory:")
    assert store.events.claim("evt_1", "a", "conv", "{}")
    assert store.events.claim("evt_1", "a", "conv", "{}")  # a crash left it claimed: claim again
    assert [e["event_id"] for e in store.events.pending("a")] == ["evt_1"]
    assert store.events.pending("b") == []
    store.events.finish("evt_1", "sent")
    assert not store.events.claim("evt_1", "a", "conv", "{}")
    assert store.events.pending() == []
    assert store.events.counts() == {"sent": 1}
    store.events.finish("never_claimed", "sent")  # changes nothing
    assert store.events.status("never_claimed") is None


def test_a_retry_is_claimable_again_and_a_skip_is_final():
    store = Store(":memory:")
    store.events.claim("evt_1", "a", "conv", "{}")
    store.events.finish("evt_1", "retry", "busy")
    assert store.events.claim("evt_1", "a", "conv", "{}")
    store.events.finish("evt_1", "skipped", "no thread")
    assert not store.events.claim("evt_1", "a", "conv", "{}")
    assert store.events.status("evt_1") == "skipped"


def test_checkpoints_never_move_backwards():
    now = [10.0]
    store = Store(":memory:", clock=lambda: now[0])
    assert store.checkpoints.get("a") is None
    assert store.checkpoints.start("a") == (None, 10.0)
    store.checkpoints.advance("a", "evt_0009")
    store.checkpoints.advance("a", "evt_0005")
    assert store.checkpoints.get("a")[0] == "evt_0009"
    now[0] = 20.0
    assert store.checkpoints.start("a") == ("evt_0009", 10.0)  # the first start stays
    store.checkpoints.reset("a")
    assert store.checkpoints.get("a") == (None, 20.0)
    store.checkpoints.reset("unknown")
    assert store.checkpoints.get("unknown") is None


def test_employee_upserts_keep_known_email():
    now = [50.0]
    store = Store(":memory:", clock=lambda: now[0])
    store.employees.save(ChatUser("slack", "T1", "U1", email="A@Example.com"), email_checked=True)
    now[0] = 60.0
    store.employees.save(ChatUser("slack", "T1", "U1", name="Ann"), active=True)
    employee = store.employees.get("slack", "T1", "U1")
    assert employee.email == "A@Example.com" and employee.name == "Ann"
    assert store.employees.email_checked_at("slack", "T1", "U1") == 50.0
    assert store.employees.identities() == [("a@example.com", 60.0)]
    store.employees.save(ChatUser("teams", "t1", "u1", email="a@example.com"), active=True)
    store.employees.save(ChatUser("teams", "t1", "u2"), active=True)
    assert [e.platform for e in store.employees.by_email("A@EXAMPLE.COM")] == ["slack", "teams"]
    assert store.employees.active_people() == 2
    assert store.employees.last_active().user_id in {"u1", "u2"}
    assert store.employees.last_activity() == 60.0
    assert store.employees.get("slack", "T1", "nobody") is None


def test_replies_stream_finish_and_are_interrupted_after_a_crash():
    now = [1000.0]
    store = Store(":memory:", clock=lambda: now[0])
    link = store.links.insert(THREAD, "U1", "", "conv_1", {})
    first = store.replies.start(link.id)
    second = store.replies.start(link.id)
    assert store.replies.streaming_in(THREAD)
    store.replies.checkpoint(second, {"stream": "s1"})
    store.replies.finish(first, "final", response_id="r1", platform_message_ids=["m1"])
    store.replies.finish(first, "final")  # None keeps what was stored
    assert store.db.execute("SELECT response_id, platform_message_ids FROM replies WHERE id = ?",
                            (first,)).fetchone() == ("r1", json.dumps(["m1"]))
    now[0] += interfaces.STREAMING_STALE + 1
    assert not store.replies.streaming_in(THREAD)  # a stale stream belongs to a dead process
    assert store.replies.interrupt_streaming() == [(link.id, {"stream": "s1"})]
    assert store.replies.interrupt_streaming() == []


def test_sql_is_parameterised_against_hostile_ids():
    store = Store(":memory:")
    hostile = ThreadKey("slack", "T1'; DROP TABLE thread_links; --", "C1", "x")
    store.links.insert(hostile, "U1' OR '1'='1", "", "conv_1", {})
    assert store.links.get(hostile, "U1' OR '1'='1").conversation_id == "conv_1"
    assert store.links.get(hostile, "U2") is None
    store.kv.set("ns", "k' OR '1'='1", "v")
    assert store.kv.items("ns", "k'") == [("k' OR '1'='1", "v")]
    assert store.kv.get("ns", "k") is None


def test_kv_namespaces_are_isolated():
    store = Store(":memory:")
    a, b = store.kv.namespace("teams.members"), store.kv.namespace("teams.feedback")
    a.set("k1", "a1")
    a.set("k2", "a2")
    b.set("k1", "b1")
    a.set("k1", "a1'")  # overwrite
    assert a.get("k1") == "a1'" and b.get("k1") == "b1"
    assert a.items() == [("k1", "a1'"), ("k2", "a2")] and a.items("k2") == [("k2", "a2")]
    a.delete("k1")
    assert a.get("k1") is None and b.get("k1") == "b1"
    a.delete()  # the whole namespace, and only it
    assert a.items() == [] and b.items() == [("k1", "b1")]
    assert store.kv.get("teams.feedback", "k1") == "b1"  # the same rows as the unbound API


def test_history_is_pruned_but_mappings_are_kept():
    now = [1_000_000.0]
    store = Store(":memory:", clock=lambda: now[0])
    link = store.links.insert(THREAD, "U1", "", "conv_1", {})
    reply = store.replies.start(link.id)
    store.replies.finish(reply, "final")
    store.replies.mark_shown("msg_1", link.id, "stream")
    store.events.claim("evt_1", "", "conv_1", "{}")
    store.events.finish("evt_1", "sent")
    store.events.claim("evt_2", "", "conv_1", "{}")  # still pending: never pruned
    feedback = store.kv.namespace("teams.feedback")
    feedback.set("a", "{}")
    store.kv.set("teams.members", "a", "{}")
    store.inbound.claim("slack", "Ev1")
    now[0] += 31 * 24 * 3600
    assert store.prune_history() == 3
    assert feedback.prune() == 1
    assert store.kv.get("teams.members", "a") == "{}"  # another namespace is not pruned
    assert store.inbound.prune() == 1
    assert store.links.get(THREAD, "U1") is not None
    assert not store.replies.was_shown("msg_1")
    assert [e["event_id"] for e in store.events.pending()] == ["evt_2"]


# --- m004: the Teams-only conversation_refs table moves into kv -----------------------------------


def _database_at_m003(path) -> None:
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="m004_conversation_refs_to_kv")
    assert [m.name for m in migrations.applied(db)] == ALL_MIGRATIONS[:3]
    rows = [
        # platform, ref_key, tenant, service_url, user_id, personal, reference, updated_at
        ("teams", "a:old", "t1", "http://s", "u1", 1, '{"reference": {"id": "old"}, "scope": "personal"}', 10.0),
        ("teams", "a:new", "t1", "http://s", "u1", 1, '{"reference": {"id": "new"}, "scope": "personal"}', 20.0),
        ("teams", "19:chan", "t1", "http://s", None, 0, '{"reference": {"id": "chan"}, "scope": "channel"}', 15.0),
        ("teams", "a:u2", "t1", "http://s", "u2", 1, '{"reference": {"id": "u2"}}', 5.0),
        ("teams", "a:group", "t1", "http://s", "u3", 0, '{"reference": {"id": "group"}}', 30.0),
        ("teams", "a:anon", "t1", "http://s", None, 1, '{"reference": {"id": "anon"}}', 40.0),
        ("other", "x", None, None, "u1", 1, '{"r": 1}', 50.0),
    ]
    db.execute("INSERT INTO conversation_refs (platform, ref_key, tenant, service_url, user_id, personal, "
               "reference, updated_at) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows)),
               [value for row in rows for value in row])
    db.conn.close()


def test_m004_moves_conversation_refs_into_kv_and_drops_the_table(tmp_path):
    path = tmp_path / "b.db"
    _database_at_m003(path)
    store = Store(path)
    assert store.applied_migrations() == ALL_MIGRATIONS
    assert store.kv.items("teams.references") == [
        ("19:chan", '{"reference": {"id": "chan"}, "scope": "channel"}'),
        ("a:anon", '{"reference": {"id": "anon"}}'),
        ("a:group", '{"reference": {"id": "group"}}'),
        ("a:new", '{"reference": {"id": "new"}, "scope": "personal"}'),
        ("a:old", '{"reference": {"id": "old"}, "scope": "personal"}'),
        ("a:u2", '{"reference": {"id": "u2"}}'),
    ]
    # the newest personal reference per user wins; group chats and rows without a user are not personal
    assert store.kv.items("teams.personal") == [("u1", "a:new"), ("u2", "a:u2")]
    assert store.kv.items("other.references") == [("x", '{"r": 1}')]
    assert store.kv.items("other.personal") == [("u1", "x")]
    updated = store.db.execute("SELECT updated_at FROM kv WHERE namespace = 'teams.personal' AND key = 'u1'")
    assert updated.fetchone()[0] == 20.0
    assert not store.db.table("conversation_refs").exists()
    store.close()
    assert Store(path).applied_migrations() == ALL_MIGRATIONS  # and it runs once


def test_m004_on_an_empty_database_leaves_kv_empty(tmp_path):
    path = tmp_path / "b.db"
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="m004_conversation_refs_to_kv")
    db.conn.close()
    store = Store(path)
    assert store.kv.items("teams.references") == [] and store.db.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == 0
