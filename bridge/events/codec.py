"""Events as stored at claim time: the API-shaped JSON of a parsed event, read back identically
after a crash (re-delivery), and the time an event was created."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bridge.moveworks.models import Action, Event, Message


def _content(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, kind.lower(): {"text": text}}


def message_to_json(m: Message) -> dict[str, Any]:
    """API-shaped JSON of a parsed message (so `Message.from_json` reads it back identically)."""
    data: dict[str, Any] = {
        "message_id": m.message_id,
        "conversation_id": m.conversation_id,
        "response_id": m.response_id,
        "actor": m.actor,
        "content": _content(m.content_type or "COMMONMARK_TEXT", m.text),
        "created_at": m.created_at,
        "citations": [
            {
                "citation_id": c.citation_id,
                "url": c.url,
                "display": {
                    "title": _content("PLAIN_TEXT", c.title),
                    "body": _content("COMMONMARK_TEXT", c.body),
                    "attributes": [{"key": k, "value": v} for k, v in c.attributes.items()],
                },
            }
            for c in m.citations
        ],
        "content_references": [
            {"citation_id": r.citation_id, "offset": r.offset} for r in m.content_references
        ],
        "actions": [action_to_json(a) for a in m.actions],
    }
    if m.feedback is not None:
        data["feedback"] = {
            k: {"callback_id": v}
            for k, v in (("helpful", m.feedback.helpful), ("unhelpful", m.feedback.unhelpful))
            if v
        }
    if m.sender_name:
        data["sender_info"] = {"display_name": m.sender_name, "avatar_url": m.sender_avatar}
    if m.help_menu:
        data["handoff"] = {"handoff_categories": [
            {
                "category_id": c.category_id,
                "name": c.name,
                "description": c.description,
                "handoff_items": [
                    {"title": i.title, "type": i.type, "action": action_to_json(i.action)}
                    if i.action is not None
                    else {"title": i.title, "type": i.type, "text": _content("MARKDOWN_TEXT", i.text)}
                    for i in c.items
                ],
            }
            for c in m.help_menu
        ]}
    if m.files and "plain_text" in data["content"]:
        data["content"]["plain_text"]["files"] = [
            {"file_id": f.file_id, "file_name": f.file_name} for f in m.files
        ]
    return data


def action_to_json(a: Action) -> dict[str, Any]:
    data: dict[str, Any] = {"type": a.type, "label": a.label}
    if a.callback_id:
        data["callback_action"] = {"callback_id": a.callback_id}
    elif a.modal_id:
        data["modal_action"] = {"modal_id": a.modal_id}
    else:
        data["url_action"] = {"url": a.url}
    return data


def event_to_json(ev: Event) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": ev.type}
    if ev.message is not None:
        payload["message"] = message_to_json(ev.message)
    return {
        "event_id": ev.event_id,
        "conversation_id": ev.conversation_id,
        "created_at": ev.created_at,
        "event_payload": payload,
    }


def event_from_payload(payload: str | None) -> Event | None:
    """The event stored at claim time, or None if the row has no readable payload."""
    if not payload:
        return None
    try:
        return Event.from_json(json.loads(payload))
    except (ValueError, TypeError):
        return None


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 reads "Z"
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def event_time(ev: Event) -> float | None:
    """When the event was created: `created_at` (G2+), else its message's `created_at` (G1)."""
    t = parse_time(ev.created_at)
    if t is None and ev.message is not None:
        t = parse_time(ev.message.created_at)
    return t
