"""The Slack adapter end to end: signed Events API requests over loopback HTTP to the real serve
app, the real Moveworks client against the simulator, and the real slack_sdk client against a fake
Slack Web API that keeps message state. Assertions are about what users see."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient

from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Answer, Employee, ThreadKey
from bridge.process.config import Settings
from bridge.process.runtime import build_runtime
from bridge.simulator import Simulator
from bridge.store import Store
from bridge.testing.slack_api import FakeSlack
from bridge.testing.waiting import until
from tests.harness import ServedBridge

SECRET = "test-signing-secret"
ASSISTANT = "moveworks-bridge-dev"
_ids = itertools.count(1)


def sign(body: str | bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature (the client side of what bolt verifies)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    raw = body if isinstance(body, bytes) else body.encode()
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def event_body(event: dict[str, Any], *, team: str = "T1", event_id: str | None = None,
               **extra: Any) -> dict[str, Any]:
    return {**extra,
        "token": "verification-token-unused",
        "team_id": team,
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_ids):06d}",
        "event_time": int(time.time()),
        "event": event,
        "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True, "enterprise_id": None,
                            "is_enterprise_install": False}],
    }


def new_ts() -> str:
    return f"{1600000000 + next(_ids)}.000100"


def dm(text: str, *, user: str = "U1", channel: str = "D1", ts: str | None = None, thread_ts: str | None = None,
       **extra: Any) -> dict[str, Any]:
    event = {"type": "message", "channel_type": "im", "channel": channel, "user": user, "text": text,
             "ts": ts or new_ts(), **extra}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def mention(text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None,
            thread_ts: str | None = None) -> dict[str, Any]:
    event = {"type": "app_mention", "channel": channel, "user": user, "text": f"<@UBOT> {text}",
             "ts": ts or new_ts()}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def channel_message(text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None,
                    thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"type": "message", "channel_type": "channel", "channel": channel, "user": user, "text": text,
             "ts": ts or new_ts(), **extra}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def questions(sim: Simulator) -> list[str]:
    """What employees asked Moveworks, as the simulator received it."""
    found = []
    for user in sim.state.users.values():
        for message in user.messages.values():
            if message.get("actor") == "USER":
                content = message.get("content") or {}
                kind = str(content.get("type") or "").lower()
                text = (content.get(kind) or {}).get("text") if kind else None
                if text is None:
                    text = next((v.get("text") for v in content.values() if isinstance(v, dict) and "text" in v), None)
                if text is not None:
                    found.append(text)
    return found




class Harness(ServedBridge):
    """Fake Slack + simulator + the bridge's serve app with only the Slack adapter."""

    platform = "slack"

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        # The fake always enforces Slack's documented per-method tiers; `limits` adds the
        # per-channel chat.postMessage limit.
        limits = options.pop("limits", False)
        super().__init__(tmp_path, FakeSlack(enforce_post_rate=limits), **options)
        self.fake.add_user("U1", "alice", "alice@example.com")
        self.fake.add_user("U2", "bob", "bob@example.com")

    def settings(self) -> Settings:
        o = self.options
        return Settings(
            db=str(self.tmp_path / "bridge.db"),
            adapters=("slack",),
            poller=False,
            moveworks_base_url=self.sim.base_url,
            moveworks_assistant_name=ASSISTANT,
            moveworks_api_key="sim-key",
            slack_bot_token=None if o.get("oauth") else self.fake.token,
            slack_signing_secret=None if o.get("socket") and not o.get("http_too") else SECRET,
            slack_app_token=self.fake.app_token if o.get("socket") else None,
            slack_api_url=self.fake.url,
            slack_streaming=o.get("streaming", "auto"),
            slack_channel_mode=o.get("channel_mode", "thread"),
            slack_client_id="cid" if o.get("oauth") else None,
            slack_client_secret="csecret" if o.get("oauth") else None,
            slack_allowed_teams=frozenset(o.get("allowed_teams", ())),
            shutdown_grace=2.0,
        )


    async def post(self, body: str | bytes, headers: dict[str, str], path: str = "/slack/events") -> tuple[int, str]:
        assert self.session is not None
        data = body if isinstance(body, bytes) else body.encode()
        async with self.session.post(self.url + path, data=data, headers=headers) as resp:
            return resp.status, await resp.text()

    async def send(self, event: dict[str, Any], *, event_id: str | None = None, retry: int | None = None,
                   team: str = "T1", body_extra: dict[str, Any] | None = None, **kw: Any) -> tuple[int, str]:
        body = json.dumps(event_body(event, event_id=event_id, team=team, **(body_extra or {})))
        headers = {"Content-Type": "application/json", **sign(body, **kw)}
        if retry:
            headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
        return await self.post(body, headers)

    async def click(self, payload: dict[str, Any]) -> tuple[int, str]:
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)})

    async def idle(self) -> None:
        """Every accepted question has been answered (or failed)."""
        assert self.runtime is not None
        await until(self.settled, what="answers to finish")

    def answers(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        return [m for m in self.fake.thread(channel, thread_ts) if m.get("bot_id")]

    async def answered(self, channel: str, thread_ts: str, count: int = 1) -> str:
        """Wait for `count` finished bot replies in a thread; returns the last one's text."""
        def done() -> bool:
            msgs = self.answers(channel, thread_ts)
            return len(msgs) >= count and not any(m.get("streaming") for m in msgs) and \
                self.runtime is not None and self.settled()
        await until(done, what=f"{count} answer(s) in {channel}/{thread_ts}")
        return self.fake.body_text(self.answers(channel, thread_ts)[-1])


@pytest_asyncio.fixture
async def harness_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []

    async def make(**options: Any) -> Harness:
        h = Harness(tmp_path / f"h{len(made)}", **options)
        (tmp_path / f"h{len(made)}").mkdir()
        made.append(h)
        await h.start()
        return h

    yield make
    for h in made:
        await h.stop()


@pytest_asyncio.fixture
async def h(harness_factory) -> Harness:
    return await harness_factory(streaming="edit")


# --- basics ------------------------------------------------------------------------------------


async def test_dm_is_answered_in_its_thread(harness_factory):
    h = await harness_factory(streaming="auto")
    h.sim.script_answer(text="Reset it at **id.example.com**.", match="password")
    event = dm("How do I reset my password?")
    status, _ = await h.send(event)
    assert status == 200
    text = await h.answered("D1", event["ts"])
    assert text == "Reset it at **id.example.com**."
    assert h.fake.calls_to("users.info"), "the asker's email is looked up"
    employee = h.runtime.store.sync.employees.get("slack", "T1", "U1")
    assert employee is not None and employee.email == "alice@example.com"


async def test_a_question_is_stored_before_slack_is_acknowledged(h, caplog):
    """process_before_response: the 200 goes only after `core.submit` stored the question; a
    submit that fails answers 500, so Slack delivers the event again and it is answered then."""
    from bridge.errors import StoreUnavailable

    assert h.runtime is not None and h.runtime.intake is not None
    h.sim.script_answer(text="Kept.", match="kept")
    core = h.adapter.core
    submit = core.submit

    async def store_down(inbound: Any) -> bool:
        raise StoreUnavailable("the store is down")

    core.submit = store_down
    event = dm("is my question kept?")
    with caplog.at_level(logging.CRITICAL, logger="slack_bolt"):
        status, _ = await h.send(event, event_id="Ev-kept")
    assert status == 500, "not acknowledged: Slack sends the event again"
    assert h.runtime.store.sync.queue.counts() == {"queued": 0, "taken": 0}
    core.submit = submit
    await h.runtime.intake.stop_taking()  # nobody answers meanwhile: the 200 alone says it is stored
    status, _ = await h.send(event, event_id="Ev-kept", retry=1)
    assert status == 200
    assert h.runtime.store.sync.queue.counts() == {"queued": 1, "taken": 0}
    h.runtime.intake.start()
    assert await h.answered("D1", event["ts"]) == "Kept."


async def test_mention_answered_in_thread_with_markup_decoded(h):
    h.sim.script_answer(text="Here you go.", match="vpn")
    event = mention("how do I set up <https://vpn.example.com|the VPN>, asks <@U2|bob>?")
    await h.send(event)
    assert await h.answered("C1", event["ts"]) == "Here you go."
    asked = [q for q in questions(h.sim) if "vpn" in q.lower()]
    assert asked == ["how do I set up the VPN (https://vpn.example.com), asks @bob?"]


async def test_follow_up_in_thread_reuses_conversation_even_after_restart(h):
    h.sim.script_answer(text="First.", match="first")
    h.sim.script_answer(text="Second.", match="second")
    h.sim.script_answer(text="Third.", match="third")
    root = mention("first question")
    await h.send(root)
    await h.answered("C1", root["ts"])
    await h.send(channel_message("second question, no mention", thread_ts=root["ts"]))
    assert await h.answered("C1", root["ts"], 2) == "Second."
    await h.restart()
    await h.send(channel_message("third question", thread_ts=root["ts"]))
    assert await h.answered("C1", root["ts"], 3) == "Third."
    links = list(h.runtime.store.sync.db.query("SELECT DISTINCT conversation_id FROM thread_links"))
    assert len(links) == 1, "one Moveworks conversation for the thread"


async def test_two_users_in_one_thread_get_their_own_conversations(h):
    h.sim.script_answer(text="For Alice.", match="alice")
    h.sim.script_answer(text="For Bob.", match="bob")
    root = mention("alice asks")
    await h.send(root)
    await h.answered("C1", root["ts"])
    await h.send(mention("bob asks too", user="U2", thread_ts=root["ts"]))  # others must mention the bot
    assert await h.answered("C1", root["ts"], 2) == "For Bob."
    a = h.runtime.store.sync.links.get(h.runtime.store.sync.links.for_conversation(
        list(h.runtime.store.sync.db.query("SELECT conversation_id FROM thread_links WHERE user_id='U1'"))[0]["conversation_id"]
    )[0].thread, "U1")
    b = list(h.runtime.store.sync.db.query("SELECT conversation_id FROM thread_links WHERE user_id='U2'"))[0]["conversation_id"]
    assert a is not None and a.conversation_id != b


async def test_another_users_unmentioned_reply_in_the_thread_is_not_answered(h):
    h.sim.script_answer(text="For Alice.", match="alice", times=2)
    root = mention("alice asks")
    await h.send(root)
    await h.answered("C1", root["ts"])
    bob = channel_message("bob chatting with alice, not the bot", user="U2", thread_ts=root["ts"])
    await h.send(bob)
    await h.send(channel_message("alice follows up", thread_ts=root["ts"]))  # hers needs no mention
    await h.answered("C1", root["ts"], 2)
    assert len(h.answers("C1", root["ts"])) == 2
    assert not [q for q in questions(h.sim) if "bob" in q]
    thread = ThreadKey("slack", "T1", "C1", root["ts"])
    assert h.runtime.store.sync.links.get(thread, "U1") is not None and h.runtime.store.sync.links.get(thread, "U2") is None
    claimed = {r["delivery_id"] for r in list(h.runtime.store.sync.db.query("SELECT delivery_id FROM inbound_deliveries"))}
    assert f"T1:C1:{bob['ts']}" not in claimed


async def test_channel_messages_not_for_the_bot_are_ignored(h):
    await h.send(channel_message("chatting with colleagues"))  # top level, no mention
    await h.send(channel_message("a reply in someone else's thread", thread_ts=new_ts()))
    sentinel = dm("sentinel question")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert len(h.fake.bot_messages()) == 1


async def test_retries_and_mention_pair_give_one_answer(h):
    h.sim.script_answer(text="Only once.", match="once", times=5)
    event = mention("answer once please")
    for retry in (None, 1, 2):  # three deliveries of one event
        status, _ = await h.send(event, event_id="EvSAME", retry=retry)
        assert status == 200
    # ...and the same message as a message.channels event (a mention arrives twice)
    twin = channel_message(event["text"], ts=event["ts"])
    await h.send(twin)
    await h.answered("C1", event["ts"])
    await h.idle()
    assert len(h.answers("C1", event["ts"])) == 1
    assert len(h.fake.calls_to("chat.postMessage")) == 1


async def test_bot_and_subtype_messages_are_ignored(h):
    await h.send(dm("from a bot", bot_id="B999"))
    await h.send(dm("from ourselves", user="UBOT"))
    await h.send(dm("edited", subtype="message_changed"))
    await h.send(dm("joined", subtype="channel_join"))
    await h.send({"type": "message", "subtype": "message_deleted", "channel": "D1", "channel_type": "im",
                  "ts": new_ts(), "deleted_ts": new_ts()})
    sentinel = dm("the only real question")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert len(h.fake.bot_messages()) == 1


# --- bad input ---------------------------------------------------------------------------------


async def test_bad_and_stale_signatures_are_rejected_without_side_effects(h):
    body = json.dumps(event_body(dm("unsigned")))
    assert (await h.post(body, {"Content-Type": "application/json"}))[0] == 401
    wrong = sign(body, secret="not-the-secret")
    assert (await h.post(body, {"Content-Type": "application/json", **wrong}))[0] == 401
    stale = sign(body, timestamp=int(time.time()) - 6 * 60)
    assert (await h.post(body, {"Content-Type": "application/json", **stale}))[0] == 401
    tampered = sign(body)
    assert (await h.post(body.replace("unsigned", "tampered"), {"Content-Type": "application/json", **tampered}))[0] == 401
    assert not h.fake.write_calls()
    assert list(h.runtime.store.sync.db.query("SELECT * FROM inbound_deliveries")) == []


async def test_url_verification_and_garbage(h):
    challenge = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"})
    status, text = await h.post(challenge, {"Content-Type": "application/json", **sign(challenge)})
    assert status == 200 and "abc123" in text
    for junk in ("{not json", "[]", json.dumps(event_body({"type": "brand_new_event_type"}))):
        status, _ = await h.post(junk, {"Content-Type": "application/json", **sign(junk)})
        assert status in (200, 400, 404), status
    status, _ = await h.send({"type": "reaction_added", "user": "U1", "reaction": "+1"})
    assert status == 200
    sentinel = dm("still alive?")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert len(h.fake.bot_messages()) == 1


async def test_real_users_with_unanswerable_messages_get_a_kind_reply(h):
    empty = mention("")
    await h.send(empty)
    huge = dm("x" * 50_000)
    await h.send(huge)
    files = dm("", subtype="file_share", files=[{"id": "F1", "name": "screenshot.png"}])
    await h.send(files)
    assert "empty" in (await h.answered("C1", empty["ts"])).lower()
    assert "too long" in (await h.answered("D1", huge["ts"])).lower()
    assert "file" in (await h.answered("D1", files["ts"])).lower()
    assert questions(h.sim) == []


# --- streaming and rendering -------------------------------------------------------------------


async def test_429_on_update_still_shows_the_final_text(h):
    h.sim.script_answer(text="Final words after a rate limit.", match="limit", chunks=4, delay=0.4)
    h.fake.fail_next("chat.update", "ratelimited", count=2, retry_after=1)
    event = dm("rate limit me")
    await h.send(event)
    assert await h.answered("D1", event["ts"]) == "Final words after a rate limit."
    assert h.fake.rate_limited == 2


async def test_native_stream_appends_and_recovers_from_expiry(harness_factory):
    h = await harness_factory(streaming="native")
    words = " ".join(f"word{i}" for i in range(60))
    h.sim.script_answer(text=words, match="long", chunks=6, delay=0.45)
    h.fake.fail_next("chat.appendStream", "message_not_in_streaming_state")
    event = mention("a long answer please")
    await h.send(event)
    await h.answered("C1", event["ts"])
    msgs = h.answers("C1", event["ts"])
    assert "".join(h.fake.body_text(m) for m in msgs) == words
    assert len(msgs) == 2, "continued in a fresh stream"
    starts = h.fake.calls_to("chat.startStream", ok=True)
    assert starts and all(c.params.get("recipient_user_id") == "U1" and c.params.get("recipient_team_id") == "T1"
                          for c in starts)
    assert not h.fake.calls_to("chat.update")


async def test_native_stop_failure_finishes_with_update(harness_factory):
    h = await harness_factory(streaming="native")
    h.sim.script_answer(text="Short and sweet.", match="sweet")
    h.fake.fail_next("chat.stopStream", "message_not_in_streaming_state")
    event = dm("sweet?")
    await h.send(event)
    assert await h.answered("D1", event["ts"]) == "Short and sweet."
    assert h.fake.calls_to("chat.update", ok=True), "finished with chat.update on the stream's ts"
    assert len(h.answers("D1", event["ts"])) == 1


async def test_a_crowd_in_one_workspace_gets_every_answer_without_a_single_429(harness_factory):
    # 20 people ask at once. chat.startStream and chat.stopStream are separate Tier 2 buckets with
    # room for 10 native streams (a start from one, a stop from the other), 5 more answers are
    # edited in place, the rest show the thread status and post the answer once.
    h = await harness_factory(streaming="native", limits=True)
    text = " ".join(f"word{i}" for i in range(40))
    h.sim.script_answer(text=text, match="crowd", chunks=4, delay=0.3, times=20)
    events = [dm(f"crowd question {i}", user=f"U{i}", channel=f"D{i}") for i in range(20)]
    for event in events:
        await h.send(event)
    await h.idle()
    for i, event in enumerate(events):
        assert h.fake.thread_text(f"D{i}", event["ts"]) == text
    assert h.fake.rate_limited == 0
    assert len(h.fake.calls_to("chat.startStream")) == 10
    posted_once = [f"D{i}" for i in range(20)
                   if not any(c.params.get("channel") == f"D{i}" for c in h.fake.calls
                              if c.method in ("chat.startStream", "chat.update"))]
    assert len(posted_once) == 5
    for channel in posted_once:
        assert len([c for c in h.fake.calls if c.params.get("channel") == channel
                    and c.method == "chat.postMessage"]) == 1
        assert any(s.get("channel_id") == channel for s in h.fake.statuses), "progress shown meanwhile"


async def test_a_stream_left_open_by_a_crash_is_stopped_in_place_after_restart(harness_factory):
    h = await harness_factory(streaming="native")
    # While an answer streams, its open stream (and open code fence) is on disk for a restart.
    h.sim.script_answer(text="```\n" + " ".join(f"line{i}" for i in range(30)) + "\n```", match="code",
                        chunks=6, delay=0.3)
    event = dm("code please")
    await h.send(event)
    store = h.runtime.relay.store.sync

    def checkpoint() -> dict[str, Any] | None:
        row = store.db.execute("SELECT checkpoint FROM replies WHERE status = 'streaming'").fetchone()
        return json.loads(row[0]) if row and row[0] else None

    await until(lambda: (checkpoint() or {}).get("fence"), what="a checkpoint while streaming")
    live = [m for m in h.answers("D1", event["ts"]) if m.get("streaming")]
    assert checkpoint() == {"channel": "D1", "ts": live[0]["ts"], "fence": "```"}
    await h.answered("D1", event["ts"])

    # What kill -9 leaves: a stream Slack still shows as in progress, and its reply row.
    client = AsyncWebClient(token=h.fake.token, base_url=h.fake.url)
    opened = await client.chat_startStream(channel="D1", thread_ts=event["ts"], markdown_text="```\nline0",
                                           recipient_team_id="T1", recipient_user_id="U1")
    link = store.links.get(ThreadKey("slack", "T1", "D1", event["ts"]), "U1")
    assert link is not None
    # the reply of a process that died (no heartbeat), so any live process may recover it
    store.replies.checkpoint(store.replies.start(link.id, owner="crashed-process"),
                             {"channel": "D1", "ts": opened["ts"], "fence": "```"})
    before = len(h.answers("D1", event["ts"]))
    await h.restart()

    def stopped() -> bool:
        return not h.fake.message("D1", opened["ts"]).get("streaming")

    await until(stopped, what="the interrupted stream to be stopped")
    text = h.fake.body_text(h.fake.message("D1", opened["ts"]))
    assert text.endswith("```\n\n⚠️ I was restarted before I could finish this answer. Please ask again.")
    assert len(h.answers("D1", event["ts"])) == before, "no separate note"


async def test_msg_too_long_is_survived_in_both_modes(harness_factory):
    h = await harness_factory(streaming="native")
    words = " ".join(f"token{i}" for i in range(40))
    h.sim.script_answer(text=words, match="big", chunks=4, delay=0.4)
    h.fake.fail_next("chat.appendStream", "msg_too_long")
    event = dm("big answer")
    await h.send(event)
    await h.answered("D1", event["ts"])
    assert "".join(h.fake.body_text(m) for m in h.answers("D1", event["ts"])) == words

    h2 = await harness_factory(streaming="edit")
    h2.sim.script_answer(text="**Bold** answer.", match="bold", times=2)
    h2.fake.fail_next("chat.postMessage", "msg_blocks_too_long")
    event = dm("bold answer")
    await h2.send(event)
    # A size refusal is survived without changing the format (it is not a markdown problem)...
    assert await h2.answered("D1", event["ts"]) == "**Bold** answer."
    # ...while a markdown block refused as invalid is sent again as mrkdwn sections.
    h2.fake.fail_next("chat.postMessage", "invalid_blocks")
    event = dm("bold answer again")
    await h2.send(event)
    assert await h2.answered("D1", event["ts"]) == "*Bold* answer."  # mrkdwn sections fallback


async def test_auto_falls_back_to_edits_when_native_is_refused(harness_factory):
    h = await harness_factory(streaming="auto")
    h.sim.script_answer(text="Delivered by edits.", match="fallback")
    h.fake.fail_next("chat.startStream", "missing_recipient_user_id")
    event = mention("fallback please")
    await h.send(event)
    assert await h.answered("C1", event["ts"]) == "Delivered by edits."
    assert h.fake.calls_to("chat.postMessage", ok=True)


async def test_long_answer_is_split_without_losing_a_character(harness_factory):
    for mode in ("edit", "native"):
        h = await harness_factory(streaming=mode)
        paragraphs = [f"Paragraph {i}: " + ("lorem ipsum dolor sit amet " * 12).strip() + "." for i in range(130)]
        text = "\n\n".join(paragraphs)
        assert len(text) > 40_000
        h.sim.script_answer(text=text, match="essay")
        event = dm("write an essay")
        await h.send(event)
        await h.answered("D1", event["ts"])
        msgs = h.answers("D1", event["ts"])
        assert len(msgs) >= 2, mode
        assert "".join(h.fake.body_text(m) for m in msgs) == text, mode


async def test_citations_actions_and_feedback_round_trip(h):
    h.sim.script_answer(
        text="Use the portal.",
        match="portal",
        citations=[{"title": "IT Handbook", "url": "https://kb.example.com/it"}],
        actions=[{"type": "URL_ACTION", "label": "Open portal", "url": "https://portal.example.com"},
                 {"type": "CALLBACK_ACTION", "label": "File a ticket"}],
    )
    event = dm("which portal?")
    await h.send(event)
    await h.answered("D1", event["ts"])
    answer = h.answers("D1", event["ts"])[-1]
    assert "[1]" in h.fake.body_text(answer)
    kinds = [b["type"] for b in answer["blocks"]]
    assert "context" in kinds and "actions" in kinds and "context_actions" in kinds
    citations = next(b for b in answer["blocks"] if b["type"] == "context")
    assert "https://kb.example.com/it" in citations["elements"][0]["text"]
    buttons = next(b for b in answer["blocks"] if b["type"] == "actions")["elements"]
    url_button = next(b for b in buttons if b.get("url"))
    callback_button = next(b for b in buttons if b.get("value"))
    assert url_button["url"] == "https://portal.example.com"

    feedback = next(b for b in answer["blocks"] if b["type"] == "context_actions")["elements"][0]
    status, _ = await h.click(block_action(answer, "D1", feedback["action_id"], feedback["positive_button"]["value"]))
    assert status == 200
    await until(lambda: h.fake.ephemerals, what="feedback ack")
    assert "thanks" in h.fake.ephemerals[-1]["text"].lower()
    assert h.fake.ephemerals[-1]["user"] == "U1"
    assert len(h.sim.state.feedback) == 1

    h.sim.script_answer(text="Ticket filed.", match="ticket")
    status, _ = await h.click(block_action(answer, "D1", callback_button["action_id"], callback_button["value"]))
    assert status == 200
    assert await h.answered("D1", event["ts"], 2)
    assert len(h.answers("D1", event["ts"])) == 2


def block_action(message: dict[str, Any], channel: str, action_id: str, value: str, user: str = "U1") -> dict:
    return {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "name": "alice", "team_id": "T1"},
        "api_app_id": "A1",
        "token": "unused",
        "trigger_id": f"trig{next(_ids)}",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
        "channel": {"id": channel},
        "message": {"ts": message["ts"], "thread_ts": message.get("thread_ts"), "type": "message"},
        "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button",
                     "action_ts": f"{time.time():.6f}"}],
    }


