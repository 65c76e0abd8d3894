"""Answer Markdown → what a Teams message carries: text, AI entity, cards, feedback flag.

Teams' default `markdown` text format renders only a subset (bold, italic, links, lists, code;
no headings, tables, rules, task lists or images), so those are rewritten
into the subset. With `TEAMS_TEXT_FORMAT=extendedmarkdown` the text goes through unchanged and
the client renders it. Citations become the AI entity's claims (`[n]` markers stay in the text;
Teams allows at most 10) or, beyond 10, an Adaptive Card listing the sources. Moveworks actions
become Adaptive Card buttons (a form's opens a dialog, forms.py), the get-help menu a container
per category; feedback uses Teams' native feedback loop. A live agent's message has no AI label
and no feedback, and starts with the agent's name.

One answer is text messages (one per part, each with the AI label, the last with the feedback
flag) plus, when there are buttons or more than ten sources, one card message of its own: Teams
shows a message carrying text and attachments as several messages (each repeating the label and
👍/👎) and refuses to edit one ("Activity resulted into multiple skype activities").

While an answer grows, the rewrite must never change text already shown: a native stream only
accepts text that extends what it showed, and an edited message should look like the final one.
`streamable` holds back what the rewrite might still change (an unfinished heading, table row or
possible table header, an unclosed code span, link or emoji code) and emphasis not closed yet (its
asterisks would show); `growing_text` closes emphasis left open by the cut, for edits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from botbuilder.schema import Attachment, Entity

from bridge import texts
from bridge.models import Answer

from .entities import MAX_CITATIONS, AIMessageEntity, claim
from .forms import ADAPTIVE_CARD, CALLBACK_KEY, help_menu_body, open_form_button

__all__ = ["ADAPTIVE_CARD", "CALLBACK_KEY"]  # re-exported: where bot.py and tests find them
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


# --- growing answers ----------------------------------------------------------------------------

_HEADING_START = re.compile(r"^ {0,3}#")
_RULE_START = re.compile(r"^ {0,3}(?:([-*_])(?:\s*\1)*)?\s*$")  # blank, or still a possible rule
_TASK_START = re.compile(r"^\s*[-*+](?:\s+(?:\[(?:[ xX](?:\]\s*)?)?)?)?$")  # "- [x] " not decided yet
_SHORTCODE_START = re.compile(r"(?<![\w:]):[a-z0-9_+\-]*$")  # an emoji code still being written


def _pipe_row(line: str) -> bool:
    """A line that starts like a table row (`| a | b`): it may become a table's header."""
    return line.lstrip().startswith("|")


def _scan(lines: list[str]) -> tuple[bool, bool, int | None]:
    """Walk complete lines as `to_teams_markdown` does: (inside a code fence, inside a table,
    index of the last line when it may still become a table header: it starts with `|` and the
    line after it is not known yet). A header without a leading pipe is not waited for: any
    sentence may contain a `|`; such a table is only fixed up by the final."""
    fence: str | None = None
    table = False
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _FENCE.match(line)
        table = False
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            i += 1
            continue
        if match:
            fence = match.group(1)
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]) and "-" in lines[i + 1]:
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                i += 1
            table = i == len(lines)  # the rows reach the end: the next line may be one more
            continue
        if _pipe_row(line) and i + 1 == len(lines):
            return False, False, i
        i += 1
    return fence is not None, table, None


def _inline_cut(line: str) -> int:
    """Where an unfinished inline construct starts in a line still being written: an unclosed
    code span (a closing run must match the opening run exactly and not be the line's end), a
    `<` (autolink, Moveworks link or tag), an image `![` or a final `!`. Before it, the rewrite
    of the line cannot change any more; `len(line)` when nothing is open."""
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "`":
            j = i
            while j < n and line[j] == "`":
                j += 1
            k = line.find("`", j)
            if k < 0:
                return i
            end = k
            while end < n and line[end] == "`":
                end += 1
            if end - k != j - i or end == n:
                return i
            i = end
            continue
        if ch == "<" or (ch == "!" and (i + 1 == n or line[i + 1] == "[")):
            return i
        i += 1
    return n


