"""The current Moveworks generation (`/rest/v1`) through the core, over loopback with the real
simulator: the request shape per base, forms (open, refresh, check, submit), the get-help menu,
live-agent hand-offs and attachments. Platform rendering is tested per adapter."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bridge import texts
from bridge.answers.attachments import Attachments
from bridge.answers.relay import Relay
from bridge.errors import AttachmentRefused, AttachmentTooLarge
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Answer, Attachment, Capabilities, ChatUser, Inbound, ThreadKey
from bridge.moveworks import ApiKeyAuth, MoveworksClient
from bridge.store import Store
from tests.spine_fakes import RecordingAdapter

ASSISTANT = "moveworks-bridge-dev"
CAPS = Capabilities(max_text_len=4000, min_edit_interval=0.02, write_budget=None)
THREAD = ThreadKey("rec", "W1", "C1", "100.1")
ANN = ChatUser("rec", "W1", "U_ANN", name="Ann")
BOB = ChatUser("rec", "W1", "U_BOB", name="Bob")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
_ids = iter(range(1, 10_000))


class Recorder(httpx.AsyncBaseTransport):
    """The real HTTP transport, keeping each request's path and JSON body."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body: Any = None
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(await request.aread() or b"null")
        self.sent.append((request.url.path, body))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FileAdapter(RecordingAdapter):
    """The recording platform, with files it can hand over (a test's attachments)."""

    shows_forms = True
    accepts_files = True

    def __init__(self, budgets: Budgets, files: dict[str, bytes]) -> None:
        super().__init__(budgets, CAPS)
        self.files = files

    async def download(self, attachment: Attachment, limit: int) -> bytes:
        content = self.files.get(attachment.source.get("key", ""))
        if content is None:
            raise AttachmentRefused("no such file")
        if len(content) > limit:
            raise AttachmentTooLarge("too large")
        return content


async def _no_sleep(_seconds: float) -> None:
    return None


def _client(sim: Any, base: str, transport: httpx.AsyncBaseTransport | None = None) -> MoveworksClient:
    return MoveworksClient(f"{sim.url}{base}", ASSISTANT, ApiKeyAuth("sim-key"), sleep=_no_sleep,
                           poll_interval=0.01, transport=transport)


@pytest.fixture
async def v1(sim):
    client = _client(sim, "/rest/v1")
    yield client
    await client.aclose()


def build(client: MoveworksClient, files: dict[str, bytes] | None = None) -> tuple[Relay, FileAdapter]:
    budgets = Budgets()
    attachments = Attachments(client, enabled=True, max_mb=1, purpose="CONVERSATION_INPUT")
    relay = Relay(store=Store(":memory:"), client=client, per_employee=False, budgets=budgets,
                  attachments=attachments)
    adapter = FileAdapter(budgets, files or {})
    relay.register(adapter)
    return relay, adapter


def ask(text: str, user: ChatUser = ANN, **kw: Any) -> Inbound:
    return Inbound(dedupe_id=f"d{next(_ids)}", thread=THREAD, user=user, text=text, **kw)


def final(adapter: FileAdapter) -> Answer:
    answer = list(adapter.thread(THREAD).messages.values())[-1].answer
    assert answer is not None
    return answer


def shown(adapter: FileAdapter) -> str:
    return adapter.thread(THREAD).visible()


async def sim_get(sim: Any, path: str) -> Any:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{sim.url}{path}")).json()


async def settled(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# --- request shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "shape"), [
    ("/rest/v1", {"chat": {"text": "How do I reset my password?"}}),
    ("/assistant/v1", {"text": "How do I reset my password?"}),
    ("/rest/v1beta1", {"text": "How do I reset my password?"}),
])
async def test_each_base_gets_the_input_shape_of_its_generation(sim, base, shape):
    recorder = Recorder()
    client = _client(sim, base, recorder)
    try:
        relay, adapter = build(client)
        await relay.handle(ask("How do I reset my password?"))
    finally:
        await client.aclose()
    assert "reset your password" in shown(adapter)
    [body] = [b for path, b in recorder.sent if path.endswith("/responses/stream")]
    assert body == {"input": shape}


