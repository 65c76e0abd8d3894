"""Answer Markdown → what a Teams message carries: text, AI entity, cards, feedback flag.

Teams' default `markdown` text format renders only a subset (bold, italic, links, lists, code;
no headings, tables, rules, task lists or images), so those are rewritten
into the subset. With `TEAMS_TEXT_FORMAT=extendedmarkdown` the text goes through unchanged and
the client renders it. Citations become the AI entity's claims (`[n]` markers stay in the text;
Teams allows at most 10) or, beyond 10, an Adaptive Card listing the sources. Moveworks actions
become Adaptive Card buttons; feedback uses Teams' native feedback loop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botbuilder.schema import Attachment, Entity

from bridge import texts
from bridge.models import Answer

from .entities import MAX_CITATIONS, AIMessageEntity, claim

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CALLBACK_KEY = "mwb"  # marks our Action.Submit payloads
INFORMATIVE_LIMIT = 1000  # Teams' cap on informative stream updates

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_TASK = re.compile(r"^(\s*[-*+]\s+)\[([ xX])\]\s+")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line.removeprefix("|")
    line = line.removesuffix("|")
    return [c.strip() for c in line.split("|")]


def _inline(line: str) -> str:
    """Inline rewrites outside code spans: images → links, autolinks, raw tags escaped."""
    out, last = [], 0
    for match in _CODE_SPAN.finditer(line):
        out.append(_inline_plain(line[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_inline_plain(line[last:]))
    return "".join(out)


def _inline_plain(text: str) -> str:
    text = _IMAGE.sub(lambda m: f"[{m.group(1) or 'image'}]({m.group(2)})", text)
    text = _AUTOLINK.sub(lambda m: f"[{m.group(1)}]({m.group(1)})", text)
    # Teams would interpret "<name>" as an (unknown) HTML tag and hide it.
    return _TAG_OPEN.sub("&lt;", text)


def to_teams_markdown(text: str) -> str:
    """Rewrite CommonMark/GFM into the subset Teams renders with `textFormat: markdown`."""
    lines = text.split("\n")
    out: list[str] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            i += 1
            continue
        if match:
            fence = match.group(1)
            out.append(line)
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]) and "-" in lines[i + 1]:
            header = _cells(line)
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                row = _cells(lines[i])
                pairs = [f"**{_inline(h)}**: {_inline(v)}" if h else _inline(v)
                         for h, v in zip(header, row + [""] * (len(header) - len(row)), strict=False) if v or h]
                out.append("- " + "; ".join(pairs))
                i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            out.append(f"**{_inline(title)}**" if title else "")
        elif _RULE.match(line):
            out.append("")
        else:
            line = _TASK.sub(lambda m: m.group(1) + ("☑ " if m.group(2) in "xX" else "☐ "), line)
            out.append(_inline(line))
        i += 1
    return "\n".join(out)


def render_text(text: str, text_format: str) -> str:
    return text if text_format == "extendedmarkdown" else to_teams_markdown(text)


def status_text(status: str | None) -> str:
    """The informative line while the assistant reasons (plain text, ≤ 1000 characters)."""
    text = f"{status or texts.THINKING}…"
    return text[:INFORMATIVE_LIMIT]


@dataclass
class Extras:
    """Everything a final message carries besides its text."""

    entities: list[Entity] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    channel_data: dict[str, Any] | None = None


def answer_extras(answer: Answer | None, *, with_citations: bool = True, with_card: bool = True) -> Extras:
    """AI label + citation claims, the actions/sources card and the feedback flag."""
    extras = Extras()
    if answer is None:
        return extras
    claims = None
    sources: list[Any] = []
    if with_citations and answer.citations:
        if len(answer.citations) <= MAX_CITATIONS:
            claims = [claim(c.number, c.title, c.url, c.snippet) for c in answer.citations]
        else:
            sources = list(answer.citations)
    if answer.ai_generated or claims:
        extras.entities.append(AIMessageEntity(ai_generated=answer.ai_generated, citation=claims))
    if with_card:
        card = actions_card(answer, sources)
        if card is not None:
            extras.attachments.append(Attachment(content_type=ADAPTIVE_CARD, content=card))
    if answer.feedback is not None and (answer.feedback.helpful or answer.feedback.unhelpful):
        extras.channel_data = {"feedbackLoopEnabled": True}
    return extras


def actions_card(answer: Answer, sources: Sequence[Any] = ()) -> dict[str, Any] | None:
    """An Adaptive Card with the Moveworks actions (and the sources when there are > 10)."""
    body: list[dict[str, Any]] = []
    if sources:
        body.append({"type": "TextBlock", "text": texts.SOURCES, "weight": "Bolder", "wrap": True})
        for c in sources:
            label = f"[{c.number}] [{c.title}]({c.url})" if c.url else f"[{c.number}] {c.title}"
            body.append({"type": "TextBlock", "text": label, "wrap": True, "spacing": "Small"})
    actions: list[dict[str, Any]] = []
    for action in answer.actions:
        if action.url:
            actions.append({"type": "Action.OpenUrl", "title": action.label[:100], "url": action.url})
        elif action.callback_id and answer.conversation_id:
            actions.append({
                "type": "Action.Submit",
                "title": action.label[:100],
                "data": {
                    CALLBACK_KEY: "action",
                    "callback_id": action.callback_id,
                    "conversation_id": answer.conversation_id,
                    "label": action.label,
                },
            })
    if not body and not actions:
        return None
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return card
