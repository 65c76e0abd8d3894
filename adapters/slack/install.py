"""Multi-workspace OAuth state in the bridge's key/value store (`Core.kv`), so installations survive
restarts and are shared by every process using the same `BRIDGE_DB`.

slack_sdk's stores serialise the same way (`__dict__` as JSON); this one only swaps the file or
SQLAlchemy backend for the bridge's own key/value table.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from logging import Logger
from typing import Any

from slack_bolt.error import BoltError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bridge.contract import KeyValue

log = logging.getLogger("adapters.slack")

NS_BOT = "slack.bot"
NS_INSTALLATION = "slack.installation"
NS_STATE = "slack.oauth_state"


def _key(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False) -> str:
    team = "-" if is_enterprise_install else (team_id or "-")
    return f"{enterprise_id or '-'}:{team}"


def _dump(obj: Any) -> str:
    return json.dumps({k: v for k, v in vars(obj).items() if not k.startswith("_")}, default=str)


class InstallationRefused(BoltError):
    """An installation of a workspace/org outside `SLACK_ALLOWED_TEAMS`: not saved. A BoltError, so
    bolt's OAuth flow turns it into its failure page (see `SlackAdapter._install_failed`)."""

    def __init__(self, team_id: str | None, enterprise_id: str | None, bot_token: str | None = None) -> None:
        super().__init__(f"installation refused: {team_id or enterprise_id} is not in SLACK_ALLOWED_TEAMS")
        self.team_id = team_id
        self.enterprise_id = enterprise_id
        self.bot_token = bot_token  # to revoke it; never part of the message

    def __repr__(self) -> str:
        return f"InstallationRefused(team_id={self.team_id!r}, enterprise_id={self.enterprise_id!r})"


class KvInstallationStore(AsyncInstallationStore):
    """`allowed`: team or enterprise ids that may be saved (SLACK_ALLOWED_TEAMS); empty = any."""

    def __init__(self, kv: Callable[[str], KeyValue], *, allowed: frozenset[str] = frozenset()) -> None:
        self.kv = kv
        self.allowed = frozenset(allowed)

    def _check(self, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None,
               bot_token: str | None) -> None:
        if not self.allowed:
            return
        if (team_id in self.allowed and not is_enterprise_install) or enterprise_id in self.allowed:
            return
        log.warning("slack: refused to save an installation of %s (not in SLACK_ALLOWED_TEAMS)",
                    team_id or enterprise_id)
        raise InstallationRefused(team_id, enterprise_id, bot_token)

    @property
    def logger(self) -> Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        self._check(installation.enterprise_id, installation.team_id, installation.is_enterprise_install,
                    installation.bot_token)
        key = _key(installation.enterprise_id, installation.team_id, installation.is_enterprise_install)
        data = _dump(installation)
        await self.kv(NS_INSTALLATION).set(f"{key}:latest", data)
        if installation.user_id:
            await self.kv(NS_INSTALLATION).set(f"{key}:{installation.user_id}", data)
        if installation.bot_token:
            await self.async_save_bot(installation.to_bot())

    async def async_save_bot(self, bot: Bot) -> None:
        self._check(bot.enterprise_id, bot.team_id, bot.is_enterprise_install, bot.bot_token)
        await self.kv(NS_BOT).set(_key(bot.enterprise_id, bot.team_id, bot.is_enterprise_install), _dump(bot))

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False
    ) -> Bot | None:
        raw = await self.kv(NS_BOT).get(_key(enterprise_id, team_id, is_enterprise_install))
        if raw is None and enterprise_id and not is_enterprise_install:  # org-wide install
            raw = await self.kv(NS_BOT).get(_key(enterprise_id, None, True))
        return Bot(**json.loads(raw)) if raw else None

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        key = _key(enterprise_id, team_id, is_enterprise_install)
        raw = await self.kv(NS_INSTALLATION).get(f"{key}:{user_id or 'latest'}")
        return Installation(**json.loads(raw)) if raw else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.kv(NS_BOT).delete(_key(enterprise_id, team_id))

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        key = _key(enterprise_id, team_id)
        if user_id:
            await self.kv(NS_INSTALLATION).delete(f"{key}:{user_id}")
            return
        installations = self.kv(NS_INSTALLATION)
        for item_key, _ in await installations.items(prefix=f"{key}:"):
            await installations.delete(item_key)

    async def installed_teams(self) -> list[str]:
        return [key for key, _ in await self.kv(NS_BOT).items()]


class KvOAuthStateStore(AsyncOAuthStateStore):
    """One-time OAuth `state` values, valid for 10 minutes, shared across processes."""

    def __init__(self, kv: Callable[[str], KeyValue], *, expiration_seconds: int = 600) -> None:
        self.kv = kv
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        await self.kv(NS_STATE).set(state, str(time.time()))
        return state

    async def async_consume(self, state: str) -> bool:
        raw = await self.kv(NS_STATE).get(state)
        if raw is None:
            return False
        await self.kv(NS_STATE).delete(state)
        return time.time() - float(raw) <= self.expiration_seconds
