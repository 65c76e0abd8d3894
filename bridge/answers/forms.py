"""Moveworks forms (`MODAL_ACTION`) and the get-help menu, for every platform that shows forms.

The rules live here once; adapters only draw the form and hand back what was typed:

* A form is opened by re-reading the message that offered it (modal ids are minted per read, so
  an id from an old read may be gone) and only for the person that conversation belongs to.
* A form session (which message, which modal id, the choice options of the first read, the form
  last shown) is kept in the store's kv under an opaque token, so any process can take the next
  step and nothing large travels through Slack's `private_metadata` or a Teams card.
* Values are converted to the documented shapes (`{text}`, `{date}`, `{datetime}`, `{bool}`,
  `{option}`/`{options}`, FILE → `{file_id}` after an upload) and checked (required, dates,
  listed choices) before Moveworks is called; Moveworks' own refusals are put on the field they
  name. A 404 on refresh or submit re-reads the message once for a fresh modal id.
* After a submit the acknowledgement (`receipt_text`) is posted in the thread; the outcome
  arrives later as assistant messages through the poller.
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from bridge import texts
from bridge.answers.markdown import emojize
from bridge.contract import Address
from bridge.errors import AttachmentRefused
from bridge.models import Attachment, ChatUser, FieldInput, FormStep, Inbound, ThreadKey, ThreadLink
from bridge.moveworks.errors import InvalidRequest, MoveworksError, NotFound
from bridge.moveworks.models import Action, Choice, Message, MessageRef, Modal, ModalField

if TYPE_CHECKING:
    from bridge.answers.relay import Relay

log = logging.getLogger(__name__)

SESSIONS = "forms"  # kv namespace
SESSION_TTL = 24 * 3600.0  # Moveworks' file ids live as long; a form left open longer is re-opened
_FIELD_NAMED = re.compile(r"['\"‘’“”]([A-Za-z0-9_.\-]+)['\"‘’“”]")


# --- the form as shown ----------------------------------------------------------------------------


def html_to_markdown(text: str) -> str:
    """DISPLAY texts arrive as simple HTML (`<a href>`, `<br>`, `<b>`): Markdown for the adapters."""
    text = re.sub(r"(?is)<a\s[^>]*href=[\"']([^\"']+)[\"'][^>]*>(.*?)</a>", r"[\2](\1)", text)
    text = re.sub(r"(?i)<br\s*/?>", "\n", text)
    text = re.sub(r"(?i)</p>\s*<p[^>]*>", "\n\n", text)
    text = re.sub(r"(?i)</?(b|strong)>", "**", text)
    text = re.sub(r"(?i)</?(i|em)>", "_", text)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text).strip()


def _shown(modal: Modal) -> Modal:
    """What adapters draw: emoji codes as emoji, DISPLAY HTML as Markdown."""
    return replace(
        modal,
        title=emojize(modal.title).strip() or texts.FORM_DEFAULT_TITLE,
        fields=tuple(
            replace(f, label=emojize(f.label), display_text=html_to_markdown(emojize(f.display_text)))
            for f in modal.fields
        ),
    )


def _modal_json(modal: Modal) -> dict[str, Any]:
    return asdict(modal)


def _modal_from(data: dict[str, Any]) -> Modal:
    fields = tuple(
        ModalField(**{**f, "options": tuple(Choice(**o) for o in f.get("options") or ())})
        for f in data.get("fields") or ()
    )
    return Modal(modal_id=data.get("modal_id") or "", title=data.get("title") or "", fields=fields)


# --- values ---------------------------------------------------------------------------------------


@dataclass
class _Converted:
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[Attachment]] = field(default_factory=dict)


def _as_list(value: FieldInput) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def _iso_datetime(value: str) -> str | None:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # a time without an offset is taken as UTC
    return parsed.isoformat()


def convert(form: Modal, given: dict[str, FieldInput], *, strict: bool) -> _Converted:
    """What the adapter collected → Moveworks `values`; `strict` (submit) also reports errors."""
    out = _Converted()
    for f in form.fields:
        if not f.submitted:
            continue  # DISPLAY and hidden fields are neither required nor kept
        raw = given.get(f.name)
        if f.read_only:
            raw = f.prefill if raw is None else raw
        value: dict[str, Any] | None = None
        error: str | None = None
        if f.type == "BOOLEAN":
            value = {"bool": bool(raw)} if raw is not None or f.prefill is not None else {"bool": False}
        elif f.type == "FILE":
            files = [a for a in raw if isinstance(a, Attachment)] if isinstance(raw, list) else []
            if files:
                out.files[f.name] = files
        elif f.type == "CHOICE":
            chosen = _as_list(raw)
            listed = {o.value for o in f.options}
            if chosen and listed and not f.allows_free_input and any(c not in listed for c in chosen):
                error = texts.FORM_BAD_CHOICE
            elif chosen:
                value = {"options": chosen} if f.multi else {"option": chosen[0]}
        elif isinstance(raw, str) and raw.strip():
            if f.type == "DATE":
                try:
                    value = {"date": date.fromisoformat(raw.strip()).isoformat()}
                except ValueError:
                    error = texts.FORM_BAD_DATE
            elif f.type == "DATETIME":
                iso = _iso_datetime(raw)
                value, error = ({"datetime": iso}, None) if iso else (None, texts.FORM_BAD_DATETIME)
            else:  # TEXT, and types this bridge does not know but that took text
                value = {"text": raw}
        if value is not None:
            out.values[f.name] = value
        elif error is None and f.required and not f.read_only and f.name not in out.files:
            error = texts.FORM_REQUIRED
        if error and strict:
            out.errors[f.name] = error
    return out


def _with_entries(modal: Modal, given: dict[str, FieldInput], options: dict[str, list[list[str]]]) -> Modal:
    """A refreshed (or refused) form as the person left it: choice options the refresh left out
    put back, and what is in each box (adapters send every box, touched or not) as its prefill.
    Moveworks stores nothing between calls, so its prefill is only the first read's default."""
    fields = []
    for f in modal.fields:
        if f.type == "CHOICE" and not f.options and options.get(f.name):
            f = replace(f, options=tuple(Choice(v, label) for v, label in options[f.name]))
        raw = given.get(f.name)
        if raw is not None and not f.read_only and f.type != "FILE":
            f = replace(f, prefill=_as_list(raw) if f.type == "CHOICE" else raw)
        fields.append(f)
    return replace(modal, fields=tuple(fields))


