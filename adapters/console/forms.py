"""Moveworks forms in the terminal (`moveworks-bridge chat`): one prompt per field, the core's
checks and Moveworks' refusals shown next to the field, then submit. Lets a developer try the
whole form flow against the simulator without Slack or Teams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bridge import texts
from bridge.models import FieldInput, FormStep
from bridge.moveworks.models import Modal, ModalField

Ask = Callable[[str], Awaitable[str | None]]  # one line from the person (None: they gave up)
Say = Callable[[str], None]


def _describe(f: ModalField) -> str:
    label = f.label or f.name
    marks = " *" if f.required else ""
    if f.type == "CHOICE" and f.options:
        listed = ", ".join(f"{i}) {o.label}" for i, o in enumerate(f.options, 1))
        how = "several, comma-separated" if f.multi else "one"
        free = ", or type your own" if f.allows_free_input else ""
        return f"{label}{marks} [{how}: {listed}{free}]"
    hint = {"DATE": " [YYYY-MM-DD]", "DATETIME": " [YYYY-MM-DD HH:MM, UTC]", "BOOLEAN": " [y/n]"}
    return f"{label}{marks}{hint.get(f.type, '')}"


def _parse(f: ModalField, line: str) -> FieldInput:
    line = line.strip()
    if not line:
        return None
    if f.type == "BOOLEAN":
        return line.lower() in ("y", "yes", "true", "1", "on")
    if f.type == "DATETIME":
        try:
            return datetime.fromisoformat(line).replace(tzinfo=UTC).isoformat()
        except ValueError:
            return line  # the core says what is wrong with it
    if f.type == "CHOICE":
        picked = []
        for part in (p.strip() for p in line.split(",")) if f.multi else (line,):
            if part.isdigit() and 0 < int(part) <= len(f.options):
                picked.append(f.options[int(part) - 1].value)
            elif part:
                picked.append(part)
        return picked if f.multi else (picked[0] if picked else None)
    return line


def _show_display(f: ModalField, say: Say) -> None:
    if f.display_text:
        say(f.display_text)
    if f.image_url:
        say(f"<{f.image_url}>")
    if f.download_url:
        say(f"{f.download_text or f.download_url}: <{f.download_url}>")


async def fill(step: FormStep, ask: Ask, say: Say, refresh: Callable[[str, dict[str, FieldInput]], Awaitable[FormStep]],
               submit: Callable[[str, dict[str, FieldInput]], Awaitable[FormStep]]) -> None:
    """Walk the person through the form until it is submitted, refused for good, or abandoned
    (an empty answer to "Submit?")."""
    values: dict[str, FieldInput] = {}
    while True:
        if step.notice:
            say(texts.CONSOLE_FAILURE.format(message=step.notice))
            return
        if step.done:
            return
        form: Modal | None = step.form
        if form is None:
            return
        say(f"\n📝 {form.title}")
        for message in (m for name, m in step.errors.items() if name == ""):
            say(texts.CONSOLE_FAILURE.format(message=message))
        refreshed = False
        for f in form.fields:
            if not f.visible:
                continue
            if f.type == "DISPLAY":
                _show_display(f, say)
                continue
            if f.type == "FILE":
                say(f"{f.label or f.name}: {texts.FORM_FILE_HINT}")
                continue
            if f.read_only:
                say(f"{f.label or f.name}: {f.prefill or ''}")
                continue
            if f.name in step.errors:
                say(texts.CONSOLE_FAILURE.format(message=step.errors[f.name]))
            shown = values.get(f.name, f.prefill)
            default = f" (enter keeps: {shown})" if shown not in (None, "", []) else ""
            line = await ask(f"{_describe(f)}{default} › ")
            if line is None:
                return
            value = _parse(f, line) if line.strip() else shown
            if value != values.get(f.name, f.prefill) or f.name not in values:
                values[f.name] = value
                if f.triggers_refresh and line.strip():
                    step = await refresh(step.session, values)
                    refreshed = True
                    break
        if refreshed:
            continue
        line = await ask(f"{texts.FORM_SUBMIT}? [Y/n] › ")
        if line is None or line.strip().lower() in ("n", "no"):
            return
        step = await submit(step.session, values)
