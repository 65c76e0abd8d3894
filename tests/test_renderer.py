"""The streaming renderer and the editing sink, in virtual time with a recording platform."""

from __future__ import annotations

import asyncio
import re

import pytest

from bridge.answers.renderer import StreamRenderer
from bridge.answers.sinks import EditingSink
from bridge.mechanisms.ratelimit import Budgets, WriteBudget
from bridge.models import Capabilities, Rate
from bridge.testing.clock import FakeClock
from tests.spine_fakes import RecordingOps, RecordingPlatform, scripted_stream

FENCE = re.compile(r"^ {0,3}```", re.M)


def make(clock: FakeClock, caps: Capabilities, budget: WriteBudget | None = None, platform=None):
    platform = platform or RecordingPlatform(clock=clock)
    budget = budget or WriteBudget(caps.write_budget, clock=clock, sleep=clock.sleep)
    sink = EditingSink(RecordingOps(platform), caps, budget, "w", sleep=clock.sleep)
    renderer = StreamRenderer(sink, budget, clock=clock, sleep=clock.sleep)
    return platform, sink, renderer


CAPS = Capabilities(max_text_len=4000, min_edit_interval=1.0, write_budget=Rate(50, 60))
TEXT = "Here is how to reset your password. " * 20


async def test_status_line_then_throttled_edits_then_exact_final():
    clock = FakeClock()
    platform, _, renderer = make(clock, CAPS)
    [result] = await clock.run(renderer.run(scripted_stream(clock, text=TEXT, duration=10, chunks=40)))
    writes = [c for c in platform.calls if c[1] in ("post", "edit")]
    assert writes[0][1] == "post" and "Searching" in writes[0][3]  # thinking line first
    # Never faster than the declared interval once the answer shows (its first words may
    # replace the thinking line at once).
    gaps = [b[0] - a[0] for a, b in zip(writes[1:], writes[2:-1])]
    assert all(g >= 1.0 - 1e-9 for g in gaps), gaps
    assert len(writes) <= 14  # 40 snapshots over 10 s coalesced into ~1 write per second
    final = platform.messages[writes[0][2]]
    assert final.text == result.answer.text  # exact final text, no cursor
    assert "▍" not in final.text and final.text.startswith(TEXT[:10] + "[1]")
    assert final.answer is not None and final.answer.feedback.helpful == "cb_good"


async def test_repeated_snapshots_cost_no_writes():
    from bridge.moveworks.models import Message, OutputDelta, Response, ResponseCompleted, ResponseCreated

    clock = FakeClock()
    platform, _, renderer = make(clock, CAPS)

    async def repetitive():
        yield ResponseCreated(Response("resp_1", "conv_1", "CREATED"))
        for text in ("One", "One two", "One two three"):
            for _ in range(10):  # the same cumulative snapshot, again and again
                yield OutputDelta(Message("msg_1", "conv_1", "resp_1", "ASSISTANT", text))
                await clock.sleep(2.0)
        final = Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "One two three")
        yield ResponseCompleted(Response("resp_1", "conv_1", "COMPLETED", outputs=(final,)))

    await clock.run(renderer.run(repetitive()))
    texts = [c[3] for c in platform.calls if c[1] in ("post", "edit")]
    # three distinct snapshots and the final: nothing written twice
    assert texts == ["One ▍", "One two ▍", "One two three ▍", "One two three"]


async def test_shared_budget_holds_across_concurrent_answers():
    clock = FakeClock()
    caps = Capabilities(max_text_len=4000, min_edit_interval=1.0, write_budget=Rate(50, 60))
    budget = Budgets(clock=clock, sleep=clock.sleep).get("slack:T1", caps.write_budget)
    platform = RecordingPlatform(clock=clock)
    runs = []
    for i in range(12):
        _, _, renderer = make(clock, caps, budget=budget, platform=platform)
        runs.append(renderer.run(scripted_stream(clock, text=f"Answer {i}. " * 80, duration=30, chunks=60)))
    results = await clock.run(*runs)
    times = sorted(c[0] for c in platform.calls if c[1] in ("post", "edit"))
    # No sliding 60-second window ever sees more than 50 writes.
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 60)
        assert in_window <= 50, (start, in_window)
    # ...and every answer still ends with its exact final text.
    finals = {m.text for m in platform.messages.values()}
    assert all(r.answer.text in finals for r in results)


