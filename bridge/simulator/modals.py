"""Native forms (`/rest/v1` only): the ticket form a MODAL_ACTION opens, its refresh and submit.

Routes (under `/rest/v1/conversations/{cid}/responses/{rid}/messages/{mid}/modals/{modal_id}`):

    GET            -> {modal_id, title, fields: [...]}
    POST /refresh  {values} -> the same, re-evaluated for those values; CHOICE fields come back
                   WITHOUT `options` (keep the first ones), nothing is stored
    POST /submit   {values} -> 200 {status: "SUBMITTED", receipt_text}; `modal_submit_delay` s later
                   an ASSISTANT message "I filed INC0010001: <summary>. You'll get updates here." is
                   added to the conversation and the user's events. Invalid -> 400 INVALID_INPUT
                   whose message names the field in single quotes (`Field 'summary' is required`).

Modal ids are minted per read of the message (see `views.py`); only the ids of its latest 5 reads
resolve, an older one (or one of another message/identity) is 404 NOT_FOUND.

Field object: {name, type, label, description?, visible, required, read_only, triggers_refresh,
<type config>}; configs: `text: {multiline, prefill}`, `date: {prefill}`, `datetime: {prefill}`,
`boolean: {prefill}`, `choice: {options: [{value, display_value}], prefill: [{value}], multi,
allows_free_input}`, `display: {text: {style: NORMAL|HEADER|SUBTLE, text (HTML)}}` |
`{image: {url}}` | `{download: {url, text}}`, `file: {}`.

Value shapes in `values` (keyed by field name): TEXT `{"text": str}`, DATE `{"date": "YYYY-MM-DD"}`,
DATETIME `{"datetime": ISO-8601}`, BOOLEAN `{"bool": bool}`, CHOICE `{"option": str}` or, when
multi, `{"options": [str, ...]}` (listed values only unless `allows_free_input`), FILE
`{"file_id": "<id from POST /rest/v1alpha1/files>"}` (the real FILE shape is unverified upstream).
DISPLAY fields are never submitted; unknown names are refused; hidden fields are neither required
nor kept (nor checked); a read-only field keeps its prefill whatever is sent; the first visible,
required, editable field that is missing (absent, null, "" or []) is named in the error.

The ticket form has every field type: DISPLAY header and HTML text, read-only TEXT `requester`
(the caller), TEXT `summary` (required, prefilled with the question), multiline TEXT `description`,
CHOICE `category` (required, triggers_refresh: hardware/software/access), multi CHOICE `systems`
with free input (visible, and then required, only when category is access), DATE `needed_by`,
DATETIME `callback_at`, BOOLEAN `urgent`, CHOICE `location` with free input, FILE `screenshot`,
DISPLAY image and DISPLAY download.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime
from typing import Any

from .errors import bad_input

FORM_TITLE = "File an IT ticket"
RECEIPT = "Your request was received. You'll get an update in this conversation shortly."
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

CATEGORIES = (("hardware", "Hardware"), ("software", "Software"), ("access", "Access"))
SYSTEMS = (("vpn", "VPN"), ("salesforce", "Salesforce"), ("jira", "Jira"), ("github", "GitHub"))
LOCATIONS = (("hq", "Headquarters"), ("branch", "Branch office"), ("remote", "Remote"))


def _field(name: str, kind: str, label: str, config: dict[str, Any], *, description: str | None = None,
           visible: bool = True, required: bool = False, read_only: bool = False,
           triggers_refresh: bool = False) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name, "type": kind, "label": label}
    if description:
        f["description"] = description
    f.update(visible=visible, required=required, read_only=read_only, triggers_refresh=triggers_refresh)
    f[kind.lower()] = config
    return f


def _options(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"value": v, "display_value": d} for v, d in pairs]


def _sent(values: dict[str, Any], name: str, key: str) -> Any:
    v = values.get(name)
    return v.get(key) if isinstance(v, dict) else None


def ticket_fields(identity: str, context: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
    """The ticket form evaluated for `values` (prefills follow what was sent)."""
    question = str(context.get("question") or "")
    category = _sent(values, "category", "option")
    access = category == "access"

    def text_prefill(name: str, default: str = "") -> str:
        sent = _sent(values, name, "text")
        return sent if isinstance(sent, str) else default

    def choice_prefill(name: str, multi: bool) -> list[dict[str, str]]:
        sent = _sent(values, name, "options" if multi else "option")
        if multi:
            return [{"value": v} for v in sent if isinstance(v, str)] if isinstance(sent, list) else []
        return [{"value": sent}] if isinstance(sent, str) and sent else []

    bool_sent = _sent(values, "urgent", "bool")
    return [
        _field("header", "DISPLAY", "", {"text": {"style": "HEADER", "text": "Report an IT issue"}}),
        _field("intro", "DISPLAY", "", {"text": {"style": "NORMAL", "text": (
            'Check the <a href="https://status.example.com">service status page</a> first.'
            "<br>Urgent outside office hours? Call <b>+1 555 0100</b>.")}}),
        _field("requester", "TEXT", "Requested for", {"multiline": False, "prefill": identity},
               read_only=True),
        _field("summary", "TEXT", "Summary", {"multiline": False, "prefill": text_prefill("summary", question[:160])},
               description="One line that describes the problem", required=True),
        _field("description", "TEXT", "Description", {"multiline": True, "prefill": text_prefill("description")},
               description="What happened, and what did you expect?"),
        _field("category", "CHOICE", "Category", {
            "options": _options(CATEGORIES), "prefill": choice_prefill("category", False),
            "multi": False, "allows_free_input": False}, required=True, triggers_refresh=True),
        _field("systems", "CHOICE", "Systems you need access to", {
            "options": _options(SYSTEMS), "prefill": choice_prefill("systems", True),
            "multi": True, "allows_free_input": True},
            description="Pick from the list or type another system", visible=access, required=access),
        _field("needed_by", "DATE", "Needed by",
               {"prefill": d if isinstance(d := _sent(values, "needed_by", "date"), str) else None}),
        _field("callback_at", "DATETIME", "Call me back at",
               {"prefill": t if isinstance(t := _sent(values, "callback_at", "datetime"), str) else None}),
        _field("urgent", "BOOLEAN", "Urgent", {"prefill": bool_sent if isinstance(bool_sent, bool) else False},
               description="Work is blocked"),
        _field("location", "CHOICE", "Location", {
            "options": _options(LOCATIONS), "prefill": choice_prefill("location", False),
            "multi": False, "allows_free_input": True}),
        _field("screenshot", "FILE", "Screenshot", {}, description="Upload it with the Files API first"),
        _field("banner", "DISPLAY", "", {"image": {"url": "https://static.example.com/forms/it-ticket.png"}}),
        _field("guide", "DISPLAY", "", {"download": {
            "url": "https://kb.example.com/it/ticket-guide.pdf", "text": "How we handle tickets (PDF)"}}),
    ]


FORMS = {"ticket": ticket_fields}


def form(name: str, identity: str, context: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
    return FORMS[name](identity, context, values)


def without_options(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The refresh answer: CHOICE fields omit `options` (the client keeps the first ones)."""
    return [
        {**f, "choice": {k: v for k, v in f["choice"].items() if k != "options"}} if f["type"] == "CHOICE" else f
        for f in fields
    ]


