"""Under faults the store keeps its word: a database that cannot be used now raises
`StoreUnavailable` (never data in the message), readiness turns 503 with a reason and recovers by
itself, a deleted or replaced file is noticed, and an unwritable database stops start-up with one
line naming BRIDGE_DB. Real SQLite throughout: `PRAGMA max_page_count` fills the "disk" exactly as
a full file system does (SQLITE_FULL), and raising it frees the space again."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.errors import ConfigError, StoreUnavailable
from bridge.models import ThreadKey
from bridge.process.config import Settings
from bridge.store import Store

SECRET = "secret-payload-of-a-user"
THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")


def fill(store: Store) -> StoreUnavailable:
    """Fill the database's "disk": no new page can be allocated; return the error a write got."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(10_000):
        try:
            store.kv.set("test.fill", f"k{i}", SECRET * 40)
        except StoreUnavailable as exc:
            return exc
    raise AssertionError("the database never filled up")


def free(store: Store) -> None:
    store.db.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_raises_store_unavailable_and_readiness_recovers_after_a_write(tmp_path, caplog):
    store = Store(tmp_path / "bridge.db")
    assert store.health() == (True, "ready")

    error = fill(store)
    assert "database or disk is full" in str(error)
    assert SECRET not in str(error) and "INSERT" not in str(error)
    with pytest.raises(StoreUnavailable, match="database or disk is full"):
        store.inbound.claim("slack", "Ev-" + "x" * 4000)  # a question's dedupe row cannot be kept
    assert store.health() == (False, "database not writable")
    assert not store.ready
    assert store.kv.get("test.fill", "k0") == SECRET * 40  # reads still work
    assert [r.levelname for r in caplog.records if "BRIDGE_DB" in r.getMessage()] == ["ERROR"]  # once

    free(store)
    assert store.health() == (False, "database not writable")  # nothing has been written yet
    assert store.inbound.claim("slack", "Ev-after")
    assert store.health() == (True, "ready")
    store.close()


def test_readiness_recovers_by_itself_once_space_is_freed(tmp_path):
    store = Store(tmp_path / "bridge.db")
    fill(store)
    store.probe_interval = 0  # probe on every health() call instead of every 10 s
    free(store)
    assert store.health() == (True, "ready")  # its own small write succeeded: no traffic needed
    assert store.kv.items("bridge.store") == []  # and it left nothing behind
    store.close()


def test_constraint_errors_are_not_translated_and_do_not_touch_readiness(tmp_path):
    store = Store(tmp_path / "bridge.db")
    with pytest.raises(sqlite3.IntegrityError):
        store.replies.start(12345)  # no such thread link (foreign key)
    assert store.health() == (True, "ready")
    store.close()


def test_a_deleted_database_file_is_noticed_and_logged_once(tmp_path, caplog):
    path = tmp_path / "bridge.db"
    store = Store(path)
    store.links.insert(THREAD, "U1", "", "conv_1", {})
    assert store.health() == (True, "ready")

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.ERROR):
        assert store.health() == (False, "database file replaced or deleted")
        assert store.health() == (False, "database file replaced or deleted")
        assert not store.ready
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "BRIDGE_DB" in r.getMessage()]
    assert len(errors) == 1
    store.close()


def test_a_replaced_database_file_is_noticed(tmp_path):
    path = tmp_path / "bridge.db"
    store = Store(path)
    other = Store(tmp_path / "restored.db")  # e.g. a backup restored over the live file
    other.close()
    os.replace(tmp_path / "restored.db", path)
    assert store.health() == (False, "database file replaced or deleted")
    store.close()


def test_an_in_memory_store_is_always_fine():
    store = Store(":memory:")
    assert store.health() == (True, "ready")
    store.close()


# --- start-up ---------------------------------------------------------------------------------


