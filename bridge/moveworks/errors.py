"""Typed errors of the Moveworks client. Messages never contain tokens or secrets."""

from __future__ import annotations


class MoveworksError(Exception):
    """Base class. `code` is the API's stable error code when there is one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        root_uuid: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.root_uuid = root_uuid
        self.detail = detail  # the API's own error message (scrubbed), e.g. a form's refusal

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.root_uuid:
            parts.append(f"root_uuid={self.root_uuid}")
        return " ".join(parts)


class MoveworksUnavailable(MoveworksError):
    """Network failure, timeout or 5xx that survived the retries: try again later."""


class TokenTimeout(MoveworksUnavailable):
    """The token endpoint did not answer in time. Not retried: the asker hears at once."""


class RateLimited(MoveworksError):
    """429 that survived the retries. `retry_after` is in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuthError(MoveworksError):
    """401/403, or a token endpoint that refused the credentials."""


class NotFound(MoveworksError):
    """404: unknown id, an id of another identity, or an org without the API enabled."""


class InvalidRequest(MoveworksError):
    """400: bad input, bad cursor (`code == "INVALID_CURSOR"`), bad feedback callback."""


class StreamFailed(MoveworksError):
    """The answer stream ended in FAILED or ERROR, or could not be recovered."""
