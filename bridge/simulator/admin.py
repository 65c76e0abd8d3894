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
                         get_event | modals (get/refresh/submit) | files | token.
                         count: requests affected (default 1). -> 201 pending faults.
    GET  /_sim/requests  Every API/token request served: [{method, path, identity, status, t,
                         endpoint}]. `?clear=1` empties the log afterwards.
    POST /_sim/reset     Forget conversations, scripts, faults and the request log (minted
                         tokens stay valid).
    GET  /_sim/state     Summary: per-identity counts and last event id, feedback, scripts, faults,
                         live chats, numbers of modal calls and uploads.
    POST /_sim/config    {pace?, token_ttl?, token_body?: "flat"|"data",
                          live_agent_delay?: seconds|null (automatic agent reply; null = off),
                          modal_submit_delay?: seconds (submit -> "I filed INC…" message),
                          file_ttl?: seconds (upload lifetime, default 86400),
                          webhook_url?: str|null, webhook_secrets?: [str] (signs with the first),
                          webhook_envelope?: "legacy"|"documented"}
                         -> {pace, token_ttl, token_body} plus every other key that was sent.

  /rest/v1 flows (see flows.py, modals.py, files.py):
    POST /_sim/live-agent     {identity, conversation_id, text?, display_name?, avatar_url?, active?: bool}
                              `text`: the agent says it now (LIVE_AGENT message on its own response,
                              published as an event); `active`: start/end live-agent mode without a
                              turn. -> 201 {live: bool, event: Event|null} (404 unknown conversation).
    POST /_sim/modal-failures {message, count?: int (default 1)}: the next `count` modal submits fail
                              with 400 INVALID_INPUT and this message. -> 201 {pending: [str]}
    GET  /_sim/modals         What the modal endpoints received, oldest first: {calls: [{identity,
                              op: "get"|"refresh"|"submit", conversation_id, response_id, message_id,
                              modal_id, values (exactly as sent), body, status, error, kept (submit:
                              the values kept after validation), t}]}. `?clear=1` empties it.
    GET  /_sim/files          Upload attempts: {files: [{identity, status, error, id, file_name,
                              content_type (sniffed), declared_content_type, size_bytes, purpose,
                              fields, parts (part names in order), sha256, expire_time, t}]}.
                              `?clear=1` empties the log (stored files stay usable).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ApiError, bad_input
