"""The interfaces between the core and the platform adapters.

An adapter gives the core `ReplySink`s (one per answer) and, for the generic post-then-edit
strategy, `MessageOps` (post/edit/delete of one platform message). Everything else - throttling,
coalescing, splitting, budgets, retries of the final text - lives in the core.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from bridge.models import Answer, Capabilities, ChatUser, Employee, Frame, ThreadKey


class ReplySink(Protocol):
    """The visible surface of one answer in one thread, driven by `StreamRenderer`.

    The renderer guarantees: calls never overlap, `show` is throttled to the declared
    capabilities, identical frames are skipped, and exactly one of `finish`/`fail` ends the sink.
    """

    capabilities: Capabilities
    budget_key: str  # writes of every sink with the same key share one rate budget

    async def show(self, frame: Frame) -> bool | None:
        """Display an intermediate frame; may raise `RateLimited` (the renderer backs off).
        Return False when nothing was written (the frame is not worth showing on this
        platform), so the write costs no interval and no budget token."""

    async def finish(self, answer: Answer) -> list[str]:
        """Display the exact final answer; retries until it is visible. Returns message ids."""

    async def fail(self, message: str) -> None:
        """End the reply with a short, kind message (keeping any text already shown)."""

    # Optional: `def checkpoint(self) -> dict | None`, JSON-able state another process needs to
    # close this reply in place if this one dies mid-answer (an open native stream's ids). The
    # renderer stores it whenever it changes; see `ChatAdapter.close_reply`.


class MessageOps(Protocol):
    """One platform's message primitives, used by the core `EditingSink`.

    `text` is Markdown; the adapter converts it. `answer` is passed with the last part of a final
    answer so the adapter can attach citations, action and feedback buttons.
    Errors: raise `bridge.errors.RateLimited` (with retry_after), `DeliveryFailed`.
    """

    async def post(self, text: str, *, answer: Answer | None = None) -> str: ...

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None: ...

    async def delete(self, message_id: str) -> None: ...


@runtime_checkable
class ChatAdapter(Protocol):
    """A chat platform plugged into the bridge."""

    platform: str

    async def open_reply(
        self, thread: ThreadKey, address: dict[str, Any], *, user: ChatUser | None, proactive: bool
    ) -> ReplySink:
        """A sink writing into `thread`. `proactive` is True for poller deliveries (no live turn)."""

    async def open_direct(self, employee: Employee) -> tuple[ThreadKey, dict[str, Any]] | None:
        """Open (or find) the employee's direct chat with the bot; None if impossible."""

    async def resolve_email(self, user: ChatUser) -> str | None:
        """The employee's email from the platform directory (cached by the caller)."""

    # Optional: `async def close_reply(self, thread, address, checkpoint, message) -> bool`: after
    # a crash, end the reply a sink's `checkpoint()` describes with `message`, in place (stop the
    # stream that would otherwise keep spinning). False when it cannot; the relay then posts it.
