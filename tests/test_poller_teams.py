"""The events poller delivering into Microsoft Teams: simulator -> poller -> the real Teams adapter
(botbuilder's `CloudAdapter`) -> the fake Bot Framework connector, all over loopback HTTP.

Uses the Teams end-to-end harness (tests/test_teams_e2e.py) with the poller built in, as `serve`
builds it. The poller's background loop is not started: each test drives the polls itself with
`poller.poll_identity(...)`, so what one poll delivered is exact and nothing races the asserts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web

from bridge.models import ThreadKey
from bridge.process.config import Settings
from bridge.process.runtime import build_runtime
from bridge.process.server import make_app
from bridge.store import Store
from bridge.testing.bot_connector import TENANT, streaminfo_of
from tests.test_teams_e2e import Harness

SIM_IDENTITY = "employee@example.com"  # the simulator's api key "sim-key" acts as this employee
CHANNEL = "19:general@thread.tacv2"
ALICE_DM = "a:personal-aad-alice"  # the personal chat TeamsUser.personal() uses for alice


class PollingHarness(Harness):
    """The Teams harness with the poller built in (`build_runtime(..., poller=True)`)."""

    def __init__(self, tmp_path: Path, *, jwt_keys: tuple[str, str] | None = None, **options: Any) -> None:
        super().__init__(tmp_path, **options)
        self.jwt_keys = jwt_keys
        if jwt_keys is not None:
            self.sim.config.jwt_public_key = jwt_keys[1]
            self.sim.config.jwt_issuer = "bridge-test"
            self.sim.config.jwt_audience = "moveworks-test"

    def settings(self) -> Settings:
        settings = replace(super().settings(), poller=True)
        if self.jwt_keys is not None:
            settings = replace(settings, moveworks_jwt_private_key=self.jwt_keys[0],
                               moveworks_jwt_issuer="bridge-test", moveworks_jwt_audience="moveworks-test",
                               moveworks_token_url=self.sim.token_url)
        return settings

    async def boot(self) -> None:
        settings = self.settings()
        self.runtime = build_runtime(settings, store=Store(settings.db), poller=True)

        async def loop_off() -> None:  # the tests poll explicitly (see the module docstring)
            return None

        self.runtime.poller.start = loop_off  # type: ignore[method-assign]
        self.runner = web.AppRunner(make_app(self.runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    @property
    def store(self) -> Store:
        """The synchronous view of the runtime's (SQLite) store, for assertions."""
        assert self.runtime is not None
        return self.runtime.store.sync  # type: ignore[attr-defined]

    async def poll(self, identity: str | None = None) -> int:
        assert self.runtime is not None
        return await self.runtime.poller.poll_identity(identity)

    async def ask(self, activity: dict[str, Any]) -> dict[str, Any]:
        status, _ = await self.post(activity)
        assert status in (200, 201)
        await self.drain()
        return activity


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[PollingHarness]:
    harness = PollingHarness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


def chain_thread(first: dict[str, Any]) -> ThreadKey:
    return ThreadKey("teams", TENANT, CHANNEL, first["id"])


def user_texts(h: PollingHarness, identity: str, conversation_id: str) -> list[str]:
    return [m["content"]["plain_text"]["text"]
            for m in h.sim.state.user(identity).conversation_messages(conversation_id)
            if m["actor"] == "USER"]


def post_calls(h: PollingHarness, conversation_id: str) -> list[Any]:
    return [c for c in h.fake.calls_for(conversation_id) if c.method == "POST"]


# --- 1. an event in a conversation mapped to a channel reply chain ----------------------------------


