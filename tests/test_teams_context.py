"""Thread context for a mention in a Teams channel reply chain, end to end over loopback: channel
activities POSTed to the real serve app (botbuilder's real `CloudAdapter`), the chain's earlier
messages read from the fake connector's Microsoft Graph (which enforces Graph's rules: the team's
group id, the resource-specific consent `ChannelMessage.Read.Group`, the bot's bearer token,
`$top` at most 50, newest first), the question as the Moveworks simulator received it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from adapters.teams import thread_context
from adapters.teams.thread_context import MAX_CHARS, MAX_MESSAGES, ChainRef, context_lines, html_text
from bridge import texts
from bridge.testing.bot_connector import TEAM_GROUP_ID, TENANT, GraphCredentials, TeamsUser
from tests.test_teams_e2e import Harness, questions

CHANNEL = "19:general@thread.tacv2"


class GraphHarness(Harness):
    """The Teams harness with the bot's Graph token coming from a fake Entra ID and Graph served by
    the fake connector (what a deployment with TEAMS_APP_ID gets from Microsoft)."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        super().__init__(tmp_path, **options)
        self.entra = GraphCredentials()

    async def boot(self) -> None:
        await super().boot()
        threads = self.adapter.threads
        threads.graph_url = self.fake.graph_url
        threads.credentials_for = self.entra.for_tenant
        self.fake.graph_token = self.entra.token

    async def start(self) -> None:
        await super().start()
        self.carol = TeamsUser("29:carol", "aad-carol", "Carol Danvers", self.fake.url)
        self.fake.add_member("29:carol", "aad-carol", "Carol Danvers", "carol@example.com")

    def asked(self) -> list[str]:
        return [text for _, text in questions(self.sim)]


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[GraphHarness]:
    harness = GraphHarness(tmp_path)
    await harness.start()
    harness.fake.grant_rsc()
    try:
        yield harness
    finally:
        await harness.stop()


def said(h: GraphHarness, user: TeamsUser, text: str, root: dict[str, Any] | None = None,
         **options: Any) -> dict[str, Any]:
    """A channel message nobody addressed to the bot: only Graph knows it."""
    return h.fake.graph_post(user.channel(text, root_id=root["id"] if root else None, mention=False, **options))


async def mention(h: GraphHarness, user: TeamsUser, text: str, root: dict[str, Any] | None = None,
                  **options: Any) -> dict[str, Any]:
    """A message mentioning the bot (in Graph too), posted to the bot; waits for the answer."""
    activity = h.fake.graph_post(user.channel(text, root_id=root["id"] if root else None, **options))
    assert (await h.post(activity))[0] == 201
    await h.drain()
    return activity


async def test_a_mention_mid_chain_carries_the_earlier_messages(h: GraphHarness) -> None:
    root = said(h, h.bob, "The printer on floor 3 says <b>PC LOAD LETTER</b> again")
    said(h, h.carol, "Same on floor 4 &amp; the scanner is jammed too", root)
    asked = await mention(h, h.alice, "can you help with this?", root)
    said(h, h.bob, "written after the mention: not context", root)
    assert h.asked() == [texts.THREAD_CONTEXT.format(
        context="Bob: The printer on floor 3 says PC LOAD LETTER again\n"
                "Carol Danvers: Same on floor 4 & the scanner is jammed too",
        question="can you help with this?")]
    # Graph was asked as documented: the root, then the replies (one page of the largest size),
    # with the bot's own app-only token from the tenant the team lives in
    base = f"/graph/v1.0/teams/{TEAM_GROUP_ID}/channels/{CHANNEL}/messages/{root['id']}"
    assert sorted((c["path"], c["query"], c["status"]) for c in h.fake.graph_calls) == [
        (base, {}, 200), (base + "/replies", {"$top": "50"}, 200)]
    assert {c["authorization"] for c in h.fake.graph_calls} == {f"Bearer {h.entra.token}"}
    assert h.entra.requested == [TENANT]
    # the answer went into the chain
    assert len(h.fake.in_conversation(asked["conversation"]["id"])) == 1


