"""A live-agent hand-off in Teams, end to end on the simulator's `/rest/v1`: no false "I couldn't
find an answer" while a person is on the other side, and the agent's messages shown with the
agent's name (Teams shows every bot message under the app's name, so the name leads the text),
without the AI label or 👍/👎 — through the poller (proactive) and through a live reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bridge import texts
from bridge.models import Answer, FeedbackTarget, Sender, ThreadKey
from bridge.testing.bot_connector import TENANT
from tests.test_teams_forms import SIM_IDENTITY, V1Harness


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[V1Harness]:
    harness = V1Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


def conversations(h: V1Harness) -> list[str]:
    return list(h.sim.state.user(SIM_IDENTITY).conversations)


async def test_hand_off_shows_no_false_no_answer_and_the_agent_speaks_with_a_name(h: V1Harness) -> None:
    dm = h.dm()
    await h.ask(h.alice.personal("I'd like to talk to an agent please"))
    assert h.fake.in_conversation(dm)[0].text.startswith("Connecting you with a live agent")
    # while the agent is on the other side, a turn completes with nothing: no "no answer"
    await h.ask(h.alice.personal("my VPN drops every hour"))
    shown = [m.text for m in h.fake.in_conversation(dm)]
    assert not any(texts.NO_ANSWER in t for t in shown)
    (conversation,) = conversations(h)
    h.sim.agent_say(SIM_IDENTITY, conversation, "Hi, I'm looking at your VPN logs now.")
    await h.poll(SIM_IDENTITY)
    await h.drain()
    agent = h.fake.in_conversation(dm)[-1]
    assert agent.text == "**Dana Fielding** (agent)\n\nHi, I'm looking at your VPN logs now."
    assert not agent.ai_label and not agent.feedback_buttons
    # the employee's reply goes to the same Moveworks conversation
    await h.ask(h.alice.personal("thanks, it started yesterday"))
    assert conversations(h) == [conversation]


async def test_a_live_reply_written_by_an_agent_carries_the_name_too(h: V1Harness) -> None:
    await h.ask(h.alice.personal("hello"))  # the personal chat's reference is known
    dm = h.dm()
    thread = ThreadKey("teams", TENANT, dm, "")
    sink = await h.adapter.open_reply(thread, {"ref_key": dm, "scope": "personal"}, user=None, proactive=False)
    answer = Answer(text="I've reset your *VPN* profile.", ai_generated=False,
                    sender=Sender("Dana Fielding", "https://static.example.com/avatars/dana.png"),
                    feedback=FeedbackTarget("c", "r", "m", "good", "bad"))
    await sink.finish(answer)
    message = h.fake.in_conversation(dm)[-1]
    assert message.text == "**Dana Fielding** (agent)\n\nI've reset your *VPN* profile."
    assert not message.ai_label and not message.feedback_buttons
