"""The adapter contract as the core uses it: a native sink that declines is continued by edits
(once, in the core), registration refuses what is not an adapter, the optional hooks' defaults
still give users a message, and an answer with no text says so."""

from __future__ import annotations

import pytest

from bridge import texts
from bridge.answers.relay import Relay
from bridge.answers.renderer import StreamRenderer
from bridge.answers.sinks import EditingSink, WithFallback
from bridge.contract import ChatAdapter, ReplySink
from bridge.errors import StreamDeclined
from bridge.mechanisms.ratelimit import Budgets, WriteBudget
from bridge.models import Answer, Capabilities, ChatUser, Employee, Frame, Rate, ThreadKey
from bridge.moveworks.models import Response, ResponseCompleted, ResponseCreated
from bridge.store import Store
from bridge.testing.clock import FakeClock
from tests.spine_fakes import RecordingOps, RecordingPlatform, scripted_stream

CAPS = Capabilities(max_text_len=4000, min_edit_interval=1.0, write_budget=Rate(50, 60))
NATIVE = Capabilities(max_text_len=4000, native_stream=True, min_edit_interval=1.0, write_budget=Rate(50, 60))
TEXT = "Open the VPN client, choose the company profile and sign in with your laptop password. " * 5


class DecliningSink(ReplySink):
    """A native stream the platform refuses: at the first frame, or only at the final."""

    capabilities = NATIVE
    budget_key = "w"

    def __init__(self, *, at_final: bool = False) -> None:
        self.at_final = at_final
        self.calls: list[str] = []

    async def show(self, frame: Frame) -> bool | None:
        self.calls.append("show")
        if not self.at_final:
            raise StreamDeclined("native streaming refused here")
        return False  # shows nothing (e.g. only a thread status)

    async def finish(self, answer: Answer) -> list[str]:
        self.calls.append("finish")
        raise StreamDeclined("native streaming refused here")

    async def fail(self, message: str) -> None:
        raise AssertionError("a declined sink is never failed")


def _render(clock: FakeClock, native: DecliningSink, platform: RecordingPlatform) -> StreamRenderer:
    budget = WriteBudget(CAPS.write_budget, clock=clock, sleep=clock.sleep)
    sink = WithFallback(native, lambda: EditingSink(RecordingOps(platform), CAPS, budget, "w", sleep=clock.sleep))
    return StreamRenderer(sink, budget, clock=clock, sleep=clock.sleep)


async def test_a_declined_native_stream_continues_as_edits_and_ends_with_the_exact_answer():
    clock = FakeClock()
    platform = RecordingPlatform(clock=clock)
    native = DecliningSink()
    [result] = await clock.run(_render(clock, native, platform).run(scripted_stream(clock, text=TEXT, duration=8)))
    assert native.calls == ["show"], "declined once, never asked again"
    edits = [c for c in platform.calls if c[1] == "edit"]
    assert len(edits) >= 3, "the answer grew in place by edits"
    [message] = platform.messages.values()
    assert message.text == result.answer.text and message.answer is not None and message.answer.citations


async def test_a_native_stream_declined_at_the_final_still_shows_the_whole_answer():
    clock = FakeClock()
    platform = RecordingPlatform(clock=clock)
    native = DecliningSink(at_final=True)
    [result] = await clock.run(_render(clock, native, platform).run(scripted_stream(clock, text=TEXT, duration=4)))
    assert native.calls[-1] == "finish"
    assert platform.visible() == result.answer.text and result.answer.text.startswith(TEXT[:10])


async def test_an_answer_without_text_or_buttons_tells_the_user_so():
    clock = FakeClock()
    platform = RecordingPlatform(clock=clock)
    budget = WriteBudget(None)
    renderer = StreamRenderer(EditingSink(RecordingOps(platform), CAPS, budget, "w", sleep=clock.sleep), budget,
                              clock=clock, sleep=clock.sleep)

    async def empty():
        yield ResponseCreated(Response("resp_1", "conv_1", "CREATED"))
        yield ResponseCompleted(Response("resp_1", "conv_1", "COMPLETED"))

    await clock.run(renderer.run(empty()))
    assert platform.visible() == texts.NO_ANSWER


class MinimalAdapter(ChatAdapter):
    """Only the three required methods: every optional hook keeps its documented default."""

    platform = "min"

    def __init__(self) -> None:
        self.platform_messages = RecordingPlatform()

    async def open_reply(self, thread: ThreadKey, address: dict, *, user: ChatUser | None,
                         proactive: bool) -> ReplySink:
        return EditingSink(RecordingOps(self.platform_messages), CAPS, WriteBudget(None), "min")

    async def open_direct(self, employee: Employee):
        return None

    async def resolve_email(self, user: ChatUser) -> str | None:
        return None


async def test_registration_refuses_what_does_not_implement_the_contract():
    relay = Relay(store=Store(":memory:"), client=None, per_employee=False, budgets=Budgets())  # type: ignore[arg-type]

    class DuckTyped:  # has the methods, but never said it implements the contract
        platform = "duck"

        async def open_reply(self, *a, **kw): ...

    with pytest.raises(TypeError, match="ChatAdapter"):
        relay.register(DuckTyped())  # type: ignore[arg-type]


async def test_an_adapter_without_close_reply_still_tells_a_cut_off_thread_to_ask_again():
    store = Store(":memory:")
    relay = Relay(store=store, client=None, per_employee=False, budgets=Budgets())  # type: ignore[arg-type]
    adapter = MinimalAdapter()
    relay.register(adapter)
    assert await adapter.check() == [] and adapter.reply_thread(ThreadKey("min", "", "c", ""), {}, ("m1",)) is None
    await adapter.start(inbound=True)
    link = store.links.insert(ThreadKey("min", "W", "C", "T"), "U1", "", "conv_1", {})
    await relay.announce_interrupted([(link.id, {"stream": "s1"})])  # a checkpoint it cannot use
    assert adapter.platform_messages.visible() == texts.failure_note(texts.RESTARTED)
    await adapter.stop_inbound()
    await adapter.stop()
