"""Events-poller benchmark: delivery lag, backlog throughput, Moveworks request rate.

    python bench/poller_bench.py            # all three (about 1 minute)
    python bench/poller_bench.py --quick    # shorter runs

1. Delivery lag (event `created_at` -> posted in the fake Slack) for active identities at the
   default interval (5 s), polling only and with the webhook: real time, loopback simulator,
   the real Slack adapter and slack_sdk against tests/fakes/slack_api.FakeSlack.
2. Backlog throughput: N events already waiting in one conversation, delivered in order into a
   Slack thread (events/s), same stack.
3. Moveworks request rate with 10,000 known identities (user_jwt mode), default budget 10 rps:
   (a) virtual time (injected clock, instant fake API) over 20 minutes, and (b) real time against
       the loopback simulator for a few seconds.
"""

from __future__ import annotations

import argparse
import itertools
import asyncio
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.budget import Budgets
from bridge.config import Settings
from bridge.models import ChatUser, ThreadKey
from bridge.moveworks import MoveworksClient
from bridge.moveworks.models import Page
from bridge.poller import Poller
from bridge.relay import Relay
from bridge.runtime import AdapterContext
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store
from bridge.webhook import webhook_routes
from tests.fakes.slack_api import FakeSlack
from tests.spine_fakes import FakeClock

ASSISTANT = "moveworks-bridge-dev"


class KeyPerEmployeeAuth:
    """user_jwt stand-in for the simulator: employee X uses the API key 'key-X'."""

    per_employee = True

    async def bearer(self, identity: str | None) -> str:
        return f"key-{identity}"

    def invalidate(self, identity: str | None, token: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


class Stack:
    """Simulator + store + relay + the real Slack adapter on a fake Slack + a poller."""

    def __init__(self, tmp: Path, emails: list[str], *, interval: float = 5.0, webhook: bool = False,
                 null_platform: bool = False) -> None:
        self.tmp, self.emails, self.interval, self.webhook = tmp, emails, interval, webhook
        self.null_platform = null_platform

    async def __aenter__(self) -> Stack:
        self.fake = FakeSlack()
        await self.fake.start()
        self.sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0,
                                             api_keys={f"key-{e}": e for e in self.emails}))
        await self.sim.start()
        self.store = Store(str(self.tmp / f"bench-{random.random():.8f}.db"))
        self.client = MoveworksClient(self.sim.base_url, ASSISTANT, KeyPerEmployeeAuth(), max_retries=1)
        self.relay = Relay(store=self.store, client=self.client, per_employee=True)
        settings = Settings(db=self.store.path, adapters=("slack",), moveworks_base_url=self.sim.base_url,
                            moveworks_assistant_name=ASSISTANT, moveworks_api_key="unused",
                            slack_bot_token=self.fake.token, slack_signing_secret="x",
                            slack_api_url=self.fake.url, poll_interval=self.interval)
        if self.null_platform:  # the poller alone: a recording adapter with no rate limit
            from tests.test_poller_helpers import RecAdapter

            self.slack = RecAdapter("slack")
        else:
            from adapters.slack import build

            self.slack = build(AdapterContext(settings=settings, store=self.store, relay=self.relay,
                                              budgets=Budgets()))
        self.relay.register(self.slack)
        self.threads: dict[str, tuple[str, str]] = {}  # email -> (conversation, thread ts)
        for i, email in enumerate(self.emails):
            user = ChatUser("slack", "T1", f"U{i}", email=email)
            self.fake.add_user(f"U{i}", f"user{i}", email)
            self.store.save_employee(user, email_checked=True, active=True)
            conv = self.sim.state.new_conversation(email, None)["conversation_id"]
            ts = f"{1700000000 + i}.000100"
            self.store.insert_link(ThreadKey("slack", "T1", "C1", ts), f"U{i}", email, conv,
                                   {"channel": "C1", "thread_ts": ts})
            self.threads[email] = (conv, ts)
        self.poller = Poller.from_settings(settings, store=self.store, client=self.client, relay=self.relay,
                                           per_employee=True)
        self.runner = None
        if self.webhook:
            from aiohttp import web

            app = web.Application()
            app.add_routes(webhook_routes(self.poller, "bench-secret"))
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.sim.config.webhook_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/moveworks/webhook"
            self.sim.config.webhook_secret = "bench-secret"
        await self.poller.start()
        await asyncio.sleep(0.5)  # first polls: checkpoints start at now
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poller.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.client.aclose()
        await self.sim.stop()
        await self.fake.stop()
        self.store.close()


