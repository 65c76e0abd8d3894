"""Opaque cursors and `limit` validation.

A cursor is urlsafe base64 of JSON `{"l": list-name, "o": offset, "a": anchor-id}`: lists ordered by
id (messages, events) resume *after the anchor id*, so items created between pages neither repeat
nor get skipped; the conversation list (ordered by mutable `updated_at`) uses the offset. A cursor
that does not decode, or belongs to another list, is 400 `INVALID_CURSOR`, and so is a bad `limit`:
the published spec declares `INVALID_CURSOR` as the only 400 body of the list endpoints.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import ApiError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def parse_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise page_error("limit must be an integer between 1 and 100") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise page_error("limit must be between 1 and 100")
    return limit


def page_error(message: str) -> ApiError:
    """A bad list parameter: 400 with the one code the spec declares for list endpoints."""
    return ApiError(400, "INVALID_CURSOR", message)


def encode_cursor(list_name: str, offset: int, anchor: str | None) -> str:
    raw = json.dumps({"l": list_name, "o": offset, "a": anchor}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, list_name: str) -> tuple[int, str | None]:
    bad = page_error("Invalid cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("l") != list_name:
        raise bad
    offset, anchor = data.get("o"), data.get("a")
    if not isinstance(offset, int) or offset < 0 or not (anchor is None or isinstance(anchor, str)):
        raise bad
    return offset, anchor


def paginate(
    request: web.Request,
    list_name: str,
    items: list[dict[str, Any]],
    *,
    id_key: str | None = None,
    after: Callable[[dict[str, Any], str], bool] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `items` (already filtered and ordered) and the next cursor or None.

    With `id_key`/`after`, resumption is keyset: skip items until `after(item, anchor)` holds.
    """
    limit = parse_limit(request)
    offset, anchor = 0, None
    cursor = request.query.get("cursor")
    if cursor:
        offset, anchor = decode_cursor(cursor, list_name)
    if id_key and anchor is not None and after is not None:
        items = [i for i in items if after(i, anchor)]
        offset = 0
    page = items[offset : offset + limit]
    if offset + limit >= len(items):
        return page, None
    last = page[-1][id_key] if id_key and page else None
    return page, encode_cursor(list_name, offset + limit, last)