def _wal_is_a_directory(tmp_path: Path) -> Path:
    """A migrated database whose write-ahead log cannot be created (as with a read-only
    directory, but it holds for root too)."""
    path = tmp_path / "bridge.db"
    Store(path).close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Path(f"{path}-wal").mkdir()
    return path


def _journal_is_a_directory(tmp_path: Path) -> Path:
    """A new database whose journal cannot be created."""
    path = tmp_path / "bridge.db"
    Path(f"{path}-journal").mkdir()
    return path


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.db"
    path.write_bytes(b"these bytes are not a SQLite database " * 40)
    return path


def _a_directory(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.db"
    path.mkdir()
    return path


UNWRITABLE = [
    pytest.param(_wal_is_a_directory, id="wal-cannot-be-created"),
    pytest.param(_journal_is_a_directory, id="journal-cannot-be-created"),
    pytest.param(_not_a_database, id="not-a-database"),
    pytest.param(_a_directory, id="path-is-a-directory"),
]


@pytest.fixture
def restore_permissions(tmp_path):
    yield
    tmp_path.chmod(0o755)


@pytest.mark.parametrize("situation", UNWRITABLE)
def test_an_unusable_database_stops_start_up_with_one_line_naming_bridge_db(tmp_path, situation,
                                                                         restore_permissions):
    path = situation(tmp_path)
    with pytest.raises(ConfigError) as info:
        Store(path)
    message = str(info.value)
    assert message.startswith("BRIDGE_DB: cannot open the database for writing (")
    assert "\n" not in message
    assert "writable" in message or "point BRIDGE_DB" in message  # what to fix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("situation", [_wal_is_a_directory, _not_a_database])
def test_serve_with_an_unusable_database_exits_with_one_line_and_no_traceback(tmp_path, situation):
    path = situation(tmp_path)
    env = {
        **os.environ,
        "BRIDGE_DB": str(path),
        "PORT": str(_free_port()),
        "BRIDGE_POLLER": "off",
        "MOVEWORKS_BASE_URL": "http://127.0.0.1:9",
        "MOVEWORKS_ASSISTANT_NAME": "moveworks-bridge-dev",
        "MOVEWORKS_API_KEY": "sim-key-not-to-be-printed",
        "SLACK_BOT_TOKEN": "xoxb-1-2-secret",
        "SLACK_SIGNING_SECRET": "signing-secret-value",
    }
    result = subprocess.run([sys.executable, "-m", "bridge", "serve"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("moveworks-bridge: configuration error: BRIDGE_DB: ")
    for secret in ("sim-key-not-to-be-printed", "xoxb-1-2-secret", "signing-secret-value"):
        assert secret not in result.stderr + result.stdout


# --- /readyz ----------------------------------------------------------------------------------


async def test_readyz_answers_503_while_the_disk_is_full_and_200_once_a_write_succeeds(tmp_path):
    from bridge.process.runtime import build_runtime
    from bridge.process.server import make_app

    settings = Settings(db=str(tmp_path / "bridge.db"), moveworks_base_url="http://127.0.0.1:9",
                        moveworks_assistant_name="moveworks-bridge-dev", moveworks_api_key="sim-key")
    runtime = build_runtime(settings, adapters=())
    client = TestClient(TestServer(make_app(runtime)))
    await client.start_server()
    try:
        response = await client.get("/readyz")
        assert response.status == 200 and await response.json() == {"status": "ready"}

        fill(runtime.store.sync)
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"status": "not ready", "reason": "database not writable"}
        assert (await client.get("/healthz")).status == 200  # alive: only readiness changes

        free(runtime.store.sync)
        await runtime.store.inbound.claim("slack", "Ev-after")
        response = await client.get("/readyz")
        assert response.status == 200 and await response.json() == {"status": "ready"}

        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.db}{suffix}").unlink(missing_ok=True)
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"status": "not ready", "reason": "database file replaced or deleted"}
    finally:
        await client.close()
        await runtime.aclose()
