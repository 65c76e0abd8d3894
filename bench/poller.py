"""Poller section: delivery lag, backlog throughput, Moveworks request rate, and kill -9 drills.

1. Delivery lag (event created -> its post reaches the fake Slack) for active identities at the
   default interval (5 s), polling only and with the webhook: real time, loopback simulator, the
   real Slack adapter and slack_sdk against bridge/testing/slack_api.FakeSlack.
2. Backlog: N events already waiting in one conversation, delivered in order into one Slack
   thread (events/s), same stack.
3. Moveworks request rate with 10,000 known identities (user_jwt-like, a key per employee) under
   the default budget (10 rps): virtual time (injected clock, instant fake API), and real time
   against the loopback simulator.
4. Fault drill: the real `moveworks-bridge poll` subprocess is SIGKILLed between claim and post,
   and between post and mark, then restarted: no event may be lost, at most one posted twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets
import signal
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.report import Context, DrillFailed, Table, ms, pct
from bridge.answers.relay import Relay
from bridge.events.poller import Poller
from bridge.events.webhook import webhook_routes
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import ChatUser, ThreadKey
from bridge.moveworks import MoveworksClient
from bridge.process.config import Settings
from bridge.process.services import Services
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store
from bridge.testing.clock import FakeClock
from bridge.testing.poll_load import CountingClient, fill_employees, max_in_window
from bridge.testing.slack_api import FakeSlack
from bridge.testing.waiting import until

ASSISTANT = "moveworks-bridge-dev"
ROOT = Path(__file__).resolve().parent.parent
IDENTITIES = 10_000
INTERVAL = 5.0  # the default BRIDGE_POLL_INTERVAL


class KeyPerEmployeeAuth:
    """user_jwt stand-in for the simulator: employee X uses the API key 'key-X'."""

    per_employee = True

    async def bearer(self, identity: str | None) -> str:
        return f"key-{identity}"

    def invalidate(self, identity: str | None, token: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


class PollerStack:
    """Simulator + store + relay + the real Slack adapter on a fake Slack + a poller, in process.

    The fake Slack stamps calls with wall time, so lag is measured where the user sees the post,
    not by the bridge's own accounting."""

    def __init__(self, tmp: Path, emails: list[str], *, interval: float = INTERVAL, webhook: bool = False) -> None:
        self.tmp, self.emails, self.interval, self.webhook = tmp, emails, interval, webhook

    async def __aenter__(self) -> PollerStack:
        self.fake = FakeSlack(clock=time.time)
        await self.fake.start()
        self.sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0,
                                             api_keys={f"key-{e}": e for e in self.emails}))
        await self.sim.start()
        self.store = Store(str(self.tmp / f"poller-{secrets.token_hex(4)}.db"))
        self.client = MoveworksClient(self.sim.base_url, ASSISTANT, KeyPerEmployeeAuth(), max_retries=1)
        self.relay = Relay(store=self.store, client=self.client, per_employee=True)
        settings = Settings(db=self.store.path, adapters=("slack",), moveworks_base_url=self.sim.base_url,
                            moveworks_assistant_name=ASSISTANT, moveworks_api_key="unused",
                            slack_bot_token=self.fake.token, slack_signing_secret="x",
                            slack_api_url=self.fake.url, poll_interval=self.interval)
        from adapters.slack import build

        self.relay.register(build(Services(settings=settings, store=self.store, relay=self.relay,
                                           budgets=Budgets())))
        self.threads: dict[str, tuple[str, str]] = {}  # email -> (conversation, thread ts)
        for i, email in enumerate(self.emails):
            self.fake.add_user(f"U{i}", f"user{i}", email)
            self.store.employees.save(ChatUser("slack", "T1", f"U{i}", email=email), email_checked=True, active=True)
            conv = self.sim.state.new_conversation(email, None)["conversation_id"]
            ts = f"{1700000000 + i}.000100"
            self.store.links.insert(ThreadKey("slack", "T1", "C1", ts), f"U{i}", email, conv,
                                   {"channel": "C1", "thread_ts": ts})
            self.threads[email] = (conv, ts)
        self.poller = Poller.from_settings(settings, store=self.store, client=self.client, relay=self.relay,
                                           per_employee=True)
        self.runner = None
        if self.webhook:
            app = web.Application()
            app.add_routes(webhook_routes(self.poller, "bench-secret"))
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
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

    def posted(self) -> dict[str, float]:
        """Body text -> wall time the fake Slack accepted its first post."""
        out: dict[str, float] = {}
        for c in self.fake.calls_to("chat.postMessage", ok=True):
            out.setdefault(FakeSlack.body_text(c.params).strip(), c.at)
        return out


