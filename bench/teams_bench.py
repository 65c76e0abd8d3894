"""Teams adapter benchmark: the real serve app (botbuilder CloudAdapter), the Moveworks simulator
at realistic pacing, and the fake Bot Framework connector from tests/fakes/bf_connector.py.

    python bench/teams_bench.py            # about 1.5 minutes
    python bench/teams_bench.py --quick    # smaller, for a smoke run

Prints, from one run:
  1. median latency the bridge adds between Moveworks' first answer text and the first text
     visible in Teams, in personal chats (native streaming) and channels (post + update);
  2. connector calls for one 10-second answer in each scope (typing, stream, post, update);
  3. concurrent 10-second answers one tenant sustains with the fake enforcing the documented
     limits (per conversation 7/1 s, 8/2 s, 60/30 s; 50/s per tenant): 429s, lost final texts,
     time until the last final.
"""

from __future__ import annotations

import argparse
import asyncio
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

from bridge.app import make_app
from bridge.config import Settings
from bridge.runtime import build_runtime
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store
from tests.fakes.bf_connector import FakeConnector, TeamsUser

ASSISTANT = "moveworks-bridge-dev"


def answer_text(chunks: int) -> str:
    return " ".join(f"word{i}" for i in range(chunks * 6)) + "."


class Bench:
    def __init__(self, tmp: Path, name: str, *, enforce: bool = False) -> None:
        self.tmp = tmp
        self.name = name
        self.fake = FakeConnector(enforce_limits=enforce)
        self.sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=1.0))
        self.first_text: list[float] = []

    async def __aenter__(self) -> Bench:
        await self.fake.start()
        await self.sim.start()
        settings = Settings(
            db=str(self.tmp / f"{self.name}.db"), adapters=("teams",), poller=False,
            moveworks_base_url=self.sim.base_url, moveworks_assistant_name=ASSISTANT, moveworks_api_key="sim-key",
            shutdown_grace=5.0,
        )
        self.runtime = build_runtime(settings, store=Store(settings.db))
        self.runtime.relay.observe_first_text(lambda platform, seconds: self.first_text.append(seconds))
        self.runner = web.AppRunner(make_app(self.runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/api/messages"  # type: ignore[union-attr]
        self.session = ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.runner.cleanup()
        await self.sim.stop()
        await self.fake.stop()

    def user(self, i: int) -> TeamsUser:
        self.fake.add_member(f"29:u{i}", f"aad-{i}", f"User {i}", f"user{i}@example.com")
        return TeamsUser(f"29:u{i}", f"aad-{i}", f"User {i}", self.fake.url)

    async def ask(self, activity: dict[str, Any]) -> str:
        async with self.session.post(self.url, data=json.dumps(activity),
                                     headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 201, resp.status
        return activity["conversation"]["id"]

    async def settle(self, expected: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.2)
        while self.runtime.relay.in_flight or len(self.first_text) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError("answers did not finish")
            await asyncio.sleep(0.05)


def ask_activity(user: TeamsUser, scope: str, text: str, n: int) -> dict[str, Any]:
    if scope == "personal":
        return user.personal(text)
    return user.channel(text, channel_id=f"19:bench-{n}@thread.tacv2")


async def latency(tmp: Path, scope: str, n: int) -> float:
    async with Bench(tmp, f"latency-{scope}") as b:
        b.sim.script_answer(text=answer_text(8), chunks=8, delay=0.25, times=n)
        user = b.user(0)
        for i in range(n):
            await b.ask(ask_activity(user, scope, f"question {i}", i))
            await b.settle(i + 1)
        return statistics.median(b.first_text)


async def calls_per_answer(tmp: Path, scope: str) -> dict[str, int]:
    async with Bench(tmp, f"calls-{scope}") as b:
        text = answer_text(40)
        b.sim.script_answer(text=text, chunks=40, delay=0.25)  # ~10 s of streaming
        conversation = await b.ask(ask_activity(b.user(0), scope, "a ten second answer", 0))
        await b.settle(1)
        assert b.fake.visible_text(conversation) == text, "final text lost"
        counts: dict[str, int] = {}
        for call in b.fake.calls:
            if call.method == "GET":
                kind = "roster"
            elif call.method == "PUT":
                kind = "update"
            elif (call.json or {}).get("type") == "typing":
                kind = "stream" if call.streaminfo else "typing"
            else:
                kind = "final stream" if call.streaminfo else "post"
            counts[kind] = counts.get(kind, 0) + 1
        return counts


async def concurrency(tmp: Path, k: int) -> dict[str, Any]:
    async with Bench(tmp, f"concurrency-{k}", enforce=True) as b:
        text = answer_text(40)
        b.sim.script_answer(text=text, chunks=40, delay=0.25, times=k)
        users = [b.user(i) for i in range(k)]
        start = time.monotonic()
        # half personal chats (native streaming), half channel reply chains (post + update)
        asked = await asyncio.gather(*(b.ask(ask_activity(users[i], "personal" if i % 2 else "channel",
                                                           f"question {i}", i)) for i in range(k)))
        await b.settle(k)
        elapsed = time.monotonic() - start
        lost = sum(1 for conversation in asked if b.fake.visible_text(conversation) != text)
        return {"answers": k, "429s": b.fake.throttled, "lost_finals": lost, "seconds": round(elapsed, 1),
                "connector_calls": len(b.fake.calls)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and smaller concurrency")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        n = 5 if args.quick else 12
        print("1. first visible text, median latency added by the bridge (first Moveworks text -> visible):")
        for scope in ("personal", "channel"):
            print(f"   {scope:8s} {await latency(tmp, scope, n) * 1000:7.0f} ms  (n={n})")
        print("2. connector calls for one 10-second answer:")
        for scope in ("personal", "channel"):
            counts = await calls_per_answer(tmp, scope)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"   {scope:8s} {sum(counts.values()):3d}  ({detail})")
        print("3. concurrent 10-second answers, one tenant, fake enforcing the documented limits:")
        sustained = 0
        for k in ((10, 30) if args.quick else (10, 40, 80, 120)):
            result = await concurrency(tmp, k)
            print("   " + "  ".join(f"{key}={value}" for key, value in result.items()))
            if result["429s"] == 0 and result["lost_finals"] == 0:
                sustained = k
        print(f"   sustained with zero 429s and zero lost finals: {sustained} concurrent answers (largest tested)")


if __name__ == "__main__":
    asyncio.run(main())
