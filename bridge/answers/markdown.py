"""Platform-neutral Markdown helpers: splitting without loss, fence balancing, status lines.

Every chat platform caps a message's length and renders an unclosed code fence as if the rest of
the message were code, so each part of a split answer and every intermediate frame must have
balanced fences. Splitting never drops a character: joining the parts and removing only the fence
lines this module adds gives back the original text exactly.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_SLACK_LINK = re.compile(r"<(https?://[^|>\s]+)\|([^>]+)>")
_REASONING_MARKERS = "✓→⏳⌛•-*✔ "


def _fence_state(text: str, state: tuple[str, str] | None = None) -> tuple[str, str] | None:
    """(fence marker, opening line) if `text` ends inside a code block, else None."""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        marker = match.group(1)
        if state is None:
            state = (marker, line.strip())
        elif marker[0] == state[0][0] and len(marker) >= len(state[0]) and not match.group(2).strip():
            state = None
    return state


def open_fence(text: str) -> tuple[str, str] | None:
    """(closing marker, opening line) when `text` ends inside a fenced code block, else None."""
    return _fence_state(text)


def balance_fences(text: str) -> str:
    """Close a code block left open by a partial answer, for display only."""
    state = _fence_state(text)
    if state is None:
        return text
    return text + ("" if text.endswith("\n") else "\n") + state[0]


def _cut_point(text: str, start: int, end: int) -> int:
    """Best place to cut text[start:end]: paragraph, line, sentence, word, else hard."""
    window = text[start:end]
    floor = len(window) // 2
    for sep in ("\n\n", "\n", ". ", " "):
        index = window.rfind(sep)
        if index >= floor or (sep == " " and index > 0):
            return start + index + len(sep)
    return end


def split_markdown(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` characters, closing and reopening fences."""
    if limit < 16:
        raise ValueError("limit too small to split Markdown safely")
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    start, prefix, state = 0, "", None
    while start < len(text):
        room = limit - len(prefix)
        if len(text) - start <= room:
            parts.append(prefix + text[start:])
            break
        # Reserve room for a closing fence in case the cut lands inside a code block.
        reserve = 5 + (len(state[0]) if state else 3)
        cut = _cut_point(text, start, start + room - reserve)
        if cut <= start:
            cut = start + max(1, room - reserve)
        chunk = text[start:cut]
        state = _fence_state(chunk, state)
        part = prefix + chunk
        if state is not None:
            part += ("" if part.endswith("\n") else "\n") + state[0]
            prefix = state[1] + "\n"
        else:
            prefix = ""
        parts.append(part)
        start = cut
    return parts


def normalise_markdown(text: str) -> str:
    """Moveworks MARKDOWN_TEXT may carry Slack-style links `<url|label>`; make them CommonMark."""
    return _SLACK_LINK.sub(lambda m: f"[{m.group(2)}]({m.group(1)})", text)


def status_line(reasoning: str, limit: int = 120) -> str | None:
    """The current step of a reasoning trail: its last non-empty line, without step markers."""
    for line in reversed(reasoning.splitlines()):
        step = line.strip().lstrip(_REASONING_MARKERS).strip()
        if step:
            return step if len(step) <= limit else step[: limit - 1] + "…"
    return None