async def lag(ctx: Context, table: Table, *, events: int, duration: float, webhook: bool) -> None:
    """Events at random times for random active identities; lag = Slack post time - creation."""
    emails = [f"active{i}@example.com" for i in range(20)]
    created: dict[str, float] = {}
    async with PollerStack(ctx.tmp, emails, webhook=webhook) as st:
        rng = random.Random(7)
        times = sorted(rng.uniform(0, duration) for _ in range(events))
        start = time.monotonic()
        for i, t in enumerate(times):
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            email, text = rng.choice(emails), f"notification {i:04d}"
            created[text] = time.time()
            st.sim.inject_event(email, text, conversation_id=st.threads[email][0])
        deadline = time.monotonic() + st.interval * 3 + 5
        while len(created.keys() & st.posted().keys()) < events and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polls the fake's record of posts
        posted = st.posted()
    lags = [posted[text] - t for text, t in created.items() if text in posted]
    table.add("webhook + polling" if webhook else "polling only", len(emails), events, len(lags),
              ms(pct(lags, 50)), ms(pct(lags, 95)), ms(max(lags, default=None)))


async def backlog(ctx: Context, table: Table, *, events: int) -> str | None:
    """One conversation with `events` waiting: one poll drains it into the thread, in order."""
    email = "backlog@example.com"
    async with PollerStack(ctx.tmp, [email], interval=3600.0) as st:
        conv, ts = st.threads[email]
        for i in range(events):
            st.sim.inject_event(email, f"backlog event {i:05d}", conversation_id=conv)
        st.sim.requests.clear()
        start = time.monotonic()
        await st.poller.poll_identity(email)
        elapsed = time.monotonic() - start
        shown = [st.fake.body_text(m).strip() for m in st.fake.thread("C1", ts) if m.get("bot_id")]
        pages = len([r for r in st.sim.requests if r["endpoint"] == "events"])
    expected = [f"backlog event {i:05d}" for i in range(events)]
    lost, in_order = len(set(expected) - set(shown)), shown == expected
    table.add(events, len(shown), lost, "yes" if in_order else "NO", elapsed, len(shown) / elapsed, pages)
    if lost or not in_order:
        return f"backlog: {lost} of {events} events lost, order {'kept' if in_order else 'broken'}"
    return None


def fill(store: Store, active: int, now: float) -> list[str]:
    """IDENTITIES employees, the first `active` seen a minute ago, the rest idle for 1-30 days."""
    return fill_employees(store, IDENTITIES, active=active, now=now, active_age=60.0,
                          idle_days=lambda i: 1 + i % 30)


async def rate_virtual(table: Table, *, active: int, seconds: float) -> None:
    """The scheduler alone over `seconds` of virtual time: what it asks of Moveworks."""
    clock, wall0 = FakeClock(), time.time()
    store = Store(":memory:")
    emails = fill(store, active, wall0)
    client = CountingClient(clock)
    poller = Poller(store=store, client=client, relay=Relay(store=store, client=client, per_employee=True),
                    per_employee=True, interval=INTERVAL, rps=10.0, clock=clock, sleep=clock.sleep,
                    wall=lambda: wall0 + clock() - 1000.0)
    t0 = clock()

    async def scenario() -> None:
        await poller.start()
        await clock.sleep(seconds)
        await poller.stop()

    await clock.run(scenario(), limit=seconds + 600)
    store.close()
    calls = [(t - t0, who) for t, who in zip(client.times, client.identities, strict=True) if t - t0 <= seconds]
    times = [t for t, _ in calls]
    table.add(f"virtual time, {seconds / 60:.0f} min", f"{IDENTITIES:,} ({active} active)", len(times),
              len(times) / seconds, max_in_window(times))
    active_set = set(emails[:active])
    active_for = min(seconds, poller.schedule.active_window - 60)  # they were last seen a minute before t0
    polls: dict[str, list[float]] = {}
    for t, who in calls:
        if who in active_set and t <= active_for:
            polls.setdefault(who, []).append(t)
    gaps = [b - a for ts in polls.values() for a, b in itertools.pairwise(ts)]
    idle = len({who for _, who in calls if who not in active_set})
    spare = len(times) / seconds - active / INTERVAL
    table.notes.append(
        f"Virtual run: while active (first {active_for / 60:.0f} min), active identities were polled every "
        f"{pct(gaps, 50):.1f} s (p50), {pct(gaps, 95):.1f} s (p95); "
        f"{idle:,} idle identities reached in {seconds / 60:.0f} min; with {active} active, the {spare:.1f} req/s "
        f"left over poll each of the {IDENTITIES - active:,} idle ones about every "
        f"{(IDENTITIES - active) / spare / 60:.0f} min.")


