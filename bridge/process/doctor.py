"""`moveworks-bridge doctor`: one line per check, non-zero exit when any check fails.

Checks only read: configuration, the database (opened and migrated), a Moveworks token and a
read-only call (list one conversation), and each configured chat platform's own check (Slack
`auth.test`, Teams credentials). Details never include secret values.
"""

from __future__ import annotations

import sys
from typing import TextIO

from bridge.errors import ConfigError
from bridge.process.config import Settings


def _line(out: TextIO, ok: bool, name: str, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'}  {name:<22} {detail}", file=out, flush=True)


async def run_doctor(*, as_email: str | None = None, env=None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    failures = 0

    def check(ok: bool, name: str, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        _line(out, ok, name, detail)

    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        check(False, "config", str(exc))
        return 1
    check(True, "config", f"auth={settings.moveworks_auth}, adapters={','.join(settings.adapters) or 'none'}")

    from bridge.store import Store

    try:
        store = Store(settings.db)
        check(store.ready, "database", f"{settings.db} ({len(store.applied_migrations())} migrations applied)")
    except ConfigError as exc:
        check(False, "database", str(exc))
        return 1

    from bridge.moveworks.errors import MoveworksError
    from bridge.process.runtime import build_runtime

    runtime = None
    try:
        runtime = build_runtime(settings, store=store, answers=False)
        identity = None
        if runtime.auth.per_employee:
            identity = as_email
            if not identity:
                check(False, "moveworks token", "user_jwt mode: pass --as EMAIL to check as an employee")
        if identity is not None or not runtime.auth.per_employee:
            try:
                await runtime.auth.bearer(identity)
                if settings.moveworks_auth == "api_key":
                    check(True, "moveworks token", "API key set (the call below proves it)")
                else:
                    check(True, "moveworks token", f"{settings.moveworks_auth} token issued")
                page = await runtime.client.list_conversations(identity, limit=1)
                check(True, "moveworks api", f"{settings.moveworks_base_url} answered "
                      f"({len(page.items)} conversation{'s' if len(page.items) != 1 else ''} listed)")
                generation = runtime.client.generation
                if generation == "rest/v1":
                    files = "on" if settings.moveworks_files else "off (MOVEWORKS_FILES)"
                    check(True, "moveworks generation", f"/rest/v1: forms, get-help menu, live agents; files {files}")
                else:
                    check(True, "moveworks generation", f"/{generation}: text answers and buttons only; "
                          "Moveworks lists this generation as deprecated, move MOVEWORKS_BASE_URL to /rest/v1")
            except MoveworksError as exc:
                check(False, "moveworks", str(exc))
        for adapter in runtime.adapters:
            try:
                for name, ok, detail in await adapter.check():
                    check(ok, name, detail)
            except Exception as exc:  # noqa: BLE001 - report, never crash the doctor
                check(False, adapter.platform, f"check failed: {type(exc).__name__}")
    except ConfigError as exc:
        check(False, "setup", str(exc))
    finally:
        if runtime is not None:
            await runtime.aclose()
        else:
            store.close()
    return 1 if failures else 0
