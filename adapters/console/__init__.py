"""The terminal as a chat platform, for `moveworks-bridge chat`.

Same relay, renderer and poller as Slack and Teams. On a terminal the answer is redrawn in place
as it streams (with the current reasoning step before the first words); when output is piped,
progress goes to stderr and stdout receives only the exact final answer, so scripts can use it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from typing import Any, TextIO

from bridge import texts
from bridge.answers.markdown import balance_fences
from bridge.contract import ChatAdapter, CheckLine, Core, ReplySink
from bridge.models import Action, Answer, Capabilities, ChatUser, Employee, Frame, ThreadKey

PLATFORM = "console"
CAPABILITIES = Capabilities(max_text_len=1_000_000, edit=True, native_stream=True, min_edit_interval=0.05)
THREAD = ThreadKey(PLATFORM, "local", "terminal", "")


def choices(answer: Answer | None) -> list[tuple[str, Action | None, str]]:
    """What `/action N` can pick: the answer's buttons, then its get-help menu items, as
    (label, action, text of a TEXT item)."""
    if answer is None:
        return []
    picked: list[tuple[str, Action | None, str]] = [(a.label, a, "") for a in answer.actions]
    for category in answer.help_menu:
        picked += [(f"{category.name} › {item.title}", item.action, item.text) for item in category.items]
    return picked


def render_answer(answer: Answer) -> str:
    """The final answer as plain terminal text: body, numbered sources, buttons, rating hint."""
    lines = [answer.text.rstrip()]
    if answer.citations:
        lines += ["", f"{texts.SOURCES}:"]
        lines += [f"  [{c.number}] {c.title}" + (f" <{c.url}>" if c.url else "") for c in answer.citations]
    if answer.sender is not None:
        lines.insert(0, texts.LIVE_AGENT_BYLINE.format(name=answer.sender.name) + ":")
    picks = choices(answer)
    if picks:
        lines += ["", f"{texts.ACTIONS}:"]
        for i, (label, action, _text) in enumerate(picks, 1):
            target = f"<{action.url}>" if action and action.url else texts.CONSOLE_ACTION_HINT.format(n=i)
            lines.append(f"  {i}. {label} ({target})")
    if answer.feedback is not None:
        lines += ["", texts.CONSOLE_RATE_HINT]
    return "\n".join(lines)


class ConsoleSink(ReplySink):
    budget_key = "console"
    capabilities = CAPABILITIES

    def __init__(self, adapter: ConsoleAdapter, *, proactive: bool) -> None:
        self.adapter = adapter
        self.proactive = proactive
        self._drawn_lines = 0
        self._status: str | None = None

    @property
    def _tty(self) -> bool:
        return self.adapter.live

    def _erase(self) -> None:
        if self._drawn_lines:
            self.adapter.out.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0

    def _draw(self, text: str) -> None:
        self._erase()
        width = max(20, shutil.get_terminal_size((100, 20)).columns)
        self.adapter.out.write(text + "\n")
        self.adapter.out.flush()
        self._drawn_lines = sum(max(1, -(-len(line) // width)) for line in text.split("\n"))

    async def show(self, frame: Frame) -> bool | None:
        if self._tty:
            if frame.text:
                self._draw(balance_fences(frame.text) + texts.CURSOR)
            else:
                self._draw(texts.CONSOLE_STATUS.format(status=frame.status or texts.THINKING))
        elif not frame.text and frame.status and frame.status != self._status:
            self._status = frame.status
            print(texts.CONSOLE_STATUS.format(status=frame.status), file=self.adapter.err, flush=True)
        return None

    async def finish(self, answer: Answer) -> list[str]:
        text = render_answer(answer)
        if self.proactive:
            text = texts.CONSOLE_NEW_MESSAGE + "\n" + text
        if self._tty:
            self._draw(text)
            self._drawn_lines = 0
        else:
            print(text, file=self.adapter.out, flush=True)
        self.adapter.last_answer = answer
        return [answer.message_ids[-1] if answer.message_ids else "console"]

    async def fail(self, message: str) -> None:
        if self._tty:
            self._draw(texts.CONSOLE_FAILURE.format(message=message))
            self._drawn_lines = 0
        else:
            print(texts.CONSOLE_FAILURE.format(message=message), file=self.adapter.out, flush=True)


class ConsoleAdapter(ChatAdapter):
    shows_forms = True  # `moveworks-bridge chat` asks for each field (adapters/console/forms.py)
    platform = PLATFORM

    def __init__(
        self,
        *,
        email: str | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = self.out.isatty() if live is None else live
        self.user = ChatUser(PLATFORM, "local", getpass.getuser(), name=getpass.getuser(), email=email)
        self.last_answer: Answer | None = None

    async def open_reply(
        self, thread: ThreadKey, address: dict[str, Any], *, user: ChatUser | None, proactive: bool
    ) -> ConsoleSink:
        return ConsoleSink(self, proactive=proactive)

    async def open_direct(self, employee: Employee) -> tuple[ThreadKey, dict[str, Any]] | None:
        return THREAD, {}

    async def resolve_email(self, user: ChatUser) -> str | None:
        return self.user.email

    async def check(self) -> list[CheckLine]:
        return [("console", True, "terminal available")]


def build(core: Core) -> ConsoleAdapter:
    return ConsoleAdapter(email=os.environ.get("MOVEWORKS_CHAT_EMAIL"))
