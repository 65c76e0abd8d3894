"""Persisted `ConversationReference`s (proactive sends after a restart), member ids and feedback
targets, kept in the bridge's store.

A reference is stored as botbuilder's camelCase JSON plus the tenant id read from
`channelData.tenant.id`, because botbuilder-python maps `conversation.tenantId` to `tenantID` and
loses it on the way in (teams.md §0.3). The key (`ref_key`) is the conversation id the bot writes
to: the chat id for personal and group chats, `19:…;messageid=<root>` for a channel reply chain.
Per user we also keep the Teams member id (`29:…`) and where we saw them, for roster lookups
and for opening a personal chat with `create_conversation`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ConversationReference

from bridge.models import FeedbackTarget, ThreadKey
from bridge.store import Store

PLATFORM = "teams"
NS_MEMBERS = "teams.members"
NS_FEEDBACK = "teams.feedback"
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
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- conversation references ---------------------------------------------------------------

    def remember(self, activity: Activity, *, ref_key: str, scope: str, user_id: str | None) -> StoredReference:
        """Save the reference of `activity`'s conversation under `ref_key` (its write address)."""
        reference = TurnContext.get_conversation_reference(activity)
        reference.activity_id = None  # we post into the conversation, never as a reply to a turn
        data = reference.serialize()
        data.setdefault("conversation", {})["id"] = ref_key
        tenant = tenant_of(activity)
        personal = scope == "personal"
        self.store.save_reference(
            PLATFORM,
            ref_key,
            {"reference": data, "tenant": tenant, "scope": scope},
            tenant=tenant or None,
            service_url=activity.service_url,
            user_id=user_id if personal else None,
            personal=personal,
        )
        return StoredReference(ref_key, data, tenant, scope)

    def save(self, ref_key: str, reference: ConversationReference, *, tenant: str, scope: str,
             user_id: str | None = None) -> StoredReference:
        data = reference.serialize()
        personal = scope == "personal"
        self.store.save_reference(
            PLATFORM, ref_key, {"reference": data, "tenant": tenant, "scope": scope},
            tenant=tenant or None, service_url=reference.service_url,
            user_id=user_id if personal else None, personal=personal,
        )
        return StoredReference(ref_key, data, tenant, scope)

    def load(self, ref_key: str) -> StoredReference | None:
        record = self.store.get_reference(PLATFORM, ref_key)
        if not record or "reference" not in record:
            return None
        return StoredReference(ref_key, record["reference"], record.get("tenant") or "",
                               record.get("scope") or "personal")

    def personal(self, user_id: str) -> StoredReference | None:
        found = self.store.personal_reference(PLATFORM, user_id)
        if found is None:
            return None
        ref_key, record = found
        return StoredReference(ref_key, record["reference"], record.get("tenant") or "", "personal")

    def forget(self, ref_key: str) -> None:
        """The bot can no longer write to the conversation at all (403 MessageWritesBlocked, bot
        removed or uninstalled): drop the reference and deactivate every thread link of the
        conversation (all reply chains of a channel)."""
        self.store.delete_reference(PLATFORM, ref_key)
        channel = bare_conversation(ref_key)
        if channel != ref_key:
            self.store.delete_reference(PLATFORM, channel)

    def forget_chain(self, ref_key: str) -> None:
        """One channel reply chain is gone (404, e.g. its root message was deleted): drop that
        chain's reference and deactivate the links of that chain only. The channel's reference
        and its other chains stay. Anything but a chain is a whole conversation: `forget`."""
        channel, _, root = ref_key.partition(MESSAGE_ID_MARK)
        if not root:
            self.forget(ref_key)
            return
        stored = self.load(ref_key)
        # Deletes the row; the links it deactivates are keyed by the bare channel, so none here.
        self.store.delete_reference(PLATFORM, ref_key)
        # Every link of a chain was made for someone who wrote in it, and `remember_member` saw
        # them all: look each one's link in this chain up (indexed) and deactivate it.
        prefix = f"{stored.tenant}|" if stored is not None else ""
        for key, _ in self.store.kv_items(NS_MEMBERS, prefix):
            tenant, _, user_id = key.partition("|")
            link = self.store.get_link(ThreadKey(PLATFORM, tenant, channel, root), user_id)
            if link is not None and link.active:
                self.store.deactivate_link(link.id)

    # --- members ---------------------------------------------------------------------------

    def remember_member(self, tenant: str, user_id: str, *, member_id: str, ref_key: str,
                        service_url: str, bot: dict[str, Any]) -> None:
        key = f"{tenant}|{user_id}"
        value = {"member_id": member_id, "ref_key": ref_key, "service_url": service_url, "bot": bot}
        encoded = json.dumps(value, sort_keys=True)
        if self.store.kv_get(NS_MEMBERS, key) != encoded:
            self.store.kv_set(NS_MEMBERS, key, encoded)

    def member(self, tenant: str, user_id: str) -> dict[str, Any] | None:
        raw = self.store.kv_get(NS_MEMBERS, f"{tenant}|{user_id}")
        return json.loads(raw) if raw else None

    # --- feedback targets ----------------------------------------------------------------------

    def remember_feedback(self, conversation_id: str, message_id: str, target: FeedbackTarget) -> None:
        value = {
            "conversation_id": target.conversation_id,
            "response_id": target.response_id,
            "message_id": target.message_id,
            "helpful": target.helpful,
            "unhelpful": target.unhelpful,
        }
        self.store.kv_set(NS_FEEDBACK, f"{bare_conversation(conversation_id)}|{message_id}", json.dumps(value))

    def feedback(self, conversation_id: str, message_id: str) -> FeedbackTarget | None:
        raw = self.store.kv_get(NS_FEEDBACK, f"{bare_conversation(conversation_id)}|{message_id}")
        if not raw:
            return None
        data = json.loads(raw)
        return FeedbackTarget(data["conversation_id"], data["response_id"], data["message_id"],
                              data.get("helpful"), data.get("unhelpful"))
