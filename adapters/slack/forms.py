"""Moveworks forms as Slack modals, and the get-help menu as Block Kit: pure functions from the
core's `Modal` / `FormStep` / `HelpCategory` to view and block payloads, and from a modal's
`view.state` back to the core's `values`. The Web API calls and their 3-second windows live in
`app.py`.

Mapping (Block Kit, docs.slack.dev/reference/block-kit):

* TEXT -> `plain_text_input` (`multiline`, `initial_value` = prefill); DATE -> `datepicker`;
  DATETIME -> `datetimepicker` (`initial_date_time` in unix seconds; its `selected_date_time`
  goes back as ISO-8601 with offset); BOOLEAN -> `checkboxes` with one option (unticked is False:
  it is an answer, so the box is never `optional: false`); CHOICE -> `static_select` /
  `multi_static_select` (more than 100 options go into option groups of 100); FILE -> `file_input`.
* A CHOICE that allows free input gets an optional text input right under its menu: what is typed
  there wins over the menu (single) or is added to the picks (multi, comma or line separated).
  Chosen over an "Other…" option because that needs a refresh round trip to reveal the box, and
  a menu offering "Other" could not say what the other is.
* DISPLAY -> `header` (HEADER style), `context` (SUBTLE), `section` (NORMAL), `image`, and a link
  section for a download. read_only fields are shown as a section (label and value), never as
  inputs, so they are not sent back.
* `triggers_refresh` -> `dispatch_action: true` on the field's input block: a change sends
  `block_actions` (`FIELD_ACTION`), the bridge refreshes and `views.update`s the modal.
* Block ids are `f.<field name>` (`x.<name>` for the free-input box) so errors and Slack's kept
  input state follow a field across refreshes. Names or option values too long for Slack's limits
  (block_id 255, option value 150) are replaced by a short hash, mapped back through the view's
  `private_metadata` (which carries the core's session token too).

Limits respected (docs.slack.dev/reference/views, .../block-kit/composition-objects/option-object,
.../block-kit/blocks/input-block): modal title, submit and close at most 24 characters (clipped),
at most 100 blocks, private_metadata at most 3,000 characters, labels and hints at most 2,000,
option text at most 75 and value at most 150, at most 100 options per menu, header text 150,
text objects 3,000.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bridge import texts
from bridge.answers.markdown import plain_text
from bridge.models import FieldInput, FormStep, HelpCategory, MessageRef
from bridge.moveworks.models import Choice, Modal, ModalField

from .files import attachments
from .mrkdwn import escape, to_mrkdwn

log = logging.getLogger("adapters.slack")

FORM_CALLBACK = "mw_form"  # callback_id of every form modal (view_submission)
OPEN_FORM_PREFIX = "mw_form_open_"  # MODAL_ACTION buttons under answers
HELP_ACTION = "mw_help"  # the get-help menu's selects
FIELD_ACTION = "mw_field"  # every input element of a form (only refresh fields dispatch)

TITLE_LIMIT = 24  # modal title, submit and close
MAX_VIEW_BLOCKS = 100
METADATA_LIMIT = 3000
LABEL_LIMIT = 2000  # input label and hint
OPTION_TEXT_LIMIT = 75
OPTION_VALUE_LIMIT = 150
MAX_OPTIONS = 100  # per select, and option groups per select
BLOCK_ID_LIMIT = 255
HEADER_LIMIT = 150
TEXT_LIMIT = 3000
URL_LIMIT = 3000
ALT_TEXT_LIMIT = 2000
TEXT_INPUT_LIMIT = 3000  # plain_text_input max_length
ERROR_LIMIT = 2000

FIELD_BLOCK = "f."
FREE_BLOCK = "x."
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def clip(text: str, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text or " ", limit) or " ", "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(text or " ", TEXT_LIMIT) or " "}


# --- short keys for names and values past Slack's limits -------------------------------------------


class Keys:
    """Field names and option values as Slack can carry them: unchanged when short enough, else a
    stable hash mapped back through private_metadata."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.map: dict[str, str] = dict(known or {})

    def short(self, value: str, limit: int) -> str:
        if len(value) <= limit and not value.startswith("#"):
            return value
        key = "#" + hashlib.sha256(value.encode()).hexdigest()[:20]
        self.map[key] = value
        return key

    def long(self, key: str) -> str:
        return self.map.get(key, key)


