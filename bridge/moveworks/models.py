"""Typed views of the Moveworks Conversations API objects.

Parsing is tolerant on purpose: the API is in Controlled Availability and has shipped several
generations, so unknown fields are ignored, unknown enum values are kept as plain strings, and
missing optional fields default to empty. Only fields without which an object is meaningless
(ids) raise `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED"})


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _required(data: dict[str, Any], key: str, kind: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} without {key}")
    return value


def content_text(content: Any) -> str:
    """The text of a `Content` object, whatever its type (PLAIN/COMMONMARK/MARKDOWN)."""
    content = _obj(content)
    kind = _str(content.get("type")) or ""
    inner = _obj(content.get(kind.lower())) if kind else {}
    text = inner.get("text")
    if isinstance(text, str):
        return text
    for key in ("commonmark_text", "markdown_text", "plain_text"):  # type missing or unknown
        text = _obj(content.get(key)).get("text")
        if isinstance(text, str):
            return text
    return ""


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    title: str | None = None
    archived: bool = False
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Conversation:
        data = _obj(data)
        return cls(
            conversation_id=_required(data, "conversation_id", "conversation"),
            title=_str(data.get("title")),
            archived=bool(data.get("archived") or False),
            created_at=_str(data.get("created_at")),
            updated_at=_str(data.get("updated_at")),
        )


@dataclass(frozen=True)
class Citation:
    citation_id: str
    url: str | None
    title: str
    body: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Citation:
        data = _obj(data)
        display = _obj(data.get("display"))
        attributes = {
            str(a.get("key")): str(a.get("value"))
            for a in map(_obj, _list(display.get("attributes")))
            if a.get("key") is not None
        }
        return cls(
            citation_id=_str(data.get("citation_id")) or "",
            url=_str(data.get("url")),
            title=content_text(display.get("title")).strip(),
            body=content_text(display.get("body")).strip(),
            attributes=attributes,
        )


@dataclass(frozen=True)
class ContentReference:
    citation_id: str
    offset: int


@dataclass(frozen=True)
class MessageRef:
    """Where a message lives: what a button needs to find it again (modal ids are minted per
    read of a message, so a form is opened by re-reading its message, never by an old id)."""

    conversation_id: str
    response_id: str
    message_id: str


@dataclass(frozen=True)
class Action:
    """A button offered with a message: CALLBACK_ACTION (callback_id), URL_ACTION (url) or
    MODAL_ACTION (modal_id: a form, `/rest/v1` only). `ref` and `where` ("a2": the third action
    of the message; "h1.0": the first item of the second get-help category) locate it in its
    message, so a form can be re-fetched with a fresh modal id; set by the composer."""

    type: str
    label: str
    callback_id: str | None = None
    url: str | None = None
    modal_id: str | None = None
    ref: MessageRef | None = None
    where: str = ""

    @property
    def opens_form(self) -> bool:
        return self.modal_id is not None

    @classmethod
    def from_json(cls, data: Any) -> Action | None:
        data = _obj(data)
        kind = _str(data.get("type")) or ""
        label = _str(data.get("label")) or ""
        callback_id = _str(_obj(data.get("callback_action")).get("callback_id"))
        url = _str(_obj(data.get("url_action")).get("url"))
        modal_id = _str(_obj(data.get("modal_action")).get("modal_id"))
        if not label or not (callback_id or url or modal_id):
            return None  # an action we cannot render is dropped
        return cls(type=kind, label=label, callback_id=callback_id, url=url, modal_id=modal_id)


@dataclass(frozen=True)
class HelpItem:
    """One entry of the get-help menu: an ACTION (behaves like the action it carries) or a TEXT
    (posts its text)."""

    title: str
    type: str
    action: Action | None = None
    text: str = ""
    ref: MessageRef | None = None  # set by the composer, like Action.ref/where
    where: str = ""


@dataclass(frozen=True)
class HelpCategory:
    category_id: str
    name: str
    description: str
    items: tuple[HelpItem, ...]


def _help_menu(data: Any) -> tuple[HelpCategory, ...]:
    categories = []
    for cat in map(_obj, _list(_obj(data).get("handoff_categories"))):
        items = []
        for raw in map(_obj, _list(cat.get("handoff_items"))):
            title = _str(raw.get("title")) or ""
            kind = _str(raw.get("type")) or ""
            action = Action.from_json(raw.get("action")) if kind == "ACTION" else None
            text = content_text(raw.get("text")) if kind == "TEXT" else ""
            if title and (action or text):
                items.append(HelpItem(title, kind, action, text))
        name = _str(cat.get("name")) or ""
        if name and items:
            categories.append(HelpCategory(_str(cat.get("category_id")) or "", name,
                                           _str(cat.get("description")) or "", tuple(items)))
    return tuple(categories)


@dataclass(frozen=True)
class FileRef:
    file_id: str
    file_name: str | None = None


@dataclass(frozen=True)
class Feedback:
    helpful: str | None = None
    unhelpful: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Feedback | None:
        data = _obj(data)
        helpful = _str(_obj(data.get("helpful")).get("callback_id"))
        unhelpful = _str(_obj(data.get("unhelpful")).get("callback_id"))
        return cls(helpful, unhelpful) if (helpful or unhelpful) else None


@dataclass(frozen=True)
class Message:
    message_id: str
    conversation_id: str
    response_id: str | None
    actor: str
    text: str
    content_type: str = "COMMONMARK_TEXT"
    created_at: str | None = None
    citations: tuple[Citation, ...] = ()
    content_references: tuple[ContentReference, ...] = ()
    feedback: Feedback | None = None
    actions: tuple[Action, ...] = ()
    sender_name: str | None = None  # LIVE_AGENT messages: the human agent
    sender_avatar: str | None = None
    help_menu: tuple[HelpCategory, ...] = ()  # `handoff.handoff_categories`
    files: tuple[FileRef, ...] = ()  # a user turn's attachments

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.conversation_id, self.response_id or "", self.message_id)

    @classmethod
    def from_json(cls, data: Any) -> Message:
        data = _obj(data)
        refs = []
        for ref in map(_obj, _list(data.get("content_references"))):
            offset = ref.get("offset")
            if isinstance(ref.get("citation_id"), str) and isinstance(offset, int) and offset >= 0:
                refs.append(ContentReference(ref["citation_id"], offset))
        refs.sort(key=lambda r: r.offset)
        content = _obj(data.get("content"))
        return cls(
            message_id=_required(data, "message_id", "message"),
            conversation_id=_str(data.get("conversation_id")) or "",
            response_id=_str(data.get("response_id")),
            actor=_str(data.get("actor")) or "ASSISTANT",
            text=content_text(content),
            content_type=_str(content.get("type")) or "COMMONMARK_TEXT",
            created_at=_str(data.get("created_at")),
            citations=tuple(Citation.from_json(c) for c in _list(data.get("citations"))),
            content_references=tuple(refs),
            feedback=Feedback.from_json(data.get("feedback")),
            actions=tuple(a for a in map(Action.from_json, _list(data.get("actions"))) if a),
            sender_name=_str(_obj(data.get("sender_info")).get("display_name")),
            sender_avatar=_str(_obj(data.get("sender_info")).get("avatar_url")) or None,
            help_menu=_help_menu(data.get("handoff")),
            files=tuple(
                FileRef(f["file_id"], _str(f.get("file_name")))
                for f in map(_obj, _list(_obj(content.get("plain_text")).get("files")))
                if isinstance(f.get("file_id"), str)
            ),
        )


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class ModalField:
    """One field of a Moveworks form, with `visible`/`required`/`read_only` already evaluated by
    Moveworks. `prefill` is the type's own shape: str (TEXT, DATE, DATETIME), bool (BOOLEAN),
    list of values (CHOICE). DISPLAY fields carry `display_*` and are never submitted."""

    name: str
    type: str  # TEXT, DATE, DATETIME, BOOLEAN, CHOICE, FILE, DISPLAY (others are kept, not shown)
    label: str = ""
    description: str = ""
    visible: bool = True
    required: bool = False
    read_only: bool = False
    triggers_refresh: bool = False
    multiline: bool = False
    multi: bool = False
    allows_free_input: bool = False
    options: tuple[Choice, ...] = ()
    prefill: Any = None
    display_style: str = "NORMAL"  # NORMAL, HEADER, SUBTLE
    display_text: str = ""  # as sent (may hold simple HTML)
    image_url: str | None = None
    download_url: str | None = None
    download_text: str = ""

    @property
    def submitted(self) -> bool:
        """Does this field take a value in `values`?"""
        return self.type != "DISPLAY" and self.visible and bool(self.name)

    @classmethod
    def from_json(cls, data: Any) -> ModalField:
        data = _obj(data)
        kind = _str(data.get("type")) or ""
        config = _obj(data.get(kind.lower())) if kind else {}
        if kind == "BOOLEAN" and not config:
            config = _obj(data.get("bool"))
        options = tuple(
            Choice(str(o["value"]), str(o.get("display_value") or o["value"]))
            for o in map(_obj, _list(config.get("options")))
            if o.get("value") is not None
        )
        prefill: Any = config.get("prefill")
        if kind == "CHOICE":
            prefill = [str(p.get("value")) for p in map(_obj, _list(prefill)) if p.get("value") is not None]
        display = _obj(data.get("display"))
        text = _obj(display.get("text"))
        return cls(
            name=_str(data.get("name")) or "",
            type=kind,
            label=_str(data.get("label")) or "",
            description=_str(data.get("description")) or "",
            visible=data.get("visible") is not False,
            required=bool(data.get("required")),
            read_only=bool(data.get("read_only")),
            triggers_refresh=bool(data.get("triggers_refresh")),
            multiline=bool(config.get("multiline")),
            multi=bool(config.get("multi")),
            allows_free_input=bool(config.get("allows_free_input")),
            options=options,
            prefill=prefill,
            display_style=_str(text.get("style")) or "NORMAL",
            display_text=_str(text.get("text")) or "",
            image_url=_str(_obj(display.get("image")).get("url")),
            download_url=_str(_obj(display.get("download")).get("url")),
            download_text=_str(_obj(display.get("download")).get("text")) or "",
        )


@dataclass(frozen=True)
class Modal:
    """A Moveworks form (`/rest/v1` get-modal / refresh-modal)."""

    modal_id: str
    title: str
    fields: tuple[ModalField, ...]

    @classmethod
    def from_json(cls, data: Any, modal_id: str = "") -> Modal:
        data = _obj(data)
        return cls(
            modal_id=_str(data.get("modal_id")) or modal_id,
            title=_str(data.get("title")) or "",
            fields=tuple(ModalField.from_json(f) for f in _list(data.get("fields"))),
        )


@dataclass(frozen=True)
class ModalReceipt:
    """submit-modal's acknowledgement; the outcome arrives later as assistant messages."""

    status: str
    receipt_text: str = ""


