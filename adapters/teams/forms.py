"""Moveworks forms as Teams dialogs (task modules), and the get-help menu, as Adaptive Cards.

How a form travels (msteams-docs `task-modules-bots.md`, `invoking-task-modules.md`):

* The answer's card carries an `Action.Submit` whose `data` holds `{"msteams": {"type":
  "task/fetch"}}` plus where the form lives (the message's three ids and `where`). Pressing it
  makes Teams send an `invoke` named `task/fetch`; the bot answers the HTTP request with
  `{"task": {"type": "continue", "value": {"title", "card": <Adaptive Card attachment>}}}` and
  Teams shows that card in a dialog (or `{"task": {"type": "message", "value": "…"}}`: a short
  message in the dialog instead).
* Any `Action.Submit` inside the dialog sends `task/submit` with the card's input values merged
  into the action's `data`. The answer is the next card (`continue`: a refreshed form, or the
  form again with its errors), a `message`, or an empty 200, which closes the dialog ("No
  response … the simplest response": the form went through, its receipt is posted in the chat).

The dialog card (Adaptive Cards 1.5, the newest Teams renders) maps each field:

* TEXT → `Input.Text` (`isMultiline` for multiline); DATE → `Input.Date`; DATETIME →
  `Input.Date` + `Input.Time`, combined into ISO-8601 with the offset of the person's time zone
  (the activity's `localTimezone`, else its `clientInfo` entity's `timezone`, else UTC) on that
  date; BOOLEAN → `Input.Toggle` ("true"/"false"); CHOICE → `Input.ChoiceSet` (`isMultiSelect`
  for multi; Teams' static typeahead `style: "filtered"` when free input is allowed or the list is
  long). Adaptive Cards have no "pick or type" control and a ChoiceSet only returns listed
  values, so free input gets a text box under the list ("Or type your own…"): what is typed there
  wins for a single choice and is added (comma-separated) for a multiple one.
* FILE → no Adaptive Card input takes a file: the field says so (`texts.FORM_FILE_HINT`) and stays
  empty. DISPLAY → `TextBlock` (HEADER large and bold, SUBTLE subtle), `Image`, and a download
  as an `Action.OpenUrl`. Read-only fields are a label and their value as text (the core keeps
  their prefill). Hidden fields are not drawn.
* Required → `isRequired` and `errorMessage` (Teams checks them before sending). Errors from the
  core are drawn under their field in the attention colour ("" and unknown names at the top).
* `triggers_refresh` fields: Adaptive Cards 1.5 cannot react to a change, so the dialog gets an
  "Update form" button; it sends everything typed (`task/submit`, marked as a refresh) and the
  answer is the re-evaluated form. Like every `Action.Submit`, Teams validates required inputs
  first (the only other choice, `associatedInputs: "none"`, would send no values at all).

Input ids are `f.<field name>` (`.time`, `.other` for the extra inputs), so they never collide
with the action's own keys. The action also carries the form session, the time zone the card
was drawn in and each field's kind, so the submit is parsed without any stored state here.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from botbuilder.schema import Activity

from bridge import texts
from bridge.answers.markdown import emojize
from bridge.models import Answer, FieldInput, FormStep, MessageRef, Modal
from bridge.moveworks.models import Action, ModalField

log = logging.getLogger("adapters.teams")

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
DIALOG_CARD_VERSION = "1.5"  # filtered ChoiceSets (typeahead) need 1.5; Teams renders up to 1.5
CALLBACK_KEY = "mwb"  # marks our Action.Submit payloads (same key as render.py's buttons)
OPEN_FORM = "form"  # a button that opens a form (task/fetch)
HELP_ITEM = "help"  # a get-help menu item that is not a form (a message activity)
DIALOG = "dialog"  # a button inside the dialog (task/submit)
SUBMIT, REFRESH = "submit", "refresh"
FILTERED_FROM = 8  # a single list this long gets typeahead search even without free input
MAX_TITLE = 100
FIELD_PREFIX = "f."
TIME_SUFFIX = ".time"
OTHER_SUFFIX = ".other"

# What the submit parser needs to know of each field, carried in the action's data.
TEXT, DATE, DATETIME, BOOL, ONE, MANY, FILE = "text", "date", "datetime", "bool", "one", "many", "file"
FREE = "+"  # suffix: the choice also takes typed text

_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def input_id(name: str, suffix: str = "") -> str:
    return f"{FIELD_PREFIX}{name}{suffix}"


# --- time zones ---------------------------------------------------------------------------------


def zone_name(activity: Activity) -> str:
    """The person's IANA time zone as Teams reports it on the activity (`localTimezone`, or the
    `clientInfo` entity's `timezone`), if it is one this system knows; else "UTC"."""
    candidates: list[Any] = [getattr(activity, "local_timezone", None)]
    for entity in activity.entities or []:
        if getattr(entity, "type", None) == "clientInfo":
            candidates.append((getattr(entity, "additional_properties", None) or {}).get("timezone"))
    for name in candidates:
        if isinstance(name, str) and name and zone(name) is not None:
            return name
    return "UTC"


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _local_parts(prefill: Any, tz: str) -> tuple[str, str]:
    """An ISO-8601 prefill shown in the person's zone: ("YYYY-MM-DD", "HH:MM")."""
    if not isinstance(prefill, str) or not prefill.strip():
        return "", ""
    try:
        moment = datetime.fromisoformat(prefill.strip().replace("Z", "+00:00"))
    except ValueError:
        return "", ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(zone(tz) or ZoneInfo("UTC"))
    return moment.date().isoformat(), moment.strftime("%H:%M")


