"""Block Kit for answers: the Markdown body, numbered citations, Moveworks action buttons and
feedback buttons, plus the compact button values that carry what a click needs.

Button values travel through Slack and come back on click, so the bridge keeps no per-button
state: a value holds the Moveworks ids (conversation, response, message, callback) and stays under
Slack's 2,000-character limit.

Every payload is measured against Slack's limits before it is sent (`layout_extras`): a message
holds at most 50 blocks and about 12,000 text characters summed over all of them (the answer, the
citation lines and the button labels alike), and one text object at most 3,000. The answer text is
never cut to make room: the citations get shorter titles, then move to a follow-up message of
their own (where, if even that is too much, they lose their links and finally the last lines).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bridge import texts
from bridge.models import Answer, CitationLink, FeedbackTarget, MessageRef, Sender
from bridge.moveworks.models import Action

from . import forms
from .mrkdwn import escape, to_mrkdwn

SECTION_LIMIT = 3000  # section/mrkdwn text object
TEXT_OBJECT_LIMIT = 3000  # any mrkdwn/plain_text text object (slack_sdk's models do not check it)
BLOCKS_TEXT_LIMIT = 12_000  # text characters summed over all blocks of one message
MAX_BLOCKS = 50  # per message
VALUE_LIMIT = 2000  # button value
BUTTON_TEXT_LIMIT = 75
URL_LIMIT = 3000
MAX_BUTTONS = 25  # per actions block
CONTEXT_ELEMENTS = 10  # per context block
TITLE_LIMIT = 200  # a citation's title
SHORT_TITLE_LIMIT = 60  # ...when the full titles do not fit

FEEDBACK_ACTION = "mw_feedback"  # the feedback_buttons element; classic buttons add _yes / _no
FEEDBACK_BLOCK = "mw_feedback"  # block_id of the classic feedback buttons
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


_LINK_BREAKERS = re.compile(r"[|<>\s]")


def link_url(url: str) -> str:
    """A URL safe inside a mrkdwn link `<url|label>`: `|`, `<`, `>` and whitespace would end or
    split the link, so they are percent-encoded (a browser reads them the same)."""
    return _LINK_BREAKERS.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), url)


def citation_line(c: CitationLink, *, title_limit: int = TITLE_LIMIT, link: bool = True) -> str:
    """`[n] <url|title>`, or `[n] title` when there is no URL or the line would pass Slack's
    3,000 characters per text object."""
    title = escape(_clip(" ".join((c.title or "").split()) or "Source", title_limit))
    plain = f"[{c.number}] {title}"
    if not (link and c.url):
        return plain
    linked = f"[{c.number}] <{link_url(c.url)}|{title}>"
    return linked if len(linked) <= TEXT_OBJECT_LIMIT else plain


def _number_link(c: CitationLink) -> str:
    """The shortest line that still opens the source: the number itself as the link."""
    if not c.url:
        return citation_line(c, title_limit=SHORT_TITLE_LIMIT)
    linked = f"<{link_url(c.url)}|[{c.number}]>"
    return linked if len(linked) <= TEXT_OBJECT_LIMIT else citation_line(c, title_limit=SHORT_TITLE_LIMIT)


def _context(lines: list[str]) -> list[dict[str, Any]]:
    elements = [{"type": "mrkdwn", "text": line} for line in lines]
    return [
        {"type": "context", "elements": elements[start : start + CONTEXT_ELEMENTS]}
        for start in range(0, len(elements), CONTEXT_ELEMENTS)
    ]


def citation_blocks(citations: tuple[CitationLink, ...], *, level: int = 0) -> list[dict[str, Any]]:
    """Numbered sources under the answer, matching the [n] markers in the text. `level` trades
    detail for size: 0 full titles, 1 short titles, 2 the numbers as links, 3 short titles
    without links."""
    if not citations:
        return []
    if level == 0:
        lines = [citation_line(c) for c in citations]
    elif level == 1:
        lines = [citation_line(c, title_limit=SHORT_TITLE_LIMIT) for c in citations]
    elif level == 2:
        lines = [_number_link(c) for c in citations]
    else:
        lines = [citation_line(c, title_limit=SHORT_TITLE_LIMIT, link=False) for c in citations]
    return _context(lines)


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
    """Moveworks actions as buttons: URL actions open the link, callback actions come back to us,
    form actions (MODAL_ACTION) open a modal (their value locates the action in its message)."""
    buttons = []
    for i, action in enumerate(actions):
        button: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": _clip(action.label, BUTTON_TEXT_LIMIT), "emoji": True},
        }
        if action.opens_form:
            if action.ref is None or not action.where:
                continue
            value = encode(forms.form_button_value(action.ref, action.where, action.label))
            if len(value) > VALUE_LIMIT:
                continue
            button["action_id"] = f"{forms.OPEN_FORM_PREFIX}{i}"
            button["value"] = value
        elif action.url and len(action.url) <= URL_LIMIT:
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


def feedback_blocks(target: FeedbackTarget | None, *, classic: bool = False) -> list[dict[str, Any]]:
    """👍/👎: Slack's native `feedback_buttons` in a `context_actions` block, or (`classic`, for a
    workspace that refuses that block) two plain buttons in an `actions` block. Each value carries
    the ids Moveworks submit-feedback needs; a click opens the comment modal (`feedback.py`)."""
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
    if classic:
        return [
            {
                "type": "actions",
                "block_id": FEEDBACK_BLOCK,
                "elements": [
                    {"type": "button", "action_id": FEEDBACK_ACTION + "_yes", "value": values[0],
                     "text": {"type": "plain_text", "text": "👍 " + texts.HELPFUL, "emoji": True},
                     "accessibility_label": texts.HELPFUL_LABEL},
                    {"type": "button", "action_id": FEEDBACK_ACTION + "_no", "value": values[1],
                     "text": {"type": "plain_text", "text": "👎 " + texts.NOT_HELPFUL, "emoji": True},
                     "accessibility_label": texts.NOT_HELPFUL_LABEL},
                ],
            }
        ]
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


def has_context_actions(blocks: Any) -> bool:
    """Does a payload use the `context_actions` block (which older workspaces refuse)?"""
    if isinstance(blocks, dict):
        return blocks.get("type") == "context_actions" or any(has_context_actions(v) for v in blocks.values())
    if isinstance(blocks, list):
        return any(has_context_actions(v) for v in blocks)
    return False


def answer_extras(answer: Answer | None, *, classic: bool = False) -> list[dict[str, Any]]:
    """Everything that goes under the last part of a final answer, at full detail (unmeasured:
    see `layout_extras`)."""
    if answer is None:
        return []
    return citation_blocks(answer.citations) + button_blocks(answer, classic=classic)


def button_blocks(answer: Answer | None, *, classic: bool = False) -> list[dict[str, Any]]:
    """What goes under a final answer's text besides citations: who wrote it (a live agent),
    action buttons, the get-help menu, and feedback buttons (never for a person's message)."""
    if answer is None:
        return []
    byline = sender_blocks(answer.sender)
    buttons = action_blocks(answer.actions, answer.conversation_id)
    menu = forms.help_blocks(answer.help_menu, _answer_ref(answer))
    feedback = feedback_blocks(answer.feedback, classic=classic) if answer.sender is None else []
    return byline + buttons + menu + feedback


def sender_blocks(sender: Sender | None) -> list[dict[str, Any]]:
    """A live agent's byline: the post's `username`/`icon_url` show them where Slack honours the
    override; this line says it everywhere (streams and edits cannot change a message's author).
    Text only: an image element with an unreachable avatar URL would make Slack refuse the message."""
    if sender is None:
        return []
    line = texts.LIVE_AGENT_BYLINE.format(name=f"*{escape(_clip(sender.name, 200))}*")
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}]