async def test_channel_mode_dm_answers_privately_with_a_pointer(harness_factory):
    h = await harness_factory(streaming="auto", channel_mode="dm")
    h.sim.script_answer(text="Your salary info.", match="salary")
    event = mention("what is my salary?")
    await h.send(event)
    await until(lambda: h.fake.bot_messages("D1"), what="the DM answer")
    await h.idle()
    pointer = h.answers("C1", event["ts"])
    assert len(pointer) == 1 and "direct message" in h.fake.body_text(pointer[0])
    assert h.fake.body_text(h.fake.bot_messages("D1")[-1]) == "Your salary info."


async def test_socket_mode_dispatch(harness_factory):
    h = await harness_factory(streaming="auto", socket=True)
    h.sim.script_answer(text="Over the socket.", match="socket", times=3)
    event = dm("socket question")
    body = event_body(event, event_id="EvSock")
    for attempt in range(3):  # a delivery and two retries
        ack = await h.fake.socket_send(body, retry_attempt=attempt)
        assert ack["envelope_id"]
    assert await h.answered("D1", event["ts"]) == "Over the socket."
    await h.idle()
    assert len(h.answers("D1", event["ts"])) == 1
    await h.fake.socket_send(event_body(dm("from a bot", bot_id="B1")))
    await h.fake.socket_send(event_body(dm("edited", subtype="message_changed")))
    m = mention("socket mention")
    await h.fake.socket_send(event_body(m))
    assert await h.answered("C1", m["ts"]) == "Over the socket."
    assert len(h.fake.bot_messages()) == 2