def combine_datetime(day: str, clock: str, tz: str) -> str | None:
    """Input.Date + Input.Time → ISO-8601 with the offset `tz` has on that date (a date alone is
    its midnight). Unparseable parts are passed on as typed, so the core reports them."""
    day, clock = day.strip(), clock.strip()
    if not day and not clock:
        return None
    try:
        on = date.fromisoformat(day)
    except ValueError:
        return f"{day}T{clock}" if clock else day
    at = time(0, 0)
    if clock:
        match = _TIME.match(clock)
        if match is None:
            return f"{day}T{clock}"
        try:
            at = time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
        except ValueError:
            return f"{day}T{clock}"
    return datetime.combine(on, at, tzinfo=zone(tz) or ZoneInfo("UTC")).isoformat()


# --- buttons in the chat ------------------------------------------------------------------------


def ref_data(ref: MessageRef, where: str) -> dict[str, str]:
    return {"c": ref.conversation_id, "r": ref.response_id, "m": ref.message_id, "w": where}


def ref_of(data: dict[str, Any]) -> tuple[MessageRef, str] | None:
    """The message and place a button's data names, if it names them."""
    parts = [data.get(k) for k in ("c", "r", "m", "w")]
    if not all(isinstance(p, str) for p in parts) or not parts[0] or not parts[2] or not parts[3]:
        return None
    c, r, m, w = (str(p) for p in parts)
    return MessageRef(c, r, m), w


def open_form_button(title: str, ref: MessageRef, where: str) -> dict[str, Any]:
    """An `Action.Submit` that opens the form as a dialog (Teams sends `task/fetch`)."""
    return {
        "type": "Action.Submit",
        "title": title[:MAX_TITLE],
        "data": {"msteams": {"type": "task/fetch"}, CALLBACK_KEY: OPEN_FORM, **ref_data(ref, where)},
    }


def help_item_button(title: str, ref: MessageRef, where: str) -> dict[str, Any]:
    """An `Action.Submit` for a TEXT or CALLBACK item (a message activity carrying `data`)."""
    return {
        "type": "Action.Submit",
        "title": title[:MAX_TITLE],
        "data": {CALLBACK_KEY: HELP_ITEM, "label": title, **ref_data(ref, where)},
    }