def _partial_line(line: str, *, in_fence: bool, in_table: bool) -> str:
    """The part of the unfinished last line whose rewrite its completion keeps as it is."""
    if in_fence:
        return line  # code is shown as written
    if in_table or _pipe_row(line):
        return ""  # a table row, or a line that may become a table header
    kept = line[:_inline_cut(line)]
    code = _SHORTCODE_START.search(kept)
    if code is not None:
        kept = kept[:code.start()]
    # Emphasis not closed yet would show its asterisks (a stream cannot close it for the reader
    # and take it back later): stop before it. A run of `*` at the end may still grow.
    kept = kept.rstrip("*")
    opened = _open_emphasis(kept)
    if opened:
        kept = kept[:opened[0][0]]
    if _HEADING_START.match(kept) or _RULE_START.match(kept) or _TASK_START.match(kept):
        return ""  # a heading is rewritten whole; a rule or task marker is not decided yet
    return kept


def streamable(text: str) -> str:
    """The longest prefix of a growing answer's Markdown whose Teams rewrite later text cannot
    change and that shows no stray Markdown: complete lines (but a possible table header waits
    for the line after it) and the safe start of the unfinished last line (up to an unclosed
    `*`/`**`, code span, link or emoji code). `to_teams_markdown(streamable(a))` is a prefix of
    `to_teams_markdown(streamable(b))` whenever `a` is a prefix of `b`."""
    *complete, last = text.split("\n")
    in_fence, in_table, header = _scan(complete)
    if header is not None:
        return "\n".join(complete[:header])
    kept = _partial_line(last, in_fence=in_fence, in_table=in_table)
    return "\n".join([*complete, kept] if kept else complete)


def _open_emphasis(prose: str) -> list[tuple[int, int]]:
    """(position, length) of the `*`/`**` runs `prose` opens and does not close, outside code
    spans; a bullet (`* ` at the start) is not one. A run at the very end counts as an opener
    still waiting for its text."""
    spans = [(m.start(), m.end()) for m in _CODE_SPAN.finditer(prose)]
    opened: list[tuple[int, int]] = []
    i = 0
    while i < len(prose):
        inside = next((end for start, end in spans if start <= i < end), None)
        if inside is not None:
            i = inside
            continue
        if prose[i] != "*":
            i += 1
            continue
        j = i
        while j < len(prose) and prose[j] == "*":
            j += 1
        before = prose[i - 1] if i else " "
        after = prose[j] if j < len(prose) else " "
        size = j - i
        if not i and size == 1 and after == " ":
            pass  # a bullet
        elif not before.isspace() and opened and opened[-1][1] == size:
            opened.pop()
        elif not after.isspace() or j == len(prose):
            opened.append((i, size))
        i = j
    return opened


def _close_emphasis(line: str) -> str:
    """Close `*`/`**` emphasis (and a code span) a cut left open at the end of `line`, so the
    reader sees bold text rather than asterisks; a marker with nothing after it is dropped."""
    cut = _inline_cut(line)
    closing_code = ""
    if cut < len(line) and line[cut] == "`":
        run = len(line[cut:]) - len(line[cut:].lstrip("`"))
        if line[cut + run:].strip():
            closing_code = "`" * run  # what follows the opening run is code
        else:
            line, cut = line[:cut].rstrip(), len(line[:cut].rstrip())
    prose, code = line[:cut], line[cut:]
    closers = ""
    for start, size in reversed(_open_emphasis(prose)):
        if not code and not prose[start + size:].strip():
            prose = prose[:start].rstrip()  # nothing emphasised yet
        else:
            closers += "*" * size
    text = prose + code + closing_code
    return text.rstrip() + closers if closers else text


def growing_text(text: str, text_format: str, cursor: str = "") -> str:
    """What an edited message shows of an answer still being written (`text` may end with
    `cursor`): edits replace the whole text, so only what would not render as the final does is
    held or fixed: a possible table header waits for its separator line, and emphasis or a code
    span the cut left open at the end is closed (no stray `**` while the answer grows)."""
    growing = bool(cursor) and text.endswith(cursor)
    body = text[: -len(cursor)] if growing else text
    lines = body.split("\n")
    in_fence, in_table, header = _scan(lines[:-1])
    if header is not None:
        lines = lines[:header]
    elif not in_fence and not in_table and _pipe_row(lines[-1]):
        lines = lines[:-1]
    if lines and not in_fence:
        lines[-1] = _close_emphasis(lines[-1])
    held = "\n".join(lines).rstrip()
    shown = render_text(held if held.strip() else body, text_format)
    return shown + cursor if growing else shown


