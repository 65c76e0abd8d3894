"""Slack adapter benchmark: the real serve app, the Moveworks simulator and the fake Slack Web API.

    python bench/slack_bench.py            # ~3 minutes on 2 cores
    python bench/slack_bench.py --quick    # smaller, for a smoke run

Prints, from one run:
  1. median latency the bridge adds between Moveworks' first answer text and the first text
     visible in Slack (native and edit modes);
  2. Slack write calls for one 10-second answer in native and edit modes;
  3. concurrent 10-second answers one workspace sustains in edit mode with the fake enforcing
     Tier 3 (50 chat.update per minute): 429s, lost final texts and time until the last final.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.app import make_app  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.runtime import build_runtime  # noqa: E402
from bridge.simulator import Simulator, SimulatorConfig  # noqa: E402
from bridge.store import Store  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402

SECRET = "bench-secret"
ASSISTANT = "moveworks-bridge-dev"
_ids = itertools.count(1)
WRITES = {"chat.postMessage", "chat.update", "chat.delete", "chat.startStream", "chat.appendStream",
          "chat.stopStream", "assistant.threads.setStatus"}


def answer_text(seconds: float, chunks: int) -> str:
    return " ".join(f"word{i}" for i in range(chunks * 6)) + "."


class Bench:
    def __init__(self, tmp: Path, streaming: str, *, tier3: bool = False) -> None:
        self.tmp = tmp
        self.streaming = streaming
        self.fake = FakeSlack(enforce_tier3=tier3)
        self.sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=1.0))
        self.first_text: list[float] = []

    async def __aenter__(self) -> Bench:
        await self.fake.start()
        await self.sim.start()
        settings = Settings(
            db=str(self.tmp / f"{self.streaming}-{next(_ids)}.db"), adapters=("slack",), poller=False,
            moveworks_base_url=self.sim.base_url, moveworks_assistant_name=ASSISTANT, moveworks_api_key="sim-key",
            slack_bot_token=self.fake.token, slack_signing_secret=SECRET, slack_api_url=self.fake.url,
            slack_streaming=self.streaming, shutdown_grace=5.0,
        )
        self.runtime = build_runtime(settings, store=Store(settings.db))
        self.runtime.relay.observe_first_text(lambda platform, seconds: self.first_text.append(seconds))
        self.runner = web.AppRunner(make_app(self.runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events"  # type: ignore[union-attr]
        self.session = ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.session.close()
        await self.runner.cleanup()
        await self.sim.stop()
        await self.fake.stop()

    async def ask(self, text: str, user: str, channel: str) -> str:
        ts = f"{1600000000 + next(_ids)}.000100"
        event = {"type": "message", "channel_type": "im", "channel": channel, "user": user, "text": text, "ts": ts}
        body = json.dumps({"team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                           "event_id": f"Ev{next(_ids)}", "event_time": int(time.time()), "event": event,
                           "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}]})
        stamp = str(int(time.time()))
        signature = "v0=" + hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
                   "X-Slack-Signature": signature}
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            assert resp.status == 200, resp.status
        return ts

    async def settle(self, expected: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.2)
        while self.runtime.relay.in_flight or len(self.first_text) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError("answers did not finish")
            await asyncio.sleep(0.05)

    def visible(self, channel: str, ts: str) -> str:
        return "".join(self.fake.body_text(m) for m in self.fake.thread(channel, ts) if m.get("bot_id"))


async def latency(tmp: Path, mode: str, n: int) -> float:
    async with Bench(tmp, mode) as b:
        b.sim.script_answer(text=answer_text(2, 8), chunks=8, delay=0.25, times=n)
        for i in range(n):
            await b.ask(f"question {i}", "U1", "D1")
            await b.settle(i + 1)
        return statistics.median(b.first_text)


async def writes_per_answer(tmp: Path, mode: str) -> dict[str, int]:
    async with Bench(tmp, mode) as b:
        text = answer_text(10, 40)
        b.sim.script_answer(text=text, chunks=40, delay=0.25)  # ~10 s of streaming
        ts = await b.ask("a ten second answer", "U1", "D1")
        await b.settle(1)
        assert b.visible("D1", ts) == text, "final text lost"
        counts: dict[str, int] = {}
        for call in b.fake.calls:
            if call.method in WRITES:
                counts[call.method] = counts.get(call.method, 0) + 1
        return counts


async def concurrency(tmp: Path, k: int) -> dict[str, Any]:
    async with Bench(tmp, "edit", tier3=True) as b:
        text = answer_text(10, 40)
        b.sim.script_answer(text=text, chunks=40, delay=0.25, times=k)
        start = time.monotonic()
        asked = await asyncio.gather(*(b.ask(f"question {i}", f"U{i}", f"D{i}") for i in range(k)))
        await b.settle(k)
        elapsed = time.monotonic() - start
        lost = sum(1 for i, ts in enumerate(asked) if b.visible(f"D{i}", ts) != text)
        updates = len(b.fake.calls_to("chat.update"))
        return {"answers": k, "429s": b.fake.rate_limited, "lost_finals": lost, "seconds": round(elapsed, 1),
                "chat.update": updates}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and smaller concurrency")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        n = 5 if args.quick else 15
        print("1. first visible text, median latency added by the bridge (first Moveworks text -> visible):")
        for mode in ("native", "edit"):
            print(f"   {mode:6s} {await latency(tmp, mode, n) * 1000:7.0f} ms  (n={n})")
        print("2. Slack write calls for one 10-second answer:")
        for mode in ("native", "edit"):
            counts = await writes_per_answer(tmp, mode)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"   {mode:6s} {sum(counts.values()):3d}  ({detail})")
        print("3. concurrent 10-second answers, one workspace, edit mode, fake enforcing Tier 3:")
        sustained = 0
        for k in ((5, 20) if args.quick else (10, 30, 60)):
            result = await concurrency(tmp, k)
            print("   " + "  ".join(f"{key}={value}" for key, value in result.items()))
            if result["429s"] == 0 and result["lost_finals"] == 0:
                sustained = k
        print(f"   sustained with zero 429s and zero lost finals: {sustained} concurrent answers (largest tested)")


if __name__ == "__main__":
    asyncio.run(main())
