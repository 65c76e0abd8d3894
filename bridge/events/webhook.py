"""`POST /moveworks/webhook`: the Moveworks outbound webhook (`CONVERSATION_RESPONSE_RECEIVED`).

The push is only a hint: it makes the poller poll the identity concerned now; the events endpoint
stays the source of truth. The handler answers 202 at once (Moveworks wants a 2xx within 15 s) with
`{"status": "accepted", "polls": <identities made due>}`; the poll itself runs in the poller's loop
under its request budget. Nothing here waits on the network.

Payload (JSON)
--------------
Moveworks' documented envelope (help.moveworks.com, "receive via outbound webhook" / get-event)::

    {"id": "evt_…", "type": "CONVERSATION_RESPONSE_RECEIVED",
     "data": {"conversation_id": "conv_…", "user_id": "<whose credentials to use>"}}

Which identity is polled, first match wins:

1. `data.conversation_id` mapped through the store's thread links (`links.for_conversation`) to the
   identity that owns the conversation (active links first, most recently used first);
2. `data.user_id`, if the poller knows that identity (it is the employee email in `user_jwt` mode),
   then an identity named the earlier way (below) next to `data`, if known;
3. otherwise every recently active identity (as for an empty or unreadable body).

The project's earlier shapes are still read when there is no `data` object: the identity comes from
`identity`, `user_email`, `email` or `user.email`; an identity the poller does not know is ignored
(0 polls). In the single-identity auth modes every path polls the one service identity.

A `type` (or the earlier `event_type`) other than `CONVERSATION_RESPONSE_RECEIVED` is accepted
(202) and polls nothing; each such type is logged once at info. An empty or non-JSON body (after a
valid signature) polls the recently active identities; JSON nested too deeply to parse is a 400;
a body over 1 MB is a 413.

Signature
---------
**Moveworks has not published the signature header name or algorithm in the material available to
this project** (the docs only say deliveries are signed with a key that Moveworks rotates, with a
grace period during which the old and the new key both verify). The schemes below are therefore the
project's best guess, not a documented contract: operators must confirm the header and algorithm
with Moveworks (Admin Portal → Outbound Webhooks, or their Moveworks contact) and configure them:

- `BRIDGE_WEBHOOK_SIGNATURE` picks the scheme (default `hmac-sha256`):
  - `hmac-sha256`: hex HMAC-SHA256 of the raw body, `sha256=` prefix optional;
  - `hmac-sha256-timestamped`: the sender puts unix seconds in `X-Moveworks-Timestamp` and signs
    `f"{timestamp}.{body}"` (same hex/prefix rules); a timestamp more than 5 minutes old or ahead is
    refused, so a captured delivery cannot be replayed later.
- `BRIDGE_WEBHOOK_SIGNATURE_HEADER` names the signature header (default `X-Moveworks-Signature`);
  `X-Signature` is always accepted as an alias.
- `BRIDGE_WEBHOOK_SECRET` holds the key, or several separated by commas during a rotation (e.g.
  `new,old`: both verify until the old one is removed). Whitespace around each key is ignored; a
  key cannot contain a comma. Every key is compared, in constant time, with no early exit.

A missing or wrong signature (or a stale timestamp) is a 401 with no side effect; the log says why.
With no secret configured every request is accepted (a warning is logged at start-up): set one on
any deployment reachable from the internet. The bundled simulator signs `sha256=<hex>` in
`X-Moveworks-Signature`, which the default settings verify.

Adding a scheme: write a class with a `name` and `check(body, headers, secrets) -> str | None`
(None when the signature is valid, else the reason for the log) and `sign(body, secret)` (the
headers a sender would set: used by tests), register a factory taking `header=` in `SCHEMES`, and
add its name to the choices of `BRIDGE_WEBHOOK_SIGNATURE` in `bridge/process/config.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from aiohttp import web

log = logging.getLogger("bridge.events.webhook")

PATH = "/moveworks/webhook"
MAX_BODY = 1024 * 1024
EVENT_TYPE = "CONVERSATION_RESPONSE_RECEIVED"
DEFAULT_HEADER = "X-Moveworks-Signature"
ALIAS_HEADERS = ("X-Signature",)
SIGNATURE_HEADERS = (DEFAULT_HEADER, *ALIAS_HEADERS)  # the default scheme's headers
TIMESTAMP_HEADER = "X-Moveworks-Timestamp"
TOLERANCE = 300.0  # seconds either side of now for a timestamped signature
MAX_ID_LEN = 512  # a conversation or user id longer than this is not one
_PREFIX = "sha256="
_MAX_LOGGED_TYPES = 64


# --- secrets and HMAC ----------------------------------------------------------------------------


def parse_secrets(secret: str | Iterable[str] | None) -> list[bytes]:
    """`BRIDGE_WEBHOOK_SECRET` as keys: one, or several separated by commas (rotation), or a list."""
    if secret is None:
        return []
    items = secret.split(",") if isinstance(secret, str) else list(secret)
    return [s.strip().encode() for s in items if s and s.strip()]


def _hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str) -> str:
    """The `hmac-sha256` header value: `sha256=<hex HMAC-SHA256(body)>` (what the simulator sends)."""
    return _PREFIX + _hex(secret.encode(), body)


def sign_timestamped(body: bytes, secret: str, timestamp: int | str) -> str:
    """The `hmac-sha256-timestamped` header value: `sha256=<hex HMAC-SHA256(f"{timestamp}.{body}")>`."""
    return _PREFIX + _hex(secret.encode(), str(timestamp).encode() + b"." + body)


def matches(message: bytes, value: str, secrets: Sequence[bytes]) -> bool:
    """Is `value` (hex, `sha256=` optional) the HMAC-SHA256 of `message` under any of `secrets`?

    Every secret is compared, in constant time, with no early exit on a match."""
    value = value.strip()
    if value[: len(_PREFIX)].lower() == _PREFIX:
        value = value[len(_PREFIX):]
    given = value.strip().lower().encode("ascii", "replace")
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(_hex(secret, message).encode(), given)
    return ok


def verify(body: bytes, header: str | None, secrets: Sequence[bytes]) -> bool:
    """The `hmac-sha256` check on one header value (kept for callers of the earlier API)."""
    return bool(header) and matches(body, header or "", secrets)


# --- signature schemes ---------------------------------------------------------------------------


class SignatureScheme(Protocol):
    @property
    def name(self) -> str:
        """The `BRIDGE_WEBHOOK_SIGNATURE` value selecting this scheme."""
        ...

    def check(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes]) -> str | None:
        """None when the request is validly signed with one of `secrets`; else why not (for the log)."""
        ...

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        """The headers a sender would set (tests, tools)."""
        ...


@dataclass(frozen=True)
class HmacSha256:
    """Hex HMAC-SHA256 of the raw body in `header` (or an alias), `sha256=` prefix optional."""

    header: str = DEFAULT_HEADER
    aliases: tuple[str, ...] = ALIAS_HEADERS
    name: ClassVar[str] = "hmac-sha256"

    def signature(self, headers: Mapping[str, str]) -> str | None:
        for name in (self.header, *self.aliases):
            value = headers.get(name)
            if value and value.strip():
                return value
        return None

    def check(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes]) -> str | None:
        value = self.signature(headers)
        if value is None:
            return f"no {self.header} header"
        return None if matches(body, value, secrets) else "signature does not match"

    def sign(self, body: bytes, secret: str) -> dict[str, str]:
        return {self.header: sign(body, secret)}


@dataclass(frozen=True)
class TimestampedHmacSha256(HmacSha256):
    """Hex HMAC-SHA256 of `f"{timestamp}.{body}"`, the unix-seconds timestamp in its own header;
    refused when the timestamp is more than `tolerance` seconds away from now (replay protection)."""

    timestamp_header: str = TIMESTAMP_HEADER
    tolerance: float = TOLERANCE
    clock: Callable[[], float] = field(default=time.time, compare=False)
    name: ClassVar[str] = "hmac-sha256-timestamped"

    def check(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes]) -> str | None:
        value = self.signature(headers)
        if value is None:
            return f"no {self.header} header"
        stamp = (headers.get(self.timestamp_header) or "").strip()
        if not stamp:
            return f"no {self.timestamp_header} header"
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return f"{self.timestamp_header} is not unix seconds"
        if abs(self.clock() - int(stamp)) > self.tolerance:
            return f"{self.timestamp_header} is more than {self.tolerance:g} s from now (replay?)"
        message = stamp.encode() + b"." + body
        return None if matches(message, value, secrets) else "signature does not match"

    def sign(self, body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(self.clock()) if timestamp is None else timestamp)
        return {self.timestamp_header: stamp, self.header: sign_timestamped(body, secret, stamp)}


SCHEMES: dict[str, Callable[..., SignatureScheme]] = {
    HmacSha256.name: HmacSha256,
    TimestampedHmacSha256.name: TimestampedHmacSha256,
}


def scheme_for(name: str, header: str | None = None) -> SignatureScheme:
    """The registered scheme `name` reading its signature from `header` (default X-Moveworks-Signature)."""
    try:
        factory = SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown webhook signature scheme {name!r}; known: {', '.join(SCHEMES)}") from None
    return factory(header=(header or "").strip() or DEFAULT_HEADER)


# --- payload -------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LEN:
        return value.strip()
    return None


def identity_of(payload: Any) -> str | None:
    """The identity named by the project's earlier payload shapes."""
    if not isinstance(payload, dict):
        return None
    for key in ("identity", "user_email", "email"):
        value = _text(payload.get(key))
        if value:
            return value
    user = payload.get("user")
    if isinstance(user, dict):
        return _text(user.get("email"))
    return None


