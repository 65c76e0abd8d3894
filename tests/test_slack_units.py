"""Slack adapter pieces in isolation: text conversion, blocks, event normalisation, the
installation store, and the native stream sink against the fake Slack Web API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks as bk
from adapters.slack.events import Ignore, Inbound, Notice, Where, normalise
from adapters.slack.install import KvInstallationStore, KvOAuthStateStore
from adapters.slack.mrkdwn import mentions, to_mrkdwn, to_plain
from adapters.slack.native import APPEND_LIMIT, NativeStreamSink, open_fence
from adapters.slack.status import StatusKeeper
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Answer, CitationLink, FeedbackTarget, Frame
from bridge.moveworks.models import Action
from bridge.store import Store
from bridge.store.aio import as_async
from bridge.testing.slack_api import FakeSlack

WHERE = Where("T1", None, False, "UBOT")


# --- text ----------------------------------------------------------------------------------------


def test_slack_markup_to_plain_text():
    raw = "<@UBOT> ping <@U2|bob> in <#C1|general>: <https://x.io|docs>, <https://y.io> &lt;b&gt; &amp; <!here>"
    assert to_plain(raw, bot_user_id="UBOT") == "ping @bob in #general: docs (https://x.io), https://y.io <b> & @here"
    assert to_plain("<@UBOT>", bot_user_id="UBOT") == ""
    assert mentions("hey <@UBOT>", "UBOT") and not mentions("hey <@U2>", "UBOT")


def test_markdown_to_mrkdwn():
    md = "# Title\n**bold** *it* ~~gone~~ [link](https://a.b) `x<y`\n- one\n\n```\na < b\n```"
    assert to_mrkdwn(md) == "*Title*\n*bold* _it_ ~gone~ <https://a.b|link> `x&lt;y`\n• one\n\n```\na &lt; b\n```"
    assert to_mrkdwn("| a | b |\n|---|---|\n| 1 | 2 |").startswith("```\n| a | b |")


# --- blocks ----------------------------------------------------------------------------------------


def test_answer_extras_and_button_values_round_trip():
    target = FeedbackTarget("conv_1", "resp_1", "msg_1", "cb_good", "cb_bad")
    answer = Answer(
        text="Body [1]",
        citations=(CitationLink(1, "Guide <v2>", "https://kb/x"),),
        actions=(Action("URL_ACTION", "Open", url="https://o"), Action("CALLBACK_ACTION", "Do it", callback_id="cb_do")),
        feedback=target,
        conversation_id="conv_1",
    )
    extras = bk.answer_extras(answer)
    assert [b["type"] for b in extras] == ["context", "actions", "context_actions"]
    assert extras[0]["elements"][0]["text"] == "[1] <https://kb/x|Guide &lt;v2&gt;>"
    callback = extras[1]["elements"][1]
    assert bk.decode(callback["value"]) == {"c": "conv_1", "cb": "cb_do", "l": "Do it"}
    buttons = extras[2]["elements"][0]
    good, helpful = bk.feedback_target(bk.decode(buttons["positive_button"]["value"]))
    assert helpful and good.helpful == "cb_good" and good.unhelpful is None and good.message_id == "msg_1"
    bad, helpful = bk.feedback_target(bk.decode(buttons["negative_button"]["value"]))
    assert not helpful and bad.unhelpful == "cb_bad"
    assert bk.feedback_target(bk.decode("garbage")) is None
    huge = FeedbackTarget("c", "r", "m", "x" * 3000, None)
    assert bk.feedback_blocks(huge) == []  # never exceeds Slack's 2,000-character value limit


def test_mrkdwn_body_splits_sections_at_3000():
    text = "\n".join("line %d " % i + "x" * 80 for i in range(200))
    sections = bk.mrkdwn_body(text)
    assert all(len(s["text"]["text"]) <= 3000 for s in sections)
    assert "".join(s["text"]["text"] for s in sections) == to_mrkdwn(text)


# --- normalisation ---------------------------------------------------------------------------------


def _msg(**kw: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "C1", "channel_type": "channel", "user": "U1", "ts": "1.1", "text": "hi", **kw}


async def test_normalise_rules():
    async def never(thread, user):
        return False

    async def always(thread, user):
        return True

    assert isinstance(await normalise(_msg(subtype="message_changed"), WHERE, mention=False, followed=always), Ignore)
    assert isinstance(await normalise(_msg(bot_id="B2"), WHERE, mention=False, followed=always), Ignore)
    assert isinstance(await normalise(_msg(user="UBOT"), WHERE, mention=False, followed=always), Ignore)
    assert isinstance(await normalise(_msg(), WHERE, mention=False, followed=always), Ignore)  # top level
    assert isinstance(await normalise(_msg(thread_ts="1.0"), WHERE, mention=False, followed=never), Ignore)
    follow = await normalise(_msg(thread_ts="1.0"), WHERE, mention=False, followed=always)
    assert isinstance(follow, Inbound) and follow.thread.thread == "1.0"
    twin = await normalise(_msg(text="<@UBOT> q", thread_ts="1.0"), WHERE, mention=False, followed=always)
    assert isinstance(twin, Ignore)  # answered from app_mention
    men = await normalise({"type": "app_mention", "channel": "C1", "user": "U1", "ts": "1.1", "text": "<@UBOT> q"},
                          WHERE, mention=True, followed=never)
    assert isinstance(men, Inbound) and men.text == "q" and men.thread.thread == "1.1"
    assert men.dedupe_id == (await normalise(_msg(thread_ts="1.0", text="x"), WHERE, mention=False,
                                             followed=always)).dedupe_id  # same message, same id
    im = await normalise(_msg(channel="D1", channel_type="im"), WHERE, mention=False, followed=never)
    assert isinstance(im, Inbound) and im.direct
    files = await normalise(_msg(channel="D1", channel_type="im", text="", subtype="file_share", files=[{"id": "F"}]),
                            WHERE, mention=False, followed=never)
    assert isinstance(files, Notice)
    assert isinstance(await normalise("garbage", WHERE, mention=False, followed=never), Ignore)  # type: ignore[arg-type]


async def test_unmentioned_thread_follow_up_is_answered_only_for_a_user_the_bot_talks_with():
    asked: list[tuple[str, str]] = []

    async def followed(thread, user):
        asked.append((thread.thread, user))
        return user == "U1"  # the bot answered U1 in this thread, nobody else

    assert isinstance(await normalise(_msg(thread_ts="1.0"), WHERE, mention=False, followed=followed), Inbound)
    other = await normalise(_msg(user="U2", thread_ts="1.0"), WHERE, mention=False, followed=followed)
    assert isinstance(other, Ignore)
    assert asked == [("1.0", "U1"), ("1.0", "U2")]
    mentioned = await normalise({"type": "app_mention", "channel": "C1", "user": "U2", "ts": "1.2", "thread_ts": "1.0",
                                 "text": "<@UBOT> me too"}, WHERE, mention=True, followed=followed)
    assert isinstance(mentioned, Inbound) and mentioned.user.user_id == "U2"  # a mention is always answered
    dm = await normalise(_msg(user="U2", channel="D2", channel_type="im", thread_ts="1.0"), WHERE, mention=False,
                         followed=followed)
    assert isinstance(dm, Inbound)  # DMs unchanged


def test_team_allow_list():
    from adapters.slack.events import team_allowed

    allowed = frozenset({"T1", "E1"})
    ctx = {"team_id": "T1", "actor_team_id": "T1"}
    assert team_allowed({}, {"team_id": "T9"}, frozenset())  # empty list: everyone
    assert team_allowed({}, ctx, allowed)
    assert not team_allowed({}, {"team_id": "T9", "actor_team_id": "T9"}, allowed)
    # an org listed by enterprise id: any of its workspaces
    assert team_allowed({}, {"team_id": "T5", "enterprise_id": "E1", "actor_team_id": "T5",
                             "actor_enterprise_id": "E1"}, allowed)
    # Slack Connect: a user of another organisation in a channel shared with T1
    shared = {"is_ext_shared_channel": True}
    assert not team_allowed(shared, {**ctx, "actor_team_id": "TEXT"}, allowed)
    assert not team_allowed(shared, {"team_id": "T1"}, allowed)  # actor unknown: refused
    assert team_allowed(shared, ctx, allowed)
    # a button clicked by a user of another workspace
    assert not team_allowed({"user": {"id": "U9", "team_id": "TEXT"}}, ctx, allowed)
    assert team_allowed({"user": {"id": "U1", "team_id": "T1"}}, ctx, allowed)


# --- installation store ----------------------------------------------------------------------------


async def test_installation_and_state_stores_live_in_the_bridge_db(tmp_path):
    store = Store(tmp_path / "b.db")
    installations = KvInstallationStore(as_async(store).kv.namespace)
    await installations.async_save(Installation(
        app_id="A1", team_id="T9", bot_token="xoxb-t9", bot_id="B9", bot_user_id="U9", user_id="UADMIN",
        bot_scopes=["chat:write"],
    ))
    store.close()
    reopened_store = Store(tmp_path / "b.db")
    reopened = KvInstallationStore(as_async(reopened_store).kv.namespace)
    bot = await reopened.async_find_bot(enterprise_id=None, team_id="T9")
    assert bot is not None and bot.bot_token == "xoxb-t9" and bot.bot_scopes == ["chat:write"]
    assert (await reopened.async_find_installation(enterprise_id=None, team_id="T9")).user_id == "UADMIN"
    assert await reopened.async_find_bot(enterprise_id=None, team_id="T0") is None
    states = KvOAuthStateStore(as_async(reopened_store).kv.namespace)
    state = await states.async_issue()
    assert await states.async_consume(state) and not await states.async_consume(state)


async def test_installation_store_refuses_teams_outside_the_allow_list(tmp_path):
    from adapters.slack.install import InstallationRefused

    store = Store(tmp_path / "b.db")
    installations = KvInstallationStore(as_async(store).kv.namespace, allowed=frozenset({"T1", "E1"}))
    with pytest.raises(InstallationRefused) as refused:
        await installations.async_save(Installation(app_id="A1", team_id="T9", bot_token="xoxb-t9",
                                                    bot_id="B9", bot_user_id="U9", user_id="UADMIN"))
    assert "xoxb" not in str(refused.value) + repr(refused.value)
    with pytest.raises(InstallationRefused):  # org-wide install of an org that is not listed
        await installations.async_save(Installation(app_id="A1", enterprise_id="E9", team_id=None,
                                                    is_enterprise_install=True, bot_token="xoxb-e9",
                                                    bot_id="B9", bot_user_id="U9", user_id="UADMIN"))
    assert store.kv.items("slack.bot") == [] and store.kv.items("slack.installation") == []
    await installations.async_save(Installation(app_id="A1", enterprise_id="E1", team_id="T5", bot_token="xoxb-t5",
                                                bot_id="B5", bot_user_id="U5", user_id="UADMIN"))
    assert await installations.async_find_bot(enterprise_id="E1", team_id="T5") is not None


# --- native sink against the fake ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake():
    f = FakeSlack()
    await f.start()
    yield f
    await f.stop()


def _sink(fake: FakeSlack, clock: Clock, channel: str = "C1", **kw: Any) -> NativeStreamSink:
    client = AsyncWebClient(token=fake.token, base_url=fake.url)
    budgets = Budgets()
    return NativeStreamSink(  # a decline (StreamDeclined) would fail the test
        client, channel, "1.0", budget_key="k", stream_budget=budgets.get("k", None),
        edit_budget=budgets.get("e", None),
        recipient_team_id="T1", recipient_user_id="U1", clock=clock, **kw,
    )


async def test_native_rotates_by_age_and_reopens_code_fences(fake):
    clock = Clock()
    sink = _sink(fake, clock)
    first = "Intro\n```python\nx = 1\n"
    await sink.show(Frame(first))
    clock.now += 241  # past the rotation age
    final = first + "y = 2\n```\nDone."
    await sink.finish(Answer(text=final))
    msgs = fake.thread("C1", "1.0")
    assert len(msgs) == 2 and not any(m["streaming"] for m in msgs)
    assert msgs[0]["markdown_text"] == first + "\n```"  # closed at the cut
    assert msgs[1]["markdown_text"] == "```python\ny = 2\n```\nDone."  # reopened
    assert open_fence(first) == ("```", "```python")


async def test_native_splits_big_deltas_and_rotates_by_size(fake):
    sink = _sink(fake, Clock())
    text = "".join(f"{i:05d} " for i in range(12_000))  # 72k characters
    await sink.show(Frame(text[:30_000]))
    assert all(len(c.params["markdown_text"]) <= APPEND_LIMIT for c in fake.calls_to("chat.appendStream"))
    await sink.finish(Answer(text=text))
    msgs = fake.thread("C1", "1.0")
    assert len(msgs) >= 3 and all(len(m["markdown_text"]) <= 40_000 for m in msgs)
    assert "".join(m["markdown_text"] for m in msgs) == text


async def test_native_rewrites_when_the_final_text_differs(fake):
    sink = _sink(fake, Clock())
    await sink.show(Frame("Use the portal"))
    await sink.finish(Answer(text="Use the portal[1] today.", citations=(CitationLink(1, "KB", "https://kb"),)))
    msgs = fake.thread("C1", "1.0")
    assert len(msgs) == 1 and FakeSlack.body_text(msgs[0]) == "Use the portal[1] today."
    assert msgs[0]["blocks"][-1]["type"] == "context"


async def test_native_fail_keeps_text_and_adds_note(fake):
    sink = _sink(fake, Clock())
    await sink.show(Frame("Partial ```code"))
    await sink.fail("Sorry, something broke.")
    msg = fake.thread("C1", "1.0")[0]
    assert msg["markdown_text"].startswith("Partial ```code") and msg["markdown_text"].endswith("⚠️ Sorry, something broke.")
    assert not msg["streaming"]


async def test_status_is_set_and_refreshed_until_text_arrives(fake):
    client = AsyncWebClient(token=fake.token, base_url=fake.url)
    status = StatusKeeper(client, "C1", "1.0", refresh=0.05)
    sink = _sink(fake, Clock(), status=status)
    await sink.show(Frame("", status="Searching the knowledge base"))
    await asyncio.sleep(0.2)
    refreshed = len(fake.statuses)
    assert refreshed >= 2 and fake.statuses[0]["loading_messages"] == ["Searching the knowledge base"]
    await sink.show(Frame("Answer"))  # the first post ends the status refresh
    await asyncio.sleep(0.15)
    assert len(fake.statuses) == refreshed
    await sink.finish(Answer(text="Answer"))


async def test_rate_limit_during_show_is_reported_and_final_still_lands(fake):
    sink = _sink(fake, Clock())
    await sink.show(Frame("one"))
    fake.fail_next("chat.appendStream", "ratelimited", retry_after=0)
    from bridge.errors import PlatformRateLimited

    with pytest.raises(PlatformRateLimited):
        await sink.show(Frame("one two"))
    fake.fail_next("chat.stopStream", "ratelimited", retry_after=0)
    await sink.finish(Answer(text="one two three"))
    assert FakeSlack.body_text(fake.thread("C1", "1.0")[0]) == "one two three"


def test_capabilities_are_declared():
    from adapters.slack.app import EDIT_CAPABILITIES, EDIT_RATE
    from adapters.slack.native import NATIVE_CAPABILITIES

    assert (EDIT_RATE.count, EDIT_RATE.per) == (50, 60.0) and EDIT_CAPABILITIES.write_budget == EDIT_RATE
    assert EDIT_CAPABILITIES.max_text_len <= 12_000 and NATIVE_CAPABILITIES.native_stream


def test_manifest_requests_exactly_the_scopes_the_adapter_uses():
    import re
    from pathlib import Path

    from adapters.slack.app import SCOPES

    manifest = (Path(__file__).resolve().parent.parent / "manifest.yml").read_text()
    bot = manifest.split("    bot:\n", 1)[1].split("settings:", 1)[0]
    assert sorted(re.findall(r"^\s+- ([a-z_:.]+)", bot, re.M)) == sorted(SCOPES)
    events = manifest.split("bot_events:\n", 1)[1].split("interactivity:", 1)[0]
    assert sorted(re.findall(r"^\s+- ([a-z_.]+)", events, re.M)) == sorted(
        ["agent_session_stopped", "app_home_opened", "app_mention", "message.channels", "message.groups", "message.im", "message.mpim"]
    )
