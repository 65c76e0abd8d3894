"""Bearer checking and the token endpoint `POST /oauth/v1/token`.

Two grants: `client_credentials` (Events/Data API style, acts as `client_identity`) and the
service-to-service `urn:ietf:params:oauth:grant-type:jwt-bearer` exchange, whose RS256 assertion's
`sub` names the employee the minted bearer acts as. Token errors use the flat `{code, message}`
body the OAuth endpoint documents; success is flat or `{"data": …}`-wrapped per config, since
both shapes are published.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from .config import SimulatorConfig
from .errors import ApiError
from .ids import opaque

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600
SKEW = 30


@dataclass
class MintedToken:
    identity: str
    expires_at: float


class TokenStore:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.tokens: dict[str, MintedToken] = {}
        self.used_jti: set[str] = set()

    def mint(self, identity: str) -> tuple[str, int]:
        ttl = int(self.config.token_ttl)
        token = opaque("mwt_")
        self.tokens[token] = MintedToken(identity, time.time() + ttl)
        return token, ttl

    def identity_for(self, bearer: str) -> str | None:
        """The identity a bearer acts as, or None when unknown/expired."""
        if bearer in self.config.api_keys:
            return self.config.api_keys[bearer]
        minted = self.tokens.get(bearer)
        if minted is None or minted.expires_at <= time.time():
            return None
        return minted.identity

    def expire_all(self) -> None:
        now = time.time()
        for minted in self.tokens.values():
            minted.expires_at = min(minted.expires_at, now)


def authenticate(request: web.Request, config: SimulatorConfig, tokens: TokenStore) -> str:
    """401 for a missing/unknown/expired bearer, then 403 for a wrong Assistant-Name."""
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    bearer = bearer.strip()
    if scheme.lower() != "bearer" or not bearer:
        raise ApiError(401, "UNAUTHORIZED", "Missing or malformed bearer token")
    identity = tokens.identity_for(bearer)
    if identity is None:
        raise ApiError(401, "UNAUTHORIZED", "Invalid or expired bearer token")
    if request.headers.get("Assistant-Name") != config.assistant_name:
        raise ApiError(403, "FORBIDDEN", "Invalid assistant")
    return identity


def _flat(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, code, message, flat=True)


async def _params(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if request.content_type == "application/json":
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise _flat(400, "INVALID_REQUEST", "Body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _flat(400, "INVALID_REQUEST", "Body must be a JSON object")
        return data
    post = await request.post()
    return {k: v for k, v in post.items() if isinstance(v, str)}


def _verify_assertion(assertion: str, config: SimulatorConfig, tokens: TokenStore) -> str:
    def bad(message: str) -> ApiError:
        return _flat(400, "INVALID_GRANT", message)

    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        raise bad("assertion is not a JWT") from None
    if header.get("alg") != "RS256":
        raise bad("assertion must be signed with RS256")
    try:
        if config.jwt_public_key:
            claims = jwt.decode(
                assertion,
                config.jwt_public_key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_iss": False},
                leeway=SKEW,
            )
        else:
            claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise bad(f"assertion rejected: {exc}") from None
    now = time.time()
    for claim in ("sub", "iss", "aud", "iat", "exp", "jti"):
        if claims.get(claim) in (None, ""):
            raise bad(f"assertion lacks the {claim} claim")
    if not isinstance(claims["sub"], str):
        raise bad("sub must be the employee's email")
    if not all(isinstance(claims[c], (int, float)) for c in ("iat", "exp")):
        raise bad("iat and exp must be numeric dates")
    if claims["exp"] <= now - SKEW:
        raise bad("assertion has expired")
    if claims["exp"] > now + MAX_ASSERTION_LIFETIME + SKEW:
        raise bad("exp must be at most one hour ahead")
    if claims["iat"] > now + SKEW:
        raise bad("iat is in the future")
    if config.jwt_issuer and claims["iss"] != config.jwt_issuer:
        raise bad("unexpected issuer")
    if config.jwt_audience:
        aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if config.jwt_audience not in aud:
            raise bad("invalid_audience")
    jti = str(claims["jti"])
    if jti in tokens.used_jti:
        raise bad("assertion jti has already been used")
    tokens.used_jti.add(jti)
    return claims["sub"]


async def token_endpoint(request: web.Request, config: SimulatorConfig, tokens: TokenStore) -> web.Response:
    params = await _params(request)
    grant = params.get("grant_type")
    if grant == "client_credentials":
        if not params.get("client_id") or not params.get("client_secret"):
            raise _flat(400, "INVALID_REQUEST", "client_id and client_secret are required")
        if params["client_id"] != config.client_id or params["client_secret"] != config.client_secret:
            raise _flat(401, "UNAUTHORIZED", "Invalid client credentials")
        identity = config.client_identity
    elif grant == JWT_BEARER:
        assertion = params.get("assertion")
        if not isinstance(assertion, str) or not assertion:
            raise _flat(400, "INVALID_REQUEST", "assertion is required")
        identity = _verify_assertion(assertion, config, tokens)
    elif not grant:
        raise _flat(400, "INVALID_REQUEST", "grant_type is required")
    else:
        raise _flat(400, "UNSUPPORTED_GRANT_TYPE", f"Unsupported grant_type {grant!r}")
    token, ttl = tokens.mint(identity)
    body: dict[str, Any] = {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}
    return web.json_response({"data": body} if config.token_body == "data" else body)
