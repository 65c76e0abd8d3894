"""The Teams welcome message, end to end over loopback: install events POSTed to the real serve app
(botbuilder's real `CloudAdapter`), the welcome card captured by the fake connector (which checks
it as Teams renders cards), its buttons pressed as the Teams client presses them, the question
answered by the Moveworks simulator.

Teams sends a personal install as a `conversationUpdate` (bot in `membersAdded`) and an
`installationUpdate` (`action: add`), close together and possibly to different replicas; Teams
re-sends an activity it got no timely answer for; an app upgrade comes as `add-upgrade`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web

from adapters.teams.welcome import NS_WELCOME
from bridge import texts
from bridge.process.config import DEFAULT_SUGGESTED_PROMPTS, Settings
from bridge.process.runtime import build_runtime
from bridge.process.server import make_app
from bridge.store import Store
from bridge.testing.bot_connector import ADAPTIVE_CARD, FakeActivity, card_actions
from tests.test_teams_e2e import Harness, channel_install, questions


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


def dm(h: Harness) -> str:
    return f"a:personal-{h.alice.aad_object_id}"


def welcomes(h: Harness, conversation_id: str) -> list[FakeActivity]:
    """The welcome cards shown in a conversation."""
    return [m for m in h.fake.in_conversation(conversation_id)
            if any(texts.TEAMS_WELCOME in str(card) for card in m.cards)]


def prompts_of(card: dict[str, Any]) -> list[str]:
    return [a["data"]["msteams"]["value"] for a in card_actions(card)]


async def test_a_personal_install_is_welcomed_once_with_the_prompts_as_buttons(h: Harness) -> None:
    install, update = h.alice.install(), h.alice.installation_update("add")
    assert (await h.post(install))[0] == 200
    assert (await h.post(update))[0] == 200
    assert (await h.post(install))[0] == 200  # Teams re-sends what it got no timely answer for
    shown = h.fake.in_conversation(dm(h))
    assert len(shown) == 1 and shown == welcomes(h, dm(h))
    welcome = shown[0]
    assert not welcome.text and len(welcome.attachments) == 1  # one card, nothing Teams would split
    assert welcome.attachments[0]["contentType"] == ADAPTIVE_CARD
    card = welcome.cards[0]
    blocks = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    assert blocks == [texts.TEAMS_WELCOME_TITLE, texts.TEAMS_WELCOME, texts.TEAMS_WELCOME_TRY]
    assert [a["title"] for a in card_actions(card)] == list(DEFAULT_SUGGESTED_PROMPTS)
    assert prompts_of(card) == list(DEFAULT_SUGGESTED_PROMPTS)
    assert all(a["type"] == "Action.Submit" and a["data"]["msteams"]["type"] == "imBack" for a in card_actions(card))
    assert h.fake.card_problems == [] and h.fake.refused() == []
    # posted into the chat, not as a reply to the install event
    posts = [c for c in h.fake.calls_for(dm(h)) if c.method == "POST"]
    assert [c.path for c in posts] == [f"/v3/conversations/{dm(h)}/activities"]
    # the install is still remembered for proactive messages
    assert await h.adapter.references.personal("aad-alice") is not None
    # after a restart, a late redelivery or an app upgrade welcomes nobody again
    await h.restart()
    await h.post(install)
    await h.post(h.alice.installation_update("add-upgrade"))
    assert len(h.fake.in_conversation(dm(h))) == 1


async def test_pressing_a_prompt_asks_it_as_the_person(h: Harness) -> None:
    await h.post(h.alice.install())
    card = welcomes(h, dm(h))[0]
    button = card_actions(card.cards[0])[0]
    status, _ = await h.post(h.alice.act({"id": dm(h), "conversationType": "personal"}, button, card.id))
    assert status == 201
    await h.drain()
    assert ("employee@example.com", DEFAULT_SUGGESTED_PROMPTS[0]) in questions(h.sim)
    answer = [m for m in h.fake.in_conversation(dm(h)) if m.stream]
    assert len(answer) == 1 and answer[0].stream_state == "final" and "password" in answer[0].text.lower()


async def test_the_prompts_come_from_the_setting(tmp_path: Path) -> None:
    prompts = ("Reset my MFA device", "Where do I find my payslip?")

    class Custom(Harness):
        def settings(self) -> Settings:
            return super().settings().with_(suggested_prompts=prompts)

    h = Custom(tmp_path)
    await h.start()
    try:
        await h.post(h.alice.installation_update("add"))
        assert prompts_of(welcomes(h, dm(h))[0].cards[0]) == list(prompts)
    finally:
        await h.stop()


async def test_a_reinstall_is_welcomed_again(h: Harness) -> None:
    await h.post(h.alice.install())
    await h.post(h.alice.installation_update("remove"))
    await h.post(h.alice.uninstall())
    await h.post(h.alice.installation_update("add"))
    await h.post(h.alice.install())
    assert len(welcomes(h, dm(h))) == 2


async def test_channels_and_group_chats_get_no_welcome(h: Harness) -> None:
    await h.post(channel_install(h.alice))
    group = h.alice.install(conversation_id="19:group-chat@thread.v2")
    group["conversation"].update(conversationType="groupChat", isGroup=True)
    await h.post(group)
    await h.post(h.alice.installation_update("add", conversation_id="19:group-chat@thread.v2") | {
        "conversation": group["conversation"]})
    assert h.fake.writes() == []


async def test_a_welcome_that_failed_goes_out_with_the_next_install_event(h: Harness) -> None:
    h.fake.fail_next("bad_gateway", method="POST")
    await h.post(h.alice.install())
    assert welcomes(h, dm(h)) == []
    await h.post(h.alice.installation_update("add"))
    assert len(welcomes(h, dm(h))) == 1
    await h.post(h.alice.install())
    assert len(welcomes(h, dm(h))) == 1


async def test_two_replicas_getting_both_install_events_at_once_welcome_once(h: Harness) -> None:
    """Two serve processes on one database (CONTRACT "Several processes"), each getting one of
    the two install events at the same moment, several times over."""
    assert h.runtime is not None
    settings = h.runtime.settings
    other = build_runtime(settings, store=Store(settings.db))
    runner = web.AppRunner(make_app(other), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    other_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        users = [h.alice, h.bob]
        async with aiohttp.ClientSession() as session:
            async def post(url: str, activity: dict[str, Any]) -> int:
                async with session.post(url + "/api/messages", json=activity) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(
                post(url, activity) for user in users
                for url, activity in ((h.url, user.install()), (other_url, user.installation_update("add")),
                                      (other_url, user.install()), (h.url, user.installation_update("add")))))
        assert set(statuses) == {200}
        for user in users:
            assert len(welcomes(h, f"a:personal-{user.aad_object_id}")) == 1
        assert h.runtime.store.sync.kv.namespace(NS_WELCOME).get(dm(h)).startswith("sent 0 ")
    finally:
        await runner.cleanup()
