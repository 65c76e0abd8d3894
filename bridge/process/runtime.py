"""Composition root: builds the store, Moveworks client, relay, adapters and poller from
`Settings`. The only place in `bridge/` that reaches the adapter registry (lazily, by name);
adapters get the core through `Services` (the contract's `Core`), nothing else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.answers.attachments import Attachments
from bridge.answers.intake import Intake
from bridge.answers.recovery import Interrupted
from bridge.answers.relay import Relay
from bridge.contract import ChatAdapter
from bridge.errors import ConfigError
from bridge.events.poller import Poller
from bridge.mechanisms.ratelimit import Budgets, Sleep
from bridge.moveworks import ApiKeyAuth, ClientCredentialsAuth, MoveworksClient, UserJwtAuth
from bridge.moveworks.auth import AuthProvider
from bridge.process import metrics
from bridge.process.cluster import Membership
from bridge.process.config import Settings
from bridge.process.services import Services
from bridge.store import Store
from bridge.store.aio import AnyStore, AsyncStore, as_async, is_postgres_url, new_instance_id

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: AsyncStore
    auth: AuthProvider
    client: MoveworksClient
    relay: Relay
    budgets: Budgets
    services: Services
    membership: Membership
    intake: Intake | None = None  # `serve` answers questions from the durable queue
    adapters: list[ChatAdapter] = field(default_factory=list)
    poller: Poller | None = None
    poller_client: MoveworksClient | None = None

    @property
    def instance_id(self) -> str:
        return self.membership.instance_id

    def add_adapter(self, adapter: ChatAdapter) -> None:
        self.relay.register(adapter)
        self.adapters.append(adapter)

    async def start(self, *, inbound: bool = True) -> None:
        """Start the adapters; `inbound=False` (the `poll` worker) sends only and receives
        nothing (no Slack Socket Mode connection)."""
        await self.store.inbound.prune()
        await self.store.prune_history()
        await self.membership.start()  # heartbeat; the first sweep tells threads of dead processes
        for adapter in self.adapters:
            await adapter.start(inbound=inbound)
        if self.intake is not None and inbound:
            self.intake.start()

    async def stop_inbound(self) -> None:
        """First step of a graceful shutdown: accept no new questions while answers finish."""
        if self.intake is not None:
            await self.intake.stop_taking()  # what is still queued is answered by another process
        for adapter in self.adapters:
            try:
                await adapter.stop_inbound()
            except Exception:  # keep shutting down
                log.warning("adapter %s did not stop receiving cleanly", adapter.platform, exc_info=True)

    async def aclose(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
        for adapter in self.adapters:
            try:
                await adapter.stop()
            except Exception:  # shut the rest down regardless
                log.warning("adapter %s did not stop cleanly", adapter.platform, exc_info=True)
        await self.client.aclose()
        if self.poller_client is not None:
            await self.poller_client.aclose()
        await self.auth.aclose()
        await self.membership.stop()
        await self.store.close()


def build_auth(settings: Settings) -> AuthProvider:
    if settings.moveworks_auth == "client_credentials":
        return ClientCredentialsAuth(
            settings.moveworks_token_url,
            settings.moveworks_client_id or "",
            settings.moveworks_client_secret or "",
        )
    if settings.moveworks_auth == "user_jwt":
        return UserJwtAuth(
            settings.moveworks_token_url,
            settings.moveworks_jwt_private_key or "",
            settings.moveworks_jwt_issuer or "",
            settings.moveworks_jwt_audience or "",
        )
    return ApiKeyAuth(settings.moveworks_api_key or "")


def _count_request(method: str, endpoint: str, status: int | None, seconds: float) -> None:
    metrics.MOVEWORKS_REQUESTS.labels(endpoint, str(status or "error")).inc()


def build_client(settings: Settings, auth: AuthProvider, **kw: Any) -> MoveworksClient:
    timeout = httpx.Timeout(connect=5.0, read=settings.moveworks_timeout, write=30.0, pool=60.0)
    return MoveworksClient(
        settings.moveworks_base_url,
        settings.moveworks_assistant_name,
        auth,
        timeout=timeout,
        on_request=_count_request,
        **kw,
    )


def build_runtime(
    settings: Settings,
    *,
    adapters: tuple[str, ...] | None = None,
    poller: bool = False,
    store: AnyStore | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    client_kw: dict[str, Any] | None = None,
    answers: bool = True,
) -> Runtime:
    """Build everything (no network yet). `adapters` (names) defaults to `settings.adapters`."""
    from adapters import registry  # composition root only: the core never imports adapters

    if store is None:
        if is_postgres_url(settings.db):
            raise ConfigError("BRIDGE_DB: a PostgreSQL store is opened with `await open_store(...)` first")
        store = Store(settings.db)
    store = as_async(store)
    instance_id = new_instance_id()
    auth = build_auth(settings)
    client = build_client(settings, auth, **(client_kw or {}))
    budgets = Budgets(clock=clock, sleep=sleep)
    attachments = Attachments(client, enabled=settings.moveworks_files, max_mb=settings.moveworks_file_max_mb,
                              purpose=settings.moveworks_file_purpose)
    relay = Relay(store=store, client=client, per_employee=auth.per_employee, budgets=budgets,
                  answer_timeout=settings.answer_timeout, attachments=attachments, clock=clock, sleep=sleep)
    relay.owner = instance_id
    services = Services(settings=settings, store=store, relay=relay, budgets=budgets)

    def announce(interrupted: Interrupted) -> None:
        relay.background(relay.announce_interrupted(interrupted), name="restart-notes")

    # Only processes that answer questions sweep unfinished answers: a `poll` worker has no
    # adapters receiving questions, but it sees the same store.
    membership = Membership(store, instance_id, sweep=answers, announce=announce, budgets=budgets,
                            ttl=settings.instance_ttl, beat=settings.instance_ttl / 5)
    intake = Intake(relay, store, instance_id) if answers else None
    relay.intake = intake
    runtime = Runtime(settings=settings, store=store, auth=auth, client=client, relay=relay,
                      budgets=budgets, services=services, membership=membership, intake=intake)
    for name in settings.adapters if adapters is None else adapters:
        runtime.add_adapter(registry.build(name, services))
    if poller:
        # Its own client with a single attempt per call: every request the poller makes must go
        # through its global budget, so the client must not retry behind its back.
        runtime.poller_client = build_client(settings, auth, max_retries=1)
        runtime.poller = Poller.from_settings(settings, store=store, client=runtime.poller_client,
                                              relay=relay, owner=instance_id)
        relay.on_activity(runtime.poller.touch)
    return runtime
