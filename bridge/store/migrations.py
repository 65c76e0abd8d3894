"""Append-only, named schema migrations; the only place the schema is defined.

Never edit or reorder a migration that has shipped: add a new one at the end. Start-up applies
the pending ones and refuses a database that has migrations this code does not know (it was
written by a newer release).
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("moveworks_bridge")


@migrations(name="m001_initial")
def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE thread_links (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            workspace TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread TEXT NOT NULL,
            user_id TEXT NOT NULL,
            identity TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            address TEXT NOT NULL DEFAULT '{}',
            active INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            last_used_at REAL NOT NULL,
            UNIQUE (platform, workspace, channel, thread, user_id)
        )"""
    )
    db.execute("CREATE INDEX thread_links_conversation ON thread_links (conversation_id)")
    db.execute(
        """
        CREATE TABLE employees (
            platform TEXT NOT NULL,
            workspace TEXT NOT NULL,
            user_id TEXT NOT NULL,
            email TEXT,
            name TEXT,
            email_checked_at REAL,
            last_active_at REAL,
            PRIMARY KEY (platform, workspace, user_id)
        )"""
    )
    db.execute("CREATE INDEX employees_email ON employees (email)")
    db.execute("CREATE INDEX employees_active ON employees (last_active_at)")
    db.execute(
        """
        CREATE TABLE inbound_deliveries (
            platform TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (platform, delivery_id)
        )"""
    )
    db.execute("CREATE INDEX inbound_deliveries_age ON inbound_deliveries (received_at)")
    db.execute(
        """
        CREATE TABLE replies (
            id INTEGER PRIMARY KEY,
            link_id INTEGER NOT NULL REFERENCES thread_links (id),
            response_id TEXT,
            status TEXT NOT NULL,
            platform_message_ids TEXT NOT NULL DEFAULT '[]',
            started_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX replies_status ON replies (status)")
    db.execute(
        """
        CREATE TABLE shown_messages (
            message_id TEXT PRIMARY KEY,
            link_id INTEGER,
            source TEXT NOT NULL,
            shown_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE event_deliveries (
            event_id TEXT PRIMARY KEY,
            identity TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            detail TEXT,
            payload TEXT,
            claimed_at REAL,
            finished_at REAL
        )"""
    )
    db.execute("CREATE INDEX event_deliveries_status ON event_deliveries (status)")
    db.execute(
        """
        CREATE TABLE poll_checkpoints (
            identity TEXT PRIMARY KEY,
            last_event_id TEXT,
            started_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE conversation_refs (
            platform TEXT NOT NULL,
            ref_key TEXT NOT NULL,
            tenant TEXT,
            service_url TEXT,
            user_id TEXT,
            personal INTEGER NOT NULL DEFAULT 0,
            reference TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (platform, ref_key)
        )"""
    )
    db.execute("CREATE INDEX conversation_refs_user ON conversation_refs (platform, user_id, personal)")
    db.execute(
        """
        CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (namespace, key)
        )"""
    )


@migrations(name="m002_lookup_indexes")
def m002_lookup_indexes(db: Database) -> None:
    # Emails are matched case-insensitively; a NOCASE index lets those lookups use an index.
    db.execute("CREATE INDEX employees_email_nocase ON employees (email COLLATE NOCASE)")
    # "Is an answer streaming in this thread?" (checked by every event delivery).
    db.execute("CREATE INDEX replies_link_status ON replies (link_id, status)")
    db.execute("CREATE INDEX shown_messages_age ON shown_messages (shown_at)")


@migrations(name="m003_reply_checkpoints")
def m003_reply_checkpoints(db: Database) -> None:
    # What a restarted process needs to close a reply left open by a crash (an open native stream).
    db.execute("ALTER TABLE replies ADD COLUMN checkpoint TEXT")


@migrations(name="m004_conversation_refs_to_kv")
def m004_conversation_refs_to_kv(db: Database) -> None:
    # Platform-specific references leave the core schema: each adapter keeps its own in kv, in
    # '<platform>.references' (ref_key -> the stored JSON as is) and '<platform>.personal'
    # (user id -> ref_key of their personal chat; the newest one wins).
    db.execute(
        """
        INSERT INTO kv (namespace, key, value, updated_at)
        SELECT platform || '.references', ref_key, reference, updated_at FROM conversation_refs WHERE true
        ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"""
    )
    db.execute(
        """
        INSERT INTO kv (namespace, key, value, updated_at)
        SELECT platform || '.personal', user_id, ref_key, updated_at FROM (
            SELECT platform, user_id, ref_key, updated_at, ROW_NUMBER() OVER (
                PARTITION BY platform, user_id ORDER BY updated_at DESC, ref_key DESC) AS newest
            FROM conversation_refs WHERE personal = 1 AND user_id IS NOT NULL
        ) WHERE newest = 1
        ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"""
    )
    db.execute("DROP TABLE conversation_refs")


@migrations(name="m005_several_processes")
def m005_several_processes(db: Database) -> None:
    # Several processes share one database (CONTRACT.md, "Several processes"): who streams a
    # reply, who holds an event claim and until when.
    db.execute("ALTER TABLE replies ADD COLUMN owner TEXT")
    db.execute("ALTER TABLE event_deliveries ADD COLUMN owner TEXT")
    db.execute("ALTER TABLE event_deliveries ADD COLUMN lease_until REAL")
    # Running processes and their heartbeats.
    db.execute(
        """
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        )"""
    )
    # Named roles (the one active poller), held by one owner until they expire.
    db.execute(
        """
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    # The durable inbound queue: a row per acknowledged question until it is answered.
    # AUTOINCREMENT: ids are never reused, so they order items for ever and a stale worker's
    # done() can never delete a newer item. thread_key (the thread as one value) is what the
    # per-thread order compares, through its own index.
    db.execute(
        """
        CREATE TABLE inbound_queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            platform TEXT NOT NULL,
            dedupe_id TEXT NOT NULL,
            workspace TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread TEXT NOT NULL,
            thread_key TEXT NOT NULL,
            user_json TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            lease_until REAL,
            enqueued_at REAL NOT NULL,
            UNIQUE (platform, dedupe_id)
        )"""
    )
    db.execute("CREATE INDEX inbound_queue_thread ON inbound_queue (thread_key, id)")
    db.execute("CREATE INDEX inbound_queue_owner ON inbound_queue (owner)")
    # Write budgets shared by every process (token buckets).
    db.execute(
        """
        CREATE TABLE budgets (
            key TEXT PRIMARY KEY,
            tokens REAL NOT NULL,
            updated_at REAL NOT NULL,
            blocked_until REAL NOT NULL DEFAULT 0
        )"""
    )
