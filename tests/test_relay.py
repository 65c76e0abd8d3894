"""The relay end to end: recording chat platform ↔ relay ↔ real client ↔ real simulator (loopback)."""

from __future__ import annotations

import asyncio

from bridge.answers.relay import Relay
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Capabilities, ChatUser, Inbound, ThreadKey
from bridge.store import Store
from bridge.texts import EMPTY_QUESTION as MSG_EMPTY
from bridge.texts import NO_IDENTITY as MSG_NO_IDENTITY
from bridge.texts import NOT_OWNER as MSG_NOT_OWNER
from bridge.texts import TOO_LONG as MSG_TOO_LONG
from tests.spine_fakes import RecordingAdapter

CAPS = Capabilities(max_text_len=4000, min_edit_interval=0.02, write_budget=None)
THREAD = ThreadKey("rec", "W1", "C1", "100.1")
ANN = ChatUser("rec", "W1", "U_ANN", name="Ann")
BOB = ChatUser("rec", "W1", "U_BOB", name="Bob")
EMPLOYEE = "employee@example.com"
_ids = iter(range(1, 10_000))


def ask(text: str, user: ChatUser = ANN, thread: ThreadKey = THREAD, delivery: str | None = None, **kw) -> Inbound:
    return Inbound(dedupe_id=delivery or f"d{next(_ids)}", thread=thread, user=user, text=text, **kw)


def build(store: Store, mw, *, per_employee: bool = False, emails=None) -> tuple[Relay, RecordingAdapter]:
    budgets = Budgets()
    relay = Relay(store=store, client=mw, per_employee=per_employee, budgets=budgets)
    adapter = RecordingAdapter(budgets, CAPS, emails=emails)
    relay.register(adapter)
    return relay, adapter


def conversations(sim) -> dict:
    return sim.state.user(EMPLOYEE).conversations