async def test_socket_mode_acknowledges_an_envelope_only_once_its_question_is_stored(harness_factory, caplog):
    from bridge.errors import StoreUnavailable

    h = await harness_factory(streaming="edit", socket=True)
    assert h.runtime is not None and h.runtime.intake is not None
    h.sim.script_answer(text="Kept.", match="kept")
    core = h.adapter.core
    submit = core.submit

    async def store_down(inbound: Any) -> bool:
        raise StoreUnavailable("the store is down")

    core.submit = store_down
    event = dm("is my socket question kept?")
    body = event_body(event, event_id="EvKept")
    with caplog.at_level(logging.CRITICAL, logger="slack_bolt"), pytest.raises(TimeoutError):
        await h.fake.socket_send(body, timeout=1.0)  # no ack: Slack sends the envelope again
    core.submit = submit
    await h.runtime.intake.stop_taking()  # nobody answers meanwhile: the ack alone says it is stored
    assert (await h.fake.socket_send(body, retry_attempt=1))["envelope_id"]
    assert h.runtime.store.sync.queue.counts() == {"queued": 1, "taken": 0}
    h.runtime.intake.start()
    assert await h.answered("D1", event["ts"]) == "Kept."


async def install(h: Harness, team: str, token: str) -> tuple[int, str]:
    """Click "Add to Slack" and come back from Slack with a code for `team`: (status, page)."""
    import re

    async with h.session.get(h.url + "/slack/install", allow_redirects=False) as resp:
        assert resp.status in (200, 302)
        page = await resp.text() + resp.headers.get("Location", "")
        cookie = resp.headers.get("Set-Cookie", "").split(";")[0]
    state = re.search(r"state=([\w\-]+)", page).group(1)
    code = f"code-{next(_ids)}"
    h.fake.add_oauth_code(code, team, token)
    async with h.session.get(h.url + f"/slack/oauth_redirect?code={code}&state={state}",
                             headers={"Cookie": cookie}) as resp:
        return resp.status, await resp.text()


