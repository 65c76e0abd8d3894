"""Logging set-up: plain text or one JSON object per line (`BRIDGE_LOG_FORMAT=json`).

A redacting formatter masks anything that looks like a credential (Slack tokens, bearer tokens,
Moveworks tokens, JWTs, PEM blocks) and every configured secret value, in messages, arguments
and tracebacks, so a careless log line cannot leak one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

_PATTERNS = [
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"mwt_[A-Za-z0-9_-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"(?i)(client_secret|password|api_key|assertion)=[^&\s]+"),
]


class Redactor:
    """Masks credentials in text. Used by the formatters, never as a filter: a filter would have
    to rewrite the shared LogRecord, and every other handler would lose the original."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        for pattern in _PATTERNS:
            text = pattern.sub("***", text)
        return text


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
    handler = logging.StreamHandler(sys.stderr)
    redactor = Redactor(secrets)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "msrest", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