@dataclass(frozen=True)
class UploadedFile:
    file_id: str
    file_name: str | None = None
    expire_time: str | None = None


@dataclass(frozen=True)
class ReasoningMessage:
    reasoning_message_id: str
    text: str

    @classmethod
    def from_json(cls, data: Any) -> ReasoningMessage:
        data = _obj(data)
        return cls(
            reasoning_message_id=_required(data, "reasoning_message_id", "reasoning message"),
            text=content_text(data.get("content")),
        )


Output = Message | ReasoningMessage


def parse_output(data: Any) -> Output | None:
    """One `OutputItem`; None for output types this bridge does not know."""
    data = _obj(data)
    kind = data.get("type")
    if kind == "MESSAGE" and isinstance(data.get("message"), dict):
        return Message.from_json(data["message"])
    if kind == "REASONING_MESSAGE" and isinstance(data.get("reasoning_message"), dict):
        return ReasoningMessage.from_json(data["reasoning_message"])
    return None


@dataclass(frozen=True)
class ApiErrorDetail:
    code: str
    message: str


@dataclass(frozen=True)
class Response:
    response_id: str
    conversation_id: str
    status: str
    created_at: str | None = None
    completed_at: str | None = None
    outputs: tuple[Output, ...] = ()
    error: ApiErrorDetail | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def messages(self) -> tuple[Message, ...]:
        return tuple(o for o in self.outputs if isinstance(o, Message))

    @classmethod
    def from_json(cls, data: Any) -> Response:
        data = _obj(data)
        err = _obj(data.get("error"))
        return cls(
            response_id=_required(data, "response_id", "response"),
            conversation_id=_str(data.get("conversation_id")) or "",
            status=_str(data.get("status")) or "CREATED",
            created_at=_str(data.get("created_at")),
            completed_at=_str(data.get("completed_at")),
            outputs=tuple(o for o in map(parse_output, _list(data.get("outputs"))) if o),
            error=ApiErrorDetail(str(err.get("code") or ""), str(err.get("message") or ""))
            if err
            else None,
        )


