"""In-memory store, keyed by the identity behind the bearer.

Objects are kept as the JSON dicts the API returns, so what tests read from `sim.state` is exactly
what a client would see. Ids from another identity are simply absent from that identity's maps,
which yields the required 404 instead of leaking existence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .ids import new_id, now_iso, opaque

SYSTEM_TITLE = "System Initiated Conversation"
MODAL_READS_KEPT = 5  # modal ids of the latest reads of a message that still resolve


def content(kind: str, text: str) -> dict[str, Any]:
    """A `Content` object: `{"type": "COMMONMARK_TEXT", "commonmark_text": {"text": ...}}`."""
    return {"type": kind, kind.lower(): {"text": text}}


@dataclass
class CallbackRef:
    """What an issued callback id points at (actions and feedback share one namespace)."""

    identity: str
    conversation_id: str
    response_id: str
    message_id: str
    kind: str  # "action" | "helpful" | "unhelpful"
    label: str = ""
    intent: str = ""  # what the button does beyond the default confirmation (flows.INTENTS)
    data: str = ""  # the intent's argument (e.g. the question a "File ticket" button files)


@dataclass
class ModalRef:
    """What a minted modal id opens: the form offered by one message (`/rest/v1` only)."""

    identity: str
    conversation_id: str
    response_id: str
    message_id: str
    form: str  # form name in `modals.FORMS`
    context: dict[str, Any] = field(default_factory=dict)  # e.g. {"question": ...} to prefill from


@dataclass
class LiveChat:
    """A conversation handed to a human agent: turns answer with no outputs until "End chat"."""

    handoff_response_id: str  # the turn that connected; the farewell lands under it later
    started_at: str


@dataclass
class UserState:
    identity: str
    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion = creation order
    events: list[dict[str, Any]] = field(default_factory=list)  # creation (= id) order
    live: dict[str, LiveChat] = field(default_factory=dict)  # conversation id -> live-agent chat

    def conversation_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["conversation_id"] == conversation_id]

    def response_messages(self, response_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["response_id"] == response_id]


@dataclass
class SimState:
    users: dict[str, UserState] = field(default_factory=dict)
    callbacks: dict[str, CallbackRef] = field(default_factory=dict)
    feedback: list[dict[str, Any]] = field(default_factory=list)  # submitted feedback records
    # -- /rest/v1 flows --
    modals: dict[str, ModalRef] = field(default_factory=dict)  # modal id -> what it opens
    modal_reads: dict[str, list[list[str]]] = field(default_factory=dict)  # message id -> ids per read
    modal_forms: dict[str, ModalRef] = field(default_factory=dict)  # message id -> its form
    modal_calls: list[dict[str, Any]] = field(default_factory=list)  # what each modal endpoint received
    modal_failures: list[str] = field(default_factory=list)  # forced messages for the next submits
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file id -> stored upload (with bytes)
    uploads: list[dict[str, Any]] = field(default_factory=list)  # every upload attempt, as received
    next_ticket: int = 10001

    def user(self, identity: str) -> UserState:
        if identity not in self.users:
            self.users[identity] = UserState(identity)
        return self.users[identity]

    # -- factories -------------------------------------------------------------------------
    def new_conversation(self, identity: str, title: str | None) -> dict[str, Any]:
        ts = now_iso()
        conv: dict[str, Any] = {"conversation_id": new_id("conv_")}
        if title is not None:  # the spec's title is a string: an untitled conversation has none
            conv["title"] = title
        conv.update(archived=False, created_at=ts, updated_at=ts)
        self.user(identity).conversations[conv["conversation_id"]] = conv
        return conv

    def new_response(self, identity: str, conversation_id: str) -> dict[str, Any]:
        resp: dict[str, Any] = {
            "response_id": new_id("resp_"),
            "conversation_id": conversation_id,
            "status": "CREATED",
            "created_at": now_iso(),
            "completed_at": None,
            "outputs": [],
        }
        self.user(identity).responses[resp["response_id"]] = resp
        self.touch(identity, conversation_id)
        return resp

    def add_message(self, identity: str, message: dict[str, Any]) -> dict[str, Any]:
        self.user(identity).messages[message["message_id"]] = message
        self.touch(identity, message["conversation_id"])
        return message

    def add_event(self, identity: str, message: dict[str, Any]) -> dict[str, Any]:
        event = {
            "event_id": new_id("evt_"),
            "conversation_id": message["conversation_id"],
            "created_at": now_iso(),
            "event_payload": {"type": "MESSAGE_EVENT", "message": message},
        }
        self.user(identity).events.append(event)
        self.touch(identity, message["conversation_id"])
        return event

    def touch(self, identity: str, conversation_id: str) -> None:
        conv = self.user(identity).conversations.get(conversation_id)
        if conv is not None:
            conv["updated_at"] = now_iso()

    def issue_callback(
        self, identity: str, message: dict[str, Any], kind: str, label: str = "", intent: str = "", data: str = ""
    ) -> str:
        cb = opaque("cb_")
        self.callbacks[cb] = CallbackRef(
            identity, message["conversation_id"], message["response_id"], message["message_id"], kind, label,
            intent, data,
        )
        return cb

    # -- modal ids: minted per read ----------------------------------------------------------
    def offer_form(self, identity: str, message: dict[str, Any], form: str, context: dict[str, Any]) -> None:
        """Remember that `message` offers `form` (its MODAL_ACTIONs open it)."""
        self.modal_forms[message["message_id"]] = ModalRef(
            identity, message["conversation_id"], message["response_id"], message["message_id"], form, dict(context)
        )

    def mint_modal_ids(self, message_id: str, count: int) -> list[str]:
        """Fresh modal ids for one read of a message; ids of reads older than the last
        `MODAL_READS_KEPT` stop resolving."""
        ref = self.modal_forms.get(message_id)
        if ref is None or count <= 0:
            return []
        ids = [new_id("modal_") for _ in range(count)]
        for modal_id in ids:
            self.modals[modal_id] = ref
        reads = self.modal_reads.setdefault(message_id, [])
        reads.append(ids)
        while len(reads) > MODAL_READS_KEPT:
            for old in reads.pop(0):
                self.modals.pop(old, None)
        return ids

    def ticket_number(self) -> str:
        number, self.next_ticket = self.next_ticket, self.next_ticket + 1
        return f"INC{number:07d}"

    def summary(self) -> dict[str, Any]:
        return {
            "users": {
                identity: {
                    "conversations": len(u.conversations),
                    "responses": len(u.responses),
                    "messages": len(u.messages),
                    "events": len(u.events),
                    "last_event_id": u.events[-1]["event_id"] if u.events else None,
                }
                for identity, u in self.users.items()
            },
            "feedback": self.feedback,
            "live_chats": {
                identity: sorted(u.live) for identity, u in self.users.items() if u.live
            },
            "modal_calls": len(self.modal_calls),
            "uploads": len(self.uploads),
            "callbacks": len(self.callbacks),
            "t": time.time(),
        }
