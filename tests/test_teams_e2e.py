"""The Teams adapter end to end: inbound activities POSTed over loopback HTTP to the real serve app
(through botbuilder's real `CloudAdapter`), the real Moveworks client against the simulator, and
every outbound Bot Framework call captured by a fake connector that keeps what users see.
Assertions are about visible text and the exact JSON on the wire."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge.models import Employee
from bridge.process.config import Settings
from bridge.simulator import Simulator
from bridge.testing.bot_connector import TENANT, FakeConnector, TeamsUser, streaminfo_of
from bridge.testing.waiting import until
from tests.harness import ServedBridge

ASSISTANT = "moveworks-bridge-dev"




def questions(sim: Simulator) -> list[tuple[str, str]]:
    """(identity, text) of every question Moveworks received."""
    found = []
    for identity, user in sim.state.users.items():
        for message in user.messages.values():
            if message.get("actor") == "USER":
                content = message.get("content") or {}
                text = next((v.get("text") for v in content.values() if isinstance(v, dict) and "text" in v), "")
                found.append((identity, text))
    return found


class Harness(ServedBridge):
    platform = "teams"

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        super().__init__(tmp_path, FakeConnector(), **options)

    def settings(self) -> Settings:
        o = self.options
        return Settings(
            db=str(self.tmp_path / "bridge.db"),
            adapters=("teams",),
            poller=False,
            moveworks_base_url=self.sim.base_url,
            moveworks_assistant_name=ASSISTANT,
            moveworks_auth=o.get("auth", "api_key"),
            moveworks_api_key="sim-key",
            teams_app_id=o.get("app_id"),
            teams_app_password=o.get("app_password"),
            teams_allowed_tenants=frozenset(o.get("allowed_tenants", ())),
            shutdown_grace=2.0,
        )

    async def start(self) -> None:
        await super().start()
        self.alice = TeamsUser("29:alice", "aad-alice", "Alice", self.fake.url)
        self.bob = TeamsUser("29:bob", "aad-bob", "Bob", self.fake.url)
        self.fake.add_member("29:alice", "aad-alice", "Alice", "alice@example.com")
        self.fake.add_member("29:bob", "aad-bob", "Bob", "bob@example.com")


    async def post(self, activity: Any, *, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> tuple[int, str]:
        assert self.session is not None
        data = raw if raw is not None else json.dumps(activity).encode()
        hdrs = {"Content-Type": "application/json"} if headers is None else headers
        async with self.session.post(self.url + "/api/messages", data=data, headers=hdrs) as resp:
            return resp.status, await resp.text()

    async def drain(self) -> None:
        assert self.runtime is not None
        await until(self.settled, what="answers to finish")


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


def final_of(fake: FakeConnector, conversation_id: str) -> list[Any]:
    return fake.in_conversation(conversation_id)


# --- personal chat: native streaming ---------------------------------------------------------------


async def test_a_question_is_stored_before_teams_gets_its_answer(h: Harness, caplog: Any) -> None:
    """The POST is answered when the turn returns, after `core.submit` stored the question; a
    submit that fails answers 500, so Teams sends the activity again and it is answered then."""
    from bridge.errors import StoreUnavailable

    assert h.runtime is not None and h.runtime.intake is not None
    h.sim.script_answer(text="Kept.", match="kept")
    core = h.adapter.core
    submit = core.submit

    async def store_down(inbound: Any) -> bool:
        raise StoreUnavailable("the store is down")

    core.submit = store_down
    activity = h.alice.personal("is my question kept?")
    with caplog.at_level(logging.CRITICAL):
        status, _ = await h.post(activity)
    assert status == 500, "not acknowledged: Teams sends the activity again"
    assert h.runtime.store.sync.queue.counts() == {"queued": 0, "taken": 0}
    core.submit = submit
    await h.runtime.intake.stop_taking()  # nobody answers meanwhile: the 201 alone says it is stored
    status, _ = await h.post(activity)
    assert status in (200, 201)
    assert h.runtime.store.sync.queue.counts() == {"queued": 1, "taken": 0}
    h.runtime.intake.start()
    await h.drain()
    [answer] = h.fake.in_conversation(activity["conversation"]["id"])
    assert answer.text == "Kept."


async def test_personal_chat_streams_natively_with_streaminfo_on_the_wire(h: Harness) -> None:
    h.sim.script_answer(
        text="To reset your password, open **Settings** and choose *Security*. Then follow the prompts "
             "to confirm your identity with the authenticator app.",
        match="password", reasoning=["Searching the knowledge base", "Reading the article"], chunks=4,
        delay=0.4,
    )
    activity = h.alice.personal("How do I reset my password?")
    status, _ = await h.post(activity)
    assert status in (200, 201)
    await h.drain()
    conv = activity["conversation"]["id"]
    messages = h.fake.in_conversation(conv)
    assert len(messages) == 1
    stream = messages[0]
    assert stream.stream and stream.stream_state == "final"
    assert stream.text.startswith("To reset your password, open **Settings** and choose *Security*.")
    posts = [c for c in h.fake.calls_for(conv) if c.method == "POST"]
    typing = [c for c in posts if c.json.get("type") == "typing" and streaminfo_of(c.json)]
    # the first streaming request: informative, sequence 1, no stream id yet
    first = streaminfo_of(typing[0].json)
    assert first == {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}
    sequences = [streaminfo_of(c.json)["streamSequence"] for c in typing]
    assert sequences == list(range(1, len(typing) + 1))
    assert all(streaminfo_of(c.json).get("streamId") == stream.id for c in typing[1:])
    final = [c for c in posts if c.json.get("type") == "message"]
    assert len(final) == 1
    info = streaminfo_of(final[0].json)
    assert info == {"type": "streaminfo", "streamId": stream.id, "streamType": "final"}
    ai = [e for e in final[0].json["entities"] if e.get("@type") == "Message"]
    assert ai and ai[0]["additionalType"] == ["AIGeneratedContent"]
    assert "feedbackLoopEnabled" in (final[0].json.get("channelData") or {})
    # the question reached Moveworks as asked
    assert ("employee@example.com", "How do I reset my password?") in questions(h.sim)


# --- channels and group chats: post, then update_activity -------------------------------------------


async def test_channel_mention_answers_in_the_reply_chain_with_edits(h: Harness) -> None:
    text = ("The VPN address is **vpn.example.com**. Use the *Corporate* profile and sign in with your "
            "usual account; the first connection may take a minute while the profile downloads.")
    h.sim.script_answer(text=text, match="vpn", chunks=6, delay=0.5)
    activity = h.alice.channel("What is the VPN address?")
    status, _ = await h.post(activity)
    assert status == 201
    await h.drain()
    chain = activity["conversation"]["id"]
    assert chain.endswith(f";messageid={activity['id']}")
    messages = h.fake.in_conversation(chain)
    assert [m.text for m in messages] == [text]
    calls = h.fake.calls_for(chain)
    assert any(c.method == "PUT" for c in calls), "the answer grew by edits"
    assert not any(streaminfo_of(c.json) for c in calls), "no native streaming in channels"
    # posted into the conversation (the reply chain), not as a reply to a synthetic activity id
    assert any(c.method == "POST" and c.path == f"/v3/conversations/{chain}/activities" for c in calls)
    assert ("employee@example.com", "What is the VPN address?") in questions(h.sim), "mention stripped"
    final_put = [c for c in calls if c.method == "PUT"][-1].json
    assert final_put["textFormat"] == "markdown"
    assert any(e.get("additionalType") == ["AIGeneratedContent"] for e in final_put.get("entities", []))


async def test_channel_message_without_mention_is_ignored(h: Harness) -> None:
    activity = h.alice.channel("chatting with colleagues", mention=False)
    status, _ = await h.post(activity)
    assert status == 201
    await asyncio.sleep(0.3)
    assert h.fake.writes() == []
    assert questions(h.sim) == []


async def test_group_chat_answers_only_when_mentioned(h: Harness) -> None:
    h.sim.script_answer(text="Lunch is served at noon in the **main hall**.", match="lunch")
    await h.post(h.bob.group("anyone for lunch?", mention=False))
    activity = h.bob.group("when is lunch?")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    assert [m.text for m in h.fake.in_conversation(conv)] == ["Lunch is served at noon in the **main hall**."]
    assert [q for _, q in questions(h.sim)] == ["when is lunch?"]


# --- conversations: follow-ups, two people, redelivery, restarts --------------------------------------


def conversations_of(h: Harness) -> list[str]:
    return [c for user in h.sim.state.users.values() for c in user.conversations]


async def test_a_stream_left_open_by_a_crash_is_ended_in_place_after_restart(h: Harness) -> None:
    h.sim.script_answer(text=" ".join(f"word{i}" for i in range(40)), match="slow", chunks=5, delay=0.4)
    activity = h.alice.personal("a slow answer please")
    await h.post(activity)
    conv = activity["conversation"]["id"]
    store = h.runtime.relay.store.sync

    def checkpoint() -> dict[str, Any] | None:
        row = store.db.execute("SELECT checkpoint FROM replies WHERE status = 'streaming'").fetchone()
        return json.loads(row[0]) if row and row[0] else None

    await until(lambda: checkpoint() is not None, what="a checkpoint while streaming")
    assert checkpoint() == {"stream_id": h.fake.in_conversation(conv)[0].id}
    await h.drain()

    # What kill -9 leaves: a stream Teams still shows as in progress, and its reply row.
    assert h.session is not None
    body = {"type": "typing", "text": "word0 word1",
            "entities": [{"type": "streaminfo", "streamType": "streaming", "streamSequence": 1}]}
    async with h.session.post(f"{h.fake.url}v3/conversations/{conv}/activities", json=body) as resp:
        stream_id = (await resp.json())["id"]
    link_id = store.db.execute("SELECT id FROM thread_links").fetchone()[0]
    # the reply of a process that died (no heartbeat), so any live process may recover it
    store.replies.checkpoint(store.replies.start(link_id, owner="crashed-process"), {"stream_id": stream_id})
    before = len(h.fake.in_conversation(conv))
    await h.restart()

    await until(lambda: h.fake.activities[stream_id].stream_state == "final", what="the stream to be ended")
    assert h.fake.activities[stream_id].text == \
        "⚠️ I was restarted before I could finish this answer. Please ask again."
    assert len(h.fake.in_conversation(conv)) == before, "no separate note"


async def test_follow_ups_continue_the_conversation_even_after_a_restart(h: Harness) -> None:
    first = h.alice.channel("first question")
    await h.post(first)
    await h.drain()
    await h.post(h.alice.channel("second question", root_id=first["id"]))
    await h.drain()
    assert len(conversations_of(h)) == 1
    await h.restart()
    await h.post(h.alice.channel("third question", root_id=first["id"]))
    await h.drain()
    assert len(conversations_of(h)) == 1
    chain = first["conversation"]["id"]
    assert len(h.fake.in_conversation(chain)) == 3
    # personal chat follow-ups too
    await h.post(h.alice.personal("dm one"))
    await h.drain()
    await h.post(h.alice.personal("dm two"))
    await h.drain()
    assert len(conversations_of(h)) == 2


async def test_two_people_in_one_chain_get_their_own_conversations(h: Harness) -> None:
    first = h.alice.channel("alice asks")
    await h.post(first)
    await h.drain()
    await h.post(h.bob.channel("bob asks too", root_id=first["id"]))
    await h.drain()
    store = h.runtime.store.sync
    from bridge.models import ThreadKey
    thread = ThreadKey("teams", TENANT, "19:general@thread.tacv2", first["id"])
    alice, bob = store.links.get(thread, "aad-alice"), store.links.get(thread, "aad-bob")
    assert alice and bob and alice.conversation_id != bob.conversation_id
    # emails came from the Teams roster
    assert store.employees.get("teams", TENANT, "aad-alice").email == "alice@example.com"
    assert store.employees.get("teams", TENANT, "aad-bob").email == "bob@example.com"
    assert any(c.method == "GET" and c.path.endswith("/members/29:bob") for c in h.fake.calls)


async def test_user_jwt_mode_asks_as_each_employee_by_roster_email(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    h = Harness(tmp_path, auth="user_jwt")
    h.sim.config.jwt_public_key = public
    h.sim.config.jwt_issuer = "bridge-test"
    h.sim.config.jwt_audience = "moveworks-test"
    base = h.settings

    def settings() -> Settings:
        return base().with_(moveworks_jwt_private_key=private, moveworks_jwt_issuer="bridge-test",
                            moveworks_jwt_audience="moveworks-test", moveworks_token_url=h.sim.token_url)

    h.settings = settings  # type: ignore[method-assign]
    await h.start()
    try:
        first = h.alice.channel("alice asks")
        await h.post(first)
        await h.drain()
        await h.post(h.bob.channel("bob asks", root_id=first["id"]))
        await h.drain()
        assert sorted(identity for identity, _ in questions(h.sim)) == ["alice@example.com", "bob@example.com"]
        assert len(h.fake.in_conversation(first["conversation"]["id"])) == 2
    finally:
        await h.stop()


async def test_redelivered_activity_is_answered_once(h: Harness) -> None:
    activity = h.alice.personal("is this deduped?")
    assert (await h.post(activity))[0] == 201
    assert (await h.post(activity))[0] == 201  # Teams re-sends after its 15 s timeout
    await h.drain()
    assert len(questions(h.sim)) == 1
    assert len(h.fake.in_conversation(activity["conversation"]["id"])) == 1


# --- rate limits and streaming failures ---------------------------------------------------------------


async def test_429_on_update_is_retried_and_the_final_text_lands(h: Harness) -> None:
    text = "Your laptop refresh is scheduled for **next Tuesday**. Bring the old device to the IT desk."
    h.sim.script_answer(text=text, match="laptop", chunks=3, delay=0.3)
    h.fake.fail_next("rate_limit", method="PUT", count=2, retry_after=0.3)
    activity = h.alice.channel("when is my laptop refresh?")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    assert [m.text for m in h.fake.in_conversation(chain)] == [text]
    assert [c.status for c in h.fake.calls_for(chain) if c.method == "PUT"].count(429) == 2


async def test_streaming_time_exceeded_finishes_with_a_plain_update(h: Harness) -> None:
    text = "Step one: open the portal. Step two: pick **Hardware**. Step three: submit the form and wait."
    h.sim.script_answer(text=text, match="portal", chunks=5, delay=0.4)
    h.fake.fail_next("stream_timeout", stream_type="streaming")
    activity = h.alice.personal("how do I use the portal?")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    messages = h.fake.in_conversation(conv)
    assert [m.text for m in messages] == [text]
    calls = h.fake.calls_for(conv)
    last = calls[-1]
    assert last.method == "PUT" and last.status == 200 and streaminfo_of(last.json) is None
    assert last.path.endswith(f"/activities/{messages[0].id}")


async def test_user_cancel_stops_the_answer(h: Harness) -> None:
    text = " ".join(f"word{i}" for i in range(80))
    h.sim.script_answer(text=text, match="essay", chunks=20, delay=0.3)
    h.fake.fail_next("stream_canceled", stream_type="streaming")
    activity = h.alice.personal("write me an essay")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    calls = h.fake.calls_for(conv)
    canceled_at = next(i for i, c in enumerate(calls) if c.status == 403)
    assert calls[canceled_at:] == [calls[canceled_at]], "nothing written after the user pressed Stop"
    assert h.runtime.store.sync.db.execute("SELECT status FROM replies").fetchall()[-1][0] == "canceled"
    message = h.fake.in_conversation(conv)[0]
    assert message.text != text  # the partial text stays as the user stopped it


async def test_native_streaming_refused_falls_back_to_edits(h: Harness) -> None:
    h.sim.script_answer(text="Fallback answer with **bold**.", match="fallback", chunks=3, delay=0.3)
    h.fake.fail_next("stream_not_allowed")
    activity = h.alice.personal("fallback please")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    assert [m.text for m in h.fake.in_conversation(conv)] == ["Fallback answer with **bold**."]


async def test_long_answer_is_split_without_losing_a_character(h: Harness) -> None:
    words = [f"w{i:05d}" for i in range(4000)]  # ~28,000 characters
    text = " ".join(words)
    h.sim.script_answer(text=text, match="long", chunks=3, delay=0.2)
    activity = h.alice.personal("a long one please")
    await h.post(activity)
    await h.drain()
    parts = [m.text for m in h.fake.in_conversation(activity["conversation"]["id"])]
    assert len(parts) >= 3
    assert "".join(parts) == text


async def test_a_long_answer_keeps_streaming_in_a_new_message_when_the_first_is_full(h: Harness) -> None:
    text = " ".join(f"w{i:05d}" for i in range(4000))  # ~28,000 characters: three messages
    h.sim.script_answer(text=text, match="longer", chunks=10, delay=0.3)
    activity = h.alice.personal("a longer one please")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    messages = h.fake.in_conversation(conv)
    assert "".join(m.text for m in messages) == text
    assert len(messages) == 3 and all(m.stream and m.stream_state == "final" for m in messages[:2])
    # the first message was ended when full, and a second stream started, while Moveworks still wrote
    end = next(iter(h.sim.timings.values()))["end"]
    infos = [(c.at, streaminfo_of(c.json) or {}) for c in h.fake.calls_for(conv) if c.method == "POST"]
    first_ended = next(at for at, info in infos if info.get("streamType") == "final")
    second_started = next(at for at, info in infos
                          if at > first_ended and info.get("streamType") == "streaming" and "streamId" not in info)
    assert first_ended < second_started < end


# --- feedback, actions ------------------------------------------------------------------------------


async def test_feedback_invoke_reaches_moveworks_and_answers_200_empty(h: Harness) -> None:
    activity = h.alice.personal("rate this answer")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    message = h.fake.in_conversation(conv)[0]
    status, body = await h.post(h.alice.feedback(activity["conversation"], message.id, "like"))
    assert (status, body) == (200, "")
    assert len(h.sim.state.feedback) == 1
    assert h.fake.in_conversation(conv) == [message], "no message posted for feedback"


async def test_feedback_from_someone_else_is_refused_in_the_reply_chain(h: Harness) -> None:
    activity = h.alice.channel("alice asks in a channel")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    answer = h.fake.in_conversation(chain)[0]
    status, body = await h.post(h.bob.feedback(activity["conversation"], answer.id, "dislike"))
    assert (status, body) == (200, "")
    assert h.sim.state.feedback == []
    notes = h.fake.in_conversation(chain)[1:]
    assert [m.text for m in notes] == ["Only the person who asked can rate this answer."]
    post = [c for c in h.fake.calls_for(chain) if c.method == "POST" and c.json.get("text") == notes[0].text]
    assert post and post[0].path == f"/v3/conversations/{chain}/activities"  # in the chain, not a new post


async def test_feedback_that_cannot_be_recorded_tells_the_user(h: Harness) -> None:
    activity = h.alice.personal("rate this answer later")
    await h.post(activity)
    await h.drain()
    conv = activity["conversation"]["id"]
    answer = h.fake.in_conversation(conv)[0]
    h.sim.inject_fault("server_error", endpoint="feedback")
    status, body = await h.post(h.alice.feedback(activity["conversation"], answer.id, "like"))
    assert (status, body) == (200, "")
    notes = h.fake.in_conversation(conv)[1:]
    assert len(notes) == 1 and notes[0].text.startswith("Sorry, I couldn't record your feedback")


async def test_card_action_button_runs_the_callback(h: Harness) -> None:
    h.sim.script_answer(text="I can file a ticket for you.", match="ticket",
                        actions=[{"type": "CALLBACK_ACTION", "label": "File ticket"}])
    activity = h.alice.channel("please open a ticket")
    await h.post(activity)
    await h.drain()
    chain = activity["conversation"]["id"]
    text_message, card_message = h.fake.in_conversation(chain)  # the buttons are a message of their own
    card = card_message.cards[0]
    submit = next(a for a in card["actions"] if a["type"] == "Action.Submit")
    press = h.alice.channel("", root_id=activity["id"], mention=False, value=submit["data"])
    await h.post(press)
    await h.drain()
    assert len(h.fake.in_conversation(chain)) == 3
    assert "Done: File ticket" in h.fake.in_conversation(chain)[-1].text


# --- proactive messages -----------------------------------------------------------------------------


async def test_proactive_send_through_a_stored_reference_after_a_restart(h: Harness) -> None:
    from bridge.models import Answer, ThreadKey

    first = h.alice.channel("remember this chain")
    await h.post(first)
    await h.drain()
    await h.post(h.bob.install())  # bob installs the app: his personal chat is reachable
    await h.restart()
    chain = first["conversation"]["id"]
    thread = ThreadKey("teams", TENANT, "19:general@thread.tacv2", first["id"])
    sink = await h.adapter.open_reply(thread, {"ref_key": chain}, user=None, proactive=True)
    await sink.finish(Answer(text="Your ticket **INC-1** was resolved."))
    assert h.fake.in_conversation(chain)[-1].text == "Your ticket **INC-1** was resolved."
    bob = Employee("teams", TENANT, "aad-bob", "bob@example.com", "Bob", None)
    target = await h.adapter.open_direct(bob)
    assert target is not None and target[0].channel == "a:personal-aad-bob"
    sink = await h.adapter.open_reply(target[0], target[1], user=None, proactive=True)
    await sink.finish(Answer(text="Hello Bob"))
    welcome, hello = h.fake.in_conversation("a:personal-aad-bob")  # the install's welcome card, then ours
    assert welcome.cards and hello.text == "Hello Bob"


async def test_open_direct_creates_a_personal_chat_for_a_channel_only_user(h: Harness) -> None:
    from bridge.models import Answer

    first = h.alice.channel("hello from a channel")
    await h.post(first)
    await h.drain()
    alice = Employee("teams", TENANT, "aad-alice", "alice@example.com", "Alice", None)
    thread, address = await h.adapter.open_direct(alice)
    assert h.fake.created and h.fake.created[0]["request"]["members"] == [{"id": "29:alice"}]
    assert h.fake.created[0]["request"]["channelData"] == {"tenant": {"id": TENANT}}
    sink = await h.adapter.open_reply(thread, address, user=None, proactive=True)
    await sink.finish(Answer(text="A notification"))
    assert [m.text for m in h.fake.in_conversation(thread.channel)] == ["A notification"]


async def test_writes_blocked_drops_the_reference(h: Harness) -> None:
    from bridge.errors import PlatformError
    from bridge.models import Answer, ThreadKey

    first = h.alice.channel("soon blocked")
    await h.post(first)
    await h.drain()
    chain = first["conversation"]["id"]
    thread = ThreadKey("teams", TENANT, "19:general@thread.tacv2", first["id"])
    h.fake.fail_next("writes_blocked")
    sink = await h.adapter.open_reply(thread, {"ref_key": chain}, user=None, proactive=True)
    with pytest.raises(PlatformError) as caught:
        await sink.finish(Answer(text="nobody will see this"))
    assert caught.value.permanent
    assert h.runtime.store.sync.kv.get("teams.references", chain) is None
    assert not h.runtime.store.sync.links.get(thread, "aad-alice").active


def channel_install(user: TeamsUser, channel_id: str = "19:general@thread.tacv2") -> dict[str, Any]:
    """The conversationUpdate Teams sends when the app is added to a team (its channel)."""
    activity = user.install(conversation_id=channel_id)
    activity["conversation"].update(conversationType="channel", isGroup=True)
    return activity


async def test_404_on_one_reply_chain_drops_only_that_chain(h: Harness) -> None:
    from bridge.errors import PlatformError
    from bridge.models import Answer, ThreadKey

    channel = "19:general@thread.tacv2"
    await h.post(channel_install(h.alice))  # a channel-level reference
    gone = h.alice.channel("a question in a chain whose root is deleted later")
    await h.post(gone)
    await h.drain()
    await h.post(h.bob.channel("bob asks in the same chain", root_id=gone["id"]))
    await h.drain()
    other = h.alice.channel("a question in another chain")
    await h.post(other)
    await h.drain()
    store = h.runtime.store.sync
    gone_chain, other_chain = gone["conversation"]["id"], other["conversation"]["id"]
    gone_thread = ThreadKey("teams", TENANT, channel, gone["id"])
    other_thread = ThreadKey("teams", TENANT, channel, other["id"])
    h.fake.fail_next("not_found", when=lambda method, path, body: method == "POST" and gone_chain in path)
    sink = await h.adapter.open_reply(gone_thread, {"ref_key": gone_chain}, user=None, proactive=True)
    with pytest.raises(PlatformError) as caught:
        await sink.finish(Answer(text="the root message was deleted"))
    assert caught.value.permanent
    # that chain is gone, for everyone who asked in it
    assert store.kv.get("teams.references", gone_chain) is None
    assert not store.links.get(gone_thread, "aad-alice").active
    assert not store.links.get(gone_thread, "aad-bob").active
    # the channel and its other chains stay
    assert store.kv.get("teams.references", channel) is not None
    assert store.kv.get("teams.references", other_chain) is not None
    assert store.links.get(other_thread, "aad-alice").active
    sink = await h.adapter.open_reply(other_thread, {"ref_key": other_chain}, user=None, proactive=True)
    await sink.finish(Answer(text="still reachable"))
    assert h.fake.in_conversation(other_chain)[-1].text == "still reachable"


async def test_bot_removed_403_on_a_chain_drops_the_whole_channel(h: Harness) -> None:
    from bridge.errors import PlatformError
    from bridge.models import Answer, ThreadKey

    channel = "19:general@thread.tacv2"
    await h.post(channel_install(h.alice))
    first = h.alice.channel("first chain")
    await h.post(first)
    await h.drain()
    second = h.alice.channel("second chain")
    await h.post(second)
    await h.drain()
    store = h.runtime.store.sync
    thread = ThreadKey("teams", TENANT, channel, first["id"])
    h.fake.fail_next("bot_removed")
    sink = await h.adapter.open_reply(thread, {"ref_key": first["conversation"]["id"]}, user=None, proactive=True)
    with pytest.raises(PlatformError) as caught:
        await sink.finish(Answer(text="nobody will see this"))
    assert caught.value.permanent
    assert store.kv.get("teams.references", channel) is None
    assert not store.links.get(thread, "aad-alice").active
    assert not store.links.get(ThreadKey("teams", TENANT, channel, second["id"]), "aad-alice").active


# --- security and bad input -------------------------------------------------------------------------


async def test_missing_token_gets_401_when_credentials_are_configured(tmp_path: Path) -> None:
    h = Harness(tmp_path, app_id="00000000-0000-0000-0000-000000000001", app_password="not-a-real-secret")
    await h.start()
    try:
        status, _ = await h.post(h.alice.personal("let me in"))
        assert status == 401
        status, _ = await h.post(h.alice.personal("let me in"),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer not.a.jwt"})
        assert status == 401
        await asyncio.sleep(0.2)
        assert h.fake.calls == [] and questions(h.sim) == []
    finally:
        await h.stop()


async def test_tenant_allow_list(tmp_path: Path) -> None:
    h = Harness(tmp_path, allowed_tenants=["another-tenant"])
    await h.start()
    try:
        status, _ = await h.post(h.alice.personal("from the wrong tenant"))
        assert status == 403
        await asyncio.sleep(0.2)
        assert h.fake.calls == [] and questions(h.sim) == []
    finally:
        await h.stop()


async def test_bad_input_gets_clear_statuses_and_posts_nothing(h: Harness) -> None:
    assert (await h.post(None, raw=b'{"type": "message"}', headers={}))[0] == 415
    assert (await h.post(None, raw=b"not json at all"))[0] == 400
    assert (await h.post(None, raw=b"[1, 2, 3]"))[0] == 400
    assert (await h.post(None, raw=b'{"text": "no type"}'))[0] == 400
    assert (await h.post(None, raw=b'{"type": "message", "entities": "oops", "from": 5}'))[0] in (400, 201)
    odd = h.alice.personal("x")
    odd["type"] = "somethingNew"
    assert (await h.post(odd))[0] == 200
    invoke = h.alice.personal("x")
    invoke.update(type="invoke", name="composeExtension/unknownThing")
    assert (await h.post(invoke))[0] in (200, 501)
    await asyncio.sleep(0.3)
    assert h.fake.writes() == []
    assert questions(h.sim) == []


async def test_empty_and_huge_messages_get_a_kind_reply(h: Harness) -> None:
    empty = h.alice.channel("   ")
    assert (await h.post(empty))[0] == 201
    huge = h.bob.personal("x" * 50_000)
    assert (await h.post(huge))[0] == 201
    await h.drain()
    assert "empty" in h.fake.in_conversation(empty["conversation"]["id"])[0].text
    assert "too long" in h.fake.in_conversation(huge["conversation"]["id"])[0].text
    assert questions(h.sim) == []
