"""What the simulated assistant says: scripted answers (admin API) and keyword defaults.

Defaults are deterministic and look like real Moveworks answers so a developer sees every rendering
path without scripting anything: MARKDOWN_TEXT with bold, lists, Slack-style `<url|label>` links,
`:emoji:` codes and a fenced code block; citations whose titles are MARKDOWN_TEXT links, several
at one offset, the same document cited twice; CALLBACK and URL actions, and forms offered as URL
actions that all read "Complete this request". Citation positions are written inline as `{cN}`
markers and turned into `content_references` offsets (code points into the final text). Scripted
answers are COMMONMARK_TEXT unless they say otherwise (`content_type`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

STATUSES = ("COMPLETED", "FAILED")
ACTION_TYPES = ("CALLBACK_ACTION", "URL_ACTION")
TEXT_TYPES = ("COMMONMARK_TEXT", "MARKDOWN_TEXT", "PLAIN_TEXT")


def _is_url(value: Any) -> bool:
    """An absolute URL, as the spec's `format: uri` for citation and action URLs wants."""
    if not isinstance(value, str) or any(ch.isspace() for ch in value):
        return False
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


@dataclass
class Plan:
    """Everything needed to play one response."""

    text: str
    reasoning: list[str] = field(default_factory=list)
    # {title, url, body?, offset, title_type?, body_type?} (types: a Content type, PLAIN_TEXT /
    # COMMONMARK_TEXT by default)
    citations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # {type, label, url?}
    chunks: int | None = None  # number of MESSAGE snapshots (None = by word count)
    delay: float | None = None  # seconds between snapshots, overrides pacing
    status: str = "COMPLETED"
    followup: dict[str, Any] | None = None  # {text, delay}
    title: str | None = None  # AI title for an untitled conversation
    content_type: str = "COMMONMARK_TEXT"  # of the answer text (defaults are MARKDOWN_TEXT)
    # -- /rest/v1 flows (see flows.py) --
    # actions may also be {type: "MODAL_ACTION", label, form} and CALLBACK_ACTIONs may carry
    # {intent, data}; `handoff` is the get-help menu (categories whose items hold such actions)
    handoff: list[dict[str, Any]] | None = None
    form_context: dict[str, Any] = field(default_factory=dict)  # what an offered form prefills from
    empty: bool = False  # live-agent turn: RESPONSE_CREATED, then COMPLETED with no outputs
    late: dict[str, Any] | None = None  # {response_id, text}: stored in history under an earlier response
    agent_echo: str | None = None  # the live agent answers this after `live_agent_delay`


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
    content_type: str = "COMMONMARK_TEXT"

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
        if self.content_type not in TEXT_TYPES:
            raise ValueError(f"content_type must be one of {TEXT_TYPES}")
        for c in self.citations:
            if not isinstance(c, dict) or not c.get("title") or not c.get("url"):
                raise ValueError("each citation needs title and url")
            if not _is_url(c["url"]):
                raise ValueError("a citation url must be an absolute URL")
            if c.get("title_type", "PLAIN_TEXT") not in TEXT_TYPES:
                raise ValueError(f"a citation title_type must be one of {TEXT_TYPES}")
        for a in self.actions:
            if not isinstance(a, dict) or a.get("type") not in ACTION_TYPES or not a.get("label"):
                raise ValueError(f"each action needs type in {ACTION_TYPES} and a label")
            if a["type"] == "URL_ACTION" and not _is_url(a.get("url")):
                raise ValueError("URL_ACTION needs url (an absolute URL)")
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
                {"title": c["title"], "url": c["url"], "body": c.get("body", ""), "offset": c.get("offset", len(text)),
                 "title_type": c.get("title_type", "PLAIN_TEXT")}
                for c in self.citations
            ],
            actions=[dict(a) for a in self.actions],
            chunks=self.chunks,
            delay=self.delay,
            status=self.status,
            followup=self.followup,
            title=_title(question),
            content_type=self.content_type,
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_MARKER = re.compile(r"\{c(\d+)\}")


