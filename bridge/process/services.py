"""`Services`: the `bridge.contract.Core` an adapter is built with, over the relay, the store and
the shared write budgets. The only object that hands adapters anything of the core."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.answers.markdown import plain_text
from bridge.answers.relay import Relay
from bridge.contract import Address, FeedbackAck, KeyValue
from bridge.events.codec import event_from_payload
from bridge.mechanisms.ratelimit import Budgets, WriteBudget
from bridge.models import (
    ChatUser,
    FeedbackTarget,
    FieldInput,
    FormStep,
    Inbound,
    MessageRef,
    Notification,
    Rate,
    ThreadKey,
)
from bridge.process import metrics
from bridge.process.config import Settings
from bridge.store.aio import AnyStore, as_async


@dataclass
class Services:
    settings: Settings
    store: AnyStore
    relay: Relay
    budgets: Budgets

    def __post_init__(self) -> None:
        self.store = as_async(self.store)

    async def submit(self, inbound: Inbound) -> bool:
        return await self.relay.submit(inbound)

    async def feedback(
        self, user: ChatUser, target: FeedbackTarget, helpful: bool, comment: str | None = None
    ) -> FeedbackAck:
        return await self.relay.feedback(user, target, helpful, comment)

    async def open_form(self, user: ChatUser, ref: MessageRef, where: str) -> FormStep:
        return await self.relay.forms.open(user, ref, where)

    async def refresh_form(self, user: ChatUser, session: str, values: dict[str, FieldInput]) -> FormStep:
        return await self.relay.forms.refresh(user, session, values)

    async def submit_form(self, user: ChatUser, session: str, values: dict[str, FieldInput]) -> FormStep:
        return await self.relay.forms.submit(user, session, values)

    async def choose_help_item(
        self, user: ChatUser, thread: ThreadKey, address: Address, ref: MessageRef, where: str
    ) -> str | None:
        return await self.relay.forms.choose(user, thread, address, ref, where)

    def stop_answer(self, thread: ThreadKey) -> bool:
        return self.relay.stop_answer(thread)

    async def recent_notifications(self, user: ChatUser, limit: int = 5) -> list[Notification]:
        employee = await self.store.employees.get(user.platform, user.workspace, user.user_id)
        identity = employee.email if employee is not None and self.relay.per_employee else None
        out = []
        for row in await self.store.events.recent_for(user.platform, user.workspace, user.user_id,
                                                (identity or "").lower() or None, limit):
            event = event_from_payload(row.get("payload"))
            text = event.message.text if event is not None and event.message is not None else ""
            preview = plain_text(text)[0].replace("\n", " ").strip()
            out.append(Notification(row.get("claimed_at"), preview[:150], str(row.get("status") or "")))
        return out

    async def claim_inbound(self, platform: str, dedupe_id: str) -> bool:
        return await self.store.inbound.claim(platform, dedupe_id)

    async def follows(self, thread: ThreadKey, user_id: str) -> bool:
        link = await self.store.links.get(thread, user_id)
        return link is not None and link.active

    async def end_threads(self, platform: str, channel: str, thread: str | None = None) -> None:
        await self.store.links.deactivate_where(platform, channel, thread)

    def kv(self, namespace: str) -> KeyValue:  # binds a name; the namespace's methods are awaited
        return self.store.kv.namespace(namespace)

    def budget(self, key: str, rate: Rate | None) -> WriteBudget:
        return self.budgets.get(key, rate)

    def count_write(self, platform: str, op: str) -> None:
        metrics.PLATFORM_WRITES.labels(platform, op).inc()

    def count_rate_limited(self, platform: str) -> None:
        metrics.PLATFORM_RATE_LIMITED.labels(platform).inc()
