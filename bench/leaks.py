"""The secret scan run after every bench: no log the bridge wrote may contain a credential.

It looks for every secret value the run handed to a process under test (`Context.secret`), and
for anything shaped like a credential even if the run never registered it: Slack tokens, JWTs,
PEM private keys and bearer headers.
"""

from __future__ import annotations

import re

from bench.report import Context, Table

SHAPES = {
    "slack token": re.compile(r"\bx(?:ox[abpre]|app)-[A-Za-z0-9-]{8,}"),
    "JWT": re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "bearer header": re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{12,}", re.IGNORECASE),
}


def scan(ctx: Context) -> tuple[Table, list[str]]:
    """Returns the summary table and one line per finding (file, kind; never the secret itself)."""
    findings: list[str] = []
    files = lines = size = 0
    for path in ctx.logs:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        files, lines, size = files + 1, lines + text.count("\n"), size + len(text)
        for i, secret in enumerate(s for s in ctx.secrets if len(s) >= 8):
            if secret in text:
                findings.append(f"{path.name}: registered secret #{i + 1}")
        for kind, pattern in SHAPES.items():
            if pattern.search(text):
                findings.append(f"{path.name}: {kind}")
    table = Table("Secret scan of every log written by the bridge in this run",
                  ["log files", "lines", "bytes", "secret values checked", "credential patterns", "findings"])
    table.add(files, lines, size, len(set(ctx.secrets)), len(SHAPES), len(findings))
    table.notes += findings
    return table, findings
