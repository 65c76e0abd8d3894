"""Slack adapter (slack-bolt `AsyncApp`): DMs, mentions and thread follow-ups answered by
Moveworks, streamed natively or by edits. `build(core)` is the entry point the registry calls."""

from __future__ import annotations

from bridge.contract import ChatAdapter, Core


def build(core: Core) -> ChatAdapter:
    from .app import SlackAdapter

    return SlackAdapter(core)


__all__ = ["build"]