async def bench_lag(tmp: Path, *, identities: int, events: int, duration: float, webhook: bool) -> dict[str, Any]:
    emails = [f"active{i}@example.com" for i in range(identities)]
    async with Stack(tmp, emails, webhook=webhook) as st:
        rng = random.Random(7)
        times = sorted(rng.uniform(0, duration) for _ in range(events))
        start = time.monotonic()
        for t in times:
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            email = rng.choice(emails)
            st.sim.inject_event(email, f"notification at {t:.2f}", conversation_id=st.threads[email][0])
        deadline = time.monotonic() + st.interval * 3 + 5
        while len(st.poller.delivery.lags) < events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lags = list(st.poller.delivery.lags)
    return {"events": events, "delivered": len(lags), "identities": identities,
            "interval_s": 5.0, "webhook": webhook,
            "lag_p50_s": round(pct(lags, 50), 3), "lag_p95_s": round(pct(lags, 95), 3),
            "lag_max_s": round(max(lags), 3) if lags else None}


async def bench_backlog(tmp: Path, *, events: int, null_platform: bool = False) -> dict[str, Any]:
    email = "backlog@example.com"
    async with Stack(tmp, [email], interval=3600.0, null_platform=null_platform) as st:
        conv, ts = st.threads[email]
        for i in range(events):
            st.sim.inject_event(email, f"backlog event {i:05d}", conversation_id=conv)
        st.sim.requests.clear()
        start = time.monotonic()
        delivered = await st.poller.poll_identity(email)
        elapsed = time.monotonic() - start
        if null_platform:
            shown = [p.answer.text for p in st.slack.posts]
        else:
            shown = [st.fake.body_text(m).strip() for m in st.fake.thread("C1", ts) if m.get("bot_id")]
        in_order = shown == [f"backlog event {i:05d}" for i in range(events)]
        pages = len([r for r in st.sim.requests if r["endpoint"] == "events"])
    return {"platform": "recording (no limit)" if null_platform else "fake Slack + Slack adapter",
            "events": events, "delivered": delivered, "seconds": round(elapsed, 2),
            "events_per_s": round(delivered / elapsed, 1), "in_order": in_order, "event_pages": pages}


class CountingClient:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.identities: list[str | None] = []

    async def list_events(self, identity, conversation_id="-", *, starting_after=None, ending_at=None,
                          cursor=None, limit=100):
        self.times.append(self.clock())
        self.identities.append(identity)
        return Page((), None)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def fill(store: Store, n: int, active: int, now: float) -> list[str]:
    emails = [f"user{i:05d}@example.com" for i in range(n)]
    store.db.execute("BEGIN")
    for i, email in enumerate(emails):
        store.db.execute(
            "INSERT INTO employees (platform, workspace, user_id, email, name, email_checked_at, last_active_at) "
            "VALUES ('slack', 'T1', ?, ?, NULL, ?, ?)",
            (f"U{i}", email, now, now - 60 if i < active else now - 86_400 * (1 + i % 30)),
        )
    store.db.execute("COMMIT")
    return emails


