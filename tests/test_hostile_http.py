"""Under faults and hostile traffic the bridge keeps serving: slow clients and connection floods
(against a real `serve` process with a lowered open-file limit), the event-loop watchdog, bad
input that used to be a 500 with a traceback, a flood of one log line, and upstream bodies that
echo a credential back. Everything runs over loopback HTTP; timing bounds are generous (seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import httpx
import pytest
from aiohttp import web

from bridge.events.webhook import webhook_routes
from bridge.moveworks import ClientCredentialsAuth, MoveworksClient
from bridge.moveworks.errors import MoveworksError
from bridge.process import logs, metrics, server
from bridge.simulator import Simulator
from tests.test_slack_e2e import Harness as SlackHarness
from tests.test_slack_e2e import sign
from tests.test_teams_e2e import Harness as TeamsHarness
from tests.test_teams_e2e import questions

ASSISTANT = "moveworks-bridge-dev"
SLACK_SECRET = "hostile-signing-secret"
DEEP = 100_000  # far past what Python's JSON parser can nest


def deep_json(depth: int = DEEP, inner: str = "[]") -> str:
    return "[" * depth + inner + "]" * depth


# --- a real `serve` process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slack_signed(body: bytes) -> dict[str, str]:
    return sign(body, secret=SLACK_SECRET)


class ServeProcess:
    """`python -m bridge serve` with Slack over HTTP (and whatever `extra_env` adds), its log in
    a file; `nofile` lowers its open-file limit before it starts."""

    def __init__(self, tmp_path: Path, sim: Simulator, extra_env: dict[str, str] | None = None,
                 *, nofile: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "serve.log"
        self.nofile = nofile
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "BRIDGE_DB": str(tmp_path / "bridge.db"),
            "BRIDGE_POLLER": "off",
            "BRIDGE_ADAPTERS": "slack",
            "MOVEWORKS_BASE_URL": sim.base_url,
            "MOVEWORKS_ASSISTANT_NAME": ASSISTANT,
            "MOVEWORKS_API_KEY": "sim-key",
            "SLACK_BOT_TOKEN": "xoxb-hostile-test-token",
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_API_URL": "http://127.0.0.1:9/",
            **(extra_env or {}),
        }
        self.proc: asyncio.subprocess.Process | None = None

    def _limit(self) -> None:
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    async def start(self) -> None:
        with open(self.log_path, "wb") as log_file:  # noqa: ASYNC230 - the child's stderr
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "serve", env=self.env, stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file, preexec_fn=self._limit,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return
            except httpx.TransportError:
                pass
            assert self.proc.returncode is None, self.log()
            await asyncio.sleep(0.1)
        raise AssertionError(f"serve did not come up:\n{self.log()}")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def fresh_get(url: str, timeout: float = 10.0) -> tuple[int, float, str]:
    """GET on a new connection: (status, seconds, body)."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout) as http:
        resp = await http.get(url)
    return resp.status_code, time.monotonic() - started, resp.text


async def url_verification(url: str, timeout: float = 10.0) -> tuple[int, float, str]:
    """Slack's signed `url_verification` on a new connection: bolt answers it locally."""
    body = json.dumps({"type": "url_verification", "challenge": "still-here", "token": "t"}).encode()
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=timeout) as http:
        resp = await http.post(url + "/slack/events", content=body,
                               headers={"Content-Type": "application/json", **slack_signed(body)})
    return resp.status_code, time.monotonic() - started, resp.text


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} is not on /metrics"
    return float(match.group(1))


# --- C. slow clients and connection floods --------------------------------------------------------


