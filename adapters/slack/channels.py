"""Per-channel rules, changed from Slack itself with the app's slash command, and private answers
that can be shared.

Modes (`texts.SLACK_CHANNEL_MODES`):
  * `mention` (the default): answer when mentioned, and follow-ups in threads the bot answered;
  * `all`: also answer every new top-level message in the channel, without a mention;
  * `private`: answer in the asker's DM (streamed as usual) with an ephemeral pointer in the
    channel and a "Share in channel" button that posts the answer into the channel's thread;
  * `off`: answer nothing there (a mention gets an ephemeral note saying so).

Why a slash command (`/moveworks channel <mode>`) and not a file: the people who know how a channel
should behave are in Slack, a change takes effect without a redeploy or a file to sync across
hosts, and the mode is kept in the store (`slack.channels`) that every process shares. Only
workspace admins and owners may change a mode (`users.info` `is_admin`/`is_owner`/
`is_primary_owner`, looked up fresh each time); anyone may ask what it is. Processes cache a mode
for `CACHE_TTL` seconds, so another replica follows a change within that time.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import texts
from bridge.answers.markdown import split_markdown
from bridge.contract import Core, ReplySink
from bridge.models import Answer, CitationLink, Frame

log = logging.getLogger("adapters.slack")

MODES = ("all", "mention", "private", "off")
DEFAULT_MODE = "mention"
CHANNELS = "slack.channels"  # kv: "team:channel" -> mode (absent: the default)
CACHE_TTL = 10.0
SHARES = "slack.shares"  # kv: share key -> the private answer, until shared or SHARE_TTL
SHARE_TTL = 7 * 24 * 3600.0
SHARE_ACTION = "mw_share"
SHARE_PART_LIMIT = 11_000  # one markdown block per shared part


class ChannelRules:
    """The mode of each channel, from the store, cached briefly."""

    def __init__(self, core: Core, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = core.kv(CHANNELS)
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    async def mode(self, team: str, channel: str) -> str:
        key = f"{team}:{channel}"
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and now - cached[1] < CACHE_TTL:
            return cached[0]
        try:
            mode = await self._store.get(key) or DEFAULT_MODE
        except Exception:  # the store is down: behave as by default
            log.warning("slack: could not read a channel's mode; using %s", DEFAULT_MODE, exc_info=True)
            return DEFAULT_MODE
        if mode not in MODES:
            mode = DEFAULT_MODE
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (mode, now)
        return mode

    async def set(self, team: str, channel: str, mode: str) -> None:
        key = f"{team}:{channel}"
        if mode == DEFAULT_MODE:
            await self._store.delete(key)
        else:
            await self._store.set(key, mode)
        self._cache[key] = (mode, self._clock())


@dataclass(frozen=True)
class Command:
    """What `/moveworks …` asks: `show` the channel's mode, `set` it, or `help`."""

    action: str
    mode: str | None = None


def parse_command(text: str) -> Command:
    words = text.lower().split()
    if len(words) == 1 and words[0] == "channel":
        return Command("show")
    if len(words) == 2 and words[0] == "channel" and words[1] in MODES:
        return Command("set", words[1])
    return Command("help")


def describe(mode: str, *, changed: bool = False) -> str:
    behaviour = texts.SLACK_CHANNEL_MODES.get(mode, texts.SLACK_CHANNEL_MODES[DEFAULT_MODE])
    return (texts.SLACK_CHANNEL_MODE_SET if changed else texts.SLACK_CHANNEL_MODE_NOW).format(behaviour=behaviour)


# --- private answers and "Share in channel" --------------------------------------------------------


def share_record(answer: Answer, *, team: str, user: str, channel: str, thread_ts: str | None) -> str:
    return json.dumps({
        "t": answer.text, "team": team, "u": user, "c": channel, "ts": thread_ts,
        "cit": [[c.number, c.title, c.url] for c in answer.citations],
    }, separators=(",", ":"))


def shared_answer(record: dict[str, Any]) -> Answer:
    """What goes into the channel: the text and its sources (no feedback or action buttons,
    which belong to the asker's conversation)."""
    citations = tuple(CitationLink(int(n), str(title or ""), url) for n, title, url in record.get("cit") or [])
    return Answer(text=str(record.get("t") or ""), citations=citations)


def share_parts(text: str) -> list[str]:
    return split_markdown(text, SHARE_PART_LIMIT) if text.strip() else []


def offer_blocks(key: str, channel: str) -> list[dict[str, Any]]:
    prompt = texts.SLACK_SHARE_PROMPT.format(channel=f"<#{channel}>")
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": prompt},
         "accessory": {"type": "button", "action_id": SHARE_ACTION, "value": key,
                       "text": {"type": "plain_text", "text": texts.SLACK_SHARE_BUTTON}}},
    ]


class ShareSink(ReplySink):
    """A private answer: once it is final, a button under it in the DM offers to share it in the
    channel where it was asked (the answer is kept in the store until then, `SHARE_TTL` at most)."""

    def __init__(self, inner: ReplySink, core: Core, offer: Callable[[str, str], Any], *, team: str, user: str,
                 channel: str, thread_ts: str | None) -> None:
        self.inner = inner
        self.core = core
        self._offer = offer  # async (key, channel) -> None: posts the offer in the DM
        self.team, self.user, self.channel, self.thread_ts = team, user, channel, thread_ts
        self.capabilities = inner.capabilities
        self.budget_key = inner.budget_key

    async def show(self, frame: Frame) -> bool | None:
        return await self.inner.show(frame)

    async def finish(self, answer: Answer) -> list[str]:
        ids = await self.inner.finish(answer)
        if answer.text.strip() and answer.sender is None:
            key = secrets.token_urlsafe(16)
            try:
                shares = self.core.kv(SHARES)
                await shares.set(key, share_record(answer, team=self.team, user=self.user, channel=self.channel,
                                             thread_ts=self.thread_ts))
                await shares.prune(SHARE_TTL)
                await self._offer(key, self.channel)
            except Exception:  # the answer is there; only the offer to share it is missing
                log.warning("slack: could not offer to share a private answer", exc_info=True)
        return ids

    async def fail(self, message: str) -> None:
        await self.inner.fail(message)

    def checkpoint(self) -> dict[str, Any] | None:
        return self.inner.checkpoint()

    def resume(self, checkpoint: dict[str, Any]) -> bool:
        return self.inner.resume(checkpoint)