async def test_the_bots_own_messages_are_marked_and_a_second_person_gets_the_chain(h: GraphHarness) -> None:
    h.sim.script_answer(text="Reload paper tray 2, then press **OK**.", match="printer")
    root = await mention(h, h.alice, "the printer says PC LOAD LETTER, what now?")  # the bot answers the root
    said(h, h.bob, "Tray 2 is full though", root)
    await mention(h, h.carol, "any other idea?", root)
    assert h.asked()[0] == "the printer says PC LOAD LETTER, what now?", "a root mention has no context"
    assert h.asked()[1] == texts.THREAD_CONTEXT.format(
        context=f"Alice: the printer says PC LOAD LETTER, what now?\n"
                f"{texts.THREAD_CONTEXT_BOT} Reload paper tray 2, then press OK.\n"
                f"Bob: Tray 2 is full though",
        question="any other idea?")


async def test_a_follow_up_from_someone_already_answered_in_the_chain_reads_nothing(h: GraphHarness) -> None:
    root = said(h, h.bob, "VPN drops every hour")
    await mention(h, h.alice, "is this a known issue?", root)
    calls = len(h.fake.graph_calls)
    await mention(h, h.alice, "and is there a workaround?", root)
    assert len(h.fake.graph_calls) == calls
    assert h.asked()[1] == "and is there a workaround?"


async def test_without_the_permission_the_question_goes_alone_and_graph_is_not_asked_again(
        h: GraphHarness) -> None:
    h.fake.rsc_granted.clear()  # the team owner did not grant ChannelMessage.Read.Group
    root = said(h, h.bob, "Teams keeps signing me out")
    await mention(h, h.alice, "any idea?", root)
    assert {c["status"] for c in h.fake.graph_calls} == {403}
    other = said(h, h.bob, "Outlook too")
    await mention(h, h.carol, "same question", other)
    assert h.asked() == ["any idea?", "same question"]
    assert len(h.fake.graph_calls) == 2, "a team that refused is not asked again for a while"
    assert all(len(h.fake.in_conversation(a)) == 1 for a in (f"{CHANNEL};messageid={root['id']}",
                                                             f"{CHANNEL};messageid={other['id']}"))


async def test_no_graph_token_means_no_lookup(h: GraphHarness) -> None:
    h.adapter.threads.credentials_for = lambda tenant: None  # no TEAMS_APP_ID: local development
    root = said(h, h.bob, "The wiki is down")
    await mention(h, h.alice, "who can fix this?", root)
    assert h.fake.graph_calls == [] and h.asked() == ["who can fix this?"]


async def test_a_token_that_cannot_be_had_is_not_asked_for_on_every_mention(h: GraphHarness) -> None:
    h.entra.fail = True  # a wrong secret: Entra ID refuses
    root = said(h, h.bob, "The wiki is down")
    await mention(h, h.alice, "who can fix this?", root)
    await mention(h, h.carol, "me too", root)
    assert h.entra.requested == [TENANT] and h.fake.graph_calls == []
    assert h.asked() == ["who can fix this?", "me too"]


async def test_a_slow_graph_delays_the_question_by_the_budget_at_most(h: GraphHarness, monkeypatch: Any) -> None:
    monkeypatch.setattr(thread_context, "BUDGET", 0.5)
    h.fake.graph_delay = 3.0
    root = said(h, h.bob, "Jira is slow")
    activity = h.fake.graph_post(h.alice.channel("anyone else?", root_id=root["id"]))
    started = time.monotonic()
    assert (await h.post(activity))[0] == 201
    assert time.monotonic() - started < 1.5, "the inbound turn waited no longer than the budget"
    await h.drain()
    assert h.asked() == ["anyone else?"]


async def test_the_group_id_comes_from_the_team_details_when_the_activity_lacks_it(h: GraphHarness) -> None:
    root = said(h, h.bob, "Badge reader at the door is broken", group_id=False)
    await mention(h, h.alice, "who handles this?", root, group_id=False)
    assert any(c.method == "GET" and c.path == "/v3/teams/19:team@thread.tacv2" for c in h.fake.calls)
    assert h.asked() == [texts.THREAD_CONTEXT.format(context="Bob: Badge reader at the door is broken",
                                                     question="who handles this?")]