@dataclass(frozen=True)
class Event:
    event_id: str
    conversation_id: str
    type: str
    message: Message | None
    created_at: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Event:
        data = _obj(data)
        payload = _obj(data.get("event_payload"))
        message = None
        if isinstance(payload.get("message"), dict):
            try:
                message = Message.from_json(payload["message"])
            except ValueError:
                message = None
        return cls(
            event_id=_required(data, "event_id", "event"),
            conversation_id=_str(data.get("conversation_id")) or "",
            type=_str(payload.get("type")) or "",
            message=message,
            created_at=_str(data.get("created_at")),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None


# --- stream events; the client yields exactly these -------------------------------


@dataclass(frozen=True)
class ResponseCreated:
    response: Response


@dataclass(frozen=True)
class ResponseInProgress:
    response: Response


@dataclass(frozen=True)
class OutputDelta:
    """A cumulative snapshot of one output: replaces, never appends to, the previous one."""

    output: Output


@dataclass(frozen=True)
class ResponseCompleted:
    response: Response


@dataclass(frozen=True)
class ResponseFailed:
    response: Response


@dataclass(frozen=True)
class StreamError:
    code: str
    message: str


StreamEvent = (
    ResponseCreated | ResponseInProgress | OutputDelta | ResponseCompleted | ResponseFailed | StreamError
)
