"""Admin API of the simulator: HTTP under `/_sim/`, no auth (local development and tests only).

    POST /_sim/answers   Script the next answer(s). JSON:
                         {text, match?, identity?, reasoning?: [str],
                          citations?: [{title, url, body?, offset?,
                                        title_type?: "PLAIN_TEXT"|"MARKDOWN_TEXT"|"COMMONMARK_TEXT"}],
                          actions?: [{type: "CALLBACK_ACTION"|"URL_ACTION", label, url?}],
                          chunks?: int (number of MESSAGE snapshots),
                          delay?: seconds between snapshots (overrides pacing),
                          status?: "COMPLETED"|"FAILED", followup?: {text, delay},
                          times?: int (default 1),
                          content_type?: "COMMONMARK_TEXT" (default)|"MARKDOWN_TEXT"|"PLAIN_TEXT"}
                         Scripts are consumed FIFO by the first text question that contains
                         `match` (case-insensitive; absent = any) from `identity` (absent = any).
                         `followup` injects an event with that text into the same conversation
                         `delay` seconds after completion (an async answer). -> 201 the script.
    POST /_sim/events    {identity, text, conversation_id?, actions?, citations?, content_type?}
                         Inject a MESSAGE_EVENT into an existing conversation of that identity,
                         or (no conversation_id) into a new "System Initiated Conversation".
                         -> 201 the Event JSON (404 unknown conversation).
    POST /_sim/faults    {kind, endpoint?, count?, retry_after?, delay?, html?}
                         kind: rate_limit (429 RATE_LIMIT_EXCEEDED, Retry-After if retry_after),
                         server_error (500 INTERNAL_ERROR; html=true sends an HTML body),
                         stream_cut (stream ends right after RESPONSE_CREATED; the response still
                         completes server-side), stream_error (ERROR event after the first MESSAGE
                         snapshot; response ends FAILED), response_failed (terminal
                         RESPONSE_FAILED), slow (`delay` s before the first byte, or before the
                         answer on create_response/stream), expire_tokens (immediate: every
                         minted token expires now).
                         endpoint: any (all API endpoints, not token) | create_conversation |
                         stream | create_response | get_response | messages | events | feedback |
                         token. count: requests affected (default 1). -> 201 pending faults.
    GET  /_sim/requests  Every API/token request served: [{method, path, identity, status, t,
                         endpoint}]. `?clear=1` empties the log afterwards.
    POST /_sim/reset     Forget conversations, scripts, faults and the request log (minted
                         tokens stay valid).
    GET  /_sim/state     Summary: per-identity counts and last event id, feedback, scripts, faults.
    POST /_sim/config    {pace?, token_ttl?, token_body?: "flat"|"data"} -> the new values.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ApiError, bad_input

if TYPE_CHECKING:
    from .server import Simulator

SUMMARY = """\
Admin API (no auth):
  POST /_sim/answers   script the next answer  {text, match?, identity?, reasoning?, citations?, actions?,
                                               chunks?, delay?, status?, followup?, times?, content_type?}
  POST /_sim/events    inject an event         {identity, text, conversation_id?, actions?, citations?}
  POST /_sim/faults    inject a fault          {kind: rate_limit|server_error|stream_cut|stream_error|
                                               response_failed|slow|stall|expire_tokens, endpoint?, count?,
                                               retry_after?, delay?}
  GET  /_sim/requests  request log     POST /_sim/reset   clear state
  GET  /_sim/state     state summary   POST /_sim/config  {pace?, token_ttl?, token_body?}"""

_SCRIPT_KEYS = (
    "text", "match", "identity", "reasoning", "citations", "actions", "chunks", "delay", "status", "followup", "times",
    "content_type",
)
_EVENT_KEYS = ("identity", "text", "conversation_id", "actions", "citations", "content_type")
_FAULT_KEYS = ("kind", "endpoint", "count", "retry_after", "delay", "html")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise bad_input("Body must be JSON") from None
    if not isinstance(data, dict):
        raise bad_input("Body must be a JSON object")
    return data


def _pick(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    unknown = set(data) - set(keys)
    if unknown:
        raise bad_input(f"Unknown fields: {sorted(unknown)}")
    return {k: v for k, v in data.items() if v is not None}


def routes(sim: Simulator) -> list[web.RouteDef]:
    async def answers(request: web.Request) -> web.Response:
        try:
            script = sim.script_answer(**_pick(await _body(request), _SCRIPT_KEYS))
        except (TypeError, ValueError) as exc:
            raise bad_input(str(exc)) from None
        return web.json_response(script, status=201)

    async def events(request: web.Request) -> web.Response:
        data = _pick(await _body(request), _EVENT_KEYS)
        if not isinstance(data.get("identity"), str) or not isinstance(data.get("text"), str):
            raise bad_input("identity and text are required")
        try:
            event = sim.inject_event(**data)
        except LookupError as exc:
            raise ApiError(404, "NOT_FOUND", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise bad_input(str(exc)) from None
        return web.json_response(event, status=201)

    async def faults(request: web.Request) -> web.Response:
        try:
            sim.inject_fault(**_pick(await _body(request), _FAULT_KEYS))
        except (TypeError, ValueError) as exc:
            raise bad_input(str(exc)) from None
        return web.json_response({"faults": [f.as_dict() for f in sim.faults.pending]}, status=201)

    async def requests(request: web.Request) -> web.Response:
        log = list(sim.requests)
        if request.query.get("clear") in ("1", "true"):
            sim.requests.clear()
        return web.json_response({"requests": log})

    async def reset(request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response({"status": "RESET"})

    async def state(request: web.Request) -> web.Response:
        summary = sim.state.summary()
        summary["scripts"] = [s.as_dict() for s in sim.scripts]
        summary["faults"] = [f.as_dict() for f in sim.faults.pending]
        summary["tokens"] = len(sim.tokens.tokens)
        return web.json_response(summary)

    async def config(request: web.Request) -> web.Response:
        data = _pick(await _body(request), ("pace", "token_ttl", "token_body"))
        cfg = sim.config
        if "pace" in data:
            if not isinstance(data["pace"], (int, float)) or data["pace"] < 0:
                raise bad_input("pace must be a non-negative number")
            cfg.pace = float(data["pace"])
        if "token_ttl" in data:
            if not isinstance(data["token_ttl"], int) or data["token_ttl"] < 1:
                raise bad_input("token_ttl must be a positive integer")
            cfg.token_ttl = data["token_ttl"]
        if "token_body" in data:
            if data["token_body"] not in ("flat", "data"):
                raise bad_input("token_body must be flat or data")
            cfg.token_body = data["token_body"]
        return web.json_response({"pace": cfg.pace, "token_ttl": cfg.token_ttl, "token_body": cfg.token_body})

    return [
        web.post("/_sim/answers", answers),
        web.post("/_sim/events", events),
        web.post("/_sim/faults", faults),
        web.get("/_sim/requests", requests),
        web.post("/_sim/reset", reset),
        web.get("/_sim/state", state),
        web.post("/_sim/config", config),
    ]
