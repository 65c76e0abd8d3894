"""Async client of the Moveworks Conversations API.

Every call acts as one identity (the employee email, handed to the `AuthProvider`). This module only
maps endpoints to requests and typed models, so the API surface reads in one place; how a call is
sent, classified and retried lives in transport.py (with the retry-policy table), how an answer is
streamed and a turn recovered without posting it twice in streaming.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .auth import AuthProvider
from .models import (
    Conversation,
    Event,
    FileRef,
    Message,
    MessageRef,
    Modal,
    ModalReceipt,
    Page,
    Response,
    StreamEvent,
    UploadedFile,
)
from .streaming import AnswerStreamer
from .transport import (
    DEFAULT_STREAM_TIMEOUT,
    DEFAULT_TIMEOUT,
    UNSENT_ONLY,
    AttemptFailed,
    OnRequest,
    Transport,
    Upload,
    page_params,
    seg,
)

log = logging.getLogger("bridge.moveworks")


def generation(base_url: str) -> str:
    """Which API generation a base URL speaks, by its path: "rest/v1" (current: chat input,
    forms, files), "assistant/v1" or "rest/v1beta1" (text input only)."""
    path = urlsplit(base_url).path.rstrip("/")
    for name in ("rest/v1beta1", "assistant/v1", "rest/v1"):
        if path.endswith("/" + name):
            return name
    return "rest/v1"  # an unknown prefix (a proxy): assume the current generation


def _input_body(
    text: str | None, callback_id: str | None, files: tuple[FileRef, ...] = (), *, shape: str = "rest/v1"
) -> dict[str, Any]:
    """The turn input in the shape of the base's generation: `{chat: {text, files}}` on /rest/v1
    (Moveworks' demo app), `{text}` before it. A button press is `{callback_id}` everywhere:
    /rest/v1 documents it among its input kinds, and `action`'s inner shape is not published."""
    if (text is None) == (callback_id is None):
        raise ValueError("give exactly one of text or callback_id")
    if text is not None:
        if not text.strip():
            raise ValueError("text must not be empty")
        if shape != "rest/v1":
            return {"input": {"text": text}}
        chat: dict[str, Any] = {"text": text}
        if files:
            chat["files"] = [
                {"file_id": f.file_id, **({"file_name": f.file_name} if f.file_name else {})} for f in files
            ]
        return {"input": {"chat": chat}}
    if not callback_id:
        raise ValueError("callback_id must not be empty")
    return {"input": {"callback_id": callback_id}}


def _items(data: Any, key: str, parse: Callable[[Any], Any], kind: str) -> tuple[Any, ...]:
    raw = data.get(key) if isinstance(data, dict) else None
    out = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(parse(item))
        except ValueError as exc:
            log.warning("moveworks: skipping malformed %s: %s", kind, exc)
    return tuple(out)


def _next_cursor(data: Any) -> str | None:
    meta = data.get("metadata") if isinstance(data, dict) else None
    cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


class MoveworksClient:
    def __init__(
        self,
        base_url: str,
        assistant_name: str,
        auth: AuthProvider,
        *,
        timeout: httpx.Timeout | None = None,
        stream_timeout: httpx.Timeout | None = None,
        max_retries: int = 3,
        poll_timeout: float = 150.0,
        poll_interval: float = 1.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        self._transport = Transport(
            base_url,
            assistant_name,
            auth,
            timeout=timeout,
            stream_timeout=stream_timeout,
            max_retries=max_retries,
            sleep=sleep,
            transport=transport,
            on_request=on_request,
        )
        self._answers = AnswerStreamer(self._transport, self, poll_timeout=poll_timeout, poll_interval=poll_interval)

    # settings live with the collaborator that uses them; these keep the public attributes
    @property
    def base_url(self) -> str:
        return self._transport.base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._transport.base_url = value

    @property
    def assistant_name(self) -> str:
        return self._transport.assistant_name

    @assistant_name.setter
    def assistant_name(self, value: str) -> None:
        self._transport.assistant_name = value

    @property
    def auth(self) -> AuthProvider:
        return self._transport.auth

    @auth.setter
    def auth(self, value: AuthProvider) -> None:
        self._transport.auth = value

    @property
    def max_retries(self) -> int:
        return self._transport.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        self._transport.max_retries = value

    @property
    def poll_timeout(self) -> float:
        return self._answers.poll_timeout

    @poll_timeout.setter
    def poll_timeout(self, value: float) -> None:
        self._answers.poll_timeout = value

    @property
    def poll_interval(self) -> float:
        return self._answers.poll_interval

    @poll_interval.setter
    def poll_interval(self, value: float) -> None:
        self._answers.poll_interval = value

    @property
    def generation(self) -> str:
        return generation(self.base_url)

    @property
    def has_forms(self) -> bool:
        """Forms (MODAL_ACTION), get-event and the Files API exist on /rest/v1 only."""
        return self.generation == "rest/v1"

    def files_url(self) -> str | None:
        """The alpha Files API (`/rest/v1alpha1/files` on the same host), on /rest/v1 bases."""
        if not self.has_forms:
            return None
        base = self.base_url.rstrip("/")
        return base[: -len("/rest/v1")] + "/rest/v1alpha1/files" if base.endswith("/rest/v1") else None

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> MoveworksClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"MoveworksClient(base_url={self.base_url!r}, assistant_name={self.assistant_name!r})"

    # ------------------------------------------------------------------ conversations
    async def create_conversation(self, identity: str | None, title: str | None = None) -> Conversation:
        body: dict[str, Any] = {"title": title} if title else {}
        data = await self._transport.call(
            "POST", "create_conversation", "/conversations", identity, body=body, policy=UNSENT_ONLY
        )
        return Conversation.from_json(data)

    async def get_conversation(self, identity: str | None, conversation_id: str) -> Conversation:
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}"
        return Conversation.from_json(await self._transport.call("GET", "get_conversation", path, identity))

    async def list_conversations(
        self, identity: str | None, *, cursor: str | None = None, limit: int = 20
    ) -> Page[Conversation]:
        params = page_params(cursor, limit)
        data = await self._transport.call("GET", "list_conversations", "/conversations", identity, params=params)
        return Page(_items(data, "conversations", Conversation.from_json, "conversation"), _next_cursor(data))

    # ------------------------------------------------------------------ responses
    async def create_response(
        self,
        identity: str | None,
        conversation_id: str,
        *,
        text: str | None = None,
        callback_id: str | None = None,
        files: tuple[FileRef, ...] = (),
    ) -> Response:
        """POST a turn (202, usually status CREATED). Never posts the same turn twice."""
        body = _input_body(text, callback_id, files, shape=self.generation)
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}/responses"
        http = self._transport
        since = datetime.now(UTC)
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            try:
                data = await http.once("POST", "create_response", path, identity, body=body)
                response = Response.from_json(data)
                self._answers.remember(response.response_id)
                return response
            except AttemptFailed as failure:
                if http.should_refresh(failure, refreshed):
                    refreshed = True
                    http.auth.invalidate(identity, failure.token or "")
                    attempt -= 1
                    continue
                if failure.sent:
                    if not http.ambiguous(failure):
                        raise failure.error from None
                    found = await self._answers.recover_turn(
                        identity, conversation_id, text, callback_id, since, failure, attempt
                    )
                    if found is not None:
                        return await self.get_response(identity, conversation_id, found)
                    continue
                await http.backoff_or_raise(failure, attempt, UNSENT_ONLY)

    async def get_response(self, identity: str | None, conversation_id: str, response_id: str) -> Response:
        path = (
            f"/conversations/{seg(conversation_id, 'conversation_id')}"
            f"/responses/{seg(response_id, 'response_id')}"
        )
        return Response.from_json(await self._transport.call("GET", "get_response", path, identity))

    async def wait_for_response(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> Response:
        """Poll GET response every `poll_interval` until COMPLETED/FAILED; StreamFailed after
        `poll_timeout`. Transient failures while polling are tolerated until the deadline."""
        async with aclosing(self._answers.poll(identity, conversation_id, response_id)) as responses:
            async for response in responses:
                if response.terminal:
                    return response
        raise AssertionError("unreachable")  # poll either yields a terminal response or raises

    def stream_response(
        self,
        identity: str | None,
        conversation_id: str,
        *,
        text: str | None = None,
        callback_id: str | None = None,
        files: tuple[FileRef, ...] = (),
    ) -> AsyncIterator[StreamEvent]:
        """POST a turn to the stream endpoint and yield typed events until a terminal one.

        Yields ResponseCreated, ResponseInProgress, OutputDelta (cumulative snapshots: replace the
        previous snapshot of the same output id), then exactly one of ResponseCompleted,
        ResponseFailed or StreamError. A stream that breaks after RESPONSE_CREATED is finished by
        polling; raises StreamFailed if the response does not finish within `poll_timeout`.
        Close the iterator (`aclose()` / `contextlib.aclosing`) if you stop early.
        """
        body = _input_body(text, callback_id, files, shape=self.generation)
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}/responses/stream"
        return self._answers.stream(identity, conversation_id, path, body, text, callback_id)

    # ------------------------------------------------------------------ messages, events, feedback
    async def list_conversation_messages(
        self, identity: str | None, conversation_id: str, *, cursor: str | None = None, limit: int = 20
    ) -> Page[Message]:
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}/messages"
        data = await self._transport.call(
            "GET", "list_conversation_messages", path, identity, params=page_params(cursor, limit)
        )
        return Page(_items(data, "messages", Message.from_json, "message"), _next_cursor(data))

    async def list_response_messages(
        self, identity: str | None, conversation_id: str, response_id: str
    ) -> list[Message]:
        path = (
            f"/conversations/{seg(conversation_id, 'conversation_id')}"
            f"/responses/{seg(response_id, 'response_id')}/messages"
        )
        data = await self._transport.call("GET", "list_response_messages", path, identity)
        return list(_items(data, "messages", Message.from_json, "message"))

    async def list_events(
        self,
        identity: str | None,
        conversation_id: str = "-",
        *,
        starting_after: str | None = None,
        ending_at: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Event]:
        params = page_params(cursor, limit)
        if starting_after:
            params["starting_after"] = starting_after
        if ending_at:
            params["ending_at"] = ending_at
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}/events"
        data = await self._transport.call("GET", "list_events", path, identity, params=params)
        return Page(_items(data, "events", Event.from_json, "event"), _next_cursor(data))

    async def get_event(self, identity: str | None, conversation_id: str, event_id: str) -> Event:
        """One event (`/rest/v1`); the conversation must own it, and `-` is refused."""
        path = f"/conversations/{seg(conversation_id, 'conversation_id')}/events/{seg(event_id, 'event_id')}"
        return Event.from_json(await self._transport.call("GET", "get_event", path, identity))

    # ------------------------------------------------------------------ forms and files (/rest/v1)
    @staticmethod
    def _modal_path(ref: MessageRef, modal_id: str) -> str:
        return (
            f"/conversations/{seg(ref.conversation_id, 'conversation_id')}"
            f"/responses/{seg(ref.response_id, 'response_id')}"
            f"/messages/{seg(ref.message_id, 'message_id')}/modals/{seg(modal_id, 'modal_id')}"
        )

    async def get_modal(self, identity: str | None, ref: MessageRef, modal_id: str) -> Modal:
        """The form a MODAL_ACTION opens. Modal ids are minted per read of the message: pass an
        id from a fresh read (a 404 also means forms are not enabled for the organisation)."""
        data = await self._transport.call("GET", "get_modal", self._modal_path(ref, modal_id), identity)
        return Modal.from_json(data, modal_id)

    async def refresh_modal(
        self, identity: str | None, ref: MessageRef, modal_id: str, values: dict[str, Any]
    ) -> Modal:
        """The form re-evaluated with every value entered so far (nothing is stored)."""
        path = self._modal_path(ref, modal_id) + "/refresh"
        data = await self._transport.call("POST", "refresh_modal", path, identity, body={"values": values})
        return Modal.from_json(data, modal_id)

    async def submit_modal(
        self, identity: str | None, ref: MessageRef, modal_id: str, values: dict[str, Any]
    ) -> ModalReceipt:
        """Submit the form; the reply is only an acknowledgement. Not retried once sent."""
        path = self._modal_path(ref, modal_id) + "/submit"
        data = await self._transport.call(
            "POST", "submit_modal", path, identity, body={"values": values}, policy=UNSENT_ONLY
        )
        data = data if isinstance(data, dict) else {}
        receipt = data.get("receipt_text")
        return ModalReceipt(str(data.get("status") or "SUBMITTED"), receipt if isinstance(receipt, str) else "")

    async def upload_file(
        self, identity: str | None, name: str, content: bytes, content_type: str, *, purpose: str
    ) -> UploadedFile:
        """Upload one file to the alpha Files API (multipart, `purpose` before `file`); the id is
        valid for 24 h and only passed to other calls."""
        url = self.files_url()
        if url is None:
            raise ValueError("the Files API needs a /rest/v1 base URL")
        upload = Upload({"purpose": purpose}, (name, content, content_type))
        data = await self._transport.call("POST", "upload_file", url, identity, upload=upload)
        data = data if isinstance(data, dict) else {}
        file_id = data.get("id") or data.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise ValueError("the Files API answered without a file id")
        expire = data.get("expire_time")
        return UploadedFile(file_id, name, expire if isinstance(expire, str) else None)

    async def submit_feedback(
        self,
        identity: str | None,
        conversation_id: str,
        response_id: str,
        message_id: str,
        callback_id: str,
        additional_feedback: str | None = None,
    ) -> None:
        if not callback_id:
            raise ValueError("callback_id must not be empty")
        body: dict[str, Any] = {"callback_id": callback_id}
        if additional_feedback:
            body["additional_feedback"] = additional_feedback
        path = (
            f"/conversations/{seg(conversation_id, 'conversation_id')}"
            f"/responses/{seg(response_id, 'response_id')}"
            f"/messages/{seg(message_id, 'message_id')}/feedback"
        )
        await self._transport.call("POST", "submit_feedback", path, identity, body=body, policy=UNSENT_ONLY)


__all__ = ["MoveworksClient", "DEFAULT_TIMEOUT", "DEFAULT_STREAM_TIMEOUT"]