async def test_oauth_install_then_answer_with_that_workspace_token(harness_factory, caplog):
    caplog.set_level(logging.WARNING, logger="adapters.slack")
    h = await harness_factory(streaming="edit", oauth=True)
    assert [r for r in caplog.records if "SLACK_ALLOWED_TEAMS is empty" in r.getMessage()], \
        "OAuth without an allow-list warns at start-up"
    status, page = await install(h, "T2", "xoxb-fake-T2")
    assert status == 200, page
    assert h.runtime.store.sync.kv.items("slack.bot")
    h.sim.script_answer(text="Hello T2.", match="t2")
    event = dm("hi from t2", channel="D9")
    body = json.dumps(event_body(event, team="T2"))
    status, _ = await h.post(body, {"Content-Type": "application/json", **sign(body)})
    assert status == 200
    assert await h.answered("D9", event["ts"]) == "Hello T2."
    assert {c.team for c in h.fake.calls_to("chat.postMessage")} == {"T2"}


async def test_doctor_check_and_proactive_dm(h):
    lines = await h.adapter.check()
    assert lines[0][:2] == ("slack auth", True) and h.fake.token not in repr(lines)
    opened = await h.adapter.open_direct(Employee("slack", "T1", "U2", "bob@example.com", "bob", None))
    assert opened is not None
    thread, address = opened
    sink = await h.adapter.open_reply(thread, address, user=None, proactive=True)
    await sink.finish(Answer(text="Your ticket was resolved."))
    posted = h.fake.bot_messages(thread.channel)
    assert len(posted) == 1 and posted[0]["thread_ts"] is None
    assert h.fake.body_text(posted[0]) == "Your ticket was resolved."
    assert await h.adapter.open_direct(Employee("slack", "T1", "UNKNOWN", None, None, None)) is None