async def test_a_long_chain_is_bounded_to_the_latest_messages(h: GraphHarness) -> None:
    root = said(h, h.bob, "Kick-off: the new laptop rollout")
    for n in range(60):
        said(h, h.carol if n % 2 else h.bob, f"update {n:02d}: " + "details " * 30, root)
    deleted = said(h, h.bob, "this one was deleted", root)
    h.fake.graph_delete(deleted["id"])
    await mention(h, h.alice, "summarise please", root)
    question = h.asked()[0]
    context = question.split("\n\nMy question: ")[0].removeprefix("Earlier messages in this chat thread:\n")
    lines = context.split("\n")
    assert len(lines) <= MAX_MESSAGES and len(context) <= MAX_CHARS
    assert lines[-1].startswith("Carol Danvers: update 59:"), "the newest before the mention is kept"
    assert "Kick-off" not in context and "deleted" not in context
    assert [c["query"] for c in h.fake.graph_calls if c["path"].endswith("/replies")] == [{"$top": "50"}]


# --- the formatting, on its own ----------------------------------------------------------------


def chain(**overrides: Any) -> ChainRef:
    values = dict(tenant=TENANT, team_id="19:team@thread.tacv2", group_id="g", channel_id=CHANNEL,
                  root_id="100", message_id="300", bot_app_id="bot-app-id", service_url="http://127.0.0.1/")
    return ChainRef(**{**values, **overrides})


def message(mid: str, at: str, who: dict[str, Any], content: str, **more: Any) -> dict[str, Any]:
    return {"id": mid, "createdDateTime": at, "messageType": "message", "deletedDateTime": None,
            "from": who, "body": {"contentType": "html", "content": content}, **more}


def test_context_lines_order_names_markers_and_skips() -> None:
    bob = {"user": {"id": "b", "displayName": "Bob"}, "application": None}
    bot = {"user": None, "application": {"id": "bot-app-id", "displayName": "Moveworks",
                                         "applicationIdentityType": "bot"}}
    other_bot = {"user": None, "application": {"id": "x", "displayName": "Polly"}}
    root = message("100", "2026-01-01T10:00:00.000Z", bob, "<p>Root <at id=\"0\">Moveworks</at> question</p>")
    replies = [  # newest first, as Graph lists them
        message("400", "2026-01-01T10:04:00.000Z", bob, "<p>after the mention</p>"),
        message("300", "2026-01-01T10:03:00.000Z", bob, "<p>the mention</p>"),
        message("250", "2026-01-01T10:02:30.000Z", bob, "<p>system</p>", messageType="systemEventMessage"),
        message("240", "2026-01-01T10:02:20.000Z", other_bot, "<p>Poll: lunch?</p>"),
        message("230", "2026-01-01T10:02:10.000Z", bob, '<attachment id="a1"></attachment>'),
        message("200", "2026-01-01T10:02:00.000Z", bot, "<p>Try <b>this</b>:<br>step&nbsp;1</p>"),
        message("150", "2026-01-01T10:01:00.000Z", bob, "<p>gone</p>", deletedDateTime="2026-01-01T10:05:00Z"),
    ]
    assert context_lines(root, replies, chain()) == (
        "Bob: Root Moveworks question\n"
        f"{texts.THREAD_CONTEXT_BOT} Try this: step 1\n"
        "Polly (bot): Poll: lunch?")
    assert context_lines(None, [], chain()) == ""
    assert html_text("<div><p>a</p><p>b &lt;c&gt;</p></div>") == "a b <c>"


def test_the_graph_token_comes_from_the_tenant_the_team_lives_in() -> None:
    from bridge.process.config import Settings

    settings = Settings(teams_app_id="00000000-0000-0000-0000-000000000001", teams_app_password="not-a-secret")
    multi = thread_context.graph_credentials(settings, "customer-tenant")
    assert (multi.oauth_endpoint, multi.oauth_scope) == ("https://login.microsoftonline.com/customer-tenant",
                                                         "https://graph.microsoft.com")
    single = thread_context.graph_credentials(
        settings.with_(teams_app_type="SingleTenant", teams_app_tenant_id="home-tenant"), "customer-tenant")
    assert single.oauth_endpoint == "https://login.microsoftonline.com/home-tenant"
    msi = thread_context.graph_credentials(settings.with_(teams_app_type="UserAssignedMSI"), "customer-tenant")
    assert type(msi).__name__ == "ManagedIdentityAppCredentials" and msi.oauth_scope == "https://graph.microsoft.com"
    assert thread_context.graph_credentials(Settings(), "customer-tenant") is None, "no app id: no Graph"
