"""`TeamsAdapter`: build, mount (`POST /api/messages`), start/stop, and the `ChatAdapter` methods.

Inbound requests are checked here before botbuilder sees them (content type, JSON, activity
shape: a `type`, a `conversation` with an id) so garbage gets a clear 4xx instead of the
misleading 404/500 botbuilder's aiohttp integration produces. Authentication is botbuilder's own:
`CloudAdapter.process_activity` with `ConfigurationBotFrameworkAuthentication`, its signing keys
read off the event loop (keys.py). Any failure before the turn starts is the token's: 401 (503
when the signing keys cannot be fetched). Without `TEAMS_APP_ID` it accepts unauthenticated
requests (local development), and says so at start-up.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import jwt
from aiohttp import web
from botbuilder.core import TurnContext, serializer_helper
from botbuilder.core.teams import TeamsInfo
from botbuilder.schema import (
    Activity,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)
from msrest.exceptions import DeserializationError

from bridge.answers.sinks import EditingSink, WithFallback
from bridge.contract import Address, ChatAdapter, CheckLine, Core, ReplySink
from bridge.errors import AttachmentRefused, PlatformError
from bridge.mechanisms.ratelimit import WriteBudget
from bridge.models import Answer, Attachment, Capabilities, ChatUser, Employee, Frame, Rate, ThreadKey

from .bot import TeamsBot, TenantRefused
from .connector import (
    AuthRefresher,
    TokenNotReady,
    build_cloud_adapter,
    channel_openid_url,
    outbound_credentials_key,
    run_in_conversation,
    to_platform_error,
    token_ready,
)
from .files import download
from .keys import SigningKeysUnavailable
from .ops import TeamsMessageOps, TeamsTarget
from .references import NS_FEEDBACK, NS_PRESSED, PLATFORM, ReferenceBook, StoredReference, bare_conversation
from .render import with_byline
from .streaming import TeamsStreamSink
from .thread_context import ThreadReader
from .welcome import NS_WELCOME, Welcomes

log = logging.getLogger("adapters.teams")

# Teams accepts ~100 KB per message (UTF-16, text + entities + cards). 12,000
# Markdown characters stay under ~28 KB even when every character takes two UTF-16 bytes and the
# Markdown rewrite adds a little, leaving room for citations and cards.
MAX_TEXT_LEN = 12_000
# 50 requests/s per app per tenant is the documented global limit. Keep 20% headroom: botbuilder
# sends from a thread pool, so calls granted a little apart can reach Teams bunched together.
TENANT_RATE = Rate(40, 1.0)
# Per bot and conversation: 7/1 s, 8/2 s, 60/30 s. A bucket of 5 + 50 per 30 s never exceeds any.
CONVERSATION_RATE = Rate(55, 30.0)

NATIVE_CAPABILITIES = Capabilities(max_text_len=MAX_TEXT_LEN, edit=True, native_stream=True,
                                   min_edit_interval=1.0, write_budget=TENANT_RATE)
EDIT_CAPABILITIES = Capabilities(max_text_len=MAX_TEXT_LEN, edit=True, native_stream=False,
                                 min_edit_interval=1.5, write_budget=TENANT_RATE)
MAX_CONVERSATION_BUDGETS = 10_000
FEEDBACK_TTL = 30 * 24 * 3600.0  # feedback buttons of month-old answers are not worth keeping


class AgentByline(ReplySink):
    """Any reply sink, with a live agent's name put first in the final text (see `with_byline`)."""

    def __init__(self, inner: ReplySink) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.budget_key = inner.budget_key

    def __getattr__(self, name: str) -> Any:  # what else the wrapped sink offers
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def show(self, frame: Frame) -> bool | None:
        return await self.inner.show(frame)

    async def finish(self, answer: Answer) -> list[str]:
        return await self.inner.finish(with_byline(answer))

    async def fail(self, message: str) -> None:
        await self.inner.fail(message)

    def checkpoint(self) -> dict[str, Any] | None:
        return self.inner.checkpoint()

    def resume(self, checkpoint: dict[str, Any]) -> bool:
        return self.inner.resume(checkpoint)


