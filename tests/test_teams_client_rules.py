"""Teams defects found with Microsoft's own local client (the M365 Agents Playground), each pinned
over loopback: inbound activities through botbuilder's real `CloudAdapter`, the Moveworks
simulator, and the fake connector enforcing what Teams (and the Playground) do with what the bot
sends:

1. a message with text and a card is shown as two messages, and an update that would split so
   is refused (400 "Activity resulted into multiple skype activities"): the card goes on a message
   of its own and the citations stay on the text;
2. a native stream only takes text extending what it showed: the Markdown rewrite must not change
   a heading or table already streamed, or the answer freezes until its final;
3. a 4xx is Teams refusing the message: never retried as sent, the stream ends with less;
4. the text typed with a rating reaches Moveworks, also for ratings naming no message or the card;
5. one AI label and one 👍/👎 pair per answer, on every part its label, an action button runs
   once, and growing edits render Markdown as the final does.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.teams.render import to_teams_markdown
from bridge import texts
from bridge.testing.bot_connector import MULTIPLE_ACTIVITIES, FakeActivity, split_activity, streaminfo_of
from bridge.testing.waiting import until
from tests.test_teams_e2e import Harness


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


SOURCES = [("VPN access policy", "https://kb.example.com/it/vpn"),
           ("Access renewals", "https://kb.example.com/it/renewals")]
ACTIONS = [{"type": "CALLBACK_ACTION", "label": "Renew VPN access"},
           {"type": "URL_ACTION", "label": "Open access portal", "url": "https://access.example.com"}]
CITED = ("**Your VPN access is valid until 31 March, and it renews by itself when you sign in to the "
         "corporate network.**{c1}\n\nIf it lapses, request a renewal in the access portal; approval usually "
         "takes one business day.{c2}")


def cited(marked: str = CITED) -> tuple[str, list[dict[str, Any]], str]:
    """(Moveworks text, simulator citations, the final Markdown users should see with [n])."""
    text, cites = marked, []
    for n, (title, url) in enumerate(SOURCES, 1):
        if f"{{c{n}}}" not in text:
            continue
        offset = text.index(f"{{c{n}}}")
        text = text.replace(f"{{c{n}}}", "", 1)
        cites.append({"title": title, "url": url, "offset": offset})
    final = marked
    for n in range(1, len(SOURCES) + 1):
        final = final.replace(f"{{c{n}}}", f"[{n}]")
    return text, cites, final


def answer_messages(h: Harness, conversation_id: str, since: int = 0) -> list[FakeActivity]:
    """The bot messages of one conversation (a chat or reply chain), oldest first, from `since`."""
    return h.fake.in_conversation(conversation_id)[since:]


def text_and_card(messages: list[FakeActivity]) -> tuple[list[FakeActivity], list[FakeActivity]]:
    return [m for m in messages if m.text], [m for m in messages if m.cards]


def pressed(h: Harness) -> int:
    """How many action button presses Moveworks received."""
    return sum(1 for user in h.sim.state.users.values() for message in user.messages.values()
               if message.get("actor") == "USER" and "callback_action" in repr(message.get("content")))


def ask_in(h: Harness, scope: str, text: str) -> dict[str, Any]:
    return h.alice.channel(text) if scope == "channel" else h.bob.group(text) if scope == "group" \
        else h.alice.personal(text)


# --- 1. text and card: two messages, citations kept ------------------------------------------------


@pytest.mark.parametrize("scope", ["channel", "group"])
async def test_final_edit_with_actions_keeps_citations_and_posts_the_card_on_its_own(h: Harness, scope: str) -> None:
    text, cites, final = cited()
    h.sim.script_answer(text=text, match="vpn", citations=cites, actions=ACTIONS, chunks=6, delay=0.35)
    activity = ask_in(h, scope, "is my vpn access still valid?")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    assert h.fake.refused(conv) == [], [(c.status, c.json) for c in h.fake.refused(conv)]
    assert [c for c in h.fake.calls_for(conv) if c.method == "PUT"], "the answer grew by edits"
    texts_, cards = text_and_card(answer_messages(h, conv))
    [answer] = texts_
    assert answer.text == final  # "[1]" and "[2]" stay, as Teams citations:
    assert [(c["position"], c["appearance"]["name"]) for c in answer.citations] == [
        (1, "VPN access policy"), (2, "Access renewals")]
    assert answer.ai_label and answer.feedback_buttons
    [card_message] = cards
    assert [a["title"] for a in card_message.cards[0]["actions"]] == ["Renew VPN access", "Open access portal"]
    assert not card_message.ai_label and not card_message.feedback_buttons
    # nothing the bot wrote would have been split into several messages by Teams
    for call in h.fake.calls_for(conv):
        if call.method in ("POST", "PUT") and isinstance(call.json, dict) and call.json.get("type") == "message":
            assert len(split_activity(call.json)) == 1, call.json


async def test_the_fake_refuses_an_edit_that_teams_would_split(h: Harness) -> None:
    """The rule behind defect 1, as the fake connector enforces it on the wire."""
    activity = h.alice.channel("hello")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    message = h.fake.in_conversation(chain)[0]
    card = {"contentType": "application/vnd.microsoft.card.adaptive",
            "content": {"type": "AdaptiveCard", "version": "1.4", "body": []}}
    assert h.session is not None
    url = f"{h.fake.url}v3/conversations/{chain}/activities/{message.id}"
    async with h.session.put(url, json={"type": "message", "text": "x", "attachments": [card]}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == {"code": "BadSyntax", "message": MULTIPLE_ACTIVITIES}


# --- 2. streaming through a heading and a table -----------------------------------------------------


TABLE_ANSWER = (
    "## Build farm access levels for engineers who start builds and change pipelines\n\n"
    "There are three levels of access to the build farm, and each one adds to the one before it.\n\n"
    "| Level | What it allows |\n"
    "|---|---|\n"
    "| Viewer | See builds and their logs |\n"
    "| Runner | Start and cancel builds |\n"
    "| Admin | Change pipelines and secrets |\n\n"
    "Runner is what most engineers need. Ask your team lead to approve it in the access portal, and "
    "**it is granted within an hour of the approval**, after which you can start builds *right away*."
)


async def test_personal_stream_keeps_moving_through_a_heading_and_a_table(h: Harness) -> None:
    h.sim.script_answer(text=TABLE_ANSWER, match="build farm", chunks=24, delay=0.25)
    activity = h.alice.personal("what build farm access levels are there?")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    [stream] = h.fake.in_conversation(conv)
    assert stream.stream and stream.stream_state == "final" and stream.text == to_teams_markdown(TABLE_ANSWER)
    updates = [(c.at, c.json["text"]) for c in h.fake.calls_for(conv)
               if c.status == 202 and (streaminfo_of(c.json) or {}).get("streamType") == "streaming"]
    shown = [t for _, t in updates]
    # the streamed text went on past the heading, through the table, into the last paragraph
    assert any("- **Level**: Runner; **What it allows**: Start and cancel builds" in t for t in shown), shown
    assert any("Runner is what most engineers need" in t for t in shown), shown
    for t in shown:  # emphasis is streamed once closed: no asterisks shown as text meanwhile
        assert t.count("**") % 2 == 0 and len(re.findall(r"(?<!\*)\*(?!\*)", t)) % 2 == 0, t
    # and never stood still for long while Moveworks was writing
    timing = next(iter(h.sim.timings.values()))
    times = [timing["first_text"]] + [at for at, _ in updates if timing["first_text"] < at < timing["end"]] \
        + [timing["end"]]
    longest = max(b - a for a, b in zip(times, times[1:], strict=False))
    assert longest < 2.5, f"the stream stood still for {longest:.1f} s: {shown}"


# --- 3. a refused final is not retried ---------------------------------------------------------------


def _final_with_extras(method: str, path: str, body: Any) -> bool:
    """A final stream message carrying anything beyond its text and streaminfo."""
    info = streaminfo_of(body)
    if method != "POST" or not info or info.get("streamType") != "final":
        return False
    others = [e for e in body.get("entities") or [] if e.get("type") != "streaminfo"]
    return bool(others or body.get("attachments") or (body.get("channelData") or {}).get("feedbackLoopEnabled"))


async def test_a_refused_personal_final_is_not_retried_and_the_stream_ends_with_the_text(h: Harness) -> None:
    text = "Your laptop refresh is scheduled for **next Tuesday**. Bring the old device to the IT desk."
    h.sim.script_answer(text=text, match="laptop", chunks=4, delay=0.3)
    h.fake.fail_next("bad_request", count=100, when=_final_with_extras)
    activity = h.alice.personal("when is my laptop refresh?")
    started = time.monotonic()
    await h.post(activity)
    await until(h.settled, timeout=12, what="the answer to end")
    conv = activity["conversation"]["id"]
    [stream] = h.fake.in_conversation(conv)
    assert stream.stream_state == "final" and stream.text == text, "the stream ended with the text alone"
    finals = [c for c in h.fake.calls_for(conv) if (streaminfo_of(c.json) or {}).get("streamType") == "final"]
    assert [c.status for c in finals] == [400, 400, 201], "each refusal sent once, then with less"
    assert len({repr(c.json) for c in finals}) == 3, "never the same refused message again"
    # the thread is free at once: the next question is answered
    h.sim.script_answer(text="Yes, the IT desk is open until 6 pm.", match="desk")
    follow = h.alice.personal("is the desk open late?")
    await h.post(follow)
    await until(lambda: len(h.fake.in_conversation(conv)) == 2, timeout=8, what="the next answer")
    assert time.monotonic() - started < 12


async def test_a_refused_channel_final_is_not_retried(h: Harness) -> None:
    text = "The VPN address is **vpn.example.com**. Use the *Corporate* profile."
    h.sim.script_answer(text=text, match="vpn", chunks=3, delay=0.3)
    h.fake.fail_next("bad_request", count=100, when=lambda m, p, b: m == "PUT" and isinstance(b, dict)
                     and (b.get("channelData") or {}).get("feedbackLoopEnabled"))
    activity = h.alice.channel("what is the vpn address?")
    await h.post(activity)
    await until(h.settled, timeout=10, what="the answer to end")
    chain = activity["conversation"]["id"]
    [message] = h.fake.in_conversation(chain)
    assert message.text == text and message.ai_label, "sent again without the feedback flag, label kept"
    assert len(h.fake.refused(chain)) == 1


# --- 4. feedback: the typed text, ratings naming no message or the card ------------------------------


async def _answer_with_actions(h: Harness) -> tuple[dict[str, Any], list[FakeActivity]]:
    text, cites, _ = cited()
    h.sim.script_answer(text=text, match="vpn", citations=cites, actions=ACTIONS, chunks=3, delay=0.2)
    activity = h.alice.personal("is my vpn access still valid?")
    await h.post(activity)
    await h.drain()
    return activity, h.fake.in_conversation(activity["conversation"]["id"])


async def test_the_feedback_comment_reaches_moveworks(h: Harness) -> None:
    activity, messages = await _answer_with_actions(h)
    comment = "The renewal link in this answer is out of date."
    status, body = await h.post(h.alice.feedback(activity["conversation"], messages[0].id, "dislike", comment))
    assert (status, body) == (200, "")
    [record] = h.sim.state.feedback
    assert (record["rating"], record["additional_feedback"]) == ("unhelpful", comment)


async def test_a_rating_naming_no_message_reaches_moveworks(h: Harness) -> None:
    """The Agents Playground sends no `replyToId`, and the typed text as it is."""
    activity, _ = await _answer_with_actions(h)
    status, _ = await h.post(h.alice.feedback(activity["conversation"], None, "like", "Clear, thanks",
                                              playground=True))
    assert status == 200
    [record] = h.sim.state.feedback
    assert (record["rating"], record["additional_feedback"]) == ("helpful", "Clear, thanks")
    assert len(h.fake.in_conversation(activity["conversation"]["id"])) == 2, "no note posted"


async def test_a_rating_on_the_card_message_reaches_moveworks(h: Harness) -> None:
    activity, messages = await _answer_with_actions(h)
    [card_message] = [m for m in messages if m.cards]
    status, _ = await h.post(h.alice.feedback(activity["conversation"], card_message.id, "like"))
    assert status == 200
    assert [r["rating"] for r in h.sim.state.feedback] == ["helpful"]


async def test_a_rating_naming_no_message_from_someone_else_is_refused(h: Harness) -> None:
    activity = h.alice.channel("alice asks in a channel")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    status, _ = await h.post(h.bob.feedback(activity["conversation"], None, "dislike", playground=True))
    assert status == 200
    assert h.sim.state.feedback == []
    assert [m.text for m in h.fake.in_conversation(chain)[1:]] == [texts.FEEDBACK_NOT_OWNER]


# --- 5. one label and one 👍/👎 pair, labelled parts, buttons once, growing Markdown ------------------


@pytest.mark.parametrize("scope", ["personal", "channel"])
async def test_one_ai_label_and_one_feedback_pair_per_answer(h: Harness, scope: str) -> None:
    text, cites, _ = cited()
    h.sim.script_answer(text=text, match="vpn", citations=cites, actions=ACTIONS, chunks=4, delay=0.3)
    activity = ask_in(h, scope, "is my vpn access still valid?")
    await h.post(activity)
    await h.drain()
    messages = h.fake.in_conversation(activity["conversation"]["id"])
    assert len(messages) == 2, [(m.text, m.cards) for m in messages]
    assert sum(m.ai_label for m in messages) == 1
    assert sum(m.feedback_buttons for m in messages) == 1
    text_message, card_message = messages
    assert text_message.ai_label and text_message.feedback_buttons and card_message.cards


@pytest.mark.parametrize("scope", ["personal", "channel"])
async def test_every_part_of_a_long_answer_carries_the_ai_label(h: Harness, scope: str) -> None:
    words = " ".join(f"w{i:05d}" for i in range(3000))  # ~21,000 characters: two messages
    h.sim.script_answer(text=words, match="long", chunks=6, delay=0.3)
    activity = ask_in(h, scope, "a long answer please")
    await h.post(activity)
    await h.drain()
    messages = h.fake.in_conversation(activity["conversation"]["id"])
    assert len(messages) >= 2 and "".join(m.text for m in messages) == words
    assert all(m.ai_label for m in messages), [m.ai_label for m in messages]
    assert [m.feedback_buttons for m in messages] == [False] * (len(messages) - 1) + [True]


async def test_an_action_button_runs_once(h: Harness) -> None:
    h.sim.script_answer(text="I can file a ticket for you.", match="ticket",
                        actions=[{"type": "CALLBACK_ACTION", "label": "File ticket"}])
    activity = h.alice.personal("please open a ticket")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    [card_message] = [m for m in h.fake.in_conversation(chain) if m.cards]
    submit = next(a for a in card_message.cards[0]["actions"] if a["type"] == "Action.Submit")
    press = h.alice.press(activity["conversation"], submit["data"], card_message.id)
    await h.post(press)
    await h.drain()
    await h.post(press)  # Teams redelivers the same press: no note, no second run
    await h.drain()
    await h.post(h.alice.press(activity["conversation"], submit["data"], card_message.id))  # pressed again
    await h.drain()
    assert pressed(h) == 1, "Moveworks ran the action once"
    shown = [m.text for m in h.fake.in_conversation(chain)]
    assert sum("Done: File ticket" in t for t in shown) == 1, shown
    assert shown.count(texts.ACTION_ALREADY_RUN) == 1, shown


async def test_growing_channel_edits_render_markdown_like_the_final(h: Harness) -> None:
    text, cites, final = cited()
    h.sim.script_answer(text=text, match="vpn", citations=cites, chunks=10, delay=0.35)
    activity = h.alice.channel("is my vpn access still valid?")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    message = h.fake.in_conversation(chain)[0]
    growing = [body["text"] for body in message.history if body.get("text", "").endswith(texts.CURSOR)]
    assert len(growing) >= 3, growing
    for shown in growing:
        body = shown[: -len(texts.CURSOR)]
        assert body.count("**") % 2 == 0, f"unclosed bold shown as text: {shown!r}"
        assert len(re.findall(r"(?<!\*)\*(?!\*)", body)) % 2 == 0, f"unclosed italics: {shown!r}"
    assert message.text == final
