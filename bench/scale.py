"""Section 2: many concurrent answers in one Slack workspace and in one Teams tenant.

Each level runs in a fresh `serve` process (default settings: SLACK_STREAMING=auto) with the fakes
enforcing the documented limits: Slack Tier 3 chat.update, Tier 2 chat.startStream and (a separate
bucket) chat.stopStream, Tier 4 appendStream, ~1 post/s per channel; Teams 7/1 s, 8/2 s, 60/30 s per
conversation and 50 RPS per tenant. Every asker is a different person in their own DM (Slack) or, on
Teams, half in personal chats (native streaming) and half in threads of ten channels (post + update).
The answer is the same 10-second stream for all. "429s" are every 429 the fake answered: on Slack for
any method in the workspace (users.info included), on Teams for the askers' conversations. The
process's CPU seconds and peak RSS come from /proc.

`steady` is the busy Slack workspace over time: a new asker every second for minutes, in one
workspace, and which reply style each answer got (a native stream, post + edits, or the thread
status then one post; see adapters/slack/admission.py), minute by minute.

With `BENCH_BEFORE=<checkout of an older commit>` the section also measures the busy workspace
(`steady`, and 50 and 200 askers at once) with `serve` run from that checkout and from this tree,
alternately, against the same simulator and fakes, and reports after / before ratios of one run.
Only the `serve` subprocess changes: `PYTHONSAFEPATH=1` (its working directory is not on sys.path)
and `PYTHONPATH=<checkout>`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.report import Context, Table, median, pct
from bench.stack import ROOT, Stack, answer_words, chars_lost

ANSWER = answer_words(1_500)
SCRIPT = {"chunks": 40, "delay": 0.25}
STEADY_SECONDS = 180  # full mode: a question a second for three minutes (past the first minute's burst)
QUICK_STEADY_SECONDS = 20  # quick mode: the first minute's burst only, beside the other two levels
STYLES = ("native streams", "post + edits", "status, then one post")
BEFORE = "BENCH_BEFORE"  # environment variable: a checkout to compare this tree with (see module docstring)


async def run(ctx: Context) -> list[Table]:
    levels = (10,) if ctx.quick else (1, 10, 50, 200)
    table = scale_table()
    async with Stack(ctx) as stack:
        if ctx.quick:  # all at once: a fraction of the wall time, figures slightly pessimistic
            *_, busy = await asyncio.gather(level(stack, table, "slack", 10), level(stack, table, "teams", 10),
                                            steady(stack, QUICK_STEADY_SECONDS))
        else:
            for platform in ("slack", "teams"):
                for k in levels:
                    await level(stack, table, platform, k)
            busy = await steady(stack, STEADY_SECONDS)
        tables = [table, busy]
        checkout = before_checkout()
        if checkout is not None:
            tables.append(await before_after(stack, checkout, quick=ctx.quick))
    return tables


def before_checkout() -> Path | None:
    """`BENCH_BEFORE` as an absolute path, if set."""
    value = os.environ.get(BEFORE)
    return Path(value).resolve() if value else None


def scale_table() -> Table:
    return Table("Scale: concurrent 10-second answers, fakes enforcing the documented limits",
                 ["platform", "answers", "429s", "streamed", "first text p50 (s)", "first text p95 (s)",
                  "final after stream end p50 (s)", "p95 (s)", "max (s)", "lost finals", "CPU s (per answer)",
                  "peak RSS MiB"])


async def level(stack: Stack, table: Table, platform: str, k: int, *, team: str | None = None,
                env: dict[str, str] | None = None) -> None:
    """`k` people ask at once in one workspace (tenant); one row of `table`. `team` names the
    workspace (default `S<platform initial><k>`), so one fake can hold several runs of a level;
    `env` is added to `serve`'s environment."""
    team = team or f"S{platform[0]}{k}".upper()
    name = f"scale-{platform}-{team.lower()}"
    serve = await stack.serve(name, **serve_env(stack, team, env))
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
    if platform == "slack":
        rate_limited = sum(1 for c in stack.slack.calls if c.team == team and c.status == 429)
    else:
        rate_limited = sum(r.rate_limited for r in replies)
    table.add(platform, k, rate_limited, streamed, median(first), pct(first, 95),
              median(final_lag), pct(final_lag, 95), max(final_lag, default=None), lost,
              f"{cpu:.1f} ({cpu / k * 1000:.0f} ms)", round(rss))
    if platform == "slack":
        styles = reply_styles(stack, team, [channel for channel, _, _ in crowd])
        table.notes.append(f"slack {k}: " + ", ".join(f"{sum(1 for s in styles if s == style)} {style}"
                                                      for style in STYLES))
    if platform == "teams" and k > 1:
        for scope, parity in (("personal chats", 1), ("channel threads", 0)):
            part = [lag for i, lag in enumerate(lags) if lag is not None and i % 2 == parity]
            table.notes.append(f"teams {k}, {scope}: final after stream end p50 {median(part) or 0:.2f} s, "
                               f"p95 {pct(part, 95) or 0:.2f} s")


