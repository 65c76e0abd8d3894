"""Moveworks forms and the get-help menu in Slack, end to end over loopback: signed interaction
payloads into the real serve app, the real Moveworks client against the simulator on `/rest/v1`
(its ticket form has every field type), the poller on, and the real slack_sdk client against the
fake Slack, which plays Slack's part of a modal: trigger ids that expire after 3 seconds and work
once, views.open / views.update with `hash`, the view rules, the client's own required-field check,
and what Slack does with a view_submission response (`errors`, `update`, `clear`, a late answer).
Assertions are about what the person sees in the modal and the thread, and what Moveworks got."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from aiohttp import web

from adapters.slack import forms
from bridge import texts
from bridge.moveworks.models import Choice, Modal, ModalField
from bridge.process.runtime import build_runtime
from bridge.process.server import make_app
from bridge.store import Store
from bridge.testing.slack_api import FakeSlack, MissingRequired
from bridge.testing.waiting import until
from tests.test_slack_e2e import Harness, dm, sign

TICKET_TITLE = "File an IT ticket"


class V1Harness(Harness):
    """The Slack harness on the current Moveworks generation (`/rest/v1`), poller on."""

    def settings(self):
        return replace(super().settings(), moveworks_base_url=self.sim.url + "/rest/v1", poller=True,
                       poll_interval=0.2)

    async def boot(self) -> None:
        settings = self.settings()
        self.runtime = build_runtime(settings, store=Store(settings.db), poller=settings.poller)
        self.runner = web.AppRunner(make_app(self.runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def interact(self, payload: dict[str, Any]) -> tuple[int, str, float]:
        """An interaction payload as Slack delivers it (form-encoded, signed); the response and
        how long the bridge took to give it."""
        body = urlencode({"payload": json.dumps(payload)})
        started = time.monotonic()
        status, text = await self.post(body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)})
        return status, text, time.monotonic() - started

    async def ask(self, text: str, *, user: str = "U1", channel: str = "D1") -> dict[str, Any]:
        """A DM question; returns its (last) answer message once it is final."""
        event = dm(text, user=user, channel=channel)
        await self.send(event)
        await self.answered(channel, event["ts"])
        return self.answers(channel, event["ts"])[-1]

    async def press(self, message: dict[str, Any], label: str, *, user: str = "U1", channel: str = "D1",
                    age: float = 0.0) -> str:
        """Click the button labelled `label`; returns its action_id."""
        button = next(e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                      if e["text"]["text"] == label)
        status, _, elapsed = await self.interact(
            self.fake.message_action(message, channel, button["action_id"], user=user, age=age))
        assert status == 200 and elapsed < 3.0
        return button["action_id"]

    async def form_shown(self, user: str = "U1", *, title: str = TICKET_TITLE) -> dict[str, Any]:
        """The person's open modal, once it shows the form (not "Loading…")."""
        def shown() -> bool:
            return any(v["title"]["text"] == title and any(b["type"] == "input" for b in v["blocks"])
                       for v in self.fake.open_views(user))
        await until(shown, what="the form in a modal")
        return next(v for v in self.fake.open_views(user) if v["title"]["text"] == title)

    async def open_ticket_form(self) -> tuple[dict[str, Any], dict[str, Any]]:
        answer = await self.ask("I need to file a ticket: my laptop will not boot")
        await self.press(answer, "Edit/Add details")
        return answer, await self.form_shown()

    async def submit(self, view_id: str, *, user: str = "U1", client_checks: bool = True) -> dict[str, Any]:
        """Press Submit; Slack applies the bridge's answer to the modal. Returns the answer."""
        payload = self.fake.submission(view_id, user=user, client_checks=client_checks)
        status, body, elapsed = await self.interact(payload)
        self.fake.answer_submission(view_id, status, body, elapsed)
        return json.loads(body) if body.strip() else {}

    def submits(self) -> list[dict[str, Any]]:
        """The submit-modal calls Moveworks received, with the values it kept."""
        return [c for c in self.sim.state.modal_calls if c.get("op") == "submit"]


@pytest_asyncio.fixture
async def v1(tmp_path: Path) -> AsyncIterator[V1Harness]:
    h = V1Harness(tmp_path, streaming="edit")
    await h.start()
    yield h
    await h.stop()