# --- workspace allow-list (SLACK_ALLOWED_TEAMS) -------------------------------------------------


async def test_allow_list_ignores_other_workspaces_and_slack_connect_users(harness_factory):
    h = await harness_factory(streaming="edit", allowed_teams=("T1",))
    h.sim.script_answer(text="Answered.", match="", times=5)
    assert (await h.send(dm("from another workspace", channel="D9"), team="T9"))[0] == 200
    # Slack Connect: a user of another organisation mentions the bot in a channel shared with T1
    connect = mention("external user asks")
    connect.update({"user": "U9", "user_team": "TEXT", "team": "TEXT"})
    assert (await h.send(connect, body_extra={"is_ext_shared_channel": True}))[0] == 200
    # ...and clicks a button of ours (interactivity carries the clicker's own workspace)
    click = block_action({"ts": new_ts()}, "C1", "mw_feedback", '{"c":"c1","r":"r1","m":"m1","h":1,"cb":"x"}',
                         user="U9")
    click["user"]["team_id"] = click["team"]["id"] = "TEXT"
    assert (await h.click(click))[0] == 200
    sentinel = dm("sentinel from T1")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert questions(h.sim) == ["sentinel from T1"]
    assert len(h.fake.bot_messages()) == 1 and not h.fake.ephemerals
    assert not [c for c in h.fake.calls if c.params.get("user") == "U9"], "no lookups for the outsiders"
    claimed = [r["delivery_id"] for r in list(h.runtime.store.sync.db.query("SELECT delivery_id FROM inbound_deliveries"))]
    assert claimed == [f"T1:D1:{sentinel['ts']}"]