def values_of(body: dict[str, Any]) -> dict[str, Any]:
    values = body.get("values", {})
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise bad_input("values must be an object keyed by field name")
    return values


def _missing(value: Any) -> bool:
    return value is None or value == {} or (isinstance(value, dict) and all(
        v is None or v == "" or v == [] for v in value.values()))


def _check(f: dict[str, Any], value: Any, files: Any) -> tuple[str | None, Any]:
    """(error, normalized value) for one provided value of a visible field."""
    name, kind = f["name"], f["type"]
    q = f"Field '{name}'"
    if not isinstance(value, dict):
        return f"{q} must be an object such as {_SHAPES[kind]}", None
    if kind == "TEXT":
        text = value.get("text")
        if set(value) != {"text"} or not isinstance(text, str):
            return f'{q} must be {{"text": string}}', None
        return None, {"text": text}
    if kind == "DATE":
        raw = value.get("date")
        try:
            if set(value) != {"date"} or not isinstance(raw, str) or not _DATE.match(raw):
                raise ValueError
            date.fromisoformat(raw)
        except ValueError:
            return f"{q} must be a date (YYYY-MM-DD)", None
        return None, {"date": raw}
    if kind == "DATETIME":
        raw = value.get("datetime")
        try:
            if set(value) != {"datetime"} or not isinstance(raw, str) or "T" not in raw.upper():
                raise ValueError
            datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return f"{q} must be an ISO-8601 date-time (YYYY-MM-DDTHH:MM:SSZ)", None
        return None, {"datetime": raw}
    if kind == "BOOLEAN":
        if set(value) != {"bool"} or not isinstance(value.get("bool"), bool):
            return f'{q} must be {{"bool": true|false}}', None
        return None, {"bool": value["bool"]}
    if kind == "CHOICE":
        cfg = f["choice"]
        listed = [o["value"] for o in cfg["options"]]
        if cfg["multi"]:
            picked = value.get("options")
            if set(value) != {"options"} or not isinstance(picked, list) or not all(
                    isinstance(p, str) and p for p in picked):
                return f'{q} takes several options: {{"options": [string, ...]}}', None
        else:
            one = value.get("option")
            if set(value) != {"option"} or not isinstance(one, str) or not one:
                return f'{q} takes one option: {{"option": string}}', None
            picked = [one]
        if not cfg["allows_free_input"]:
            for p in picked:
                if p not in listed:
                    return f"{q} must be one of: {', '.join(listed)} (got '{p}')", None
        return None, ({"options": list(picked)} if cfg["multi"] else {"option": picked[0]})
    if kind == "FILE":
        file_id = value.get("file_id")
        if set(value) != {"file_id"} or not isinstance(file_id, str):
            return f'{q} must be {{"file_id": "<id from the Files API>"}}', None
        if files(file_id) is None:
            return f"{q}: unknown or expired file_id '{file_id}'", None
        return None, {"file_id": file_id}
    return f"{q} cannot be submitted", None