async def rate_real(ctx: Context, table: Table, *, seconds: float) -> None:
    """The real poller and HTTP client against the loopback simulator, wall clock."""
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0,
                                    api_keys={f"key-user{i:05d}@example.com": f"user{i:05d}@example.com"
                                              for i in range(IDENTITIES)}))
    await sim.start()
    store = Store(str(ctx.tmp / "poller-rate.db"))
    fill(store, 50, time.time())
    client = MoveworksClient(sim.base_url, ASSISTANT, KeyPerEmployeeAuth(), max_retries=1)
    poller = Poller(store=store, client=client, relay=Relay(store=store, client=client, per_employee=True),
                    per_employee=True, interval=INTERVAL, rps=10.0)
    try:
        await poller.start()
        await asyncio.sleep(1.0)  # start-up: identity load, first checkpoints
        sim.requests.clear()
        start = time.time()
        await asyncio.sleep(seconds)
        times = [r["t"] for r in sim.requests if r["endpoint"] == "events" and r["t"] <= start + seconds]
    finally:
        await poller.stop()
        await client.aclose()
        await sim.stop()
        store.close()
    table.add(f"real time, loopback simulator, {seconds:.0f} s", f"{IDENTITIES:,} (50 active)", len(times),
              len(times) / seconds, max_in_window(times))


# --- fault drill: kill -9 of the `poll` worker -----------------------------------------------------


