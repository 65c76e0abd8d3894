"""Logging set-up: plain text or one JSON object per line (`BRIDGE_LOG_FORMAT=json`).

A redacting formatter masks anything that looks like a credential (Slack tokens, bearer tokens,
Moveworks tokens, JWTs, PEM blocks) and every known secret value, in messages, arguments and
tracebacks, so a careless log line cannot leak one.

Known secret values live in one process-wide `SecretRegistry` (`remember_secret`, `scrub`): the
configured secrets (registered by `setup`) and the credentials obtained at run time (Moveworks
access tokens, registered by `bridge.moveworks.auth` until they expire). Code that turns an
upstream body into an exception message scrubs it with `scrub` first, so an upstream that echoes a
token back (in an HTML error page, in an error `code`) cannot carry it into a message or a log.

A flood of one error cannot fill the disk: `RepeatFilter` lets the same message (same logger,
level and format string) at WARNING or above through `REPEAT_LIMIT` times per `REPEAT_WINDOW`
seconds, then suppresses it and later writes one summary line "… repeated K times".
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_PATTERNS = [
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"mwt_[A-Za-z0-9_-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"(?i)(client_secret|password|api_key|assertion)=[^&\s]+"),
]


MIN_SECRET_LEN = 6  # shorter values would mask ordinary words
MASK = "***"


class SecretRegistry:
    """Every credential value the process knows, to mask wherever text leaves it (thread-safe).

    Permanent values (configured secrets) stay; values added with a `ttl` (access tokens) are
    dropped once expired, and at most `max_expiring` are kept (the oldest go first). With many
    values, `scrub` looks each position's last `TAIL` characters up in an index, so its cost grows
    with the text, not with the number of tokens."""

    TAIL = MIN_SECRET_LEN
    LINEAR_UP_TO = 64  # below this many values a plain `in` per value is faster than the index

    def __init__(self, *, max_expiring: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_expiring = max_expiring
        self.clock = clock
        self._lock = threading.Lock()
        self._permanent: set[str] = set()
        self._expiring: OrderedDict[str, float] = OrderedDict()  # value -> expires at (clock)
        self._by_tail: dict[str, set[str]] = {}
        self._next_purge = 0.0

    def add(self, value: str | None, ttl: float | None = None) -> None:
        """Remember `value` (for `ttl` seconds, or for good when None)."""
        if not isinstance(value, str) or len(value) < MIN_SECRET_LEN:
            return
        with self._lock:
            now = self.clock()
            if ttl is None:
                self._permanent.add(value)
                self._expiring.pop(value, None)
            elif value not in self._permanent:
                until = max(now + max(ttl, 0.0), self._expiring.pop(value, 0.0))
                self._expiring[value] = until
            self._by_tail.setdefault(value[-self.TAIL:], set()).add(value)
            self._purge(now)

    def __len__(self) -> int:
        return len(self._permanent) + len(self._expiring)

    def __contains__(self, value: object) -> bool:
        return value in self._permanent or value in self._expiring

    def _drop(self, value: str) -> None:
        self._expiring.pop(value, None)
        if value in self._permanent:
            return
        bucket = self._by_tail.get(value[-self.TAIL:])
        if bucket is not None:
            bucket.discard(value)
            if not bucket:
                del self._by_tail[value[-self.TAIL:]]

    def _purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + 30.0
            for value in [v for v, until in self._expiring.items() if until <= now]:
                self._drop(value)
        while len(self._expiring) > self.max_expiring:
            self._drop(next(iter(self._expiring)))

    def scrub(self, text: str) -> str:
        """`text` with every known value replaced by `***`."""
        if not text or not self._by_tail:
            return text
        with self._lock:
            self._purge(self.clock())
            if len(self) <= self.LINEAR_UP_TO:
                for value in sorted(self._permanent | self._expiring.keys(), key=len, reverse=True):
                    if value in text:
                        text = text.replace(value, MASK)
                return text
            spans: list[tuple[int, int]] = []
            tail, index = self.TAIL, self._by_tail
            for end in range(tail, len(text) + 1):
                found = index.get(text[end - tail:end])
                if not found:
                    continue
                for value in sorted(found, key=len, reverse=True):
                    start = end - len(value)
                    if start >= 0 and text.startswith(value, start):
                        spans.append((start, end))
                        break
        if not spans:
            return text
        out, at = [], 0
        for start, end in sorted(spans):
            if end <= at:
                continue
            out.append(text[at:max(start, at)])
            out.append(MASK)
            at = end
        out.append(text[at:])
        return "".join(out)


SECRETS = SecretRegistry()


def remember_secret(value: str | None, ttl: float | None = None) -> None:
    """Mask `value` in every log line and scrubbed upstream text from now on (for `ttl` s)."""
    SECRETS.add(value, ttl)


def scrub(text: str) -> str:
    """`text` without any known secret value (configured or obtained at run time)."""
    return SECRETS.scrub(text)


class Redactor:
    """Masks credentials in text. Used by the formatters, never as a filter: a filter would have
    to rewrite the shared LogRecord, and every other handler would lose the original."""

    def __init__(self, secrets: Iterable[str] = (), registry: SecretRegistry | None = SECRETS) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self.registry = registry

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        if self.registry is not None:
            text = self.registry.scrub(text)
        for pattern in _PATTERNS:
            text = pattern.sub(MASK, text)
        return text


REPEAT_LIMIT = 20  # identical WARNING+ lines let through per window
REPEAT_WINDOW = 60.0
REPEAT_KEYS = 1_000  # distinct messages tracked at once


@dataclass
class _Repeats:
    started: float
    record: logging.LogRecord  # the first of the window: the summary names it
    count: int = 0
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """A handler filter: the same message at WARNING or above more than `limit` times within
    `window` seconds is suppressed; when the window ends (the next such message, or `flush`), one
    line says how many were dropped. "The same" = same logger, level, format string and
    exception type, so a flood whose lines differ only in their arguments is caught too."""

    def __init__(self, handler: logging.Handler, *, limit: int = REPEAT_LIMIT, window: float = REPEAT_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.handler = handler
        self.limit = limit
        self.window = window
        self.clock = clock
        self.suppressed_total = 0
        self._seen: OrderedDict[tuple[str, int, str, str], _Repeats] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(record: logging.LogRecord) -> tuple[str, int, str, str]:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        return record.name, record.levelno, str(record.msg)[:500], exc

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "repeat_summary", False):
            return True
        key = self._key(record)
        now = self.clock()
        ended: _Repeats | None = None
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry.started >= self.window:
                ended, entry = entry, None
            if entry is None:
                self._seen[key] = _Repeats(now, record, count=1)
                self._seen.move_to_end(key)
                while len(self._seen) > REPEAT_KEYS:
                    self._seen.popitem(last=False)
                allowed = True
            else:
                entry.count += 1
                allowed = entry.count <= self.limit
                if not allowed:
                    entry.suppressed += 1
                    self.suppressed_total += 1
        if ended is not None and ended.suppressed:
            self._summarise(ended, now)
        return allowed

    def flush(self, *, everything: bool = False) -> int:
        """Write the summaries of the windows that have ended (all of them with `everything`);
        returns how many lines were written."""
        now = self.clock()
        done: list[_Repeats] = []
        with self._lock:
            for key, entry in list(self._seen.items()):
                if everything or now - entry.started >= self.window:
                    del self._seen[key]
                    if entry.suppressed:
                        done.append(entry)
        for entry in done:
            self._summarise(entry, now)
        return len(done)

    def _summarise(self, entry: _Repeats, now: float) -> None:
        first = entry.record
        try:
            message = first.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: show it as it is
            message = str(first.msg)
        summary = logging.LogRecord(
            first.name, first.levelno, first.pathname, first.lineno,
            "%s … repeated %d times (in %.0f s)", (message[:500], entry.suppressed, now - entry.started), None,
        )
        summary.__dict__["repeat_summary"] = True  # let through by `filter`
        self.handler.handle(summary)


_REPEATS: RepeatFilter | None = None


def flush_suppressed(*, everything: bool = False) -> int:
    """Summaries of suppressed repeats whose window has ended (the server's watchdog calls this
    every tick, so a summary appears even when nothing else is logged)."""
    return _REPEATS.flush(everything=everything) if _REPEATS is not None else 0


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.redactor.redact(record.getMessage()),
        }
        for key in ("platform", "thread", "conversation_id", "response_id", "event_id", "root_uuid"):
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.redactor.redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


def setup(fmt: str = "text", level: str = "INFO", secrets: Iterable[str] = ()) -> Redactor:
    global _REPEATS
    secrets = [s for s in secrets if isinstance(s, str)]
    for secret in secrets:
        remember_secret(secret)
    handler = logging.StreamHandler(sys.stderr)
    redactor = Redactor(secrets)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    _REPEATS = RepeatFilter(handler)
    handler.addFilter(_REPEATS)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "msrest", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
