"""The loopback stack the bench sections run against.

The Moveworks simulator, the fake Slack Web API and the fake Bot Framework connector live in this
process; `moveworks-bridge serve` runs as a real subprocess, so its CPU time and peak memory are its
own, its logs are real files, and kill -9 is real. Slack events are signed with the secret the
process verifies; Teams activities go through botbuilder's adapter (unauthenticated, no app id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bench.report import Context
from bridge.simulator import Simulator, SimulatorConfig
from bridge.testing.bot_connector import FakeConnector, TeamsUser
from bridge.testing.slack_api import WRITE_METHODS, FakeSlack

ROOT = Path(__file__).resolve().parent.parent
ANSWER_WORD = re.compile(r"\bw\d+\b")  # the words of `answer_words`
ASSISTANT = "moveworks-bridge-bench"
_ids = count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer_words(n_chars: int, *, paragraph: int = 60) -> str:
    """Plain answer text of about `n_chars`: numbered words (`w0 w1 …`) in paragraphs, so every
    character can be found again in what a user sees."""
    words, size, i = [], 0, 0
    while size < n_chars:
        word = f"w{i}"
        sep = "\n\n" if i and i % paragraph == 0 else " "
        words.append((sep if i else "") + word)
        size += len(word) + (len(sep) if i else 0)
        i += 1
    return "".join(words)


def chars_lost(expected: str, visible: str) -> int:
    """Characters of the answer's words a user cannot see (words are unique, so a set suffices)."""
    seen = set(visible.split())
    return sum(len(word) for word in expected.split() if word not in seen)


class ServeProcess:
    """`python -m bridge serve` with its own environment, log file and /proc figures."""

    def __init__(self, ctx: Context, name: str, env: dict[str, str], *,
                 preexec: Callable[[], None] | None = None, log_pipe: bool = False,
                 command: str = "serve") -> None:
        self.name = name
        self.command = command  # `serve`, or `poll` (no HTTP: ready when its log says it polls)
        self.env = env
        self.log_path = ctx.log_file(f"serve-{name}")
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.preexec = preexec  # run in the child before exec (resource limits, signal dispositions)
        self.log_pipe = log_pipe  # the child logs into a pipe this process copies to the log file
        self._copier: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 40.0) -> ServeProcess:
        env = {**self.env, "PORT": str(self.port)}
        log = open(self.log_path, "ab")  # noqa: ASYNC230 - a local log file, handed to the child
        try:
            out: Any = asyncio.subprocess.PIPE if self.log_pipe else log
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", self.command, cwd=str(ROOT), env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT if self.log_pipe else log, preexec_fn=self.preexec)
        finally:
            log.close()
        if self.log_pipe:
            assert self.proc.stdout is not None
            self._copier = asyncio.create_task(self._copy_log(self.proc.stdout), name=f"log:{self.name}")
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"serve {self.name} exited at start-up: {self.tail()}")
                if self.command != "serve":
                    if "poller running" in self.tail(50):
                        return self
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.command} {self.name} not running after {timeout:.0f} s")
                    await asyncio.sleep(0.1)
                    continue
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve {self.name} not ready after {timeout:.0f} s: {self.tail()}")
                await asyncio.sleep(0.1)

    async def _copy_log(self, stream: asyncio.StreamReader) -> None:
        """`log_pipe`: what the child writes goes to the log file, line by line, until it exits
        (a pipe is not a file, so a file-size limit on the child does not silence its log)."""
        with open(self.log_path, "ab", buffering=0) as log:  # noqa: ASYNC230 - small local appends
            while line := await stream.readline():
                log.write(line)

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far (from /proc; 0 where there is no /proc)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await self._log_copied()
        return code

    async def kill(self) -> None:
        """kill -9: no drain, no goodbye."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._log_copied()

    async def _log_copied(self) -> None:
        """Once the process ended: the rest of a piped log is in the log file."""
        copier, self._copier = self._copier, None
        if copier is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(copier, 5.0)


@dataclass
class Reply:
    """What one user saw for one question, read from a fake's call log and message state."""

    asked_at: float
    first_text_at: float | None  # first write carrying answer text
    final_at: float | None  # last successful write
    visible: str
    writes: int
    rate_limited: int
    text_writes: list[float]  # successful writes carrying answer words

    def longest_still(self, first_text: float | None, end: float | None) -> float | None:
        """Longest time the visible answer stood still while Moveworks was producing it: from its
        first text to the end of its stream, between writes that carried answer words."""
        if first_text is None or end is None:
            return None
        points = [first_text]
        for at in sorted(self.text_writes):
            if at >= first_text:
                points.append(at)
                if at >= end:
                    break
        return max((b - a for a, b in zip(points, points[1:], strict=False)), default=None)


