"""Shared doubles for the poller tests: a recording chat adapter and per-employee API-key auth.

(Named test_poller_* so it lives with the poller tests; it defines no tests itself.)
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.answers.relay import Relay
from bridge.contract import ChatAdapter, ReplySink
from bridge.errors import PlatformError
from bridge.models import Answer, Capabilities, ChatUser, Employee, Frame, ThreadKey
from bridge.moveworks import ApiKeyAuth, MoveworksClient
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store

ASSISTANT = "moveworks-bridge-dev"


@dataclass
class Post:
    thread: ThreadKey
    answer: Answer
    proactive: bool
    message_id: str


class RecSink(ReplySink):
    capabilities = Capabilities(max_text_len=4000)

    def __init__(self, adapter: RecAdapter, thread: ThreadKey, proactive: bool) -> None:
        self.adapter = adapter
        self.thread = thread
        self.proactive = proactive
        self.budget_key = f"{adapter.platform}:{thread.workspace}"

    async def show(self, frame: Frame) -> None:
        pass

    async def finish(self, answer: Answer) -> list[str]:
        self.adapter.attempts += 1
        if self.adapter.delay:
            await asyncio.sleep(self.adapter.delay)
        if self.adapter.failures:
            exc = self.adapter.failures.pop(0)
            if exc is not None:
                raise exc
        message_id = f"{self.adapter.platform}-m{next(self.adapter._ids)}"
        self.adapter.posts.append(Post(self.thread, answer, self.proactive, message_id))
        return [message_id]

    async def fail(self, message: str) -> None:
        self.adapter.failed.append((self.thread, message))


class RecAdapter(ChatAdapter):
    """A ChatAdapter recording every final answer; `failures` is a queue of exceptions (or None
    for success) consumed by successive posts. As "slack", replies to a DM continue in the
    thread of the posted message, as Slack's do."""

    def __init__(self, platform: str = "slack") -> None:
        self.platform = platform
        self.posts: list[Post] = []
        self.failed: list[tuple[ThreadKey, str]] = []
        self.failures: list[BaseException | None] = []
        self.dm_failures: list[BaseException | None] = []
        self.directs: list[Employee] = []
        self.delay = 0.0
        self.attempts = 0
        self._ids = itertools.count(1)

    async def open_reply(self, thread: ThreadKey, address: dict[str, Any], *, user: ChatUser | None,
                         proactive: bool) -> RecSink:
        return RecSink(self, thread, proactive)

    async def open_direct(self, employee: Employee) -> tuple[ThreadKey, dict[str, Any]] | None:
        self.directs.append(employee)
        if self.dm_failures:
            exc = self.dm_failures.pop(0)
            if exc is not None:
                raise exc
        return ThreadKey(self.platform, employee.workspace, f"D-{employee.user_id}", ""), {"dm": employee.user_id}

    async def resolve_email(self, user: ChatUser) -> str | None:
        return user.email

    def reply_thread(self, thread: ThreadKey, address: dict[str, Any],
                     message_ids: tuple[str, ...]) -> tuple[ThreadKey, dict[str, Any]] | None:
        if self.platform != "slack":
            return None
        return replace(thread, thread=message_ids[0]), {**address, "thread_ts": message_ids[0]}

    def texts(self) -> list[str]:
        return [p.answer.text for p in self.posts]


class KeyPerEmployeeAuth:
    """user_jwt-like auth for the simulator: each employee has an API key 'key-<email>'."""

    per_employee = True

    async def bearer(self, identity: str | None) -> str:
        assert identity, "per-employee auth needs an identity"
        return f"key-{identity}"

    def invalidate(self, identity: str | None, token: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


@dataclass
class Env:
    sim: Simulator
    client: MoveworksClient
    store: Store
    relay: Relay
    slack: RecAdapter
    teams: RecAdapter
    per_employee: bool
    identities: list[str] = field(default_factory=list)

    def poller(self, **kw: Any):
        from bridge.events.poller import Poller

        kw.setdefault("interval", 0.2)
        return Poller(store=self.store, client=self.client, relay=self.relay, **kw)

    def employee(self, email: str, platform: str = "slack", user_id: str | None = None,
                 workspace: str = "T1") -> ChatUser:
        user = ChatUser(platform, workspace, user_id or f"U-{email.split('@')[0]}", email=email)
        self.store.employees.save(user, email_checked=True, active=True)
        return user

    async def mapped_thread(self, email: str, thread: ThreadKey, user: ChatUser) -> str:
        """A conversation of `email` mapped to `thread` (as the relay would have done)."""
        conv = await self.client.create_conversation(email if self.per_employee else None)
        self.store.links.insert(thread, user.user_id, email if self.per_employee else "",
                               conv.conversation_id, {"thread": thread.thread})
        return conv.conversation_id


async def make_env(tmp_path, *, per_employee: bool = False, emails: tuple[str, ...] = ("ann@example.com",),
                   db: str | None = None, max_retries: int = 1) -> Env:
    if per_employee:
        keys = {f"key-{e}": e for e in emails}
    else:
        keys = {"sim-key": emails[0]}
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, api_keys=keys, pace=0))
    await sim.start()
    auth = KeyPerEmployeeAuth() if per_employee else ApiKeyAuth("sim-key")
    client = MoveworksClient(sim.base_url, ASSISTANT, auth, max_retries=max_retries)
    store = Store(db or str(tmp_path / "bridge.db"))
    relay = Relay(store=store, client=client, per_employee=per_employee)
    slack, teams = RecAdapter("slack"), RecAdapter("teams")
    relay.register(slack)
    relay.register(teams)
    return Env(sim, client, store, relay, slack, teams, per_employee, list(emails))


async def close_env(env: Env) -> None:
    await env.client.aclose()
    await env.sim.stop()
    env.store.close()


def permanent(msg: str = "channel_not_found") -> PlatformError:
    return PlatformError(msg, permanent=True)


def transient(msg: str = "service unavailable") -> PlatformError:
    return PlatformError(msg, permanent=False)
