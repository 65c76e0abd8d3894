"""The JSON forms of what the durable inbound queue keeps (`QueueQuery.enqueue`'s `user` and
`payload`), so any process of any later release can answer a question another one acknowledged.

`payload` (`dump_inbound` / `load_inbound`), version 1:

    {"v": 1,
     "dedupe_id": str,
     "thread": {"platform": str, "workspace": str, "channel": str, "thread": str},
     "user": {"platform": str, "workspace": str, "user_id": str, "name": str|null, "email": str|null},
     "text": str,
     "callback_id": str|null, "callback_conversation_id": str|null, "callback_label": str|null,
     "address": {...},            # adapter-private, as the adapter gave it
     "direct": bool,
     "files": [{"name": str, "content_type": str|null, "size": int|null, "source": {...}}],
     "context": str,
     "extra": {...}}              # the caller's own (e.g. reply style); {} when none

Readers ignore keys they do not know (a newer release may add some) and refuse a newer `v`
(`ValueError`: the item is then answered with an apology by the caller, from `user`).
`user` (`dump_user` / `load_user`) is the "user" object above on its own: enough to tell the asker
even when the payload cannot be read.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.models import Attachment, ChatUser, Inbound, ThreadKey

VERSION = 1


def _user(user: ChatUser) -> dict[str, Any]:
    return {"platform": user.platform, "workspace": user.workspace, "user_id": user.user_id,
            "name": user.name, "email": user.email}


def _chat_user(data: dict[str, Any]) -> ChatUser:
    return ChatUser(data["platform"], data["workspace"], data["user_id"], name=data.get("name"),
                    email=data.get("email"))


def dump_user(user: ChatUser) -> str:
    return json.dumps(_user(user), separators=(",", ":"))


def load_user(text: str) -> ChatUser:
    return _chat_user(json.loads(text))


def dump_inbound(inbound: Inbound, extra: dict[str, Any] | None = None) -> str:
    thread = inbound.thread
    return json.dumps(
        {
            "v": VERSION,
            "dedupe_id": inbound.dedupe_id,
            "thread": {"platform": thread.platform, "workspace": thread.workspace, "channel": thread.channel,
                       "thread": thread.thread},
            "user": _user(inbound.user),
            "text": inbound.text,
            "callback_id": inbound.callback_id,
            "callback_conversation_id": inbound.callback_conversation_id,
            "callback_label": inbound.callback_label,
            "address": inbound.address,
            "direct": inbound.direct,
            "files": [{"name": f.name, "content_type": f.content_type, "size": f.size, "source": f.source}
                      for f in inbound.files],
            "context": inbound.context,
            "extra": extra or {},
        },
        separators=(",", ":"),
    )


def load_inbound(text: str) -> tuple[Inbound, dict[str, Any]]:
    """The `Inbound` and the caller's `extra`; ValueError for a newer or unreadable form."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("v"), int):
        raise ValueError("not a queued inbound payload")
    if data["v"] > VERSION:
        raise ValueError(f"queued inbound payload version {data['v']} is newer than this release's {VERSION}")
    t = data["thread"]
    inbound = Inbound(
        dedupe_id=data["dedupe_id"],
        thread=ThreadKey(t["platform"], t["workspace"], t["channel"], t.get("thread", "")),
        user=_chat_user(data["user"]),
        text=data.get("text", ""),
        callback_id=data.get("callback_id"),
        callback_conversation_id=data.get("callback_conversation_id"),
        callback_label=data.get("callback_label"),
        address=data.get("address") or {},
        direct=bool(data.get("direct", False)),
        files=tuple(
            Attachment(f["name"], content_type=f.get("content_type"), size=f.get("size"), source=f.get("source") or {})
            for f in data.get("files") or ()
        ),
        context=data.get("context", ""),
    )
    return inbound, data.get("extra") or {}


def queue_fields(inbound: Inbound, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`QueueQuery.enqueue`'s arguments for `inbound`: `await store.queue.enqueue(**queue_fields(inbound))`."""
    return {"platform": inbound.thread.platform, "dedupe_id": inbound.dedupe_id, "thread": inbound.thread,
            "user": dump_user(inbound.user), "payload": dump_inbound(inbound, extra)}
