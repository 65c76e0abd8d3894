"""Who a Slack user is: `users.info` for the email that becomes their Moveworks identity in
`user_jwt` mode (the relay caches it in the store), and for a display name."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from .calls import call, error_code

log = logging.getLogger("adapters.slack")


@dataclass(frozen=True)
class Profile:
    user_id: str
    name: str | None
    email: str | None
    is_bot: bool = False
    is_admin: bool = False  # a workspace admin or owner (users.info is_admin / is_owner / is_primary_owner)


async def lookup(client: AsyncWebClient, user_id: str) -> Profile | None:
    """The user's profile; None if Slack does not know them. Needs `users:read.email` for email."""
    try:
        response = await call(client.users_info, user=user_id)
    except SlackApiError as exc:
        if error_code(exc) in ("user_not_found", "user_not_visible"):
            return None
        raise
    user = response.get("user") or {}
    profile = user.get("profile") or {}
    name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
    email = profile.get("email") or None
    if email is None:
        log.info("users.info returned no email (is the users:read.email scope granted?)")
    admin = any(bool(user.get(k)) for k in ("is_admin", "is_owner", "is_primary_owner"))
    return Profile(user_id, name or None, email, bool(user.get("is_bot")), admin)
