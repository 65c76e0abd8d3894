"""A live-agent hand-off in Slack, end to end over loopback: the simulator on `/rest/v1` hands the
conversation to Dana Fielding (a `LIVE_AGENT` whose replies arrive as events, through the
poller), the employee keeps writing in the same thread, and the agent's messages show with her
name and avatar (`username`/`icon_url`, which the fake applies only with `chat:write.customize`)
and a byline that says so wherever the override is not shown. Never "I couldn't find an answer"."""

from __future__ import annotations

from typing import Any

from bridge import texts
from bridge.simulator.flows import AGENT_AVATAR, AGENT_NAME
from bridge.testing.waiting import until
from tests.test_slack_e2e import dm
from tests.test_slack_forms import V1Harness, v1  # noqa: F401 - a fixture

BYLINE = texts.LIVE_AGENT_BYLINE.format(name=f"*{AGENT_NAME}*")


def byline(message: dict[str, Any]) -> str:
    return " ".join(e.get("text", "") for b in message.get("blocks") or [] if b["type"] == "context"
                    for e in b["elements"])


def from_agent(v1: V1Harness, thread: str) -> list[dict[str, Any]]:
    return [m for m in v1.answers("D1", thread) if "I'm looking at it" in v1.fake.body_text(m)]


async def write(v1: V1Harness, thread: str, text: str) -> None:
    await v1.send(dm(text, thread_ts=thread))
    await until(lambda: any(text in v1.fake.body_text(m) for m in from_agent(v1, thread)),
                what=f"the agent's answer to {text!r}")


async def test_the_agent_answers_in_the_thread_under_their_own_name(v1):
    v1.sim.config.live_agent_delay = 3.0  # the agent types slower than the bridge re-reads history
    first = await v1.ask("I want to talk to an agent")
    thread = first["thread_ts"]
    assert "Connecting you with a live agent" in v1.fake.body_text(first)
    await write(v1, thread, "My VPN drops every hour")
    await write(v1, thread, "It happened again just now")
    await v1.idle()

    shown = [v1.fake.body_text(m) for m in v1.answers("D1", thread)]
    assert not any(texts.NO_ANSWER in s for s in shown)
    assert texts.LIVE_CONNECTING in shown  # the first turn, said quietly once
    assert texts.LIVE_SENT.format(name=AGENT_NAME) in shown  # later turns name who has them
    agent = from_agent(v1, thread)
    assert len(agent) == 2
    for message in agent:
        assert message["username"] == AGENT_NAME  # posted by the poller as the agent
        assert message["icons"] == {"icon_url": AGENT_AVATAR}
        assert BYLINE in byline(message)
        assert not any(b["type"] == "context_actions" for b in message["blocks"])  # no rating a person
    # the employee's turns all went to the one Moveworks conversation
    conversations = {m.get("conversation_id") for u in v1.sim.state.users.values() for m in u.messages.values()
                     if m.get("actor") == "USER"}
    assert len(conversations) == 1


async def test_a_quick_agent_reply_shown_live_carries_the_byline(v1):
    first = await v1.ask("talk to an agent")
    thread = first["thread_ts"]
    # The agent answers within the bridge's history re-read: the reply is the turn's answer,
    # edited into the status message (whose author cannot change), so the byline names her.
    await write(v1, thread, "My monitor flickers")
    await v1.idle()
    [message] = from_agent(v1, thread)
    assert BYLINE in byline(message)
    assert not any(b["type"] == "context_actions" for b in message["blocks"])
    assert not any(texts.NO_ANSWER in v1.fake.body_text(m) for m in v1.answers("D1", thread))


async def test_without_the_customize_scope_the_byline_still_names_the_agent(v1):
    v1.fake.teams["T1"].scopes.discard("chat:write.customize")
    v1.sim.config.live_agent_delay = 3.0
    first = await v1.ask("can I talk to a human please")
    thread = first["thread_ts"]
    await write(v1, thread, "my laptop is on fire")
    [message] = from_agent(v1, thread)
    assert message["asked_authorship"]["username"] == AGENT_NAME
    assert "username" not in message  # Slack posts under the app's name without the scope
    assert BYLINE in byline(message)