def help_menu_body(answer: Answer) -> list[dict[str, Any]]:
    """One container per category (name, description) with its items as buttons: forms open a
    dialog, links open, every other item is sent back to the bot."""
    body: list[dict[str, Any]] = []
    if not answer.help_menu:
        return body
    body.append({"type": "TextBlock", "text": texts.HELP_MENU, "weight": "Bolder", "wrap": True})
    for category in answer.help_menu:
        items: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": emojize(category.name), "weight": "Bolder", "wrap": True},
        ]
        if category.description:
            items.append({"type": "TextBlock", "text": emojize(category.description), "isSubtle": True,
                          "wrap": True, "spacing": "None"})
        buttons = []
        for item in category.items:
            button = _help_button(emojize(item.title), item.action, item.ref, item.where)
            if button is not None:
                buttons.append(button)
        if buttons:
            items.append({"type": "ActionSet", "actions": buttons})
        body.append({"type": "Container", "separator": True, "spacing": "Medium", "items": items})
    return body


def _help_button(title: str, action: Action | None, ref: MessageRef | None, where: str) -> dict[str, Any] | None:
    if action is not None and action.url and not action.opens_form:
        return {"type": "Action.OpenUrl", "title": title[:MAX_TITLE], "url": action.url}
    if action is not None and action.ref is not None and action.where:
        ref, where = action.ref, action.where
    if ref is None:
        return None
    if action is not None and action.opens_form:
        return open_form_button(title, ref, where)
    return help_item_button(title, ref, where)


# --- the dialog ---------------------------------------------------------------------------------


def _text(text: str, **props: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **props}


def _error(text: str) -> dict[str, Any]:
    return _text(text, color="Attention", size="Small", spacing="None")


def _kind(f: ModalField) -> str:
    if f.type == "TEXT":
        return TEXT
    if f.type == "DATE":
        return DATE
    if f.type == "DATETIME":
        return DATETIME
    if f.type == "BOOLEAN":
        return BOOL
    if f.type == "CHOICE":
        return (MANY if f.multi else ONE) + (FREE if f.allows_free_input else "")
    if f.type == "FILE":
        return FILE
    return TEXT  # a type this bridge does not know: its text, if it took any


def _shows_input(f: ModalField) -> bool:
    return f.visible and f.type != "DISPLAY" and not f.read_only and bool(f.name)


def _prefill(f: ModalField, typed: dict[str, FieldInput]) -> Any:
    if f.name in typed and typed[f.name] is not None:
        return typed[f.name]
    return f.prefill


def _labelled(value: str, f: ModalField) -> str:
    return next((o.label for o in f.options if o.value == value), value)


def _read_only_text(f: ModalField) -> str:
    value = f.prefill
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, list):
        return ", ".join(_labelled(str(v), f) for v in value) or "—"
    if f.type == "DATETIME" and isinstance(value, str):
        return value
    return str(value) if value not in (None, "") else "—"


def _required(element: dict[str, Any], f: ModalField) -> dict[str, Any]:
    if f.required:
        element["isRequired"] = True
        element["errorMessage"] = texts.FORM_REQUIRED
    return element


def _choice_elements(f: ModalField, value: Any) -> list[dict[str, Any]]:
    listed = {o.value for o in f.options}
    chosen = [v for v in (value if isinstance(value, list) else [value] if isinstance(value, str) else [])
              if isinstance(v, str) and v]
    picked = [v for v in chosen if v in listed]
    typed = [v for v in chosen if v not in listed]
    element: dict[str, Any] = {
        "type": "Input.ChoiceSet",
        "id": input_id(f.name),
        "label": f.label or f.name,
        "choices": [{"title": o.label or o.value, "value": o.value} for o in f.options],
        "isMultiSelect": f.multi,
        "style": "filtered" if f.allows_free_input or len(f.options) >= FILTERED_FROM else (
            "expanded" if f.multi else "compact"),
        "value": ",".join(picked if f.multi else picked[:1]),
    }
    if not f.allows_free_input:
        return [_required(element, f)]
    # Typed text counts too, so the list itself cannot be required (the core checks the field).
    other: dict[str, Any] = {
        "type": "Input.Text",
        "id": input_id(f.name, OTHER_SUFFIX),
        "placeholder": texts.TEAMS_FORM_OTHER,
        "spacing": "Small",
        "value": ", ".join(typed) if f.multi else (typed[0] if typed else ""),
    }
    if f.required:
        element["label"] = f"{element['label']} *"
    return [element, other]


