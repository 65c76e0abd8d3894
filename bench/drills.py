"""Section 4: fault drills. Each is a scripted run that asserts its outcome (DrillFailed otherwise).

  1. kill -9 of `serve` mid-stream, then restart: every reply is finalised or marked interrupted,
     and nothing is left spinning (no open Slack stream, no open Teams stream, no thread status).
  2. Moveworks 429 storms, 500s, stream cuts and ERROR events during 50 concurrent answers: every
     user gets the answer or a short, kind error; nobody gets silence or a raw exception.
  3. The Slack fake answers `ratelimited` to every write for a minute while answers stream: every
     final text arrives afterwards.
(The poller's kill -9 drills are in bench/poller.py, next to the poller figures.)
"""

from __future__ import annotations

import asyncio
import time

from bench.report import Context, DrillFailed, Table
from bench.stack import Stack, answer_words, chars_lost
from bridge.testing.waiting import until

ANSWER = answer_words(1_500)
KIND = ("Sorry", "Please try again", "please ask", "Please ask", "busy right now")
RAW = ("Traceback", "Exception", "Error:", "HTTP 4", "HTTP 5", "status=")


async def run(ctx: Context) -> list[Table]:
    table = Table("Fault drills", ["drill", "answers", "full answers", "kind messages", "silent or raw",
                                   "other checks", "outcome"])
    failures: list[str] = []
    async with Stack(ctx) as stack:
        for drill in (kill_serve, moveworks_storm, slack_outage):
            try:
                await drill(ctx, stack, table)
            except DrillFailed as exc:
                failures.append(str(exc))
    if failures:
        exc = DrillFailed("; ".join(failures))
        exc.tables = [table]  # type: ignore[attr-defined]
        raise exc
    return [table]


def verdict(table: Table, name: str, answers: int, full: int, kind: int, bad: int, other: str, ok: bool) -> None:
    table.add(name, answers, full, kind, bad, other, "pass" if ok else "FAIL")
    if not ok:
        raise DrillFailed(f"{name}: full={full} kind={kind} silent/raw={bad} {other}")


def classify(visible: str, expected: str) -> str:
    if any(word in visible for word in RAW):
        return "raw"
    if expected and not chars_lost(expected, visible):
        return "full"
    if any(word in visible for word in KIND):
        return "kind"
    return "silent"


async def kill_serve(ctx: Context, stack: Stack, table: Table) -> None:
    """Slack native, Slack edit and Teams personal/channel answers cut by kill -9, then restart."""
    name = "kill -9 of serve mid-stream, restart"
    token_native, token_edit = stack.slack_team("TKN"), stack.slack_team("TKE")
    native = await stack.serve("drill-kill-native", SLACK_BOT_TOKEN=token_native, SLACK_STREAMING="native")
    edit = await stack.serve("drill-kill-edit", SLACK_BOT_TOKEN=token_edit, SLACK_STREAMING="edit")
    for tag in ("[kill-n]", "[kill-e]", "[kill-p]", "[kill-c]"):
        stack.script(tag, ANSWER, chunks=40, delay=0.5)  # 20 s: still streaming when killed
    user = stack.teams_user(9001)
    asked = [
        ("slack native", await stack.ask_slack(native, "question [kill-n]", user="UKN", channel="DKN", team="TKN")),
        ("slack edit", await stack.ask_slack(edit, "question [kill-e]", user="UKE", channel="DKE", team="TKE")),
        ("teams personal", await stack.ask_teams(edit, user.personal("question [kill-p]"))),
        ("teams channel", await stack.ask_teams(edit, user.channel("question [kill-c]",
                                                                    channel_id="19:kill@thread.tacv2"))),
    ]

    def replies() -> list:
        out = []
        for kind, (where, at) in asked:
            if kind.startswith("slack"):
                out.append(stack.slack_reply("DKN" if kind == "slack native" else "DKE", where, at, "w0"))
            else:
                out.append(stack.teams_reply(where, at, "w0"))
        return out

    await until(lambda: all(r.first_text_at for r in replies()), 30, "first text of every answer")
    await native.kill()
    await edit.kill()
    for proc in (native, edit):
        await proc.start()  # same database: the restart finds the cut-off answers
    await until(lambda: all(classify(r.visible, ANSWER) != "silent" for r in replies()), 60,
                     "a final or an interruption note in every thread")
    await asyncio.sleep(1.0)  # anything else the restart writes
    results = [classify(r.visible, ANSWER) for r in replies()]
    spinning = stuck_streams(stack)
    verdict(table, name, len(results), results.count("full"), results.count("kind"),
            results.count("silent") + results.count("raw"), f"left spinning: {spinning or 0}",
            not spinning and "silent" not in results and "raw" not in results)