async def test_a_flood_of_slow_connections_neither_starves_health_checks_nor_floods_the_log(sim, tmp_path):
    """300 connections, against a process allowed 256 open files: two in three start a request
    and never finish its headers, one in three sends nothing. Health checks and Slack events are
    still answered within seconds, the half-sent requests are cut off by the server, and the log
    stays a few lines long."""
    serve = ServeProcess(tmp_path, sim, nofile=256)
    await serve.start()
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    silent: list[asyncio.StreamWriter] = []
    try:
        opened = time.monotonic()
        for n in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
            if n % 3 == 0:
                silent.append(writer)
                continue
            writer.write(b"POST /slack/events HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n")
            slow.append((reader, writer))
        await asyncio.sleep(1.5)  # the flood is older than the eviction age now

        for _ in range(3):
            status, took, _ = await fresh_get(serve.url + "/healthz")
            assert status == 200 and took < 3.0, f"/healthz took {took:.1f}s during the flood"
            status, took, body = await url_verification(serve.url)
            assert status == 200 and "still-here" in body and took < 3.0, f"Slack took {took:.1f}s"
            await asyncio.sleep(0.3)

        async def closed_by_server(reader: asyncio.StreamReader) -> bool:
            try:
                await asyncio.wait_for(reader.read(), timeout=max(0.5, opened + 9.0 - time.monotonic()))
            except (ConnectionError, OSError):
                return True
            except TimeoutError:
                return False
            return True

        closed = await asyncio.gather(*(closed_by_server(reader) for reader, _ in slow))
        assert all(closed), f"{closed.count(False)} half-sent requests were still open after 9 s"

        status, _, text = await fresh_get(serve.url + "/metrics")
        assert status == 200
        evicted = metric(text, "bridge_http_connections_evicted_total")
        assert evicted >= 1, "a new connection at the cap takes the place of an idle one"
        assert evicted + metric(text, "bridge_http_connections_refused_total") >= 300 - server.connection_limit(256)
        assert metric(text, "bridge_http_slow_requests_total") >= 1
        assert metric(text, "bridge_event_loop_lag_observed_seconds_count") >= 1  # B: the watchdog runs
        assert metric(text, "bridge_event_loop_lag_seconds") < 1.0
    finally:
        for writer in [*silent, *(w for _, w in slow)]:
            writer.close()
        await serve.stop()
    log_text = serve.log()
    assert "Too many open files" not in log_text
    assert len(log_text) < 20_000 and len(log_text.splitlines()) < 40, log_text[-3000:]


def test_the_connection_cap_leaves_headroom_below_the_open_file_limit():
    assert server.connection_limit(1024) == 768
    assert server.connection_limit(256) == 64
    assert server.connection_limit(100_000) == server.MAX_CONNECTIONS
    assert server.connection_limit(64) == server.MIN_CONNECTIONS
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert server.connection_limit() < soft


async def test_a_body_that_does_not_arrive_in_time_is_a_408(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "BODY_TIMEOUT", 0.5)
    h = SlackHarness(tmp_path)
    await h.start()
    try:
        port = int(h.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"type\":")
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readline(), 5.0)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert time.monotonic() - started < 3.0
        writer.close()
        assert h.session is not None
        async with h.session.get(h.url + "/healthz") as resp:
            assert resp.status == 200
    finally:
        await h.stop()


# --- C. one error a thousand times is a few lines -------------------------------------------------


def test_a_repeated_error_is_suppressed_and_summarised(capsys):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("text", "INFO")
        flood = logging.getLogger("bridge.flood")
        for n in range(500):
            flood.error("accept failed: [Errno 24] Too many open files (fd %d)", n)
        flood.warning("something else")
        flood.info("info lines are never suppressed")
        assert logs.flush_suppressed(everything=True) == 1
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    floods = [line for line in lines if "Too many open files" in line]
    assert len(floods) == logs.REPEAT_LIMIT + 1, lines[-5:]
    assert floods[-1].endswith(f"… repeated {500 - logs.REPEAT_LIMIT} times (in 0 s)")
    assert "(fd 0)" in floods[-1]  # the summary names the first of them
    assert any("something else" in line for line in lines)
    assert any("info lines are never suppressed" in line for line in lines)


def test_a_window_ends_and_the_summary_is_written_once_the_next_line_comes():
    now = [0.0]
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    handler.addFilter(logs.RepeatFilter(handler, limit=2, window=10.0, clock=lambda: now[0]))
    flood = logging.getLogger("bridge.flood.window")
    flood.addHandler(handler)
    flood.propagate = False
    try:
        for _ in range(5):
            flood.warning("upstream down")
        now[0] = 11.0
        flood.warning("upstream down")
    finally:
        flood.removeHandler(handler)
        flood.propagate = True
    assert seen == ["upstream down", "upstream down", "upstream down … repeated 3 times (in 11 s)", "upstream down"]


# --- B. the event-loop watchdog -------------------------------------------------------------------