async def test_a_button_press_is_sent_as_a_callback_id_on_rest_v1(sim):
    recorder = Recorder()
    client = _client(sim, "/rest/v1", recorder)
    try:
        relay, adapter = build(client)
        await relay.handle(ask("file a ticket"))
        [press] = [a for a in final(adapter).actions if a.callback_id]
        await relay.handle(ask(press.label, callback_id=press.callback_id,
                               callback_conversation_id=final(adapter).conversation_id))
    finally:
        await client.aclose()
    bodies = [b for path, b in recorder.sent if path.endswith("/responses/stream")]
    assert bodies[-1] == {"input": {"callback_id": press.callback_id}}


# --- forms -------------------------------------------------------------------------------------


async def _ticket_form(relay: Relay, adapter: FileAdapter, user: ChatUser = ANN):
    await relay.handle(ask("my laptop is broken, file a ticket"))
    [action] = [a for a in final(adapter).actions if a.opens_form]
    assert action.ref is not None and action.label == "Edit/Add details"
    return await relay.forms.open(user, action.ref, action.where)


async def test_the_form_opens_freshly_for_the_asker_with_every_field_type(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter)
    assert step.notice is None and step.form is not None and step.session
    types = {f.type for f in step.form.fields}
    assert {"TEXT", "DATE", "DATETIME", "BOOLEAN", "CHOICE", "FILE", "DISPLAY"} <= types
    assert all("<" not in f.display_text for f in step.form.fields)  # HTML became Markdown
    systems = next(f for f in step.form.fields if f.name == "systems")
    assert not systems.visible  # shown only for access requests


async def test_someone_else_cannot_open_the_askers_form(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter, user=BOB)
    assert step.form is None and step.notice == texts.FORM_NOT_OWNER
    calls = (await sim_get(sim, "/_sim/modals"))["calls"]
    assert calls == []  # Moveworks was not even asked


async def test_missing_and_malformed_fields_are_marked_without_calling_moveworks(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter)
    refused = await relay.forms.submit(ANN, step.session, {"needed_by": "next tuesday"})
    assert refused.form is not None and not refused.done
    assert refused.errors["summary"] == texts.FORM_REQUIRED
    assert refused.errors["category"] == texts.FORM_REQUIRED
    assert refused.errors["needed_by"] == texts.FORM_BAD_DATE
    calls = (await sim_get(sim, "/_sim/modals"))["calls"]
    assert [c["op"] for c in calls] == ["get"]


async def test_a_refresh_shows_the_dependent_field_and_keeps_what_was_typed(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter)
    refreshed = await relay.forms.refresh(ANN, step.session, {"summary": "Laptop fan", "category": "access"})
    assert refreshed.form is not None
    fields = {f.name: f for f in refreshed.form.fields}
    assert fields["systems"].visible
    assert fields["summary"].prefill == "Laptop fan"
    assert fields["category"].prefill == ["access"]
    assert [o.value for o in fields["category"].options] == ["hardware", "software", "access"]


async def test_submit_sends_the_documented_values_and_posts_the_receipt(sim, v1):
    relay, adapter = build(v1, files={"shot": PNG})
    step = await _ticket_form(relay, adapter)
    done = await relay.forms.submit(ANN, step.session, {
        "summary": "Laptop fan is loud",
        "description": "Since Monday.\nEvery afternoon.",
        "category": "hardware",
        "needed_by": "2026-12-24",
        "callback_at": "2026-12-02T09:30:00+01:00",
        "urgent": True,
        "location": "Building 7",
        "screenshot": [Attachment("fan.png", "image/png", len(PNG), {"key": "shot"})],
    })
    assert done.done and done.notice is None
    [submit] = [c for c in (await sim_get(sim, "/_sim/modals"))["calls"] if c["op"] == "submit"]
    [upload] = (await sim_get(sim, "/_sim/files"))["files"]
    assert submit["status"] == 200
    assert submit["values"] == {
        "summary": {"text": "Laptop fan is loud"},
        "description": {"text": "Since Monday.\nEvery afternoon."},
        "category": {"option": "hardware"},
        "needed_by": {"date": "2026-12-24"},
        "callback_at": {"datetime": "2026-12-02T09:30:00+01:00"},
        "urgent": {"bool": True},
        "location": {"option": "Building 7"},
        "screenshot": {"file_id": upload["id"]},
        "requester": {"text": "employee@example.com"},
    }
    await settled(lambda: "✓" in shown(adapter))
    assert texts.NO_ANSWER not in shown(adapter)


