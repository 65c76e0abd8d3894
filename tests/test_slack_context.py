"""A mention in the middle of a thread the bot is not part of: the question sent to Moveworks carries
the thread's earlier messages (conversations.replies, bounded, names resolved, bot messages
marked). End to end over loopback with the fake Slack and the simulator."""

# ruff: noqa: F811 - pytest fixtures imported from the harness modules are parameters here

from __future__ import annotations

from bridge import texts
from bridge.testing.waiting import until
from tests.test_slack_e2e import Harness, harness_factory, questions  # noqa: F401 - a fixture


def seed_thread(h: Harness) -> str:
    """A channel thread: people, another app and the bot itself (a notice) talking; returns its ts."""
    h.fake.add_user("U4", "carol", "carol@example.com")
    root = h.fake.post_as_user("C1", "Our build server is down since this morning", user="U2")["ts"]
    h.fake.post_as_user("C1", "Same here, the deploy job fails with a 503 for <@U4>", user="U3", thread_ts=root)
    h.fake.messages["C1"].append({"ts": h.fake._new_ts(), "thread_ts": root, "channel": "C1", "bot_id": "BCI",
                                  "username": "CI Bot", "text": "Build #42 failed", "type": "message"})
    h.fake.messages["C1"].append({"ts": h.fake._new_ts(), "thread_ts": root, "channel": "C1", "bot_id": "BBOT",
                                  "user": "UBOT", "text": "preview", "type": "message",
                                  "blocks": [{"type": "markdown", "text": "Try restarting the runner."}]})
    carol = h.fake.post_as_user("C1", "I restarted it, still **down**", user="U4", thread_ts=root)
    del h.fake.message("C1", carol["ts"])["user_profile"]  # her name needs users.info
    return root


def bot_replies(h: Harness, root: str) -> int:
    return len(h.answers("C1", root))


async def test_a_mention_mid_thread_carries_the_earlier_messages(harness_factory):
    h = await harness_factory(streaming="edit")
    root = seed_thread(h)
    before = bot_replies(h, root)
    h.sim.script_answer(text="Let me check the build server.", match="help with this")
    mention = h.fake.post_as_user("C1", "<@UBOT> can you help with this?", user="U1", thread_ts=root, mention=True)
    await h.send(mention)
    assert await h.answered("C1", root, before + 1) == "Let me check the build server."
    asked = questions(h.sim)[-1]
    assert asked == texts.THREAD_CONTEXT.format(context="\n".join([
        "bob: Our build server is down since this morning",
        texts.SLACK_SOMEONE + ": Same here, the deploy job fails with a 503 for @carol",
        texts.SLACK_CONTEXT_OTHER_BOT.format(name="CI Bot") + ": Build #42 failed",
        texts.THREAD_CONTEXT_BOT + ": Try restarting the runner.",
        "carol: I restarted it, still **down**",
    ]), question="can you help with this?")
    replies = h.fake.calls_to("conversations.replies", ok=True)
    assert len(replies) == 1 and replies[0].params["latest"] == mention["ts"]
    assert [c.params["user"] for c in h.fake.calls_to("users.info") if c.params["user"] == "U4"] == ["U4"]

    # A follow-up of the same person: the conversation has the context already.
    h.sim.script_answer(text="Restart it from the console.", match="what now")
    follow = h.fake.post_as_user("C1", "what now?", user="U1", thread_ts=root)
    await h.send(follow)
    assert await h.answered("C1", root, before + 2) == "Restart it from the console."
    assert questions(h.sim)[-1] == "what now?"
    assert len(h.fake.calls_to("conversations.replies")) == 1

    # The name is kept in the store for every process: another mention needs no lookup.
    lookups = len(h.fake.calls_to("users.info"))
    h.sim.script_answer(text="Bob, see above.", match="bob too")
    await h.send(h.fake.post_as_user("C1", "<@UBOT> bob too", user="U2", thread_ts=root, mention=True))
    await h.answered("C1", root, before + 3)
    assert "carol: I restarted it" in questions(h.sim)[-1]
    assert len([c for c in h.fake.calls_to("users.info")[lookups:] if c.params["user"] == "U4"]) == 0
    assert h.runtime.store.sync.kv.namespace("slack.names").get("T1:U4") == "carol"


async def test_a_long_thread_is_bounded_to_its_start_and_latest_messages(harness_factory):
    h = await harness_factory(streaming="edit")
    root = h.fake.post_as_user("C1", "The start of a long discussion", user="U2")["ts"]
    for i in range(60):
        h.fake.post_as_user("C1", f"message {i} " + "x" * 150, user="U2", thread_ts=root)
    h.sim.script_answer(text="Summary.", match="summarise")
    await h.send(h.fake.post_as_user("C1", "<@UBOT> summarise", user="U1", thread_ts=root, mention=True))
    await until(lambda: questions(h.sim), what="the question")
    await h.idle()
    asked = questions(h.sim)[-1]
    lines = asked.split("\n\nMy question:")[0].splitlines()[1:]
    assert lines[0] == "bob: The start of a long discussion"
    assert lines[-1].startswith("bob: message 59 ") and not any("message 39 " in line for line in lines)
    assert len(lines) <= 21 and len(asked) <= texts.MAX_INPUT_CHARS


async def test_without_the_history_scope_the_question_goes_alone(harness_factory):
    h = await harness_factory(streaming="edit")
    root = seed_thread(h)
    h.fake.teams["T1"].scopes.discard("channels:history")
    before = bot_replies(h, root)
    h.sim.script_answer(text="Answered without context.", match="help me")
    await h.send(h.fake.post_as_user("C1", "<@UBOT> help me", user="U1", thread_ts=root, mention=True))
    assert await h.answered("C1", root, before + 1) == "Answered without context."
    assert questions(h.sim)[-1] == "help me"
    assert [c.error for c in h.fake.calls_to("conversations.replies")] == ["missing_scope"]


async def test_a_mention_that_starts_a_thread_reads_nothing(harness_factory):
    h = await harness_factory(streaming="edit")
    h.sim.script_answer(text="Fresh.", match="fresh")
    mention = h.fake.post_as_user("C1", "<@UBOT> a fresh question", user="U1", mention=True)
    await h.send(mention)
    assert await h.answered("C1", mention["ts"]) == "Fresh."
    assert questions(h.sim)[-1] == "a fresh question"
    assert not h.fake.calls_to("conversations.replies")
