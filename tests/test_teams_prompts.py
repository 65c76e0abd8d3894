"""Teams prompt starters, and Stop during an answer in a personal chat.

Prompt starters are the app package's `bots[].commandLists`, built by `moveworks-bridge
teams-package` from BRIDGE_SUGGESTED_PROMPTS (the setting Slack's Messages tab and the Teams
welcome card use too). The repository carries no copy of Microsoft's manifest JSON schema, so
the package is checked against the limits that schema (v1.21, OfficeDev/microsoft-teams-app-schema
"GA 1.21") sets on what the package fills in, written out here.

Stop: Teams' Stop button ends a native stream on Teams' side; the bot learns it from the 403
"Content stream was canceled by user" its next streaming request gets (teams.md §1.1/§1.4). The
Moveworks request must end then, not when Moveworks next writes, nothing more may be written into
the stopped message, and the next question must be answered normally."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.teams.package import MANIFEST_LIMITS, build_package, check_manifest, manifest
from bridge.process.cli import main as cli
from bridge.process.config import DEFAULT_SUGGESTED_PROMPTS
from bridge.testing.waiting import until
from tests.test_teams_e2e import Harness, questions

BOT = "00000000-0000-0000-0000-0000000000ab"
# Teams app manifest schema v1.21 (the version the package declares): maxItems / maxLength.
SCHEMA_1_21 = {"commandLists": 3, "commands": 10, "command.title": 128, "command.description": 4000,
               "resourceSpecific": 16, "name.short": 30, "name.full": 100, "description.short": 80,
               "description.full": 4000, "developer.name": 32}


def read_manifest(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def within_schema_limits(data: dict[str, Any]) -> None:
    """What schema 1.21 requires of the fields the package fills (independently of the package's
    own `check_manifest`)."""
    assert data["$schema"].endswith("/v1.21/MicrosoftTeams.schema.json") and data["manifestVersion"] == "1.21"
    for key in ("manifestVersion", "version", "id", "developer", "name", "description", "icons", "accentColor"):
        assert key in data, f"{key} is required"
    assert len(data["name"]["short"]) <= SCHEMA_1_21["name.short"]
    assert len(data["name"]["full"]) <= SCHEMA_1_21["name.full"]
    assert len(data["description"]["short"]) <= SCHEMA_1_21["description.short"]
    assert len(data["description"]["full"]) <= SCHEMA_1_21["description.full"]
    assert len(data["developer"]["name"]) <= SCHEMA_1_21["developer.name"]
    (bot,) = data["bots"]
    assert set(bot["scopes"]) <= {"team", "personal", "groupChat"}
    lists = bot.get("commandLists", [])
    assert len(lists) <= SCHEMA_1_21["commandLists"]
    for command_list in lists:
        assert command_list["scopes"] and set(command_list["scopes"]) <= set(bot["scopes"])
        assert len(command_list["commands"]) <= SCHEMA_1_21["commands"]
        for command in command_list["commands"]:
            assert set(command) == {"title", "description"}, "schema 1.21 commands have no other fields"
            assert 0 < len(command["title"]) <= SCHEMA_1_21["command.title"]
            assert 0 < len(command["description"]) <= SCHEMA_1_21["command.description"]
    rsc = data.get("authorization", {}).get("permissions", {}).get("resourceSpecific", [])
    assert len(rsc) <= SCHEMA_1_21["resourceSpecific"]
    assert all(set(p) == {"name", "type"} and p["type"] in ("Application", "Delegated") for p in rsc)
    if rsc:  # RSC needs webApplicationInfo: the app registration's id, and some resource string
        assert data["webApplicationInfo"]["id"] == bot["botId"] and data["webApplicationInfo"]["resource"]


def test_the_package_limits_are_schema_1_21s() -> None:
    assert MANIFEST_LIMITS == SCHEMA_1_21


def test_the_prompt_starters_are_the_suggested_prompts(tmp_path: Path) -> None:
    data = read_manifest(build_package(tmp_path / "app.zip", BOT))
    within_schema_limits(data)
    (bot,) = data["bots"]
    assert bot["commandLists"] == [{"scopes": ["personal"], "commands": [
        {"title": p, "description": p} for p in DEFAULT_SUGGESTED_PROMPTS]}]
    # the thread-context permission, for Graph reads of a reply chain
    assert data["authorization"]["permissions"]["resourceSpecific"] == [
        {"name": "ChannelMessage.Read.Group", "type": "Application"}]
    assert data["webApplicationInfo"]["id"] == BOT


def test_teams_package_reads_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    long = "Where can I see the status of the hardware request I opened last week for my team?"  # 84
    monkeypatch.setenv("TEAMS_APP_ID", BOT)
    monkeypatch.setenv("BRIDGE_SUGGESTED_PROMPTS", f" Reset my MFA ; {long};Reset my MFA")
    assert cli(["teams-package", "--out", str(tmp_path / "a.zip")]) == 0
    data = read_manifest(tmp_path / "a.zip")
    within_schema_limits(data)
    titles = [c["title"] for c in data["bots"][0]["commandLists"][0]["commands"]]
    assert titles == ["Reset my MFA", long], "whole prompts (Teams puts the title into the compose box)"
    assert "Reset my MFA" in capsys.readouterr().out
    # --prompts wins; --no-thread-context leaves the permission (and webApplicationInfo) out
    assert cli(["teams-package", "--out", str(tmp_path / "b.zip"), "--prompts", "Order a laptop",
                "--no-thread-context"]) == 0
    data = read_manifest(tmp_path / "b.zip")
    within_schema_limits(data)
    assert data["bots"][0]["commandLists"][0]["commands"] == [{"title": "Order a laptop",
                                                              "description": "Order a laptop"}]
    assert "authorization" not in data and "webApplicationInfo" not in data
    # a setting the bridge would refuse is refused here too, with the variable named
    monkeypatch.setenv("BRIDGE_SUGGESTED_PROMPTS", ";".join(f"prompt {n}" for n in range(5)))
    assert cli(["teams-package", "--out", str(tmp_path / "c.zip")]) == 2
    assert "BRIDGE_SUGGESTED_PROMPTS" in capsys.readouterr().err
    assert not (tmp_path / "c.zip").exists()


def test_what_the_schema_would_refuse_is_refused() -> None:
    good = manifest(BOT)
    check_manifest(good)
    too_many = json.loads(json.dumps(good))
    too_many["bots"][0]["commandLists"][0]["commands"] = [{"title": f"p{n}", "description": "d"} for n in range(11)]
    long_title = json.loads(json.dumps(good))
    long_title["bots"][0]["commandLists"][0]["commands"][0]["title"] = "x" * 129
    no_description = json.loads(json.dumps(good))
    no_description["bots"][0]["commandLists"][0]["commands"][0]["description"] = ""
    for bad in (too_many, long_title, no_description):
        with pytest.raises(ValueError):
            check_manifest(bad)
    with pytest.raises(ValueError, match="developer.name"):
        manifest(BOT, developer="A developer name longer than 32 chars")


# --- Stop in a personal chat --------------------------------------------------------------------


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def test_stop_ends_the_moveworks_request_at_once_and_the_next_question_is_answered(h: Harness) -> None:
    # Moveworks writes every 2.5 s: Stop must not wait for its next chunk.
    h.sim.script_answer(text=" ".join(f"word{i}" for i in range(60)), match="essay", chunks=6, delay=2.5)
    h.fake.fail_next("stream_canceled", stream_type="streaming")  # the person pressed Stop
    activity = h.alice.personal("write me an essay")
    conv = activity["conversation"]["id"]
    await h.post(activity)
    stop = await until(lambda: next((c for c in h.fake.calls_for(conv) if c.status == 403), None), timeout=15,
                       what="the Stop")
    store = h.runtime.store.sync  # type: ignore[union-attr]

    def status() -> str | None:
        row = store.db.execute("SELECT status FROM replies ORDER BY rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None

    await until(lambda: status() == "canceled", timeout=5, what="the answer to end")
    assert time.monotonic() - stop.at < 1.0, "ended before Moveworks wrote again (it writes every 2.5 s)"
    await h.drain()
    calls = h.fake.calls_for(conv)
    assert calls[calls.index(stop) + 1:] == [], "nothing written into the stopped message"
    assert h.fake.refused(conv) == [stop]
    # the next question gets a fresh stream and its full answer
    h.sim.script_answer(text="Your laptop ships **on Monday**.", match="laptop")
    await h.post(h.alice.personal("when does my laptop ship?"))
    await h.drain()
    latest = h.fake.in_conversation(conv)[-1]
    assert latest.stream and latest.stream_state == "final" and latest.text == "Your laptop ships **on Monday**."
    assert [q for _, q in questions(h.sim)] == ["write me an essay", "when does my laptop ship?"]
