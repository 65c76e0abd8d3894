"""The SQLite store: migrations, restart, races between processes, idempotency records."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from bridge.errors import ConfigError
from bridge.models import ChatUser, ThreadKey
from bridge.store import Store

THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")


def test_migrations_apply_once_and_twice_is_a_no_op(tmp_path):
    path = tmp_path / "b.db"
    first = Store(path)
    schema = first.db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    first.close()
    again = Store(path)
    assert again.applied_migrations() == ["m001_initial", "m002_lookup_indexes", "m003_reply_checkpoints"]
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


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "b.db"
    store = Store(path)
    store.insert_link(THREAD, "U1", "a@example.com", "conv_1", {"channel": "C1"})
    store.claim_inbound("slack", "Ev1")
    store.set_checkpoint("a@example.com", "evt_5")
    store.save_reference("teams", "19:abc", {"serviceUrl": "http://x"}, tenant="t1", personal=True, user_id="u1")
    store.close()
    store = Store(path)
    link = store.get_link(THREAD, "U1")
    assert link and link.conversation_id == "conv_1" and link.address == {"channel": "C1"}
    assert store.claim_inbound("slack", "Ev1") is False
    assert store.get_checkpoint("a@example.com")[0] == "evt_5"
    assert store.personal_reference("teams", "u1") == ("19:abc", {"serviceUrl": "http://x"})


def test_concurrent_first_messages_from_two_processes_keep_one_conversation(tmp_path):
    path = tmp_path / "b.db"
    Store(path).close()
    results = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        store = Store(path)  # its own connection, like a second process
        barrier.wait()
        results.append(store.insert_link(THREAD, "U1", "", f"conv_{n}", {}).conversation_id)
        store.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1  # every racer sees the single winner
    store = Store(path)
    assert store.db.execute("SELECT COUNT(*) FROM thread_links").fetchone()[0] == 1


def test_two_people_in_one_thread_have_separate_links_and_an_inactive_link_is_replaced():
    store = Store(":memory:")
    a = store.insert_link(THREAD, "U1", "", "conv_a", {})
    b = store.insert_link(THREAD, "U2", "", "conv_b", {})
    assert a.conversation_id != b.conversation_id
    store.deactivate_link(a.id)
    assert store.insert_link(THREAD, "U1", "", "conv_new", {}).conversation_id == "conv_new"
    assert store.thread_has_links(THREAD)


def test_event_claims_allow_redelivery_after_a_crash_but_never_after_sent():
    store = Store(":memory:")
    assert store.claim_event("evt_1", "a", "conv", "{}")
    assert store.claim_event("evt_1", "a", "conv", "{}")  # a crash left it claimed: claim again
    store.finish_event("evt_1", "sent")
    assert not store.claim_event("evt_1", "a", "conv", "{}")
    assert store.pending_events() == []


def test_checkpoints_never_move_backwards():
    store = Store(":memory:")
    store.set_checkpoint("a", "evt_0009")
    store.set_checkpoint("a", "evt_0005")
    assert store.get_checkpoint("a")[0] == "evt_0009"


def test_employee_upserts_keep_known_email():
    store = Store(":memory:")
    store.save_employee(ChatUser("slack", "T1", "U1", email="A@Example.com"))
    store.save_employee(ChatUser("slack", "T1", "U1", name="Ann"), active=True)
    employee = store.get_employee("slack", "T1", "U1")
    assert employee.email == "A@Example.com" and employee.name == "Ann"
    assert store.identities()[0][0] == "a@example.com"


def test_sql_is_parameterised_against_hostile_ids():
    store = Store(":memory:")
    hostile = ThreadKey("slack", "T1'; DROP TABLE thread_links; --", "C1", "x")
    store.insert_link(hostile, "U1' OR '1'='1", "", "conv_1", {})
    assert store.get_link(hostile, "U1' OR '1'='1").conversation_id == "conv_1"
    assert store.get_link(hostile, "U2") is None


def test_history_is_pruned_but_mappings_are_kept():
    now = [1_000_000.0]
    store = Store(":memory:", clock=lambda: now[0])
    link = store.insert_link(THREAD, "U1", "", "conv_1", {})
    reply = store.start_reply(link.id)
    store.finish_reply(reply, "final")
    store.mark_shown("msg_1", link.id, "stream")
    store.claim_event("evt_1", "", "conv_1", "{}")
    store.finish_event("evt_1", "sent")
    store.claim_event("evt_2", "", "conv_1", "{}")  # still pending: never pruned
    store.kv_set("teams.feedback", "a", "{}")
    now[0] += 31 * 24 * 3600
    assert store.prune_history() == 3
    assert store.kv_prune("teams.feedback") == 1
    assert store.get_link(THREAD, "U1") is not None
    assert not store.was_shown("msg_1")
    assert [e["event_id"] for e in store.pending_events()] == ["evt_2"]
