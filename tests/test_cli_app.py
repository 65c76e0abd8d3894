"""The operator surface: quickstart command, config errors, serve routes, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from bridge.errors import ConfigError
from bridge.process.config import Settings
from bridge.process.logs import Redactor

QUESTION = "How do I reset my password?"


def _run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_readme_quickstart_streams_an_answer_through_the_real_core():
    result = _run("chat", "--simulate", "--once", QUESTION)
    assert result.returncode == 0, result.stderr
    assert "reset your password" in result.stdout
    assert "Sources:\n  [1]" in result.stdout
    assert "⏳" in result.stderr  # progress while Moveworks reasons


def test_missing_setting_stops_start_up_with_one_line_naming_it():
    result = _run("serve", env={"MOVEWORKS_API_KEY": "super-secret-key-value", "MOVEWORKS_ASSISTANT_NAME": "",
                                "PORT": "3978"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "moveworks-bridge: configuration error: "
        "MOVEWORKS_ASSISTANT_NAME is required (the Assistant-Name header)"
    )
    assert "super-secret-key-value" not in result.stderr + result.stdout


def test_malformed_values_are_named_and_secrets_are_masked():
    with pytest.raises(ConfigError, match="^PORT must be a whole number$"):
        Settings.from_env({"PORT": "eighty"})
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN must be a bot token"):
        Settings.from_env({"MOVEWORKS_ASSISTANT_NAME": "a", "MOVEWORKS_API_KEY": "k",
                           "SLACK_BOT_TOKEN": "nope", "SLACK_SIGNING_SECRET": "s"})
    settings = Settings.from_env({"MOVEWORKS_ASSISTANT_NAME": "a", "MOVEWORKS_API_KEY": "k-very-secret"})
    assert "k-very-secret" not in repr(settings)


def test_log_redaction_masks_tokens_and_configured_secrets():
    redactor = Redactor(["my-client-secret"])
    line = redactor.redact("auth failed: Bearer abc.def token=xoxb-123-456 secret my-client-secret mwt_zzz")
    assert "abc.def" not in line and "xoxb-123" not in line and "my-client-secret" not in line
    assert "mwt_zzz" not in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_answers_health_ready_and_metrics_then_shuts_down_on_sigterm(sim, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "BRIDGE_DB": str(tmp_path / "bridge.db"),
        "BRIDGE_POLLER": "off",
        "MOVEWORKS_BASE_URL": sim.base_url,
        "MOVEWORKS_ASSISTANT_NAME": "moveworks-bridge-dev",
        "MOVEWORKS_API_KEY": "sim-key",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    health = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert health.status_code == 200
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and "bridge_answers" in metrics.text
            assert (await http.get("/nope")).status_code == 404
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_json_logs_are_one_object_per_line_without_secrets(capsys):
    import json
    import logging

    from bridge.process import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("json", "INFO", ["topsecret-value"])
        try:
            raise ValueError("boom with topsecret-value inside")
        except ValueError:
            logging.getLogger("bridge.test").exception("token topsecret-value failed for %s", "Bearer abc123")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    record = json.loads(line)
    assert record["level"] == "error" and record["logger"] == "bridge.test"
    assert "ValueError" in record["exc"]
    assert "topsecret" not in line and "abc123" not in line


async def test_chat_shows_proactive_events_as_they_arrive(sim):
    import io

    from adapters.console import THREAD, ConsoleAdapter
    from bridge.models import Inbound
    from bridge.process.runtime import build_runtime
    from bridge.store import Store

    settings = Settings(moveworks_base_url=sim.base_url, moveworks_assistant_name="moveworks-bridge-dev",
                        moveworks_api_key="sim-key")
    out = io.StringIO()
    console = ConsoleAdapter(email="employee@example.com", out=out, err=io.StringIO(), live=False)
    runtime = build_runtime(settings, adapters=(), store=Store(":memory:"), poller=True)
    runtime.relay.register(console)
    try:
        await runtime.relay.handle(Inbound("c1", THREAD, console.user, text="How do I reset my password?"))
        await runtime.poller.poll_identity()  # a known identity starts at "now"
        [conversation_id] = sim.state.user("employee@example.com").conversations
        sim.inject_event("employee@example.com", "Your password reset ticket is resolved.",
                         conversation_id=conversation_id)
        assert await runtime.poller.poll_identity() == 1
        assert "📣 New message from the assistant:\nYour password reset ticket is resolved." in out.getvalue()
    finally:
        await runtime.aclose()


async def test_after_a_crash_the_answering_process_tells_the_thread_but_a_poll_worker_does_not(sim, tmp_path, capsys):
    from adapters.console import THREAD
    from bridge.process.runtime import build_runtime
    from bridge.store import Store

    path = tmp_path / "bridge.db"
    crashed = Store(path)  # the process that died mid-answer
    link = crashed.links.insert(THREAD, "u1", "", "conv_x", {})
    crashed.replies.start(link.id, owner="crashed-process")  # no heartbeat: its owner is dead
    crashed.close()
    settings = Settings(db=str(path), moveworks_base_url=sim.base_url,
                        moveworks_assistant_name="moveworks-bridge-dev", moveworks_api_key="sim-key")

    worker = build_runtime(settings, adapters=("console",), answers=False)
    await worker.start()
    await worker.aclose()
    assert "restarted" not in capsys.readouterr().out
    probe = Store(path)
    assert probe.db.execute("SELECT status FROM replies").fetchone()[0] == "streaming"
    probe.close()

    serve = build_runtime(settings, adapters=("console",))
    await serve.start()  # the notes go out in the background: start-up is not held up
    await serve.relay.drain(10)
    await serve.aclose()
    assert "I was restarted before I could finish this answer. Please ask again." in capsys.readouterr().out