def _answer_ref(answer: Answer) -> MessageRef | None:
    """The message a get-help menu without any action item belongs to: the answer's last one."""
    if answer.conversation_id and answer.message_ids:
        return MessageRef(answer.conversation_id, answer.response_id or "", answer.message_ids[-1])
    return None


def authorship(answer: Answer | None) -> dict[str, Any]:
    """chat.postMessage arguments that show a live agent as the message's author (applied by
    Slack only with the `chat:write.customize` scope; chat.update cannot change them)."""
    if answer is None or answer.sender is None:
        return {}
    kwargs: dict[str, Any] = {"username": _clip(answer.sender.name, 80)}
    avatar = answer.sender.avatar_url
    if avatar and avatar.startswith(("https://", "http://")) and len(avatar) <= URL_LIMIT:
        kwargs["icon_url"] = avatar
    return kwargs


def text_size(blocks: Any) -> int:
    """Text characters of blocks as Slack sums them for `msg_blocks_too_long`: every `text`
    string (markdown blocks, text objects, button labels)."""
    if isinstance(blocks, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else text_size(v) for k, v in blocks.items())
    if isinstance(blocks, list):
        return sum(text_size(v) for v in blocks)
    return 0


def fits(blocks: list[dict[str, Any]], *, room: int = BLOCKS_TEXT_LIMIT, room_blocks: int = MAX_BLOCKS) -> bool:
    return text_size(blocks) <= room and len(blocks) <= room_blocks


