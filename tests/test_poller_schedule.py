"""Scheduling and the global request budget, in virtual time (bridge/testing/clock.FakeClock)."""

from __future__ import annotations

import asyncio
import time

from bridge.answers.relay import Relay
from bridge.events.poller import Poller
from bridge.events.schedule import RequestBudget, Schedule
from bridge.models import ChatUser
from bridge.store import Store
from bridge.testing.clock import FakeClock
from bridge.testing.poll_load import CountingClient, fill_employees, max_in_window


async def test_budget_is_a_sliding_window():
    clock = FakeClock()
    budget = RequestBudget(10, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def worker():
        for _ in range(50):
            await budget.acquire()
            times.append(clock())

    await clock.run(*(worker() for _ in range(8)))
    assert len(times) == 400
    assert max_in_window(times) == 10
    # as Moveworks sees them: a request arriving 9 ms late and the tenth after it 9 ms early
    # still never make 11 in a second
    jitter = {0: 0.009, 10: -0.009}
    assert max_in_window([t + jitter.get(i % 20, 0.0) for i, t in enumerate(times)]) == 10
    assert times[-1] - times[0] < 41.0  # the full rate is used, less a 2 % margin for that jitter


async def test_ten_thousand_identities_never_exceed_the_budget():
    clock = FakeClock()
    wall0 = time.time()
    store = Store(":memory:")
    fill_employees(store, 10_000, active=20, now=wall0)
    client = CountingClient(clock, rate_limit_at={500}, retry_after=5.0)
    relay = Relay(store=store, client=client, per_employee=True)
    poller = Poller(store=store, client=client, relay=relay, per_employee=True, interval=5.0, rps=10,
                    clock=clock, sleep=clock.sleep, wall=lambda: wall0 + clock() - 1000.0)

    async def scenario():
        await poller.start()
        await clock.sleep(180.0)
        await poller.stop()

    await clock.run(scenario(), limit=400)
    times = client.times
    assert max_in_window(times) <= 10
    assert len(times) >= 0.85 * 10 * 180 - 10 * 5  # the budget is used (minus the 429 pause)
    # the 429 paused everyone for its Retry-After
    t429 = times[499]
    assert not [t for t in times[500:] if t < t429 + 5.0]
    # active identities keep their interval although 10,000 idle ones are overdue...
    active = {f"user{i:05d}@example.com" for i in range(20)}
    active_polls = sum(1 for i in client.identities if i in active)
    assert active_polls >= 20 * (180 / 5.0) * 0.8
    # ...and the idle ones share the rest of the budget
    assert len(set(client.identities)) > 1000
    store.close()


def test_schedule_intervals():
    now = [1000.0]
    wall = [1_700_000_000.0]
    s = Schedule(interval=5.0, max_idle_interval=300.0, clock=lambda: now[0], wall=lambda: wall[0])
    active = s.add("a", wall[0] - 60, spread=False)
    hour = s.add("h", wall[0] - 3600, spread=False)
    day = s.add("d", wall[0] - 86_400, spread=False)
    never = s.add("n", None, spread=False)
    assert s.interval_for(active) == 5.0
    assert s.interval_for(hour) == 30.0
    assert s.interval_for(day) == 300.0
    assert s.interval_for(never) == 300.0
    assert s.klass(active) == "active" and s.klass(hour) == "idle"
    # errors back off exponentially, capped
    active.errors = 3
    assert s.interval_for(active) == 40.0
    active.errors = 30
    assert s.interval_for(active) == 300.0
    active.errors = 0
    # trigger makes it due now; a trigger while running polls again right after
    state = s.take_due()
    assert state is not None
    s.done(state, ok=True)
    assert s.trigger("d")
    got = s.take_due()
    assert got is not None and got.key == "d" and got.reason == "webhook"
    assert s.trigger("d") and got.again
    s.done(got, ok=True)
    assert got.next_due == now[0]
    assert s.recently_active() == ["a"]
    assert not s.trigger("unknown")


def test_activity_brings_an_idle_identity_back_to_the_active_pace():
    now = [0.0]
    wall = [1_700_000_000.0]
    s = Schedule(interval=5.0, clock=lambda: now[0], wall=lambda: wall[0])
    state = s.add("x", wall[0] - 86_400, spread=False)
    first = s.take_due()
    s.done(first, ok=True)
    assert state.next_due == 300.0
    s.add("x", wall[0])  # the employee just talked to the bot
    assert state.next_due == 5.0


async def test_run_loop_polls_new_events_at_the_interval(tmp_path):
    from tests.test_poller_helpers import close_env, make_env

    env = await make_env(tmp_path)
    try:
        user = ChatUser("slack", "T1", "U1", email="ann@example.com")
        env.store.employees.save(user, email_checked=True, active=True)
        poller = env.poller(interval=0.2)
        await poller.start()
        await asyncio.sleep(0.3)
        env.sim.inject_event("ann@example.com", "hello from the loop")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if env.slack.posts:
                break
        assert env.slack.texts() == ["hello from the loop"]
        await poller.stop()
        assert poller._task is None
    finally:
        await close_env(env)
