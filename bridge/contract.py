"""The contract between the core and a chat platform: everything an adapter must or may provide,
and everything the core offers it. A new platform is a package with `build(core) -> ChatAdapter`.

Three parts:

* `Core`: the small set of core services an adapter is handed (submit a question, record
  feedback, dedupe an inbound delivery, ask whether someone follows a thread, a namespaced
  key/value store, shared write budgets, metrics). Adapters never see the store or the relay.
* `ChatAdapter`: three required methods (`open_reply`, `open_direct`, `resolve_email`) and
  optional hooks with documented no-op defaults. The core checks `isinstance(adapter,
  ChatAdapter)` once, when the adapter is registered, and never probes for methods.
* `ReplySink` (one answer's visible surface, driven by the core's renderer) and `MessageOps`
  (one platform message's post/edit/delete, for the core's post-then-edit `EditingSink`).
  A native sink may decline before it showed anything (`StreamDeclined`): the core then
  continues the reply by edits (`bridge.answers.sinks.WithFallback`).

Identifiers (`ThreadKey` fields, `address`, message ids, checkpoints) are opaque to the core: it
stores and hands them back, and never parses them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bridge.errors import AttachmentRefused
from bridge.models import (
    Answer,
    Attachment,
    Capabilities,
    ChatUser,
    Employee,
    FeedbackTarget,
    FieldInput,
    FormStep,
    Frame,
    Inbound,
    MessageRef,
    Notification,
    Rate,
    ThreadKey,
)

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.mechanisms.ratelimit import WriteBudget
    from bridge.process.config import Settings

Address = dict[str, Any]  # adapter-private, JSON-serialisable: where to write in a thread
CheckLine = tuple[str, bool, str]  # one `doctor` line: (what, ok, detail)


# --- what the core offers an adapter --------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackAck:
    """What to show whoever clicked a rating; `recorded` says whether Moveworks took it
    (platforms that confirm ratings themselves show only refusals and failures)."""

    text: str
    recorded: bool


class KeyValue(Protocol):
    """One namespace of the store's key/value table (installations, references, targets),
    shared by every process on the store."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str) -> None: ...

    async def delete(self, key: str | None = None) -> None:
        """Delete `key`, or the whole namespace when None."""

    async def items(self, prefix: str = "") -> list[tuple[str, str]]: ...

    async def prune(self, older_than: float) -> int:
        """Drop entries not written for `older_than` seconds; returns how many."""


class Core(Protocol):
    """The core services an adapter receives from `build(core)`."""

    settings: Settings

    async def submit(self, inbound: Inbound) -> bool:
        """Accept a question (or button press): it is stored durably (deduplicated across
        redeliveries, processes and restarts) before this returns, so acknowledge the platform
        only afterwards; the answer streams later, from whichever live process takes it. False
        for a redelivery already accepted."""

    async def feedback(
        self, user: ChatUser, target: FeedbackTarget, helpful: bool, comment: str | None = None
    ) -> FeedbackAck:
        """Send a rating (and the comment typed with it) to Moveworks as the asker; never raises."""

    async def open_form(self, user: ChatUser, ref: MessageRef, where: str) -> FormStep:
        """The form a MODAL_ACTION offers (`where` locates the action in message `ref`), read
        fresh, for the person who was answered only. Never raises: failures are a `notice`."""

    async def refresh_form(self, user: ChatUser, session: str, values: dict[str, FieldInput]) -> FormStep:
        """A `triggers_refresh` field changed: the form re-evaluated with everything entered."""

    async def submit_form(self, user: ChatUser, session: str, values: dict[str, FieldInput]) -> FormStep:
        """Check and submit the form. Missing or refused fields come back as `errors` on the
        form; on success the acknowledgement is posted in the thread and `done` is set."""

    async def choose_help_item(
        self, user: ChatUser, thread: ThreadKey, address: Address, ref: MessageRef, where: str
    ) -> str | None:
        """A get-help menu item other than a form was picked: a TEXT item's text or a URL item's
        link is posted in the thread, a CALLBACK item is asked like its button. Returns a
        sentence to show only to the person when nothing was done (not theirs, expired)."""

    def stop_answer(self, thread: ThreadKey) -> bool:
        """The person pressed the platform's Stop for the answer streaming in `thread`: the
        Moveworks stream is closed at once and the reply ends with a short "Stopped.". False
        when no answer was streaming there (in this process)."""

    async def recent_notifications(self, user: ChatUser, limit: int = 5) -> list[Notification]:
        """The person's latest notifications from the poller (newest first), for a home page."""

    async def claim_inbound(self, platform: str, dedupe_id: str) -> bool:
        """True the first time an inbound delivery is seen, across processes and restarts (for
        replies the adapter writes itself; `submit` dedupes questions on its own)."""

    async def follows(self, thread: ThreadKey, user_id: str) -> bool:
        """Is the bot talking with this user in this thread (so they need no new mention)?"""

    async def end_threads(self, platform: str, channel: str, thread: str | None = None) -> None:
        """The bot can no longer write into `channel` (or one `thread` of it): stop mapping
        conversations there, so notifications take another route."""

    def kv(self, namespace: str) -> KeyValue:
        """A persistent key/value namespace, shared by every process on the same store."""

    def budget(self, key: str, rate: Rate | None) -> WriteBudget:
        """The write budget shared by every reply with the same key (a workspace, a tenant)."""

    def count_write(self, platform: str, op: str) -> None:
        """Count one platform API call (Prometheus `bridge_platform_writes_total`)."""

    def count_rate_limited(self, platform: str) -> None:
        """Count one 429 from the platform that the core did not see (it counts the ones
        raised through a `ReplySink`)."""


