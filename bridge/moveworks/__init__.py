"""Moveworks Conversations API: typed models, errors, auth providers and the async client."""

from .auth import ApiKeyAuth, AuthConfigError, AuthProvider, ClientCredentialsAuth, UserJwtAuth
from .client import MoveworksClient
from .errors import (
    AuthError,
    InvalidRequest,
    MoveworksError,
    MoveworksUnavailable,
    NotFound,
    RateLimited,
    StreamFailed,
    TokenTimeout,
)

__all__ = [
    "ApiKeyAuth",
    "AuthConfigError",
    "AuthError",
    "AuthProvider",
    "ClientCredentialsAuth",
    "InvalidRequest",
    "MoveworksClient",
    "MoveworksError",
    "MoveworksUnavailable",
    "NotFound",
    "RateLimited",
    "StreamFailed",
    "TokenTimeout",
    "UserJwtAuth",
]
