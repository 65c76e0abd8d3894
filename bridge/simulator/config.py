"""Simulator settings. Mutable on purpose: `POST /_sim/config` changes pacing and token knobs live."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimulatorConfig:
    assistant_name: str = "moveworks-bridge-dev"
    # Bearer API key -> identity (email). API keys never expire.
    api_keys: dict[str, str] = field(default_factory=lambda: {"sim-key": "employee@example.com"})
    client_id: str = "sim-client"
    client_secret: str = "sim-secret"
    client_identity: str = "service@example.com"  # who client_credentials tokens act as
    token_ttl: int = 3600
    token_body: str = "flat"  # "flat" or "data" ({"data": {...}}), both are documented
    pace: float = 1.0  # multiplier on stream delays; 0 = instant
    jwt_public_key: str | None = None  # PEM; when set, jwt-bearer signatures are verified
    jwt_issuer: str | None = None  # when set, `iss` must match
    jwt_audience: str | None = None  # when set, `aud` must match
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # Key rotation: when non-empty, deliveries are signed with the FIRST secret (webhook_secret is
    # then unused); list the new key first and keep the old one while receivers switch over.
    webhook_secrets: list[str] = field(default_factory=list)
    # "documented" {id, type, created_at, data: {conversation_id, user_id}} (the /rest/v1 docs), or
    # "legacy" {event_type, identity, conversation_id, event_id} (the project's earlier shape).
    webhook_envelope: str = "documented"
    # /rest/v1 flows (seconds, not multiplied by `pace`)
    live_agent_delay: float | None = 0.5  # automatic live-agent reply after a turn; None = only on demand
    modal_submit_delay: float = 0.3  # modal submit -> the "I filed INC…" assistant message
    file_ttl: float = 24 * 3600.0  # uploads (POST /rest/v1alpha1/files) expire after this
    # Realistic default pacing (seconds, multiplied by `pace`).
    reasoning_delay: float = 0.3
    chunk_delay: float = 0.06
    chunk_words: int = 4  # words added per MESSAGE snapshot
    ping_interval: float = 5.0  # `: ping` comment while a stream is idle (not paced)
    # Also publish ordinary (client-initiated) answers as events; real Moveworks may do so,
    # so a client must dedupe by message_id. Off by default.
    answer_events: bool = False