async def test_answer_streams_to_the_exact_final_text_with_citations(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    await relay.handle(ask("How do I reset my password?"))
    visible = adapter.thread(THREAD).visible()
    final = list(adapter.thread(THREAD).messages.values())[-1]
    assert "reset your password" in visible and "▍" not in visible
    assert final.answer is not None and final.answer.citations and "[1]" in final.text
    assert final.answer.feedback is not None and final.answer.feedback.helpful


async def test_follow_up_continues_the_conversation_even_after_a_restart(sim, mw, tmp_path):
    path = tmp_path / "bridge.db"
    relay, _ = build(Store(path), mw)
    await relay.handle(ask("How do I reset my password?"))
    relay.store.close()
    relay, adapter = build(Store(path), mw)  # a new process on the same database
    await relay.handle(ask("And my VPN?"))
    assert len(conversations(sim)) == 1
    [conversation_id] = conversations(sim)
    user_messages = [m for m in sim.state.user(EMPLOYEE).conversation_messages(conversation_id)
                     if m["actor"] == "USER"]
    assert len(user_messages) == 2


async def test_two_people_in_one_thread_get_their_own_conversations(sim, mw):
    store = Store(":memory:")
    relay, _ = build(store, mw)
    await relay.handle(ask("How do I reset my password?", user=ANN))
    await relay.handle(ask("How do I reset my password?", user=BOB))
    assert store.links.get(THREAD, ANN.user_id).conversation_id != store.links.get(THREAD, BOB.user_id).conversation_id
    assert len(conversations(sim)) == 2


async def test_concurrent_questions_in_one_thread_share_a_conversation_and_never_interleave(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    sim.script_answer(text="First answer " * 30, match="first", chunks=10, delay=0.01)
    sim.script_answer(text="Second answer " * 30, match="second", chunks=10, delay=0.01)
    await asyncio.gather(relay.handle(ask("first question")), relay.handle(ask("second question")))
    assert len(conversations(sim)) == 1
    calls = adapter.thread(THREAD).calls
    first_ids = {c[2] for c in calls if "First" in c[3]}
    second_ids = {c[2] for c in calls if "Second" in c[3]}
    last_first = max(i for i, c in enumerate(calls) if c[2] in first_ids)
    first_second = min(i for i, c in enumerate(calls) if c[2] in second_ids)
    assert last_first < first_second  # the second answer starts after the first one is final


async def test_a_redelivered_message_is_answered_once(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    for _ in range(3):
        await relay.handle(ask("How do I reset my password?", delivery="Ev-same"))
    assert len(adapter.thread(THREAD).messages) == 1
    assert sum(1 for r in sim.requests if r["path"].endswith("/responses/stream")) == 1


async def test_a_failed_stream_ends_with_a_kind_message_and_no_internals(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    sim.inject_fault("stream_error", endpoint="stream")
    await relay.handle(ask("How do I reset my password?"))
    visible = adapter.thread(THREAD).visible()
    assert "⚠️ Sorry, the assistant ran into a problem" in visible
    assert "INTERNAL" not in visible and "Traceback" not in visible


async def test_moveworks_busy_beyond_retries_says_so_kindly(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    sim.inject_fault("rate_limit", endpoint="create_conversation", count=10, retry_after=1)
    await relay.handle(ask("How do I reset my password?"))
    assert adapter.thread(THREAD).visible() == "⚠️ The assistant is very busy right now. Please try again in a minute."


async def test_empty_and_huge_messages_get_kind_replies_without_calling_moveworks(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    await relay.handle(ask("   "))
    await relay.handle(ask("x" * 50_000))
    assert adapter.thread(THREAD).visible() == f"⚠️ {MSG_EMPTY}\n⚠️ {MSG_TOO_LONG}"
    assert not [r for r in sim.requests if r["method"] == "POST"]


async def test_user_jwt_mode_without_an_email_refuses_kindly(sim, mw):
    relay, adapter = build(Store(":memory:"), mw, per_employee=True, emails={})
    await relay.handle(ask("How do I reset my password?"))
    assert adapter.thread(THREAD).visible() == f"⚠️ {MSG_NO_IDENTITY}"
    assert adapter.lookups == 1


async def test_action_buttons_belong_to_the_asker(sim, mw):
    store = Store(":memory:")
    relay, adapter = build(store, mw)
    await relay.handle(ask("How do I reset my password?"))
    answer = list(adapter.thread(THREAD).messages.values())[-1].answer
    action = next(a for a in answer.actions if a.callback_id)
    press = dict(callback_id=action.callback_id, callback_conversation_id=answer.conversation_id)
    await relay.handle(ask("", user=BOB, **press))
    assert adapter.thread(THREAD).visible().endswith(f"⚠️ {MSG_NOT_OWNER}")
    await relay.handle(ask("", user=ANN, **press))
    assert f"Done: {action.label}" in list(adapter.thread(THREAD).messages.values())[-1].text


async def test_feedback_reaches_moveworks_as_the_asker_only(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    await relay.handle(ask("How do I reset my password?"))
    target = list(adapter.thread(THREAD).messages.values())[-1].answer.feedback
    assert (await relay.feedback(BOB, target, True)).text == "Only the person who asked can rate this answer."
    assert sim.state.feedback == []
    ack = await relay.feedback(ANN, target, False)
    assert ack.text == "Thanks, that helps the assistant improve." and ack.recorded
    assert [f["callback_id"] for f in sim.state.feedback] == [target.unhelpful]


async def test_a_lost_conversation_is_replaced_once(sim, mw):
    store = Store(":memory:")
    relay, adapter = build(store, mw)
    await relay.handle(ask("How do I reset my password?"))
    old = store.links.get(THREAD, ANN.user_id).conversation_id
    conversations(sim).pop(old)  # gone on the Moveworks side (expired, deleted by an admin)
    await relay.handle(ask("What about my VPN?"))
    new = store.links.get(THREAD, ANN.user_id).conversation_id
    assert new != old and new in conversations(sim)
    assert "VPN" in list(adapter.thread(THREAD).messages.values())[-1].text


async def test_a_100_kb_answer_arrives_whole_across_several_messages(sim, mw):
    relay, adapter = build(Store(":memory:"), mw)
    body = "".join(f"Line {i}: {'lorem ipsum ' * 6}\n" for i in range(1400))  # ~100 KB
    sim.script_answer(text=body, match="huge", chunks=20)
    await relay.handle(ask("a huge answer please"))
    platform = adapter.thread(THREAD)
    assert len(platform.messages) >= 25
    assert all(len(m.text) <= CAPS.max_text_len for m in platform.messages.values())
    assert "".join(m.text for m in platform.messages.values()) == body.strip()


async def test_shutdown_marks_an_unfinished_answer_in_its_thread(sim, mw):
    store = Store(":memory:")
    relay, adapter = build(store, mw)
    sim.script_answer(text="A slow answer " * 50, match="slow", chunks=50, delay=0.2)
    await relay.submit(ask("a slow one"))
    await relay.submit(ask("a second question, waiting for the first"))
    while not adapter.thread(THREAD).messages:
        await asyncio.sleep(0.02)
    assert await relay.drain(0.1) == 2  # neither finished in the grace period
    visible = adapter.thread(THREAD).visible()
    note = "⚠️ I was restarted before I could finish this answer. Please ask again."
    assert visible.endswith(note)
    assert visible.count(note) == 2  # the waiting question is told too, not left in silence
    assert "▍" not in visible
    status = store.db.execute("SELECT status FROM replies").fetchone()[0]
    assert status == "interrupted"