async def test_event_is_posted_into_the_mapped_reply_chain_rendered_like_an_answer(h: PollingHarness) -> None:
    first = await h.ask(h.alice.channel("is my payroll ticket done?"))
    chain = first["conversation"]["id"]
    link = h.store.links.get(chain_thread(first), "aad-alice")
    assert link is not None and link.active
    event = h.sim.inject_event(
        SIM_IDENTITY, "Update: your **payroll ticket** was resolved.", conversation_id=link.conversation_id,
        citations=[{"title": "Payroll FAQ", "url": "https://intranet.example.com/payroll"}],
        actions=[{"type": "URL_ACTION", "label": "Open ticket", "url": "https://it.example.com/INC-7"}],
    )
    calls_before = len(h.fake.calls)

    assert await h.poll() == 1

    messages = h.fake.in_conversation(chain)
    assert len(messages) == 3, "the live answer, then the event's text and its card"
    posted, card_message = messages[-2:]
    assert "your **payroll ticket** was resolved." in posted.text and posted.text.endswith("[1]")
    # on the wire: two POSTs into the reply chain itself (not as a reply to some activity id)
    new_calls = h.fake.calls[calls_before:]
    assert [(c.method, c.path, c.status) for c in new_calls] == [
        ("POST", f"/v3/conversations/{chain}/activities", 201)] * 2
    body, card_body = new_calls[0].json, new_calls[1].json
    assert body["type"] == "message" and body["textFormat"] == "markdown"
    assert streaminfo_of(body) is None, "no streaming in channels"
    # rendered like a live answer: AI label + citation claim and feedback loop on the text...
    [ai] = [e for e in body["entities"] if e.get("@type") == "Message"]
    assert ai["additionalType"] == ["AIGeneratedContent"]
    assert [(c["position"], c["appearance"]["name"], c["appearance"]["url"]) for c in ai["citation"]] == [
        (1, "Payroll FAQ", "https://intranet.example.com/payroll")]
    assert "attachments" not in body
    assert body["channelData"]["feedbackLoopEnabled"] is True
    # ...and the actions card as a message of its own, with no second label or 👍/👎
    [card] = card_body["attachments"]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open ticket", "url": "https://it.example.com/INC-7"}]
    assert not card_body.get("text") and not card_message.ai_label and not card_message.feedback_buttons
    assert h.store.events.status(event["event_id"]) == "sent"
    # the feedback buttons of the event's message reach Moveworks
    status, text = await h.post(h.alice.feedback(first["conversation"], posted.id, "like"))
    assert (status, text) == (200, "")
    assert len(h.sim.state.feedback) == 1
    # later polls post nothing more
    assert await h.poll() == 0
    assert len(h.fake.in_conversation(chain)) == 3


# --- 2. proactive DM through the stored personal-chat reference ------------------------------------


async def test_proactive_dm_uses_the_stored_personal_chat_and_maps_the_conversation(h: PollingHarness) -> None:
    hello = await h.ask(h.alice.personal("hello bot"))  # alice is the one person the bridge knows
    assert hello["conversation"]["id"] == ALICE_DM
    dm_link = h.store.links.get(ThreadKey("teams", TENANT, ALICE_DM, ""), "aad-alice")
    assert dm_link is not None
    earlier_conversation = dm_link.conversation_id
    event = h.sim.inject_event(SIM_IDENTITY, "Approval needed: Bob's **expense report**")
    assert event["conversation_id"] != earlier_conversation
    calls_before = len(h.fake.calls)

    assert await h.poll() == 1

    assert h.fake.created == [], "the stored personal reference is used: no new chat"
    messages = h.fake.in_conversation(ALICE_DM)
    assert len(messages) == 2
    assert messages[-1].text == "Approval needed: Bob's **expense report**"
    new_calls = h.fake.calls[calls_before:]
    assert [(c.method, c.path) for c in new_calls] == [("POST", f"/v3/conversations/{ALICE_DM}/activities")]
    assert streaminfo_of(new_calls[0].json) is None, "a proactive message is posted, not streamed"
    # the personal chat now continues the event's conversation
    links = h.store.links.for_conversation(event["conversation_id"])
    assert [(link.thread.channel, link.user_id, link.active) for link in links] == [(ALICE_DM, "aad-alice", True)]
    await h.ask(h.alice.personal("approve it please"))
    assert user_texts(h, SIM_IDENTITY, event["conversation_id"]) == ["approve it please"]
    assert user_texts(h, SIM_IDENTITY, earlier_conversation) == ["hello bot"]
    assert len(h.fake.in_conversation(ALICE_DM)) == 3, "the answer to the reply, in the same chat"
    assert await h.poll() == 0


# --- 3. proactive DM without a personal reference: create_conversation -----------------------------