class SlackProxy:
    """Forwards /api/* to the fake Slack. With `hold` set, chat.postMessage never answers:
    "before" keeps it from Slack (the kill lands between claim and post), "after" forwards it and
    keeps Slack's answer from the bridge (the kill lands between post and mark)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.hold: str | None = None
        self.held = 0
        self.release = asyncio.Event()

    async def start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/api/"
        self.session = aiohttp.ClientSession()

    async def stop(self) -> None:
        self.release.set()
        await self.session.close()
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        hold = self.hold if method == "chat.postMessage" else None
        body = await request.read()
        if hold == "before":
            self.held += 1
            await self.release.wait()
            return web.Response(status=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self.session.request(request.method, self.target + method, data=body, headers=headers,
                                        params=request.query) as resp:
            data, status = await resp.read(), resp.status
            out = {k: v for k, v in resp.headers.items() if k in ("Content-Type", "Retry-After")}
        if hold == "after":
            self.held += 1
            await self.release.wait()
            return web.Response(status=503)
        return web.Response(body=data, status=status, headers=out)


def statuses(db: str, event_ids: list[str]) -> list[str | None]:
    store = Store(db)
    try:
        return [store.events.status(e) for e in event_ids]
    finally:
        store.close()


async def start_poll(ctx: Context, env: dict[str, str]) -> asyncio.subprocess.Process:
    with ctx.log_file("poll").open("ab") as out:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", "poll", env=env, cwd=str(ROOT),
                                                    stdout=out, stderr=asyncio.subprocess.STDOUT)


async def kill_drill(ctx: Context, table: Table, label: str, hold: str, *, events: int = 3) -> str | None:
    """Kill -9 the worker while the first of `events` is held at `hold`, restart, count posts."""
    identity, root = "employee@example.com", "1700000000.000100"
    api_key = ctx.secret("mwk-bench-" + secrets.token_hex(16))
    fake = FakeSlack(token=ctx.secret("xoxb-bench-" + secrets.token_hex(12)))
    fake.add_user("U1", "alice", identity)
    await fake.start()
    proxy = SlackProxy(fake.url)
    await proxy.start()
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0, api_keys={api_key: identity}))
    await sim.start()
    db = str(ctx.tmp / f"drill-{hold}.db")
    procs: list[asyncio.subprocess.Process] = []
    try:
        # the bridge already knows alice and her thread, as the relay would have recorded them
        conv = sim.state.new_conversation(identity, None)["conversation_id"]
        store = Store(db)
        store.employees.save(ChatUser("slack", "T1", "U1", email=identity), email_checked=True, active=True)
        store.links.insert(ThreadKey("slack", "T1", "C1", root), "U1", "", conv, {"channel": "C1", "thread_ts": root})
        store.checkpoints.start("service")
        store.close()
        texts = [f"{label}: event {i}" for i in range(events)]
        ids = [sim.inject_event(identity, t, conversation_id=conv)["event_id"] for t in texts]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "SLACK_", "MOVEWORKS_", "TEAMS_"))},
            "BRIDGE_DB": db, "BRIDGE_ADAPTERS": "slack", "BRIDGE_POLL_INTERVAL": "0.2", "BRIDGE_LOG_LEVEL": "DEBUG",
            "SLACK_BOT_TOKEN": fake.token, "SLACK_API_URL": proxy.url,
            "SLACK_SIGNING_SECRET": ctx.secret(secrets.token_hex(16)),
            "MOVEWORKS_BASE_URL": sim.base_url, "MOVEWORKS_ASSISTANT_NAME": ASSISTANT, "MOVEWORKS_API_KEY": api_key,
        }
        proxy.hold = hold
        procs.append(await start_poll(ctx, env))
        await until(lambda: proxy.held and statuses(db, ids[:1]) == ["claimed"], timeout=30, what="the held post")
        procs[0].send_signal(signal.SIGKILL)
        await procs[0].wait()
        seen_at_kill = len(fake.bot_messages("C1"))
        proxy.hold = None
        procs.append(await start_poll(ctx, env))
        try:
            await until(lambda: statuses(db, ids) == ["sent"] * events, timeout=30, what="re-delivery")
            polls = len([r for r in sim.requests if r["endpoint"] == "events"])
            await until(lambda: len([r for r in sim.requests if r["endpoint"] == "events"]) >= polls + 3,
                        what="polls after delivery")  # a late duplicate would show up here
        except AssertionError:
            pass  # counted below as lost
        procs[1].send_signal(signal.SIGTERM)
        await asyncio.wait_for(procs[1].wait(), 20)
        shown = [fake.body_text(m).strip() for m in fake.bot_messages("C1")]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await sim.stop()
        await proxy.stop()
        await fake.stop()
    delivered = len(set(texts) & set(shown))
    lost, duplicates = events - delivered, sum(shown.count(t) - 1 for t in texts if t in shown)
    expected_at_kill = 1 if hold == "after" else 0
    ok = lost == 0 and duplicates <= 1 and seen_at_kill == expected_at_kill
    table.add(label, events, seen_at_kill, delivered, lost, duplicates, "pass" if ok else "FAIL")
    if ok:
        return None
    return (f"kill -9 {label}: {lost} of {events} events lost, {duplicates} duplicates, Slack had "
            f"{seen_at_kill} posts at the kill (expected {expected_at_kill})")


async def run(ctx: Context) -> list[Table]:
    q = ctx.quick
    failures: list[str | None] = []
    lag_table = Table("Poller: delivery lag (event created -> post accepted by the fake Slack)",
                      ["mode", "active identities", "events", "delivered", "p50 ms", "p95 ms", "max ms"],
                      notes=[f"Poll interval {INTERVAL:.0f} s (default); events at random times over the run; the "
                             "webhook makes the identity due at once."])
    await lag(ctx, lag_table, events=10 if q else 60, duration=6 if q else 90, webhook=False)
    await lag(ctx, lag_table, events=10 if q else 30, duration=5 if q else 30, webhook=True)

    backlog_table = Table("Poller: backlog in one conversation, delivered into one Slack thread",
                          ["events", "delivered", "lost", "in order", "seconds", "events/s", "event pages"],
                          notes=["The fake Slack does not enforce Slack's ~1 post/s per channel: this is the "
                                 "bridge's own throughput. Real Slack would drain one channel at about 1 event/s."])
    failures.append(await backlog(ctx, backlog_table, events=500 if q else 5000))

    rate_table = Table("Poller: Moveworks request rate, budget 10 req/s (MOVEWORKS_MAX_RPS)",
                       ["run", "identities", "requests", "mean req/s", "max in any 1 s"])
    await rate_virtual(rate_table, active=40, seconds=300.0 if q else 1200.0)
    await rate_real(ctx, rate_table, seconds=3.0 if q else 15.0)

    drill_table = Table("Fault drill: kill -9 of the poll worker",
                        ["kill point", "events", "Slack posts at kill", "delivered", "lost", "duplicates",
                         "outcome"],
                        notes=["Real `moveworks-bridge poll` subprocess, SIGKILLed while the first event's "
                               "chat.postMessage is held by a proxy, then restarted. Pass: 0 lost, at most "
                               "1 duplicate per killed event."])
    failures.append(await kill_drill(ctx, drill_table, "between claim and post", "before"))
    failures.append(await kill_drill(ctx, drill_table, "between post and mark", "after"))
    tables = [lag_table, backlog_table, rate_table, drill_table]
    if any(failures):
        exc = DrillFailed("; ".join(f for f in failures if f))
        exc.tables = tables  # the suite still prints the figures, FAIL rows included
        raise exc
    return tables
