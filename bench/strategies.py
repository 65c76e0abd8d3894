"""Section 1: rendering strategies side by side on the same scripted answer streams.

For each answer shape, every strategy answers the same scripted stream at the same time, each in
its own Slack workspace (or the Teams tenant), so none shares a rate budget with another:
  (a) wait for the whole answer, post once           (baseline bot, bench/baselines.py)
  (b) post, then chat.update every 20 deltas          (baseline bot)
  (c) ours, Slack edit mode                           (`serve`, SLACK_STREAMING=edit)
  (d) ours, Slack native streaming                    (`serve`, SLACK_STREAMING=native)
  (e) ours, Teams native streaming (personal chat)    (`serve`)
  (f) ours, Teams channel (post + update)             (`serve`)
The fakes enforce the documented limits. Times are from the simulator's clock of the same process:
first text is measured from the question, the final from the end of the Moveworks stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench.baselines import BaselineBot
from bench.report import Context, DrillFailed, Table
from bench.stack import ASSISTANT, Stack, answer_words, chars_lost


@dataclass(frozen=True)
class Shape:
    name: str
    chars: int
    chunks: int
    delay: float  # seconds between snapshots (and between reasoning steps)
    reasoning: tuple[str, ...] = field(default=())

    def script(self) -> dict[str, Any]:
        return {"chunks": self.chunks, "delay": self.delay, "reasoning": list(self.reasoning) or None}


SHAPES = (
    Shape("short", 300, 3, 0.25),
    Shape("10 s", 1_500, 40, 0.25),
    Shape("60 s, 20 s reasoning", 4_000, 40, 1.0, tuple(f"Checking source {i + 1} of 20" for i in range(20))),
    Shape("40k characters", 40_000, 80, 0.25),
)
STRATEGIES = {
    "a": "(a) wait, post once",
    "b": "(b) update every 20 deltas",
    "c": "(c) ours: Slack edit",
    "d": "(d) ours: Slack native",
    "e": "(e) ours: Teams native",
    "f": "(f) ours: Teams channel",
}


async def run(ctx: Context) -> list[Table]:
    shapes = SHAPES[:2] if ctx.quick else SHAPES
    table = Table("Streaming strategies on the same answer streams",
                  ["strategy", "answer", "first text after asking (s)", "added after Moveworks' first text (s)",
                   "longest still while streaming (s)", "final after stream end (s)",
                   "writes", "429s", "chars lost"])
    async with Stack(ctx) as stack:
        tokens = {key: stack.slack_team(f"T{key.upper()}") for key in "abcd"}
        serve_edit = await stack.serve("strategies-edit", SLACK_STREAMING="edit", SLACK_BOT_TOKEN=tokens["c"])
        serve_native = await stack.serve("strategies-native", SLACK_STREAMING="native", SLACK_BOT_TOKEN=tokens["d"])
        bots = {key: BaselineBot("post_once" if key == "a" else "update_every", base_url=stack.sim.base_url,
                                 assistant=ASSISTANT, api_key=stack.api_key, slack_url=stack.slack.url,
                                 slack_token=tokens[key]) for key in "ab"}
        teams_user = stack.teams_user(1)
        try:
            for n, shape in enumerate(shapes):
                text = answer_words(shape.chars)
                for key in STRATEGIES:
                    stack.script(f"[{key}{n}]", text, **shape.script())
                replies = await asyncio.gather(
                    *(baseline(stack, bots[key], key, n) for key in "ab"),
                    slack(stack, serve_edit, "c", n), slack(stack, serve_native, "d", n),
                    stack.ask_teams(serve_edit, teams_user.personal(f"question [e{n}]")),
                    stack.ask_teams(serve_edit, teams_user.channel(f"question [f{n}]",
                                                                   channel_id=f"19:bench-{n}@thread.tacv2")))
                await stack.answered(serve_edit, 3 * (n + 1), timeout=300)
                await stack.answered(serve_native, n + 1, timeout=300)
                for key, (where, asked) in zip(STRATEGIES, replies, strict=True):
                    reply = (stack.teams_reply(where, asked, "w0") if key in "ef"
                             else stack.slack_reply(where[0], where[1], asked, "w0"))
                    timing = stack.timing(f"[{key}{n}]")
                    first, end = timing.get("first_text"), timing.get("end")
                    table.add(STRATEGIES[key], shape.name, _since(reply.first_text_at, asked),
                              _since(reply.first_text_at, first), reply.longest_still(first, end),
                              _since(reply.final_at, end), reply.writes, reply.rate_limited,
                              chars_lost(text, reply.visible))
        finally:
            for bot in bots.values():
                await bot.aclose()
    table.notes += _ratios(table, [s.name for s in shapes])
    ours_lost = [row for row in table.rows if row[-1] and "ours" in row[0]]
    if ours_lost:
        raise DrillFailed(f"our strategies lost characters: {ours_lost}")
    return [table]


async def baseline(stack: Stack, bot: BaselineBot, key: str, n: int) -> tuple[tuple[str, str], float]:
    channel, ts = f"D{key}{n}", f"{1_650_000_000 + n}.00010{ord(key) % 10}"
    asked = time.monotonic()
    await bot.answer(f"question [{key}{n}]", channel, ts)
    return (channel, ts), asked


async def slack(stack: Stack, serve: Any, key: str, n: int) -> tuple[tuple[str, str], float]:
    channel = f"D{key}{n}"
    ts, asked = await stack.ask_slack(serve, f"question [{key}{n}]", user=f"U{key}", channel=channel,
                                      team=f"T{key.upper()}")
    return (channel, ts), asked


def _since(at: float | None, start: float | None) -> float | None:
    return None if at is None or start is None else max(0.0, at - start)


def _ratios(table: Table, shapes: list[str]) -> list[str]:
    """Per shape, each strategy against (d) ours native = 1×: first text after asking, and the
    longest time the visible answer stood still while streaming."""
    notes = []
    for shape in shapes:
        rows = {row[0][1]: row for row in table.rows if row[1] == shape}
        ours = rows.get("d")
        if ours is None:
            continue
        parts = []
        for key, row in rows.items():
            if key == "d":
                continue
            first = f"{row[2] / ours[2]:.1f}×" if row[2] and ours[2] else "–"
            still = f"{row[4] / ours[4]:.1f}×" if row[4] and ours[4] else "–"
            parts.append(f"({key}) first text {first}, still {still}")
        notes.append(f"{shape}, relative to (d): " + "; ".join(parts))
    return notes