async def test_rate_limits_stop_intermediate_edits_but_never_the_final():
    clock = FakeClock()
    platform, _, renderer = make(clock, CAPS)
    platform.rate_limit_next = 5  # three strikes on frames, then the final retries through the rest
    [result] = await clock.run(renderer.run(scripted_stream(clock, text=TEXT, duration=10, chunks=20)))
    assert platform.visible() == result.answer.text
    assert sum(1 for c in platform.calls if c[1] == "429") == 5


async def test_long_answer_is_split_without_loss_and_fences_balanced_on_every_write():
    clock = FakeClock()
    caps = Capabilities(max_text_len=1000, min_edit_interval=1.0, write_budget=None)
    code = "```python\n" + "\n".join(f"print({i})  # step {i}" for i in range(300)) + "\n```\n"
    text = ("Intro paragraph.\n\n" + code + "\nAfter the code. " * 30) * 2
    platform, sink, renderer = make(clock, caps)
    [result] = await clock.run(
        renderer.run(scripted_stream(clock, text=text, duration=20, chunks=50, citations=False))
    )
    for _, op, _, written in platform.calls:
        if op in ("post", "edit"):
            assert len(written) <= 1000
            assert len(FENCE.findall(written)) % 2 == 0, written[-80:]
    parts = [platform.messages[i].text for i in sink.message_ids]
    assert len(parts) >= 8
    # Remove only the fences the splitter added: the original comes back, character for character.
    rebuilt = parts[0]
    for prev, part in zip(parts, parts[1:]):
        if prev.endswith("\n```") and part.startswith("```python\n"):
            rebuilt = rebuilt[:-3]  # parts are cut at line ends, so only the fence was added
            part = part[len("```python\n"):]
        rebuilt += part
    assert rebuilt == result.answer.text == text.strip()


async def test_failure_keeps_partial_text_and_adds_a_kind_note():
    from bridge.moveworks.models import Message, OutputDelta, Response, ResponseCreated, StreamError

    clock = FakeClock()
    platform, _, renderer = make(clock, CAPS)

    async def broken():
        yield ResponseCreated(Response("resp_1", "conv_1", "CREATED"))
        yield OutputDelta(Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "Partial answer"))
        await clock.sleep(2)
        yield StreamError("INTERNAL", "boom")

    from bridge.answers.renderer import AnswerFailed

    with pytest.raises(AnswerFailed):
        await clock.run(renderer.run(broken()))
    await clock.run(renderer.fail("Sorry, the assistant ran into a problem."))
    assert platform.visible() == "Partial answer\n\n⚠️ Sorry, the assistant ran into a problem."
    assert "boom" not in platform.visible() and "INTERNAL" not in platform.visible()


async def test_a_frame_the_sink_skips_costs_no_interval():
    from bridge.models import Frame
    from bridge.moveworks.models import (
        Message,
        OutputDelta,
        ReasoningMessage,
        Response,
        ResponseCompleted,
        ResponseCreated,
    )

    clock = FakeClock()
    written: list[tuple[float, str]] = []

    class StatusBlindSink:
        """A platform that cannot show progress lines (writes only answer text)."""

        capabilities = CAPS
        budget_key = "w"

        async def show(self, frame: Frame):
            if not frame.text:
                return False
            written.append((clock(), frame.text))

        async def finish(self, answer):
            written.append((clock(), answer.text))
            return ["m1"]

        async def fail(self, message):
            raise AssertionError(message)

    async def stream():
        yield ResponseCreated(Response("resp_1", "conv_1", "CREATED"))
        yield OutputDelta(ReasoningMessage("rs_1", "→ Searching"))
        await clock.sleep(0.1)
        yield OutputDelta(Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "Hello"))
        await clock.sleep(5)
        yield ResponseCompleted(Response("resp_1", "conv_1", "COMPLETED", outputs=(
            Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "Hello there"),)))

    budget = WriteBudget(CAPS.write_budget, clock=clock, sleep=clock.sleep)
    renderer = StreamRenderer(StatusBlindSink(), budget, clock=clock, sleep=clock.sleep)
    start = clock()
    await clock.run(renderer.run(stream()))
    assert written[0] == (start + 0.1, "Hello")  # shown at once, not a second after the skipped line
    assert written[-1][1] == "Hello there"