async def test_moveworks_refusing_a_field_puts_its_message_on_that_field(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter)
    async with httpx.AsyncClient() as http:
        await http.post(f"{sim.url}/_sim/modal-failures", json={"message": "Field 'summary' is too vague"})
    refused = await relay.forms.submit(ANN, step.session, {"summary": "it", "category": "software"})
    assert refused.errors == {"summary": "Field 'summary' is too vague"}
    fields = {f.name: f for f in refused.form.fields} if refused.form else {}
    assert fields["summary"].prefill == "it"  # nothing typed is lost
    again = await relay.forms.submit(ANN, step.session, {"summary": "Teams crashes", "category": "software"})
    assert again.done


async def test_a_stale_modal_id_is_replaced_by_rereading_the_message(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter)
    for _ in range(6):  # later reads mint new ids; the simulator keeps the last five
        await v1.list_conversation_messages(None, final(adapter).conversation_id or "")
    done = await relay.forms.submit(ANN, step.session, {"summary": "Monitor flickers", "category": "hardware"})
    assert done.done
    ops = [(c["op"], c["status"]) for c in (await sim_get(sim, "/_sim/modals"))["calls"]]
    assert ops[-2:] == [("submit", 404), ("submit", 200)]


async def test_forms_expire_and_sessions_belong_to_their_person(sim, v1):
    relay, adapter = build(v1)
    step = await _ticket_form(relay, adapter)
    assert (await relay.forms.submit(BOB, step.session, {"summary": "x"})).notice == texts.FORM_NOT_OWNER
    assert (await relay.forms.submit(ANN, "no-such-session", {})).notice == texts.FORM_GONE


# --- get-help menu -----------------------------------------------------------------------------


async def test_the_get_help_menu_arrives_and_a_text_item_posts_its_text(sim, v1):
    relay, adapter = build(v1)
    await relay.handle(ask("get help"))
    menu = final(adapter).help_menu
    assert [c.name for c in menu][:1] == ["💻 IT"] or menu[0].name.endswith("IT")
    text_item = next(i for c in menu for i in c.items if i.type == "TEXT")
    where = next(f"h{c}.{i}" for c, cat in enumerate(menu) for i, it in enumerate(cat.items) if it is text_item)
    ref = final(adapter).help_menu[0].items[0].action.ref  # type: ignore[union-attr]
    assert ref is not None
    assert await relay.forms.choose(ANN, THREAD, {}, ref, where) is None
    await settled(lambda: text_item.text.split()[0] in list(adapter.thread(THREAD).messages.values())[-1].text)
    assert await relay.forms.choose(BOB, THREAD, {}, ref, where) == texts.HELP_NOT_OWNER


async def test_a_form_item_of_the_menu_opens_the_form(sim, v1):
    relay, adapter = build(v1)
    await relay.handle(ask("get help"))
    item = next(i for c in final(adapter).help_menu for i in c.items if i.action and i.action.opens_form)
    assert item.action is not None and item.action.ref is not None
    step = await relay.forms.open(ANN, item.action.ref, item.action.where)
    assert step.form is not None and any(f.name == "summary" for f in step.form.fields)


# --- live agents -------------------------------------------------------------------------------


async def test_a_live_agent_hand_off_never_says_there_is_no_answer(sim, v1):
    relay, adapter = build(v1)
    async with httpx.AsyncClient() as http:
        await http.post(f"{sim.url}/_sim/config", json={"live_agent_delay": None})
    await relay.handle(ask("I want to talk to an agent"))
    await relay.handle(ask("My VPN drops every hour"))
    await relay.handle(ask("Are you there?"))
    visible = shown(adapter)
    assert texts.NO_ANSWER not in visible
    assert visible.count(texts.LIVE_CONNECTING) == 1  # said once, then quietly
    assert texts.LIVE_SENT_ANON in visible


