"""👍/👎 with a comment: a click on the feedback buttons opens a small modal with an optional
comment box; the rating goes to Moveworks with the comment as `additional_feedback`.

When the rating is sent: with the modal's outcome, in ONE submit-feedback call that carries the
comment (when there is one). Moveworks' submit-feedback takes `{callback_id, additional_feedback?}`
and documents neither idempotency nor what a second call for the same message does, so rating on
the click and sending the comment in a second call could count the rating twice. The modal asks
Slack for `notify_on_close`, so closing it ("Skip", ✕) still sends the rating, without a comment;
and when the modal cannot be opened at all (the click's trigger_id expired, views.open refused)
the rating is sent at once, as before. Either way every click ends in exactly one rating.
"""

from __future__ import annotations

from typing import Any

from bridge import texts
from bridge.models import FeedbackTarget

from . import blocks as bk

FEEDBACK_CALLBACK = "mw_feedback_comment"
COMMENT_BLOCK = "mw_feedback_comment"
COMMENT_ACTION = "comment"
COMMENT_LIMIT = 2_000  # characters of a comment (Slack's plain_text_input allows up to 3,000)


def metadata(target: FeedbackTarget, helpful: bool, channel: str | None, thread_ts: str | None) -> dict[str, Any]:
    """What the modal carries back in its private_metadata: the button's ids and where it was."""
    return {
        "c": target.conversation_id, "r": target.response_id, "m": target.message_id,
        "cb": (target.helpful if helpful else target.unhelpful) or "", "h": 1 if helpful else 0,
        "ch": channel or "", "th": thread_ts or "",
    }


def from_metadata(data: dict[str, Any]) -> tuple[FeedbackTarget, bool, str | None, str | None] | None:
    decoded = bk.feedback_target(data)
    if decoded is None:
        return None
    target, helpful = decoded
    return target, helpful, str(data.get("ch") or "") or None, str(data.get("th") or "") or None


def comment_view(helpful: bool, private_metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": FEEDBACK_CALLBACK,
        "notify_on_close": True,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": texts.SLACK_FEEDBACK_TITLE},
        "submit": {"type": "plain_text", "text": texts.SLACK_FEEDBACK_SEND},
        "close": {"type": "plain_text", "text": texts.SLACK_FEEDBACK_SKIP},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": texts.SLACK_FEEDBACK_ASK_HELPFUL if helpful
                                         else texts.SLACK_FEEDBACK_ASK_UNHELPFUL}},
            {"type": "input", "block_id": COMMENT_BLOCK, "optional": True,
             "label": {"type": "plain_text", "text": texts.SLACK_FEEDBACK_COMMENT},
             "hint": {"type": "plain_text", "text": texts.SLACK_FEEDBACK_HINT},
             "element": {"type": "plain_text_input", "action_id": COMMENT_ACTION, "multiline": True,
                         "max_length": COMMENT_LIMIT}},
        ],
    }


def outcome_view(text: str) -> dict[str, Any]:
    """The modal after the rating went (or did not): one sentence and a close button."""
    return {
        "type": "modal",
        "callback_id": FEEDBACK_CALLBACK + "_done",
        "title": {"type": "plain_text", "text": texts.SLACK_FEEDBACK_TITLE},
        "close": {"type": "plain_text", "text": texts.FORM_CLOSE},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def comment(view: dict[str, Any]) -> str | None:
    """The comment typed in the modal (None when left empty)."""
    values = ((view.get("state") or {}).get("values") or {}) if isinstance(view, dict) else {}
    entry = (values.get(COMMENT_BLOCK) or {}).get(COMMENT_ACTION) or {}
    text = entry.get("value") if isinstance(entry, dict) else None
    text = text.strip() if isinstance(text, str) else ""
    return text[:COMMENT_LIMIT] or None
