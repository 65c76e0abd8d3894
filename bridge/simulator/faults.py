"""Injected failures (`POST /_sim/faults`), so client retry/recovery paths can be exercised.

A fault is consumed by the next `count` requests it applies to. `endpoint="any"` covers every
Conversations API endpoint but not the token endpoint (a token fault must say `endpoint="token"`),
so a "rate limit the next call" test is not swallowed by a token refresh.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KINDS = (
    "rate_limit",  # 429 RATE_LIMIT_EXCEEDED (+ Retry-After when retry_after is given)
    "server_error",  # 500 INTERNAL_ERROR (html=True: an HTML body, like a proxy would send)
    "stream_cut",  # stream closes right after RESPONSE_CREATED; response completes server-side
    "stream_error",  # ERROR event after the first MESSAGE snapshot; response ends FAILED
    "response_failed",  # terminal RESPONSE_FAILED (stream) / FAILED (async)
    "slow",  # `delay` seconds before the first byte (plain endpoints) or before the answer
    "stall",  # the stream sends RESPONSE_CREATED, then only keep-alive comments, never an end
    "expire_tokens",  # immediate: every minted token expires now (not queued)
)
ENDPOINTS = (
    "any",
    "create_conversation",
    "stream",
    "create_response",
    "get_response",
    "messages",
    "events",
    "feedback",
    "get_event",  # /rest/v1 only
    "modals",  # /rest/v1 modal get/refresh/submit
    "files",  # /rest/v1alpha1/files
    "token",
)


@dataclass
class Fault:
    kind: str
    endpoint: str = "any"
    count: int = 1
    retry_after: float | None = None
    delay: float | None = None
    html: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError("count must be a positive integer")
        if self.kind == "slow" and not isinstance(self.delay, (int, float)):
            raise ValueError("slow needs delay (seconds)")

    def applies_to(self, endpoint: str) -> bool:
        return self.endpoint == endpoint or (self.endpoint == "any" and endpoint != "token")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBoard:
    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def take(self, endpoint: str, kinds: tuple[str, ...]) -> Fault | None:
        """Consume one use of the oldest pending fault of `kinds` that applies to `endpoint`."""
        for fault in self.pending:
            if fault.kind in kinds and fault.applies_to(endpoint):
                fault.count -= 1
                if fault.count <= 0:
                    self.pending.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self.pending.clear()
