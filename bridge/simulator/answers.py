"""What the simulated assistant says: scripted answers (admin API) and keyword defaults.

Defaults are deterministic and look like real Moveworks answers (CommonMark with bold, lists, a
link, a fenced code block, citations and action buttons) so a developer sees every rendering path
without scripting anything. Citation positions are written inline as `{cN}` markers and turned
into `content_references` offsets (code points into the final text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("COMPLETED", "FAILED")
ACTION_TYPES = ("CALLBACK_ACTION", "URL_ACTION")


@dataclass
class Plan:
    """Everything needed to play one response."""

    text: str
    reasoning: list[str] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)  # {title, url, body?, offset}
    actions: list[dict[str, Any]] = field(default_factory=list)  # {type, label, url?}
    chunks: int | None = None  # number of MESSAGE snapshots (None = by word count)
    delay: float | None = None  # seconds between snapshots, overrides pacing
    status: str = "COMPLETED"
    followup: dict[str, Any] | None = None  # {text, delay}
    title: str | None = None  # AI title for an untitled conversation


@dataclass
class Script:
    """A queued answer from `POST /_sim/answers` / `sim.script_answer()`."""

    text: str = ""
    match: str | None = None
    identity: str | None = None
    reasoning: list[str] | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    chunks: int | None = None
    delay: float | None = None
    status: str = "COMPLETED"
    followup: dict[str, Any] | None = None
    times: int = 1

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        if not isinstance(self.text, str) or (not self.text and self.status == "COMPLETED"):
            raise ValueError("text is required")
        if not isinstance(self.times, int) or self.times < 1:
            raise ValueError("times must be a positive integer")
        if self.chunks is not None and (not isinstance(self.chunks, int) or self.chunks < 1):
            raise ValueError("chunks must be a positive integer")
        if self.delay is not None and (not isinstance(self.delay, (int, float)) or self.delay < 0):
            raise ValueError("delay must be a non-negative number")
        for c in self.citations:
            if not isinstance(c, dict) or not c.get("title") or not c.get("url"):
                raise ValueError("each citation needs title and url")
        for a in self.actions:
            if not isinstance(a, dict) or a.get("type") not in ACTION_TYPES or not a.get("label"):
                raise ValueError(f"each action needs type in {ACTION_TYPES} and a label")
            if a["type"] == "URL_ACTION" and not a.get("url"):
                raise ValueError("URL_ACTION needs url")
        if self.followup is not None and not (isinstance(self.followup, dict) and self.followup.get("text")):
            raise ValueError("followup needs text")

    def matches(self, question: str, identity: str) -> bool:
        if self.identity is not None and self.identity.lower() != identity.lower():
            return False
        return self.match is None or self.match.lower() in question.lower()

    def plan(self, question: str) -> Plan:
        text = self.text or "The assistant could not complete this request."
        return Plan(
            text=text,
            reasoning=list(self.reasoning) if self.reasoning is not None else ["Understanding the request", "Preparing the answer"],
            citations=[
                {"title": c["title"], "url": c["url"], "body": c.get("body", ""), "offset": c.get("offset", len(text))}
                for c in self.citations
            ],
            actions=[dict(a) for a in self.actions],
            chunks=self.chunks,
            delay=self.delay,
            status=self.status,
            followup=self.followup,
            title=_title(question),
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_MARKER = re.compile(r"\{c(\d+)\}")


def _with_markers(text: str, sources: list[tuple[str, str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip `{cN}` markers; citation N gets the offset where its (first) marker stood."""
    offsets: dict[int, int] = {}
    out, pos = [], 0
    for m in _MARKER.finditer(text):
        out.append(text[pos : m.start()])
        offsets.setdefault(int(m.group(1)), len("".join(out)))
        pos = m.end()
    out.append(text[pos:])
    clean = "".join(out)
    cites = [
        {"title": t, "url": u, "body": b, "offset": offsets.get(i + 1, len(clean))}
        for i, (t, u, b) in enumerate(sources)
    ]
    return clean, cites


def _title(question: str) -> str:
    words = question.strip().split()
    title = " ".join(words[:8])
    return (title[:1].upper() + title[1:])[:256] or "New conversation"


_PASSWORD = (
    ["Searching the IT knowledge base for password reset", "Checking your account status", "Summarizing the steps"],
    "Here's how to **reset your password**:\n\n"
    "1. Go to the [password portal](https://password.example.com) and sign in with your work email.\n"
    "2. Choose **Forgot password** and verify with your MFA device.{c1}\n"
    "3. Pick a new password with at least 14 characters, then sign out and back in everywhere.\n\n"
    "If your account is **locked**, it unlocks automatically after 30 minutes, or I can reset it for you now.{c2}",
    [
        ("How to reset your password", "https://kb.example.com/it/password-reset", "Step-by-step guide to resetting your corporate password."),
        ("Account lockout policy", "https://kb.example.com/it/lockout-policy", "Accounts lock after 5 failed attempts and unlock after 30 minutes."),
    ],
    [
        {"type": "CALLBACK_ACTION", "label": "Reset my password"},
        {"type": "URL_ACTION", "label": "Open password portal", "url": "https://password.example.com"},
    ],
)