@dataclass
class Layout:
    """The extras of one final message: `blocks` go under its body; `sources`, when not empty,
    is a follow-up message of its own (citations that did not fit under the answer)."""

    blocks: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)


def _fit_buttons(blocks: list[dict[str, Any]], room: int, room_blocks: int) -> list[dict[str, Any]]:
    """Buttons within the room left: action buttons go from the end first, feedback last."""
    blocks = [dict(b, elements=list(b["elements"])) for b in blocks]
    while blocks and not fits(blocks, room=room, room_blocks=room_blocks):
        actions = [b for b in blocks if b["type"] == "actions" and b.get("block_id") != FEEDBACK_BLOCK]
        victim = actions[-1] if actions else blocks[-1]
        if victim["type"] == "actions" and len(victim["elements"]) > 1:
            victim["elements"].pop()
        else:
            blocks.remove(victim)
    return blocks


def source_blocks(citations: tuple[CitationLink, ...]) -> list[dict[str, Any]]:
    """Citations alone in a message, fitted to one message's limits: less detail first, then
    fewer lines (the last ones go)."""
    for level in range(4):
        blocks = citation_blocks(citations, level=level)
        if fits(blocks):
            return blocks
    count = len(citations)
    while count > 0 and not fits(citation_blocks(citations[:count], level=3)):
        count -= 1
    return citation_blocks(citations[:count], level=3)


def layout_extras(
    answer: Answer | None, *, used: int = 0, used_blocks: int = 0, sources_apart: bool = False,
    classic: bool = False,
) -> Layout:
    """The extras of a final answer's last message, measured against what its body already
    takes (`used` text characters, `used_blocks` blocks): full detail when it fits, else short
    citation titles, else the citations in a follow-up message and the buttons under the answer.
    `sources_apart`: the citations go to the follow-up message in any case. `classic`: plain
    feedback buttons instead of `context_actions`."""
    if answer is None:
        return Layout()
    room, room_blocks = BLOCKS_TEXT_LIMIT - used, MAX_BLOCKS - used_blocks
    buttons = button_blocks(answer, classic=classic)
    for level in (0, 1):
        blocks = citation_blocks(answer.citations, level=level) + buttons
        if not (sources_apart and answer.citations) and fits(blocks, room=room, room_blocks=room_blocks):
            return Layout(blocks)
    return Layout(_fit_buttons(buttons, room, room_blocks), source_blocks(answer.citations))


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
