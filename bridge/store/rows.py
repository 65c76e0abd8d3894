"""Rows as the core's values, the same for every backend (SQLite and PostgreSQL hand back rows
with the same column names)."""

from __future__ import annotations

import json
from typing import Any

from bridge.models import Employee, ThreadKey, ThreadLink


def link_from_row(row: dict[str, Any]) -> ThreadLink:
    return ThreadLink(
        id=row["id"],
        thread=ThreadKey(row["platform"], row["workspace"], row["channel"], row["thread"]),
        user_id=row["user_id"],
        identity=row["identity"],
        conversation_id=row["conversation_id"],
        address=json.loads(row["address"] or "{}"),
        active=bool(row["active"]),
    )


def thread_params(thread: ThreadKey) -> list[str]:
    """The parameters of a `platform, workspace, channel, thread` condition, in that order."""
    return [thread.platform, thread.workspace, thread.channel, thread.thread]


def employee_from_row(row: dict[str, Any]) -> Employee:
    return Employee(
        platform=row["platform"],
        workspace=row["workspace"],
        user_id=row["user_id"],
        email=row["email"],
        name=row["name"],
        last_active_at=row["last_active_at"],
    )
