"""The 11 G1 Conversations API endpoints, plus `GET /auth/test`, and what only `/rest/v1` has:
get-event, the modal (native form) endpoints and the richer turn input; the alpha Files API
(`POST /rest/v1alpha1/files`) is in files.py.

Handlers assume the server middleware already authenticated the caller (`request[IDENTITY]`)
and applied request-level faults; they only look at that identity's state, so foreign ids 404.
Each handler is tagged with the fault-endpoint name it answers to (`@endpoint("stream")`).
Everything that returns messages goes through `views.render`, which shapes them for the base
they are read from (and mints fresh modal ids on `/rest/v1`).

Turn input (`input`), per base:
- `/rest/v1beta1`: `{text}` only.
- `/assistant/v1`: `{text}` or `{callback_id}`.
- `/rest/v1`: exactly one of `chat: {text, files?: [{file_id, file_name?}]}`, `action: {callback_id}`,
  `text`, `callback_id`; none or several is 400 INVALID_INPUT, and so is an unknown or expired
  `file_id` (ids come from the Files API). Chat files ride on the user's message as
  `plain_text.files: [{file_id, file_name}]`, and the answer starts "I received <names>."
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import engine, files, modals
from .errors import ApiError, bad_input, not_found
from .pagination import page_error, paginate
from .state import CallbackRef, ModalRef, UserState
from .taps import Sent
from .views import is_v1, render

if TYPE_CHECKING:
    from .server import Simulator

PREFIXES = ("/rest/v1beta1", "/assistant/v1", "/rest/v1")
MAX_TITLE = 256
IDENTITY = web.RequestKey("identity", str)  # set by the server middleware
V1 = "/rest/v1"
V1_INPUTS = ("chat", "action", "text", "callback_id")
MODAL_NOT_FOUND = "Modal not found (modal ids are minted per read of the message: read it again for a fresh one)"


def endpoint(name: str):
    """Tag a handler with its endpoint name (used for auth and fault matching)."""

    def deco(fn):
        fn.endpoint = name
        return fn

    return deco


async def json_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and allow_empty:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_input("Request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise bad_input("Request body must be a JSON object")
    return data


def _title(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_input("title must be a non-empty string")
    if len(value) > MAX_TITLE:
        raise bad_input(f"title must be at most {MAX_TITLE} characters")
    return value


@dataclass
class TurnInput:
    question: str | None = None
    callback: tuple[str, CallbackRef] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)


class ConversationsApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self, prefix: str) -> list[web.RouteDef]:
        c = prefix + "/conversations"
        return [
            web.get(prefix + "/auth/test", self.auth_test),
            web.get(c, self.list_conversations),
            web.post(c, self.create_conversation),
            web.get(c + "/{cid}", self.get_conversation),
            web.patch(c + "/{cid}", self.update_conversation),
            web.get(c + "/{cid}/events", self.list_events),
            web.post(c + "/{cid}/responses", self.create_response),
            web.post(c + "/{cid}/responses/stream", self.create_response_stream),
            web.get(c + "/{cid}/responses/{rid}", self.get_response),
            web.get(c + "/{cid}/messages", self.list_messages),
            web.get(c + "/{cid}/responses/{rid}/messages", self.list_response_messages),
            web.post(c + "/{cid}/responses/{rid}/messages/{mid}/feedback", self.submit_feedback),
        ] + (self.v1_routes(c) if prefix == V1 else [])

    def v1_routes(self, c: str) -> list[web.RouteDef]:
        m = c + "/{cid}/responses/{rid}/messages/{mid}/modals/{modal_id}"
        return [
            web.get(c + "/{cid}/events/{eid}", self.get_event),
            web.get(m, self.get_modal),
            web.post(m + "/refresh", self.refresh_modal),
            web.post(m + "/submit", self.submit_modal),
        ]

    def files_routes(self) -> list[web.RouteDef]:
        return [web.post(files.PATH, self.upload_file)]

    # -- helpers -----------------------------------------------------------------------------
    def _user(self, request: web.Request) -> UserState:
        return self.sim.state.user(request[IDENTITY])

    def _conversation(self, request: web.Request) -> dict[str, Any]:
        conv = self._user(request).conversations.get(request.match_info["cid"])
        if conv is None:
            raise not_found("Conversation")
        return conv

    def _response(self, request: web.Request) -> dict[str, Any]:
        conv = self._conversation(request)
        resp = self._user(request).responses.get(request.match_info["rid"])
        if resp is None or resp["conversation_id"] != conv["conversation_id"]:
            raise not_found("Response")
        return resp

    def _out(self, request: web.Request, payload: Any, status: int = 200) -> web.Response:
        """A JSON answer whose messages are shaped for the request's base (views.py)."""
        return web.json_response(render(self.sim.state, payload, v1=is_v1(request.path)), status=status)

    def _callback(self, request: web.Request, callback_id: Any, conversation_id: str) -> tuple[str, CallbackRef]:
        ref = self.sim.state.callbacks.get(callback_id) if isinstance(callback_id, str) else None
        if (
            ref is None
            or ref.kind != "action"
            or ref.identity != request[IDENTITY]
            or ref.conversation_id != conversation_id
        ):
            raise bad_input("Unknown callback_id")
        return callback_id, ref

    def _input(self, request: web.Request, body: dict[str, Any], conversation_id: str) -> TurnInput:
        """The turn input, with the shapes of the request's base (see the module docstring)."""
        inp = body.get("input")
        if not isinstance(inp, dict):
            raise bad_input("input is required")
        if request.path.startswith(V1 + "/"):
            return self._v1_input(request, inp, conversation_id)
        text, callback_id = inp.get("text"), inp.get("callback_id")
        if request.path.startswith("/rest/v1beta1/") and callback_id is not None:
            raise bad_input("input.text is required (this API version takes text input only)")
        if text is not None and callback_id is not None:
            raise bad_input("input must have exactly one of text or callback_id")
        if callback_id is not None:
            return TurnInput(callback=self._callback(request, callback_id, conversation_id))
        if not isinstance(text, str) or not text.strip():
            raise bad_input("input.text is required and must not be empty")
        return TurnInput(question=text)

    def _v1_input(self, request: web.Request, inp: dict[str, Any], conversation_id: str) -> TurnInput:
        given = [k for k in V1_INPUTS if inp.get(k) is not None]
        if len(given) != 1:
            raise bad_input("input must have exactly one of chat, action, text or callback_id")
        kind = given[0]
        if kind == "action":
            action = inp["action"]
            if not isinstance(action, dict) or not isinstance(action.get("callback_id"), str):
                raise bad_input("input.action.callback_id is required")
            return TurnInput(callback=self._callback(request, action["callback_id"], conversation_id))
        if kind == "callback_id":
            return TurnInput(callback=self._callback(request, inp["callback_id"], conversation_id))
        if kind == "text":
            text = inp["text"]
            if not isinstance(text, str) or not text.strip():
                raise bad_input("input.text is required and must not be empty")
            return TurnInput(question=text)
        chat = inp["chat"]
        if not isinstance(chat, dict):
            raise bad_input("input.chat must be an object")
        attached = self._chat_files(request, chat.get("files"))
        text = chat.get("text")
        if text is None and attached:
            text = ""
        if not isinstance(text, str) or (not text.strip() and not attached):
            raise bad_input("input.chat.text is required and must not be empty")
        return TurnInput(question=text, files=attached)

    def _chat_files(self, request: web.Request, raw: Any) -> list[dict[str, Any]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise bad_input("input.chat.files must be a list")
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
                raise bad_input(f"input.chat.files[{i}].file_id is required")
            name = item.get("file_name")
            if name is not None and not isinstance(name, str):
                raise bad_input(f"input.chat.files[{i}].file_name must be a string")
            stored = files.lookup(self.sim, request[IDENTITY], item["file_id"])
            if stored is None:
                raise bad_input(f"Unknown or expired file_id '{item['file_id']}'")
            out.append({"file_id": item["file_id"], "file_name": name or stored["file_name"]})
        return out

    # -- conversations -----------------------------------------------------------------------
    @endpoint("auth_test")
    async def auth_test(self, request: web.Request) -> web.Response:
        return web.json_response({"Message": f"Authenticated as {request[IDENTITY]}"})

    @endpoint("list_conversations")
    async def list_conversations(self, request: web.Request) -> web.Response:
        raw = request.query.get("archived", "false").lower()
        if raw not in ("true", "false", "1", "0"):
            raise page_error("archived must be true or false")
        archived = raw in ("true", "1")
        convs = [c for c in self._user(request).conversations.values() if bool(c.get("archived")) == archived]
        convs.sort(key=lambda c: (c["updated_at"], c["conversation_id"]), reverse=True)
        page, nxt = paginate(request, f"conversations:{archived}", convs)
        return web.json_response({"conversations": page, "metadata": {"next_cursor": nxt}})

    @endpoint("create_conversation")
    async def create_conversation(self, request: web.Request) -> web.Response:
        body = await json_body(request, allow_empty=True)
        title = body.get("title")
        if title is not None:
            title = _title(title)
        conv = self.sim.state.new_conversation(request[IDENTITY], title)
        return web.json_response(conv, status=201)

    @endpoint("get_conversation")
    async def get_conversation(self, request: web.Request) -> web.Response:
        return web.json_response(self._conversation(request))

    @endpoint("update_conversation")
    async def update_conversation(self, request: web.Request) -> web.Response:
        conv = self._conversation(request)
        body = await json_body(request, allow_empty=True)
        title = _title(body["title"]) if body.get("title") is not None else None
        archived = body.get("archived")
        if archived is not None and not isinstance(archived, bool):
            raise bad_input("archived must be a boolean")
        if title is not None:
            conv["title"] = title
        if archived is not None:
            conv["archived"] = archived
        if title is not None or archived is not None:
            self.sim.state.touch(request[IDENTITY], conv["conversation_id"])
        return web.json_response(conv)

    # -- events --------------------------------------------------------------------------------
    @endpoint("events")
    async def list_events(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        user = self._user(request)
        if cid != "-" and cid not in user.conversations:
            raise not_found("Conversation")
        q = request.query
        after = q.get("starting_after") or q.get("start_event_id")
        until = q.get("ending_at") or q.get("last_event_id")
        if after and until and until <= after:
            raise bad_input("ending_at must be greater than starting_after")
        events = [
            e
            for e in user.events
            if (cid == "-" or e["conversation_id"] == cid)
            and (not after or e["event_id"] > after)
            and (not until or e["event_id"] <= until)
        ]
        page, nxt = paginate(
            request, f"events:{cid}", events, id_key="event_id", after=lambda e, a: e["event_id"] > a
        )
        return self._out(request, {"events": page, "metadata": {"next_cursor": nxt}})

    @endpoint("get_event")
    async def get_event(self, request: web.Request) -> web.Response:
        if request.match_info["cid"] == "-":
            raise bad_input("conversation_id '-' is not accepted here: name the event's conversation")
        conv = self._conversation(request)
        eid = request.match_info["eid"]
        event = next((e for e in self._user(request).events if e["event_id"] == eid), None)
        if event is None or event["conversation_id"] != conv["conversation_id"]:
            raise not_found("Event")
        return self._out(request, event)

    # -- responses ----------------------------------------------------------------------------
    async def _start(self, request: web.Request, fault_endpoint: str) -> engine.Run:
        conv = self._conversation(request)
        body = await json_body(request)
        turn = self._input(request, body, conv["conversation_id"])
        run = engine.start(self.sim, request[IDENTITY], conv["conversation_id"], question=turn.question,
                           callback=turn.callback, files=turn.files, v1=request.path.startswith(V1 + "/"))
        faults = self.sim.faults
        if faults.take(fault_endpoint, ("response_failed",)):
            run.fail = True
        slow = faults.take(fault_endpoint, ("slow",))
        if slow:
            run.slow = float(slow.delay or 0)
        return run

    @endpoint("create_response")
    async def create_response(self, request: web.Request) -> web.Response:
        run = await self._start(request, "create_response")
        engine.launch(self.sim, run)
        if run.plan.empty and run.task is not None:  # live-agent turn: already COMPLETED, no outputs
            await asyncio.shield(run.task)
        return self._out(request, run.response, status=202)

    @endpoint("stream")
    async def create_response_stream(self, request: web.Request) -> web.StreamResponse:
        self._conversation(request)  # 404 before 400
        if "text/event-stream" not in request.headers.get("Accept", ""):
            raise bad_input("Accept: text/event-stream is required")
        run = await self._start(request, "stream")
        faults = self.sim.faults
        cut = faults.take("stream", ("stream_cut",)) is not None
        stall = faults.take("stream", ("stall",)) is not None
        run.stream_error = faults.take("stream", ("stream_error",)) is not None
        queue = run.subscribe()
        engine.launch(self.sim, run)
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        await resp.prepare(request)
        seq = 0
        v1 = is_v1(request.path)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=self.sim.config.ping_interval)
                except TimeoutError:
                    await resp.write(b": ping\n\n")
                    continue
                if item is engine.END:
                    break
                event_type, data = item
                if event_type != "ERROR":
                    seq += 1
                    rest = {k: v for k, v in data.items() if k != "event_type"}
                    data = {"event_type": event_type, "sequence_number": seq, **rest}
                payload = json.dumps(render(self.sim.state, data, v1=v1), ensure_ascii=False)
                await resp.write(f"event: {event_type}\ndata: {payload}\n\n".encode())
                if self.sim.taps:
                    self.sim.sent(Sent(request.method, request.path, 200, "text/event-stream",
                                       event=event_type, data=json.loads(payload)))
                if stall and event_type == "RESPONSE_CREATED":
                    while True:  # keep-alives only, until the client gives up
                        await asyncio.sleep(self.sim.config.ping_interval)
                        await resp.write(b": ping\n\n")
                if event_type == "RESPONSE_IN_PROGRESS":
                    await resp.write(b": ping\n\n")
                if (cut and event_type == "RESPONSE_CREATED") or event_type in (
                    "RESPONSE_COMPLETED",
                    "RESPONSE_FAILED",
                    "ERROR",
                ):
                    break
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            # The client went away (the bridge closed the stream: a Stop); the run keeps going
            # server-side. When it was noticed, for benchmarks: `timings[response_id]["disconnected"]`.
            self.sim.timeline(run.response["response_id"], run.question).setdefault("disconnected", time.monotonic())
        finally:
            run.unsubscribe(queue)
        return resp

    @endpoint("get_response")
    async def get_response(self, request: web.Request) -> web.Response:
        return self._out(request, self._response(request))

    # -- messages -------------------------------------------------------------------------------
    @endpoint("messages")
    async def list_messages(self, request: web.Request) -> web.Response:
        conv = self._conversation(request)
        msgs = sorted(
            self._user(request).conversation_messages(conv["conversation_id"]),
            key=lambda m: m["message_id"],
            reverse=True,
        )
        page, nxt = paginate(
            request,
            f"messages:{conv['conversation_id']}",
            msgs,
            id_key="message_id",
            after=lambda m, a: m["message_id"] < a,
        )
        return self._out(request, {"messages": page, "metadata": {"next_cursor": nxt}})

    @endpoint("response_messages")
    async def list_response_messages(self, request: web.Request) -> web.Response:
        resp = self._response(request)
        msgs = sorted(self._user(request).response_messages(resp["response_id"]), key=lambda m: m["message_id"])
        return self._out(request, {"messages": msgs})

    @endpoint("feedback")
    async def submit_feedback(self, request: web.Request) -> web.Response:
        resp = self._response(request)
        mid = request.match_info["mid"]
        msg = self._user(request).messages.get(mid)
        if msg is None or msg["response_id"] != resp["response_id"]:
            raise not_found("Message")
        try:
            body = await json_body(request)
        except ApiError as exc:  # the spec's only 400 body here is INVALID_REQUEST
            raise ApiError(400, "INVALID_REQUEST", exc.message) from None
        cb = body.get("callback_id")
        ref: CallbackRef | None = self.sim.state.callbacks.get(cb) if isinstance(cb, str) else None
        if (ref is None or ref.message_id != mid or ref.kind not in ("helpful", "unhelpful")
                or ref.identity != request[IDENTITY]):
            raise ApiError(400, "INVALID_REQUEST", "callback_id is not a feedback option of this message")
        extra = body.get("additional_feedback")
        if extra is not None and not isinstance(extra, str):
            raise ApiError(400, "INVALID_REQUEST", "additional_feedback must be a string")
        self.sim.state.feedback.append(
            {
                "identity": request[IDENTITY],
                "conversation_id": msg["conversation_id"],
                "response_id": msg["response_id"],
                "message_id": mid,
                "callback_id": cb,
                "rating": ref.kind,
                "additional_feedback": extra,
                "t": time.time(),
            }
        )
        return web.json_response({"status": "SUBMITTED"})

    # -- modals (/rest/v1) ----------------------------------------------------------------------
    def _modal(self, request: web.Request) -> ModalRef:
        resp = self._response(request)
        mid = request.match_info["mid"]
        msg = self._user(request).messages.get(mid)
        if msg is None or msg["response_id"] != resp["response_id"]:
            raise not_found("Message")
        ref = self.sim.state.modals.get(request.match_info["modal_id"])
        if ref is None or ref.message_id != mid or ref.identity != request[IDENTITY]:
            raise ApiError(404, "NOT_FOUND", MODAL_NOT_FOUND)
        return ref

    async def _modal_call(self, request: web.Request, op: str) -> web.Response:
        """GET / refresh / submit, each recorded in `state.modal_calls` (also when refused)."""
        info = request.match_info
        where = (info["cid"], info["rid"], info["mid"])
        body: Any = None
        state, identity, modal_id = self.sim.state, request[IDENTITY], info["modal_id"]
        kept: dict[str, Any] | None = None
        try:
            if op != "get":
                raw = await request.read()
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            ref = self._modal(request)
            if op != "get" and not isinstance(body, dict):
                raise bad_input("Request body must be a JSON object")
            if op == "submit" and state.modal_failures:
                raise bad_input(state.modal_failures.pop(0))
            values = modals.values_of(body) if op != "get" else {}
            fields = modals.form(ref.form, ref.identity, ref.context, values)

            def lookup(file_id: str) -> Any:
                return files.lookup(self.sim, identity, file_id)

            if op == "submit":
                kept = modals.check_values(fields, values, lookup, submit=True)
                result: dict[str, Any] = {"status": "SUBMITTED", "receipt_text": modals.RECEIPT}
                self._file_ticket(identity, ref, kept)
            else:
                if op == "refresh":
                    modals.check_values(fields, values, lookup, submit=False)
                    fields = modals.without_options(fields)
                result = {"modal_id": modal_id, "title": modals.FORM_TITLE, "fields": fields}
        except ApiError as exc:
            state.modal_calls.append(modals.record(identity, op, where, modal_id, body, exc.status, exc.message))
            raise
        state.modal_calls.append(modals.record(identity, op, where, modal_id, body, 200, kept=kept))
        return web.json_response(result)

    def _file_ticket(self, identity: str, ref: ModalRef, kept: dict[str, Any]) -> None:
        summary = (kept.get("summary") or {}).get("text") or str(ref.context.get("question") or "IT issue")
        ticket = self.sim.state.ticket_number()
        text = f"I filed {ticket}: {summary}. You'll get updates here."

        async def later() -> None:
            await asyncio.sleep(max(0.0, float(self.sim.config.modal_submit_delay)))
            if ref.conversation_id in self.sim.state.user(identity).conversations:
                self.sim.inject_event(identity, text, conversation_id=ref.conversation_id,
                                      content_type="MARKDOWN_TEXT")

        self.sim.spawn(later())

    @endpoint("modal_get")
    async def get_modal(self, request: web.Request) -> web.Response:
        return await self._modal_call(request, "get")

    @endpoint("modal_refresh")
    async def refresh_modal(self, request: web.Request) -> web.Response:
        return await self._modal_call(request, "refresh")

    @endpoint("modal_submit")
    async def submit_modal(self, request: web.Request) -> web.Response:
        return await self._modal_call(request, "submit")

    # -- files (alpha) ------------------------------------------------------------------------------
    @endpoint("files")
    async def upload_file(self, request: web.Request) -> web.Response:
        return await files.upload(self.sim, request, request[IDENTITY])