async def steady(stack: Stack, seconds: int, *, team: str = "SBUSY", every: float = 1.0,
                 env: dict[str, str] | None = None) -> Table:
    """One Slack workspace where a new person asks every `every` seconds for `seconds`, each in
    their own DM; every answer is the same 10-second stream. Returns a table by minute of asking:
    how many answers got each reply style, 429s (any method, by the asker's channel or user),
    first text, lost finals. `env` is added to `serve`'s environment."""
    serve = await stack.serve(f"scale-steady-{team.lower()}", **serve_env(stack, team, env))
    n = round(seconds / every)
    channels = [f"D{team}{i}" for i in range(n)]
    for i in range(n):
        stack.script(f"[{team}-{i}]", ANSWER, **SCRIPT)
    began = time.monotonic()

    async def ask(i: int) -> tuple[str, float]:
        await asyncio.sleep(max(0.0, began + i * every - time.monotonic()))
        return await stack.ask_slack(serve, f"question [{team}-{i}]", user=f"U{team}{i}", channel=channels[i],
                                     team=team)

    asked = await asyncio.gather(*(ask(i) for i in range(n)))
    await stack.answered(serve, n, timeout=seconds + 600)
    await serve.stop()
    calls = [c for c in stack.slack.calls if c.team == team]
    limited: dict[str, int] = {}  # 429s by the asker's DM channel or user id
    for c in calls:
        if c.status == 429:
            who = str(c.params.get("channel") or c.params.get("channel_id") or c.params.get("user"))
            limited[who] = limited.get(who, 0) + 1
    replies = [stack.slack_reply(channel, ts, at, "w0") for channel, (ts, at) in zip(channels, asked, strict=True)]
    styles = reply_styles(stack, team, channels)
    table = Table(f"Scale: one busy Slack workspace, a new asker every {every:g} s for {seconds} s, "
                  "10-second answers (by minute of asking)",
                  ["asked in", "answers", *STYLES, "429s", "first text p50 (s)", "first text p95 (s)",
                   "lost finals"])
    groups = [(f"{lo}–{min(lo + 60, seconds)} s", [i for i in range(n) if lo <= i * every < lo + 60])
              for lo in range(0, seconds, 60)]
    if len(groups) > 1:
        groups.append(("all", list(range(n))))
    for label, part in groups:
        first = [r.first_text_at - r.asked_at for r in (replies[i] for i in part) if r.first_text_at is not None]
        table.add(label, len(part), *(sum(1 for i in part if styles[i] == s) for s in STYLES),
                  sum(limited.get(channels[i], 0) + limited.get(f"U{team}{i}", 0) for i in part),
                  median(first), pct(first, 95),
                  sum(1 for i in part if chars_lost(ANSWER, replies[i].visible)))
    native_later = sum(1 for i in range(n) if styles[i] == STYLES[0] and i * every >= 60)
    if seconds > 60:
        table.notes.append(f"native streams per minute after the first: "
                           f"{native_later / ((seconds - 60) / 60):.1f}")
    busiest = {m: busiest_minute(c.at for c in calls if c.method == m and c.status == 200 and c.error is None)
               for m in ("chat.startStream", "chat.stopStream")}
    table.notes.append("busiest 60 s at the fake: " + ", ".join(f"{v} {m}" for m, v in busiest.items())
                       + " (Slack's Tier 2: about 20 each); 429s of any method in the workspace: "
                       + str(sum(1 for c in calls if c.status == 429)))
    return table