async def test_oauth_install_outside_the_allow_list_is_refused(harness_factory, caplog):
    caplog.set_level(logging.WARNING, logger="adapters.slack")
    h = await harness_factory(streaming="edit", oauth=True, allowed_teams=("T1",))
    assert not [r for r in caplog.records if "SLACK_ALLOWED_TEAMS is empty" in r.getMessage()]
    status, page = await install(h, "T2", "xoxb-fake-T2")
    assert status == 403
    assert "can't install" in page and "T2" in page and "SLACK_ALLOWED_TEAMS" in page
    assert "xoxb" not in page
    assert h.runtime.store.sync.kv.items("slack.bot") == [] and h.runtime.store.sync.kv.items("slack.installation") == []
    assert h.fake.revoked == ["xoxb-fake-T2"], "the token Slack issued is given back"
    assert (await install(h, "T1", "xoxb-fake-T1"))[0] == 200

    # A workspace installed before it was taken off the list: its events and deliveries are refused.
    from slack_sdk.oauth.installation_store.models.installation import Installation

    from adapters.slack.install import KvInstallationStore

    h.fake.add_team("T3", token="xoxb-fake-T3")
    await KvInstallationStore(h.runtime.store.kv.namespace).async_save(Installation(
        app_id="A1", team_id="T3", bot_token="xoxb-fake-T3", bot_id="BBOT", bot_user_id="UBOT", user_id="UADMIN"))
    h.sim.script_answer(text="Answered.", match="", times=5)
    await h.send(dm("from T3", channel="D3"), team="T3")
    sentinel = dm("from T1")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert questions(h.sim) == ["from T1"]
    assert {c.team for c in h.fake.write_calls()} == {"T1"}
    assert await h.adapter.open_direct(Employee("slack", "T3", "U1", "alice@example.com", "alice", None)) is None


