"""Slack adapter (slack-bolt `AsyncApp`): DMs, mentions and thread follow-ups answered by
Moveworks, streamed natively or by edits. `build(ctx)` is the entry point the registry calls."""

from __future__ import annotations

from typing import Any


def build(ctx: Any) -> Any:
    from .app import SlackAdapter

    return SlackAdapter(ctx)


__all__ = ["build"]