def _field_of(message: str, form: Modal) -> str:
    """The field a Moveworks refusal names ("Field 'summary' is required"), else ""."""
    names = {f.name for f in form.fields if f.submitted}
    for candidate in _FIELD_NAMED.findall(message):
        if candidate in names:
            return candidate
    return ""


# --- sessions -------------------------------------------------------------------------------------


@dataclass
class _Session:
    ref: MessageRef
    where: str
    modal_id: str
    user_id: str
    platform: str
    link_id: int
    form: Modal
    options: dict[str, list[list[str]]]
    created: float

    def dump(self) -> str:
        return json.dumps({
            "ref": asdict(self.ref), "where": self.where, "modal_id": self.modal_id,
            "user_id": self.user_id, "platform": self.platform, "link_id": self.link_id,
            "form": _modal_json(self.form), "options": self.options, "created": self.created,
        })

    @classmethod
    def load(cls, raw: str) -> _Session:
        data = json.loads(raw)
        return cls(
            ref=MessageRef(**data["ref"]), where=data["where"], modal_id=data["modal_id"],
            user_id=data["user_id"], platform=data["platform"], link_id=int(data["link_id"]),
            form=_modal_from(data["form"]), options=data.get("options") or {},
            created=float(data.get("created") or 0.0),
        )


def locate(message: Message, where: str) -> tuple[Action | None, str]:
    """The action (and a TEXT item's text) that `where` names in a fresh read of `message`:
    "a2" is its third action, "h1.0" the first item of its second get-help category."""
    try:
        if where.startswith("a"):
            return message.actions[int(where[1:])], ""
        if where.startswith("h"):
            c, i = (int(n) for n in where[1:].split("."))
            item = message.help_menu[c].items[i]
            return item.action, item.text
    except (ValueError, IndexError):
        pass
    return None, ""


