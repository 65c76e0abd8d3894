"""The welcome message a person gets when they install the app for themselves (personal scope).

When: Teams tells a bot about an install with a `conversationUpdate` whose `membersAdded` holds
the bot, and (newer clients) an `installationUpdate` with `action: "add"` (msteams-docs
`subscribe-to-conversation-events.md`); a personal install sends both, close together, possibly
to two replicas. `action: "add-upgrade"` (a new version of the app) is not an install: nobody is
welcomed again because an administrator uploaded a new package.

Once per install: the first of those events claims `welcome|<chat>|<generation>` with
`core.claim_inbound` (atomic across processes), and `teams.welcome` remembers that the chat was
welcomed (claims expire after a day; an upgrade or a late redelivery must still find it). An
uninstall (`installationUpdate` `remove`, or the bot in `membersRemoved`) moves the chat to the
next generation, so a reinstall is welcomed again. A welcome that cannot be sent frees the claim's
generation the same way, so the other install event (or a redelivery) tries again.

Where: personal chats only. In a channel or group chat a welcome would speak to everyone at once
about a personal assistant; there the bot answers when @mentioned. Teams shows the manifest's
prompt starters as cards in an empty personal chat unless the bot welcomes the person itself
(msteams-docs `prompt-starters.md`): the welcome carries the same prompts as buttons, so nothing
is lost, and the prompts stay in the chat's "View prompts" menu.

What: an Adaptive Card (text blocks, one `Action.Submit` per suggested prompt). A button's
`data.msteams` is `imBack` (msteams-docs `cards-actions.md`, "Adaptive Cards actions"): Teams posts
the prompt into the chat as the person's own message, so it is asked like a typed question.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bridge import texts
from bridge.contract import KeyValue

NS_WELCOME = "teams.welcome"
CARD_VERSION = "1.4"
MAX_BUTTON_TITLE = 100


def welcome_card(prompts: Sequence[str]) -> dict[str, Any]:
    """What the assistant does, and each suggested prompt as a button that asks it."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": texts.TEAMS_WELCOME_TITLE, "weight": "Bolder", "size": "Medium",
         "wrap": True},
        {"type": "TextBlock", "text": texts.TEAMS_WELCOME, "wrap": True},
    ]
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    }
    if prompts:
        body.append({"type": "TextBlock", "text": texts.TEAMS_WELCOME_TRY, "wrap": True, "spacing": "Medium"})
        card["actions"] = [
            {"type": "Action.Submit", "title": prompt[:MAX_BUTTON_TITLE],
             "data": {"msteams": {"type": "imBack", "value": prompt}}}
            for prompt in prompts
        ]
    return card


class Welcomes:
    """Whether a personal chat still needs its welcome (see the module docstring).

    `teams.welcome` holds, per chat, `sent <generation> <time>` or `open <generation>`."""

    def __init__(self, kv: KeyValue, claim: Callable[[str, str], Awaitable[bool]], platform: str) -> None:
        self.kv = kv
        self.claim_inbound = claim
        self.platform = platform

    async def _state(self, chat: str) -> tuple[str, int]:
        raw = (await self.kv.get(chat) or "").split()
        if len(raw) >= 2 and raw[0] in ("sent", "open") and raw[1].isdigit():
            return raw[0], int(raw[1])
        return "open", 0

    async def claim(self, chat: str) -> int | None:
        """The generation to welcome `chat` under, or None when it was (or is being) welcomed."""
        state, generation = await self._state(chat)
        if state == "sent":
            return None
        if not await self.claim_inbound(self.platform, f"welcome|{chat}|{generation}"):
            return None
        return generation

    async def sent(self, chat: str, generation: int) -> None:
        await self.kv.set(chat, f"sent {generation} {int(time.time())}")

    async def failed(self, chat: str, generation: int) -> None:
        """The welcome did not go out: the next install event may try again."""
        state, current = await self._state(chat)
        if state == "open" and current == generation:
            await self.kv.set(chat, f"open {generation + 1}")

    async def removed(self, chat: str) -> None:
        """The app was uninstalled from the chat: a reinstall is welcomed again."""
        state, generation = await self._state(chat)
        if state == "sent":
            await self.kv.set(chat, f"open {generation + 1}")
