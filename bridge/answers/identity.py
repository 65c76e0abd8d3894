"""Whom a Moveworks request acts as: the asking employee's email in `user_jwt` mode, else the one
service identity. Emails come from the platform directory (the adapter's `resolve_email`) and are
cached in the store; in `user_jwt` mode the email decides whom we act as, so it is re-checked
daily (renamed or re-used accounts), keeping the cached one when the directory is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

from bridge.models import ChatUser
from bridge.store.aio import AnyStore, as_async

log = logging.getLogger(__name__)

EMAIL_RECHECK_SECONDS = 24 * 3600.0

Lookup = Callable[[ChatUser], Awaitable[str | None]]


class NoIdentity(Exception):
    """An email is needed to act as this employee, and none is known."""


class Identities:
    def __init__(
        self,
        store: AnyStore,
        *,
        per_employee: bool,
        lookup: Lookup,
        background: Callable[[Coroutine[Any, Any, Any], str], None] | None = None,
    ) -> None:
        self.store = as_async(store)
        self.per_employee = per_employee
        self._lookup = lookup
        # Single-identity modes need the email only for proactive DMs: look it up beside the
        # answer, never before it (a crowd would otherwise queue on the directory's rate limit).
        self._background = background

    async def identity_for(self, user: ChatUser) -> str | None:
        """The Moveworks identity of a chat user: their email in user_jwt mode, else None
        (the one service identity). Raises NoIdentity when an email is needed but unknown.

        The email is also worth knowing in single-identity modes (proactive DMs), so it is
        looked up there too, but at most once a day per user."""
        email = user.email
        looked_up = False
        checked = await self.store.employees.email_checked_at(user.platform, user.workspace, user.user_id)
        stale = checked is None or time.time() - checked > EMAIL_RECHECK_SECONDS
        if not email:
            known = await self.store.employees.get(user.platform, user.workspace, user.user_id)
            email = known.email if known else None
            if email and self.per_employee and stale and checked is not None:
                email = await self._lookup_email(user) or email
                looked_up = True
        if not email and not self.per_employee and stale and self._background is not None:
            self._background(self._remember_email(user), "email-lookup")
            return None
        if not email and (self.per_employee or stale):
            looked_up = True
            email = await self._lookup_email(user)
        if email or looked_up:
            await self.store.employees.save(replace(user, email=email or None), email_checked=looked_up)
        if not self.per_employee:
            return None
        if not email:
            raise NoIdentity()
        return email.lower()

    async def _remember_email(self, user: ChatUser) -> None:
        email = await self._lookup_email(user)
        await self.store.employees.save(replace(user, email=email or None), email_checked=True)

    async def _lookup_email(self, user: ChatUser) -> str | None:
        try:
            return await self._lookup(user)
        except Exception:  # a directory outage must not lose the question
            log.warning("email lookup failed for a %s user", user.platform, exc_info=True)
            return None