async def test_proactive_dm_creates_a_personal_chat_when_none_is_stored(h: PollingHarness) -> None:
    first = await h.ask(h.alice.channel("hello from a channel"))  # alice never opened a personal chat
    assert h.store.kv.get("teams.personal", "aad-alice") is None
    event = h.sim.inject_event(SIM_IDENTITY, "Your laptop **shipped** today.")
    calls_before = len(h.fake.calls)

    assert await h.poll() == 1

    [created] = h.fake.created
    assert created["request"]["members"] == [{"id": "29:alice"}]
    assert created["request"]["channelData"] == {"tenant": {"id": TENANT}}
    chat = created["response"]["id"]
    new_calls = h.fake.calls[calls_before:]
    assert [(c.method, c.path, c.status) for c in new_calls] == [
        ("POST", "/v3/conversations", 201),
        ("POST", f"/v3/conversations/{chat}/activities", 201),
    ], "create_conversation, then the message"
    assert [m.text for m in h.fake.in_conversation(chat)] == ["Your laptop **shipped** today."]
    assert len(h.fake.in_conversation(first["conversation"]["id"])) == 1, "nothing new in the channel"
    links = h.store.links.for_conversation(event["conversation_id"])
    assert [(link.thread.channel, link.user_id) for link in links] == [(chat, "aad-alice")]
    # a reply in the new chat continues the event's conversation
    await h.ask(h.alice.personal("great, thanks", conversation_id=chat))
    assert user_texts(h, SIM_IDENTITY, event["conversation_id"]) == ["great, thanks"]
    # the new chat's reference was stored: the next notification goes there without a new chat
    second = h.sim.inject_event(SIM_IDENTITY, "Your monitor shipped too.")
    assert await h.poll() == 1
    assert len(h.fake.created) == 1
    assert h.fake.in_conversation(chat)[-1].text == "Your monitor shipped too."
    assert h.store.events.status(second["event_id"]) == "sent"


# --- 4. a permanent error: 403 MessageWritesBlocked ------------------------------------------------


async def test_writes_blocked_deactivates_the_chain_and_the_event_goes_by_dm(h: PollingHarness) -> None:
    """delivery.py: a permanent platform error deactivates the link and the next route (a DM to
    the employee) is tried; the event ends 'sent' and is never retried."""
    first = await h.ask(h.alice.channel("soon the bot is blocked here"))
    chain = first["conversation"]["id"]
    link = h.store.links.get(chain_thread(first), "aad-alice")
    assert link is not None
    event = h.sim.inject_event(SIM_IDENTITY, "Your access request was **approved**.",
                               conversation_id=link.conversation_id)
    h.fake.fail_next("writes_blocked", count=1)

    assert await h.poll() == 1

    [blocked] = [c for c in post_calls(h, chain) if c.status == 403]
    assert blocked.path == f"/v3/conversations/{chain}/activities"
    assert len(h.fake.in_conversation(chain)) == 1, "only the earlier live answer"
    assert not h.store.links.get(chain_thread(first), "aad-alice").active
    assert h.store.kv.get("teams.references", chain) is None
    [created] = h.fake.created
    chat = created["response"]["id"]
    assert [m.text for m in h.fake.in_conversation(chat)] == ["Your access request was **approved**."]
    assert h.store.events.status(event["event_id"]) == "sent"
    assert h.store.events.pending("service") == []
    calls_after = len(h.fake.calls)
    assert await h.poll() == 0
    assert len(h.fake.calls) == calls_after, "nothing retried"


async def test_writes_blocked_everywhere_skips_the_event_once(h: PollingHarness) -> None:
    """With the DM refused too (403 on create_conversation) there is nowhere to deliver: the event
    is skipped with a reason, not retried forever."""
    first = await h.ask(h.alice.channel("blocked everywhere"))
    link = h.store.links.get(chain_thread(first), "aad-alice")
    assert link is not None
    event = h.sim.inject_event(SIM_IDENTITY, "Nobody can see this", conversation_id=link.conversation_id)
    h.fake.fail_next("writes_blocked", count=2)  # the chain post, then POST /v3/conversations

    assert await h.poll() == 0

    assert [(c.path, c.status) for c in h.fake.calls if c.status == 403] == [
        (f"/v3/conversations/{first['conversation']['id']}/activities", 403),
        ("/v3/conversations", 403),
    ]
    assert h.store.events.status(event["event_id"]) == "skipped"
    assert h.store.events.pending("service") == []
    assert not h.store.links.get(chain_thread(first), "aad-alice").active
    assert not any("Nobody can see this" in m.text for m in h.fake.messages())
    calls_after = len(h.fake.calls)
    for _ in range(3):
        assert await h.poll() == 0
    assert len(h.fake.calls) == calls_after, "the skipped event is not retried"


