"""Thread context for a mention in a channel reply chain: the chain's earlier messages, read
through Microsoft Graph, become `Inbound.context`.

A bot cannot read channel history through the Bot Framework connector: it only gets the messages
addressed to it. Graph can: `GET /teams/{team-id}/channels/{channel-id}/messages/{message-id}`
(the chain's root) and `.../messages/{message-id}/replies` (newest first, `$top` at most 50; no
other query options), whose least-privileged application permission is the resource-specific
consent (RSC) permission `ChannelMessage.Read.Group` (Graph docs `chatmessage-get.md`,
`chatmessage-list-replies.md`; msteams-docs `graph-api/rsc/resource-specific-consent.md`). The app
package asks for it (`authorization.permissions.resourceSpecific`); a team owner grants it for
their team when adding the app. The call uses an app-only Graph token of the bot's own app
registration (client credentials, scope `https://graph.microsoft.com/.default`) issued by the
tenant the team lives in (the activity's tenant; a single-tenant app's own tenant; a managed
identity's). The Graph team id is the team's Microsoft 365 group id: `channelData.team.aadGroupId`,
else the connector's team details (`GET /v3/teams/{team-id}`, msteams-docs `get-teams-context.md`).

(With the same permission Teams also delivers every channel message to the bot, @mention or not;
keeping a rolling window of those would hold messages nobody addressed to the bot in the store,
would know nothing from before the install, and would cost a write per channel message. The bot
keeps ignoring what does not mention it.)

When: a channel message that @mentions the bot and is a reply in a chain (not the chain's root),
from someone the bot is not already talking with in that chain (a follow-up continues a Moveworks
conversation that has the context already).

What: the root and the replies before the mention, oldest first, at most `MAX_MESSAGES` of them and
`MAX_CHARS` characters (the oldest go first), one line each: "Name: text" (another app's as
"Name (bot): text"), the bot's own messages as `texts.THREAD_CONTEXT_BOT text`; HTML reduced to
text (the bot's own @mention dropped), system and deleted messages skipped.

Never in the way: the whole lookup has `BUDGET` seconds (the inbound turn is waiting; Teams
re-sends an activity not answered within ~15 s), and any failure is no context. No app id (local
development) means no Graph token and no lookup. 403 (the team did not grant the permission, or
the tenant does not allow group-owner consent) is remembered per team for `DENIED_TTL`, so a team
without the permission costs one Graph call per `DENIED_TTL`, not one per mention. A token that
cannot be had is retried after `TOKEN_RETRY`; a token still on its way when the budget runs out
keeps coming in the background for the next mention.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from botbuilder.schema import Activity

from bridge import texts
from bridge.process.config import Settings

from .connector import PrefetchedToken, bound_msal_requests, off_loop, token_expiry
from .files import fetchable, same_origin

log = logging.getLogger("adapters.teams")

GRAPH_URL = "https://graph.microsoft.com/v1.0"  # tests point `ThreadReader.graph_url` at a fake
GRAPH_SCOPE = "https://graph.microsoft.com"
RSC_PERMISSION = "ChannelMessage.Read.Group"

MAX_MESSAGES = 20  # the last messages before the mention
MAX_CHARS = 4000  # of context lines; the relay trims question + context to texts.MAX_INPUT_CHARS
MAX_MESSAGE_CHARS = 1000  # one message's share
PAGE = 50  # Graph's largest `$top` for replies
BUDGET = 4.0  # seconds for the whole lookup (the inbound turn waits for it)
TOKEN_TIMEOUT = 30.0  # one token request, in the background
DENIED_TTL = 15 * 60.0
TOKEN_RETRY = 5 * 60.0
MAX_REMEMBERED = 10_000
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=BUDGET, connect=2.0)

_BLOCK = re.compile(r"<\s*(br|/p|/div|/li|/h\d|/tr)\b[^>]*>", re.IGNORECASE)
_AT = re.compile(r"<at\b[^>]*\bid=[\"']?([^\"'\s>]+)[\"']?[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_ATTACHMENT = re.compile(r"<attachment\b[^>]*>.*?</attachment>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ChainRef:
    """Where a mention was made: Graph's names for the chain, and who the bot is there."""

    tenant: str
    team_id: str  # the connector's team id (19:…); Graph wants the group id
    group_id: str | None  # channelData.team.aadGroupId, when Teams sent it
    channel_id: str
    root_id: str
    message_id: str  # the mention itself: it and anything after it are not context
    bot_app_id: str  # the bot's app id, as Graph names it in `from.application.id`
    service_url: str


