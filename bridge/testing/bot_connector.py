"""A fake Bot Framework connector (the Teams side of `serviceUrl`) on loopback, for wire-level tests.

The bridge's real `CloudAdapter` sends its outbound activities here because every inbound
activity's `serviceUrl` points at this server. It records every call with its exact JSON, keeps
each activity's visible text (streams included), answers roster lookups and `POST
/v3/conversations`, and enforces the Teams streaming protocol strictly:
a `streaminfo` entity without `streamType`/`streamSequence` is refused with Teams' BadSyntax error,
sequences must grow by one, streamed text must be cumulative, and streaming outside personal chats
is refused. Faults (429, 412/5xx, 400, the streaming 403s, MessageWritesBlocked, bot removed, 404
conversation not found) are injected with `fail_next`. With `enforce_limits=True` it also applies
the documented rate limits (per conversation 7/1 s, 8/2 s, 60/30 s; 50/s per tenant) and answers 429 beyond them.

Messages with text and attachments, as Teams shows them (Microsoft's Agents Playground 0.2.28
implements it in `splitActivity`; botframework-sdk #6366 describes Teams doing the same): one
activity becomes several messages, its text first, then each attachment as a message of its own,
every one carrying the activity's entities and channelData (so each shows the AI label and
👍/👎); a posted or final streamed one is split that way, and an update that would split is
refused with `400 BadSyntax "Activity resulted into multiple skype activities"` (the Playground
checks updates the same way in personal chats, group chats and channels). The root AI `Message`
entity is checked as teams.md §3.4 and the Playground do: one per message, at most 10 citation
claims, each with a position > 0 and an appearance with a name and an abstract; else 400.

`TeamsUser` builds inbound activities the way Teams sends them (personal chat, channel reply
chain with `;messageid=`, group chat, @mention entities, feedback invokes, card submits, dialog
invokes `task/fetch`/`task/submit`, file attachments).

Dialogs (task modules; msteams-docs `task-modules-bots.md`, `invoking-task-modules.md`): an invoke
is an HTTP request *into* the bot whose response body is what Teams shows. `FakeConnector.invoke`
sends one, records the exchange (`invokes`) and checks the answer as Teams would take it: HTTP 200
within `invoke_deadline` (teams.md §4.6: ~15 s, then Teams sends the activity again), a body that
is empty (the dialog closes) or `{"task": {"type": "continue", "value": {title, card}}}` with an
Adaptive Card attachment, or `{"task": {"type": "message", "value": "<text>"}}`; the card is
checked by `check_card` (type, version at most 1.5, unique input ids, known elements, choices with
title and value, Action.Submit data an object). Anything else raises `TeamsRefused`.
`TeamsDialog` is the Teams client showing such a card: it keeps the inputs' values, lets a test
fill them in (by label or id; choices by title or value, as a person picks them) and press a
button, which validates `isRequired` inputs first (Adaptive Cards validate every Action.Submit's
associated inputs and show `errorMessage` instead of sending) and builds the `task/submit`
payload: every input as a string ("" when empty, "true"/"false" for toggles, comma-joined values
for a multi-select), merged with the action's `data`.

Files (msteams-docs `bots-filesv4.md`): `add_file` serves a personal-chat file behind a
pre-authenticated `downloadUrl` (a `file.download.info` attachment; the URL carries its own
signature, and a request bringing an `Authorization` header is recorded in `token_leaks`);
`add_inline_image` serves an inline image on the connector (`/v3/attachments/{id}/views/original`)
that needs the bot's token (`bot_token`; 401 without it). `downloads` records every fetch.
Every Adaptive Card the bot posts or updates is checked with `check_card` too; what would not
render is listed in `card_problems`. A button whose `data.msteams` is `imBack` needs a string
`value` (msteams-docs `cards-actions.md`; the Agents Playground throws on anything else), and
`TeamsUser.act` presses any card button as the Teams client does: `imBack` posts its value as
the person's own message, anything else is a card submit.

Install events (msteams-docs `subscribe-to-conversation-events.md`): `TeamsUser.install` is the
`conversationUpdate` with the bot in `membersAdded`, `installation_update("add" | "remove" |
"add-upgrade")` the `installationUpdate` Teams sends alongside, `uninstall` the `conversationUpdate`
with the bot in `membersRemoved`.

Microsoft Graph, for reading a channel's reply chain (Graph `chatmessage-get.md`,
`chatmessage-list-replies.md`), served under `graph_url`: `GET
/teams/{group-id}/channels/{channel-id}/messages/{message-id}` and `.../replies`. The team is named
by its Microsoft 365 group id (`TEAM_GROUP_ID`, sent as `channelData.team.aadGroupId`), not the
connector's `19:` team id (404). Replies come newest first, `$top` between 1 and 50 (else 400), no
other query options (400); more than a page links the next with `@odata.nextLink`. Without the
resource-specific consent `ChannelMessage.Read.Group` granted in the team (`grant_rsc`) Graph
answers 403; with `graph_token` set, a request without that bearer token gets 401. The chain
holds what users said (`graph_post` records an activity built by `TeamsUser.channel`, mention or
not) and what the bot posted into it, as Graph shows them: HTML bodies, `from.user` with the
person's display name, `from.application` (`applicationIdentityType: bot`) for the bot. Every
Graph request is kept in `graph_calls`. `GraphCredentials` stands in for Entra ID issuing the
bot's app-only Graph token (it records the tenant each token was asked for). The connector's team
details (`GET /v3/teams/{team-id}`, msteams-docs `get-teams-context.md`) give the group id too.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

TENANT = "tenant-1"
BOT_ID = "28:bot-app-id"
BOT_NAME = "Moveworks"
TEAM_ID = "19:team@thread.tacv2"  # the connector's id of the team
TEAM_GROUP_ID = "3c7a4a63-2f3b-4d5e-9f10-5a6b7c8d9e0f"  # its Microsoft 365 group id (Graph's team id)
GRAPH_PAGE = 20  # replies per page when no $top is given

MULTIPLE_ACTIVITIES = "Activity resulted into multiple skype activities"
AI_ENTITY = "https://schema.org/Message"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

STREAM_ERRORS = {
    "stream_timeout": "Content stream finished due to exceeded streaming time.",
    "stream_canceled": "Content stream was canceled by user.",
    "stream_not_allowed": "Content stream is not allowed.",
}


@dataclass
class Call:
    method: str
    path: str
    json: Any
    status: int
    at: float = field(default_factory=time.monotonic)

    @property
    def streaminfo(self) -> dict[str, Any] | None:
        return streaminfo_of(self.json)


@dataclass
class FakeActivity:
    id: str
    conversation_id: str  # as sent (may include ";messageid=")
    type: str
    text: str  # what the user sees now
    json: dict[str, Any]  # last JSON accepted for it
    history: list[dict[str, Any]] = field(default_factory=list)
    stream: bool = False
    stream_state: str = "open"  # open | final | expired | canceled
    sequence: int = 0
    streamed_text: str = ""
    deleted: bool = False
    created: float = field(default_factory=time.time)

    @property
    def entities(self) -> list[dict[str, Any]]:
        return list(self.json.get("entities") or [])

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return list(self.json.get("attachments") or [])

    @property
    def ai_label(self) -> bool:
        """Shows "AI generated" (a root Message entity with additionalType AIGeneratedContent)."""
        return any(e.get("type") == AI_ENTITY and "AIGeneratedContent" in (e.get("additionalType") or [])
                   for e in self.entities if isinstance(e, dict))

    @property
    def citations(self) -> list[dict[str, Any]]:
        return [c for e in self.entities if isinstance(e, dict) and e.get("type") == AI_ENTITY
                for c in e.get("citation") or []]

    @property
    def feedback_buttons(self) -> bool:
        """Shows 👍/👎 (Teams' feedback loop)."""
        data = self.json.get("channelData") or {}
        return bool(data.get("feedbackLoopEnabled") or data.get("feedbackLoop"))

    @property
    def cards(self) -> list[dict[str, Any]]:
        return [a.get("content") or {} for a in self.attachments if a.get("contentType") == ADAPTIVE_CARD]


@dataclass
class Fault:
    kind: str
    count: int
    retry_after: float | None
    when: Callable[[str, str, Any], bool]


def streaminfo_of(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    for entity in body.get("entities") or []:
        if isinstance(entity, dict) and entity.get("type") == "streaminfo":
            return entity
    return None


def bare(conversation_id: str) -> str:
    return conversation_id.split(";messageid=")[0]


def split_activity(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages Teams shows for one message activity: its text, then each attachment on its
    own, all with the activity's entities and channelData (a carousel stays one message)."""
    if body.get("attachmentLayout") == "carousel":
        return [body]
    parts = []
    if body.get("text"):
        parts.append({**body, "attachments": None})
    for attachment in body.get("attachments") or []:
        parts.append({**body, "text": None, "textFormat": None, "attachments": [attachment]})
    return parts


def ai_entity_error(body: dict[str, Any]) -> str | None:
    """Why Teams would refuse the activity's AI `Message` entity, if it would."""
    roots = [e for e in body.get("entities") or [] if isinstance(e, dict) and e.get("type") == AI_ENTITY]
    if len(roots) > 1:
        return "Multiple root message entities are not allowed"
    for entity in roots:
        kinds = entity.get("additionalType")
        if kinds is not None and kinds != ["AIGeneratedContent"]:
            return "additionalType must be [\"AIGeneratedContent\"]"
        claims = entity.get("citation") or []
        if len(claims) > 10:
            return "Too many citations: at most 10 are allowed"
        for claim in claims:
            appearance = claim.get("appearance") if isinstance(claim, dict) else None
            if not isinstance(claim.get("position"), int) or claim["position"] <= 0 or not appearance:
                return "A citation needs a position above 0 and an appearance"
            if not isinstance(appearance.get("name"), str) or not isinstance(appearance.get("abstract"), str):
                return "A citation appearance needs a name and an abstract"
    return None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status, headers=headers)


def _markdown_html(text: str) -> str:
    """Roughly how Graph shows a Markdown message the bot sent: as HTML (bold, italic, breaks)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", out)
    return out.replace("\n", "<br>")


class TeamsRefused(AssertionError):
    """The bot answered an invoke in a way Teams would not show (see the module docstring)."""


class DialogValidation(AssertionError):
    """The Teams client refused to send a dialog: required inputs are empty; `messages` are the
    `errorMessage`s it shows under them."""

    def __init__(self, messages: dict[str, str]) -> None:
        super().__init__(f"required inputs are empty: {sorted(messages)}")
        self.messages = messages


CARD_ELEMENTS = {
    "TextBlock", "RichTextBlock", "Image", "ImageSet", "Container", "ColumnSet", "Column", "FactSet",
    "ActionSet", "Input.Text", "Input.Date", "Input.Time", "Input.Number", "Input.Toggle",
    "Input.ChoiceSet",
}
CARD_ACTIONS = {"Action.Submit", "Action.OpenUrl", "Action.ShowCard", "Action.ToggleVisibility",
                "Action.Execute"}
MAX_CARD_VERSION = (1, 5)


def _walk(elements: Any) -> list[dict[str, Any]]:
    """Every element of a card body, depth first (containers, columns, action sets)."""
    found: list[dict[str, Any]] = []
    for element in elements or []:
        if not isinstance(element, dict):
            continue
        found.append(element)
        found.extend(_walk(element.get("items")))
        found.extend(_walk(element.get("columns")))
    return found


def card_actions(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Every action of a card: its own and those of its action sets."""
    actions = [a for a in card.get("actions") or [] if isinstance(a, dict)]
    for element in _walk(card.get("body")):
        if element.get("type") == "ActionSet":
            actions.extend(a for a in element.get("actions") or [] if isinstance(a, dict))
    return actions


def check_card(card: Any) -> None:
    """What Teams needs to render an Adaptive Card in a message or a dialog; raises TeamsRefused."""
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        raise TeamsRefused("not an AdaptiveCard")
    try:
        version = tuple(int(n) for n in str(card.get("version")).split("."))
    except ValueError:
        raise TeamsRefused(f"bad card version {card.get('version')!r}") from None
    if version > MAX_CARD_VERSION:
        raise TeamsRefused(f"card version {card.get('version')} is newer than Teams renders")
    ids: set[str] = set()
    for element in _walk(card.get("body")):
        kind = element.get("type")
        if kind not in CARD_ELEMENTS:
            raise TeamsRefused(f"unknown card element {kind!r}")
        if str(kind).startswith("Input."):
            if not isinstance(element.get("id"), str) or not element["id"] or element["id"] in ids:
                raise TeamsRefused(f"an input needs a unique id: {element.get('id')!r}")
            ids.add(element["id"])
        if kind == "Input.ChoiceSet":
            choices = element.get("choices")
            if not isinstance(choices, list) or not all(
                    isinstance(c, dict) and isinstance(c.get("title"), str) and isinstance(c.get("value"), str)
                    for c in choices):
                raise TeamsRefused("ChoiceSet choices need a title and a value")
        if kind == "Image" and not isinstance(element.get("url"), str):
            raise TeamsRefused("an Image needs a url")
        if kind == "TextBlock" and not isinstance(element.get("text"), str):
            raise TeamsRefused("a TextBlock needs text")
    for action in card_actions(card):
        if action.get("type") not in CARD_ACTIONS:
            raise TeamsRefused(f"unknown card action {action.get('type')!r}")
        if action.get("type") == "Action.Submit" and not isinstance(action.get("data", {}), dict):
            raise TeamsRefused("Action.Submit data must be an object")
        msteams = (action.get("data") or {}).get("msteams") if action.get("type") == "Action.Submit" else None
        if isinstance(msteams, dict) and msteams.get("type") == "imBack" and (
                not isinstance(msteams.get("value"), str) or not msteams["value"]):
            raise TeamsRefused('an imBack button needs its message as a string "value"')
        if action.get("type") == "Action.OpenUrl" and not isinstance(action.get("url"), str):
            raise TeamsRefused("Action.OpenUrl needs a url")


def check_invoke_response(name: str, status: int, body: Any) -> None:
    """A dialog invoke's HTTP answer, as Teams takes it; raises TeamsRefused."""
    if status != 200:
        raise TeamsRefused(f"{name} answered HTTP {status}")
    if body is None:
        if name == "task/fetch":
            raise TeamsRefused("task/fetch must answer with a task (a dialog or a message)")
        return  # task/submit: no response closes the dialog
    task = body.get("task") if isinstance(body, dict) else None
    if not isinstance(task, dict) or task.get("type") not in ("continue", "message"):
        raise TeamsRefused(f"{name}: the body must be {{task: {{type: continue|message}}}}, got {body!r}")
    if task["type"] == "message":
        if not isinstance(task.get("value"), str) or not task["value"]:
            raise TeamsRefused("a message task needs its text as value")
        return
    value = task.get("value")
    if not isinstance(value, dict):
        raise TeamsRefused("a continue task needs a TaskInfo value")
    for size in ("height", "width"):
        if size in value and value[size] not in ("small", "medium", "large") and not isinstance(value[size], int):
            raise TeamsRefused(f"{size} must be small, medium, large or pixels")
    card = value.get("card")
    if not isinstance(card, dict) or card.get("contentType") != ADAPTIVE_CARD:
        raise TeamsRefused("a bot's dialog card is an Adaptive Card attachment {contentType, content}")
    check_card(card.get("content"))


@dataclass
class InvokeExchange:
    activity: dict[str, Any]
    status: int
    body: Any
    elapsed: float

    @property
    def dialog(self) -> TeamsDialog | None:
        """The dialog Teams shows now (None when the answer closed it or was a message)."""
        task = (self.body or {}).get("task") if isinstance(self.body, dict) else None
        if isinstance(task, dict) and task.get("type") == "continue":
            return TeamsDialog(task["value"])
        return None

    @property
    def message(self) -> str | None:
        """The message Teams shows in the dialog, if the answer was one."""
        task = (self.body or {}).get("task") if isinstance(self.body, dict) else None
        return task.get("value") if isinstance(task, dict) and task.get("type") == "message" else None

    @property
    def closed(self) -> bool:
        return self.status == 200 and self.body is None


class TeamsDialog:
    """The Teams client showing a dialog's Adaptive Card: values, labels, buttons, validation."""

    def __init__(self, task_info: dict[str, Any]) -> None:
        self.title: str = task_info.get("title") or ""
        self.card: dict[str, Any] = task_info["card"]["content"]
        self.elements = _walk(self.card.get("body"))
        self.inputs = {e["id"]: e for e in self.elements if str(e.get("type", "")).startswith("Input.")}
        self.values: dict[str, str] = {}
        for key, element in self.inputs.items():
            initial = element.get("value")
            if element["type"] == "Input.Toggle":
                on, off = element.get("valueOn", "true"), element.get("valueOff", "false")
                self.values[key] = on if initial == on else off
            else:
                self.values[key] = "" if initial is None else str(initial)

    # --- what a person sees ----------------------------------------------------------------

    def texts(self) -> list[str]:
        return [e["text"] for e in self.elements if e.get("type") == "TextBlock"]

    def text(self) -> str:
        return "\n".join(self.texts())

    def errors(self) -> list[str]:
        """Texts shown in the attention colour (errors)."""
        return [e["text"] for e in self.elements
                if e.get("type") == "TextBlock" and str(e.get("color", "")).lower() == "attention"]

    def labels(self) -> list[str]:
        return [e.get("label") or e.get("title") or "" for e in self.inputs.values()]

    def input(self, key: str) -> dict[str, Any]:
        """An input by id, label or (toggle) title."""
        if key in self.inputs:
            return self.inputs[key]
        found = [e for e in self.inputs.values()
                 if key in (e.get("label"), e.get("title"), str(e.get("label") or "").rstrip(" *"))]
        if len(found) != 1:
            raise KeyError(f"no single input labelled {key!r} (labels: {self.labels()})")
        return found[0]

    def buttons(self) -> list[str]:
        return [a.get("title") or "" for a in card_actions(self.card)]

    def error_under(self, key: str) -> str | None:
        """The attention text right after the input (or its column set / companion inputs)."""
        target = self.input(key)["id"]
        seen = False
        for element in self.elements:
            if element.get("id") == target:
                seen = True
                continue
            if not seen:
                continue
            if str(element.get("type", "")).startswith("Input.") and not str(element.get("id", "")).startswith(
                    target + "."):
                return None
            if element.get("type") == "TextBlock" and str(element.get("color", "")).lower() == "attention":
                return str(element["text"])
        return None

    # --- what a person does ----------------------------------------------------------------

    def fill(self, **values: Any) -> TeamsDialog:
        """Type / pick values, keyed by input id or label (`fill(**{"Summary": "x"})`). Choices
        are given by title or value (a list for a multi-select); toggles as bools."""
        for key, value in values.items():
            element = self.input(key)
            kind = element["type"]
            if kind == "Input.Toggle":
                self.values[element["id"]] = element.get("valueOn", "true") if value else element.get(
                    "valueOff", "false")
            elif kind == "Input.ChoiceSet":
                by_title = {c["title"]: c["value"] for c in element.get("choices") or []}
                listed = set(by_title.values())
                picked = [str(by_title.get(v, v)) for v in (value if isinstance(value, list) else [value]) if v]
                if any(v not in listed for v in picked):
                    raise ValueError(f"{key}: a ChoiceSet only offers {sorted(listed)}")
                if len(picked) > 1 and not element.get("isMultiSelect"):
                    raise ValueError(f"{key} takes one choice")
                self.values[element["id"]] = ",".join(picked)
            elif kind == "Input.Date" and value and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
                raise ValueError(f"{key}: the date picker gives YYYY-MM-DD")
            elif kind == "Input.Time" and value and not re.fullmatch(r"\d{2}:\d{2}", str(value)):
                raise ValueError(f"{key}: the time picker gives HH:MM")
            else:
                self.values[element["id"]] = "" if value is None else str(value)
        return self

    def press(self, title: str, *, validate: bool = True) -> dict[str, Any]:
        """The `task/submit` data for pressing the Action.Submit `title` (see the module doc);
        `validate=False` is a client that does not check required inputs."""
        action = next((a for a in card_actions(self.card) if a.get("title") == title), None)
        if action is None or action.get("type") != "Action.Submit":
            raise KeyError(f"no submit button {title!r} (buttons: {self.buttons()})")
        associated = action.get("associatedInputs", "auto") != "none"
        if validate and associated:
            missing = {key: str(e.get("errorMessage") or "required") for key, e in self.inputs.items()
                       if e.get("isRequired") and not self.values.get(key, "").strip()}
            if missing:
                raise DialogValidation(missing)
        data: dict[str, Any] = dict(self.values) if associated else {}
        data.update(action.get("data") or {})
        return data


class FakeConnector:
    def __init__(self, *, enforce_limits: bool = False, tenant_rps: int = 50,
                 invoke_deadline: float = 15.0) -> None:
        self.enforce_limits = enforce_limits
        self.tenant_rps = tenant_rps
        self.calls: list[Call] = []
        self.activities: dict[str, FakeActivity] = {}
        self.members: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.throttled = 0  # 429s answered because of enforced limits (not injected)
        self._faults: list[Fault] = []
        self._ids = itertools.count(1_700_000_000_001)
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._tenant_window: deque[float] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.invoke_deadline = invoke_deadline
        self.invokes: list[InvokeExchange] = []
        self.bot_token: str | None = None  # what inline-image downloads must carry (None: nothing)
        self.files: dict[str, tuple[bytes, str, str]] = {}  # id -> (bytes, content type, signature)
        self.downloads: list[dict[str, Any]] = []  # {path, authorization, status}
        self.token_leaks: list[str] = []  # pre-authenticated links fetched with a bearer token
        self.card_problems: list[str] = []  # posted cards Teams could not render (see check_card)
        # Microsoft Graph (see the module docstring)
        self.teams: dict[str, dict[str, str]] = {TEAM_ID: {"name": "My Team", "aadGroupId": TEAM_GROUP_ID}}
        self.rsc_granted: set[str] = set()  # group ids whose owner granted ChannelMessage.Read.Group
        self.graph_token: str | None = None  # the bearer Graph requests must carry (None: any)
        self.graph_messages: dict[str, dict[str, Any]] = {}  # what users posted in channels, by id
        self.graph_calls: list[dict[str, Any]] = []  # {path, query, authorization, status}
        self.graph_delay = 0.0  # seconds Graph takes to answer

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def graph_url(self) -> str:
        return f"{self.url}graph/v1.0"

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v3/conversations", self._create_conversation)
        app.router.add_post("/v3/conversations/{cid}/activities", self._post_activity)
        app.router.add_post("/v3/conversations/{cid}/activities/{reply_to}", self._post_activity)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._put_activity)
        app.router.add_delete("/v3/conversations/{cid}/activities/{aid}", self._delete_activity)
        app.router.add_get("/v3/conversations/{cid}/members/{uid}", self._get_member)
        app.router.add_get("/v3/attachments/{aid}/views/{view}", self._get_attachment)
        app.router.add_get("/personal/files/{fid}", self._get_file)
        app.router.add_get("/v3/teams/{team}", self._get_team)
        app.router.add_get("/graph/v1.0/teams/{group}/channels/{channel}/messages/{mid}", self._graph_message)
        app.router.add_get("/graph/v1.0/teams/{group}/channels/{channel}/messages/{mid}/replies",
                           self._graph_replies)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- test API --------------------------------------------------------------------------

    def add_member(self, member_id: str, aad_object_id: str, name: str, email: str | None,
                   upn: str | None = None) -> None:
        member = {"id": member_id, "name": name, "aadObjectId": aad_object_id, "email": email,
                  "userPrincipalName": upn or email, "tenantId": TENANT, "userRole": "user"}
        self.members[member_id] = member
        self.members[aad_object_id] = member

    def fail_next(
        self,
        kind: str,
        *,
        count: int = 1,
        retry_after: float | None = None,
        method: str | None = None,
        stream_type: str | None = None,
        when: Callable[[str, str, Any], bool] | None = None,
    ) -> None:
        """Inject a failure for the next `count` matching calls.

        kinds: rate_limit (429), precondition (412), bad_gateway (502), unavailable (503),
        bad_request (400 BadRequest: Teams refusing the message as sent),
        stream_timeout / stream_canceled / stream_not_allowed (403 ContentStreamNotAllowed, on
        streaming requests by default), writes_blocked (403 MessageWritesBlocked), bot_removed
        (403 without a subCode, as Teams answers when the bot left the team), not_found (404
        ConversationNotFound, e.g. a reply chain whose root message was deleted)."""
        if when is None:
            def when(m: str, path: str, body: Any) -> bool:
                if method is not None and m != method:
                    return False
                info = streaminfo_of(body)
                if kind in STREAM_ERRORS and info is None:
                    return False
                if stream_type is not None and (info or {}).get("streamType", "streaming") != stream_type:
                    return False
                return m in ("POST", "PUT") or (method is not None and m == method)
        self._faults.append(Fault(kind, count, retry_after, when))

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "PUT", "DELETE") and "/activities" in c.path]

    def calls_for(self, conversation_id: str) -> list[Call]:
        return [c for c in self.writes() if f"/v3/conversations/{conversation_id}/" in c.path]

    def messages(self, conversation_id: str | None = None) -> list[FakeActivity]:
        """Visible bot messages (streams included), oldest first; `conversation_id` without
        ";messageid=" matches every reply chain of that channel."""
        return [a for a in self.activities.values()
                if not a.deleted and a.type == "message"
                and (conversation_id is None or a.conversation_id == conversation_id
                     or bare(a.conversation_id) == conversation_id)]

    def in_conversation(self, conversation_id: str) -> list[FakeActivity]:
        """Every visible bot message posted with exactly this conversation id."""
        return [a for a in self.activities.values()
                if not a.deleted and a.conversation_id == conversation_id and a.type == "message"]

    def visible_text(self, conversation_id: str, sep: str = "") -> str:
        return sep.join(a.text for a in self.in_conversation(conversation_id))

    def refused(self, conversation_id: str | None = None) -> list[Call]:
        """Writes answered with a 4xx other than 429 (Teams refusing what was sent)."""
        return [c for c in self.writes() if 400 <= c.status < 500 and c.status != 429
                and (conversation_id is None or f"/v3/conversations/{conversation_id}/" in c.path)]

    # --- dialogs (invokes into the bot) -----------------------------------------------------

    async def invoke(self, session: Any, bot_url: str, activity: dict[str, Any]) -> InvokeExchange:
        """POST an invoke activity to the bot (`bot_url` is its /api/messages) and take the HTTP
        answer as Teams would: recorded in `invokes`, checked (`TeamsRefused` when Teams could
        not show it, or it came after `invoke_deadline`)."""
        started = time.monotonic()
        async with session.post(bot_url, json=activity) as response:
            raw = await response.read()
            status = response.status
        elapsed = time.monotonic() - started
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode(errors="replace")
        if body == "null":
            body = None
        exchange = InvokeExchange(activity, status, body, elapsed)
        self.invokes.append(exchange)
        if elapsed > self.invoke_deadline:
            raise TeamsRefused(f"{activity.get('name')} answered after {elapsed:.1f} s; Teams gave up")
        check_invoke_response(str(activity.get("name")), status, body)
        return exchange

    # --- files -----------------------------------------------------------------------------

    def add_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> dict[str, Any]:
        """A file sent in a personal chat: the `file.download.info` attachment Teams puts on the
        message (its `downloadUrl` is pre-authenticated)."""
        fid = uuid.uuid4().hex[:12]
        signature = uuid.uuid4().hex
        self.files[fid] = (data, content_type, signature)
        kind = name.rsplit(".", 1)[-1] if "." in name else ""
        return {
            "contentType": "application/vnd.microsoft.teams.file.download.info",
            "contentUrl": f"https://contoso.sharepoint.com/personal/alice/Documents/{name}",
            "name": name,
            "content": {"downloadUrl": f"{self.url}personal/files/{fid}?sig={signature}",
                        "uniqueId": fid, "fileType": kind, "etag": "1"},
        }

    def add_inline_image(self, data: bytes, content_type: str = "image/*") -> dict[str, Any]:
        """An image pasted into the message: on the connector, behind the bot's token."""
        aid = f"0-eus-d1-{uuid.uuid4().hex[:16]}"
        self.files[aid] = (data, "image/png", "")
        return {"contentType": content_type, "contentUrl": f"{self.url}v3/attachments/{aid}/views/original"}

    async def _get_attachment(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        found = self.files.get(request.match_info["aid"])
        if self.bot_token is not None and authorization != f"Bearer {self.bot_token}":
            response = _error(401, "Unauthorized", "Authorization has been denied for this request.")
        elif found is None:
            response = _error(404, "NotFound", "Attachment not found")
        else:
            response = web.Response(body=found[0], content_type=found[1])
        self.downloads.append({"path": request.path, "authorization": authorization, "status": response.status})
        return response

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if authorization:
            self.token_leaks.append(request.path)
        found = self.files.get(request.match_info["fid"])
        if found is None or request.query.get("sig") != found[2]:
            response = _error(403, "accessDenied", "Access denied")
        else:
            response = web.Response(body=found[0], content_type=found[1])
        self.downloads.append({"path": request.path, "authorization": authorization, "status": response.status})
        return response

    # --- Microsoft Graph: a channel's reply chains --------------------------------------------

    def grant_rsc(self, group_id: str = TEAM_GROUP_ID) -> None:
        """The team's owner consented to ChannelMessage.Read.Group when adding the app."""
        self.rsc_granted.add(group_id)

    def graph_post(self, activity: dict[str, Any], *, created: float | None = None) -> dict[str, Any]:
        """Record a channel message (as built by `TeamsUser.channel`) where Graph shows it; the
        activity is returned unchanged (post it to the bot if it mentions the bot)."""
        data = activity.get("channelData") or {}
        channel = (data.get("channel") or {}).get("id") or bare(activity["conversation"]["id"])
        conversation = activity["conversation"]["id"]
        root = conversation.split(";messageid=", 1)[1] if ";messageid=" in conversation else activity["id"]
        text = activity.get("text") or ""
        sender = activity.get("from") or {}
        mentions: list[dict[str, Any]] = []
        for entity in activity.get("entities") or []:  # Graph numbers the <at> tags of the body
            if entity.get("type") != "mention" or entity.get("text") not in text:
                continue
            n = len(mentions)
            who = entity.get("mentioned") or {}
            name = who.get("name") or ""
            text = text.replace(entity["text"], f'<at id="{n}">{name}</at>', 1)
            mentioned = ({"application": {"id": who["id"].split(":", 1)[1], "displayName": name,
                                          "applicationIdentityType": "bot"}, "user": None}
                         if str(who.get("id")).startswith("28:") else
                         {"user": {"id": who.get("aadObjectId") or who.get("id"), "displayName": name}})
            mentions.append({"id": n, "mentionText": name, "mentioned": mentioned})
        self.graph_messages[activity["id"]] = {
            "id": activity["id"], "channel": channel, "root": root, "created": created or time.time(),
            "from": {"application": None, "device": None,
                     "user": {"id": sender.get("aadObjectId"), "displayName": sender.get("name"),
                              "userIdentityType": "aadUser"}},
            "body": {"contentType": "html", "content": f"<p>{text}</p>"},
            "mentions": mentions,
        }
        return activity

    def graph_delete(self, message_id: str) -> None:
        """A user deleted their message: Graph still lists it, with `deletedDateTime`."""
        self.graph_messages[message_id]["deleted"] = time.time()

    @staticmethod
    def _graph_time(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def _graph_message_json(self, record: dict[str, Any]) -> dict[str, Any]:
        created = self._graph_time(record["created"])
        return {
            "id": record["id"], "replyToId": None if record["id"] == record["root"] else record["root"],
            "etag": record["id"], "messageType": record.get("messageType", "message"),
            "createdDateTime": created, "lastModifiedDateTime": created,
            "deletedDateTime": self._graph_time(record["deleted"]) if record.get("deleted") else None,
            "subject": None, "summary": None, "chatId": None, "importance": "normal", "locale": "en-us",
            "from": record["from"], "body": record["body"],
            "channelIdentity": {"teamId": TEAM_GROUP_ID, "channelId": record["channel"]},
            "attachments": record.get("attachments", []), "mentions": record.get("mentions", []),
            "reactions": [],
        }

    def _chain(self, channel: str, root: str) -> list[dict[str, Any]]:
        """Every message of a reply chain, root first, as Graph records them (users' and the bot's)."""
        found = [r for r in self.graph_messages.values() if r["channel"] == channel and r["root"] == root]
        app_id = BOT_ID.split(":", 1)[1]
        for activity in self.activities.values():
            if activity.type != "message" or activity.conversation_id != f"{channel};messageid={root}":
                continue
            if activity.deleted:
                continue
            body = ({"contentType": "html", "content": f"<p>{_markdown_html(activity.text)}</p>"} if activity.text
                    else {"contentType": "html", "content": f'<attachment id="{activity.id}"></attachment>'})
            found.append({
                "id": activity.id, "channel": channel, "root": root, "created": activity.created,
                "from": {"user": None, "device": None,
                         "application": {"id": app_id, "displayName": BOT_NAME, "applicationIdentityType": "bot"}},
                "body": body,
                "attachments": [{"id": activity.id, "contentType": a.get("contentType"), "content": None}
                                for a in activity.attachments],
            })
        return sorted(found, key=lambda r: (r["id"] != root, r["created"]))

    def _graph_refusal(self, request: web.Request) -> web.Response | None:
        """Graph's answer when the request cannot be served (auth, consent, bad ids or query)."""
        authorization = request.headers.get("Authorization")
        if self.graph_token is not None and authorization != f"Bearer {self.graph_token}":
            return _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        group = request.match_info["group"]
        if group not in {t["aadGroupId"] for t in self.teams.values()}:
            return _error(404, "NotFound", f"No team found with Group Id {group}")
        if group not in self.rsc_granted:
            return _error(403, "Forbidden", "Missing role permissions on the request. API requires one of "
                          "'ChannelMessage.Read.Group, ChannelMessage.Read.All, Group.Read.All, "
                          "Group.ReadWrite.All'. Roles on the request ''.")
        for option in request.query:
            if option != "$top":
                return _error(400, "BadRequest", f"Query option '{option}' is not allowed.")
        return None

    def _graph_log(self, request: web.Request, response: web.Response) -> web.Response:
        self.graph_calls.append({"path": request.path, "query": dict(request.query),
                                 "authorization": request.headers.get("Authorization"),
                                 "status": response.status})
        return response

    async def _graph_chain(self, request: web.Request) -> list[dict[str, Any]] | web.Response:
        """The reply chain a Graph message route names, or the refusal Graph would answer."""
        await asyncio.sleep(self.graph_delay)
        refusal = self._graph_refusal(request)
        if refusal is not None:
            return self._graph_log(request, refusal)
        channel, mid = request.match_info["channel"], request.match_info["mid"]
        chain = self._chain(channel, mid)
        if not chain or chain[0]["id"] != mid:
            return self._graph_log(request, _error(404, "NotFound", "Message not found"))
        return chain

    async def _graph_message(self, request: web.Request) -> web.Response:
        chain = await self._graph_chain(request)
        if isinstance(chain, web.Response):
            return chain
        return self._graph_log(request, web.json_response(self._graph_message_json(chain[0])))

    async def _graph_replies(self, request: web.Request) -> web.Response:
        chain = await self._graph_chain(request)
        if isinstance(chain, web.Response):
            return chain
        top_raw = request.query.get("$top", str(GRAPH_PAGE))
        if not top_raw.isdigit() or not 1 <= int(top_raw) <= 50:
            return self._graph_log(request, _error(400, "BadRequest", f"Invalid page size specified: "
                                                   f"'{top_raw}'. Must be between 1 and 50 inclusive."))
        replies = [self._graph_message_json(r) for r in reversed(chain[1:])]  # newest first
        top = int(top_raw)
        body: dict[str, Any] = {"@odata.count": len(replies[:top]), "value": replies[:top]}
        if len(replies) > top:
            body["@odata.nextLink"] = f"{self.graph_url}{request.path.removeprefix('/graph/v1.0')}" \
                                      f"?$top={top}&$skiptoken={top}"
        return self._graph_log(request, web.json_response(body))

    async def _get_team(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        team = self.teams.get(request.match_info["team"])
        if self.bot_token is not None and authorization != f"Bearer {self.bot_token}":
            response = _error(401, "Unauthorized", "Authorization has been denied for this request.")
        elif team is None:
            response = _error(404, "NotFound", "Team not found")
        else:
            response = web.json_response({"id": request.match_info["team"], **team})
        self.calls.append(Call("GET", request.path, None, response.status))
        return response

    # --- faults and limits -----------------------------------------------------------------

    def _take_fault(self, method: str, path: str, body: Any) -> Fault | None:
        for fault in self._faults:
            if fault.count > 0 and fault.when(method, path, body):
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: Fault, activity: FakeActivity | None) -> web.Response:
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        if fault.kind == "rate_limit":
            return _error(429, "Throttled", "API calls quota exceeded! Maximum allowed calls exceeded.",
                          headers)
        if fault.kind == "precondition":
            return _error(412, "PreconditionFailed", "Precondition failed, please retry.", headers)
        if fault.kind == "bad_gateway":
            return _error(502, "BadGateway", "Bad gateway.", headers)
        if fault.kind == "unavailable":
            return _error(503, "ServiceUnavailable", "Service unavailable.", headers)
        if fault.kind == "bad_request":
            return _error(400, "BadRequest", "The activity was refused.")
        if fault.kind in STREAM_ERRORS:
            if activity is not None:
                activity.stream_state = {"stream_timeout": "expired", "stream_canceled": "canceled"}.get(
                    fault.kind, activity.stream_state)
            return _error(403, "ContentStreamNotAllowed", STREAM_ERRORS[fault.kind])
        if fault.kind == "writes_blocked":
            return _error(403, "Forbidden", "Message writes are blocked for this bot.",
                          subCode="MessageWritesBlocked")
        if fault.kind == "bot_removed":
            return _error(403, "BotNotInConversationRoster", "The bot is not part of the conversation roster.")
        if fault.kind == "not_found":
            return _error(404, "ConversationNotFound", "Conversation not found.")
        raise AssertionError(f"unknown fault {fault.kind}")

    def _over_limit(self, conversation_id: str, *, read: bool = False) -> bool:
        """Documented limits: sends/updates per conversation, every call per tenant."""
        if not self.enforce_limits:
            return False
        now = time.monotonic()
        if read:
            tenant = self._tenant_window
            while tenant and now - tenant[0] > 1.0:
                tenant.popleft()
            if len(tenant) >= self.tenant_rps:
                self.throttled += 1
                return True
            tenant.append(now)
            return False
        window = self._windows[bare(conversation_id)]
        while window and now - window[0] > 30.0:
            window.popleft()
        tenant = self._tenant_window
        while tenant and now - tenant[0] > 1.0:
            tenant.popleft()
        in_1 = sum(1 for t in window if now - t < 1.0)
        in_2 = sum(1 for t in window if now - t < 2.0)
        if in_1 >= 7 or in_2 >= 8 or len(window) >= 60 or len(tenant) >= self.tenant_rps:
            self.throttled += 1
            return True
        window.append(now)
        tenant.append(now)
        return False

    # --- handlers --------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _record(self, request: web.Request, body: Any, response: web.Response) -> web.Response:
        self.calls.append(Call(request.method, request.path, body, response.status))
        for attachment in (body.get("attachments") or []) if isinstance(body, dict) else []:
            if isinstance(attachment, dict) and attachment.get("contentType") == ADAPTIVE_CARD:
                try:
                    check_card(attachment.get("content"))
                except TeamsRefused as exc:
                    self.card_problems.append(f"{request.method} {request.path}: {exc}")
        return response

    def _new_id(self) -> str:
        return str(next(self._ids))

    async def _post_activity(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return self._record(request, body, self._post(request.match_info["cid"], request.path, body))

    def _post(self, cid: str, path: str, body: Any) -> web.Response:
        if not isinstance(body, dict) or not body.get("type"):
            return _error(400, "BadArgument", "Activity is missing or has no type")
        info = streaminfo_of(body)
        stream = self.activities.get(info.get("streamId", "")) if info and info.get("streamId") else None
        fault = self._take_fault("POST", path, body)
        if fault is not None:
            return self._fault_response(fault, stream)
        if self._over_limit(cid):
            return _error(429, "Throttled", "API calls quota exceeded!", {"Retry-After": "1"})
        kind = body["type"]
        text = body.get("text") or ""
        if info is None:
            if kind == "typing":
                return web.json_response({"id": ""}, status=201)
            if kind != "message":
                return _error(400, "BadArgument", f"Unsupported activity type {kind}")
            if not text and not body.get("attachments"):
                return _error(400, "BadArgument", "Message has no text and no attachments")
            problem = ai_entity_error(body)
            if problem is not None:
                return _error(400, "BadSyntax", problem)
            ids = []
            for part in split_activity(body):  # text + card: shown as two messages
                activity = FakeActivity(self._new_id(), cid, "message", part.get("text") or "", part, [part])
                self.activities[activity.id] = activity
                ids.append(activity.id)
            return web.json_response({"id": ids[0]}, status=201)
        # --- streaming ---
        if cid.startswith("19:"):
            return _error(403, "ContentStreamNotAllowed", STREAM_ERRORS["stream_not_allowed"])
        stream_type = info.get("streamType")
        sequence = info.get("streamSequence")
        if kind == "typing":
            if stream_type not in ("informative", "streaming") or not isinstance(sequence, int):
                return _error(400, "BadSyntax",
                              "Only start streaming and continue streaming types are allowed as a typing activity")
            if not text:
                return _error(400, "BadRequest", "Start streaming activities should include text")
            if stream is None:
                if info.get("streamId"):
                    return _error(404, "NotFound", "Unknown stream")
                if sequence != 1:
                    return web.json_response(
                        {"error": {"code": "ContentStreamSequenceOrderPreConditionFailed"}}, status=202)
                activity = FakeActivity(self._new_id(), cid, "message", text, body, [body], stream=True,
                                        sequence=1)
                if stream_type == "streaming":
                    activity.streamed_text = text
                self.activities[activity.id] = activity
                return web.json_response({"id": activity.id}, status=201)
            blocked = self._stream_blocked(stream)
            if blocked is not None:
                return blocked
            if sequence != stream.sequence + 1:
                return web.json_response(
                    {"error": {"code": "ContentStreamSequenceOrderPreConditionFailed"}}, status=202)
            if stream_type == "streaming":
                if not text.startswith(stream.streamed_text):
                    return _error(403, "ContentStreamNotAllowed",
                                  "Request streamed content should contain the previously streamed content")
                stream.streamed_text = text
                stream.text = text
            elif not stream.streamed_text:
                stream.text = text
            stream.sequence = sequence
            stream.json = body
            stream.history.append(body)
            return web.json_response({}, status=202)
        if kind != "message" or stream_type != "final" or stream is None:
            return _error(400, "BadSyntax", "A final stream message needs type message, streamType final and streamId")
        if "streamSequence" in info:
            return _error(400, "BadSyntax", "streamSequence must not be set on the final message")
        blocked = self._stream_blocked(stream)
        if blocked is not None:
            return blocked
        if not text and not body.get("attachments"):
            return _error(400, "BadRequest", "Final stream message has no content")
        problem = ai_entity_error(body)
        if problem is not None:
            return _error(400, "BadSyntax", problem)
        first, *more = split_activity(body)  # the streamed message, then each attachment on its own
        stream.stream_state = "final"
        stream.text = first.get("text") or ""
        stream.json = first
        stream.history.append(body)
        for part in more:
            extra = FakeActivity(self._new_id(), cid, "message", "", part, [part])
            self.activities[extra.id] = extra
        return web.json_response({"id": stream.id}, status=201)

    @staticmethod
    def _stream_blocked(stream: FakeActivity) -> web.Response | None:
        if stream.stream_state == "final":
            return _error(403, "ContentStreamNotAllowed",
                          "Content stream is not allowed on an already completed streamed message")
        if stream.stream_state == "expired":
            return _error(403, "ContentStreamNotAllowed", STREAM_ERRORS["stream_timeout"])
        if stream.stream_state == "canceled":
            return _error(403, "ContentStreamNotAllowed", STREAM_ERRORS["stream_canceled"])
        return None

    async def _put_activity(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        cid, aid = request.match_info["cid"], request.match_info["aid"]
        activity = self.activities.get(aid)
        fault = self._take_fault("PUT", request.path, body)
        if fault is not None:
            return self._record(request, body, self._fault_response(fault, None))
        if self._over_limit(cid):
            return self._record(request, body, _error(429, "Throttled", "API calls quota exceeded!",
                                                      {"Retry-After": "1"}))
        if activity is None or activity.deleted:
            return self._record(request, body, _error(404, "ActivityNotFound", "Unknown activity"))
        if not isinstance(body, dict) or (not body.get("text") and not body.get("attachments")):
            return self._record(request, body, _error(400, "BadArgument", "Update has no content"))
        if streaminfo_of(body) is not None:
            return self._record(request, body, _error(400, "BadSyntax", "Updates cannot carry streaminfo"))
        problem = ai_entity_error(body)
        if problem is not None:
            return self._record(request, body, _error(400, "BadSyntax", problem))
        if len(split_activity(body)) > 1:  # text + card, or two cards: one message cannot show them
            return self._record(request, body, _error(400, "BadSyntax", MULTIPLE_ACTIVITIES))
        activity.text = body.get("text") or ""
        activity.json = body
        activity.history.append(body)
        if activity.stream and activity.stream_state == "open":
            activity.stream_state = "final"
        return self._record(request, body, web.json_response({"id": aid}, status=200))

    async def _delete_activity(self, request: web.Request) -> web.Response:
        aid = request.match_info["aid"]
        activity = self.activities.get(aid)
        if activity is not None:
            activity.deleted = True
        return self._record(request, None, web.json_response({}, status=200))

    async def _get_member(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        fault = self._take_fault("GET", request.path, None)
        if fault is not None:
            return self._record(request, None, self._fault_response(fault, None))
        if self._over_limit(request.match_info["cid"], read=True):
            return self._record(request, None, _error(429, "Throttled", "API calls quota exceeded!",
                                                      {"Retry-After": "1"}))
        member = self.members.get(uid)
        if member is None:
            return self._record(request, None, _error(404, "MemberNotFoundInConversation", "Member not found"))
        return self._record(request, None, web.json_response(member))

    async def _create_conversation(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        fault = self._take_fault("POST", request.path, body)
        if fault is not None:
            return self._record(request, body, self._fault_response(fault, None))
        if not isinstance(body, dict) or not body.get("members"):
            return self._record(request, body, _error(400, "BadArgument", "members required"))
        tenant = ((body.get("channelData") or {}).get("tenant") or {}).get("id") or body.get("tenantId") \
            or body.get("tenantID")
        if not tenant:
            return self._record(request, body, _error(400, "BadArgument", "tenant id required"))
        conversation = {"id": f"a:dm-{uuid.uuid4().hex[:12]}", "serviceUrl": self.url, "activityId": None}
        self.created.append({"request": body, "response": conversation})
        return self._record(request, body, web.json_response(conversation, status=201))


# --- inbound activities, shaped like Teams sends them ------------------------------------------

_inbound_ids = itertools.count(1_600_000_000_001)


@dataclass
class TeamsUser:
    """A Teams user of tenant TENANT; builds the activities Teams would POST to the bot."""

    member_id: str  # "29:..."
    aad_object_id: str
    name: str
    service_url: str
    tenant: str = TENANT

    def _base(self, kind: str, conversation: dict[str, Any], *, activity_id: str | None = None,
              channel_data: dict[str, Any] | None = None) -> dict[str, Any]:
        data = {"tenant": {"id": self.tenant}, **(channel_data or {})}
        return {
            "type": kind,
            "id": activity_id or str(next(_inbound_ids)),
            "timestamp": "2026-01-01T00:00:00.000Z",
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {"id": self.member_id, "name": self.name, "aadObjectId": self.aad_object_id},
            "conversation": {**conversation, "tenantId": self.tenant},
            "recipient": {"id": BOT_ID, "name": BOT_NAME},
            "locale": "en-US",
            "channelData": data,
        }

    def personal(self, text: str, *, conversation_id: str | None = None, activity_id: str | None = None,
                 value: Any = None, attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        conv = {"id": conversation_id or f"a:personal-{self.aad_object_id}", "conversationType": "personal"}
        activity = self._base("message", conv, activity_id=activity_id)
        activity["text"] = text
        activity["textFormat"] = "plain"
        if value is not None:
            activity["value"] = value
        if attachments:
            # Teams also sends the message's own HTML as a text/html attachment
            html = f"<p>{text}</p>" if text else "<p>&nbsp;</p>"
            activity["attachments"] = [*attachments, {"contentType": "text/html", "content": html}]
        return activity

    def task_fetch(self, conversation: dict[str, Any], data: dict[str, Any], *,
                   timezone: str | None = "America/Los_Angeles") -> dict[str, Any]:
        """Pressing an Action.Submit whose data says `msteams.type: task/fetch` (a dialog opens)."""
        activity = self._base("invoke", conversation)
        activity["name"] = "task/fetch"
        activity["value"] = {"data": dict(data), "context": {"theme": "default"}}
        if timezone:
            activity["localTimezone"] = timezone
            activity["entities"] = [{"type": "clientInfo", "locale": "en-US", "country": "US",
                                     "platform": "Web", "timezone": timezone}]
        return activity

    def task_submit(self, conversation: dict[str, Any], data: dict[str, Any], *,
                    timezone: str | None = "America/Los_Angeles") -> dict[str, Any]:
        """Pressing an Action.Submit inside a dialog (`TeamsDialog.press` gives `data`)."""
        activity = self.task_fetch(conversation, data, timezone=timezone)
        activity["name"] = "task/submit"
        return activity

    @staticmethod
    def _mention() -> tuple[str, dict[str, Any]]:
        tag = f"<at>{BOT_NAME}</at>"
        return tag, {"type": "mention", "text": tag, "mentioned": {"id": BOT_ID, "name": BOT_NAME}}

    def channel(self, text: str, *, channel_id: str = "19:general@thread.tacv2", root_id: str | None = None,
                activity_id: str | None = None, mention: bool = True, value: Any = None,
                group_id: bool = True) -> dict[str, Any]:
        """A channel message; a new post (root_id None) or a reply in the chain of `root_id`.
        `channelData.team` carries the team's `aadGroupId` unless `group_id=False`."""
        activity_id = activity_id or str(next(_inbound_ids))
        root = root_id or activity_id
        conv = {"id": f"{channel_id};messageid={root}", "conversationType": "channel", "isGroup": True}
        team: dict[str, Any] = {"id": TEAM_ID, "name": "My Team"}
        if group_id:
            team["aadGroupId"] = TEAM_GROUP_ID
        activity = self._base("message", conv, activity_id=activity_id,
                              channel_data={"teamsChannelId": channel_id, "teamsTeamId": TEAM_ID,
                                            "channel": {"id": channel_id}, "team": team})
        if root_id:
            activity["replyToId"] = root_id
        if mention:
            tag, entity = self._mention()
            activity["text"] = f"{tag} {text}"
            activity["entities"] = [entity]
        else:
            activity["text"] = text
        if value is not None:
            activity["value"] = value
        return activity

    def group(self, text: str, *, conversation_id: str = "19:group-chat@thread.v2", mention: bool = True,
              activity_id: str | None = None) -> dict[str, Any]:
        conv = {"id": conversation_id, "conversationType": "groupChat", "isGroup": True}
        activity = self._base("message", conv, activity_id=activity_id)
        if mention:
            tag, entity = self._mention()
            activity["text"] = f"{tag} {text}"
            activity["entities"] = [entity]
        else:
            activity["text"] = text
        return activity

    def feedback(self, conversation: dict[str, Any], bot_message_id: str | None, reaction: str = "like",
                 comment: str = "", *, playground: bool = False) -> dict[str, Any]:
        """A 👍/👎 click (with the text typed into the feedback box). Teams names the rated message
        in `replyToId` and sends the text as `{"feedbackText": …}` JSON; the Agents Playground
        (`playground=True`, or `bot_message_id=None`) names no message and sends the text as is."""
        activity = self._base("invoke", conversation)
        activity["name"] = "message/submitAction"
        if bot_message_id is not None:
            activity["replyToId"] = bot_message_id
        feedback = comment if playground else json.dumps({"feedbackText": comment})
        activity["value"] = {"actionName": "feedback", "actionValue": {"reaction": reaction, "feedback": feedback}}
        return activity

    def press(self, conversation: dict[str, Any], data: dict[str, Any], card_message_id: str | None = None,
              *, channel_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """An Adaptive Card `Action.Submit` press: a message activity with the action's data as its
        value and no text, replying to the card's message."""
        activity = self._base("message", conversation, channel_data=channel_data)
        activity["value"] = dict(data)
        if card_message_id is not None:
            activity["replyToId"] = card_message_id
        return activity

    def install(self, *, conversation_id: str | None = None) -> dict[str, Any]:
        """The conversationUpdate Teams sends when the user installs the app (personal scope)."""
        conv = {"id": conversation_id or f"a:personal-{self.aad_object_id}", "conversationType": "personal"}
        activity = self._base("conversationUpdate", conv)
        activity["membersAdded"] = [{"id": BOT_ID}]
        return activity

    def installation_update(self, action: str = "add", *, conversation_id: str | None = None) -> dict[str, Any]:
        """The installationUpdate Teams sends with it: `add`, `remove`, `add-upgrade` (a new app
        version), `remove-upgrade`."""
        conv = {"id": conversation_id or f"a:personal-{self.aad_object_id}", "conversationType": "personal"}
        activity = self._base("installationUpdate", conv)
        activity["action"] = action
        return activity

    def uninstall(self, *, conversation_id: str | None = None) -> dict[str, Any]:
        """The conversationUpdate with the bot in `membersRemoved` (the app was removed)."""
        conv = {"id": conversation_id or f"a:personal-{self.aad_object_id}", "conversationType": "personal"}
        activity = self._base("conversationUpdate", conv)
        activity["membersRemoved"] = [{"id": BOT_ID}]
        return activity

    def act(self, conversation: dict[str, Any], action: dict[str, Any],
            card_message_id: str | None = None) -> dict[str, Any]:
        """What Teams sends when this user presses a card button: an `imBack` button posts its
        value as the user's own message (msteams-docs `cards-actions.md`), any other
        Action.Submit is a card submit (`press`)."""
        if action.get("type") != "Action.Submit":
            raise ValueError(f"{action.get('type')} sends nothing to the bot")
        data = action.get("data") or {}
        msteams: dict[str, Any] = data["msteams"] if isinstance(data.get("msteams"), dict) else {}
        if msteams.get("type") == "imBack":
            activity = self._base("message", conversation)
            activity["text"] = msteams["value"]
            activity["textFormat"] = "plain"
            return activity
        return self.press(conversation, data, card_message_id)


class GraphCredentials:
    """Entra ID issuing the bot's app-only Graph token (client credentials), for `ThreadReader`:
    `for_tenant(tenant)` is what `credentials_for` returns; every token asked for is recorded."""

    def __init__(self, token: str = "graph-token-of-the-bot") -> None:
        self.token = token
        self.requested: list[str] = []  # tenants, in the order tokens were asked for
        self.fail = False

    def for_tenant(self, tenant: str) -> Any:
        issuer = self

        class Credentials:
            def get_access_token(self, force_refresh: bool = False) -> str:
                issuer.requested.append(tenant)
                if issuer.fail:
                    raise PermissionError("AADSTS7000215: Invalid client secret provided.")
                return issuer.token

        return Credentials()
