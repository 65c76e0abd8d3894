"""Test doubles at the platform edge for the spine tests: a recording
platform (MessageOps + ChatAdapter) whose message state a test can read back, and scripted
Moveworks stream events for renderer tests that need exact timing (on the discrete-event clock
of bridge.testing.clock)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from bridge.answers.sinks import EditingSink
from bridge.contract import ChatAdapter
from bridge.errors import PlatformRateLimited
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Answer, Capabilities, ChatUser, Employee, Rate, ThreadKey
from bridge.moveworks.models import (
    Citation,
    ContentReference,
    Feedback,
    Message,
    OutputDelta,
    ReasoningMessage,
    Response,
    ResponseCompleted,
    ResponseCreated,
)
from bridge.testing.clock import FakeClock


@dataclass
class PlatformMessage:
    id: str
    text: str
    answer: Answer | None = None
    edits: int = 0


@dataclass
class RecordingPlatform:
    """A chat platform that records every write with its virtual time."""

    clock: FakeClock | None = None
    messages: dict[str, PlatformMessage] = field(default_factory=dict)
    calls: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, op, id, text)
    rate_limit_next: int = 0
    retry_after: float = 2.0
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def _t(self) -> float:
        return self.clock() if self.clock else 0.0

    def _maybe_limit(self) -> None:
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            self.calls.append((self._t(), "429", "", ""))
            raise PlatformRateLimited(retry_after=self.retry_after)

    def visible(self) -> str:
        """Everything the user sees, message after message."""
        return "\n".join(m.text for m in self.messages.values())


class RecordingOps:
    def __init__(self, platform: RecordingPlatform, thread: str = "t") -> None:
        self.platform = platform
        self.thread = thread

    async def post(self, text: str, *, answer: Answer | None = None) -> str:
        self.platform._maybe_limit()
        message_id = f"{self.thread}-m{next(self.platform._ids)}"
        self.platform.messages[message_id] = PlatformMessage(message_id, text, answer)
        self.platform.calls.append((self.platform._t(), "post", message_id, text))
        return message_id

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None:
        self.platform._maybe_limit()
        message = self.platform.messages[message_id]
        message.text, message.answer = text, answer
        message.edits += 1
        self.platform.calls.append((self.platform._t(), "edit", message_id, text))

    async def delete(self, message_id: str) -> None:
        self.platform.messages.pop(message_id, None)
        self.platform.calls.append((self.platform._t(), "delete", message_id, ""))


class RecordingAdapter(ChatAdapter):
    """A ChatAdapter over RecordingPlatform, one ops object per thread."""

    platform = "rec"

    def __init__(self, budgets: Budgets, caps: Capabilities | None = None, clock: FakeClock | None = None,
                 emails: dict[str, str] | None = None) -> None:
        self.budgets = budgets
        self.caps = caps or Capabilities(max_text_len=4000, min_edit_interval=1.0, write_budget=Rate(50, 60))
        self.clock = clock
        self.threads: dict[str, RecordingPlatform] = {}
        self.emails = emails or {}
        self.lookups = 0

    def thread(self, key: ThreadKey) -> RecordingPlatform:
        return self.threads.setdefault(key.lock_key, RecordingPlatform(clock=self.clock))

    async def open_reply(self, thread: ThreadKey, address: dict, *, user: ChatUser | None, proactive: bool):
        ops = RecordingOps(self.thread(thread), thread.thread or thread.channel)
        budget = self.budgets.get(f"rec:{thread.workspace}", self.caps.write_budget)
        sink = EditingSink(ops, self.caps, budget, f"rec:{thread.workspace}",
                           sleep=self.clock.sleep if self.clock else asyncio.sleep)
        return sink

    async def open_direct(self, employee: Employee):
        return ThreadKey("rec", employee.workspace, f"dm-{employee.user_id}", ""), {"dm": True}

    async def resolve_email(self, user: ChatUser) -> str | None:
        self.lookups += 1
        return self.emails.get(user.user_id)


def scripted_stream(clock: FakeClock, *, text: str, duration: float, chunks: int = 20,
                    reasoning: tuple[str, ...] = ("Searching",), citations: bool = True):
    """Moveworks-like stream events: reasoning, `chunks` cumulative snapshots over `duration`."""

    async def gen():
        response = Response("resp_1", "conv_1", "IN_PROGRESS")
        yield ResponseCreated(response)
        trail = ""
        for step in reasoning:
            trail = (trail + "\n" if trail else "") + f"→ {step}"
            yield OutputDelta(ReasoningMessage("rs_1", trail))
            await clock.sleep(0.3)
        for i in range(1, chunks + 1):
            cut = len(text) * i // chunks
            yield OutputDelta(Message("msg_1", "conv_1", "resp_1", "ASSISTANT", text[:cut]))
            await clock.sleep(duration / chunks)
        final = Message(
            "msg_1", "conv_1", "resp_1", "ASSISTANT", text,
            citations=(Citation("cite_1", "https://kb.example.com/a", "Article A"),) if citations else (),
            content_references=(ContentReference("cite_1", min(10, len(text))),) if citations else (),
            feedback=Feedback("cb_good", "cb_bad"),
        )
        yield ResponseCompleted(Response("resp_1", "conv_1", "COMPLETED", outputs=(final,)))

    return gen()
