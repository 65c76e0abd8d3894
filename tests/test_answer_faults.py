"""An accepted question always ends with the answer or a short, kind message, whatever fails
after acceptance: a Moveworks stream that never ends, a token endpoint that hangs, a thread that
stays busy, a shutdown whose notes cannot be written, a store that cannot be written. Real
simulator, real client, real SQLite, over loopback."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge import texts
from bridge.answers import relay as relay_module
from bridge.answers.relay import Relay
from bridge.answers.sinks import EditingSink
from bridge.contract import ChatAdapter, ReplySink
from bridge.errors import StoreUnavailable
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Answer, Capabilities, ChatUser, Employee, Inbound, ThreadKey
from bridge.moveworks import ApiKeyAuth, ClientCredentialsAuth, MoveworksClient
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store
from bridge.testing.waiting import until
from tests.spine_fakes import RecordingAdapter, RecordingOps, RecordingPlatform
from tests.test_poller_helpers import close_env, make_env

ASSISTANT = "moveworks-bridge-dev"
EMAIL = "employee@example.com"
CAPS = Capabilities(max_text_len=4000, min_edit_interval=0.02, write_budget=None)
THREAD = ThreadKey("rec", "W1", "C1", "100.1")
ANN = ChatUser("rec", "W1", "U_ANN", name="Ann")
_ids = iter(range(1, 10_000))


def ask(text: str, thread: ThreadKey = THREAD) -> Inbound:
    return Inbound(dedupe_id=f"q{next(_ids)}", thread=thread, user=ANN, text=text)


@pytest.fixture
async def stalling_sim():
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, api_keys={"sim-key": EMAIL}, pace=0,
                                    ping_interval=0.1))
    await sim.start()
    yield sim
    await sim.stop()


def _relay(store: Store, client: MoveworksClient, adapter: ChatAdapter, **kw) -> Relay:
    relay = Relay(store=store, client=client, per_employee=False, budgets=Budgets(), **kw)
    relay.register(adapter)
    return relay


async def test_a_stream_of_keep_alives_ends_kindly_and_the_follow_up_is_answered(stalling_sim):
    client = MoveworksClient(stalling_sim.base_url, ASSISTANT, ApiKeyAuth("sim-key"), poll_interval=0.01)
    adapter = RecordingAdapter(Budgets(), CAPS)
    relay = _relay(Store(":memory:"), client, adapter, answer_timeout=1.5)
    stalling_sim.inject_fault("stall", endpoint="stream")
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(relay.handle(ask("How do I reset my password?")),
                                              relay.handle(ask("And my VPN?"))), 20)
    finally:
        await client.aclose()
    first, *rest = adapter.thread(THREAD).messages.values()
    assert first.text == texts.failure_note(texts.TOO_SLOW)
    assert rest and "▍" not in rest[-1].text and rest[-1].answer is not None, "the follow-up got its answer"
    assert time.monotonic() - started < 15


class _Hang:
    """A local listener that accepts connections and never answers (a hung token endpoint)."""

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.writers: list[asyncio.StreamWriter] = []
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/oauth/v1/token"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await asyncio.sleep(3600)

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()


async def test_a_hanging_token_endpoint_shows_progress_at_once_and_ends_kindly(sim):
    adapter = RecordingAdapter(Budgets(), CAPS)
    async with _Hang() as token_url:
        auth = ClientCredentialsAuth(token_url, "client-id", "client-secret")
        client = MoveworksClient(sim.base_url, ASSISTANT, auth, poll_interval=0.01)
        relay = _relay(Store(":memory:"), client, adapter, answer_timeout=2.0)
        task = asyncio.create_task(relay.handle(ask("How do I reset my password?")))
        try:
            platform = adapter.thread(THREAD)
            await until(lambda: platform.calls, timeout=1.0, what="a first visible write")
            assert "Thinking" in platform.calls[0][3], "the thinking status shows before the token"
            await asyncio.wait_for(task, 8)
        finally:
            await client.aclose()
            await auth.aclose()
    assert adapter.thread(THREAD).visible() == texts.failure_note(texts.TOO_SLOW)


async def test_a_busy_thread_never_holds_back_other_conversations_notifications(tmp_path):
    env = await make_env(tmp_path)
    try:
        user = env.employee("ann@example.com")
        busy = ThreadKey("slack", "T1", "C1", "1700000000.000100")
        other = ThreadKey("slack", "T1", "C2", "1700000000.000200")
        conv_busy = await env.mapped_thread("ann@example.com", busy, user)
        conv_other = await env.mapped_thread("ann@example.com", other, user)
        poller = env.poller()
        await poller.poll_identity()
        for text, conv in (("busy 1", conv_busy), ("other", conv_other), ("busy 2", conv_busy)):
            env.sim.inject_event("ann@example.com", text, conversation_id=conv)
        async with env.relay.gate.hold(busy):  # an answer is streaming (or stuck) in that thread
            assert await asyncio.wait_for(poller.poll_identity(), 5) == 1
            assert env.slack.texts() == ["other"]
        assert await poller.poll_identity() == 2
        assert env.slack.texts() == ["other", "busy 1", "busy 2"], "each conversation stays in order"
    finally:
        await close_env(env)


class _StuckOps(RecordingOps):
    """While `stuck`, the platform takes posts but every edit hangs (a dead connection)."""

    def __init__(self, platform: RecordingPlatform, adapter: _StuckAdapter) -> None:
        super().__init__(platform)
        self.adapter = adapter

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None:
        if self.adapter.stuck:
            await asyncio.Event().wait()
        await super().edit(message_id, text, answer=answer)


class _StuckAdapter(ChatAdapter):
    platform = "rec"

    def __init__(self) -> None:
        self.platform_messages = RecordingPlatform()
        self.stuck = True

    async def open_reply(self, thread: ThreadKey, address: dict, *, user: ChatUser | None,
                         proactive: bool) -> ReplySink:
        budgets = Budgets()
        return EditingSink(_StuckOps(self.platform_messages, self), CAPS, budgets.get("rec", None), "rec")

    async def open_direct(self, employee: Employee):
        return None

    async def resolve_email(self, user: ChatUser) -> str | None:
        return None


async def test_an_answer_whose_shutdown_note_cannot_be_written_is_told_by_the_next_start(
    stalling_sim, tmp_path, monkeypatch
):
    monkeypatch.setattr(relay_module, "NOTE_TIMEOUT", 0.3)
    path = tmp_path / "bridge.db"
    client = MoveworksClient(stalling_sim.base_url, ASSISTANT, ApiKeyAuth("sim-key"), poll_interval=0.01)
    store = Store(path)
    adapter = _StuckAdapter()
    relay = _relay(store, client, adapter)
    stalling_sim.inject_fault("stall", endpoint="stream")
    try:
        await relay.submit(ask("How do I reset my password?"))
        await until(lambda: list(store.db.query("SELECT 1 FROM replies WHERE status = 'streaming' "
                                                "AND checkpoint IS NOT NULL")),
                    timeout=5.0, what="the answer streaming")
        assert await relay.drain(0.1) == 1  # SIGTERM: the grace period ends, the answer is cut
        assert relay.unmarked == 1
    finally:
        await client.aclose()
    store.close()
    assert "Thinking" in adapter.platform_messages.visible(), "left showing its status line"
    # The next start: the store says the truth, so the thread is told, in place.
    reopened = Store(path)
    interrupted = reopened.replies.interrupt_streaming()
    assert len(interrupted) == 1, "the cut-off answer is still owed a note"
    adapter.stuck = False
    fresh = _relay(reopened, client, adapter)
    await fresh.announce_interrupted(interrupted)
    assert adapter.platform_messages.visible() == texts.failure_note(texts.RESTARTED)


async def test_a_store_that_cannot_be_written_still_tells_the_asker(sim, mw, tmp_path):
    store = Store(tmp_path / "bridge.db")
    adapter = RecordingAdapter(Budgets(), CAPS)
    relay = _relay(store, mw, adapter)
    # Every write now fails, as on a disk that filled up or was remounted read-only.
    store.db.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable):
        store.kv.set("probe", "k", "v")
    await asyncio.wait_for(relay.handle(ask("How do I reset my password?")), 10)
    assert adapter.thread(THREAD).visible() == texts.failure_note(texts.STORE_DOWN)