def field_block(name: str, keys: Keys) -> str:
    return FIELD_BLOCK + keys.short(name, BLOCK_ID_LIMIT - len(FIELD_BLOCK))


def free_block(name: str, keys: Keys) -> str:
    return FREE_BLOCK + keys.short(name, BLOCK_ID_LIMIT - len(FREE_BLOCK))


# --- private_metadata -------------------------------------------------------------------------------


def metadata(session: str, title: str, keys: Keys) -> dict[str, Any]:
    data: dict[str, Any] = {"s": session, "t": title}
    if keys.map:
        data["k"] = keys.map
    return data


def pack(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def unpack(raw: Any) -> dict[str, Any]:
    try:
        data = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


Packer = Callable[[dict[str, Any]], str]  # metadata -> private_metadata (<= 3,000 characters)


# --- views -------------------------------------------------------------------------------------------


def _view(title: str, blocks: list[dict[str, Any]], *, submit: str | None = None,
          private_metadata: str = "") -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": FORM_CALLBACK,
        "title": _plain(title or texts.FORM_DEFAULT_TITLE, TITLE_LIMIT),
        "close": _plain(texts.FORM_CANCEL if submit else texts.FORM_CLOSE, TITLE_LIMIT),
        "blocks": blocks[:MAX_VIEW_BLOCKS] or [{"type": "section", "text": _plain(" ", TEXT_LIMIT)}],
    }
    if submit:
        view["submit"] = _plain(submit, TITLE_LIMIT)
    if private_metadata:
        view["private_metadata"] = private_metadata
    return view


def message_view(title: str, text: str, *, private_metadata: str = "") -> dict[str, Any]:
    """A modal that only says something (loading, submitting, done, a notice)."""
    return _view(title, [{"type": "section", "text": _mrkdwn(escape(text))}], private_metadata=private_metadata)


def loading_view(title: str) -> dict[str, Any]:
    return message_view(title, texts.FORM_LOADING)


def submitting_view(title: str) -> dict[str, Any]:
    return message_view(title, texts.FORM_SUBMITTING)


def step_view(step: FormStep, title: str, pack_metadata: Packer) -> dict[str, Any]:
    """What a `FormStep` shows in an open modal: the form (errors inline), a notice, or done."""
    if step.form is not None:
        view = form_view(step.form, step.session, pack_metadata, errors=step.errors)
        if view is not None:
            return view
        return message_view(title, texts.FORM_FAILED)
    if step.notice:
        return message_view(title, step.notice)
    return message_view(title, texts.FORM_SUBMITTED)


