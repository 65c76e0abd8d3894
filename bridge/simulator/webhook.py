"""Optional outbound webhook: a `CONVERSATION_RESPONSE_RECEIVED` notification per new event,
signed `X-Moveworks-Signature: sha256=<hex HMAC-SHA256(raw body)>`. Fire and forget.

Two envelopes (`SimulatorConfig.webhook_envelope`, also `POST /_sim/config`):

- "documented" (default) — what the `/rest/v1` docs describe (help.moveworks.com get-event / outbound webhook):
  `{"id": "evt_…", "type": "CONVERSATION_RESPONSE_RECEIVED", "created_at": "<event created_at>",
  "data": {"conversation_id": "conv_…", "user_id": "<identity whose credentials to use>"}}`;
  the receiver fetches the content with get-event.
- "legacy" (the project's earlier shape, which the bridge still accepts):
  `{"event_type": "CONVERSATION_RESPONSE_RECEIVED", "identity", "conversation_id", "event_id"}`.

Moveworks has not published its signature header or algorithm; the HMAC above is the project's
choice. Key rotation: `webhook_secrets` is a list and deliveries are signed with its FIRST entry
(put the new key first; receivers accept every key during the grace period); with an empty list
`webhook_secret` signs (a comma-separated string, like the bridge's `BRIDGE_WEBHOOK_SECRET`, also
signs with its first key); with neither, deliveries are unsigned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

log = logging.getLogger(__name__)
TIMEOUT = 5.0
EVENT_TYPE = "CONVERSATION_RESPONSE_RECEIVED"
ENVELOPES = ("legacy", "documented")


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signing_secret(secret: str | Sequence[str] | None) -> str | None:
    """The key that signs: the first of a rotation list. A string is read like the bridge's
    `BRIDGE_WEBHOOK_SECRET` (what `moveworks-bridge simulator` passes): keys separated by commas."""
    if secret is None:
        return None
    keys = secret.split(",") if isinstance(secret, str) else secret
    return next((k.strip() for k in keys if k and k.strip()), None)


def payload(identity: str, event: dict[str, Any], envelope: str = "documented") -> dict[str, Any]:
    if envelope == "documented":
        return {
            "id": event["event_id"],
            "type": EVENT_TYPE,
            "created_at": event["created_at"],
            "data": {"conversation_id": event["conversation_id"], "user_id": identity},
        }
    return {
        "event_type": EVENT_TYPE,
        "identity": identity,
        "conversation_id": event["conversation_id"],
        "event_id": event["event_id"],
    }


async def deliver(
    url: str,
    secret: str | Sequence[str] | None,
    identity: str,
    event: dict[str, Any],
    envelope: str = "documented",
) -> None:
    body = json.dumps(payload(identity, event, envelope)).encode()
    headers = {"Content-Type": "application/json"}
    key = signing_secret(secret)
    if key:
        headers["X-Moveworks-Signature"] = sign(body, key)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status >= 300:
                    log.warning("simulator webhook %s answered %s", url, resp.status)
    except Exception as exc:  # noqa: BLE001 - fire and forget, never break the simulator
        log.warning("simulator webhook to %s failed: %r", url, exc)