def _lag_samples() -> tuple[float, float]:
    """(all lag observations, those above 0.5 s)."""
    count = metrics.REGISTRY.get_sample_value("bridge_event_loop_lag_observed_seconds_count") or 0.0
    upto = metrics.REGISTRY.get_sample_value("bridge_event_loop_lag_observed_seconds_bucket", {"le": "0.5"}) or 0.0
    return count, count - upto


async def test_the_watchdog_measures_how_long_the_event_loop_was_blocked(caplog):
    before = _lag_samples()
    watchdog = asyncio.create_task(server.watch_event_loop(0.05))
    try:
        await asyncio.sleep(0.2)
        with caplog.at_level(logging.WARNING, logger="bridge.process.server"):
            time.sleep(1.2)  # noqa: ASYNC251 - blocking the loop is the point
            await asyncio.sleep(0.3)
    finally:
        watchdog.cancel()
    after = _lag_samples()
    assert after[0] - before[0] >= 3 and after[1] - before[1] >= 1
    assert "the event loop was blocked for 1." in caplog.text
    assert (metrics.REGISTRY.get_sample_value("bridge_event_loop_lag_seconds") or 0.0) < 0.5  # back to normal


# --- D. bad input is a 400, never a 500 ------------------------------------------------------------


async def test_deeply_nested_json_is_a_400_on_every_route_that_parses_json(tmp_path, caplog):
    slack = SlackHarness(tmp_path / "s")
    teams = TeamsHarness(tmp_path / "t")
    (tmp_path / "s").mkdir()
    (tmp_path / "t").mkdir()
    await slack.start()
    await teams.start()
    try:
        with caplog.at_level(logging.ERROR):
            body = ('{"type": "event_callback", "team_id": "T1", "event": ' + deep_json() + "}").encode()
            status, _ = await slack.post(body, {"Content-Type": "application/json", **sign(body)})
            assert status == 400
            form = ("payload=" + quote('{"type": "block_actions", "actions": ' + deep_json() + "}")).encode()
            status, _ = await slack.post(form, {"Content-Type": "application/x-www-form-urlencoded", **sign(form)})
            assert status == 400
            # parsable, but deeper than any Slack or Teams payload
            body = json.dumps({"type": "event_callback", "event": json.loads(deep_json(200))}).encode()
            status, _ = await slack.post(body, {"Content-Type": "application/json", **sign(body)})
            assert status == 400

            raw = ('{"type": "message", "conversation": {"id": "a:1"}, "channelData": ' + deep_json() + "}").encode()
            status, _ = await teams.post(None, raw=raw)
            assert status == 400
            activity = teams.alice.personal("hi")
            activity["channelData"] = json.loads(deep_json(200, '{"tenant": {"id": "tenant-1"}}'))
            status, _ = await teams.post(activity)
            assert status == 400
        assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text
    finally:
        await slack.stop()
        await teams.stop()


class Triggers:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def trigger(self, identity: str | None = None) -> int:
        self.calls.append(identity)
        return 1


async def test_deeply_nested_json_to_the_webhook_is_a_400():
    poller = Triggers()
    app = web.Application()
    app.add_routes(webhook_routes(poller, None))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/moveworks/webhook"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=deep_json().encode(),
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 400
            async with session.post(url, data=b'{"identity": "ann@example.com"}') as resp:
                assert resp.status == 202
        assert poller.calls == ["ann@example.com"]
    finally:
        await runner.cleanup()


async def test_a_teams_activity_without_a_conversation_is_a_400(tmp_path, caplog):
    h = TeamsHarness(tmp_path)
    await h.start()
    try:
        with caplog.at_level(logging.ERROR):
            for broken in (None, {}, {"id": ""}, {"id": 5}, "a:1"):
                activity = h.alice.personal("hi")
                if broken is None:
                    del activity["conversation"]
                else:
                    activity["conversation"] = broken
                status, _ = await h.post(activity)
                assert status == 400, broken
        assert "unhandled error" not in caplog.text
    finally:
        await h.stop()