# --- process roles and shutdown ------------------------------------------------------------------


async def test_poll_worker_starts_without_socket_mode_and_still_posts(harness_factory, tmp_path):
    h = await harness_factory(streaming="edit")
    settings = h.settings().with_(slack_app_token=h.fake.app_token, db=str(tmp_path / "poll.db"))
    runtime = build_runtime(settings, answers=False)
    adapter = runtime.relay.adapters["slack"]
    try:
        await adapter.start(inbound=False)
        assert not h.fake.calls_to("apps.connections.open") and not h.fake.socket_connected.is_set()
        thread, address = await adapter.open_direct(Employee("slack", "T1", "U2", "bob@example.com", "bob", None))
        sink = await adapter.open_reply(thread, address, user=None, proactive=True)
        await sink.finish(Answer(text="Your ticket was resolved."))
        assert [h.fake.body_text(m) for m in h.fake.bot_messages(thread.channel)] == ["Your ticket was resolved."]
        await adapter.stop_inbound()
        await adapter.stop()
    finally:
        await runtime.aclose()
    assert not h.fake.calls_to("apps.connections.open")


async def test_stop_inbound_closes_the_socket_and_answers_in_flight_still_finish(harness_factory):
    h = await harness_factory(streaming="auto", socket=True)
    h.sim.script_answer(text="Finished during the drain.", match="drain", chunks=3, delay=0.3)
    event = dm("answer me during the drain")
    await h.fake.socket_send(event_body(event))
    await until(lambda: h.runtime.relay.in_flight >= 1, what="the answer to start")
    await h.adapter.stop_inbound()
    await until(lambda: not h.fake.socket_connected.is_set(), what="the socket to close")
    assert await h.answered("D1", event["ts"]) == "Finished during the drain."
    assert len(h.fake.calls_to("apps.connections.open")) == 1, "no reconnection"
    assert not h.fake.socket_connected.is_set()
    await h.adapter.stop_inbound()  # idempotent; stop() at shutdown closes the rest