from .webhook import ENVELOPES

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
  GET  /_sim/state     state summary   POST /_sim/config  {pace?, token_ttl?, token_body?, live_agent_delay?,
                                               modal_submit_delay?, file_ttl?, webhook_url?, webhook_secrets?,
                                               webhook_envelope?}
  POST /_sim/live-agent      agent says / live mode  {identity, conversation_id, text?, display_name?, active?}
  POST /_sim/modal-failures  fail the next submit    {message, count?}
  GET  /_sim/modals    modal calls received   GET  /_sim/files   uploads received   (?clear=1)"""

_SCRIPT_KEYS = (
    "text", "match", "identity", "reasoning", "citations", "actions", "chunks", "delay", "status", "followup", "times",
    "content_type",
)
_EVENT_KEYS = ("identity", "text", "conversation_id", "actions", "citations", "content_type")
_FAULT_KEYS = ("kind", "endpoint", "count", "retry_after", "delay", "html")
_CONFIG_KEYS = (
    "pace", "token_ttl", "token_body", "live_agent_delay", "modal_submit_delay", "file_ttl", "webhook_url",
    "webhook_secrets", "webhook_envelope",
)
_LIVE_KEYS = ("identity", "conversation_id", "text", "display_name", "avatar_url", "active")


def _seconds(data: dict[str, Any], key: str, *, nullable: bool = False, positive: bool = False) -> float | None:
    value = data[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise bad_input(f"{key} must be a {'positive' if positive else 'non-negative'} number"
                        + (" or null" if nullable else ""))
    return float(value)


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
        raw = await _body(request)
        _pick(raw, _CONFIG_KEYS)
        data = {k: v for k, v in raw.items() if v is not None or k in ("live_agent_delay", "webhook_url")}
        cfg = sim.config
        if "webhook_secrets" in data and not (
            isinstance(data["webhook_secrets"], list) and all(isinstance(x, str) and x for x in data["webhook_secrets"])
        ):
            raise bad_input("webhook_secrets must be a list of non-empty strings (the first one signs)")
        if "webhook_envelope" in data and data["webhook_envelope"] not in ENVELOPES:
            raise bad_input(f"webhook_envelope must be one of {ENVELOPES}")
        if "webhook_url" in data and data["webhook_url"] is not None and not isinstance(data["webhook_url"], str):
            raise bad_input("webhook_url must be a string or null")
        seconds = {
            "live_agent_delay": _seconds(data, "live_agent_delay", nullable=True) if "live_agent_delay" in data else 0,
            "modal_submit_delay": _seconds(data, "modal_submit_delay") if "modal_submit_delay" in data else 0,
            "file_ttl": _seconds(data, "file_ttl", positive=True) if "file_ttl" in data else 0,
        }
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
        for key in ("live_agent_delay", "modal_submit_delay", "file_ttl"):
            if key in data:
                setattr(cfg, key, seconds[key])
        for key in ("webhook_url", "webhook_secrets", "webhook_envelope"):
            if key in data:
                setattr(cfg, key, list(data[key]) if key == "webhook_secrets" else data[key])
        shown = {"pace": cfg.pace, "token_ttl": cfg.token_ttl, "token_body": cfg.token_body}
        shown.update({k: getattr(cfg, k) for k in data})
        return web.json_response(shown)

    async def live_agent(request: web.Request) -> web.Response:
        data = _pick(await _body(request), _LIVE_KEYS)
        identity, cid = data.get("identity"), data.get("conversation_id")
        if not isinstance(identity, str) or not isinstance(cid, str):
            raise bad_input("identity and conversation_id are required")
        text, active = data.get("text"), data.get("active")
        if text is None and active is None:
            raise bad_input("give text (the agent says it) and/or active (start/end live-agent mode)")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise bad_input("text must be a non-empty string")
        if active is not None and not isinstance(active, bool):
            raise bad_input("active must be a boolean")
        for key in ("display_name", "avatar_url"):
            if key in data and not isinstance(data[key], str):
                raise bad_input(f"{key} must be a string")
        try:
            live = sim.set_live(identity, cid, active) if active is not None else cid in sim.state.user(identity).live
            event = None
            if text is not None:
                event = sim.agent_say(identity, cid, text, data.get("display_name"), data.get("avatar_url"))
        except LookupError as exc:
            raise ApiError(404, "NOT_FOUND", str(exc)) from None
        return web.json_response({"live": live, "event": event}, status=201)

    async def modal_failures(request: web.Request) -> web.Response:
        data = _pick(await _body(request), ("message", "count"))
        message, count = data.get("message"), data.get("count", 1)
        if not isinstance(message, str) or not message:
            raise bad_input("message is required")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise bad_input("count must be a positive integer")
        sim.state.modal_failures.extend([message] * count)
        return web.json_response({"pending": list(sim.state.modal_failures)}, status=201)

    async def modal_calls(request: web.Request) -> web.Response:
        calls = list(sim.state.modal_calls)
        if request.query.get("clear") in ("1", "true"):
            sim.state.modal_calls.clear()
        return web.json_response({"calls": calls})

    async def uploads(request: web.Request) -> web.Response:
        got = list(sim.state.uploads)
        if request.query.get("clear") in ("1", "true"):
            sim.state.uploads.clear()
        return web.json_response({"files": got})

    return [
        web.post("/_sim/answers", answers),
        web.post("/_sim/events", events),
        web.post("/_sim/faults", faults),
        web.get("/_sim/requests", requests),
        web.post("/_sim/reset", reset),
        web.get("/_sim/state", state),
        web.post("/_sim/config", config),
        web.post("/_sim/live-agent", live_agent),
        web.post("/_sim/modal-failures", modal_failures),
        web.get("/_sim/modals", modal_calls),
        web.get("/_sim/files", uploads),
    ]
