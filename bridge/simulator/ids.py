"""Time-sortable base-62 identifiers, as the G1 API uses (`conv_32bt7BMLhLyVzTUjfi35N`).

Layout of the 21 characters after the prefix: 8 chars of Unix milliseconds, 4 chars of a
per-millisecond sequence (random start, then +1), 9 random chars. The alphabet is in ASCII order, so ids compare as
plain strings in creation order — even within one millisecond — which is what `starting_after` /
`ending_at` on the events endpoint and keyset cursors rely on.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 21
_SEQ_SPACE = 62**4


def b62(value: int, width: int) -> str:
    """Fixed-width base-62 of a non-negative integer (ASCII-sortable)."""
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


class IdGenerator:
    """Monotonic id source: never goes backwards, even if the wall clock does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0

    def new(self, prefix: str) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:  # random start keeps ids from looking patterned
                self._last_ms, self._seq = now_ms, secrets.randbelow(62**3)
            else:
                self._seq += 1
                if self._seq >= _SEQ_SPACE:  # borrow the next millisecond
                    self._last_ms, self._seq = self._last_ms + 1, 0
            head = b62(self._last_ms, 8) + b62(self._seq, 4)
        tail = "".join(secrets.choice(ALPHABET) for _ in range(9))
        return prefix + head + tail


_default = IdGenerator()


def new_id(prefix: str) -> str:
    """A fresh id such as `new_id("evt_")`; process-wide ordering."""
    return _default.new(prefix)


def opaque(prefix: str = "") -> str:
    """Unordered opaque token (callback ids, access tokens)."""
    return prefix + secrets.token_urlsafe(24)


def now_iso() -> str:
    """ISO-8601 UTC timestamp with microseconds, like the API's `2026-09-25T18:40:42.411933Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
