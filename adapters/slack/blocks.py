"""Block Kit for answers: the Markdown body, numbered citations, Moveworks action buttons and
feedback buttons, plus the compact button values that carry what a click needs.

Button values travel through Slack and come back on click, so the bridge keeps no per-button
state: a value holds the Moveworks ids (conversation, response, message, callback) and stays under
Slack's 2,000-character limit.
"""

from __future__ import annotations

import json
from typing import Any

from bridge import texts
from bridge.models import Answer, CitationLink, FeedbackTarget
from bridge.moveworks.models import Action

from .mrkdwn import escape, to_mrkdwn

SECTION_LIMIT = 3000  # section/mrkdwn text object
VALUE_LIMIT = 2000  # button value
BUTTON_TEXT_LIMIT = 75
URL_LIMIT = 3000
MAX_BUTTONS = 25  # per actions block

FEEDBACK_ACTION = "mw_feedback"
CALLBACK_ACTION_PREFIX = "mw_action_"
URL_ACTION_PREFIX = "mw_url_"


def markdown_body(text: str) -> list[dict[str, Any]]:
    """The answer body as a `markdown` block: Slack renders standard Markdown there."""
    return [{"type": "markdown", "text": text}]


def mrkdwn_body(text: str) -> list[dict[str, Any]]:
    """Fallback body: mrkdwn sections of at most 3,000 characters (cut at line ends)."""
    converted = to_mrkdwn(text) or " "
    blocks = []
    while converted:
        piece = converted[:SECTION_LIMIT]
        if len(converted) > SECTION_LIMIT:
            cut = piece.rfind("\n")
            if cut > SECTION_LIMIT // 2:
                piece = piece[: cut + 1]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
        converted = converted[len(piece):]
    return blocks


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def citation_blocks(citations: tuple[CitationLink, ...]) -> list[dict[str, Any]]:
    """Numbered sources under the answer, matching the [n] markers in the text."""
    if not citations:
        return []
    elements = []
    for c in citations:
        title = escape(_clip(c.title or "Source", 200))
        label = f"<{c.url}|{title}>" if c.url and len(c.url) <= URL_LIMIT else title
        elements.append({"type": "mrkdwn", "text": f"[{c.number}] {label}"})
    blocks = []
    for start in range(0, len(elements), 10):  # context blocks take up to 10 elements
        blocks.append({"type": "context", "elements": elements[start : start + 10]})
    return blocks


def encode(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def decode(value: str | None) -> dict[str, Any]:
    """A button value back to its fields; {} for anything that is not ours."""
    try:
        data = json.loads(value or "")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def action_blocks(actions: tuple[Action, ...], conversation_id: str | None) -> list[dict[str, Any]]:
    """Moveworks actions as buttons: URL actions open the link, callback actions come back to us."""
    buttons = []
    for i, action in enumerate(actions):
        button: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": _clip(action.label, BUTTON_TEXT_LIMIT), "emoji": True},
        }
        if action.url and len(action.url) <= URL_LIMIT:
            button["action_id"] = f"{URL_ACTION_PREFIX}{i}"
            button["url"] = action.url
        elif action.callback_id and conversation_id:
            value = encode({"c": conversation_id, "cb": action.callback_id, "l": _clip(action.label, 200)})
            if len(value) > VALUE_LIMIT:
                continue
            button["action_id"] = f"{CALLBACK_ACTION_PREFIX}{i}"
            button["value"] = value
        else:
            continue
        buttons.append(button)
    return [
        {"type": "actions", "elements": buttons[start : start + MAX_BUTTONS]}
        for start in range(0, len(buttons), MAX_BUTTONS)
    ]


def feedback_blocks(target: FeedbackTarget | None) -> list[dict[str, Any]]:
    """👍/👎 buttons; each value carries the ids Moveworks submit-feedback needs."""
    if target is None or not (target.helpful or target.unhelpful):
        return []

    def value(helpful: bool) -> str:
        callback = target.helpful if helpful else target.unhelpful
        return encode(
            {"c": target.conversation_id, "r": target.response_id, "m": target.message_id,
             "cb": callback or "", "h": 1 if helpful else 0}
        )

    values = value(True), value(False)
    if max(len(v) for v in values) > VALUE_LIMIT:
        return []
    return [
        {
            "type": "context_actions",
            "elements": [
                {
                    "type": "feedback_buttons",
                    "action_id": FEEDBACK_ACTION,
                    "positive_button": {
                        "text": {"type": "plain_text", "text": texts.HELPFUL},
                        "value": values[0],
                        "accessibility_label": texts.HELPFUL_LABEL,
                    },
                    "negative_button": {
                        "text": {"type": "plain_text", "text": texts.NOT_HELPFUL},
                        "value": values[1],
                        "accessibility_label": texts.NOT_HELPFUL_LABEL,
                    },
                }
            ],
        }
    ]


def answer_extras(answer: Answer | None) -> list[dict[str, Any]]:
    """Everything that goes under the last part of a final answer."""
    if answer is None:
        return []
    return (
        citation_blocks(answer.citations)
        + action_blocks(answer.actions, answer.conversation_id)
        + feedback_blocks(answer.feedback)
    )


def feedback_target(data: dict[str, Any]) -> tuple[FeedbackTarget, bool] | None:
    """Decode a feedback button value; None when it is not one of ours."""
    if not all(isinstance(data.get(k), str) and data.get(k) for k in ("c", "r", "m")) or "h" not in data:
        return None
    helpful = bool(data["h"])
    callback = data.get("cb") or None
    target = FeedbackTarget(
        conversation_id=data["c"],
        response_id=data["r"],
        message_id=data["m"],
        helpful=callback if helpful else None,
        unhelpful=None if helpful else callback,
    )
    return target, helpful
