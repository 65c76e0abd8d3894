"""Outbound Bot Framework calls through botbuilder's own `CloudAdapter`, and their errors.

Every write runs in a continued turn (`continue_conversation` with a stored reference), so the
answer outlives the inbound HTTP turn. The continuation activity's synthetic id is cleared first:
otherwise botbuilder posts each message as a reply to that random id (teams.md §2.1); without it,
messages go to the conversation itself, which in a channel is the reply chain
(`19:…;messageid=<root>`).

botbuilder creates new app credentials, and therefore a new MSAL client and token request, for
every connector it builds. `CachingCredentialFactory` keeps one credentials object per scope so
tokens are reused; validation and token logic remain botbuilder's.

`to_delivery_error` maps connector failures onto the core's errors: 429 → `RateLimited` (with
Retry-After), 412/5xx/network → transient `DeliveryError`, 403 writes blocked / bot removed and
404 conversation → permanent; the streaming 403s get their own subclasses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import ConversationReference
from botframework.connector.auth import ServiceClientCredentialsFactory
from msrest.exceptions import ClientRequestError, HttpOperationError

from bridge.config import Settings
from bridge.errors import DeliveryError, RateLimited, StreamExpired
from bridge.moveworks.auth import parse_retry_after

log = logging.getLogger("adapters.teams")

T = TypeVar("T")
TRANSIENT_STATUSES = frozenset({408, 412, 500, 502, 503, 504})


class StreamTimedOut(StreamExpired):
    """403 "Content stream finished due to exceeded streaming time" (the 2-minute limit)."""


class StreamCanceled(DeliveryError):
    """403 "Content stream was canceled by user" (the Stop button)."""


class StreamNotAllowed(DeliveryError):
    """Native streaming refused here (403 ContentStreamNotAllowed, 405): use edits instead."""


class CachingCredentialFactory(ServiceClientCredentialsFactory):
    """botbuilder's configuration factory, with credentials (and their token cache) reused."""

    def __init__(self, inner: ServiceClientCredentialsFactory) -> None:
        self._inner = inner
        self._cache: dict[tuple[str, str, str, bool], Any] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return await self._inner.is_valid_app_id(app_id)

    async def is_authentication_disabled(self) -> bool:
        return await self._inner.is_authentication_disabled()

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Any:
        key = (app_id or "", oauth_scope or "", login_endpoint or "", bool(validate_authority))
        credentials = self._cache.get(key)
        if credentials is None:
            credentials = await self._inner.create_credentials(app_id, oauth_scope, login_endpoint,
                                                               validate_authority)
            self._cache[key] = credentials
        return credentials


def bot_configuration(settings: Settings) -> SimpleNamespace:
    """The attribute names botbuilder's configuration classes read."""
    return SimpleNamespace(
        APP_ID=settings.teams_app_id or "",
        APP_PASSWORD=settings.teams_app_password or "",
        APP_TYPE=settings.teams_app_type or "MultiTenant",
        APP_TENANTID=settings.teams_app_tenant_id or "",
    )


def build_cloud_adapter(settings: Settings) -> tuple[CloudAdapter, CachingCredentialFactory]:
    config = bot_configuration(settings)
    credentials = CachingCredentialFactory(ConfigurationServiceClientCredentialFactory(config))
    auth = ConfigurationBotFrameworkAuthentication(config, credentials_factory=credentials)
    return CloudAdapter(auth), credentials


async def run_in_conversation(
    cloud: CloudAdapter,
    app_id: str,
    reference: ConversationReference,
    fn: Callable[[TurnContext], Awaitable[T]],
) -> T:
    """Run `fn` in a continued turn of `reference` and return its result."""
    result: list[T] = []

    async def callback(context: TurnContext) -> None:
        context.activity.id = None  # send into the conversation, not as a reply to a random id
        result.append(await fn(context))

    await cloud.continue_conversation(reference, callback, app_id)
    return result[0]


def error_details(exc: BaseException) -> tuple[int | None, str, str, dict[str, str]]:
    """(HTTP status, error code, message, headers) of a connector failure."""
    if isinstance(exc, HttpOperationError):
        response = exc.response
        status = getattr(response, "status_code", None)
        headers = dict(getattr(response, "headers", None) or {})
        code, message = "", ""
        error = getattr(getattr(exc, "error", None), "error", None)
        if error is not None:
            code, message = error.code or "", error.message or ""
        if not code and not message:
            text = _body_text(response)
            try:
                body = json.loads(text).get("error") or {}
                code, message = str(body.get("code") or ""), str(body.get("message") or "")
            except (ValueError, AttributeError):
                message = text[:300]
        if "MessageWritesBlocked" in _body_text(response):
            code = code or "MessageWritesBlocked"
            message = f"{message} (MessageWritesBlocked)"
        return status, code, message, headers
    return None, type(exc).__name__, str(exc)[:300], {}


def _body_text(response: Any) -> str:
    try:
        text = response.text() if callable(getattr(response, "text", None)) else getattr(response, "text", "")
    except Exception:  # noqa: BLE001
        return ""
    return str(text or "")


def to_delivery_error(exc: BaseException, op: str) -> DeliveryError:
    error = _classify(exc, op)
    error.status = error_details(exc)[0]  # type: ignore[attr-defined]
    return error


def _classify(exc: BaseException, op: str) -> DeliveryError:
    status, code, message, headers = error_details(exc)
    detail = f"teams {op}: {status or ''} {code} {message}".strip()
    lowered = message.lower()
    if status == 429:
        return RateLimited(detail, retry_after=parse_retry_after(headers.get("Retry-After")))
    if status == 403 and ("streaming time" in lowered or "exceeded" in lowered and "stream" in lowered):
        return StreamTimedOut(detail)
    if status == 403 and "cancel" in lowered:
        return StreamCanceled(detail)
    if status == 405 or (status == 403 and code == "ContentStreamNotAllowed"):
        return StreamNotAllowed(detail)
    if status == 401:  # our credentials, not the conversation: keep every reference
        return DeliveryError(detail)
    if status == 403:
        return DeliveryError(detail, permanent=True)
    if status == 404:
        # A missing conversation is permanent; a missing message (deleted by a user) is not.
        return DeliveryError(detail, permanent=op in ("post", "create"))
    if status is None and isinstance(exc, (ClientRequestError, OSError, TimeoutError)):
        return DeliveryError(detail)
    if status in TRANSIENT_STATUSES or status is None:
        return DeliveryError(detail)
    return DeliveryError(detail)  # 400/413: the caller may retry without extras
