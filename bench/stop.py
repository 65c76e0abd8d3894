"""Section `stop`: how fast Slack's Stop button cancels the Moveworks request.

A real `serve` process streams long answers (natively, in agent sessions) into DMs of the fake
Slack; mid-answer the person presses Stop: the fake stops the thread's stream as Slack does and
the bench delivers the signed `agent_session_stopped` event. Measured per run, on this process's
monotonic clock (the fake Slack and the simulator live here):

  * **Stop → Moveworks closed**: from the event's delivery to the simulator seeing the answer
    stream's client disconnect (`timings[...]["disconnected"]`; the simulator notices at its next
    write, and the script writes every `STEP` seconds, so that much is included);
  * **Stop → "Stopped." shown**: to the stopped message being edited to end with the note.

Target: Moveworks closed in < 500 ms at p95. Each run also asserts the reply ended in place and the
session is `active` again; the last thread then gets a normal answer to its next question. Quick
mode runs 5 answers (well under 20 s); full mode 20, paced to the workspace's agents.sessions
budget (Tier 3) and stream budgets (Tier 2) so that every answer gets its session and stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from itertools import count
from typing import Any

from bench.report import Context, DrillFailed, Table, ms, pct
from bench.stack import ServeProcess, Stack, answer_words
from bridge import texts

TARGET = 0.5  # seconds, Stop -> Moveworks stream closed (p95)
STEP = 0.02  # seconds between the simulator's events while it streams
ANSWER = answer_words(2_400)  # about 5 s of streaming at STEP per event
NOTE = texts.failure_note(texts.STOPPED)
_ids = count(1)


async def wait_for(check: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DrillFailed(f"stop: timed out waiting for {what}")
        await asyncio.sleep(0.005)


def stop_body(event: dict[str, Any], team: str = "T1") -> str:
    """The Events API envelope of `agent_session_stopped` (team_id only on the envelope)."""
    return json.dumps({"team_id": team, "api_app_id": "A1", "type": "event_callback",
                       "event_id": f"EvStop{next(_ids)}", "event_time": int(time.time()), "event": event,
                       "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}]})


async def one_stop(stack: Stack, serve: ServeProcess, i: int) -> tuple[float, float]:
    """One answer stopped mid-stream: (Stop -> Moveworks closed, Stop -> "Stopped." shown)."""
    fake, tag = stack.slack, f"[stop-{i}]"
    channel, user = f"DS{i}", f"US{i}"
    stack.script(tag, ANSWER, chunks=250, delay=STEP, reasoning=["Looking it up"])
    root, _ = await stack.ask_slack(serve, f"a long question {tag}", user=user, channel=channel)

    def streaming() -> bool:
        session = fake.session(channel, root)
        shown = [m for m in fake.thread(channel, root) if m.get("bot_id") and fake.body_text(m)]
        return session is not None and session["status"] == "processing" and bool(shown)

    await wait_for(streaming, f"run {i} to stream in a processing session")
    event = fake.press_stop(channel, root, user=user)
    pressed = time.monotonic()
    status = await stack.post_slack(serve, stop_body(event))
    if status != 200:
        raise DrillFailed(f"stop: /slack/events answered {status} to agent_session_stopped")
    closed = await wait_for(lambda: stack.timing(tag).get("disconnected"), f"run {i}'s Moveworks stream to close")

    def noted() -> float | None:
        for call in fake.calls:
            if call.at >= pressed and call.params.get("channel") == channel and call.error is None \
                    and NOTE in json.dumps(call.params, ensure_ascii=False):
                return call.at
        return None

    shown = await wait_for(noted, f"run {i}'s reply to end with the note")
    await wait_for(lambda: fake.session(channel, root)["status"] == "active", f"run {i}'s session to be active")
    replies = [m for m in fake.thread(channel, root) if m.get("bot_id")]
    if len(replies) != 1 or not fake.body_text(replies[0]).endswith(NOTE) or replies[0].get("streaming"):
        raise DrillFailed(f"stop: run {i} did not end in place with the note")
    return closed - pressed, shown - pressed


async def run(ctx: Context) -> list[Table]:
    runs = 5 if ctx.quick else 20
    pace = 0.0 if ctx.quick else 3.2  # full mode: within Tier 2 (streams) and Tier 3 (sessions)
    closed: list[float] = []
    shown: list[float] = []
    async with Stack(ctx, pace=1.0) as stack:
        serve = await stack.serve("stop", SLACK_STREAMING="native")
        for i in range(runs):
            started = time.monotonic()
            a, b = await one_stop(stack, serve, i)
            closed.append(a)
            shown.append(b)
            await asyncio.sleep(max(0.0, pace - (time.monotonic() - started)))
        # The stopped thread takes the next question as usual.
        last = f"DS{runs - 1}"
        root = next(m["thread_ts"] for m in stack.slack.bot_messages(last))
        stack.script("[after-stop]", "Here is the next answer.", chunks=2, delay=STEP, reasoning=[])
        await stack.ask_slack(serve, "and now? [after-stop]", user=f"US{runs - 1}", channel=last, thread_ts=root)
        await wait_for(lambda: any(stack.slack.body_text(m) == "Here is the next answer."
                                   for m in stack.slack.thread(last, root)), "the next answer in a stopped thread")
        rate_limited = stack.slack.rate_limited
    p95 = pct(closed, 95)
    table = Table("Stop: from Slack's Stop button to the Moveworks request closed",
                  ["runs", "closed p50 ms", "closed p95 ms", "closed max ms", '"Stopped." shown p50 ms',
                   '"Stopped." shown p95 ms', "Slack 429s", "target p95 < 500 ms"])
    table.add(runs, ms(pct(closed, 50)), ms(p95), ms(max(closed)), ms(pct(shown, 50)), ms(pct(shown, 95)),
              rate_limited, "met" if p95 is not None and p95 < TARGET else "MISSED")
    table.notes += [
        "`serve` subprocess, SLACK_STREAMING=native, DMs in agent sessions; the fake Slack stops the stream and "
        "the bench delivers the signed `agent_session_stopped` event.",
        f"Closed = the simulator saw the answer stream's client go away; it notices at its next write, one every "
        f"{STEP * 1000:.0f} ms while it streams (included).",
        "Every run ended in place with the note, its session back to `active`; the last thread's next question "
        "was answered.",
    ]
    return [table]
