"""The app's Home tab and the Messages tab's suggested prompts.

* Messages tab (`app_home_opened` with `tab: "messages"`, the agent messaging experience):
  `assistant.threads.setSuggestedPrompts` with `BRIDGE_SUGGESTED_PROMPTS` and no `thread_ts`
  (with one, the call fails silently under `agent_view`). The prompts stay pinned to the top of
  the DM, so they are set again only after `PROMPTS_EVERY` seconds (the event fires on every open).
  A workspace still on `assistant_view` gets them per assistant thread
  (`assistant_thread_started`, with `thread_ts`).
* Home tab (`tab: "home"`): `views.publish` of what the assistant does, the suggested prompts as
  buttons (pressing one asks it in the DM: the bot posts "You asked: …" there and answers in that
  message's thread), the person's latest notifications from the poller with what became of them,
  and the privacy note.
"""

from __future__ import annotations

from typing import Any

from bridge import texts
from bridge.models import Notification

from .mrkdwn import escape

PROMPT_ACTION = "mw_home_prompt_"  # + index
PROMPTS_EVERY = 3600.0  # seconds before the Messages tab's prompts are set again for one DM
BUTTON_TEXT_LIMIT = 75
NOTIFICATIONS = 5


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def suggested_prompts(prompts: tuple[str, ...]) -> list[dict[str, str]]:
    """`{title, message}` pairs for setSuggestedPrompts (at most 4, as the setting allows)."""
    return [{"title": _clip(p, BUTTON_TEXT_LIMIT), "message": p} for p in prompts[:4]]


def home_view(prompts: tuple[str, ...], notifications: list[Notification]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": texts.SLACK_HOME_TITLE}},
        {"type": "section", "text": {"type": "mrkdwn", "text": texts.SLACK_HOME_ABOUT}},
    ]
    if prompts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": texts.SLACK_HOME_TRY}})
        blocks.append({"type": "actions", "block_id": "mw_home_prompts", "elements": [
            {"type": "button", "action_id": f"{PROMPT_ACTION}{i}", "value": prompt,
             "text": {"type": "plain_text", "text": _clip(prompt, BUTTON_TEXT_LIMIT), "emoji": True}}
            for i, prompt in enumerate(prompts[:4])
        ]})
    blocks.append({"type": "divider"})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": texts.SLACK_HOME_NOTIFICATIONS}})
    if not notifications:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": texts.SLACK_HOME_NO_NOTIFICATIONS}]})
    for note in notifications[:NOTIFICATIONS]:
        preview = escape(_clip(note.preview or "…", 280))
        status = texts.SLACK_NOTIFICATION_STATUS.get(note.status, note.status or "")
        when = ""
        if note.created_at:
            stamp = int(note.created_at)
            when = f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{_fallback_date(stamp)}> · "
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": preview}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{when}{escape(status)}"}]})
    blocks.append({"type": "divider"})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": texts.SLACK_PRIVACY_NOTE}]})
    return {"type": "home", "blocks": blocks}


def _fallback_date(stamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