def _with_markers(text: str, sources: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip `{cN}` markers; citation N gets the offset where its (first) marker stood."""
    offsets: dict[int, int] = {}
    out, pos = [], 0
    for m in _MARKER.finditer(text):
        out.append(text[pos : m.start()])
        offsets.setdefault(int(m.group(1)), len("".join(out)))
        pos = m.end()
    out.append(text[pos:])
    clean = "".join(out)
    cites = [dict(source, offset=offsets.get(i + 1, len(clean))) for i, source in enumerate(sources)]
    return clean, cites


def _title(question: str) -> str:
    words = question.strip().split()
    title = " ".join(words[:8])
    return (title[:1].upper() + title[1:])[:256] or "New conversation"


def _source(title: str, url: str, body: str) -> dict[str, Any]:
    """A citation as Moveworks sends them: MARKDOWN_TEXT title that is a bold Slack-style link to
    the document itself, MARKDOWN_TEXT body."""
    return {
        "title": f"**<{url}|{title}>**", "title_type": "MARKDOWN_TEXT",
        "url": url, "body": body + "\n", "body_type": "MARKDOWN_TEXT",
    }


@dataclass(frozen=True)
class _Topic:
    keywords: tuple[str, ...]
    reasoning: tuple[str, ...]
    text: str  # MARKDOWN_TEXT with `{cN}` citation markers (N counts from 1 into `sources`)
    sources: tuple[dict[str, Any], ...]
    actions: tuple[dict[str, Any], ...] = ()


_RESET_GUIDE = "https://kb.example.com/it/password-reset"
_FORMS = "https://itsm.example.com/sp?id=sc_cat_item&sys_id="

# Real answers are MARKDOWN_TEXT: CommonMark-ish emphasis and lists, Slack-style `<url|label>` links
# and `:emoji:` codes. One document is often cited once per section (same URL, several citation
# ids), several citations can share one offset, and forms are offered as URL actions that all read
# "Complete this request", each opening the form a citation names.
_TOPICS: tuple[_Topic, ...] = (
    _Topic(
        ("password", "locked out", "unlock"),
        ("Searching the IT knowledge base for password reset", "Checking your account status", "Summarizing the steps"),
        "Here's how to **reset your password** :closed_lock_with_key:\n\n"
        "1. Go to the <https://password.example.com|password portal> and sign in with your work email.{c1}\n"
        "2. Choose **Forgot password** and verify with your MFA device.{c2}{c3}\n"
        "3. Pick a new password with at least 14 characters, then sign out and back in everywhere.\n\n"
        ":warning: If your account is **locked**, it unlocks automatically after 30 minutes, or I can reset it for you now.{c4}",
        (
            _source("How to reset your password", _RESET_GUIDE, "Step-by-step guide to resetting your corporate password."),
            _source("How to reset your password", _RESET_GUIDE, "Verify your identity with your MFA device before choosing a new password."),
            _source("Setting up multi-factor authentication", "https://kb.example.com/it/mfa", "Register Okta Verify or a hardware key for MFA."),
            _source("Account lockout policy", "https://kb.example.com/it/lockout-policy", "Accounts lock after 5 failed attempts and unlock after 30 minutes."),
        ),
        (
            {"type": "CALLBACK_ACTION", "label": "Reset my password"},
            {"type": "URL_ACTION", "label": "Open password portal", "url": "https://password.example.com"},
        ),
    ),
    _Topic(
        ("vpn",),
        ("Searching the IT knowledge base for VPN", "Checking the VPN service status"),
        "To connect to the **corporate VPN** :globe_with_meridians:\n\n"
        "- Install *GlobalConnect* from <https://selfservice.example.com/apps/globalconnect|Self Service>.\n"
        "- Use the gateway `vpn.example.com` and sign in with SSO.{c1}\n\n"
        "On Linux or from a terminal you can connect with:\n\n"
        "```bash\n"
        "sudo openconnect --protocol=gp vpn.example.com --user \"$USER\"\n"
        "```\n\n"
        ":white_check_mark: The VPN service is currently **operational**. If it still fails, restart your network adapter and try again.{c2}",
        (
            _source("VPN setup guide", "https://kb.example.com/it/vpn", "How to install and use the corporate VPN client."),
            _source("VPN setup guide", "https://kb.example.com/it/vpn", "Troubleshooting: restart the network adapter, then reconnect."),
        ),
    ),
    _Topic(
        ("pto", "vacation", "time off", "holiday"),
        ("Looking up the time-off policy", "Checking your PTO balance", "Preparing the answer"),
        "You currently have **12 days** of paid time off available. :palm_tree:{c1}\n\n"
        "To request time off:\n\n"
        "1. Open <https://workday.example.com|Workday> and choose *Request Absence*.{c2}\n"
        "2. Select the dates and the *Vacation* type.\n"
        "3. Submit; your manager gets an approval request.\n\n"
        "Requests of more than 5 days should be submitted **two weeks in advance**.{c3}",
        (
            _source("Paid time off policy", "https://hr.example.com/policies/pto", "Full-time employees accrue 20 days of PTO per year."),
            _source("Requesting time off in Workday", "https://kb.example.com/hr/workday-absence", "How to submit an absence request."),
            _source("Paid time off policy", "https://hr.example.com/policies/pto", "Absences of more than 5 days need two weeks' notice."),
        ),
        ({"type": "CALLBACK_ACTION", "label": "Request PTO"},),
    ),
    _Topic(
        ("laptop", "computer", "macbook"),
        ("Searching the hardware catalog", "Checking your current device"),
        "You're eligible for a **laptop refresh** every 3 years.{c1} Your options :computer:\n\n"
        "- **MacBook Pro 14\"** (engineering, design)\n"
        "- **ThinkPad X1 Carbon** (standard)\n"
        "- **Dell Latitude 7450** (standard)\n\n"
        "Ordering takes about 5 business days; your old device must be returned within 2 weeks of delivery.",
        (_source("Hardware refresh policy", "https://kb.example.com/it/hardware-refresh", "Laptops are refreshed every three years."),),
        (
            {"type": "CALLBACK_ACTION", "label": "Order a new laptop"},
            {"type": "URL_ACTION", "label": "Browse the catalog", "url": "https://it.example.com/catalog"},
        ),
    ),
    _Topic(
        ("software", "access", "install", "license", "form"),
        ("Searching the service catalog", "Matching request forms"),
        "I found a few **request forms** that fit :clipboard:{c1}{c2}{c3}\n\n"
        "**Software installation request**\n"
        "Request approved software or a license for your device.\n\n"
        "**Application access request**\n"
        "Ask for access to a business application such as Salesforce or Jira.\n\n"
        "**Admin rights request**\n"
        "Temporary local administrator rights, approved by your manager.\n\n"
        "Choose *Complete this request* on the form you need; IT usually answers within one business day. :hourglass_flowing_sand:",
        (
            _source("Software installation request", _FORMS + "software_install", "Request approved software or a license for your device."),
            _source("Application access request", _FORMS + "app_access", "Ask for access to a business application."),
            _source("Admin rights request", _FORMS + "admin_rights", "Temporary local administrator rights."),
        ),
        tuple(
            {"type": "URL_ACTION", "label": "Complete this request", "url": _FORMS + form}
            for form in ("software_install", "app_access", "admin_rights")
        ),
    ),
)


def default_plan(question: str) -> Plan:
    """Deterministic keyword answer; anything unknown gets a generic answer quoting the question."""
    q = question.lower()
    for topic in _TOPICS:  # whole words: "laptop" is not about "pto"
        if any(re.search(rf"\b{re.escape(k)}", q) for k in topic.keywords):
            clean, cites = _with_markers(topic.text, list(topic.sources))
            return Plan(text=clean, reasoning=list(topic.reasoning), citations=cites,
                        actions=[dict(a) for a in topic.actions], title=_title(question),
                        content_type="MARKDOWN_TEXT")
    quoted = " ".join(question.split())
    text = (
        f"You asked: *\"{quoted}\"* :thinking_face:\n\n"
        "I couldn't find a specific article for that, but here is what I can do:\n\n"
        "- **Search** the <https://help.example.com|employee help center> for related articles.\n"
        "- **Open a ticket** with the right support team.\n"
        "- Answer questions about *passwords*, *VPN*, *PTO*, *laptops* or *software requests*.{c1}\n\n"
        "Try rephrasing your question with a few more details."
    )
    clean, cites = _with_markers(
        text, [_source("Employee help center", "https://help.example.com", "Start here for IT, HR and facilities questions.")]
    )
    return Plan(
        text=clean,
        reasoning=["Understanding your question", "Searching the knowledge base", "Composing the answer"],
        citations=cites,
        title=_title(question),
        content_type="MARKDOWN_TEXT",
    )


def callback_plan(label: str) -> Plan:
    """The short confirmation a button press (callback input) gets."""
    return Plan(text=f":white_check_mark: Done: {label}", reasoning=[f"Running \u201c{label}\u201d"],
                content_type="MARKDOWN_TEXT")


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