def is_answer_text(text: str) -> bool:
    """Is `text` (Markdown) the assistant's answer, worth the AI label, rather than a progress
    line or a failure note on its own?"""
    before, _, after = texts.STATUS_LINE.partition("{status}")
    if text.startswith(before) and text.endswith(after):
        return False
    return not text.startswith(texts.FAILURE_NOTE.partition("{message}")[0])


def status_text(status: str | None) -> str:
    """The informative line while the assistant reasons (plain text, ≤ 1000 characters)."""
    text = f"{status or texts.THINKING}…"
    return text[:INFORMATIVE_LIMIT]


@dataclass
class Extras:
    """Everything a text message carries besides its text."""

    entities: list[Entity] = field(default_factory=list)
    channel_data: dict[str, Any] | None = None


# How much a text message carries: everything, then (when Teams refuses that) the AI label and
# the citation claims without the feedback flag, then the text alone.
FULL, NO_FEEDBACK, TEXT_ONLY = 0, 1, 2


def cited(text: str, answer: Answer, *, last: bool) -> list[Any]:
    """The citations whose `[n]` marker is in `text`; the last part also takes those no part shows."""
    if not answer.citations or len(answer.citations) > MAX_CITATIONS:
        return []  # beyond ten, the sources are listed on the card
    return [c for c in answer.citations
            if f"[{c.number}]" in text or (last and f"[{c.number}]" not in answer.text)]


def has_feedback(answer: Answer | None) -> bool:
    """👍/👎 for the assistant's answers only: a live agent's message is a person's, not rated."""
    return answer is not None and answer.sender is None and answer.feedback is not None and bool(
        answer.feedback.helpful or answer.feedback.unhelpful)


def with_byline(answer: Answer) -> Answer:
    """A live agent's message starts with who wrote it ("**Dana Fielding** (agent)"): Teams shows
    every bot message under the app's name and icon; a bot message has no documented per-message
    author (`from` names the bot itself), so the name goes into the text."""
    if answer.sender is None or not answer.sender.name.strip():
        return answer
    name = re.sub(r"[*_`\[\]<>~|#]", "", answer.sender.name).strip() or texts.LIVE_AGENT
    byline = texts.LIVE_AGENT_BYLINE.format(name=f"**{name}**")
    return replace(answer, text=f"{byline}\n\n{answer.text}" if answer.text.strip() else byline)


def text_extras(text: str, answer: Answer | None, *, last: bool = True, ai: bool = True,
                level: int = FULL) -> Extras:
    """The extras of one text message of an answer (`text` is its Markdown): the AI label (every
    part carries it), the claims of the citations it shows, and on the last part the feedback
    flag. One root Message entity at most, as Teams requires."""
    extras = Extras()
    if level >= TEXT_ONLY:
        return extras
    ai = answer.ai_generated if answer is not None else ai
    claims = [claim(c.number, c.title, c.url, c.snippet) for c in cited(text, answer, last=last)] \
        if answer is not None else []
    if ai or claims:
        extras.entities.append(AIMessageEntity(ai_generated=ai, citation=claims or None))
    if level == FULL and last and has_feedback(answer):
        extras.channel_data = {"feedbackLoopEnabled": True}
    return extras


def answer_card(answer: Answer | None) -> Attachment | None:
    """The answer's card message content: its action buttons, and its sources when there are more
    than ten (Teams allows ten citation claims)."""
    if answer is None:
        return None
    sources = list(answer.citations) if len(answer.citations) > MAX_CITATIONS else []
    card = actions_card(answer, sources)
    return Attachment(content_type=ADAPTIVE_CARD, content=card) if card is not None else None


def actions_card(answer: Answer, sources: Sequence[Any] = ()) -> dict[str, Any] | None:
    """An Adaptive Card with the Moveworks actions (forms open as dialogs), the get-help menu,
    and the sources when there are more than 10."""
    body: list[dict[str, Any]] = []
    if sources:
        body.append({"type": "TextBlock", "text": texts.SOURCES, "weight": "Bolder", "wrap": True})
        for c in sources:
            label = f"[{c.number}] [{c.title}]({c.url})" if c.url else f"[{c.number}] {c.title}"
            body.append({"type": "TextBlock", "text": label, "wrap": True, "spacing": "Small"})
    body.extend(help_menu_body(answer))
    actions: list[dict[str, Any]] = []
    for action in answer.actions:
        if action.opens_form:
            if action.ref is not None and action.where:
                actions.append(open_form_button(action.label, action.ref, action.where))
        elif action.url:
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