async def test_intermediate_writes_leave_the_reserved_tokens_to_finals():
    clock = FakeClock()
    budget = WriteBudget(Rate(50, 60.0, burst=25), clock=clock, sleep=clock.sleep)
    budget.reserve = 5  # five live answers will each need a final
    for _ in range(20):
        await budget.acquire()  # the burst, down to the reserve: no waiting
    late = asyncio.ensure_future(budget.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not late.done(), "an intermediate may not take a reserved token"
    for _ in range(5):
        await budget.acquire(final=True)  # every final is served at once
    assert not budget.try_take(2), "admission control never waits"
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    clock.now += 60.0
    assert budget.try_take(2)


async def test_the_final_does_not_queue_behind_a_starved_intermediate_frame():
    clock = FakeClock()
    caps = Capabilities(max_text_len=4000, min_edit_interval=1.0, write_budget=Rate(2, 60))  # 1 per minute
    budget = WriteBudget(caps.write_budget, clock=clock, sleep=clock.sleep)
    platform, _, renderer = make(clock, caps, budget=budget)

    async def other_answers_finishing():
        # Other answers in the workspace keep queueing final writes, faster than the refill:
        # an intermediate frame (served only when no final waits) starves meanwhile.
        waits = []
        for _ in range(20):
            waits.append(asyncio.ensure_future(budget.acquire(final=True)))
            await clock.sleep(30)
        await asyncio.gather(*waits)

    start = clock()
    [result, _] = await clock.run(
        renderer.run(scripted_stream(clock, text=TEXT, duration=5, chunks=10)), other_answers_finishing()
    )
    final_at = max(c[0] for c in platform.calls if c[1] in ("post", "edit"))
    # Our final queues among the other finals (FIFO); it must not wait for the whole backlog
    # of other finals to drain first (20 minutes) behind its own stale intermediate frame.
    assert platform.visible() == result.answer.text
    assert final_at - start < 600


async def test_first_words_replace_the_status_line_without_waiting_out_the_interval():
    from bridge.moveworks.models import (
        Message,
        OutputDelta,
        ReasoningMessage,
        Response,
        ResponseCompleted,
        ResponseCreated,
    )

    clock = FakeClock()
    platform, _, renderer = make(clock, CAPS)

    async def stream():
        yield ResponseCreated(Response("resp_1", "conv_1", "CREATED"))
        yield OutputDelta(ReasoningMessage("rs_1", "→ Searching"))
        await clock.sleep(0.1)
        # a second step: the flusher now waits out the interval before showing it...
        yield OutputDelta(ReasoningMessage("rs_1", "✓ Searching\n→ Reading"))
        await clock.sleep(0.1)
        # ...and the first words must end that wait
        yield OutputDelta(Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "First"))
        await clock.sleep(0.2)
        yield OutputDelta(Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "First words"))
        await clock.sleep(3)
        yield ResponseCompleted(Response("resp_1", "conv_1", "COMPLETED", outputs=(
            Message("msg_1", "conv_1", "resp_1", "ASSISTANT", "First words."),)))

    start = clock()
    await clock.run(renderer.run(stream()))
    writes = [(round(t - start, 2), text) for t, op, _, text in platform.calls if op in ("post", "edit")]
    assert writes[0] == (0.0, "_⏳ Searching…_")
    assert writes[1] == (0.2, "First ▍")  # at once, not a second after the status line
    assert writes[2] == (1.2, "First words ▍")  # then the usual pace
    assert writes[-1][1] == "First words."