async def test_once_the_agent_spoke_turns_say_they_went_to_the_agent(sim, v1):
    relay, adapter = build(v1)
    async with httpx.AsyncClient() as http:
        await http.post(f"{sim.url}/_sim/config", json={"live_agent_delay": None})
        await relay.handle(ask("talk to an agent"))
        conversation_id = final(adapter).conversation_id
        await http.post(f"{sim.url}/_sim/live-agent", json={
            "identity": "employee@example.com", "conversation_id": conversation_id,
            "text": "Hi, Dana here.", "display_name": "Dana Fielding"})
    # the poller delivers the agent's message (see the platform tests); the relay finds it in
    # the conversation's history when this process did not
    await relay.handle(ask("Thanks Dana"))
    assert texts.LIVE_SENT.format(name="Dana Fielding") in shown(adapter)


async def test_ending_the_live_chat_shows_the_farewell_filed_under_an_earlier_response(sim, v1):
    relay, adapter = build(v1)
    async with httpx.AsyncClient() as http:
        await http.post(f"{sim.url}/_sim/config", json={"live_agent_delay": None})
    await relay.handle(ask("talk to an agent"))
    end = next(a for a in final(adapter).actions if a.callback_id and "end" in a.label.lower())
    await relay.handle(ask(end.label, callback_id=end.callback_id,
                           callback_conversation_id=final(adapter).conversation_id))
    assert "ended your live agent chat" in final(adapter).text
    assert texts.LIVE_CONNECTING not in final(adapter).text


# --- attachments -------------------------------------------------------------------------------


async def test_an_attachment_is_uploaded_and_sent_with_the_question(sim, v1):
    relay, adapter = build(v1, files={"k1": PNG})
    shot = Attachment("vpn-error.png", "image/png", len(PNG), {"key": "k1"})
    await relay.handle(ask("My VPN shows this error", files=(shot,)))
    [upload] = (await sim_get(sim, "/_sim/files"))["files"]
    assert upload["status"] == 201 and upload["parts"][-1] == "file" and upload["purpose"] == "CONVERSATION_INPUT"
    assert "vpn-error.png" in shown(adapter)  # the simulator's answer names what it received


async def test_files_that_cannot_go_are_named_and_the_question_still_asked(sim, v1):
    relay, adapter = build(v1, files={"big": b"x" * (2 * 1024 * 1024), "exe": b"MZ"})
    await relay.handle(ask("Why is my laptop slow?", files=(
        Attachment("dump.txt", "text/plain", None, {"key": "big"}),
        Attachment("setup.exe", "application/x-msdownload", 2, {"key": "exe"}),
    )))
    visible = shown(adapter)
    assert texts.FILE_TOO_BIG.format(name="dump.txt", limit="1") in visible
    assert texts.FILE_TYPE.format(name="setup.exe") in visible
    assert (await sim_get(sim, "/_sim/files"))["files"] == []
    assert texts.NO_ANSWER not in visible and "laptop" in visible.lower()


async def test_files_only_without_the_files_api_get_a_kind_refusal(sim):
    client = _client(sim, "/assistant/v1")
    try:
        relay, adapter = build(client, files={"k1": PNG})
        await relay.handle(ask("", files=(Attachment("a.png", "image/png", len(PNG), {"key": "k1"}),)))
    finally:
        await client.aclose()
    assert texts.FILES_ONLY in shown(adapter)


async def test_files_off_is_respected(sim, v1):
    relay, adapter = build(v1, files={"k1": PNG})
    relay.attachments = Attachments(v1, enabled=False, max_mb=1, purpose="CONVERSATION_INPUT")
    await relay.handle(ask("", files=(Attachment("a.png", "image/png", len(PNG), {"key": "k1"}),)))
    assert texts.FILES_ONLY in shown(adapter)
    assert (await sim_get(sim, "/_sim/files"))["files"] == []
