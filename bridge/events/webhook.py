"""`POST /moveworks/webhook`: the Moveworks outbound webhook (`CONVERSATION_RESPONSE_RECEIVED`).

The push is only a hint: it triggers an immediate reconcile poll of the identity
it names, or of every recently active identity when it names none; the events endpoint stays the
source of truth. The handler answers 202 at once (Moveworks wants a 2xx within 15 s); the poll
runs in the poller's loop under its request budget.

Signature: Moveworks has not published its scheme, so the bridge accepts an HMAC-SHA256 of the raw
body with `BRIDGE_WEBHOOK_SECRET`, hex-encoded, in `X-Moveworks-Signature` as `sha256=<hex>` (what
the bundled simulator sends) or as the bare hex; `X-Signature` is accepted as an alias. Compared
in constant time; anything else is 401 with no side effect. With no secret configured every
request is accepted (documented: set a secret on any deployment reachable from the internet).
Several secrets (key rotation grace period) may be given as a list.

Payload: JSON; the identity is read from `identity`, `user_email`, `email` or `user.email`. An
empty or non-JSON body (after a valid signature) triggers the recently active identities; JSON
nested too deeply to parse is a 400.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

log = logging.getLogger("bridge.events.webhook")

PATH = "/moveworks/webhook"
MAX_BODY = 1024 * 1024
SIGNATURE_HEADERS = ("X-Moveworks-Signature", "X-Signature")


def sign(body: bytes, secret: str) -> str:
    """The header value the bridge expects: `sha256=<hex HMAC-SHA256(body)>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _secrets(secret: str | Iterable[str] | None) -> list[bytes]:
    if secret is None:
        return []
    if isinstance(secret, str):
        return [secret.encode()] if secret else []
    return [s.encode() for s in secret if s]


def verify(body: bytes, header: str | None, secrets: list[bytes]) -> bool:
    if not header:
        return False
    value = header.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256="):]
    value = value.strip().lower()
    ok = False
    for secret in secrets:  # compare against every secret: no early exit on a match
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        ok |= hmac.compare_digest(expected.encode(), value.encode("ascii", "replace"))
    return ok


def identity_of(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    for key in ("identity", "user_email", "email"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    user = payload.get("user")
    if isinstance(user, dict):
        value = user.get("email")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def make_webhook_handler(poller: Any, secret: str | Iterable[str] | None):
    secrets = _secrets(secret)
    if not secrets:
        log.warning("BRIDGE_WEBHOOK_SECRET is not set: %s accepts unsigned requests", PATH)

    async def handler(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        try:  # `read`, not the stream: `serve` may have read (and cached) the body already
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        if len(body) > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        if secrets:
            header = next((request.headers.get(h) for h in SIGNATURE_HEADERS if request.headers.get(h)), None)
            if not verify(body, header, secrets):
                log.warning("webhook: rejected a request with a missing or invalid signature")
                return web.json_response({"error": "invalid signature"}, status=401)
        payload: Any = None
        if body.strip():
            try:
                payload = json.loads(body)
            except RecursionError:
                return web.json_response({"error": "JSON nested too deeply"}, status=400)
            except ValueError:
                log.info("webhook: body is not JSON; polling the recently active identities")
        identity = identity_of(payload)
        try:
            count = poller.trigger(identity)
        except Exception:  # the push is a hint: never fail Moveworks' delivery over it
            log.exception("webhook: could not trigger a poll")
            count = 0
        return web.json_response({"status": "accepted", "polls": count}, status=202)

    return handler


def webhook_routes(poller: Any, secret: str | Iterable[str] | None) -> list[web.RouteDef]:
    return [web.post(PATH, make_webhook_handler(poller, secret))]