class TeamsAdapter(ChatAdapter):
    platform = PLATFORM
    shows_forms = True  # MODAL_ACTIONs open as dialogs (task modules): forms.py
    accepts_files = True  # personal-chat files and inline images: files.py
    worker_threads = 64  # botbuilder's connector sends from the default thread pool

    def __init__(self, core: Core, *, native_streaming: bool = True) -> None:
        self.settings = core.settings
        self.core = core
        self.app_id = self.settings.teams_app_id or ""
        self.native_streaming = native_streaming
        self.references = ReferenceBook(core.kv, core.end_threads)
        self.cloud, self.credentials = build_cloud_adapter(self.settings)
        self.welcomes = Welcomes(core.kv(NS_WELCOME), core.claim_inbound, PLATFORM)
        self.threads = ThreadReader(self.settings, bot_token=self._bot_token)
        self.bot = TeamsBot(self)
        self._conversation_budgets: OrderedDict[str, WriteBudget] = OrderedDict()
        self.auth_refresher: AuthRefresher | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/api/messages", self.handle)

    async def start(self, *, inbound: bool = True) -> None:
        """Teams receives over HTTP only (the route is mounted by `serve`), so `inbound=False`
        (the `poll` worker) changes one thing: the inbound signing keys are not pre-loaded.
        With an app id, tokens are fetched and kept fresh in the background from here on; this
        returns at once and never fails for want of a network (see `AuthRefresher`)."""
        # Feedback and action buttons of month-old answers are not worth keeping (they grow per answer).
        await self.core.kv(NS_FEEDBACK).prune(FEEDBACK_TTL)
        await self.core.kv(NS_PRESSED).prune(FEEDBACK_TTL)
        if not self.app_id:
            log.warning(
                "!!! TEAMS RUNS UNAUTHENTICATED: TEAMS_APP_ID is not set, so /api/messages accepts "
                "requests from anyone and outbound calls carry no token. Use this only for local "
                "development (Bot Framework Emulator, Microsoft 365 Agents Playground). !!!"
            )
            return
        if self.auth_refresher is None:
            self.auth_refresher = AuthRefresher(
                self.credentials, outbound_credentials_key(self.cloud, self.app_id),
                openid_urls=(channel_openid_url(),) if inbound else (),
            )
            self.auth_refresher.start()
        log.info("teams adapter ready (app type %s%s)", self.settings.teams_app_type,
                 "" if inbound else ", sending only")

    async def stop_inbound(self) -> None:
        """Nothing to stop: Teams activities arrive only over HTTP, and the route stops with the
        server. Answers in flight keep sending (the token refresher runs until `stop`)."""

    async def stop(self) -> None:
        await self.bot.close()  # dialog steps and help-menu picks still running
        refresher, self.auth_refresher = self.auth_refresher, None
        if refresher is not None:
            await refresher.stop()

    async def check(self) -> list[CheckLine]:
        if not self.app_id:
            return [("teams", True, "no TEAMS_APP_ID: unauthenticated local development mode")]
        try:
            await self.credentials.refresh(outbound_credentials_key(self.cloud, self.app_id), 15.0)
        except Exception as exc:  # noqa: BLE001 - reported as one doctor line, no secrets
            return [("teams credentials", False, f"could not get a Bot Framework token ({type(exc).__name__})")]
        return [("teams credentials", True, f"Bot Framework token acquired ({self.settings.teams_app_type})")]

    # --- inbound HTTP --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        if "application/json" not in (request.headers.get("Content-Type") or "").lower():
            return web.json_response({"error": "Content-Type must be application/json"}, status=415)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not body["type"]:
            return web.json_response({"error": "not a Bot Framework activity"}, status=400)
        conversation = body.get("conversation")
        if not isinstance(conversation, dict) or not isinstance(conversation.get("id"), str) or not conversation["id"]:
            return web.json_response({"error": "the activity names no conversation"}, status=400)
        try:
            activity = Activity().deserialize(body)
        except (DeserializationError, TypeError, ValueError, AttributeError, RecursionError):
            return web.json_response({"error": "malformed activity"}, status=400)
        auth_header = request.headers.get("Authorization", "")
        started = False

        async def turn(context: TurnContext) -> None:
            nonlocal started
            started = True
            await self.bot.on_turn(context)

        try:
            invoke = await self.cloud.process_activity(auth_header, activity, turn)
        except (PermissionError, jwt.PyJWTError):  # botbuilder's validation refused the token
            return web.json_response({"error": "unauthorized"}, status=401)
        except SigningKeysUnavailable as exc:
            log.warning("teams: refused an activity that cannot be verified now: %s", exc)
            return web.json_response({"error": "cannot verify the token now; try again"}, status=503,
                                     headers={"Retry-After": "10"})
        except TenantRefused as exc:
            log.warning("teams activity from a tenant outside TEAMS_ALLOWED_TENANTS refused: %s", exc)
            return web.json_response({"error": "tenant not allowed"}, status=403)
        except Exception as exc:
            if started:
                raise
            # botbuilder raises bare Exceptions for some forged tokens (a wrong algorithm, a
            # missing endorsement): before the turn, every failure is the token's
            log.info("teams: refused an activity whose token did not validate (%s)", type(exc).__name__)
            return web.json_response({"error": "unauthorized"}, status=401)
        if invoke is None:
            return web.Response(status=201 if activity.type == "message" else 200)
        if invoke.body is None:
            return web.Response(status=invoke.status or 200)
        if isinstance(invoke.body, dict):  # our own JSON (a dialog's task module response)
            return web.json_response(invoke.body, status=invoke.status or 200)
        return web.json_response(serializer_helper(invoke.body), status=invoke.status or 200)

    # --- ChatAdapter ---------------------------------------------------------------------------

    def _conversation_budget(self, conversation: str) -> WriteBudget:
        budget = self._conversation_budgets.get(conversation)
        if budget is None:
            budget = WriteBudget(CONVERSATION_RATE)
            self._conversation_budgets[conversation] = budget
            while len(self._conversation_budgets) > MAX_CONVERSATION_BUDGETS:
                self._conversation_budgets.popitem(last=False)
        else:
            self._conversation_budgets.move_to_end(conversation)
        return budget

    def tenant_budget(self, tenant: str) -> WriteBudget:
        """Every bot API call of a tenant counts against Teams' per-app, per-tenant limit."""
        return self.core.budget(f"teams:{tenant}", TENANT_RATE)

    async def target(self, ref_key: str, *, asker: str | None = None) -> TeamsTarget:
        stored = await self.references.load(ref_key)
        if stored is None:
            raise PlatformError("no stored Teams conversation reference", permanent=True)
        return self.target_of(stored, asker=asker)

    def target_of(self, stored: StoredReference, *, asker: str | None = None) -> TeamsTarget:
        return TeamsTarget(
            self.cloud, self.app_id, stored, self.references,
            self._conversation_budget(bare_conversation(stored.ref_key)),
            text_format=self.settings.teams_text_format, count_write=self.core.count_write,
            count_rate_limited=self.core.count_rate_limited,
            tenant_budget=self.tenant_budget(stored.tenant) if stored.tenant else None, asker=asker,
        )

    async def open_reply(
        self, thread: ThreadKey, address: Address, *, user: ChatUser | None, proactive: bool
    ) -> ReplySink:
        target = await self.target(str(address.get("ref_key") or ""), asker=user.user_id if user else None)
        tenant = target.stored.tenant or thread.workspace
        budget_key = f"teams:{tenant}"
        budget = self.tenant_budget(tenant)
        target.tenant_budget = budget

        def editing() -> ReplySink:
            return EditingSink(TeamsMessageOps(target), EDIT_CAPABILITIES, budget, budget_key, platform=PLATFORM)

        if target.stored.scope == "personal" and not proactive and self.native_streaming:
            # Teams' Stop button: stop the answer at once (the Moveworks stream is closed now,
            # not when its next event arrives); Teams has ended the stream on its side already.
            sink = TeamsStreamSink(target, NATIVE_CAPABILITIES, budget, budget_key,
                                   on_canceled=lambda: self.core.stop_answer(thread))
            return AgentByline(WithFallback(sink, editing))
        return AgentByline(editing())

    async def close_reply(
        self, thread: ThreadKey, address: Address, checkpoint: dict[str, Any], message: str
    ) -> bool:
        """End a native stream a crashed process left open with `message`, in place."""
        stream_id = checkpoint.get("stream_id")
        if not stream_id:
            return False
        try:
            target = await self.target(str(address.get("ref_key") or ""))
            if target.stored.scope != "personal":
                return False
            tenant = target.stored.tenant or thread.workspace
            sink = TeamsStreamSink(target, NATIVE_CAPABILITIES, self.tenant_budget(tenant), f"teams:{tenant}")
            sink.adopt(str(stream_id))
            await sink.fail(message)
        except PlatformError as exc:
            log.info("could not end the interrupted stream (%s); posting the note instead", exc)
            return False
        return True

    async def open_direct(self, employee: Employee) -> tuple[ThreadKey, Address] | None:
        stored = await self.references.personal(employee.user_id)
        if stored is None:
            stored = await self._create_personal_chat(employee)
        if stored is None:
            return None
        tenant = stored.tenant or employee.workspace
        thread = ThreadKey(PLATFORM, tenant, bare_conversation(stored.ref_key), "")
        return thread, {"ref_key": stored.ref_key, "scope": "personal"}

    async def _create_personal_chat(self, employee: Employee):
        """`create_conversation` for a user we only met in a channel or group chat."""
        member = await self.references.member(employee.workspace, employee.user_id)
        if not member or not member.get("service_url"):
            return None
        tenant = employee.workspace
        bot = ChannelAccount(id=(member.get("bot") or {}).get("id") or f"28:{self.app_id}",
                             name=(member.get("bot") or {}).get("name"))
        parameters = ConversationParameters(
            is_group=False, bot=bot, members=[ChannelAccount(id=member["member_id"])],
            tenant_id=tenant, channel_data={"tenant": {"id": tenant}},
        )
        created: list[str] = []

        async def callback(context: TurnContext) -> None:
            created.append(context.activity.conversation.id)

        await self.tenant_budget(tenant).acquire(final=True)
        self.core.count_write(PLATFORM, "create")
        try:
            await token_ready(self.cloud, self.app_id)
            await self.cloud.create_conversation(self.app_id, callback, parameters, "msteams",
                                                 member["service_url"])
        except Exception as exc:  # noqa: BLE001
            raise to_platform_error(exc, "create") from None
        if not created or not created[0]:
            return None
        reference = ConversationReference(
            bot=bot, user=ChannelAccount(id=member["member_id"], aad_object_id=employee.user_id),
            conversation=ConversationAccount(id=created[0], conversation_type="personal", tenant_id=tenant),
            channel_id="msteams", service_url=member["service_url"],
        )
        return await self.references.save(created[0], reference, tenant=tenant, scope="personal",
                                    user_id=employee.user_id)

    async def download(self, attachment: Attachment, limit: int) -> bytes:
        """An employee's file (files.py): the bot's token only for the Bot Connector."""
        return await download(attachment, limit, self._bot_token)

    async def _bot_token(self) -> str | None:
        """The Bot Framework token outbound calls use (None without an app id: development)."""
        if not self.app_id:
            return None
        key = outbound_credentials_key(self.cloud, self.app_id)
        try:
            await self.credentials.create_credentials(*key)  # cached; makes the token kept fresh
            await self.credentials.ensure(key)
        except TokenNotReady as exc:
            raise AttachmentRefused(f"no Bot Framework token: {exc}") from None
        token = self.credentials.token(key)
        if token is None:
            raise AttachmentRefused("no Bot Framework token")
        return token.value

    async def resolve_email(self, user: ChatUser) -> str | None:
        """Email (else UPN) from the Teams roster, via the chat where we met the user."""
        member = await self.references.member(user.workspace, user.user_id)
        if not member:
            return None
        stored = await self.references.load(member["ref_key"])
        if stored is None:
            return None

        async def lookup(context: TurnContext) -> Any:
            context.activity.conversation.id = bare_conversation(context.activity.conversation.id)
            context.activity.channel_data = {"tenant": {"id": stored.tenant}}  # TeamsInfo reads it
            return await TeamsInfo.get_member(context, member["member_id"])

        await self.tenant_budget(stored.tenant or user.workspace).acquire(final=True)
        self.core.count_write(PLATFORM, "roster")
        try:
            account = await run_in_conversation(self.cloud, self.app_id, stored.to_reference(), lookup)
        except Exception as exc:  # noqa: BLE001 - the relay treats None as "unknown"
            log.info("teams roster lookup failed: %s", to_platform_error(exc, "roster"))
            return None
        email = getattr(account, "email", None) or getattr(account, "user_principal_name", None)
        return str(email) if email else None