_VPN: tuple[list[str], str, list[tuple[str, str, str]], list[dict[str, Any]]] = (
    ["Searching the IT knowledge base for VPN", "Checking the VPN service status"],
    "To connect to the **corporate VPN**:\n\n"
    "- Install *GlobalConnect* from the Self Service app.\n"
    "- Use the gateway `vpn.example.com` and sign in with SSO.{c1}\n\n"
    "On Linux or from a terminal you can connect with:\n\n"
    "```bash\n"
    "sudo openconnect --protocol=gp vpn.example.com --user \"$USER\"\n"
    "```\n\n"
    "The VPN service is currently **operational**. If it still fails, restart your network adapter and try again.",
    [("VPN setup guide", "https://kb.example.com/it/vpn", "How to install and use the corporate VPN client.")],
    [],
)

_PTO = (
    ["Looking up the time-off policy", "Checking your PTO balance", "Preparing the answer"],
    "You currently have **12 days** of paid time off available.{c1}\n\n"
    "To request time off:\n\n"
    "1. Open **Workday** and choose *Request Absence*.\n"
    "2. Select the dates and the *Vacation* type.\n"
    "3. Submit; your manager gets an approval request.\n\n"
    "Requests of more than 5 days should be submitted **two weeks in advance**.{c2}",
    [
        ("Paid time off policy", "https://hr.example.com/policies/pto", "Full-time employees accrue 20 days of PTO per year."),
        ("Requesting time off in Workday", "https://kb.example.com/hr/workday-absence", "How to submit an absence request."),
    ],
    [{"type": "CALLBACK_ACTION", "label": "Request PTO"}],
)

_LAPTOP = (
    ["Searching the hardware catalog", "Checking your current device"],
    "You're eligible for a **laptop refresh** every 3 years.{c1} Your options:\n\n"
    "- **MacBook Pro 14\"** (engineering, design)\n"
    "- **ThinkPad X1 Carbon** (standard)\n"
    "- **Dell Latitude 7450** (standard)\n\n"
    "Ordering takes about 5 business days; your old device must be returned within 2 weeks of delivery.",
    [("Hardware refresh policy", "https://kb.example.com/it/hardware-refresh", "Laptops are refreshed every three years.")],
    [
        {"type": "CALLBACK_ACTION", "label": "Order a new laptop"},
        {"type": "URL_ACTION", "label": "Browse the catalog", "url": "https://it.example.com/catalog"},
    ],
)

_TOPICS: list[tuple[tuple[str, ...], tuple[list[str], str, list[tuple[str, str, str]], list[dict[str, Any]]]]] = [
    (("password", "locked out", "unlock"), _PASSWORD),
    (("vpn",), _VPN),
    (("pto", "vacation", "time off", "holiday"), _PTO),
    (("laptop", "computer", "macbook"), _LAPTOP),
]


def default_plan(question: str) -> Plan:
    """Deterministic keyword answer; anything unknown gets a generic answer quoting the question."""
    q = question.lower()
    for keywords, (reasoning, text, sources, actions) in _TOPICS:
        if any(k in q for k in keywords):
            clean, cites = _with_markers(text, sources)
            return Plan(text=clean, reasoning=list(reasoning), citations=cites, actions=[dict(a) for a in actions], title=_title(question))
    quoted = " ".join(question.split())
    text = (
        f"You asked: *\"{quoted}\"*\n\n"
        "I couldn't find a specific article for that, but here is what I can do:\n\n"
        "- **Search** the company knowledge base for related articles.\n"
        "- **Open a ticket** with the right support team.\n"
        "- Answer questions about *passwords*, *VPN*, *PTO* or *laptops*.{c1}\n\n"
        "Try rephrasing your question with a few more details."
    )
    clean, cites = _with_markers(text, [("Employee help center", "https://help.example.com", "Start here for IT, HR and facilities questions.")])
    return Plan(
        text=clean,
        reasoning=["Understanding your question", "Searching the knowledge base", "Composing the answer"],
        citations=cites,
        title=_title(question),
    )


def callback_plan(label: str) -> Plan:
    """The short confirmation a button press (callback input) gets."""
    return Plan(text=f"Done: {label}", reasoning=[f"Running \u201c{label}\u201d"])


def split_snapshots(text: str, chunk_words: int, chunks: int | None) -> list[str]:
    """Cumulative prefixes of `text`, growing a few words at a time; the last is the full text."""
    tokens = re.findall(r"\s*\S+\s*", text) or [text]
    if chunks is None:
        size = max(1, chunk_words)
        ends = list(range(size, len(tokens), size)) + [len(tokens)]
    else:
        n = max(1, min(chunks, len(tokens)))
        ends = [round(len(tokens) * (i + 1) / n) for i in range(n)]
    snaps, seen = [], set()
    for e in ends:
        s = "".join(tokens[:e]).rstrip() if e < len(tokens) else text
        if s and s not in seen:
            seen.add(s)
            snaps.append(s)
    return snaps or [text]