async def bench_rate_virtual(*, identities: int, active: int, seconds: float) -> dict[str, Any]:
    clock = FakeClock()
    wall0 = time.time()
    store = Store(":memory:")
    emails = fill(store, identities, active, wall0)
    client = CountingClient(clock)
    relay = Relay(store=store, client=client, per_employee=True)
    poller = Poller(store=store, client=client, relay=relay, per_employee=True, interval=5.0, rps=10.0,
                    clock=clock, sleep=clock.sleep, wall=lambda: wall0 + clock() - 1000.0)
    t0 = clock()

    async def scenario() -> None:
        await poller.start()
        await clock.sleep(seconds)
        await poller.stop()

    wall_start = time.monotonic()
    await clock.run(scenario(), limit=seconds + 600)
    wall_elapsed = time.monotonic() - wall_start
    store.close()
    times = [t for t in client.times if t - t0 <= seconds]
    active_set = set(emails[:active])
    per_active: dict[str, list[float]] = {}
    for t, ident in zip(client.times, client.identities):
        if ident in active_set:
            per_active.setdefault(ident, []).append(t)
    gaps = [b - a for ts in per_active.values() for a, b in itertools.pairwise(ts)]
    idle_polled = len({i for i in client.identities if i not in active_set})
    return {"identities": identities, "active": active, "virtual_seconds": seconds,
            "requests": len(times), "requests_per_s": round(len(times) / seconds, 2),
            "max_requests_in_any_1s": max_in_window(times),
            "active_poll_gap_p50_s": round(pct(gaps, 50), 2), "active_poll_gap_p95_s": round(pct(gaps, 95), 2),
            "idle_identities_polled": idle_polled,
            "idle_round_s_estimate": round((identities - active) / max(1e-9, (len(times) / seconds)
                                           - active / 5.0), 0),
            "wall_seconds": round(wall_elapsed, 1)}


async def bench_rate_real(tmp: Path, *, identities: int, seconds: float) -> dict[str, Any]:
    emails = [f"user{i:05d}@example.com" for i in range(identities)]
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0, api_keys={f"key-{e}": e for e in emails}))
    await sim.start()
    store = Store(str(tmp / "rate.db"))
    fill(store, identities, 50, time.time())
    client = MoveworksClient(sim.base_url, ASSISTANT, KeyPerEmployeeAuth(), max_retries=1)
    relay = Relay(store=store, client=client, per_employee=True)
    poller = Poller(store=store, client=client, relay=relay, per_employee=True, interval=5.0, rps=10.0)
    await poller.start()
    await asyncio.sleep(1.0)  # start-up (identity load, first checkpoints)
    sim.requests.clear()
    start = time.time()
    await asyncio.sleep(seconds)
    times = [r["t"] for r in sim.requests if r["endpoint"] == "events" and r["t"] <= start + seconds]
    await poller.stop()
    await client.aclose()
    await sim.stop()
    store.close()
    return {"identities": identities, "seconds": seconds, "requests": len(times),
            "requests_per_s": round(len(times) / seconds, 2), "max_requests_in_any_1s": max_in_window(times)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="poller-bench-"))
    q = args.quick
    results: dict[str, Any] = {}
    # event rate kept under the Slack adapter's workspace write budget (~50 writes/min), so the
    # figure is the poller's lag, not a platform queue
    results["lag_polling"] = await bench_lag(tmp, identities=20, events=10 if q else 40,
                                             duration=20 if q else 80, webhook=False)
    results["lag_webhook"] = await bench_lag(tmp, identities=20, events=10 if q else 20,
                                             duration=20 if q else 40, webhook=True)
    results["backlog_slack"] = await bench_backlog(tmp, events=60 if q else 120)
    results["backlog_poller"] = await bench_backlog(tmp, events=250 if q else 1000, null_platform=True)
    results["rate_virtual"] = await bench_rate_virtual(identities=10_000, active=40,
                                                       seconds=300.0 if q else 1200.0)
    results["rate_real"] = await bench_rate_real(tmp, identities=10_000, seconds=5.0 if q else 15.0)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, r in results.items():
        print(f"{name:13s} " + "  ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    asyncio.run(main())
