"""Per-channel rules set with the app's slash command (`/moveworks channel <mode>`, workspace admins
only, kept in the shared store), and private answers with "Share in channel". End to end over
loopback: signed slash-command and event requests, the fake Slack, the simulator."""

# ruff: noqa: F811 - pytest fixtures imported from the harness modules are parameters here

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlencode

from bridge import texts
from bridge.testing.waiting import until
from tests.test_slack_e2e import (  # noqa: F401 - a fixture
    Harness,
    channel_message,
    harness_factory,
    mention,
    questions,
    sign,
)


async def command(h: Harness, text: str, *, user: str = "UADMIN", channel: str = "C1") -> str:
    body = urlencode(h.fake.command_payload(text, user=user, channel=channel))
    status, reply = await h.post(body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)})
    assert status == 200, reply
    data = json.loads(reply)
    assert data.get("response_type") == "ephemeral"
    return str(data["text"])


async def make(harness_factory: Any) -> Harness:
    h = await harness_factory(streaming="edit")
    h.fake.add_user("UADMIN", "dana", "dana@example.com", is_admin=True)
    return h


async def test_only_admins_change_a_channel_and_anyone_can_ask(harness_factory):
    h = await make(harness_factory)
    assert await command(h, "channel all", user="U1") == texts.SLACK_COMMAND_ADMINS_ONLY
    assert await command(h, "channel", user="U1") == texts.SLACK_CHANNEL_MODE_NOW.format(
        behaviour=texts.SLACK_CHANNEL_MODES["mention"])
    assert await command(h, "channel all") == texts.SLACK_CHANNEL_MODE_SET.format(
        behaviour=texts.SLACK_CHANNEL_MODES["all"])
    assert await command(h, "channel", user="U2") == texts.SLACK_CHANNEL_MODE_NOW.format(
        behaviour=texts.SLACK_CHANNEL_MODES["all"])
    assert await command(h, "channel off", channel="D1") == texts.SLACK_COMMAND_IN_CHANNEL
    assert "Usage" in await command(h, "what is this")
    assert h.runtime.store.sync.kv.namespace("slack.channels").get("T1:C1") == "all", "shared by every process"


async def test_all_answers_every_new_message_and_mention_only_mentions(harness_factory):
    h = await make(harness_factory)
    await command(h, "channel all")
    h.sim.script_answer(text="Try turning it off and on.", match="printer")
    top = channel_message("the printer on floor 3 is jammed", user="U2")
    await h.send(top)
    assert await h.answered("C1", top["ts"]) == "Try turning it off and on."
    # Replies in someone else's thread are still not for the bot.
    await h.send(channel_message("thanks, trying", user="U1", thread_ts=top["ts"]))

    await command(h, "channel mention")
    assert h.runtime.store.sync.kv.namespace("slack.channels").get("T1:C1") is None, "the default is not stored"
    await h.send(channel_message("chatting with colleagues", user="U2"))
    h.sim.script_answer(text="Mentioned.", match="mentioned")
    asked = mention("am I mentioned?")
    await h.send(asked)
    assert await h.answered("C1", asked["ts"]) == "Mentioned."
    assert questions(h.sim) == ["the printer on floor 3 is jammed", "am I mentioned?"]


async def test_off_answers_nothing_and_tells_who_mentions_it(harness_factory):
    h = await make(harness_factory)
    await command(h, "channel off")
    asked = mention("anyone home?")
    await h.send(asked)
    await h.send(asked)  # a retry
    await until(lambda: h.fake.ephemerals, what="the note")
    sentinel = mention("sentinel", channel="C2")
    h.sim.script_answer(text="Here.", match="sentinel")
    await h.send(sentinel)
    await h.answered("C2", sentinel["ts"])
    assert [e["text"] for e in h.fake.ephemerals] == [texts.SLACK_CHANNEL_OFF]
    assert h.fake.ephemerals[0]["user"] == "U1" and h.fake.ephemerals[0]["channel"] == "C1"
    assert questions(h.sim) == ["sentinel"] and h.answers("C1", asked["ts"]) == []


async def test_private_answers_in_a_dm_and_the_asker_can_share_it(harness_factory):
    h = await make(harness_factory)
    await command(h, "channel private")
    h.sim.script_answer(text="Your request **REQ-9** is approved.", match="my request",
                        citations=[{"title": "Request portal", "url": "https://portal.example.com/REQ-9"}])
    asked = mention("how is my request doing?")
    await h.send(asked)
    await until(lambda: len(h.fake.bot_messages("D1")) >= 2, what="the private answer and its share offer")
    await h.idle()
    assert h.answers("C1", asked["ts"]) == [], "nothing in the channel until shared"
    (pointer,) = h.fake.ephemerals
    assert pointer["text"] == texts.SLACK_PRIVATE_POINTER and pointer["user"] == "U1"
    answer, offer = h.fake.bot_messages("D1")
    assert h.fake.body_text(answer).startswith("Your request **REQ-9** is approved.")
    assert texts.SLACK_SHARE_PROMPT.format(channel="<#C1>") in json.dumps(offer["blocks"])

    # Someone else cannot share it.
    other = h.fake.message_action(offer, "D1", "mw_share", user="U2")
    await h.click(other)
    await until(lambda: len(h.fake.ephemerals) == 2, what="the refusal")
    assert h.fake.ephemerals[-1]["text"] == texts.SLACK_SHARE_NOT_YOURS

    stale = copy.deepcopy(offer)  # what a second, quick click still sees
    await h.click(h.fake.message_action(offer, "D1", "mw_share"))
    await until(lambda: h.answers("C1", asked["ts"]), what="the shared answer")
    (shared,) = h.answers("C1", asked["ts"])
    text = h.fake.body_text(shared)
    assert text.startswith("Your request **REQ-9** is approved.") and "Shared by alice" in text
    assert "https://portal.example.com/REQ-9" in json.dumps(shared["blocks"]), "its sources go with it"
    assert not any(b["type"] in ("context_actions", "actions") for b in shared["blocks"]), "no feedback buttons"
    done = texts.SLACK_SHARED.format(channel="<#C1>")
    await until(lambda: h.fake.body_text(h.fake.message("D1", offer["ts"])) == done, what="the offer to say so")
    await h.click(h.fake.message_action(stale, "D1", "mw_share"))  # once only
    await until(lambda: len(h.fake.ephemerals) == 3, what="the second click's answer")
    assert h.fake.ephemerals[-1]["text"] == texts.SLACK_SHARE_GONE
    assert len(h.answers("C1", asked["ts"])) == 1