def event_type_of(payload: Any) -> Any:
    """The declared event type (`type`, or the earlier `event_type`); None when there is none."""
    if not isinstance(payload, dict):
        return None
    return payload.get("type", payload.get("event_type"))


def is_response_event(kind: Any) -> bool:
    return kind is None or (isinstance(kind, str) and kind.strip().upper() == EVENT_TYPE)


async def owners_of(poller: Any, conversation_id: str) -> list[str]:
    """Identities whose thread links point at `conversation_id` (active, most recent first)."""
    store = getattr(poller, "store", None)
    if store is None:
        return []
    owners: list[str] = []
    for link in await store.links.for_conversation(conversation_id):
        identity = (link.identity or "").strip()
        if identity and identity not in owners:
            owners.append(identity)
    return owners


async def dispatch(poller: Any, payload: Any) -> int:
    """Make the identity (or identities) this payload concerns due now; returns how many."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        identity = identity_of(payload)  # earlier shapes: an unknown identity is ignored
        return int(await poller.trigger(identity))
    event_id = _text(payload.get("id"))
    conversation_id = _text(data.get("conversation_id"))
    if conversation_id:
        owners = await owners_of(poller, conversation_id)
        if len(owners) > 1:
            log.info("webhook: conversation %s is linked to %d identities; polling the most recent one "
                     "the poller knows", conversation_id, len(owners))
        for identity in owners:
            count = int(await poller.trigger(identity))
            if count:
                log.debug("webhook: event %s polls the owner of conversation %s", event_id, conversation_id)
                return count
    for source, identity in (("data.user_id", _text(data.get("user_id"))), ("identity", identity_of(payload))):
        if identity:
            count = int(await poller.trigger(identity))
            if count:
                log.debug("webhook: event %s polls the identity in its %s", event_id, source)
                return count
    log.debug("webhook: event %s names no known conversation or identity; polling the recently active",
              event_id)
    return int(await poller.trigger(None))


# --- the handler ---------------------------------------------------------------------------------


def make_webhook_handler(
    poller: Any,
    secret: str | Iterable[str] | None,
    *,
    scheme: str | SignatureScheme = HmacSha256.name,
    header: str | None = None,
) -> Callable[[web.Request], Any]:
    """The `POST /moveworks/webhook` handler.

    `secret`: `BRIDGE_WEBHOOK_SECRET` (comma-separated keys, or a list). `scheme`: a name from
    `SCHEMES` (`BRIDGE_WEBHOOK_SIGNATURE`) or a scheme object; `header`: the signature header
    (`BRIDGE_WEBHOOK_SIGNATURE_HEADER`) for a scheme given by name.
    """
    secrets = parse_secrets(secret)
    checker = scheme_for(scheme, header) if isinstance(scheme, str) else scheme
    if not secrets:
        log.warning("BRIDGE_WEBHOOK_SECRET is not set: %s accepts unsigned requests", PATH)
    elif len(secrets) > 1:
        log.info("webhook: %d signing keys accepted (key rotation)", len(secrets))
    seen_types: set[str] = set()

    def note_other_type(kind: Any) -> None:
        shown = repr(kind)[:80]
        if shown in seen_types:
            log.debug("webhook: ignored an event of type %s", shown)
            return
        if len(seen_types) < _MAX_LOGGED_TYPES:
            seen_types.add(shown)
        log.info("webhook: ignoring events of type %s (only %s triggers a poll)", shown, EVENT_TYPE)

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
            problem = checker.check(body, request.headers, secrets)
            if problem is not None:
                log.warning("webhook: rejected a request (%s scheme): %s", checker.name, problem)
                return web.json_response({"error": "invalid signature"}, status=401)
        payload: Any = None
        if body.strip():
            try:
                payload = json.loads(body)
            except RecursionError:
                return web.json_response({"error": "JSON nested too deeply"}, status=400)
            except ValueError:
                log.info("webhook: body is not JSON; polling the recently active identities")
        kind = event_type_of(payload)
        if not is_response_event(kind):
            note_other_type(kind)
            return web.json_response({"status": "accepted", "polls": 0}, status=202)
        try:
            count = await dispatch(poller, payload)
        except Exception:  # the push is a hint: never fail Moveworks' delivery over it
            log.exception("webhook: could not trigger a poll")
            count = 0
        return web.json_response({"status": "accepted", "polls": count}, status=202)

    return handler


def webhook_routes(
    poller: Any,
    secret: str | Iterable[str] | None,
    *,
    scheme: str | SignatureScheme = HmacSha256.name,
    header: str | None = None,
) -> list[web.RouteDef]:
    return [web.post(PATH, make_webhook_handler(poller, secret, scheme=scheme, header=header))]