# --- 5. restart: a new runtime and poller on the same database -------------------------------------


async def test_restart_posts_nothing_twice(h: PollingHarness) -> None:
    first = await h.ask(h.alice.channel("remember me"))
    chain = first["conversation"]["id"]
    link = h.store.links.get(chain_thread(first), "aad-alice")
    assert link is not None
    in_chain = h.sim.inject_event(SIM_IDENTITY, "Chain update one", conversation_id=link.conversation_id)
    direct = h.sim.inject_event(SIM_IDENTITY, "A brand-new notification")  # DM via create_conversation
    assert await h.poll() == 2
    [created] = h.fake.created
    chat = created["response"]["id"]
    assert [m.text for m in h.fake.in_conversation(chain)][1:] == ["Chain update one"]
    assert [m.text for m in h.fake.in_conversation(chat)] == ["A brand-new notification"]
    old_poller = h.runtime.poller
    writes_before = len(h.fake.writes())

    await h.restart()

    assert h.runtime.poller is not old_poller
    assert await h.poll() == 0
    assert len(h.fake.writes()) == writes_before, "nothing re-posted after the restart"
    assert h.store.events.status(in_chain["event_id"]) == "sent"
    assert h.store.events.status(direct["event_id"]) == "sent"
    # new events after the restart still land once each, through the stored references
    again = h.sim.inject_event(SIM_IDENTITY, "Chain update two", conversation_id=link.conversation_id)
    assert await h.poll() == 1
    assert await h.poll() == 0
    assert [m.text for m in h.fake.in_conversation(chain)][1:] == ["Chain update one", "Chain update two"]
    assert [m.text for m in h.fake.in_conversation(chat)] == ["A brand-new notification"]
    assert len(h.fake.created) == 1
    assert h.store.events.status(again["event_id"]) == "sent"


# --- user_jwt: every event has an owner ------------------------------------------------------------


async def test_user_jwt_events_go_to_their_owner_on_teams(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    h = PollingHarness(tmp_path, auth="user_jwt", jwt_keys=(private, public))
    await h.start()
    try:
        first = await h.ask(h.alice.channel("alice asks"))
        await h.ask(h.bob.channel("bob asks", root_id=first["id"]))
        chain = first["conversation"]["id"]
        alice_link = h.store.links.get(chain_thread(first), "aad-alice")
        assert alice_link is not None and alice_link.identity == "alice@example.com"
        # two people: an unmapped event still has an owner in user_jwt mode
        for_alice = h.sim.inject_event("alice@example.com", "Alice: your badge is ready",
                                       conversation_id=alice_link.conversation_id)
        for_bob = h.sim.inject_event("bob@example.com", "Bob: your **VPN token** expires soon")

        assert await h.poll("bob@example.com") == 1
        [created] = h.fake.created
        assert created["request"]["members"] == [{"id": "29:bob"}]
        bob_chat = created["response"]["id"]
        assert [m.text for m in h.fake.in_conversation(bob_chat)] == ["Bob: your **VPN token** expires soon"]
        assert len(h.fake.in_conversation(chain)) == 2, "alice's event not delivered by bob's poll"

        assert await h.poll("alice@example.com") == 1
        assert h.fake.in_conversation(chain)[-1].text == "Alice: your badge is ready"
        assert len(h.fake.created) == 1
        assert h.store.events.status(for_alice["event_id"]) == "sent"
        assert h.store.events.status(for_bob["event_id"]) == "sent"
        # bob's reply in the new chat continues his event's conversation, as bob
        await h.ask(h.bob.personal("when exactly?", conversation_id=bob_chat))
        assert user_texts(h, "bob@example.com", for_bob["conversation_id"]) == ["when exactly?"]
        assert await h.poll("alice@example.com") == 0
        assert await h.poll("bob@example.com") == 0
    finally:
        await h.stop()