def form_view(
    form: Modal, session: str, pack_metadata: Packer, *, errors: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The modal for `form`, with `errors` (by field name, "" = the whole form) shown under the
    fields. None when there is nothing to show, or the form cannot fit Slack's 100 blocks even
    without the display-only ones."""
    keys = Keys()
    errors = dict(errors or {})
    shown = [f for f in form.fields if f.visible and f.name and f.type in FIELD_TYPES]
    inputs = {f.name for f in shown if _is_input(f)}
    general = [m for k, m in errors.items() if k not in inputs and m]
    blocks: list[dict[str, Any]] = []
    if general:
        blocks.append(_error_block("e.", " ".join(general)))
    for field in shown:
        blocks.extend(field_blocks(field, keys))
        if field.name in inputs and errors.get(field.name):
            blocks.append(_error_block(f"e.{keys.short(field.name, BLOCK_ID_LIMIT - 2)}", errors[field.name]))
    if not blocks:
        log.warning("a form with nothing to show (%d fields, none visible)", len(form.fields))
        return None
    if len(blocks) > MAX_VIEW_BLOCKS:
        blocks = [b for b in blocks if b["type"] in ("input",) or str(b.get("block_id", "")).startswith("e.")]
        if len(blocks) > MAX_VIEW_BLOCKS:
            log.warning("a form of %d fields does not fit Slack's %d blocks", len(shown), MAX_VIEW_BLOCKS)
            return None
    title = form.title or texts.FORM_DEFAULT_TITLE
    has_input = any(b["type"] == "input" for b in blocks)
    return _view(
        title, blocks, submit=texts.FORM_SUBMIT if has_input else None,
        private_metadata=pack_metadata(metadata(session, title, keys)),
    )


FIELD_TYPES = frozenset({"TEXT", "DATE", "DATETIME", "BOOLEAN", "CHOICE", "FILE", "DISPLAY"})


def _is_input(field: ModalField) -> bool:
    return field.type != "DISPLAY" and not field.read_only


def _error_block(block_id: str, message: str) -> dict[str, Any]:
    return {"type": "context", "block_id": clip(block_id, BLOCK_ID_LIMIT),
            "elements": [_mrkdwn(f"⚠️ {escape(clip(message, ERROR_LIMIT))}")]}


def field_blocks(field: ModalField, keys: Keys) -> list[dict[str, Any]]:
    if field.type == "DISPLAY":
        return display_blocks(field)
    if field.read_only:
        return [read_only_block(field)]
    element = _element(field, keys)
    if element is None:
        return []
    block: dict[str, Any] = {
        "type": "input",
        "block_id": field_block(field.name, keys),
        "label": _plain(plain_text(field.label)[0] or field.name, LABEL_LIMIT),
        "element": element,
        # An unticked box is an answer (False); a menu with a free-input box may be answered in
        # the box: the core checks those, since Slack would demand a pick.
        "optional": not field.required or field.type == "BOOLEAN"
        or (field.type == "CHOICE" and field.allows_free_input),
    }
    if field.description:
        block["hint"] = _plain(plain_text(field.description)[0], LABEL_LIMIT)
    if field.triggers_refresh:
        block["dispatch_action"] = True
    blocks = [block]
    if field.type == "CHOICE" and field.allows_free_input:
        blocks.append(_free_block(field, keys))
    return blocks


def _element(field: ModalField, keys: Keys) -> dict[str, Any] | None:
    prefill = field.prefill
    if field.type == "TEXT":
        element: dict[str, Any] = {"type": "plain_text_input", "action_id": FIELD_ACTION,
                                   "multiline": bool(field.multiline)}
        if isinstance(prefill, str) and prefill:
            element["initial_value"] = prefill[:TEXT_INPUT_LIMIT]
        if field.triggers_refresh:
            element["dispatch_action_config"] = {"trigger_actions_on": ["on_enter_pressed"]}
        return element
    if field.type == "DATE":
        element = {"type": "datepicker", "action_id": FIELD_ACTION}
        if isinstance(prefill, str) and _DATE.match(prefill[:10] or ""):
            element["initial_date"] = prefill[:10]
        return element
    if field.type == "DATETIME":
        element = {"type": "datetimepicker", "action_id": FIELD_ACTION}
        seconds = unix_seconds(prefill)
        if seconds is not None:
            element["initial_date_time"] = seconds
        return element
    if field.type == "BOOLEAN":
        option = {"text": _plain(plain_text(field.label)[0] or field.name, OPTION_TEXT_LIMIT), "value": "true"}
        element = {"type": "checkboxes", "action_id": FIELD_ACTION, "options": [option]}
        if prefill is True:
            element["initial_options"] = [option]
        return element
    if field.type == "CHOICE":
        if not field.options:
            return None
        options = [_option(c, keys) for c in field.options]
        element = {"type": "multi_static_select" if field.multi else "static_select", "action_id": FIELD_ACTION,
                   "placeholder": _plain(texts.HELP_PICK, 150), **_option_list(options)}
        chosen = [o for o, c in zip(options, field.options, strict=True)
                  if isinstance(prefill, list) and c.value in prefill]
        if field.multi and chosen:
            element["initial_options"] = chosen
        elif chosen:
            element["initial_option"] = chosen[0]
        return element
    if field.type == "FILE":
        return {"type": "file_input", "action_id": FIELD_ACTION, "max_files": 1}  # one file id per field
    return None


def _option(choice: Choice, keys: Keys) -> dict[str, Any]:
    label = plain_text(choice.label)[0] or choice.value
    return {"text": _plain(label, OPTION_TEXT_LIMIT), "value": keys.short(choice.value, OPTION_VALUE_LIMIT)}


def _option_list(options: list[dict[str, Any]]) -> dict[str, Any]:
    """`options` (at most 100), or `option_groups` of 100 each (at most 100 groups)."""
    if len(options) <= MAX_OPTIONS:
        return {"options": options}
    groups = []
    for start in range(0, min(len(options), MAX_OPTIONS * MAX_OPTIONS), MAX_OPTIONS):
        part = options[start:start + MAX_OPTIONS]
        groups.append({"label": _plain(f"{start + 1}–{start + len(part)}", OPTION_TEXT_LIMIT), "options": part})
    return {"option_groups": groups}


def _free_block(field: ModalField, keys: Keys) -> dict[str, Any]:
    label = plain_text(field.label)[0] or field.name
    prefill = field.prefill if isinstance(field.prefill, list) else []
    known = {c.value for c in field.options}
    typed = [p for p in prefill if p not in known]
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": FIELD_ACTION}
    if typed:
        element["initial_value"] = ", ".join(typed)[:TEXT_INPUT_LIMIT] if field.multi else typed[0][:TEXT_INPUT_LIMIT]
    block: dict[str, Any] = {
        "type": "input",
        "block_id": free_block(field.name, keys),
        "label": _plain(texts.SLACK_FREE_INPUT_LABEL.format(label=label), LABEL_LIMIT),
        "element": element,
        "optional": True,
        "hint": _plain(texts.SLACK_FREE_INPUT_HINT_MULTI if field.multi else texts.SLACK_FREE_INPUT_HINT,
                       LABEL_LIMIT),
    }
    if field.triggers_refresh:
        block["dispatch_action"] = True
        element["dispatch_action_config"] = {"trigger_actions_on": ["on_enter_pressed"]}
    return block


def display_blocks(field: ModalField) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = field.display_text.strip()
    if text:
        if field.display_style == "HEADER":
            blocks.append({"type": "header", "text": _plain(plain_text(text)[0], HEADER_LIMIT)})
        elif field.display_style == "SUBTLE":
            blocks.append({"type": "context", "elements": [_mrkdwn(to_mrkdwn(text))]})
        else:
            blocks.append({"type": "section", "text": _mrkdwn(to_mrkdwn(text))})
    if field.image_url and len(field.image_url) <= URL_LIMIT:
        alt = plain_text(field.label or text)[0] or field.name or "image"
        blocks.append({"type": "image", "image_url": field.image_url, "alt_text": clip(alt, ALT_TEXT_LIMIT)})
    if field.download_url and len(field.download_url) <= URL_LIMIT:
        from .blocks import link_url  # blocks imports this module

        label = plain_text(field.download_text or field.label)[0] or texts.SLACK_FORM_DOWNLOAD
        blocks.append({"type": "section",
                       "text": _mrkdwn(f"📎 <{link_url(field.download_url)}|{escape(clip(label, 200))}>")})
    return blocks


def read_only_block(field: ModalField) -> dict[str, Any]:
    label = escape(plain_text(field.label)[0] or field.name)
    return {"type": "section", "text": _mrkdwn(f"*{label}*\n{shown_value(field)}")}


def shown_value(field: ModalField) -> str:
    """A read-only field's value as mrkdwn."""
    value = field.prefill
    if field.type == "BOOLEAN":
        return texts.SLACK_YES if value is True else texts.SLACK_NO
    if field.type == "CHOICE":
        labels = {c.value: plain_text(c.label)[0] or c.value for c in field.options}
        picked = [labels.get(str(v), str(v)) for v in value] if isinstance(value, list) else []
        return escape(", ".join(picked)) or "—"
    if field.type == "DATETIME":
        seconds = unix_seconds(value)
        if seconds is not None:
            return f"<!date^{seconds}^{{date_short_pretty}} {{time}}|{escape(str(value))}>"
    if isinstance(value, str) and value.strip():
        return escape(value)
    return "—"


# --- dates ------------------------------------------------------------------------------------------


def unix_seconds(value: Any) -> int | None:
    """An ISO-8601 date-time (a naive one is taken as UTC) -> unix seconds, for the datetimepicker."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    return seconds if 0 <= seconds <= 9_999_999_999 else None


def iso_datetime(seconds: Any) -> str | None:
    """The datetimepicker's `selected_date_time` (unix seconds) -> ISO-8601 with offset (UTC)."""
    if isinstance(seconds, str) and seconds.isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


# --- the modal's state back to values ------------------------------------------------------------


def read_values(state: Any, keys: Keys, team_id: str = "") -> dict[str, FieldInput]:
    """`view.state.values` -> the core's `values` by field name (only the form's inputs)."""
    raw = state.get("values") if isinstance(state, dict) else None
    if not isinstance(raw, dict):
        return {}
    values: dict[str, FieldInput] = {}
    free: dict[str, str] = {}
    multi: set[str] = set()
    for block_id, actions in raw.items():
        if not isinstance(block_id, str) or not isinstance(actions, dict):
            continue
        element = actions.get(FIELD_ACTION)
        if not isinstance(element, dict):
            continue
        if block_id.startswith(FREE_BLOCK):
            text = element.get("value")
            if isinstance(text, str) and text.strip():
                free[keys.long(block_id[len(FREE_BLOCK):])] = text.strip()
            continue
        if not block_id.startswith(FIELD_BLOCK):
            continue
        name = keys.long(block_id[len(FIELD_BLOCK):])
        if element.get("type") == "multi_static_select":
            multi.add(name)
        values[name] = element_value(element, keys, team_id)
    for name, text in free.items():
        if name in multi:
            picked = values.get(name)
            extra = [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]
            values[name] = [*(picked if isinstance(picked, list) else []), *extra]
        else:
            values[name] = text
    return values


def element_value(element: dict[str, Any], keys: Keys, team_id: str = "") -> FieldInput:
    kind = element.get("type")
    if kind == "plain_text_input":
        text = element.get("value")
        return text if isinstance(text, str) and text != "" else None
    if kind == "datepicker":
        date = element.get("selected_date")
        return date if isinstance(date, str) and date else None
    if kind == "datetimepicker":
        return iso_datetime(element.get("selected_date_time"))
    if kind == "checkboxes":
        return bool(element.get("selected_options"))
    if kind == "static_select":
        option = element.get("selected_option")
        value = option.get("value") if isinstance(option, dict) else None
        return keys.long(value) if isinstance(value, str) else None
    if kind == "multi_static_select":
        options = element.get("selected_options")
        picked = [keys.long(o["value"]) for o in options or []
                  if isinstance(o, dict) and isinstance(o.get("value"), str)]
        return picked or None
    if kind == "file_input":
        return list(attachments(element.get("files"), team_id)) or None
    return None


def input_block_ids(view: Any) -> list[str]:
    blocks = view.get("blocks") if isinstance(view, dict) else None
    return [b["block_id"] for b in blocks or [] if isinstance(b, dict) and b.get("type") == "input"
            and isinstance(b.get("block_id"), str)]


def response_errors(errors: dict[str, str], view: Any, keys: Keys) -> dict[str, str] | None:
    """`errors` by field name -> Slack's `response_action: errors` (by block_id) for the modal
    that was submitted; errors not on one of its inputs go to its first input. None when the
    modal has no input to carry them."""
    ids = input_block_ids(view)
    if not ids:
        return None
    out: dict[str, str] = {}
    for name, message in errors.items():
        if not message:
            continue
        block = field_block(name, keys) if name else ""
        target = block if block in ids else ids[0]
        out[target] = clip(f"{out[target]} {message}" if target in out else message, ERROR_LIMIT)
    return out or None


# --- buttons and the get-help menu -----------------------------------------------------------------


def form_button_value(ref: MessageRef, where: str, label: str) -> dict[str, Any]:
    return {"c": ref.conversation_id, "r": ref.response_id, "m": ref.message_id, "w": where,
            "l": clip(label, TITLE_LIMIT)}


def decode_ref(data: dict[str, Any]) -> MessageRef | None:
    ids = [data.get(k) for k in ("c", "r", "m")]
    if not all(isinstance(i, str) for i in ids) or not ids[0] or not ids[2]:
        return None
    return MessageRef(str(ids[0]), str(ids[1]), str(ids[2]))


def help_blocks(menu: tuple[HelpCategory, ...], fallback: MessageRef | None) -> list[dict[str, Any]]:
    """One section per category with a select of its items. The category's block_id carries the
    message ref (an option value holds only 150 characters); an option's value is the item's
    kind (`f`: opens a form, `o`: anything else) and its place (`where`) in the message."""
    if not menu:
        return []
    blocks: list[dict[str, Any]] = [{"type": "section", "text": _mrkdwn(f"*{escape(texts.HELP_MENU)}*")}]
    for c, category in enumerate(menu):
        ref = next((i.ref for i in category.items if i.ref is not None), None) or fallback
        if ref is None:
            continue
        options = []
        for i, item in enumerate(category.items[:MAX_OPTIONS]):
            action = item.action
            where = item.where or f"h{c}.{i}"
            kind = "f" if action is not None and action.opens_form else "o"
            value = f"{kind}|{where}"
            if len(value) > OPTION_VALUE_LIMIT:
                continue
            options.append({"text": _plain(plain_text(item.title)[0] or item.title, OPTION_TEXT_LIMIT), "value": value})
        block_id = "mwh|" + json.dumps([c, ref.conversation_id, ref.response_id, ref.message_id],
                                       separators=(",", ":"))
        if not options or len(block_id) > BLOCK_ID_LIMIT:
            continue
        name = escape(plain_text(category.name)[0] or category.name)
        text = f"*{name}*" + (f"\n{escape(plain_text(category.description)[0])}" if category.description else "")
        blocks.append({
            "type": "section",
            "block_id": block_id,
            "text": _mrkdwn(text),
            "accessory": {"type": "static_select", "action_id": HELP_ACTION,
                          "placeholder": _plain(texts.HELP_PICK, 150), "options": options},
        })
    return blocks if len(blocks) > 1 else []


def help_pick(block_id: Any, value: Any) -> tuple[MessageRef, str, bool] | None:
    """A get-help select's block_id and picked value -> (message ref, where, opens a form)."""
    if not isinstance(block_id, str) or not block_id.startswith("mwh|") or not isinstance(value, str):
        return None
    try:
        data = json.loads(block_id[4:])
    except ValueError:
        return None
    kind, _, where = value.partition("|")
    if not (isinstance(data, list) and len(data) == 4 and all(isinstance(x, str) for x in data[1:])) or not where:
        return None
    return MessageRef(data[1], data[2], data[3]), where, kind == "f"