def chain_of(activity: Activity, root_id: str) -> ChainRef | None:
    """The chain a channel message was posted in, or None when it is not a reply in one."""
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    team, channel, tenant = _dict(data.get("team")), _dict(data.get("channel")), _dict(data.get("tenant"))
    conversation_id = (activity.conversation.id if activity.conversation else "") or ""
    channel_id = str(channel.get("id") or data.get("teamsChannelId") or conversation_id.split(";")[0])
    team_id = str(team.get("id") or data.get("teamsTeamId") or "")
    message_id = activity.id or ""
    if not root_id or not message_id or root_id == message_id or not channel_id or not team_id:
        return None
    bot = (activity.recipient.id if activity.recipient else "") or ""
    return ChainRef(
        tenant=str(tenant.get("id") or ""), team_id=team_id,
        group_id=str(team["aadGroupId"]) if team.get("aadGroupId") else None,
        channel_id=channel_id, root_id=root_id, message_id=message_id,
        bot_app_id=bot.split(":", 1)[1] if bot.startswith("28:") else bot,
        service_url=activity.service_url or "",
    )


def html_text(content: str, drop_mentions: frozenset[str] = frozenset()) -> str:
    """A Teams message body (HTML) as one line of plain text. Mentions keep the name, except those
    whose `<at id>` is in `drop_mentions` (the bot's own: the question does not need it)."""
    if drop_mentions:
        content = _AT.sub(lambda m: " " if m.group(1) in drop_mentions else m.group(0), content)
    content = _ATTACHMENT.sub(" ", content)
    content = _BLOCK.sub(" ", content)
    content = _TAG.sub("", content)
    return _SPACE.sub(" ", html.unescape(content).replace("\xa0", " ")).strip()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _created(message: dict[str, Any]) -> datetime | None:
    raw = message.get("createdDateTime")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def context_lines(root: dict[str, Any] | None, replies: list[dict[str, Any]], chain: ChainRef) -> str:
    """The chain before the mention, as `Inbound.context` (see the module docstring)."""
    ordered = [r for r in replies if isinstance(r, dict)]
    ordered.sort(key=lambda m: (_created(m) is None, _created(m) or datetime.min, str(m.get("id") or "")))
    ids = [str(m.get("id") or "") for m in ordered]
    if chain.message_id in ids:  # the mention and what came after it are not context
        ordered = ordered[:ids.index(chain.message_id)]
    messages = ([root] if isinstance(root, dict) else []) + ordered
    lines: list[str] = []
    for message in messages:
        if message.get("messageType", "message") != "message" or message.get("deletedDateTime"):
            continue
        body = _dict(message.get("body"))
        content = str(body.get("content") or "")
        bot_mentions = frozenset(
            str(m.get("id")) for m in message.get("mentions") or [] if isinstance(m, dict)
            and chain.bot_app_id and str(_dict(_dict(m.get("mentioned")).get("application")).get("id"))
            == chain.bot_app_id)
        text = html_text(content, bot_mentions) if str(body.get("contentType") or "html").lower() == "html" \
            else _SPACE.sub(" ", content).strip()
        if not text:
            continue
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS - 1] + "…"
        sender = _dict(message.get("from"))
        application, user = _dict(sender.get("application")), _dict(sender.get("user"))
        if application and chain.bot_app_id and str(application.get("id")) == chain.bot_app_id:
            lines.append(f"{texts.THREAD_CONTEXT_BOT} {text}")
            continue
        name = str((user or application).get("displayName") or "").strip()
        if not user and application and name:
            name = texts.TEAMS_CONTEXT_OTHER_BOT.format(name=name)
        lines.append(f"{name or texts.TEAMS_SOMEONE}: {text}")
    lines = lines[-MAX_MESSAGES:]
    while lines and sum(len(line) + 1 for line in lines) - 1 > MAX_CHARS:
        if len(lines) == 1:
            lines[0] = lines[0][:MAX_CHARS - 1] + "…"
            break
        lines.pop(0)
    return "\n".join(lines)


def graph_credentials(settings: Settings, tenant: str) -> Any | None:
    """The bot's own app credentials, for an app-only Graph token in `tenant` (None without an
    app id: local development has no Graph)."""
    app_id = settings.teams_app_id
    if not app_id:
        return None
    if settings.teams_app_type == "UserAssignedMSI":
        from botframework.connector.auth import ManagedIdentityAppCredentials

        return ManagedIdentityAppCredentials(app_id, oauth_scope=GRAPH_SCOPE)
    from botframework.connector.auth import MicrosoftAppCredentials

    home = settings.teams_app_tenant_id if settings.teams_app_type == "SingleTenant" else tenant
    if not home:
        return None
    return MicrosoftAppCredentials(app_id, settings.teams_app_password or "", home, GRAPH_SCOPE)


