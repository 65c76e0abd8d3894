"""Slack Web API errors mapped to the core's delivery errors, and a 429-aware call helper.

Writes that the core throttles (chat.update and friends inside sinks) raise `PlatformRateLimited` so the
shared workspace budget learns about the 429; every other call (users.info, setStatus, ephemeral
acks, conversations.open) goes through `call()`, which waits `Retry-After` and retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from bridge.errors import PlatformError, PlatformRateLimited, StreamExpired

log = logging.getLogger("adapters.slack")

# Retrying cannot help: the bot lost access to the conversation or the workspace.
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "account_inactive",
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "team_access_not_granted",
        "ekm_access_denied",
        "cannot_reply_to_message",
        "org_login_required",
        "user_not_found",
        "user_disabled",
        "not_allowed_token_type",
        "enterprise_is_restricted",
        # documented for chat.startStream (and the posting methods): nothing can be posted there now
        "restricted_action_thread_locked",
        "messages_tab_disabled",
        "message_limit_exceeded",
    }
)
# Slack refused the size of a payload (not its shape).
TOO_LONG = frozenset({"msg_too_long", "msg_blocks_too_long", "msg_blocks_too_many"})
# Slack refused the blocks themselves (a shape it does not accept, e.g. a block type).
INVALID_BLOCKS = frozenset({"invalid_blocks", "invalid_blocks_format"})
REFUSED = TOO_LONG | INVALID_BLOCKS
STREAM_GONE = frozenset({"message_not_in_streaming_state"})
# Both mean "rate limited": `ratelimited` comes with HTTP 429 and Retry-After; some methods
# document `rate_limited` as an error of their own.
RATE_LIMITED = frozenset({"ratelimited", "rate_limited"})
MAX_RETRY_AFTER = 60.0


def error_code(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        try:
            return str(exc.response.get("error") or "")
        except Exception:  # noqa: BLE001 - a non-JSON body
            return ""
    return ""


def retry_after(exc: SlackApiError) -> float | None:
    try:
        value = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
    except Exception:  # noqa: BLE001
        return None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def is_rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, SlackApiError) and (
        getattr(exc.response, "status_code", None) == 429 or error_code(exc) in RATE_LIMITED
    )


def to_platform_error(exc: BaseException, what: str) -> PlatformError:
    """The core's view of a failed Slack write (never includes tokens or message text)."""
    if is_rate_limited(exc):
        return PlatformRateLimited(f"{what}: rate limited", retry_after=retry_after(exc))  # type: ignore[arg-type]
    code = error_code(exc)
    if code in STREAM_GONE:
        return StreamExpired(f"{what}: {code}")
    if code:
        return PlatformError(f"{what}: {code}", permanent=code in PERMANENT)
    return PlatformError(f"{what}: {type(exc).__name__}")


TRANSIENT = (SlackClientError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def call(
    fn: Callable[..., Awaitable[Any]],
    *,
    attempts: int = 4,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    **kwargs: Any,
) -> Any:
    """Call a Slack method, honouring 429 `Retry-After` and retrying transient failures."""
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            return await fn(**kwargs)
        except SlackApiError as exc:
            if not is_rate_limited(exc) or attempt == attempts:
                raise
            wait = min(retry_after(exc) or delay, MAX_RETRY_AFTER)
            log.info("slack rate limited; retrying in %.1fs", wait)
            await sleep(wait)
        except TRANSIENT:
            if attempt == attempts:
                raise
            await sleep(delay)
        delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")