def _field_elements(f: ModalField, typed: dict[str, FieldInput], tz: str) -> list[dict[str, Any]]:
    if f.type == "DISPLAY":
        out: list[dict[str, Any]] = []
        if f.display_text:
            style: dict[str, Any] = {}
            if f.display_style == "HEADER":
                style = {"size": "Large", "weight": "Bolder"}
            elif f.display_style == "SUBTLE":
                style = {"isSubtle": True, "size": "Small"}
            out.append(_text(f.display_text, **style))
        if f.image_url:
            out.append({"type": "Image", "url": f.image_url, "altText": f.label or f.display_text or "",
                        "size": "Stretch"})
        if f.download_url:
            out.append({"type": "ActionSet", "actions": [{
                "type": "Action.OpenUrl", "title": (f.download_text or f.label or f.download_url)[:MAX_TITLE],
                "url": f.download_url}]})
        return out
    label = f.label or f.name
    if f.read_only:
        return [_text(label, weight="Bolder", spacing="Medium"), _text(_read_only_text(f), spacing="None")]
    value = _prefill(f, typed)
    if f.type == "FILE":
        return [_text(label + (" *" if f.required else ""), weight="Bolder", spacing="Medium"),
                _text(texts.FORM_FILE_HINT, isSubtle=True, spacing="None")]
    if f.type == "BOOLEAN":
        return [{"type": "Input.Toggle", "id": input_id(f.name), "title": label, "valueOn": "true",
                 "valueOff": "false", "value": "true" if value is True or value == "true" else "false"}]
    if f.type == "CHOICE":
        return _choice_elements(f, value)
    if f.type == "DATE":
        return [_required({"type": "Input.Date", "id": input_id(f.name), "label": label,
                           "value": value if isinstance(value, str) else ""}, f)]
    if f.type == "DATETIME":
        day, clock = _local_parts(value, tz)
        day_input = _required({"type": "Input.Date", "id": input_id(f.name), "label": label, "value": day}, f)
        clock_input = _required({"type": "Input.Time", "id": input_id(f.name, TIME_SUFFIX),
                                 "label": texts.TEAMS_FORM_TIME.format(zone=tz), "value": clock}, f)
        return [{"type": "ColumnSet", "columns": [
            {"type": "Column", "width": "stretch", "items": [day_input]},
            {"type": "Column", "width": "stretch", "items": [clock_input]},
        ]}]
    return [_required({"type": "Input.Text", "id": input_id(f.name), "label": label,
                       "isMultiline": f.multiline, "value": value if isinstance(value, str) else ""}, f)]


def dialog_card(form: Modal, *, session: str, tz: str, errors: dict[str, str] | None = None,
                typed: dict[str, FieldInput] | None = None) -> dict[str, Any]:
    """The Adaptive Card a dialog shows for `form` (see the module docstring)."""
    errors = dict(errors or {})
    typed = typed or {}
    shown = {f.name for f in form.fields if f.visible and f.type != "DISPLAY"}
    body: list[dict[str, Any]] = []
    for name, message in errors.items():
        if name not in shown:  # the form as a whole, or a field not on the form
            body.append(_text(message, color="Attention", weight="Bolder"))
    kinds: dict[str, str] = {}
    refresh = False
    for f in form.fields:
        if not f.visible:
            continue
        body.extend(_field_elements(f, typed, tz))
        if f.type != "DISPLAY" and f.description:
            body.append(_text(f.description, isSubtle=True, size="Small", spacing="None"))
        if f.name in errors and f.name in shown:
            body.append(_error(errors[f.name]))
        if _shows_input(f):
            kinds[f.name] = _kind(f)
            refresh = refresh or f.triggers_refresh
    data = {CALLBACK_KEY: DIALOG, "s": session, "tz": tz, "k": kinds}
    actions: list[dict[str, Any]] = [
        {"type": "Action.Submit", "title": texts.FORM_SUBMIT, "style": "positive", "data": {**data, "op": SUBMIT}},
    ]
    if refresh:
        actions.append({"type": "Action.Submit", "title": texts.FORM_UPDATE, "data": {**data, "op": REFRESH}})
    return {"type": "AdaptiveCard", "$schema": CARD_SCHEMA, "version": DIALOG_CARD_VERSION,
            "body": body, "actions": actions}


