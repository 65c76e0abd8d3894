"""Errors shared by the core and the adapters (platform side). Moveworks errors live in
`bridge.moveworks.errors`."""

from __future__ import annotations


class ConfigError(Exception):
    """A missing or malformed setting. The message names the variable, never its value."""


class DeliveryError(Exception):
    """Writing to a chat platform failed.

    `permanent` means retrying cannot help (bot removed, channel archived, writes blocked): the
    caller marks the thread link inactive and moves on.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RateLimited(DeliveryError):
    """The platform said 429 (or equivalent); `retry_after` seconds when it said."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamExpired(DeliveryError):
    """A native stream ended on the platform side (Slack message_not_in_streaming_state,
    Teams streaming time exceeded); the sink should finish with a plain edit."""


class UserCanceled(Exception):
    """The user stopped the answer (Teams stop button); the relay stops the Moveworks request."""
