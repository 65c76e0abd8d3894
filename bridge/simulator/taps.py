"""What the simulator sent, for observers (`Simulator.taps`), e.g. a test checking every answer
against the published OpenAPI files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sent:
    """A whole API response (`body`), or one event of an event stream (`event`, `data`)."""

    method: str
    path: str
    status: int
    content_type: str
    body: bytes | None = None
    event: str | None = None
    data: Any = None