def continue_response(title: str, card: dict[str, Any]) -> dict[str, Any]:
    return {"task": {"type": "continue", "value": {
        "title": title[:MAX_TITLE], "width": "medium",
        "card": {"contentType": ADAPTIVE_CARD, "content": card},
    }}}


def message_response(text: str) -> dict[str, Any]:
    """A short message shown in the dialog (`{"task": {"type": "message"}}`)."""
    return {"task": {"type": "message", "value": text}}


def step_response(step: FormStep, *, tz: str, typed: dict[str, FieldInput] | None = None) -> dict[str, Any] | None:
    """What to answer a dialog invoke with for `step`: the form (with its errors), a message, or
    None (an empty 200, which closes the dialog: the receipt is in the chat already)."""
    if step.form is not None:
        card = dialog_card(step.form, session=step.session, tz=tz, errors=step.errors, typed=typed)
        return continue_response(step.form.title or texts.FORM_DEFAULT_TITLE, card)
    if step.notice:
        return message_response(step.notice)
    return None


# --- what the dialog sent -----------------------------------------------------------------------


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else ""


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_values(data: dict[str, Any]) -> tuple[dict[str, FieldInput], str]:
    """The dialog's input values (as Teams sends them: strings, "" when left empty) → the core's
    `values`, using the field kinds the card carried; and the time zone it was drawn in."""
    raw_kinds = data.get("k")
    kinds: dict[Any, Any] = raw_kinds if isinstance(raw_kinds, dict) else {}
    raw_tz = data.get("tz")
    tz = raw_tz if isinstance(raw_tz, str) and zone(raw_tz) is not None else "UTC"
    values: dict[str, FieldInput] = {}
    for name, kind in kinds.items():
        if not isinstance(name, str) or not isinstance(kind, str):
            continue
        raw = _string(data, input_id(name))
        value: FieldInput = None
        if kind == TEXT:
            value = raw if raw.strip() else None
        elif kind == DATE:
            value = raw.strip() or None
        elif kind == DATETIME:
            value = combine_datetime(raw, _string(data, input_id(name, TIME_SUFFIX)), tz)
        elif kind == BOOL:
            value = raw.strip().lower() == "true" if raw.strip() else None
        elif kind.startswith(ONE):
            other = _string(data, input_id(name, OTHER_SUFFIX)).strip() if kind.endswith(FREE) else ""
            value = other or raw.strip() or None
        elif kind.startswith(MANY):
            chosen = _split(raw)
            if kind.endswith(FREE):
                chosen += [v for v in _split(_string(data, input_id(name, OTHER_SUFFIX))) if v not in chosen]
            value = chosen or None
        elif kind == FILE:
            continue  # nothing can be attached in a dialog
        if value is not None:
            values[name] = value
    return values, tz


def task_data(activity: Activity) -> dict[str, Any]:
    """The `data` of a `task/fetch` / `task/submit` invoke (the pressed action's data, plus the
    card's inputs for a submit)."""
    value = activity.value if isinstance(activity.value, dict) else {}
    data = value.get("data")
    return data if isinstance(data, dict) else {}