class Forms:
    """Open, refresh and submit Moveworks forms, and run get-help menu picks, for the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    @property
    def _kv(self) -> Any:
        return self.relay.store.kv.namespace(SESSIONS)

    # --- who, and which message ---------------------------------------------------------------

    async def _owner_link(self, user: ChatUser, ref: MessageRef) -> ThreadLink | str:
        links = await self.relay.store.links.for_conversation(ref.conversation_id)
        if not links:
            return texts.FORM_GONE
        link = links[0]
        if link.user_id != user.user_id or link.thread.platform != user.platform:
            return texts.FORM_NOT_OWNER
        return link

    async def _message(self, identity: str | None, ref: MessageRef) -> Message | None:
        """A fresh read of the message (its modal ids are new)."""
        client = self.relay.client
        if ref.response_id:
            for message in await client.list_response_messages(identity, ref.conversation_id, ref.response_id):
                if message.message_id == ref.message_id:
                    return message
        page = await client.list_conversation_messages(identity, ref.conversation_id, limit=50)
        return next((m for m in page.items if m.message_id == ref.message_id), None)

    async def _fresh_modal_id(self, identity: str | None, ref: MessageRef, where: str) -> str | None:
        message = await self._message(identity, ref)
        action = locate(message, where)[0] if message is not None else None
        return action.modal_id if action is not None else None

    async def _save(self, token: str, session: _Session) -> None:
        await self._kv.set(token, session.dump())

    async def _session(self, user: ChatUser, token: str) -> _Session | str:
        raw = await self._kv.get(token) if token else None
        if raw is None:
            return texts.FORM_GONE
        try:
            session = _Session.load(raw)
        except (ValueError, KeyError, TypeError):
            return texts.FORM_GONE
        if session.user_id != user.user_id or session.platform != user.platform:
            return texts.FORM_NOT_OWNER
        if time.time() - session.created > SESSION_TTL:
            return texts.FORM_GONE
        return session

    # --- the three steps ----------------------------------------------------------------------

    async def open(self, user: ChatUser, ref: MessageRef, where: str) -> FormStep:
        owner = await self._owner_link(user, ref)
        if isinstance(owner, str):
            return FormStep(notice=owner)
        identity = owner.identity or None
        try:
            modal_id = await self._fresh_modal_id(identity, ref, where)
            if modal_id is None:
                return FormStep(notice=texts.FORM_GONE)
            modal = await self.relay.client.get_modal(identity, ref, modal_id)
        except NotFound:
            log.warning("forms: Moveworks has no such form (expired, or forms are not enabled for "
                        "this organisation)")
            return FormStep(notice=texts.FORM_GONE)
        except MoveworksError as exc:
            log.warning("forms: could not open a form: %s", exc)
            return FormStep(notice=texts.FORM_FAILED)
        modal = _shown(modal)
        options = {f.name: [[o.value, o.label] for o in f.options] for f in modal.fields if f.options}
        token = secrets.token_urlsafe(16)
        await self._save(token, _Session(ref, where, modal_id, user.user_id, user.platform, owner.id, modal,
                                   options, time.time()))
        await self._kv.prune(SESSION_TTL)
        return FormStep(session=token, form=modal)

    async def _with_fresh_id(self, session: _Session, identity: str | None, call: Any) -> Any:
        """Run `call(modal_id)`; on a 404 re-read the message once for a fresh modal id."""
        try:
            return await call(session.modal_id)
        except NotFound:
            fresh = await self._fresh_modal_id(identity, session.ref, session.where)
            if fresh is None or fresh == session.modal_id:
                raise
            session.modal_id = fresh
            return await call(fresh)

    async def _identity(self, session: _Session) -> str | None:
        link = await self.relay.store.links.get_by_id(session.link_id)
        return (link.identity or None) if link is not None else None

    async def refresh(self, user: ChatUser, token: str, given: dict[str, FieldInput]) -> FormStep:
        session = await self._session(user, token)
        if isinstance(session, str):
            return FormStep(notice=session)
        identity = await self._identity(session)
        values = convert(session.form, given, strict=False).values
        client = self.relay.client
        try:
            modal = await self._with_fresh_id(
                session, identity, lambda mid: client.refresh_modal(identity, session.ref, mid, values)
            )
        except NotFound:
            return FormStep(notice=texts.FORM_GONE)
        except MoveworksError as exc:
            log.warning("forms: refresh failed: %s", exc)
            form = _with_entries(session.form, given, session.options)
            return FormStep(session=token, form=form, errors={"": texts.FORM_SUBMIT_FAILED})
        form = _with_entries(_shown(modal), given, session.options)
        for f in form.fields:
            if f.options:
                session.options.setdefault(f.name, [[o.value, o.label] for o in f.options])
        session.form = form
        await self._save(token, session)
        return FormStep(session=token, form=form)

    async def submit(self, user: ChatUser, token: str, given: dict[str, FieldInput]) -> FormStep:
        session = await self._session(user, token)
        if isinstance(session, str):
            return FormStep(notice=session)
        form = _with_entries(session.form, given, session.options)
        converted = convert(session.form, given, strict=True)
        if converted.errors:
            return FormStep(session=token, form=form, errors=converted.errors)
        identity = await self._identity(session)
        adapter = self.relay.adapters.get(session.platform)
        for name, files in converted.files.items():
            try:
                if adapter is None or not self.relay.attachments.usable(adapter):
                    raise AttachmentRefused("files cannot be passed on here")
                uploaded = await self.relay.attachments.upload(adapter, identity, files[0])
            except AttachmentRefused as refused:
                log.info("forms: a FILE field's upload failed: %s", refused)
                return FormStep(session=token, form=form, errors={name: texts.FORM_FILE_FAILED})
            converted.values[name] = {"file_id": uploaded.file_id}
        client = self.relay.client
        values = converted.values
        try:
            receipt = await self._with_fresh_id(
                session, identity, lambda mid: client.submit_modal(identity, session.ref, mid, values)
            )
        except InvalidRequest as exc:
            detail = exc.detail or str(exc)
            return FormStep(session=token, form=form, errors={_field_of(detail, session.form): detail})
        except NotFound:
            return FormStep(notice=texts.FORM_GONE)
        except MoveworksError as exc:
            log.warning("forms: submit failed: %s", exc)
            return FormStep(session=token, form=form, errors={"": texts.FORM_SUBMIT_FAILED})
        await self._kv.delete(token)
        link = await self.relay.store.links.get_by_id(session.link_id)
        if link is not None:
            self.relay.background(self.relay.post_note(link, texts.form_receipt(receipt.receipt_text)),
                                  name="form-receipt")
        return FormStep(done=True)

    # --- the get-help menu --------------------------------------------------------------------

    async def choose(
        self, user: ChatUser, thread: ThreadKey, address: Address, ref: MessageRef, where: str
    ) -> str | None:
        owner = await self._owner_link(user, ref)
        if isinstance(owner, str):
            return texts.HELP_NOT_OWNER if owner == texts.FORM_NOT_OWNER else owner
        try:
            message = await self._message(owner.identity or None, ref)
        except MoveworksError as exc:
            log.warning("help menu: could not re-read the message: %s", exc)
            return texts.FORM_FAILED
        action, text = locate(message, where) if message is not None else (None, "")
        if action is None and not text:
            return texts.FORM_GONE
        if action is not None and action.callback_id:
            await self.relay.submit(Inbound(
                dedupe_id=f"help:{ref.message_id}:{where}:{user.user_id}:{uuid.uuid4()}",
                thread=thread, user=user, text=action.label, callback_id=action.callback_id,
                callback_conversation_id=ref.conversation_id, callback_label=action.label,
                address=address,
            ))
            return None
        if action is not None and action.url:
            text = f"[{action.label}]({action.url})"
        if action is not None and action.opens_form:
            return None  # the adapter opens forms itself (it holds the interaction)
        self.relay.background(self.relay.post_note(owner, text), name="help-item")
        return None