def reply_styles(stack: Stack, team: str, channels: list[str]) -> list[str]:
    """The reply style each answer got (one asker per DM channel), from the Web API methods that
    succeeded in its channel: chat.startStream (native), else chat.update (post + edits), else
    neither (the thread status, then one post)."""
    ok: dict[str, set[str]] = {}
    for c in stack.slack.calls:
        if c.team == team and c.status == 200 and c.error is None:
            ok.setdefault(str(c.params.get("channel")), set()).add(c.method)
    styles = []
    for channel in channels:
        methods = ok.get(channel, set())
        styles.append(STYLES[0] if "chat.startStream" in methods else STYLES[1] if "chat.update" in methods
                      else STYLES[2])
    return styles


def busiest_minute(times: Iterable[float]) -> int:
    """The most calls in any sliding 60-second window."""
    ordered, best, lo = sorted(times), 0, 0
    for hi, at in enumerate(ordered):
        while ordered[lo] <= at - 60.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def before_after(stack: Stack, checkout: Path, *, quick: bool) -> Table:
    """The busy-workspace figures with `serve` from `checkout` (before) and from this tree (after),
    in the same fakes: crowds one after the other (two rounds in alternating order, means), the
    steady arrivals of both at once in two workspaces. One row per measure, with after / before."""
    envs = {"before": product_env(checkout), "after": product_env(ROOT)}
    crowds, rounds = ((10,), 1) if quick else ((50, 200), 2)
    seconds = QUICK_STEADY_SECONDS if quick else STEADY_SECONDS
    tables = {product: scale_table() for product in envs}
    for r in range(rounds):
        for k in crowds:
            for product in ("before", "after") if r % 2 == 0 else ("after", "before"):
                await level(stack, tables[product], "slack", k, team=f"{product[0]}{k}R{r}".upper(),
                            env=envs[product])
    busy = dict(zip(envs, await asyncio.gather(*(steady(stack, seconds, team=f"{product[0]}BUSY".upper(),
                                                        env=envs[product]) for product in envs)), strict=True))
    out = Table(f"Scale: a busy Slack workspace, before ({checkout}) and after (this tree), same run",
                ["measure", "before", "after", "after / before"])

    def add(measure: str, values: dict[str, float | None]) -> None:
        before, after = values["before"], values["after"]
        out.add(measure, before, after, round(after / before, 2) if before and after is not None else None)

    for k in crowds:
        label = f"{k} askers at once" + (f" (mean of {rounds})" if rounds > 1 else "")
        for column in ("native streams", "streamed", "first text p50 (s)", "first text p95 (s)", "429s"):
            values: dict[str, float | None] = {}
            for product, table in tables.items():
                rows = [row for row in table.rows if row[1] == k]
                if column == "native streams":
                    cells = [int(note.split(": ", 1)[1].split()[0]) for note in table.notes
                             if note.startswith(f"slack {k}:")]
                else:
                    cells = [row[table.columns.index(column)] for row in rows]
                known = [c for c in cells if c is not None]
                values[product] = round(sum(known) / len(known), 2) if known else None
            add(f"{label}: {column}", values)
    label = f"a new asker every second for {seconds} s"
    for group in range(len(busy["before"].rows)):
        when = busy["before"].rows[group][0]
        when = "overall" if when == "all" else f"asked in {when}"
        for column in (*STYLES, "429s", "first text p50 (s)", "first text p95 (s)"):
            add(f"{label}, {when}: {column}",
                {product: table.rows[group][table.columns.index(column)] for product, table in busy.items()})
    for product, env in envs.items():
        out.notes.append(f"{product}: serve imports {await imported(env)}")
    out.notes += [f"{product} steady: {note}" for product, table in busy.items() for note in table.notes]
    return out


def serve_env(stack: Stack, team: str, env: dict[str, str] | None) -> dict[str, Any]:
    """`serve`'s environment additions: the bot token of a new workspace `team`, and `env`."""
    return {"SLACK_BOT_TOKEN": stack.slack_team(team), **(env or {})}


def product_env(checkout: Path) -> dict[str, str]:
    """`serve`'s environment additions that make it run the product in `checkout`."""
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(checkout)}


async def imported(env: dict[str, str]) -> str:
    """Where a Python started with `env` (from this tree's directory, as `serve` is) finds the
    Slack adapter: proof of which product ran."""
    probe = ("import subprocess, adapters.slack.admission as a; print(a.__file__, subprocess.run("
             "['git', 'log', '-1', '--format=(commit %h)'], cwd=a.__file__.rsplit('/', 3)[0], "
             "capture_output=True, text=True).stdout.strip())")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", probe, cwd=str(ROOT), env={**os.environ, **env},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return out.decode(errors="replace").strip().splitlines()[-1] if out.strip() else "(nothing)"
