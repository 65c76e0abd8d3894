"""Stop and thread context through the core, over loopback with the real simulator: the person's
Stop closes the Moveworks stream at once and ends the reply in place; a mention in the middle of
a thread carries the thread's earlier messages."""

from __future__ import annotations

import asyncio
import json

import httpx

from bridge import texts
from bridge.answers.relay import Relay
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Capabilities, ChatUser, Inbound, ThreadKey
from bridge.moveworks import ApiKeyAuth, MoveworksClient
from bridge.store import Store
from tests.spine_fakes import RecordingAdapter

CAPS = Capabilities(max_text_len=4000, min_edit_interval=0.02, write_budget=None)
THREAD = ThreadKey("rec", "W1", "C1", "100.1")
ANN = ChatUser("rec", "W1", "U_ANN", name="Ann")


def build(mw: MoveworksClient) -> tuple[Relay, RecordingAdapter]:
    budgets = Budgets()
    relay = Relay(store=Store(":memory:"), client=mw, per_employee=False, budgets=budgets)
    adapter = RecordingAdapter(budgets, CAPS)
    relay.register(adapter)
    return relay, adapter


async def test_stop_closes_the_stream_and_ends_the_reply_in_place(sim, mw):
    relay, adapter = build(mw)
    sim.script_answer(text="word " * 400, match="long", chunks=200, delay=0.05)
    answer = asyncio.create_task(relay.handle(Inbound("d1", THREAD, ANN, "a long question")))
    thread = adapter.thread(THREAD)
    while "word" not in thread.visible():
        await asyncio.sleep(0.01)
    assert relay.stop_answer(THREAD)
    await asyncio.wait_for(answer, 1.0)  # the Moveworks stream is closed, not read to the end
    visible = thread.visible()
    assert texts.STOPPED in visible and visible.count("word") < 400
    assert not relay.stop_answer(THREAD)  # nothing is streaming any more
    await relay.handle(Inbound("d2", THREAD, ANN, "How do I reset my password?"))
    assert "reset your password" in thread.visible()


async def test_a_mid_thread_question_carries_the_thread_before_it(sim):
    sent: list[dict] = []

    class Recorder(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/responses/stream"):
                sent.append(json.loads(await request.aread()))
            return await super().handle_async_request(request)

    mw = MoveworksClient(f"{sim.url}/rest/v1", "moveworks-bridge-dev", ApiKeyAuth("sim-key"),
                         transport=Recorder())
    try:
        relay, adapter = build(mw)
        context = "Bob: The printer on floor 3 says PC LOAD LETTER\n(assistant) Try reloading paper."
        await relay.handle(Inbound("d1", THREAD, ANN, "can you help with this?", context=context))
    finally:
        await mw.aclose()
    question = sent[0]["input"]["chat"]["text"]
    assert question.endswith("can you help with this?")
    assert "PC LOAD LETTER" in question and "(assistant) Try reloading paper." in question
    assert adapter.thread(THREAD).visible()


def test_context_is_trimmed_from_the_oldest_end_to_fit_the_limit():
    context = "\n".join(f"Bob: message {i}" for i in range(2000))
    question = texts.with_thread_context("what now?", context)
    assert len(question) <= texts.MAX_INPUT_CHARS
    assert question.endswith("what now?") and "message 1999" in question and "message 0\n" not in question