_SHAPES = {
    "TEXT": '{"text": string}', "DATE": '{"date": "YYYY-MM-DD"}', "DATETIME": '{"datetime": ISO-8601}',
    "BOOLEAN": '{"bool": true|false}', "CHOICE": '{"option": string} or {"options": [string]}',
    "FILE": '{"file_id": string}', "DISPLAY": "(nothing: display fields are not submitted)",
}


def check_values(fields: list[dict[str, Any]], values: dict[str, Any], files: Any,
                 *, submit: bool) -> dict[str, Any]:
    """Validate `values` against evaluated `fields`; the kept values (submit) or {} (refresh).

    `files(file_id)` resolves an upload of the caller (None when unknown or expired)."""
    by_name = {f["name"]: f for f in fields}
    for name in values:
        if name not in by_name:
            raise bad_input(f"Field '{name}' is not part of this form")
        if by_name[name]["type"] == "DISPLAY":
            raise bad_input(f"Field '{name}' is a display field and is never submitted")
    kept: dict[str, Any] = {}
    for f in fields:
        name = f["name"]
        if f["type"] == "DISPLAY" or not f["visible"]:
            continue  # hidden: neither required nor kept
        if f["read_only"]:
            prefill = f[f["type"].lower()].get("prefill")
            if prefill is not None:
                kept[name] = {"text": prefill} if f["type"] == "TEXT" else prefill
            continue
        value = values.get(name)
        if _missing(value):
            if submit and f["required"]:
                raise bad_input(f"Field '{name}' is required")
            continue
        error, normal = _check(f, value, files)
        if error:
            raise bad_input(error)
        kept[name] = normal
    return kept if submit else {}


def record(identity: str, op: str, ref: Any, modal_id: str, body: Any, status: int,
           error: str | None = None, kept: dict[str, Any] | None = None) -> dict[str, Any]:
    """One entry of `sim.state.modal_calls` (GET /_sim/modals)."""
    return {
        "identity": identity, "op": op,
        "conversation_id": ref[0], "response_id": ref[1], "message_id": ref[2], "modal_id": modal_id,
        "values": body.get("values") if isinstance(body, dict) else None, "body": body,
        "status": status, "error": error, "kept": kept, "t": time.time(),
    }
