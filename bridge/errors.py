"""Errors shared by the core and the adapters (the chat platform side). Moveworks errors live in
`bridge.moveworks.errors`."""

from __future__ import annotations


class ConfigError(Exception):
    """A missing or malformed setting. The message names the variable, never its value."""


class PlatformError(Exception):
    """Writing to a chat platform failed.

    `permanent` means retrying cannot help (bot removed, channel archived, writes blocked): the
    caller marks the thread link inactive and moves on.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class PlatformRateLimited(PlatformError):
    """The platform said 429 (or equivalent); `retry_after` seconds when it said."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamExpired(PlatformError):
    """A native stream ended on the platform side (Slack message_not_in_streaming_state,
    Teams streaming time exceeded); the sink switched to plain edits: show the latest again."""


class StreamDeclined(PlatformError):
    """Native streaming is not available for this reply and nothing was shown yet (Slack
    `missing_recipient_user_id`, Teams ContentStreamNotAllowed): continue by edits."""


class UserCanceled(Exception):
    """The user stopped the answer (Teams stop button); the relay stops the Moveworks request."""


class StoreUnavailable(Exception):
    """The store cannot be written (disk full, read-only, I/O error, file deleted): the caller
    tells the asker kindly if the platform still takes writes, and readiness turns 503."""


class AttachmentRefused(Exception):
    """An employee's attachment cannot be passed on (too large, unreadable, not downloadable);
    the message is for logs, never shown."""


class AttachmentTooLarge(AttachmentRefused):
    """The attachment is larger than the limit the core asked for."""
