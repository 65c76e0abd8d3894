"""Settings from the environment (CONTRACT.md names), validated once at start-up.

A missing or malformed variable stops start-up with one line naming it; values of secrets are
never echoed. `Settings.__repr__` masks every secret so an accidental log line stays safe.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from bridge.errors import ConfigError

DEFAULT_BASE_URL = "https://api.moveworks.ai/rest/v1"
DEFAULT_TOKEN_URL = "https://api.moveworks.ai/oauth/v1/token"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# Offered when an employee opens the assistant (Slack Messages tab, Teams prompt starters).
DEFAULT_SUGGESTED_PROMPTS = (
    "How do I reset my password?",
    "My VPN keeps disconnecting",
    "Request access to an application",
    "How much PTO do I have left?",
)
MAX_SUGGESTED_PROMPTS = 4  # Slack's limit (agent_view, setSuggestedPrompts)
AUTH_MODES = ("api_key", "client_credentials", "user_jwt")
SECRET_FIELDS = frozenset(
    {
        "moveworks_api_key",
        "moveworks_client_secret",
        "moveworks_jwt_private_key",
        "webhook_secret",
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "slack_client_secret",
        "teams_app_password",
    }
)


def parse_prompts(raw: str | None) -> tuple[str, ...]:
    """BRIDGE_SUGGESTED_PROMPTS: `;`-separated, at most four, each at most 100 characters."""
    if raw is None or not raw.strip():
        return DEFAULT_SUGGESTED_PROMPTS
    prompts = tuple(p.strip() for p in raw.split(";") if p.strip())
    if len(prompts) > MAX_SUGGESTED_PROMPTS:
        raise ConfigError(f"BRIDGE_SUGGESTED_PROMPTS: at most {MAX_SUGGESTED_PROMPTS} prompts (Slack's limit), "
                          f"got {len(prompts)}")
    if any(len(p) > 100 for p in prompts):
        raise ConfigError("BRIDGE_SUGGESTED_PROMPTS: each prompt must be at most 100 characters")
    return prompts


@dataclass(frozen=True)
class Settings:
    port: int = 3978
    db: str = "bridge.db"
    adapters: tuple[str, ...] = ()
    poller: bool = True
    poll_interval: float = 5.0
    poll_max_interval: float = 300.0
    webhook_secret: str | None = None  # one secret, or several separated by "," during a rotation
    webhook_signature: str = "hmac-sha256"  # BRIDGE_WEBHOOK_SIGNATURE: the scheme (see webhook.py)
    webhook_signature_header: str = "X-Moveworks-Signature"
    suggested_prompts: tuple[str, ...] = DEFAULT_SUGGESTED_PROMPTS
    log_format: str = "text"
    log_level: str = "INFO"
    shutdown_grace: float = 20.0
    answer_timeout: float = 180.0
    instance_ttl: float = 10.0  # BRIDGE_INSTANCE_TTL: a process silent this long is dead
    unmapped_dm: str = "sole"

    moveworks_base_url: str = DEFAULT_BASE_URL
    moveworks_assistant_name: str = ""
    moveworks_auth: str = "api_key"
    moveworks_api_key: str | None = None
    moveworks_token_url: str = DEFAULT_TOKEN_URL
    moveworks_client_id: str | None = None
    moveworks_client_secret: str | None = None
    moveworks_jwt_private_key: str | None = None
    moveworks_jwt_issuer: str | None = None
    moveworks_jwt_audience: str | None = None
    moveworks_rps: float = 10.0
    moveworks_timeout: float = 30.0
    moveworks_files: bool = True  # MOVEWORKS_FILES: attachments go to the alpha Files API (/rest/v1)
    moveworks_file_max_mb: float = 10.0
    moveworks_file_purpose: str = "CONVERSATION_INPUT"

    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    slack_streaming: str = "auto"
    slack_channel_mode: str = "thread"
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_allowed_teams: frozenset[str] = field(default_factory=frozenset)

    teams_app_id: str | None = None
    teams_app_password: str | None = None
    teams_app_tenant_id: str | None = None
    teams_app_type: str = "MultiTenant"
    teams_allowed_tenants: frozenset[str] = field(default_factory=frozenset)
    teams_text_format: str = "markdown"
    teams_openid_metadata_url: str | None = None  # None: botbuilder's (the Bot Framework's)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            if f.name == "db" and "@" in str(value):
                value = str(value).split("://")[0] + "://***@" + str(value).rsplit("@", 1)[1]
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @property
    def per_employee(self) -> bool:
        return self.moveworks_auth == "user_jwt"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, need_moveworks: bool = True) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        adapters_default = []
        if reader.str("SLACK_BOT_TOKEN") or reader.str("SLACK_CLIENT_ID"):
            adapters_default.append("slack")
        if reader.str("TEAMS_APP_ID"):
            adapters_default.append("teams")
        adapters = reader.list("BRIDGE_ADAPTERS", adapters_default)
        for name in adapters:
            if name not in ("slack", "teams"):
                raise ConfigError(f"BRIDGE_ADAPTERS: unknown adapter {name!r} (use slack, teams)")
        settings = cls(
            port=reader.int("PORT", 3978, low=1, high=65535),
            db=reader.str("BRIDGE_DB") or "bridge.db",
            adapters=tuple(adapters),
            poller=reader.choice("BRIDGE_POLLER", ("on", "off"), "on") == "on",
            poll_interval=reader.float("BRIDGE_POLL_INTERVAL", 5.0, low=0.2),
            poll_max_interval=reader.float("BRIDGE_POLL_MAX_INTERVAL", 300.0, low=1.0),
            webhook_secret=reader.str("BRIDGE_WEBHOOK_SECRET"),
            webhook_signature=reader.choice(
                "BRIDGE_WEBHOOK_SIGNATURE", ("hmac-sha256", "hmac-sha256-timestamped"), "hmac-sha256"
            ),
            webhook_signature_header=reader.str("BRIDGE_WEBHOOK_SIGNATURE_HEADER") or "X-Moveworks-Signature",
            suggested_prompts=parse_prompts(env.get("BRIDGE_SUGGESTED_PROMPTS")),
            log_format=reader.choice("BRIDGE_LOG_FORMAT", ("text", "json"), "text"),
            log_level=reader.choice(
                "BRIDGE_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
            ),
            shutdown_grace=reader.float("BRIDGE_SHUTDOWN_GRACE", 20.0, low=0.0),
            answer_timeout=reader.float("BRIDGE_ANSWER_TIMEOUT", 180.0, low=5.0),
            instance_ttl=reader.float("BRIDGE_INSTANCE_TTL", 10.0, low=0.5),
            unmapped_dm=reader.choice("BRIDGE_UNMAPPED_DM", ("sole", "last_active", "off"), "sole"),
            moveworks_base_url=reader.url("MOVEWORKS_BASE_URL", DEFAULT_BASE_URL),
            moveworks_assistant_name=reader.str("MOVEWORKS_ASSISTANT_NAME") or "",
            moveworks_auth=reader.choice("MOVEWORKS_AUTH", AUTH_MODES, "api_key"),
            moveworks_api_key=reader.str("MOVEWORKS_API_KEY"),
            moveworks_token_url=reader.url("MOVEWORKS_TOKEN_URL", DEFAULT_TOKEN_URL),
            moveworks_client_id=reader.str("MOVEWORKS_CLIENT_ID"),
            moveworks_client_secret=reader.str("MOVEWORKS_CLIENT_SECRET"),
            moveworks_jwt_private_key=reader.str("MOVEWORKS_JWT_PRIVATE_KEY"),
            moveworks_jwt_issuer=reader.str("MOVEWORKS_JWT_ISSUER"),
            moveworks_jwt_audience=reader.str("MOVEWORKS_JWT_AUDIENCE"),
            moveworks_rps=reader.float("MOVEWORKS_MAX_RPS", 10.0, low=0.1),
            moveworks_timeout=reader.float("MOVEWORKS_TIMEOUT", 30.0, low=1.0),
            moveworks_files=reader.choice("MOVEWORKS_FILES", ("on", "off"), "on") == "on",
            moveworks_file_max_mb=reader.float("MOVEWORKS_FILE_MAX_MB", 10.0, low=0.01),
            moveworks_file_purpose=reader.str("MOVEWORKS_FILE_PURPOSE") or "CONVERSATION_INPUT",
            slack_bot_token=reader.str("SLACK_BOT_TOKEN"),
            slack_signing_secret=reader.str("SLACK_SIGNING_SECRET"),
            slack_app_token=reader.str("SLACK_APP_TOKEN"),
            slack_api_url=reader.url("SLACK_API_URL", DEFAULT_SLACK_API_URL),
            slack_streaming=reader.choice("SLACK_STREAMING", ("auto", "native", "edit"), "auto"),
            slack_channel_mode=reader.choice("SLACK_CHANNEL_MODE", ("thread", "dm"), "thread"),
            slack_client_id=reader.str("SLACK_CLIENT_ID"),
            slack_client_secret=reader.str("SLACK_CLIENT_SECRET"),
            slack_allowed_teams=frozenset(reader.list("SLACK_ALLOWED_TEAMS", [])),
            teams_app_id=reader.str("TEAMS_APP_ID"),
            teams_app_password=reader.str("TEAMS_APP_PASSWORD"),
            teams_app_tenant_id=reader.str("TEAMS_APP_TENANT_ID"),
            teams_app_type=reader.choice(
                "TEAMS_APP_TYPE", ("MultiTenant", "SingleTenant", "UserAssignedMSI"), "MultiTenant"
            ),
            teams_allowed_tenants=frozenset(reader.list("TEAMS_ALLOWED_TENANTS", [])),
            teams_text_format=reader.choice(
                "TEAMS_TEXT_FORMAT", ("markdown", "extendedmarkdown"), "markdown"
            ),
            teams_openid_metadata_url=reader.url("TEAMS_OPENID_METADATA_URL", "") or None,
        )
        if (
            settings.per_employee
            and "teams" in settings.adapters
            and not settings.teams_allowed_tenants
            and settings.teams_app_tenant_id
        ):
            # Acting as employees by their roster email: only the bot's own tenant may vouch.
            settings = replace(settings, teams_allowed_tenants=frozenset({settings.teams_app_tenant_id}))
        settings.validate(need_moveworks=need_moveworks)
        return settings

    def validate(self, *, need_moveworks: bool = True) -> None:
        """Cross-field rules; each error names the variable to fix."""
        if need_moveworks:
            if not self.moveworks_assistant_name:
                raise ConfigError("MOVEWORKS_ASSISTANT_NAME is required (the Assistant-Name header)")
            required = {
                "api_key": ("MOVEWORKS_API_KEY",),
                "client_credentials": ("MOVEWORKS_CLIENT_ID", "MOVEWORKS_CLIENT_SECRET"),
                "user_jwt": (
                    "MOVEWORKS_JWT_PRIVATE_KEY",
                    "MOVEWORKS_JWT_ISSUER",
                    "MOVEWORKS_JWT_AUDIENCE",
                ),
            }[self.moveworks_auth]
            for name in required:
                if not getattr(self, name.lower()):
                    raise ConfigError(f"{name} is required when MOVEWORKS_AUTH={self.moveworks_auth}")
        if "slack" in self.adapters:
            if not self.slack_bot_token and not (self.slack_client_id and self.slack_client_secret):
                raise ConfigError(
                    "SLACK_BOT_TOKEN is required for the slack adapter "
                    "(or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET for multi-workspace OAuth)"
                )
            if not self.slack_app_token and not self.slack_signing_secret:
                raise ConfigError(
                    "SLACK_SIGNING_SECRET is required for the slack adapter over HTTP "
                    "(or SLACK_APP_TOKEN for Socket Mode)"
                )
            if self.slack_bot_token and not self.slack_bot_token.startswith("xoxb-"):
                raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
            if self.slack_app_token and not self.slack_app_token.startswith("xapp-"):
                raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        if self.per_employee and "teams" in self.adapters and not self.teams_allowed_tenants:
            raise ConfigError(
                "TEAMS_ALLOWED_TENANTS (or TEAMS_APP_TENANT_ID) is required when "
                "MOVEWORKS_AUTH=user_jwt: the bridge acts as whoever a tenant's roster names"
            )
        if (
            self.per_employee
            and "slack" in self.adapters
            and self.slack_client_id
            and not self.slack_allowed_teams
        ):
            raise ConfigError(
                "SLACK_ALLOWED_TEAMS is required with Slack OAuth when MOVEWORKS_AUTH=user_jwt: "
                "otherwise any workspace that installs the app acts as whoever its emails name"
            )
        if "teams" in self.adapters and self.teams_app_id:
            if self.teams_app_type != "UserAssignedMSI" and not self.teams_app_password:
                raise ConfigError("TEAMS_APP_PASSWORD is required when TEAMS_APP_ID is set")
            if self.teams_app_type == "SingleTenant" and not self.teams_app_tenant_id:
                raise ConfigError("TEAMS_APP_TENANT_ID is required when TEAMS_APP_TYPE=SingleTenant")


class _Reader:
    # The methods shadow the builtins' names inside this class: annotations say `builtins.`.

    def __init__(self, env: Mapping[builtins.str, builtins.str]) -> None:
        self.env = env

    def str(self, name: builtins.str) -> builtins.str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def int(self, name: builtins.str, default: builtins.int, *, low: builtins.int, high: builtins.int) -> builtins.int:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}")
        return value

    def float(self, name: builtins.str, default: builtins.float, *, low: builtins.float) -> builtins.float:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds") from None
        if not value >= low:
            raise ConfigError(f"{name} must be at least {low}")
        return value

    def choice(
        self, name: builtins.str, allowed: tuple[builtins.str, ...], default: builtins.str, upper: bool = False
    ) -> builtins.str:
        raw = self.str(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw
        if value not in allowed:
            raise ConfigError(f"{name} must be one of: {', '.join(allowed)}")
        return value

    def list(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        raw = self.str(name)
        if raw is None:
            return list(default)
        return [item.strip().lower() if name == "BRIDGE_ADAPTERS" else item.strip()
                for item in raw.split(",") if item.strip()]

    def url(self, name: builtins.str, default: builtins.str) -> builtins.str:
        raw = self.str(name)
        if raw is None:
            return default
        if not raw.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL")
        return raw
