"""Section 2: many concurrent answers in one Slack workspace and in one Teams tenant.

Each level runs in a fresh `serve` process (default settings: SLACK_STREAMING=auto) with the fakes
enforcing the documented limits: Slack Tier 3 chat.update, Tier 2 start/stopStream, Tier 4
appendStream, ~1 post/s per channel; Teams 7/1 s, 8/2 s, 60/30 s per conversation and 50 RPS per
tenant. Every asker is a different person in their own DM (Slack) or, on Teams, half in personal
chats (native streaming) and half in threads of ten channels (post + update). The answer is the same
10-second stream for all. The process's CPU seconds and peak RSS come from /proc.
"""

from __future__ import annotations

import asyncio

from bench.report import Context, Table, median, pct
from bench.stack import Stack, answer_words, chars_lost

ANSWER = answer_words(1_500)
SCRIPT = {"chunks": 40, "delay": 0.25}


async def run(ctx: Context) -> list[Table]:
    levels = (10,) if ctx.quick else (1, 10, 50, 200)
    table = Table("Scale: concurrent 10-second answers, fakes enforcing the documented limits",
                  ["platform", "answers", "429s", "streamed", "first text p50 (s)", "final after stream end p50 (s)",
                   "p95 (s)", "max (s)", "lost finals", "CPU s (per answer)", "peak RSS MiB"])
    async with Stack(ctx) as stack:
        if ctx.quick:  # both platforms at once: half the wall time, figures slightly pessimistic
            await asyncio.gather(level(stack, table, "slack", 10), level(stack, table, "teams", 10))
        else:
            for platform in ("slack", "teams"):
                for k in levels:
                    await level(stack, table, platform, k)
    return [table]


async def level(stack: Stack, table: Table, platform: str, k: int) -> None:
    name = f"scale-{platform}-{k}"
    team = f"S{platform[0]}{k}".upper()
    serve = await stack.serve(name, SLACK_BOT_TOKEN=stack.slack_team(team))
    cpu0 = serve.cpu_seconds()
    tags = [f"[{team}-{i}]" for i in range(k)]
    if platform == "slack":
        crowd = await stack.slack_crowd(serve, team, k, ANSWER, **SCRIPT)
    else:
        for tag in tags:
            stack.script(tag, ANSWER, **SCRIPT)
        users = [stack.teams_user(1000 * k + i) for i in range(k)]
        asked = await asyncio.gather(*(
            stack.ask_teams(serve, users[i].personal(f"question {tag}") if i % 2 else users[i].channel(
                f"question {tag}", channel_id=f"19:{name}-{i // 2 % 10}@thread.tacv2"))
            for i, tag in enumerate(tags)))
    await stack.answered(serve, k, timeout=900)
    cpu = serve.cpu_seconds() - cpu0
    rss = serve.peak_rss_mib()
    await serve.stop()
    if platform == "slack":
        replies = [stack.slack_reply(channel, ts, at, "w0") for channel, ts, at in crowd]
    else:
        replies = [stack.teams_reply(where, at, "w0") for where, at in asked]
    ends = [stack.timing(tag).get("end") for tag in tags]
    lags = [r.final_at - end if r.final_at is not None and end is not None else None
            for r, end in zip(replies, ends, strict=True)]
    final_lag = [lag for lag in lags if lag is not None]
    first = [r.first_text_at - r.asked_at for r in replies if r.first_text_at is not None]
    # Streamed: text visible at least a second before the final (the rest showed a status, then the answer).
    streamed = sum(1 for r in replies if r.first_text_at is not None and r.final_at is not None
                   and r.final_at - r.first_text_at >= 1.0)
    lost = sum(1 for r in replies if chars_lost(ANSWER, r.visible))
    table.add(platform, k, sum(r.rate_limited for r in replies), streamed, median(first), median(final_lag),
              pct(final_lag, 95), max(final_lag, default=None), lost, f"{cpu:.1f} ({cpu / k * 1000:.0f} ms)",
              round(rss))
    if platform == "teams" and k > 1:
        for scope, parity in (("personal chats", 1), ("channel threads", 0)):
            part = [lag for i, lag in enumerate(lags) if lag is not None and i % 2 == parity]
            table.notes.append(f"teams {k}, {scope}: final after stream end p50 {median(part) or 0:.2f} s, "
                               f"p95 {pct(part, 95) or 0:.2f} s")