class Stack:
    """Simulator + Slack fake + Teams fake, and `serve` processes pointed at them."""

    def __init__(self, ctx: Context, *, pace: float = 1.0, limits: bool = True) -> None:
        self.ctx = ctx
        self.api_key = ctx.secret("mwk-bench-" + secrets.token_hex(16))
        self.sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=pace,
                                             api_keys={self.api_key: "employee@example.com"}))
        self.bot_token = ctx.secret("xoxb-bench-" + secrets.token_hex(12))
        self.slack = FakeSlack(token=self.bot_token, enforce_tier3=limits, enforce_streams=limits,
                               enforce_post_rate=limits)
        self.teams = FakeConnector(enforce_limits=limits)
        self.signing_secret = ctx.secret(secrets.token_hex(16))
        self.webhook_secret = ctx.secret("whsec-" + secrets.token_hex(12))
        self.session: aiohttp.ClientSession | None = None
        self.processes: list[ServeProcess] = []

    async def __aenter__(self) -> Stack:
        await self.sim.start()
        await self.slack.start()
        await self.teams.start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for proc in self.processes:
            await proc.stop()
        if self.session is not None:
            await self.session.close()
        await self.teams.stop()
        await self.slack.stop()
        await self.sim.stop()

    # --- processes ------------------------------------------------------------------------------

    def env(self, name: str, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("BRIDGE_", "MOVEWORKS_", "SLACK_", "TEAMS_"))}
        return {
            **keep,
            "BRIDGE_DB": str(self.ctx.tmp / f"{name}.db"),
            "BRIDGE_ADAPTERS": "slack,teams",
            "BRIDGE_POLLER": "off",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_WEBHOOK_SECRET": self.webhook_secret,
            "BRIDGE_SHUTDOWN_GRACE": "10",
            "MOVEWORKS_BASE_URL": self.sim.base_url,
            "MOVEWORKS_ASSISTANT_NAME": ASSISTANT,
            "MOVEWORKS_API_KEY": self.api_key,
            "SLACK_BOT_TOKEN": self.bot_token,
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "SLACK_API_URL": self.slack.url,
            **extra,
        }

    async def metric(self, serve: ServeProcess, name: str) -> float:
        """Sum of one Prometheus metric's samples on `serve`'s /metrics."""
        assert self.session is not None
        async with self.session.get(f"{serve.url}/metrics") as resp:
            text = await resp.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and (line[len(name)] in " {"))

    async def answered(self, serve: ServeProcess, n: int, timeout: float) -> None:
        """Wait until `serve` has finished `n` answers (whatever their outcome) and streams none."""
        deadline = time.monotonic() + timeout
        while True:
            done = await self.metric(serve, "bridge_answers_total")
            if done >= n and await self.metric(serve, "bridge_active_answers") == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve {serve.name}: {done:.0f} of {n} answers after {timeout:.0f} s")
            await asyncio.sleep(0.25)

    def slack_team(self, team_id: str) -> str:
        """A further workspace in the Slack fake (its own rate windows); returns its bot token."""
        token = self.ctx.secret(f"xoxb-bench-{team_id}-" + secrets.token_hex(12))
        self.slack.add_team(team_id, token=token)
        return token

    async def serve(self, name: str, *, preexec: Callable[[], None] | None = None, log_pipe: bool = False,
                    **env: str) -> ServeProcess:
        proc = ServeProcess(self.ctx, name, self.env(name, **env), preexec=preexec, log_pipe=log_pipe)
        self.processes.append(proc)
        return await proc.start()

    def script(self, tag: str, text: str, **options: Any) -> None:
        """The simulator answers the question containing `tag` with `text`."""
        self.sim.script_answer(text=text, match=tag, **options)

    def timing(self, tag: str) -> dict[str, Any]:
        """The simulator's {first_text, end} for the question containing `tag`."""
        for record in self.sim.timings.values():
            if tag in record["question"]:
                return record
        return {}

    # --- Slack ----------------------------------------------------------------------------------

    async def ask_slack(self, serve: ServeProcess, text: str, *, user: str, channel: str,
                        team: str = "T1", thread_ts: str | None = None) -> tuple[str, float]:
        """A signed `message.im` event to `serve` (a reply in the DM thread `thread_ts`, if given);
        returns (message ts, monotonic time asked)."""
        ts, body = self.slack_message(text, user=user, channel=channel, team=team, thread_ts=thread_ts)
        asked = time.monotonic()
        status = await self.post_slack(serve, body)
        if status != 200:
            raise RuntimeError(f"/slack/events answered {status}")
        return ts, asked

    @staticmethod
    def slack_message(text: str, *, user: str, channel: str, team: str = "T1",
                      thread_ts: str | None = None) -> tuple[str, str]:
        """The Events API body of a `message.im` event: (message ts, JSON body)."""
        ts = f"{1_600_000_000 + next(_ids)}.000100"
        event = {"type": "message", "channel_type": "im", "channel": channel, "user": user, "text": text, "ts": ts}
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        body = json.dumps({"team_id": team, "api_app_id": "A1", "type": "event_callback",
                           "event_id": f"Ev{next(_ids)}", "event_time": int(time.time()), "event": event,
                           "authorizations": [{"team_id": team, "user_id": "UBOT", "is_bot": True}]})
        return ts, body

    async def post_slack(self, serve: ServeProcess, body: str,
                         content_type: str = "application/json", timeout: float = 30.0) -> int:
        """POST `body` to `serve`'s /slack/events, signed with the secret it verifies; the status."""
        stamp = str(int(time.time()))
        signature = SignatureVerifier(self.signing_secret).generate_signature(timestamp=stamp, body=body) or ""
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
        assert self.session is not None
        async with self.session.post(f"{serve.url}/slack/events", data=body, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status

    async def slack_crowd(self, serve: ServeProcess, team: str, k: int, text: str,
                          **script: Any) -> list[tuple[str, str, float]]:
        """`k` people of workspace `team` ask at once, each in their own DM, and the simulator
        answers each with `text`. Returns (channel, message ts, time asked); the questions carry
        the tags `[team-i]` (see `timing`)."""
        for i in range(k):
            self.script(f"[{team}-{i}]", text, **script)
        asked = await asyncio.gather(*(self.ask_slack(serve, f"question [{team}-{i}]", user=f"U{team}{i}",
                                                      channel=f"D{team}{i}", team=team) for i in range(k)))
        return [(f"D{team}{i}", ts, at) for i, (ts, at) in enumerate(asked)]

    def slack_reply(
        self, channel: str, ts: str, asked_at: float, marker: str, *, fake: FakeSlack | None = None
    ) -> Reply:
        fake = fake or self.slack
        calls = [c for c in fake.calls if c.method in WRITE_METHODS and c.params.get("channel") == channel
                 and c.at >= asked_at]
        ok = [c for c in calls if c.status == 200 and c.error is None]
        first = next((c.at for c in ok if marker in json.dumps(c.params)), None)
        visible = "\n".join(fake.body_text(m) for m in fake.thread(channel, ts) if m.get("bot_id"))
        return Reply(asked_at, first, ok[-1].at if ok else None, visible, len(calls),
                     sum(1 for c in calls if c.status == 429),
                     [c.at for c in ok if ANSWER_WORD.search(json.dumps(c.params))])

    # --- Teams ----------------------------------------------------------------------------------

    def teams_user(self, i: int) -> TeamsUser:
        self.teams.add_member(f"29:u{i}", f"aad-{i}", f"User {i}", f"user{i}@example.com")
        return TeamsUser(f"29:u{i}", f"aad-{i}", f"User {i}", self.teams.url)

    async def ask_teams(self, serve: ServeProcess, activity: dict[str, Any]) -> tuple[str, float]:
        """POST an activity to `serve`; returns (conversation id, monotonic time asked)."""
        asked = time.monotonic()
        assert self.session is not None
        async with self.session.post(f"{serve.url}/api/messages", data=json.dumps(activity),
                                     headers={"Content-Type": "application/json"}) as resp:
            if resp.status not in (200, 201, 202):
                raise RuntimeError(f"/api/messages answered {resp.status}")
        return activity["conversation"]["id"], asked

    def teams_reply(self, conversation_id: str, asked_at: float, marker: str) -> Reply:
        bare = conversation_id.split(";messageid=")[0]
        calls = [c for c in self.teams.calls if c.method in ("POST", "PUT") and bare in unquote(c.path)
                 and c.at >= asked_at]
        ok = [c for c in calls if 200 <= c.status < 300]
        first = next((c.at for c in ok if marker in json.dumps(c.json)), None)
        return Reply(asked_at, first, ok[-1].at if ok else None, self.teams.visible_text(conversation_id, "\n"),
                     len(calls), sum(1 for c in calls if c.status == 429),
                     [c.at for c in ok if ANSWER_WORD.search(json.dumps(c.json))])
