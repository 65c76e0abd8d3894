"""Several `serve`/`poll` processes on one store, as real subprocesses (CONTRACT.md, "Several
processes"): on a real PostgreSQL server (embedded) and on one SQLite file.

What users would notice if these broke: an answer posted twice or never, a live answer cut off
by another process, a notification posted twice, a question acknowledged to Slack and then lost.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bench.report import Context
from bench.stack import ServeProcess, Stack
from bridge.testing.waiting import until

TTL = "2"  # BRIDGE_INSTANCE_TTL: how soon a dead process's work is taken over


def bot_replies(stack: Stack, channel: str, ts: str) -> list[dict[str, Any]]:
    return [m for m in stack.slack.thread(channel, ts) if m.get("bot_id")]


def shown(stack: Stack, channel: str, ts: str) -> str:
    return "\n".join(stack.slack.body_text(m) for m in bot_replies(stack, channel, ts))


@pytest.fixture
async def stack(tmp_path: Path):
    ctx = Context(quick=True, tmp=tmp_path)
    async with Stack(ctx, pace=0) as s:
        yield s


async def replica(stack: Stack, name: str, db: str, **env: str) -> ServeProcess:
    return await stack.serve(name, BRIDGE_DB=db, BRIDGE_INSTANCE_TTL=TTL, BRIDGE_ADAPTERS="slack",
                             MOVEWORKS_BASE_URL=f"{stack.sim.url}/rest/v1", **env)


# --- two replicas on one PostgreSQL ------------------------------------------------------------


async def test_two_replicas_answer_each_question_once_and_share_conversations(stack: Stack, pg_url: str):
    one = await replica(stack, "one", pg_url)
    two = await replica(stack, "two", pg_url)
    asked = []
    for i in range(6):
        serve = (one, two)[i % 2]
        ts, body = stack.slack_message(f"question {i}: how do I reset my password?", user=f"U{i % 3}",
                                       channel=f"D{i % 3}")
        assert await stack.post_slack(serve, body) == 200
        # Slack retries the same event on the other replica (a timeout on its side)
        assert await stack.post_slack((two, one)[i % 2], body) == 200
        asked.append((f"D{i % 3}", ts))
    for channel, ts in asked:
        await until(lambda c=channel, t=ts: "reset your password" in shown(stack, c, t), timeout=30,
                    what=f"the answer in {channel}")
    await asyncio.sleep(1.0)  # a duplicate would have shown up by now
    for channel, ts in asked:
        assert len(bot_replies(stack, channel, ts)) == 1, shown(stack, channel, ts)
    # a follow-up in a thread answered by one replica, sent to the other, continues the conversation
    channel, ts = asked[0]
    follow_ts, body = stack.slack_message("and my VPN?", user="U0", channel=channel, thread_ts=ts)
    assert await stack.post_slack(two, body) == 200
    await until(lambda: len(bot_replies(stack, channel, ts)) == 2, timeout=30, what="the follow-up's answer")
    conversations = stack.sim.state.user("employee@example.com").conversations
    users_turns = sum(1 for cid in conversations for m in stack.sim.state.user("employee@example.com")
                      .conversation_messages(cid) if m["actor"] == "USER")
    assert users_turns == 7  # six questions and the follow-up, each posted to Moveworks once
    assert len(conversations) == 6  # a DM's top-level messages are threads of their own; the follow-up
    # in one of them continued its conversation instead of starting a seventh


async def test_when_the_polling_replica_dies_the_other_delivers_within_seconds(stack: Stack, pg_url: str):
    one = await replica(stack, "one", pg_url, BRIDGE_POLLER="on", BRIDGE_POLL_INTERVAL="0.5")
    two = await replica(stack, "two", pg_url, BRIDGE_POLLER="on", BRIDGE_POLL_INTERVAL="0.5")
    ts, body = stack.slack_message("How do I reset my password?", user="U1", channel="D1")
    assert await stack.post_slack(one, body) == 200
    await until(lambda: "reset your password" in shown(stack, "D1", ts), timeout=30, what="the answer")
    conversation = next(iter(stack.sim.state.user("employee@example.com").conversations))
    stack.sim.inject_event("employee@example.com", "Your laptop request was approved.",
                           conversation_id=conversation)
    await until(lambda: "approved" in shown(stack, "D1", ts), timeout=30, what="the first notification")
    holder = await stack.metric(one, "bridge_poller_active") and one or two
    survivor = two if holder is one else one
    await holder.kill()
    killed_at = time.monotonic()
    stack.sim.inject_event("employee@example.com", "Your ticket INC-7 was resolved.",
                           conversation_id=conversation)
    await until(lambda: "INC-7" in shown(stack, "D1", ts), timeout=30, what="the notification after the kill")
    took = time.monotonic() - killed_at
    assert took < 15, f"took over after {took:.1f} s"
    assert shown(stack, "D1", ts).count("approved") == 1 and shown(stack, "D1", ts).count("INC-7") == 1
    assert await stack.metric(survivor, "bridge_poller_active") == 1


async def test_questions_acknowledged_before_a_kill_are_all_answered_or_told(stack: Stack, pg_url: str):
    one = await replica(stack, "one", pg_url)
    stack.script("slowly", "A slow answer " * 40, chunks=40, delay=0.1, times=20)
    asked = []
    for i in range(20):
        ts, body = stack.slack_message(f"answer slowly please {i}", user=f"U{i}", channel=f"D{i}")
        assert await stack.post_slack(one, body) == 200  # acknowledged: Slack will not resend it
        asked.append((f"D{i}", ts))
    await one.kill()
    two = await replica(stack, "two", pg_url)
    for channel, ts in asked:
        await until(lambda c=channel, t=ts: bot_replies(stack, c, t) and (
            "A slow answer" in shown(stack, c, t) and not bot_replies(stack, c, t)[-1].get("streaming")
            or "restarted" in shown(stack, c, t)), timeout=60, what=f"the answer or the note in {channel}")
    assert two.proc is not None and two.proc.returncode is None
    await asyncio.sleep(1.0)
    for channel, ts in asked:  # never two answers to one question
        text = shown(stack, channel, ts)
        assert text.count("A slow answer " * 40) <= 1, text


# --- one SQLite file -------------------------------------------------------------------------


async def test_a_second_serve_on_the_same_file_leaves_the_first_ones_answers_alone(stack: Stack, tmp_path: Path):
    db = str(tmp_path / "shared.db")
    one = await replica(stack, "one", db)
    stack.script("long", "A long answer " * 60, chunks=60, delay=0.05)
    ts, body = stack.slack_message("a long question", user="U1", channel="D1")
    assert await stack.post_slack(one, body) == 200
    await until(lambda: "A long answer" in shown(stack, "D1", ts), timeout=30, what="the answer streaming")
    await replica(stack, "two", db)  # an overlapping deploy starts while the answer streams
    await until(lambda: bot_replies(stack, "D1", ts) and not bot_replies(stack, "D1", ts)[-1].get("streaming")
                and shown(stack, "D1", ts).count("A long answer") == 60, timeout=30, what="the whole answer")
    assert "restarted" not in shown(stack, "D1", ts)


async def test_serve_and_poll_on_one_file_never_post_a_notification_twice(stack: Stack, tmp_path: Path):
    db = str(tmp_path / "shared.db")
    serve = await replica(stack, "serve", db, BRIDGE_POLLER="on", BRIDGE_POLL_INTERVAL="0.3")
    ts, body = stack.slack_message("How do I reset my password?", user="U1", channel="D1")
    assert await stack.post_slack(serve, body) == 200
    await until(lambda: "reset your password" in shown(stack, "D1", ts), timeout=30, what="the answer")
    poll = ServeProcess(stack.ctx, "poll", {**stack.env("poll"), "BRIDGE_DB": db, "BRIDGE_INSTANCE_TTL": TTL,
                                            "BRIDGE_ADAPTERS": "slack", "BRIDGE_POLL_INTERVAL": "0.3",
                                            "MOVEWORKS_BASE_URL": f"{stack.sim.url}/rest/v1"}, command="poll")
    stack.processes.append(poll)
    await poll.start()
    conversation = next(iter(stack.sim.state.user("employee@example.com").conversations))
    for i in range(30):
        stack.sim.inject_event("employee@example.com", f"Update number {i} on your request.",
                               conversation_id=conversation)
    await until(lambda: all(f"number {i} " in shown(stack, "D1", ts) for i in range(30)), timeout=60,
                what="every notification")
    await asyncio.sleep(1.5)
    text = shown(stack, "D1", ts)
    assert all(text.count(f"number {i} ") == 1 for i in range(30)), text
