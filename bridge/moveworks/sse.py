"""Parsing of the create-response-stream SSE body.

The wire format is not pinned down by the spec, so parsing is deliberately forgiving: the event type
comes from `data.event_type` when present, else from the SSE `event:` name; comment/heartbeat lines,
unknown event types, unknown fields and malformed data lines are logged and skipped — never fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx
from httpx_sse import EventSource

from .models import (
    OutputDelta,
    Response,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    ResponseInProgress,
    StreamError,
    StreamEvent,
    parse_output,
)

log = logging.getLogger("bridge.moveworks")

_RESPONSE_EVENTS: dict[str, Callable[[Response], StreamEvent]] = {
    "RESPONSE_CREATED": ResponseCreated,
    "RESPONSE_IN_PROGRESS": ResponseInProgress,
    "RESPONSE_COMPLETED": ResponseCompleted,
    "RESPONSE_FAILED": ResponseFailed,
}


def parse_stream_event(event_name: str | None, data: str) -> StreamEvent | None:
    """One SSE event → a typed stream event, or None when it is to be ignored."""
    if not data or not data.strip():
        return None  # keep-alive / empty event
    try:
        payload: Any = json.loads(data)
    except ValueError:
        log.warning("moveworks stream: skipping malformed data line (%d chars, event=%r)",
                    len(data), (event_name or "")[:40])
        return None
    if not isinstance(payload, dict):
        log.warning("moveworks stream: skipping non-object data (event=%r)", (event_name or "")[:40])
        return None
    kind = payload.get("event_type")
    if not isinstance(kind, str) or not kind:
        kind = event_name or ""
    kind = kind.strip().upper()

    try:
        if kind in _RESPONSE_EVENTS:
            response = payload.get("response")
            if not isinstance(response, dict):
                raise ValueError(f"{kind} without response")
            return _RESPONSE_EVENTS[kind](Response.from_json(response))
        if kind == "RESPONSE_OUTPUT_DELTA":
            output = parse_output(payload.get("output"))
            if output is None:
                log.debug("moveworks stream: ignoring output of unknown type")
                return None
            return OutputDelta(output)
        if kind == "ERROR":
            err = payload.get("error")
            if not isinstance(err, dict):
                err = payload  # flat {code, message}
            code = err.get("code")
            message = err.get("message")
            return StreamError(
                code=str(code) if code else "ERROR",
                message=str(message) if message else "stream error",
            )
    except ValueError as exc:
        log.warning("moveworks stream: skipping malformed %s event: %s", kind, exc)
        return None
    log.debug("moveworks stream: ignoring unknown event type %r", kind[:40])
    return None


async def iter_stream_events(response: httpx.Response) -> AsyncGenerator[StreamEvent, None]:
    """Typed events of an open `text/event-stream` response; network errors propagate."""
    source = EventSource(response)
    async for sse in source.aiter_sse():
        event = parse_stream_event(sse.event, sse.data)
        if event is not None:
            yield event
