"""Platform-neutral Markdown helpers: Moveworks markup to CommonMark, splitting without loss,
fence balancing, status lines.

Moveworks answers in MARKDOWN_TEXT carry Slack-style links (`<url|label>`, `<url>`) and `:emoji:`
shortcodes; `normalise_markdown` turns them into CommonMark links and Unicode emoji, outside code,
so every adapter receives CommonMark.

Every chat platform caps a message's length and renders an unclosed code fence as if the rest of
the message were code, so each part of a split answer and every intermediate frame must have
balanced fences. Splitting never drops a character: joining the parts and removing only the fence
lines this module adds gives back the original text exactly.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_INLINE_CODE = re.compile(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)\1(?!`)", re.S)  # never across paragraphs
# One pass over prose: a Slack-style link (`<url|label>` or `<url>`), a CommonMark link or image
# (left alone, so a URL is never rewritten), or an emoji shortcode (a skin tone after it dropped).
_MARKUP = re.compile(
    r"<(?P<url>(?:https?://|mailto:)[^\s|<>]+)(?:\|(?P<label>[^<>]*))?>"
    r"|(?P<md>!?\[[^\]\n]*\]\([^)\s]*\))"
    r"|(?<![\w:]):(?P<emoji>[a-z0-9_+\-]+):(?::skin-tone-[2-6]:)?(?![\w:])"
)
_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\(([^)\s]*)\)")
_EMPHASIS = re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"
                       r"|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_REASONING_MARKERS = "✓→⏳⌛•-*✔ "

# The shortcodes Moveworks answers use most (Slack's names); unknown codes stay as written.
EMOJI = {
    "+1": "👍", "-1": "👎", "thumbsup": "👍", "thumbsdown": "👎", "wave": "👋", "clap": "👏",
    "raised_hands": "🙌", "pray": "🙏", "ok_hand": "👌", "point_right": "👉", "point_left": "👈",
    "point_up": "☝️", "point_down": "👇", "muscle": "💪", "eyes": "👀",
    "smile": "😄", "smiley": "😃", "slightly_smiling_face": "🙂", "blush": "😊", "grin": "😁",
    "wink": "😉", "thinking_face": "🤔", "sweat_smile": "😅", "confused": "😕", "disappointed": "😞",
    "white_check_mark": "✅", "heavy_check_mark": "✔️", "ballot_box_with_check": "☑️", "x": "❌",
    "negative_squared_cross_mark": "❎", "warning": "⚠️", "no_entry": "⛔", "no_entry_sign": "🚫",
    "exclamation": "❗", "heavy_exclamation_mark": "❗", "question": "❓", "information_source": "ℹ️",
    "bulb": "💡", "star": "⭐", "sparkles": "✨", "tada": "🎉", "fire": "🔥", "rocket": "🚀",
    "heart": "❤️", "100": "💯", "rotating_light": "🚨", "bell": "🔔", "mega": "📣", "loudspeaker": "📢",
    "red_circle": "🔴", "large_green_circle": "🟢", "large_yellow_circle": "🟡", "large_blue_circle": "🔵",
    "arrow_right": "➡️", "arrow_left": "⬅️", "arrow_forward": "▶️", "arrows_counterclockwise": "🔄",
    "lock": "🔒", "unlock": "🔓", "closed_lock_with_key": "🔐", "key": "🔑", "shield": "🛡️",
    "computer": "💻", "desktop_computer": "🖥️", "keyboard": "⌨️", "iphone": "📱", "printer": "🖨️",
    "globe_with_meridians": "🌐", "link": "🔗", "email": "📧", "envelope": "✉️", "inbox_tray": "📥",
    "phone": "☎️", "telephone_receiver": "📞", "calendar": "📆", "date": "📅", "spiral_calendar_pad": "🗓️",
    "clock3": "🕒", "alarm_clock": "⏰", "hourglass": "⌛", "hourglass_flowing_sand": "⏳", "stopwatch": "⏱️",
    "mag": "🔍", "mag_right": "🔎", "memo": "📝", "pencil": "📝", "pencil2": "✏️", "clipboard": "📋",
    "page_facing_up": "📄", "bookmark_tabs": "📑", "books": "📚", "book": "📖", "paperclip": "📎",
    "pushpin": "📌", "file_folder": "📁", "open_file_folder": "📂", "chart_with_upwards_trend": "📈",
    "bar_chart": "📊", "ticket": "🎫", "admission_tickets": "🎟️", "package": "📦", "gear": "⚙️",
    "wrench": "🔧", "hammer_and_wrench": "🛠️", "toolbox": "🧰", "moneybag": "💰", "dollar": "💵",
    "credit_card": "💳", "briefcase": "💼", "office": "🏢", "house": "🏠", "airplane": "✈️",
    "palm_tree": "🌴", "beach_with_umbrella": "🏖️", "car": "🚗", "coffee": "☕", "gift": "🎁",
    "trophy": "🏆", "medal": "🏅", "robot_face": "🤖", "speech_balloon": "💬", "busts_in_silhouette": "👥",
    "bust_in_silhouette": "👤", "handshake": "🤝", "zap": "⚡", "new": "🆕", "sos": "🆘",
}


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


def _prose_and_code(text: str) -> list[tuple[bool, str]]:
    """`text` cut into (is_code, piece) runs, fenced blocks and inline code spans being code;
    joining the pieces gives `text` back."""
    runs: list[tuple[bool, str]] = []
    prose: list[str] = []
    state: tuple[str, str] | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if state is None and match:
            state = (match.group(1), line)
            runs.append((False, "\n".join(prose) + "\n") if prose else (False, ""))
            prose, code = [], [line]
            continue
        if state is not None:
            code.append(line)
            if match and match.group(1)[0] == state[0][0] and len(match.group(1)) >= len(state[0]) \
                    and not match.group(2).strip():
                state = None
                runs.append((True, "\n".join(code)))
                prose = [""]  # the newline after the closing fence starts the next prose run
            continue
        prose.append(line)
    if state is not None:
        runs.append((True, "\n".join(code)))
    elif prose:
        runs.append((False, "\n".join(prose)))
    out: list[tuple[bool, str]] = []
    for is_code, piece in runs:
        if is_code:
            out.append((True, piece))
            continue
        pos = 0
        for span in _INLINE_CODE.finditer(piece):
            out.append((False, piece[pos:span.start()]))
            out.append((True, span.group(0)))
            pos = span.end()
        out.append((False, piece[pos:]))
    return [run for run in out if run[1]]


def _link_label(label: str) -> str:
    return emojize(label).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _link_url(url: str) -> str:
    return url.replace("(", "%28").replace(")", "%29")


def _markup(match: re.Match[str]) -> str:
    if match.group("url"):
        url = match.group("url")
        label = (match.group("label") or "").strip()
        shown = label or (url[7:] if url.startswith("mailto:") else url)
        return f"[{_link_label(shown)}]({_link_url(url)})"
    if match.group("md"):
        return match.group("md")
    return EMOJI.get(match.group("emoji"), match.group(0))


def emojize(text: str) -> str:
    """Known `:shortcode:`s as Unicode emoji (no code awareness: for labels and titles)."""
    return _MARKUP.sub(lambda m: _markup(m) if m.group("emoji") else m.group(0), text)


def normalise_markdown(text: str) -> str:
    """Moveworks markup as CommonMark: Slack-style `<url|label>` and `<url>` become links, known
    `:emoji:` shortcodes become Unicode emoji; code blocks and code spans are left as they are."""
    if "<" not in text and ":" not in text:
        return text
    return "".join(piece if is_code else _MARKUP.sub(_markup, piece) for is_code, piece in _prose_and_code(text))


def markup_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every piece of raw Moveworks markup a citation marker must not cut: links
    (Slack-style and CommonMark), emoji shortcodes and inline code spans."""
    spans = [(m.start(), m.end()) for m in _MARKUP.finditer(text)]
    spans += [(m.start(), m.end()) for m in _INLINE_CODE.finditer(text)]
    return sorted(spans)


def plain_text(text: str) -> tuple[str, str | None]:
    """One line of Moveworks markup as plain text (a citation title, a label): links become their
    text, emphasis and code marks go, emoji codes become emoji. Also the first link's URL."""
    commonmark = normalise_markdown(text)
    first = _MD_LINK.search(commonmark)
    url = first.group(2).replace("%28", "(").replace("%29", ")") if first else None

    def label(match: re.Match[str]) -> str:
        return re.sub(r"\\([\[\]\\])", r"\1", match.group(1))

    plain = _MD_LINK.sub(label, commonmark)
    for _ in range(3):  # nested emphasis (***bold italic***)
        plain = _EMPHASIS.sub(lambda m: m.group(2) or m.group(3) or m.group(4) or "", plain)
    plain = re.sub(r"(`+)(.+?)\1", r"\2", plain)
    return " ".join(plain.split()), url


def status_line(reasoning: str, limit: int = 120) -> str | None:
    """The current step of a reasoning trail: its last non-empty line, without step markers."""
    for line in reversed(reasoning.splitlines()):
        step = line.strip().lstrip(_REASONING_MARKERS).strip()
        if step:
            return step if len(step) <= limit else step[: limit - 1] + "…"
    return None
