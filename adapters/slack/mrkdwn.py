"""Text conversion at the Slack boundary.

Inbound: Slack markup (`<@U1>`, `<#C1|general>`, `<https://x|label>`, `&lt;`) becomes the plain
text Moveworks should read, with the bot's own mention removed.
Outbound: Moveworks Markdown goes to Slack untouched wherever Slack renders Markdown (the
`markdown` block, `markdown_text` of streams); `to_mrkdwn` is only for the surfaces that still
take mrkdwn (notification `text`, section/context blocks, the fallback when a markdown block is
refused).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ENTITY = re.compile(r"<([^<>]*)>")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Escape the three characters Slack treats as markup in mrkdwn/plain text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_plain(
    text: str, *, bot_user_id: str | None = None, names: Mapping[str, str] | None = None
) -> str:
    """Slack message markup -> plain text for Moveworks; strips mentions of the bot."""
    names = names or {}

    def entity(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            user = target[1:]
            if bot_user_id and user == bot_user_id:
                return ""
            shown = label or names.get(user) or user
            return "@" + shown.lstrip("@")
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            command = target[1:]
            if command.startswith("subteam^"):
                return label or "@group"
            if command.startswith("date^"):
                return label or ""
            return "@" + (label or command)
        if target.startswith("mailto:"):
            return label or target[7:]
        if label and label != target:
            return f"{label} ({target})"
        return target

    text = _ENTITY.sub(entity, text or "")
    text = _unescape(text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip()


def mentions(text: str, user_id: str) -> bool:
    """Does the raw Slack text mention `user_id`?"""
    return bool(user_id) and re.search(rf"<@{re.escape(user_id)}(\|[^>]*)?>", text or "") is not None


# --- Markdown -> mrkdwn -------------------------------------------------------------------------

_FENCE_BLOCK = re.compile(r"(^|\n)(```|~~~)[^\n]*\n(.*?)(\n\2[ \t]*(?=\n|$)|$)", re.S)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"&lt;(https?://[^\s&]+)&gt;")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_ITALIC_STAR = re.compile(r"(?<![\*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
_RULE = re.compile(r"^ {0,3}([-*_])( ?\1){2,}\s*$", re.M)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")


def _tables_to_code(text: str) -> str:
    """mrkdwn has no tables: keep their alignment readable in a code block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if _TABLE_ROW.match(lines[i]) and i + 1 < len(lines) and re.match(r"^\s*\|?[\s:|-]+\|?\s*$", lines[i + 1]):
            block = []
            while i < len(lines) and _TABLE_ROW.match(lines[i]):
                block.append(lines[i])
                i += 1
            out.append("```\n" + "\n".join(block) + "\n```")
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def to_mrkdwn(markdown: str) -> str:
    """CommonMark -> Slack mrkdwn. Code (fenced and inline) is kept verbatim apart from escaping."""
    stash: list[str] = []

    def keep(value: str) -> str:
        stash.append(value)
        return f"\x00{len(stash) - 1}\x00"

    text = _tables_to_code(markdown or "")
    text = _FENCE_BLOCK.sub(
        lambda m: m.group(1) + keep("```\n" + escape(m.group(3)) + "\n```"), text
    )
    text = _INLINE_CODE.sub(lambda m: keep("`" + escape(m.group(2)) + "`"), text)
    text = escape(text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{m.group(1)}>"), text)
    text = _IMAGE.sub(lambda m: keep(f"<{m.group(2)}|{m.group(1) or m.group(2)}>"), text)
    text = _LINK.sub(lambda m: keep(f"<{m.group(2)}|{m.group(1).replace('|', '¦')}>"), text)
    text = _RULE.sub("──────────", text)
    text = _HEADING.sub(lambda m: keep("*" + m.group(1).replace("*", "") + "*"), text)
    text = _BOLD.sub(lambda m: keep("*" + m.group(2) + "*"), text)
    text = _ITALIC_STAR.sub(lambda m: "_" + m.group(1) + "_", text)
    text = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", text)
    text = _BULLET.sub(lambda m: m.group(1) + "• ", text)
    while "\x00" in text:
        text = re.sub(r"\x00(\d+)\x00", lambda m: stash[int(m.group(1))], text)
    return text


def preview(markdown: str, limit: int = 300) -> str:
    """A short mrkdwn rendering for the notification `text` of a message carrying blocks."""
    flat = " ".join((markdown or "").split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return to_mrkdwn(flat) or " "
