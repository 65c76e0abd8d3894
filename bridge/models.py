"""Platform-neutral values that flow between adapters, the relay, the renderer and the poller.

Adapters convert their platform's payloads into these on the way in, and render these into
their platform's format on the way out; the core never sees a Slack or Teams object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.moveworks.models import Action, HelpCategory, MessageRef, Modal

__all__ = ["Action", "HelpCategory", "MessageRef", "Modal"]  # re-exported for adapters


@dataclass(frozen=True)
class ThreadKey:
    """Where an answer lives: one chat thread (Slack thread, Teams reply chain or chat)."""

    platform: str  # "slack" | "teams" | "console"
    workspace: str  # Slack team id, Teams tenant id ("" when the platform has none)
    channel: str  # Slack channel id, Teams conversation id (without ";messageid=")
    thread: str = ""  # Slack thread_ts, Teams reply-chain root id; "" for flat chats

    @property
    def lock_key(self) -> str:
        """Serialises everything written into this thread (answers and events)."""
        return f"{self.platform}|{self.workspace}|{self.channel}|{self.thread}"


@dataclass(frozen=True)
class ChatUser:
    platform: str
    workspace: str
    user_id: str
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Attachment:
    """A file an employee attached to a question, as the platform described it. `source` is
    adapter-private (URL, ids): the core hands it back to `ChatAdapter.download`."""

    name: str
    content_type: str | None = None
    size: int | None = None
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inbound:
    """One question (or button press) from an employee, already normalised by an adapter."""

    dedupe_id: str  # the same for every redelivery of one message (Slack retries, Teams re-sends)
    thread: ThreadKey
    user: ChatUser
    text: str = ""
    # A Moveworks CALLBACK_ACTION pressed in chat, and the conversation it belongs to.
    callback_id: str | None = None
    callback_conversation_id: str | None = None
    callback_label: str | None = None
    # Adapter-private, JSON-serialisable data needed to write into the thread later
    # (Slack channel/thread_ts, Teams conversation-reference key). Stored with the link.
    address: dict[str, Any] = field(default_factory=dict)
    direct: bool = False  # a DM / personal chat
    files: tuple[Attachment, ...] = ()  # sent to Moveworks with the question (Files API)
    # Earlier messages of the thread the bot was brought into ("Name: text" lines, oldest first,
    # bot messages marked), sent with the question so "can you help with this?" works.
    context: str = ""


@dataclass(frozen=True)
class Rate:
    """`count` writes per `per` seconds; `burst` of them at once (default a tenth)."""

    count: int
    per: float
    burst: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a reply surface can do; declared by each adapter, never probed."""

    max_text_len: int  # markdown characters per platform message (headroom for conversion included)
    edit: bool = True  # messages can be edited in place
    native_stream: bool = False  # the sink streams natively (Slack chat.*Stream, Teams streaming)
    min_edit_interval: float = 1.0  # seconds between two writes to the same reply
    write_budget: Rate | None = None  # shared by every answer in one workspace/tenant
    # Do new messages count against write_budget, or only edits? Slack's chat.postMessage is
    # not a Tier 3 call, so under load a first post must not wait behind other answers' edits.
    budget_posts: bool = True


@dataclass(frozen=True)
class CitationLink:
    number: int  # the [n] shown in the text
    title: str
    url: str | None
    snippet: str = ""


@dataclass(frozen=True)
class FeedbackTarget:
    """Everything a feedback button needs to call Moveworks submit-feedback."""

    conversation_id: str
    response_id: str
    message_id: str
    helpful: str | None
    unhelpful: str | None


@dataclass(frozen=True)
class Answer:
    """The exact final content of one reply, platform-neutral."""

    text: str  # Markdown; citation markers "[n]" already inserted
    citations: tuple[CitationLink, ...] = ()
    actions: tuple[Action, ...] = ()
    feedback: FeedbackTarget | None = None
    conversation_id: str | None = None
    response_id: str | None = None
    message_ids: tuple[str, ...] = ()
    ai_generated: bool = True
    help_menu: tuple[HelpCategory, ...] = ()  # the get-help menu, items located by `where`
    sender: Sender | None = None  # a human wrote this (a live agent): show who, no AI label


@dataclass(frozen=True)
class Sender:
    """A person writing through Moveworks (a live agent), shown as the message's author."""

    name: str
    avatar_url: str | None = None


# What an adapter hands the core for one form field, before the core converts it to the
# documented `values` shape: text (TEXT, DATE `YYYY-MM-DD`, DATETIME ISO-8601, single CHOICE),
# several values (multi CHOICE), a bool (BOOLEAN), attachments (FILE), or None (left empty).
FieldInput = str | list[str] | bool | list[Attachment] | None


@dataclass(frozen=True)
class FormStep:
    """The outcome of opening, refreshing or submitting a form, for the adapter to show.

    Exactly one of: `form` (show it, or replace the one shown; `errors` then names the fields
    to mark, by field name, "" for the form as a whole), `done` (submitted: close the form; the
    acknowledgement is already in the thread) or `notice` (close the form and tell the person
    this short sentence: not theirs, expired, Moveworks failed)."""

    session: str = ""  # opaque token for refresh/submit of this form
    form: Modal | None = None
    errors: dict[str, str] = field(default_factory=dict)
    done: bool = False
    notice: str | None = None


@dataclass(frozen=True)
class Frame:
    """An intermediate view of a streaming answer: the answer so far and the current step."""

    text: str  # cumulative Markdown of the answer so far ("" while reasoning)
    status: str | None = None  # current reasoning step, e.g. "Looking up your ticket"


@dataclass(frozen=True)
class ThreadLink:
    """A chat thread + employee mapped to one Moveworks conversation (store row)."""

    id: int
    thread: ThreadKey
    user_id: str
    identity: str  # Moveworks identity (employee email, or "" for the single service identity)
    conversation_id: str
    address: dict[str, Any]
    active: bool = True


@dataclass(frozen=True)
class Employee:
    platform: str
    workspace: str
    user_id: str
    email: str | None
    name: str | None
    last_active_at: float | None


@dataclass(frozen=True)
class Notification:
    """One event the poller handled for a person: when, a preview, and what became of it."""

    created_at: float | None
    preview: str
    status: str  # "sent", "skipped", "retry", "claimed"
