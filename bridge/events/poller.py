"""The events poller: brings Moveworks async answers and proactive notifications into chat.

For every identity (one "service" identity in `api_key`/`client_credentials` modes, every known
employee email in `user_jwt` mode) it reads `GET /conversations/-/events?starting_after=<checkpoint>`,
following cursors, oldest first, and hands each event to `Delivery` (claim -> post -> mark). The
checkpoint advances only after an event is handled (sent or explicitly skipped); a transient
delivery failure stops that identity's poll there, so its events stay in order, and the poll is
retried with backoff.

A new identity "starts at now": its checkpoint row records when the bridge first knew it, and
events created before that are marked skipped ("history") instead of flooding the chat.

Scheduling (`bridge.events.schedule`): active identities every `interval`, idle ones progressively less
often (up to `max_idle_interval`), all Moveworks requests through one `RequestBudget`
(`rps`, default 10/s; a 429 pauses everyone for its Retry-After), at most `max_concurrency`
identities in flight, one identity's errors only back that identity off. `await trigger()` (the webhook)
makes an identity - or every recently active one - due now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.answers.relay import Relay
from bridge.events.codec import event_from_payload
from bridge.events.delivery import Delivery
from bridge.events.routing import Outcome
from bridge.events.schedule import IdentityState, RequestBudget, Schedule
from bridge.mechanisms.gate import KeyedLock
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import InvalidRequest, MoveworksError, RateLimited
from bridge.process import metrics
from bridge.process.config import Settings
from bridge.store.aio import AnyStore, as_async

log = logging.getLogger(__name__)

SERVICE = "service"  # checkpoint key of the single identity (api_key / client_credentials)
PAGE_LIMIT = 100
LEASE = "poller"
WAKES = "poller.wakes"  # kv: identities a webhook on a standby process asked to poll now
WAKE_CHECK = 1.0  # how often the polling process looks for them  # the lease row naming the one process that polls
MAX_PAGES = 1000  # per poll: a server returning cursors forever cannot pin a worker
RATE_LIMIT_BACKOFF = (1.0, 60.0)  # 429 without Retry-After: exponential, for everyone


class Poller:
    def __init__(
        self,
        *,
        store: AnyStore,
        client: MoveworksClient,
        relay: Relay,
        interval: float = 5.0,
        max_idle_interval: float = 300.0,
        rps: float = 10.0,
        per_employee: bool | None = None,
        max_concurrency: int = 8,
        page_limit: int = PAGE_LIMIT,
        refresh_interval: float = 30.0,
        active_window: float = 600.0,
        max_attempts: int = 10,
        dm_single_identity: str = "sole",
        history_grace: float | None = None,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = as_async(store)
        # Several processes: only the holder of the `poller` lease polls (`owner` = this
        # process's instance id; None = the only process, no lease).
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.active = owner is None
        self.client = client
        self.relay = relay
        self.per_employee = relay.per_employee if per_employee is None else per_employee
        self.page_limit = max(1, min(100, int(page_limit)))
        self.refresh_interval = refresh_interval
        # An identity is discovered up to one refresh after the employee first talked to the bot;
        # events created in that gap (an async answer to their first question) are not history.
        self.history_grace = refresh_interval + 2 * interval if history_grace is None else history_grace
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self.budget = RequestBudget(rps, clock=clock, sleep=sleep)
        self.schedule = Schedule(
            interval=interval,
            max_idle_interval=max_idle_interval,
            active_window=active_window,
            clock=clock,
            wall=wall,
        )
        self.delivery = Delivery(
            store=store,
            adapters=relay.adapters,
            gate=relay.gate,
            per_employee=self.per_employee,
            wall=wall,
            dm_single_identity=dm_single_identity,
            max_attempts=max_attempts,
            owner=owner,
            # only the poller-lease holder delivers, so a claim need only outlive the holder:
            # when it dies, its claims lapse as the role passes on
            claim_lease=lease_ttl,
        )
        self.max_concurrency = max(1, int(max_concurrency))
        self._locks = KeyedLock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._polls: set[asyncio.Task] = set()
        self._next_refresh = float("-inf")
        self._rate_limit_step = 0
        self.requests = 0  # Moveworks requests made (benchmarks)


    @classmethod
    def from_settings(cls, settings: Settings, *, store: AnyStore, client: MoveworksClient, relay: Relay,
                      **kw: Any) -> Poller:
        params: dict[str, Any] = {
            "interval": float(settings.poll_interval),
            "max_idle_interval": float(settings.poll_max_interval),
            "rps": float(settings.moveworks_rps),
            "dm_single_identity": settings.unmapped_dm,
            "lease_ttl": float(settings.instance_ttl),
        }
        params.update(kw)
        return cls(store=store, client=client, relay=relay, **params)

    # --- identities ---------------------------------------------------------------------------

    def key_for(self, identity: str | None) -> str:
        if not self.per_employee:
            return SERVICE
        if not identity:
            raise ValueError("user_jwt mode polls per employee: an identity (email) is needed")
        return identity.strip().lower()

    def _api_identity(self, key: str) -> str | None:
        return key if self.per_employee else None

    async def _ensure_checkpoint(self, key: str) -> tuple[str | None, float]:
        checkpoint = await self.store.checkpoints.get(key)
        if checkpoint is None:
            checkpoint = await self.store.checkpoints.start(key)
            log.info("poller: new identity %s starts at now (older events are history)",
                     key if key == SERVICE else "<employee>")
        return checkpoint

    async def refresh_identities(self) -> int:
        """Load identities (and their last activity) from the store; start new checkpoints."""
        if not self.per_employee:
            # one cheap MAX() query: follow the employees' activity at the polling pace
            self._next_refresh = self._clock() + min(self.refresh_interval, self.schedule.interval)
            known = SERVICE in self.schedule.states
            self.schedule.add(SERVICE, await self.store.employees.last_activity(), spread=False)
            if not known:
                await self._ensure_checkpoint(SERVICE)
            return 1
        self._next_refresh = self._clock() + self.refresh_interval
        rows = await self.store.employees.identities()
        fresh = [email for email, _ in rows if email not in self.schedule.states]
        for email, last in rows:
            self.schedule.add(email, last)
        for email in fresh:
            await self._ensure_checkpoint(email)
        return len(rows)

    async def _known(self, key: str) -> bool:
        if key in self.schedule.states:
            return True
        if key == SERVICE:
            await self.refresh_identities()
            return True
        employees = await self.store.employees.by_email(key)
        if not employees:
            return False
        times = [e.last_active_at for e in employees if e.last_active_at is not None]
        self.schedule.add(key, max(times) if times else None, spread=False)
        await self._ensure_checkpoint(key)
        return True

    # --- webhook / manual triggers -----------------------------------------------------------

    async def trigger(self, identity: str | None = None) -> int:
        """Poll `identity` now (or every recently active identity); returns how many.

        Returns at once; the polls run in `run()`'s loop under the request budget.
        """
        if not self.active:
            # another process polls: leave the push in the store, where it looks every second
            key = SERVICE if not self.per_employee else (identity or "").strip().lower() or "*"
            await self.store.kv.namespace(WAKES).set(key, str(self._wall()))
            return 1
        if not self.per_employee:
            await self._known(SERVICE)
            keys = [SERVICE]
        elif identity:
            key = self.key_for(identity)
            if not await self._known(key):
                log.info("poller: webhook for an identity the bridge does not know; ignored")
                return 0
            keys = [key]
        else:
            keys = self.schedule.recently_active()
        for key in keys:
            self.schedule.trigger(key, "webhook")
        if keys:
            self._wake.set()
        return len(keys)

    async def touch(self, identity: str | None) -> None:
        """The employee just used the bot (relay hook): known and polled at the active pace
        from now on, without waiting for the next identity refresh."""
        key = SERVICE if not self.per_employee else (identity or "").strip().lower()
        if not key:
            return
        if key not in self.schedule.states:
            await self._ensure_checkpoint(key)
        self.schedule.add(key, self._wall(), spread=False)
        self._wake.set()

    # --- one identity -------------------------------------------------------------------------

    async def poll_identity(self, identity: str | None = None) -> int:
        """Poll one identity now (tests, webhooks); returns the number of events delivered."""
        key = self.key_for(identity)
        if key not in self.schedule.states:
            self.schedule.add(key, None, spread=False)
        delivered, _ok, _retry = await self._poll_locked(key)
        return delivered

    async def _poll_locked(self, key: str) -> tuple[int, bool, float | None]:
        async with self._locks(key):
            return await self._poll(key)

    async def _deliver_pending(
        self, key: str, started_at: float | None, waiting: set[str] | None = None
    ) -> tuple[int, bool, float | None]:
        """Re-deliver this identity's claimed-but-unfinished and retryable events, in order.
        `waiting` collects the conversations whose thread is busy: their later events wait too,
        the other conversations' go on."""
        waiting = set() if waiting is None else waiting
        delivered = 0
        for row in await self.store.events.pending(key):
            if self._stopping:
                return delivered, True, None
            ev = event_from_payload(row.get("payload"))
            if ev is None:
                log.error("event %s: stored payload unreadable; skipped", row.get("event_id"))
                await self.store.events.finish(row["event_id"], "skipped", "unreadable stored payload")
                continue
            if ev.conversation_id in waiting:
                continue  # stays pending, behind its conversation's earlier event
            result = await self.delivery.deliver(ev, key, started_at=started_at)
            if result.outcome is Outcome.SENT:
                delivered += 1
            elif result.outcome is Outcome.DEFERRED:
                waiting.add(ev.conversation_id)
            elif result.outcome is Outcome.RETRY:
                return delivered, False, result.retry_after
        return delivered, True, None

    async def _poll(self, key: str) -> tuple[int, bool, float | None]:
        last, started_at = await self._ensure_checkpoint(key)
        started_at -= self.history_grace
        first_poll = last is None
        waiting: set[str] = set()  # conversations whose thread is busy in this poll
        delivered, ok, retry_after = await self._deliver_pending(key, started_at, waiting)
        if not ok or self._stopping:
            return delivered, ok, retry_after
        api_identity = self._api_identity(key)
        query_after, cursor = last, None
        seen: set[str] = set()
        cursor_failures = 0
        pages = 0
        while not self._stopping and pages < MAX_PAGES:
            pages += 1
            await self.budget.acquire()
            if self._stopping:
                break
            self.requests += 1
            try:
                page = await self.client.list_events(
                    api_identity, "-", starting_after=query_after, cursor=cursor, limit=self.page_limit
                )
            except RateLimited as exc:
                wait = exc.retry_after
                if wait is None:
                    base, cap = RATE_LIMIT_BACKOFF
                    wait = min(cap, base * 2 ** self._rate_limit_step)
                    self._rate_limit_step += 1
                self.budget.penalize(wait)
                self._error("rate_limited")
                log.warning("poller: Moveworks rate limited the events poll; everyone waits %.1fs", wait)
                return delivered, False, wait
            except InvalidRequest as exc:
                if exc.code != "INVALID_CURSOR" and "cursor" not in str(exc).lower():
                    self._error("invalid_request")
                    log.warning("poller: events poll refused for %s: %s", self._who(key), exc)
                    return delivered, False, None
                self._error("invalid_cursor")
                cursor_failures += 1
                if cursor is not None and cursor_failures == 1:
                    # the page cursor expired: restart from what is already handled
                    log.warning("poller: cursor rejected for %s; resuming from the checkpoint",
                                self._who(key))
                    checkpoint = await self.store.checkpoints.get(key)
                    query_after, cursor = (checkpoint[0] if checkpoint else None), None
                    continue
                # the checkpoint itself is refused: start again from now, explicitly
                log.error("poller: checkpoint %s rejected for %s (INVALID_CURSOR); restarting "
                          "from now - undelivered events before now are skipped as history",
                          query_after, self._who(key))
                await self.store.checkpoints.reset(key)
                return delivered, True, None
            except MoveworksError as exc:
                self._error(type(exc).__name__)
                log.warning("poller: events poll failed for %s: %s", self._who(key), exc)
                return delivered, False, None
            self._rate_limit_step = 0
            for ev in page.items:
                if ev.event_id in seen:
                    log.info("event %s: listed twice in one poll; handled once", ev.event_id)
                    continue
                seen.add(ev.event_id)
                if ev.conversation_id in waiting:
                    await self.delivery.defer(ev, key, "waiting for an earlier event of its conversation")
                    await self.store.checkpoints.advance(key, ev.event_id)  # stored: the next poll has it
                    continue
                result = await self.delivery.deliver(ev, key, started_at=started_at, first_poll=first_poll)
                if result.outcome is Outcome.DEFERRED:
                    waiting.add(ev.conversation_id)
                if result.outcome is Outcome.RETRY:
                    return delivered, False, result.retry_after
                if result.outcome is Outcome.SENT:
                    delivered += 1
                await self.store.checkpoints.advance(key, ev.event_id)
                if self._stopping:
                    return delivered, True, None
            if not page.next_cursor or page.next_cursor == cursor:
                break
            cursor = page.next_cursor
        return delivered, True, None

    def _who(self, key: str) -> str:
        return "the service identity" if key == SERVICE else "an employee identity"

    @staticmethod
    def _error(kind: str) -> None:
        metrics.POLL_ERRORS.labels(kind).inc()

    # --- recovery -----------------------------------------------------------------------------

    async def recover(self) -> int:
        """Start-up: re-deliver events a previous process claimed but never marked, oldest first."""
        keys: list[str] = []
        for row in await self.store.events.pending():
            if row["identity"] not in keys:
                keys.append(row["identity"])
        delivered = 0
        for key in keys:
            if self._stopping:
                break
            async with self._locks(key):
                checkpoint = await self.store.checkpoints.get(key)
                started_at = checkpoint[1] - self.history_grace if checkpoint else None
                n, _ok, _ = await self._deliver_pending(key, started_at)
                delivered += n
        if keys:
            log.info("poller: recovered %d pending events for %d identities", delivered, len(keys))
        return delivered

    # --- the loop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Run `run()` in a background task (serve, poll): at once when this is the only process,
        else whenever this process holds the `poller` lease."""
        if self._task is None or self._task.done():
            self._stopping = False
            body = self.run() if self.owner is None else self._hold_role()
            self._task = asyncio.create_task(body, name="events-poller")

    async def _hold_role(self) -> None:
        """Poll while holding the `poller` lease; stand by (and try again) while another live
        process holds it. A holder that dies stops renewing, and the lease passes on within
        `lease_ttl` seconds."""
        assert self.owner is not None
        renew_every = self.lease_ttl / 3
        while not self._stopping:
            try:
                held = await self.store.leases.acquire(LEASE, self.owner, self.lease_ttl)
            except Exception:  # the store is down: try again
                log.warning("poller: could not read the poller lease", exc_info=True)
                held = False
            if not held:
                await self._wait(renew_every)
                continue
            log.info("poller: this process polls Moveworks events now")
            self.active = True
            metrics.POLLER_ACTIVE.set(1)
            polling = asyncio.create_task(self.run(), name="events-poller-active")
            try:
                while not self._stopping and not polling.done():
                    await asyncio.wait({polling}, timeout=renew_every)
                    if self._stopping or polling.done():
                        break
                    try:
                        still = await self.store.leases.renew(LEASE, self.owner, self.lease_ttl)
                    except Exception:
                        log.warning("poller: could not renew the poller lease", exc_info=True)
                        still = False
                    if not still:
                        log.warning("poller: lost the poller lease; standing by")
                        break
            finally:
                self.active = False
                metrics.POLLER_ACTIVE.set(0)
                if not polling.done():
                    polling.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await polling
                self._stopping_poll_reset()
        if self.owner is not None:
            with contextlib.suppress(Exception):
                await self.store.leases.release(LEASE, self.owner)

    def _stopping_poll_reset(self) -> None:
        """After losing the role, polls in flight are cancelled; what they claimed is re-claimed
        when its lease runs out."""
        for task in list(self._polls):
            task.cancel()

    async def run(self) -> None:
        self._stopping = False
        if self.owner is None:
            metrics.POLLER_ACTIVE.set(1)
        await self.refresh_identities()
        try:
            await self.recover()
        except Exception:
            log.exception("poller: recovery failed; pending events are retried by the polls")
        slots = asyncio.Semaphore(self.max_concurrency)
        while not self._stopping:
            try:
                if self._clock() >= self._next_refresh:
                    await self.refresh_identities()
            except Exception:
                log.exception("poller: could not load identities")
                self._next_refresh = self._clock() + self.refresh_interval
            state = self.schedule.take_due()
            if state is not None:
                await slots.acquire()
                if self._stopping:
                    slots.release()
                    self.schedule.done(state, ok=True)
                    break
                task = asyncio.create_task(self._run_poll(state, slots), name="poll")
                self._polls.add(task)
                task.add_done_callback(self._polls.discard)
                continue
            due = self.schedule.next_due()
            now = self._clock()
            timeout = self._next_refresh - now
            if due is not None:
                timeout = min(timeout, due - now)
            if self.owner is not None:
                await self._take_wakes()
                timeout = min(timeout, WAKE_CHECK)
            await self._wait(max(0.0, timeout))

    async def _take_wakes(self) -> None:
        """Webhook pushes that reached a standby process (see `trigger`)."""
        try:
            wakes = self.store.kv.namespace(WAKES)
            for key, _ in await wakes.items():
                await wakes.delete(key)
                if key == "*":
                    for state_key in self.schedule.recently_active():
                        self.schedule.trigger(state_key, "webhook")
                elif await self._known(key):
                    self.schedule.trigger(key, "webhook")
        except Exception:  # a hint only: the regular polls still come
            log.warning("poller: could not read webhook wakes", exc_info=True)

    async def _wait(self, timeout: float) -> None:
        """Sleep `timeout` (with the injected sleep) or until woken by await trigger()/stop()."""
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self._sleep(timeout))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(sleeper, waker, return_exceptions=True)
            self._wake.clear()

    async def _run_poll(self, state: IdentityState, slots: asyncio.Semaphore) -> None:
        klass = "webhook" if state.reason == "webhook" else self.schedule.klass(state)
        metrics.POLLS.labels(klass).inc()
        delivered, ok, retry_after = 0, False, None
        try:
            delivered, ok, retry_after = await self._poll_locked(state.key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("poller: unexpected error polling %s", self._who(state.key))
            self._error("unexpected")
        finally:
            slots.release()
            self.schedule.done(state, ok=ok, delivered=delivered, retry_after=retry_after)
            if self.schedule.next_due() is not None:
                self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop polling; polls in progress finish their current event (up to `timeout` s)."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout)
            if not task.done():
                task.cancel()
        if self._polls:
            _, pending = await asyncio.wait(set(self._polls), timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