@pytest_asyncio.fixture
async def v1_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[V1Harness] = []

    async def make(**options: Any) -> V1Harness:
        path = tmp_path / f"v{len(made)}"
        path.mkdir()
        h = V1Harness(path, **options)
        made.append(h)
        await h.start()
        return h

    yield make
    for h in made:
        await h.stop()


def block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def element(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return block(view, block_id)["element"]


# --- the button and the modal -------------------------------------------------------------------


async def test_the_form_button_opens_a_modal_with_every_field_type(v1):
    answer, view = await v1.open_ticket_form()
    # The button is a plain button whose value locates the action in its message (<= 2,000).
    button = next(e for b in answer["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e["text"]["text"] == "Edit/Add details")
    assert len(button["value"]) <= 2000 and "url" not in button
    # "Loading…" went up first, with the interaction's trigger, then the form replaced it.
    assert v1.fake.calls_to("views.open", ok=True) and v1.fake.calls_to("views.update", ok=True)
    assert texts.FORM_LOADING in v1.fake.view_text(v1.fake.calls_to("views.open")[0].params["view"])
    assert view["versions"] == 2 and view["submit"]["text"] == texts.FORM_SUBMIT

    summary = block(view, "f.summary")
    assert summary["optional"] is False and summary["element"]["type"] == "plain_text_input"
    assert "laptop will not boot" in summary["element"]["initial_value"]
    assert summary["hint"]["text"] == "One line that describes the problem"
    assert element(view, "f.description")["multiline"] is True
    assert element(view, "f.needed_by")["type"] == "datepicker"
    assert element(view, "f.callback_at")["type"] == "datetimepicker"
    urgent = element(view, "f.urgent")
    assert urgent["type"] == "checkboxes" and len(urgent["options"]) == 1 and block(view, "f.urgent")["optional"]
    category = block(view, "f.category")
    assert category["element"]["type"] == "static_select" and category["dispatch_action"] is True
    assert category["optional"] is False
    assert [o["text"]["text"] for o in category["element"]["options"]] == ["Hardware", "Software", "Access"]
    assert element(view, "f.location")["type"] == "static_select"
    assert element(view, "x.location")["type"] == "plain_text_input"  # free input beside the menu
    assert element(view, "f.screenshot")["type"] == "file_input"
    # systems is hidden until the category is "access"; read-only and display fields are not inputs
    assert not any(b.get("block_id") in ("f.systems", "f.requester") for b in view["blocks"])
    shown = v1.fake.view_text(view)
    assert "Requested for" in shown and "employee@example.com" in shown
    kinds = [b["type"] for b in view["blocks"]]
    assert "header" in kinds and "image" in kinds
    assert any("ticket-guide.pdf" in (b.get("text") or {}).get("text", "") for b in view["blocks"])
    assert "service status page" in shown


async def test_a_category_change_refreshes_the_form_and_keeps_what_was_typed(v1):
    _, view = await v1.open_ticket_form()
    v1.fake.fill(view["id"], {"f.summary": "Need VPN", "f.description": "Starting Monday",
                              "f.category": "access"})
    status, _, _ = await v1.interact(v1.fake.field_changed(view["id"], "f.category"))
    assert status == 200
    await until(lambda: any(b.get("block_id") == "f.systems" for b in v1.fake.view(view["id"])["blocks"]),
                what="systems shown after the refresh")
    view = v1.fake.view(view["id"])
    systems = block(view, "f.systems")
    # required, but its menu is optional in Slack: the free-input box may answer it instead
    assert systems["element"]["type"] == "multi_static_select" and systems["optional"] is True
    assert [o["value"] for o in systems["element"]["options"]] == ["vpn", "salesforce", "jira", "github"]
    assert element(view, "x.systems")["type"] == "plain_text_input"
    # what was typed is still there (the refresh call carried it, the form came back with it)
    assert element(view, "f.summary")["initial_value"] == "Need VPN"
    assert element(view, "f.description")["initial_value"] == "Starting Monday"
    assert element(view, "f.category")["initial_option"]["value"] == "access"
    refresh = [c for c in v1.sim.state.modal_calls if c.get("op") == "refresh"]
    assert refresh and refresh[-1]["body"]["values"]["category"] == {"option": "access"}
    # views.update carried the hash of the view the change came from
    assert any(c.params.get("hash") for c in v1.fake.calls_to("views.update", ok=True))


async def test_a_stale_refresh_loses_to_a_newer_one_by_hash(v1):
    _, view = await v1.open_ticket_form()
    v1.fake.fill(view["id"], {"f.category": "access"})
    stale = v1.fake.field_changed(view["id"], "f.category")
    await v1.interact(v1.fake.field_changed(view["id"], "f.category"))
    await until(lambda: v1.fake.view(view["id"])["versions"] == 3, what="first refresh")
    await v1.interact(stale)  # its hash is an older version's
    await until(lambda: v1.fake.calls_to("views.update", ok=False), what="the stale update refused")
    assert v1.fake.calls_to("views.update", ok=False)[-1].error == "hash_conflict"
    assert v1.fake.view(view["id"])["versions"] == 3


async def test_slack_itself_holds_back_a_form_missing_a_required_field(v1):
    _, view = await v1.open_ticket_form()
    v1.fake.fill(view["id"], {"f.summary": "", "f.category": "hardware"})
    with pytest.raises(MissingRequired) as refused:
        v1.fake.submission(view["id"])
    assert refused.value.block_ids == ["f.summary"]


async def test_a_required_field_left_empty_is_marked_without_calling_moveworks(v1):
    _, view = await v1.open_ticket_form()
    v1.fake.fill(view["id"], {"f.summary": "Laptop", "f.category": "access"})
    await v1.interact(v1.fake.field_changed(view["id"], "f.category"))
    await until(lambda: any(b.get("block_id") == "f.systems" for b in v1.fake.view(view["id"])["blocks"]),
                what="systems shown")
    # systems is required, but its menu is optional in Slack (the free-input box may answer it):
    # the bridge checks it and marks the field.
    reply = await v1.submit(view["id"])
    assert reply == {"response_action": "errors", "errors": {"f.systems": texts.FORM_REQUIRED}}
    assert v1.fake.view(view["id"])["errors"] == {"f.systems": texts.FORM_REQUIRED}
    assert not v1.fake.view(view["id"])["closed"]
    assert v1.submits() == []
    assert v1.fake.view_response_problems == []


async def test_a_moveworks_refusal_is_shown_on_its_field(v1):
    _, view = await v1.open_ticket_form()
    v1.sim.state.modal_failures.append("Field 'description' must mention the asset tag")
    v1.fake.fill(view["id"], {"f.category": "hardware"})
    reply = await v1.submit(view["id"])
    assert reply["response_action"] == "errors"
    assert reply["errors"] == {"f.description": "Field 'description' must mention the asset tag"}
    assert v1.fake.view_response_problems == []


async def test_submit_sends_the_documented_values_and_the_receipt_and_ticket_follow(v1):
    answer, view = await v1.open_ticket_form()
    callback = int(datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp())
    v1.fake.fill(view["id"], {
        "f.summary": "Laptop will not boot", "f.description": "Black screen\nsince today",
        "f.category": "access", "f.needed_by": "2026-12-01", "f.callback_at": callback, "f.urgent": True,
        "f.location": "branch",
    })
    await v1.interact(v1.fake.field_changed(view["id"], "f.category"))
    await until(lambda: any(b.get("block_id") == "f.systems" for b in v1.fake.view(view["id"])["blocks"]),
                what="systems shown")
    v1.fake.fill(view["id"], {"f.systems": ["vpn", "jira"], "x.systems": "Okta, Workday",
                              "x.location": "Building 7"})
    reply = await v1.submit(view["id"])
    assert reply == {"response_action": "clear"}
    assert v1.fake.view(view["id"])["closed"] and v1.fake.view_response_problems == []

    sent = v1.submits()[-1]["body"]["values"]
    assert sent["summary"] == {"text": "Laptop will not boot"}
    assert sent["description"] == {"text": "Black screen\nsince today"}
    assert sent["category"] == {"option": "access"}
    assert sent["systems"] == {"options": ["vpn", "jira", "Okta", "Workday"]}
    assert sent["needed_by"] == {"date": "2026-12-01"}
    assert sent["callback_at"] == {"datetime": "2026-12-01T09:30:00+00:00"}
    assert sent["urgent"] == {"bool": True}
    assert sent["location"] == {"option": "Building 7"}  # what was typed wins over the menu
    assert "screenshot" not in sent and "header" not in sent

    thread = answer["thread_ts"]

    def said(fragment: str) -> bool:
        return any(fragment in v1.fake.body_text(m) for m in v1.answers("D1", thread))

    await until(lambda: said("Your request was received"), what="the receipt in the thread")
    await until(lambda: said("I filed INC"), what="the ticket, through the poller")


async def test_a_slow_submit_answers_in_time_and_updates_the_modal_later(v1):
    _, view = await v1.open_ticket_form()
    v1.sim.inject_fault("slow", endpoint="modals", delay=2.5)  # longer than Slack waits for an answer
    v1.fake.fill(view["id"], {"f.category": "hardware"})
    reply = await v1.submit(view["id"])
    assert reply["response_action"] == "update"
    assert texts.FORM_SUBMITTING in v1.fake.view_text(reply["view"])
    await until(lambda: texts.FORM_SUBMITTED in v1.fake.view_text(v1.fake.view(view["id"])),
                what="the done view")
    assert v1.fake.view_response_problems == [] and len(v1.submits()) == 1


async def test_a_slow_refusal_comes_back_as_the_form_with_the_message_on_the_field(v1):
    _, view = await v1.open_ticket_form()
    v1.adapter.form_fast_reply = 0.0
    v1.sim.state.modal_failures.append("Field 'summary' is too vague")
    v1.fake.fill(view["id"], {"f.category": "software", "f.summary": "Broken"})
    await v1.submit(view["id"])

    def marked() -> bool:
        return "Field 'summary' is too vague" in v1.fake.view_text(v1.fake.view(view["id"]))
    await until(marked, what="the refusal under the field")
    assert v1.fake.view_response_problems == []
    shown = v1.fake.view(view["id"])
    ids = [b.get("block_id") for b in shown["blocks"]]
    assert ids.index("e.summary") == ids.index("f.summary") + 1
    assert element(shown, "f.summary")["initial_value"] == "Broken"


async def test_someone_else_pressing_the_form_button_is_told_it_is_not_theirs(v1):
    answer = await v1.ask("please file a ticket for my monitor")
    await v1.press(answer, "Edit/Add details", user="U2")
    await until(lambda: any(texts.FORM_NOT_OWNER in v1.fake.view_text(v) for v in v1.fake.open_views("U2")),
                what="the notice in U2's modal")
    view = v1.fake.open_views("U2")[0]
    assert "submit" not in view or view.get("submit") is None
    assert not any(c.get("op") == "get" for c in v1.sim.state.modal_calls)


async def test_an_expired_trigger_is_explained_and_the_loading_view_beats_a_slow_moveworks(v1):
    answer = await v1.ask("file a ticket, the printer is jammed")
    # A click Slack delivered late: the trigger is past its 3 seconds.
    await v1.press(answer, "Edit/Add details", age=3.5)
    await until(lambda: v1.fake.ephemerals, what="the retry hint")
    assert v1.fake.ephemerals[-1]["text"] == texts.SLACK_FORM_RETRY
    assert v1.fake.calls_to("views.open", ok=False)[-1].error == "expired_trigger_id"
    assert v1.fake.open_views("U1") == []

    # Moveworks slower than the trigger's life: the "Loading…" view is already open when it answers.
    v1.sim.inject_fault("slow", endpoint="modals", delay=3.5)
    await v1.press(answer, "Edit/Add details")
    # opened right after the click's acknowledgement (a background task), long before Moveworks
    await until(lambda: v1.fake.calls_to("views.open", ok=True), timeout=1.0, what="the Loading… view")
    await v1.form_shown()


# --- the get-help menu ---------------------------------------------------------------------------


async def test_the_help_menu_posts_a_text_item_and_opens_a_form_item(v1):
    answer = await v1.ask("get help")
    menus = [b for b in answer["blocks"] if b["type"] == "section" and (b.get("accessory") or {}).get("type")
             == "static_select"]
    assert len(menus) >= 2
    assert all(len(b["block_id"]) <= 255 for b in menus)
    labels = [o["text"]["text"] for b in menus for o in b["accessory"]["options"]]
    text_item = next(label for label in labels if "hours" in label.lower())
    form_item = next(label for label in labels if "ticket" in label.lower())

    thread = answer["thread_ts"]

    def said(fragment: str) -> bool:
        return any(fragment in v1.fake.body_text(m) for m in v1.answers("D1", thread))

    status, _, elapsed = await v1.interact(v1.fake.message_pick(answer, "D1", text_item))
    assert status == 200 and elapsed < 3.0
    await until(lambda: said("The service desk is open 8"), what="the item's text in the thread")
    await v1.interact(v1.fake.message_pick(answer, "D1", "Payroll questions"))  # a TEXT item of HR
    await until(lambda: said("payroll@example.com"), what="the HR item's text")
    await v1.interact(v1.fake.message_pick(answer, "D1", "HR policies"))  # a URL item: its link
    await until(lambda: said("https://hr.example.com/policies"), what="the link in the thread")
    await v1.interact(v1.fake.message_pick(answer, "D1", "Talk to an agent"))  # a CALLBACK item
    await until(lambda: said("Connecting you with a live agent"), what="the callback's answer")

    status, _, _ = await v1.interact(v1.fake.message_pick(answer, "D1", form_item))
    assert status == 200
    await v1.form_shown()


async def test_someone_else_picking_from_the_menu_is_told_privately(v1):
    answer = await v1.ask("help menu")
    menus = [b for b in answer["blocks"] if (b.get("accessory") or {}).get("type") == "static_select"]
    label = next(o["text"]["text"] for b in menus for o in b["accessory"]["options"]
                 if "hours" in o["text"]["text"].lower())
    await v1.interact(v1.fake.message_pick(answer, "D1", label, user="U2"))
    await until(lambda: v1.fake.ephemerals, what="the not-yours notice")
    assert v1.fake.ephemerals[-1]["user"] == "U2"
    assert v1.fake.ephemerals[-1]["text"] == texts.HELP_NOT_OWNER
    assert len(v1.answers("D1", answer["thread_ts"])) == 1


async def test_a_streamed_answer_carries_the_form_button_and_the_menu_too(v1_factory):
    h = await v1_factory(streaming="native")
    answer = await h.ask("file a ticket for my dock")
    assert answer["stream_calls"] >= 1  # it was streamed, the extras came with chat.stopStream
    await h.press(answer, "Edit/Add details")
    await h.form_shown()
    menu = await h.ask("get help")
    assert any((b.get("accessory") or {}).get("action_id") == "mw_help" for b in menu["blocks"])


# --- Slack's limits, whatever Moveworks sends ---------------------------------------------------


def _form(*fields: ModalField, title: str = "Form") -> Modal:
    return Modal("m1", title, fields)


def test_long_titles_many_options_and_long_values_fit_slack_and_come_back_exactly():
    long_value = "cost-centre/" + "x" * 200  # past an option value's 150 characters
    options = tuple(Choice(f"v{i}", f"Option {i}") for i in range(250)) + (Choice(long_value, "Long one"),)
    name = "n" * 300  # past a block_id's 255 characters
    form = _form(
        ModalField(name, "CHOICE", label="L" * 2500, options=options, prefill=[long_value], required=True),
        ModalField("many", "CHOICE", label="Many", options=options, multi=True, prefill=["v3", long_value]),
        ModalField("when", "DATETIME", label="When", prefill="2026-12-01T09:30:00+01:00"),
        ModalField("day", "DATE", label="Day", prefill="not a date"),
        title="A form title much longer than twenty-four characters",
    )
    kept: dict[str, str] = {}

    def pack(data: dict[str, Any]) -> str:
        raw = forms.pack(data)
        kept["raw"] = raw
        return raw

    view = forms.form_view(form, "session-1", pack)
    assert view is not None
    FakeSlack.check_view(view)  # Slack would take it
    assert view["title"]["text"] == "A form title much longe…" and len(view["title"]["text"]) == 24
    menu = next(b for b in view["blocks"] if b.get("type") == "input")["element"]
    assert [len(g["options"]) for g in menu["option_groups"]] == [100, 100, 51]
    assert element(view, "f.when")["initial_date_time"] == int(datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp())
    assert "initial_date" not in element(view, "f.day")
    # what Slack sends back for these picks turns into the exact Moveworks values
    meta = forms.unpack(kept["raw"])
    keys = forms.Keys(meta["k"])
    first = next(b for b in view["blocks"] if b.get("type") == "input")
    state = {"values": {
        first["block_id"]: {"mw_field": {"type": "static_select", "selected_option": menu["initial_option"]}},
        "f.many": {"mw_field": {"type": "multi_static_select",
                                "selected_options": element(view, "f.many")["initial_options"]}},
        "f.when": {"mw_field": {"type": "datetimepicker", "selected_date_time": 1796117400}},
    }}
    values = forms.read_values(state, keys)
    assert values[name] == long_value
    assert values["many"] == ["v3", long_value]
    assert values["when"] == "2026-12-01T09:30:00+00:00"
    assert meta["s"] == "session-1"


async def test_metadata_past_slacks_3000_characters_is_kept_by_the_bridge(v1):
    # Forty option values too long for Slack: their keys would overflow private_metadata.
    options = tuple(Choice(f"{i:02d}-" + "v" * 200, f"Choice {i}") for i in range(40))
    form = _form(ModalField("pick", "CHOICE", label="Pick", options=options))
    pending: list[tuple[str, str]] = []
    view = forms.form_view(form, "session-9", v1.adapter._packer(pending))
    await v1.adapter._keep_packed(pending)  # stored before the view is shown
    assert view is not None
    FakeSlack.check_view(view)
    assert len(view["private_metadata"]) <= 3000
    meta = await v1.adapter._unpack(view["private_metadata"])
    picked = element(view, "f.pick")["options"][7]
    state = {"values": {"f.pick": {"mw_field": {"type": "static_select", "selected_option": picked}}}}
    assert forms.read_values(state, forms.Keys(meta["k"]))["pick"] == options[7].value
    assert meta["s"] == "session-9"


# --- the fake's modal rules ------------------------------------------------------------------------


async def test_the_fake_refuses_what_slack_refuses_in_views():
    fake = FakeSlack()
    await fake.start()
    try:
        from slack_sdk.errors import SlackApiError
        from slack_sdk.web.async_client import AsyncWebClient

        client = AsyncWebClient(token=fake.token, base_url=fake.url)
        good = {"type": "modal", "title": {"type": "plain_text", "text": "Form"},
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}

        async def refused(view: dict[str, Any], trigger: str | None = None) -> str:
            try:
                await client.views_open(trigger_id=trigger or fake.mint_trigger(), view=view)
            except SlackApiError as exc:
                return str(exc.response["error"])
            return "ok"

        assert await refused(good) == "ok"
        assert await refused({**good, "title": {"type": "plain_text", "text": "x" * 25}}) == "invalid_arguments"
        assert await refused({**good, "blocks": good["blocks"] * 101}) == "invalid_arguments"
        assert await refused({**good, "private_metadata": "x" * 3001}) == "invalid_arguments"
        assert await refused({**good, "blocks": [{"type": "markdown", "text": "no"}]}) == "invalid_arguments"
        text_input = {"type": "plain_text_input", "action_id": "a"}
        no_label = {"type": "input", "block_id": "i", "element": text_input}
        labelled = {**no_label, "label": {"type": "plain_text", "text": "L"}}
        assert await refused({**good, "submit": {"type": "plain_text", "text": "Go"},
                              "blocks": [no_label]}) == "invalid_arguments"
        assert await refused({**good, "blocks": [labelled]}) == "invalid_arguments"  # input needs submit
        option = {"text": {"type": "plain_text", "text": "x" * 76}, "value": "v"}
        select = {"type": "static_select", "action_id": "s", "options": [option]}
        assert await refused({**good, "submit": {"type": "plain_text", "text": "Go"},
                              "blocks": [{**labelled, "element": select}]}) == "invalid_arguments"
        # trigger ids: once, within 3 seconds, and only ones Slack issued
        trigger = fake.mint_trigger()
        assert await refused(good, trigger) == "ok"
        assert await refused(good, trigger) == "exchanged_trigger_id"
        assert await refused(good, fake.mint_trigger(age=3.1)) == "expired_trigger_id"
        assert await refused(good, "123.456.abc") == "invalid_trigger_id"
        # views.update: by id, refused on a stale hash
        opened = await client.views_open(trigger_id=fake.mint_trigger(), view=good)
        view_id, first = opened["view"]["id"], opened["view"]["hash"]
        updated = await client.views_update(view_id=view_id, hash=first, view=good)
        assert updated["view"]["hash"] != first
        with pytest.raises(SlackApiError) as stale:
            await client.views_update(view_id=view_id, hash=first, view=good)
        assert stale.value.response["error"] == "hash_conflict"
        with pytest.raises(SlackApiError) as missing:
            await client.views_update(view_id="VNOPE", view=good)
        assert missing.value.response["error"] == "not_found"
    finally:
        await fake.stop()