# --- hostile input -------------------------------------------------------------------------------


async def test_non_utf8_bodies_and_bad_signature_headers_never_give_500(h):
    raw = b'{"type":"event_callback","team_id":"T1","event":{"type":"message","text":"\xff\xfe"}}'
    for ctype in ("application/json", "application/x-www-form-urlencoded"):
        assert (await h.post(raw, {"Content-Type": ctype}))[0] == 401
        assert (await h.post(raw, {"Content-Type": ctype, **sign(raw)}))[0] == 400
    form = b"payload=%7B%22type%22%3A%22block_actions%22%7D\xff"
    assert (await h.post(form, {"Content-Type": "application/x-www-form-urlencoded", **sign(form)}))[0] == 400
    body = json.dumps(event_body(dm("bad headers")))
    for headers in ({"X-Slack-Request-Timestamp": "not-a-number", "X-Slack-Signature": "v0=00"},
                    {"X-Slack-Request-Timestamp": "9" * 400, "X-Slack-Signature": "v0=00"},
                    {**sign(body), "X-Slack-Signature": "garbage"}):
        assert (await h.post(body, {"Content-Type": "application/json", **headers}))[0] == 401
    assert not h.fake.write_calls()
    assert list(h.runtime.store.sync.db.query("SELECT * FROM inbound_deliveries")) == []


async def test_feedback_without_ids_or_with_an_unexpected_error_still_answers(h, caplog):
    message = {"ts": new_ts()}
    await h.click(block_action(message, "D1", "mw_feedback", '{"c":"","r":"","m":"","h":1,"cb":"x"}'))
    await until(lambda: len(h.fake.ephemerals) == 1, what="the first ephemeral")
    no_value = block_action(message, "D1", "mw_feedback", "")
    del no_value["actions"][0]["value"]
    await h.click(no_value)
    await until(lambda: len(h.fake.ephemerals) == 2, what="the second ephemeral")
    assert [e["text"] for e in h.fake.ephemerals] == ["Feedback isn't available for this answer."] * 2

    async def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("unexpected")

    h.runtime.relay.feedback = broken  # type: ignore[method-assign]
    await h.click(block_action(message, "D1", "mw_feedback", '{"c":"c1","r":"r1","m":"m1","h":1,"cb":"x"}'))
    await until(lambda: len(h.fake.ephemerals) == 3, what="the third ephemeral")
    assert "couldn't record your feedback" in h.fake.ephemerals[-1]["text"]
    assert all(e["user"] == "U1" and e["channel"] == "D1" for e in h.fake.ephemerals)
    assert [r for r in caplog.records if r.exc_info and "feedback" in r.getMessage()], "logged with the traceback"


# --- proactive posts and the Tier 3 budget -------------------------------------------------------


class VirtualClock:
    """Time that moves only when someone sleeps: rate limits are honoured without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def test_proactive_backlog_to_one_thread_is_not_held_by_the_edit_budget(tmp_path):
    from adapters.slack.app import EDIT_RATE, SlackAdapter
    from bridge.process.services import Services

    clock = VirtualClock()
    fake = FakeSlack(clock=clock, enforce_post_rate=True)  # ~1 chat.postMessage/s per channel, then 429
    await fake.start()
    store = Store(str(tmp_path / "b.db"))
    try:
        settings = Settings(db=str(tmp_path / "b.db"), adapters=("slack",), slack_bot_token=fake.token,
                            slack_signing_secret=SECRET, slack_api_url=fake.url, slack_streaming="auto")
        budgets = Budgets(clock=clock, sleep=clock.sleep)
        adapter = SlackAdapter(Services(settings=settings, store=store, relay=None, budgets=budgets),  # type: ignore[arg-type]
                               clock=clock, sleep=clock.sleep)
        thread = ThreadKey("slack", "T1", "C1", "1600000000.000100")
        address = {"channel": "C1", "thread_ts": thread.thread}
        started = clock.now
        count = 120  # well past one minute of Slack's Tier 3 budget for edits (50/min)
        for i in range(count):  # the poller delivers to one thread one event at a time
            sink = await adapter.open_reply(thread, address, user=None, proactive=True)
            await sink.finish(Answer(text=f"Update {i}: your request moved on."))
        texts = [fake.body_text(m) for m in fake.thread("C1", thread.thread)]
        assert texts == [f"Update {i}: your request moved on." for i in range(count)], "nothing lost or reordered"
        assert fake.rate_limited > 0, "the per-channel post limit was met and waited out"
        assert budgets.get("slack:T1", EDIT_RATE).granted == 0, "posts take no Tier 3 edit tokens"
        # ~1 post per second (the channel limit), not 50 per minute (the edit budget)
        assert clock.now - started < count * 60 / EDIT_RATE.count * 0.9
    finally:
        store.close()
        await fake.stop()