async def test_teams_messages_without_an_id_are_never_taken_for_duplicates(tmp_path):
    h = TeamsHarness(tmp_path)
    await h.start()
    try:
        for text in ("first question without an id", "second question without an id"):
            activity = h.alice.personal(text)
            activity.pop("id", None)
            status, _ = await h.post(activity)
            assert status in (200, 201)
            await h.drain()
        asked = [text for _, text in questions(h.sim)]
        assert asked == ["first question without an id", "second question without an id"]
        # a redelivery (same id) is still dropped
        again = h.alice.personal("asked once", activity_id="msg-42")
        await h.post(again)
        await h.drain()
        await h.post(again)
        await h.drain()
        assert [text for _, text in questions(h.sim)].count("asked once") == 1
    finally:
        await h.stop()


# --- E. credentials echoed back by an upstream -----------------------------------------------------


class EchoingMoveworks:
    """A token endpoint and a Moveworks API on loopback that echo the bearer back in errors."""

    def __init__(self) -> None:
        self.token = "opaque" + secrets.token_hex(24)  # not JWT- or mwt_-shaped
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()

        async def token(request: web.Request) -> web.Response:
            form = await request.post()
            if form.get("client_id") == "refused":
                return web.json_response({"error": "invalid_client",
                                          "error_description": f"we already gave you {self.token}"}, status=401)
            return web.json_response({"access_token": self.token, "expires_in": 3600})

        async def html_page(request: web.Request) -> web.Response:
            bearer = request.headers.get("Authorization", "")
            page = (f"<html><head><title>502 Bad Gateway ({bearer})</title></head>"
                    f"<body>upstream said {bearer.removeprefix('Bearer ')}</body></html>")
            return web.Response(status=502, text=page, content_type="text/html")

        async def json_error(request: web.Request) -> web.Response:
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response({"error": {"code": bearer, "message": f"token {bearer} is not allowed here"}},
                                     status=400)

        app.router.add_post("/oauth/token", token)
        app.router.add_get("/rest/conversations/{conversation_id}", html_page)
        app.router.add_get("/rest/conversations", json_error)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_a_token_echoed_back_by_the_upstream_reaches_no_message_and_no_log(caplog, capsys):
    upstream = EchoingMoveworks()
    await upstream.start()

    async def no_sleep(_: float) -> None:
        return None

    auth = ClientCredentialsAuth(upstream.url + "/oauth/token", "client-id", "client-secret-value")
    client = MoveworksClient(upstream.url + "/rest", ASSISTANT, auth, max_retries=1, sleep=no_sleep)
    failures: list[str] = []
    try:
        with caplog.at_level(logging.INFO):
            with pytest.raises(MoveworksError) as html_error:
                await client.get_conversation(None, "conv-1")
            failures.append(str(html_error.value))
            with pytest.raises(MoveworksError) as json_error:
                await client.list_conversations(None)
            failures.append(str(json_error.value))
            assert json_error.value.code == "***"
            refused = ClientCredentialsAuth(upstream.url + "/oauth/token", "refused", "another-secret")
            with pytest.raises(MoveworksError) as token_error:
                await refused.bearer(None)
            failures.append(str(token_error.value))
            await refused.aclose()
    finally:
        await client.aclose()
        await upstream.stop()
    assert "502" in failures[0] and "Bad Gateway" in failures[0]
    for text in [*failures, caplog.text]:
        assert upstream.token not in text
        assert upstream.token[:40] not in text  # not even shortened
    # and any log line carrying it, through the real formatter
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("json", "INFO")
        logging.getLogger("bridge.test").warning("careless: %s", upstream.token)
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert upstream.token not in line and "careless: ***" in line


def test_the_secret_registry_forgets_expired_tokens_and_stays_bounded():
    now = [0.0]
    registry = logs.SecretRegistry(max_expiring=100, clock=lambda: now[0])
    registry.add("configured-secret")
    registry.add("short")  # too short to mask safely
    tokens = [f"token-{n:04d}-" + secrets.token_hex(8) for n in range(150)]
    for token in tokens:
        registry.add(token, ttl=60)
    assert len(registry) == 101 and tokens[0] not in registry and tokens[-1] in registry
    text = f"a {tokens[-1]}, b {tokens[60]}, c configured-secret, d short, e {tokens[0]}"
    assert registry.scrub(text) == f"a ***, b ***, c ***, d short, e {tokens[0]}"
    now[0] = 61.0
    registry.add("a-new-token-value", ttl=60)
    assert len(registry) == 2
    assert registry.scrub(f"{tokens[-1]} configured-secret") == f"{tokens[-1]} ***"

