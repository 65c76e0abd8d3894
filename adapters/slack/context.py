"""The thread a person brings the bot into: when someone mentions the bot in the middle of a thread
it is not talking in with them yet, the earlier messages of that thread go with the question
(`Inbound.context`), so "@bot can you help with this?" works.

* Read with `conversations.replies` (the history scope of the channel's type: `channels:history`,
  `groups:history`, `mpim:history`, `im:history`; Tier 3, so through the workspace's budget),
  bounded: the thread's first message and its last `CONTEXT_MESSAGES` before the mention, each
  clipped to `MESSAGE_CHARS`, at most `CONTEXT_CHARS` in all (the oldest replies go first; the
  core trims again to the question's limit).
* One line a message, oldest first: "Name: text". The bot's own messages are marked
  `texts.THREAD_CONTEXT_BOT`, other apps' `texts.SLACK_CONTEXT_OTHER_BOT`. Names come from the
  message itself when Slack includes a profile, else from `Names`: a cache in memory and in the
  store (`slack.names`, shared by every process) in front of `users.info`, whose Tier 4 budget
  the email lookups share; a name that cannot be had in time shows as `texts.SLACK_SOMEONE`.
* Best effort: a thread that cannot be read (no scope, not in the channel, rate limits past the
  deadline) leaves the question as it was.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge import texts
from bridge.contract import Core
from bridge.models import Rate

from . import directory
from .calls import TRANSIENT, call, error_code
from .mrkdwn import to_plain

log = logging.getLogger("adapters.slack")

CONTEXT_MESSAGES = 20  # replies before the mention (plus the thread's first message)
CONTEXT_CHARS = 6_000
MESSAGE_CHARS = 1_000
PAGE = 200  # conversations.replies per page
PAGES = 5  # a thread longer than PAGES * PAGE keeps its first pages' messages only
DEADLINE = 5.0  # seconds for the whole context, by default
# The adapter reads the context before `core.submit`, and acknowledges Slack only after the submit
# (Slack wants the event's HTTP response within 3 seconds): there it gets this long, then the
# question goes without it.
ACK_DEADLINE = 1.5
HISTORY_RATE = Rate(50, 60.0)  # conversations.replies: Tier 3 per workspace
NAMES = "slack.names"  # kv: "team:user" -> display name
NAME_TTL = 7 * 24 * 3600.0
MEMORY_NAMES = 5_000
LOOKUPS = 10  # distinct people looked up for one context; the rest show as SLACK_SOMEONE
# Message subtypes that are still someone writing in the thread.
WRITTEN = frozenset({None, "file_share", "thread_broadcast", "bot_message", "me_message"})


class Names:
    """Display names of Slack users: memory, then the store, then `users.info` (budgeted)."""

    def __init__(self, core: Core, users_rate: Rate, *, count: Callable[[str], None] = lambda op: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self.users_rate = users_rate
        self._count = count
        self._clock = clock
        self._memory: OrderedDict[str, str] = OrderedDict()
        self._store = core.kv(NAMES)
        self._pruned = 0.0

    async def remember(self, team: str, user: str, name: str) -> None:
        key = f"{team}:{user}"
        if self._memory.get(key) == name:
            return
        self._memory[key] = name
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_NAMES:
            self._memory.popitem(last=False)
        try:
            await self._store.set(key, name)
            if self._clock() - self._pruned > 3600:
                self._pruned = self._clock()
                await self._store.prune(NAME_TTL)
        except Exception:  # a cache: the name is still used this time
            log.debug("could not store a Slack display name", exc_info=True)

    async def known(self, team: str, user: str) -> str | None:
        key = f"{team}:{user}"
        name = self._memory.get(key)
        if name is None:
            try:
                name = await self._store.get(key)
            except Exception:  # noqa: BLE001 - the store is down: look it up instead
                name = None
            if name:
                self._memory[key] = name
        return name or None

    async def resolve(self, client: AsyncWebClient, team: str, users: list[str]) -> dict[str, str]:
        """Names of `users` (at most LOOKUPS looked up); unknown ones are left out."""
        found = {u: n for u in users if (n := await self.known(team, u))}
        missing = [u for u in users if u not in found][:LOOKUPS]

        async def one(user: str) -> None:
            await self.core.budget(f"slack:{team}:users", self.users_rate).acquire()
            try:
                self._count("users_info")
                profile = await directory.lookup(client, user)
            except (SlackApiError, *TRANSIENT) as exc:
                log.info("slack: no name for a thread participant: %s", error_code(exc) or type(exc).__name__)
                return
            if profile is not None and profile.name:
                found[user] = profile.name
                await self.remember(team, user, profile.name)

        await asyncio.gather(*(one(u) for u in missing))
        return found


def _body(message: dict[str, Any]) -> str:
    """What a message says: its markdown/section blocks (a bot's `text` is only a preview), else
    its text."""
    parts = []
    for block in message.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "markdown" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") in ("section", "header") and isinstance(block.get("text"), dict):
            parts.append(str(block["text"].get("text") or ""))
    text = "\n".join(p for p in parts if p) or str(message.get("text") or "")
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def read_thread(
    client: AsyncWebClient, core: Core, *, team: str, channel: str, thread_ts: str, before: str,
    count: Callable[[str], None] = lambda op: None,
) -> list[dict[str, Any]]:
    """The thread's messages before `before` (its first one included), oldest first."""
    budget = core.budget(f"slack:{team}:history", HISTORY_RATE)
    messages: list[dict[str, Any]] = []
    cursor = None
    for _ in range(PAGES):
        await budget.acquire()
        kwargs: dict[str, Any] = {"channel": channel, "ts": thread_ts, "latest": before, "inclusive": False,
                                  "limit": PAGE}
        if cursor:
            kwargs["cursor"] = cursor
        count("history")
        response = await call(client.conversations_replies, attempts=2, **kwargs)
        messages.extend(m for m in response.get("messages") or [] if isinstance(m, dict))
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not response.get("has_more") or not cursor:
            break
    return [m for m in messages if isinstance(m.get("ts"), str) and float(m["ts"]) < float(before)]


async def thread_context(
    client: AsyncWebClient,
    core: Core,
    names: Names,
    *,
    team: str,
    channel: str,
    thread_ts: str,
    before: str,
    bot_user_id: str,
    bot_id: str | None,
    count: Callable[[str], None] = lambda op: None,
    deadline: float = DEADLINE,
) -> str:
    """The "Name: text" lines of the thread before the mention (see module docstring); "" when
    there is nothing or it cannot be read within `deadline` seconds."""
    root: dict[str, Any] | None = None
    kept: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(deadline):
            messages = await read_thread(client, core, team=team, channel=channel, thread_ts=thread_ts,
                                         before=before, count=count)
            written = [m for m in messages if m.get("subtype") in WRITTEN]
            if not written:
                return ""
            root = written[0] if written[0].get("ts") == thread_ts else None
            replies = [m for m in written if m is not root][-CONTEXT_MESSAGES:]
            kept = ([root] if root is not None else []) + replies
            people = []
            for m in kept:
                profile = _obj(m.get("user_profile"))
                name = profile.get("display_name") or profile.get("real_name")
                user = m.get("user")
                if isinstance(user, str) and user:
                    if name:
                        await names.remember(team, user, str(name))
                    elif not _is_bot(m, bot_user_id, bot_id):
                        people.append(user)
            mentioned = _mentioned(kept)
            known = await names.resolve(client, team, list(dict.fromkeys(people + mentioned)))
    except TimeoutError:
        log.info("slack: the thread's earlier messages took too long to read; asking without them")
        return ""
    except (SlackApiError, *TRANSIENT) as exc:
        log.info("slack: could not read the thread's earlier messages: %s", error_code(exc) or type(exc).__name__)
        return ""
    lines = []
    for m in kept:
        text = " ".join(to_plain(_body(m), bot_user_id=bot_user_id, names=known).split())
        if not text:
            continue
        lines.append(f"{_speaker(m, bot_user_id, bot_id, known)}: {_clip(text, MESSAGE_CHARS)}")
    while len(lines) > 1 and sum(len(line) + 1 for line in lines) > CONTEXT_CHARS:
        del lines[1 if root is not None else 0]  # the oldest reply goes first; the thread's start stays
    return "\n".join(lines)[:CONTEXT_CHARS]


def _is_bot(message: dict[str, Any], bot_user_id: str, bot_id: str | None) -> bool:
    return bool(message.get("bot_id") or message.get("subtype") == "bot_message"
                or (bot_user_id and message.get("user") == bot_user_id))


def _speaker(message: dict[str, Any], bot_user_id: str, bot_id: str | None, known: dict[str, str]) -> str:
    user = message.get("user")
    if (bot_user_id and user == bot_user_id) or (bot_id and message.get("bot_id") == bot_id):
        return texts.THREAD_CONTEXT_BOT
    if message.get("bot_id") or message.get("subtype") == "bot_message":
        profile = _obj(message.get("bot_profile"))
        name = profile.get("name") or message.get("username") or "app"
        return texts.SLACK_CONTEXT_OTHER_BOT.format(name=name)
    profile = _obj(message.get("user_profile"))
    return str(profile.get("display_name") or profile.get("real_name") or known.get(str(user)) or texts.SLACK_SOMEONE)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _mentioned(messages: list[dict[str, Any]]) -> list[str]:
    """Users mentioned as `<@U…>` without a label (their names make the text readable)."""
    found: list[str] = []
    for m in messages:
        found += re.findall(r"<@([UW][A-Z0-9]+)>", _body(m))
    return found