def stuck_streams(stack: Stack) -> list[str]:
    """Messages a user would still see as in progress."""
    stuck = [f"slack {channel}" for channel, msgs in stack.slack.messages.items() for m in msgs
             if m.get("streaming")]
    stuck += [f"teams {a.conversation_id}" for a in stack.teams.activities.values()
              if a.stream and a.stream_state == "open"]
    return stuck


async def moveworks_storm(ctx: Context, stack: Stack, table: Table) -> None:
    """Faults injected into the simulator while 50 answers stream (20 in quick mode)."""
    k = 20 if ctx.quick else 50
    name = f"Moveworks 429 storm, 500s, stream cuts, ERROR events ({k} concurrent)"
    serve = await stack.serve("drill-storm", SLACK_BOT_TOKEN=stack.slack_team("TMS"))
    sim = stack.sim
    sim.inject_fault("rate_limit", endpoint="any", count=k, retry_after=1)
    sim.inject_fault("server_error", endpoint="create_conversation", count=k // 5)
    sim.inject_fault("stream_cut", endpoint="stream", count=k // 10)
    sim.inject_fault("stream_error", endpoint="stream", count=k // 10)
    sim.inject_fault("server_error", endpoint="stream", count=k // 10)
    asked = await stack.slack_crowd(serve, "TMS", k, ANSWER, chunks=20, delay=0.25)
    await stack.answered(serve, k, timeout=300)
    replies = [stack.slack_reply(channel, ts, at, "w0") for channel, ts, at in asked]
    results = [classify(r.visible, ANSWER) for r in replies]
    bad = results.count("silent") + results.count("raw")
    verdict(table, name, k, results.count("full"), results.count("kind"), bad,
            f"429s to Slack: {sum(r.rate_limited for r in replies)}", bad == 0)


async def slack_outage(ctx: Context, stack: Stack, table: Table) -> None:
    """Every Slack write is rate-limited for a minute (15 s in quick mode) while 10 answers stream."""
    seconds = 15 if ctx.quick else 60
    k = 10
    name = f"Slack answers `ratelimited` to every write for {seconds} s ({k} answers)"
    serve = await stack.serve("drill-outage", SLACK_BOT_TOKEN=stack.slack_team("TRL"))
    asked = await stack.slack_crowd(serve, "TRL", k, ANSWER, chunks=20, delay=0.25)
    stack.slack.rate_limit_writes(seconds)
    outage_end = time.monotonic() + seconds
    await stack.answered(serve, k, timeout=seconds + 300)
    replies = [stack.slack_reply(channel, ts, at, "w0") for channel, ts, at in asked]
    results = [classify(r.visible, ANSWER) for r in replies]
    last = max((r.final_at for r in replies if r.final_at), default=None)
    after = f"last final {last - outage_end:.1f} s after the outage" if last else "no final"
    verdict(table, name, k, results.count("full"), results.count("kind"),
            results.count("silent") + results.count("raw"), after + f", 429s: {sum(r.rate_limited for r in replies)}",
            results.count("full") == k)
