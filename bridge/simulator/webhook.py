"""Optional outbound webhook: a `CONVERSATION_RESPONSE_RECEIVED` notification per
new event, signed `X-Moveworks-Signature: sha256=<hex HMAC-SHA256(raw body)>`.

Moveworks does not publish the payload or signature scheme; this shape is the project's choice and
only ever a hint — the receiver must reconcile through the events endpoint. Fire and forget.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)
TIMEOUT = 5.0


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(identity: str, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": "CONVERSATION_RESPONSE_RECEIVED",
        "identity": identity,
        "conversation_id": event["conversation_id"],
        "event_id": event["event_id"],
    }


async def deliver(url: str, secret: str | None, identity: str, event: dict[str, Any]) -> None:
    body = json.dumps(payload(identity, event)).encode()
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["X-Moveworks-Signature"] = sign(body, secret)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status >= 300:
                    log.warning("simulator webhook %s answered %s", url, resp.status)
    except Exception as exc:  # noqa: BLE001 - fire and forget, never break the simulator
        log.warning("simulator webhook to %s failed: %r", url, exc)