class ThreadReader:
    """Reads a reply chain's earlier messages from Graph (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        bot_token: Callable[[], Awaitable[str | None]],
        credentials_for: Callable[[str], Any | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.graph_url = GRAPH_URL
        self.bot_token = bot_token  # for the connector's team details
        self.credentials_for = credentials_for or (lambda tenant: graph_credentials(settings, tenant))
        self.clock = clock
        self._tokens: dict[str, PrefetchedToken] = {}
        self._fetching: dict[str, asyncio.Task[PrefetchedToken]] = {}
        self._token_failed: dict[str, float] = {}
        self._denied: OrderedDict[str, float] = OrderedDict()
        self._groups: OrderedDict[str, str] = OrderedDict()  # connector team id -> group id
        self.lookups = 0  # Graph lookups attempted (tests and logs)

    async def context(self, chain: ChainRef) -> str:
        """The chain's earlier messages, or "" (never raises, never takes more than `BUDGET` s)."""
        try:
            return await asyncio.wait_for(self._context(chain), BUDGET)
        except TimeoutError:
            log.info("teams thread context: Graph took longer than %.0f s; asking without it", BUDGET)
        except Exception as exc:  # noqa: BLE001 - the question goes without context
            log.info("teams thread context unavailable (%s: %s)", type(exc).__name__, str(exc)[:200])
        return ""

    async def _context(self, chain: ChainRef) -> str:
        tenant = chain.tenant or self.settings.teams_app_tenant_id or ""
        token = await self._token(tenant)
        if token is None:
            return ""
        group = chain.group_id or await self._group_id(chain)
        if not group:
            log.info("teams thread context: the team's group id is unknown; asking without it")
            return ""
        denied = self._denied.get(group)
        if denied is not None and self.clock() < denied:
            return ""
        self.lookups += 1
        base = f"{self.graph_url.rstrip('/')}/teams/{quote(group, safe='')}/channels/" \
               f"{quote(chain.channel_id, safe=':@')}/messages/{quote(chain.root_id, safe='')}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
            (root_status, root), (replies_status, replies) = await asyncio.gather(
                self._get(session, base, headers), self._get(session, f"{base}/replies?$top={PAGE}", headers))
        if 403 in (root_status, replies_status):
            log.warning("teams thread context: Graph refused to read team %s's channel messages (403); "
                        "the app needs the %s permission in that team (see README). Asking without "
                        "context there for the next %.0f minutes.", group, RSC_PERMISSION, DENIED_TTL / 60)
            self._denied[group] = self.clock() + DENIED_TTL
            self._denied.move_to_end(group)
            while len(self._denied) > MAX_REMEMBERED:
                self._denied.popitem(last=False)
            return ""
        if 401 in (root_status, replies_status):
            self._tokens.pop(tenant, None)  # rejected: the next mention fetches a new one
        if root is None and replies is None:
            return ""
        found = context_lines(root, list((replies or {}).get("value") or []), chain)
        log.info("teams thread context: %d earlier messages of the chain go with the question",
                 found.count("\n") + 1 if found else 0)
        return found

    @staticmethod
    async def _get(session: aiohttp.ClientSession, url: str,
                   headers: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status == 200:
                body = await response.json(content_type=None)
                return 200, body if isinstance(body, dict) else None
            if response.status != 403:
                log.info("teams thread context: Graph answered %s: %s", response.status,
                         (await response.text())[:300])
            return response.status, None

    # --- the Graph token -----------------------------------------------------------------------

    async def _token(self, tenant: str) -> str | None:
        """A usable app-only Graph token for `tenant`; None when there is none to be had now."""
        token = self._tokens.get(tenant)
        now = time.time()
        if token is not None and token.usable(now):
            return token.value
        failed = self._token_failed.get(tenant)
        if failed is not None and self.clock() < failed:
            return None
        task = self._fetching.get(tenant)
        if task is None or task.done():
            credentials = self.credentials_for(tenant)
            if credentials is None:
                return None
            task = asyncio.create_task(self._fetch(tenant, credentials), name="teams-graph-token")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
            self._fetching[tenant] = task
        try:
            return (await asyncio.shield(task)).value  # cancelled by the budget: keeps fetching
        except Exception as exc:  # noqa: BLE001 - wrong secret, no network, Entra ID down
            log.warning("teams thread context: no Graph token for tenant %s (%s); retrying in %.0f minutes",
                        tenant or "(none)", type(exc).__name__, TOKEN_RETRY / 60)
            self._token_failed[tenant] = self.clock() + TOKEN_RETRY
            return None

    async def _fetch(self, tenant: str, credentials: Any) -> PrefetchedToken:
        def fetch() -> str:
            bound_msal_requests(credentials)
            return str(credentials.get_access_token())

        value = await off_loop(fetch, TOKEN_TIMEOUT)
        now = time.time()
        token = PrefetchedToken(value, now, token_expiry(value, now))
        self._tokens[tenant] = token
        return token

    # --- the team's group id -------------------------------------------------------------------

    async def _group_id(self, chain: ChainRef) -> str | None:
        """The Microsoft 365 group id of a team whose activity did not carry it: the connector's
        team details (with the bot's token, to the activity's service URL only)."""
        known = self._groups.get(chain.team_id)
        if known:
            return known
        url = f"{chain.service_url.rstrip('/')}/v3/teams/{quote(chain.team_id, safe='')}"
        if not fetchable(url) or not same_origin(url, chain.service_url):
            return None
        bearer = await self.bot_token()
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status != 200:
                    log.info("teams thread context: team details answered %s", response.status)
                    return None
                body = await response.json(content_type=None)
        group = body.get("aadGroupId") if isinstance(body, dict) else None
        if not isinstance(group, str) or not group:
            return None
        self._groups[chain.team_id] = group
        while len(self._groups) > MAX_REMEMBERED:
            self._groups.popitem(last=False)
        return group
