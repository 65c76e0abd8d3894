"""Persisted `ConversationReference`s (proactive sends after a restart), member ids and feedback
targets, kept in key/value namespaces of the bridge's store that this adapter owns.

A reference is stored as botbuilder's camelCase JSON plus the tenant id read from
`channelData.tenant.id`, because botbuilder-python maps `conversation.tenantId` to `tenantID` and
loses it on the way in. The key (`ref_key`) is the conversation id the bot writes
to: the chat id for personal and group chats, `19:…;messageid=<root>` for a channel reply chain.
Per user we also keep the Teams member id (`29:…`) and where we saw them, for roster lookups
and for opening a personal chat with `create_conversation`.

Namespaces: `teams.references` (ref_key -> `{"reference", "tenant", "scope"}` JSON),
`teams.personal` (user id -> ref_key of their personal chat), `teams.members`
(`tenant|user id` -> member JSON), `teams.feedback` (`conversation|message` -> target JSON, and
`latest|conversation|user` -> the target of that person's latest answer there, for ratings that
name no message), `teams.pressed` (`conversation|callback|user` -> the activity that pressed an
action button, so a button runs once).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ConversationReference

from bridge.contract import KeyValue
from bridge.models import FeedbackTarget

PLATFORM = "teams"
NS_REFERENCES = "teams.references"
NS_PERSONAL = "teams.personal"
NS_MEMBERS = "teams.members"
NS_FEEDBACK = "teams.feedback"
NS_PRESSED = "teams.pressed"
MESSAGE_ID_MARK = ";messageid="


def bare_conversation(conversation_id: str) -> str:
    return conversation_id.split(MESSAGE_ID_MARK)[0]


def tenant_of(activity: Activity) -> str:
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = (data.get("tenant") or {}).get("id") if isinstance(data.get("tenant"), dict) else None
    if not tenant and activity.conversation is not None:
        tenant = activity.conversation.tenant_id or (
            activity.conversation.additional_properties or {}).get("tenantId")
    return str(tenant or "")


@dataclass(frozen=True)
class StoredReference:
    ref_key: str
    reference: dict[str, Any]  # ConversationReference JSON
    tenant: str
    scope: str  # personal | groupChat | channel

    def to_reference(self) -> ConversationReference:
        return ConversationReference().deserialize(self.reference)

    @property
    def service_url(self) -> str:
        return str(self.reference.get("serviceUrl") or "")

    @property
    def bot(self) -> dict[str, Any]:
        return dict(self.reference.get("bot") or {})


class ReferenceBook:
    """Storage-agnostic: `kv(namespace)` gives a key/value namespace, `end_threads(platform,
    channel, thread)` deactivates the thread links of a channel (thread None) or of one thread."""

    def __init__(self, kv: Callable[[str], KeyValue],
                 end_threads: Callable[[str, str, str | None], Awaitable[None]]) -> None:
        self.references = kv(NS_REFERENCES)
        self.personals = kv(NS_PERSONAL)
        self.members = kv(NS_MEMBERS)
        self.feedbacks = kv(NS_FEEDBACK)
        self.pressed = kv(NS_PRESSED)
        self.end_threads = end_threads

    # --- conversation references ---------------------------------------------------------------

    async def remember(self, activity: Activity, *, ref_key: str, scope: str, user_id: str | None) -> StoredReference:
        """Save the reference of `activity`'s conversation under `ref_key` (its write address)."""
        reference = TurnContext.get_conversation_reference(activity)
        reference.activity_id = None  # we post into the conversation, never as a reply to a turn
        data = reference.serialize()
        data.setdefault("conversation", {})["id"] = ref_key
        return await self._store(ref_key, data, tenant=tenant_of(activity), scope=scope, user_id=user_id)

    async def save(self, ref_key: str, reference: ConversationReference, *, tenant: str, scope: str,
             user_id: str | None = None) -> StoredReference:
        return await self._store(ref_key, reference.serialize(), tenant=tenant, scope=scope, user_id=user_id)

    async def _store(self, ref_key: str, data: dict[str, Any], *, tenant: str, scope: str,
               user_id: str | None) -> StoredReference:
        await self.references.set(ref_key, json.dumps({"reference": data, "tenant": tenant, "scope": scope}))
        if scope == "personal" and user_id:
            await self.personals.set(user_id, ref_key)
        return StoredReference(ref_key, data, tenant, scope)

    async def load(self, ref_key: str) -> StoredReference | None:
        raw = await self.references.get(ref_key)
        record = json.loads(raw) if raw else None
        if not record or "reference" not in record:
            return None
        return StoredReference(ref_key, record["reference"], record.get("tenant") or "",
                               record.get("scope") or "personal")

    async def personal(self, user_id: str) -> StoredReference | None:
        """The user's personal chat with the bot, if we have its reference."""
        ref_key = await self.personals.get(user_id)
        stored = await self.load(ref_key) if ref_key else None
        if stored is None:
            return None
        return StoredReference(stored.ref_key, stored.reference, stored.tenant, "personal")

    async def forget(self, ref_key: str) -> None:
        """The bot can no longer write to the conversation at all (403 MessageWritesBlocked, bot
        removed or uninstalled): drop the reference and deactivate every thread link of the
        conversation (all reply chains of a channel)."""
        await self.references.delete(ref_key)
        await self.end_threads(PLATFORM, ref_key, None)
        channel = bare_conversation(ref_key)
        if channel != ref_key:
            await self.references.delete(channel)
            await self.end_threads(PLATFORM, channel, None)

    async def forget_chain(self, ref_key: str) -> None:
        """One channel reply chain is gone (404, e.g. its root message was deleted): drop that
        chain's reference and deactivate the links of that chain only. The channel's reference
        and its other chains stay. Anything but a chain is a whole conversation: `forget`."""
        channel, _, root = ref_key.partition(MESSAGE_ID_MARK)
        if not root:
            await self.forget(ref_key)
            return
        await self.references.delete(ref_key)
        await self.end_threads(PLATFORM, channel, root)

    # --- members ---------------------------------------------------------------------------

    async def remember_member(self, tenant: str, user_id: str, *, member_id: str, ref_key: str,
                        service_url: str, bot: dict[str, Any]) -> None:
        key = f"{tenant}|{user_id}"
        value = {"member_id": member_id, "ref_key": ref_key, "service_url": service_url, "bot": bot}
        encoded = json.dumps(value, sort_keys=True)
        if await self.members.get(key) != encoded:
            await self.members.set(key, encoded)

    async def member(self, tenant: str, user_id: str) -> dict[str, Any] | None:
        raw = await self.members.get(f"{tenant}|{user_id}")
        return json.loads(raw) if raw else None

    # --- feedback targets ----------------------------------------------------------------------

    @staticmethod
    def _target_json(target: FeedbackTarget, **more: Any) -> str:
        return json.dumps({
            "conversation_id": target.conversation_id,
            "response_id": target.response_id,
            "message_id": target.message_id,
            "helpful": target.helpful,
            "unhelpful": target.unhelpful,
            **more,
        })

    @staticmethod
    def _target(raw: str | None) -> FeedbackTarget | None:
        if not raw:
            return None
        data = json.loads(raw)
        return FeedbackTarget(data["conversation_id"], data["response_id"], data["message_id"],
                              data.get("helpful"), data.get("unhelpful"))

    async def remember_feedback(self, conversation_id: str, message_id: str, target: FeedbackTarget) -> None:
        await self.feedbacks.set(f"{bare_conversation(conversation_id)}|{message_id}", self._target_json(target))

    async def feedback(self, conversation_id: str, message_id: str) -> FeedbackTarget | None:
        return self._target(await self.feedbacks.get(f"{bare_conversation(conversation_id)}|{message_id}"))

    async def remember_latest(self, conversation_id: str, user_id: str | None, target: FeedbackTarget) -> None:
        """`target` is the latest answer to `user_id` (None: to nobody in particular, a
        notification) in this conversation, its reply chain and its channel."""
        value = self._target_json(target, at=time.time())
        for conversation in dict.fromkeys((conversation_id, bare_conversation(conversation_id))):
            await self.feedbacks.set(f"latest|{conversation}|{user_id or ''}", value)
            await self.feedbacks.set(f"latest|{conversation}|*", value)  # anyone's

    async def latest_feedback(self, conversation_id: str, user_id: str) -> FeedbackTarget | None:
        """The answer a rating that names no message is about: the latest answer to `user_id`
        here (or a newer notification), in this reply chain (or chat) first, then anywhere in the
        channel; else the latest answer to anyone (whose owner the core then checks)."""
        for whose in ((user_id, ""), ("*",)):
            for conversation in dict.fromkeys((conversation_id, bare_conversation(conversation_id))):
                found = []
                for who in dict.fromkeys(whose):
                    raw = await self.feedbacks.get(f"latest|{conversation}|{who}")
                    if raw:
                        found.append(json.loads(raw))
                if found:
                    return self._target(json.dumps(max(found, key=lambda d: d.get("at") or 0)))
        return None

    # --- action buttons ------------------------------------------------------------------------

    async def press(self, conversation_id: str, callback_id: str, user_id: str, activity_id: str | None) -> bool:
        """Record that `user_id` pressed the action `callback_id` (of Moveworks conversation
        `conversation_id`); False when they pressed it before (a redelivery of the same press is
        not a second press)."""
        key = f"{conversation_id}|{callback_id}|{user_id}"
        seen = await self.pressed.get(key)
        if seen is None:
            await self.pressed.set(key, activity_id or f"no-id:{uuid.uuid4()}")
            return True
        return bool(activity_id) and seen == activity_id