# --- what an adapter's replies implement ----------------------------------------------------------


class ReplySink(ABC):
    """The visible surface of one answer in one thread, driven by the core's `StreamRenderer`.

    The renderer guarantees: calls never overlap, `show` is throttled to `capabilities`,
    identical frames are skipped, and exactly one of `finish`/`fail` ends the sink.
    Errors: `bridge.errors.PlatformRateLimited` (the renderer backs off), `PlatformError`
    (`permanent` when retrying cannot help), `StreamExpired` (the sink switched strategy: show
    the latest frame again), `StreamDeclined` (native streaming refused before anything was
    shown: the core continues by edits), `UserCanceled` (the user pressed Stop).
    """

    capabilities: Capabilities
    budget_key: str  # every sink with the same key shares one write budget

    @abstractmethod
    async def show(self, frame: Frame) -> bool | None:
        """Display an intermediate frame. Return False when nothing was written (not worth
        showing here), so the frame costs no interval and no budget token."""

    @abstractmethod
    async def finish(self, answer: Answer) -> list[str]:
        """Display the exact final answer; retries until it is visible. Returns message ids."""

    @abstractmethod
    async def fail(self, message: str) -> None:
        """End the reply with a short, kind message (keeping any text already shown)."""

    def checkpoint(self) -> dict[str, Any] | None:
        """JSON-able state another process needs to close this reply in place if this one dies
        mid-answer (an open native stream's ids); stored whenever it changes. Default: none."""
        return None

    def resume(self, checkpoint: dict[str, Any]) -> bool:
        """After a crash, in a new sink of the same thread: take over the reply a dead sink's
        `checkpoint()` describes, so `fail` ends it in place. False (the default) when this sink
        cannot; `fail` then writes a new message."""
        return False


class MessageOps(Protocol):
    """One platform's message primitives, used by the core `EditingSink`.

    `text` is Markdown; the adapter converts it. `answer` comes with the last part of a final
    answer so the adapter can attach citations, action and feedback buttons.
    """

    async def post(self, text: str, *, answer: Answer | None = None) -> str: ...

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None: ...

    async def delete(self, message_id: str) -> None: ...


# --- the adapter ----------------------------------------------------------------------------------


class ChatAdapter(ABC):
    """A chat platform plugged into the bridge."""

    platform: ClassVar[str]  # "slack", "teams", …: the `ThreadKey.platform` of its threads
    # Named optional capabilities, read once by the core:
    shows_forms: ClassVar[bool] = False  # renders MODAL_ACTIONs as native forms (open_form…)
    accepts_files: ClassVar[bool] = False  # `download` works: attachments go to Moveworks
    # Threads its SDK needs in the default executor (botbuilder sends from a thread pool); the
    # `serve` process sizes the pool for the largest need.
    worker_threads: ClassVar[int] = 0

    # --- required ---------------------------------------------------------------------------

    @abstractmethod
    async def open_reply(
        self, thread: ThreadKey, address: Address, *, user: ChatUser | None, proactive: bool
    ) -> ReplySink:
        """A sink writing into `thread`. `proactive` is True for poller deliveries (no live turn)."""

    @abstractmethod
    async def open_direct(self, employee: Employee) -> tuple[ThreadKey, Address] | None:
        """Open (or find) the employee's direct chat with the bot; None if impossible."""

    @abstractmethod
    async def resolve_email(self, user: ChatUser) -> str | None:
        """The employee's email from the platform directory (the core caches it)."""

    # --- optional, with no-op defaults ------------------------------------------------------

    async def download(self, attachment: Attachment, limit: int) -> bytes:
        """The bytes of an employee's attachment, fetched with the bot's credentials; at most
        `limit` bytes (raise `bridge.errors.AttachmentTooLarge` beyond, `AttachmentRefused` when it cannot be
        fetched). Only called when `accepts_files`."""
        raise AttachmentRefused("this platform does not download attachments")

    def mount(self, app: web.Application) -> None:
        """Add the adapter's HTTP routes to the `serve` application. Default: none."""

    async def start(self, *, inbound: bool) -> None:
        """Connect. `inbound=False` (the `poll` worker) sends only and must not receive
        questions (no Socket Mode connection). Default: nothing to start."""

    async def stop_inbound(self) -> None:
        """First step of a graceful shutdown: receive no new questions while answers finish.
        Safe to call more than once. Default: nothing (HTTP routes stop with the server)."""

    async def stop(self) -> None:
        """Release connections and background tasks. Default: nothing."""

    async def check(self) -> list[CheckLine]:
        """`moveworks-bridge doctor` lines (never secrets). Default: none."""
        return []

    async def close_reply(
        self, thread: ThreadKey, address: Address, checkpoint: dict[str, Any], message: str
    ) -> bool:
        """After a crash: end the reply a sink's `checkpoint()` describes with `message`, in
        place (stop a stream that would otherwise keep spinning). False when it cannot; the
        core then posts `message` in the thread. Default: cannot."""
        return False

    def reply_thread(
        self, thread: ThreadKey, address: Address, message_ids: tuple[str, ...]
    ) -> tuple[ThreadKey, Address] | None:
        """Where a reply to messages just posted into a flat chat continues, when that is a
        thread of its own (Slack answers each top-level DM message in its thread), so it can be
        mapped to the same conversation. Default: replies stay in `thread`."""
        return None
