"""Moveworks forms as Teams dialogs, and the get-help menu, end to end: questions and invokes
POSTed over loopback to the real serve app (botbuilder's real `CloudAdapter`), the real Moveworks
client against the simulator on `/rest/v1`, the fake connector showing what users see.

A dialog is driven like the Teams client drives it (`TeamsDialog`): the button's `task/fetch`,
the card shown, inputs filled in, a button pressed (`task/submit`, with Teams' own required-input
check), and every invoke answer checked as Teams takes it (`FakeConnector.invoke`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge import texts
from bridge.process.config import Settings
from bridge.testing.bot_connector import DialogValidation, InvokeExchange, TeamsDialog, TeamsUser, card_actions
from bridge.testing.waiting import until
from tests.test_poller_teams import PollingHarness

SIM_IDENTITY = "employee@example.com"  # the simulator's api key "sim-key" acts as this employee


class V1Harness(PollingHarness):
    """The Teams harness on the simulator's `/rest/v1` (forms, help menus, live agents, files),
    with the poller built in and driven by `poll()`."""

    def settings(self) -> Settings:
        return replace(super().settings(), moveworks_base_url=self.sim.url + "/rest/v1")

    async def start(self) -> None:
        self.sim.config.modal_submit_delay = 0.05
        self.sim.config.live_agent_delay = None  # the tests make the agent speak
        await super().start()

    async def invoke(self, activity: dict[str, Any]) -> InvokeExchange:
        assert self.session is not None
        return await self.fake.invoke(self.session, self.url + "/api/messages", activity)

    def conversation(self, user: TeamsUser | None = None) -> dict[str, Any]:
        user = user or self.alice
        return {"id": f"a:personal-{user.aad_object_id}", "conversationType": "personal"}

    def dm(self, user: TeamsUser | None = None) -> str:
        return self.conversation(user)["id"]

    def buttons(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every button of the bot's cards in the conversation, newest card last."""
        return [a for m in self.fake.in_conversation(conversation_id) for card in m.cards for a in card_actions(card)]

    def button(self, conversation_id: str, title: str) -> dict[str, Any]:
        return [b for b in self.buttons(conversation_id) if b.get("title") == title][-1]

    async def open_dialog(self, user: TeamsUser, conversation_id: str, title: str) -> InvokeExchange:
        data = self.button(conversation_id, title)["data"]
        return await self.invoke(user.task_fetch(self.conversation(user), data))

    async def press(self, user: TeamsUser, dialog: TeamsDialog, title: str, *, validate: bool = True) -> InvokeExchange:
        return await self.invoke(user.task_submit(self.conversation(user), dialog.press(title, validate=validate)))

    def modal_calls(self, op: str) -> list[dict[str, Any]]:
        return [c for c in self.sim.state.modal_calls if c.get("op") == op]


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[V1Harness]:
    harness = V1Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def ticket_dialog(h: V1Harness) -> TeamsDialog:
    await h.ask(h.alice.personal("please file a ticket: my laptop screen flickers"))
    opened = await h.open_dialog(h.alice, h.dm(), "Edit/Add details")
    assert opened.dialog is not None, opened.body
    return opened.dialog


def element(dialog: TeamsDialog, **match: Any) -> dict[str, Any]:
    found = [e for e in dialog.elements if all(e.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


# --- opening ----------------------------------------------------------------------------------------


async def test_the_form_button_opens_a_dialog_with_every_field_type(h: V1Harness) -> None:
    await h.ask(h.alice.personal("please file a ticket: my laptop screen flickers"))
    dm = h.dm()
    answer, card_message = h.fake.in_conversation(dm)
    assert answer.text.startswith("I can file a ticket for you")
    titles = [b["title"] for b in h.buttons(dm)]
    assert titles == ["File ticket", "Edit/Add details", "Other help options"]
    opener = h.button(dm, "Edit/Add details")
    assert opener["type"] == "Action.Submit" and opener["data"]["msteams"] == {"type": "task/fetch"}

    opened = await h.open_dialog(h.alice, dm, "Edit/Add details")
    dialog = opened.dialog
    assert dialog is not None and dialog.title == "File an IT ticket"
    assert dialog.card["version"] == "1.5"
    # DISPLAY: a large bold header, Markdown text, an image, a download button
    assert element(dialog, type="TextBlock", text="Report an IT issue")["size"] == "Large"
    assert element(dialog, type="TextBlock", text="Report an IT issue")["weight"] == "Bolder"
    assert "[service status page](https://status.example.com)" in dialog.text()
    assert element(dialog, type="Image")["url"] == "https://static.example.com/forms/it-ticket.png"
    download = next(a for a in card_actions(dialog.card) if a["type"] == "Action.OpenUrl")
    assert download == {"type": "Action.OpenUrl", "title": "How we handle tickets (PDF)",
                        "url": "https://kb.example.com/it/ticket-guide.pdf"}
    # read-only: shown as text, not editable
    texts_shown = dialog.texts()
    assert texts_shown[texts_shown.index("Requested for") + 1] == SIM_IDENTITY
    assert "Requested for" not in dialog.labels()
    # TEXT (required, prefilled with the question), multiline TEXT
    summary = dialog.input("Summary")
    assert summary["type"] == "Input.Text" and summary["isRequired"] and summary["errorMessage"]
    assert summary["value"].startswith("please file a ticket")
    assert dialog.input("Description")["isMultiline"] is True
    # CHOICE (required), DATE, DATETIME as a date and a time, BOOLEAN, CHOICE with free input
    category = dialog.input("Category")
    assert category["type"] == "Input.ChoiceSet" and category["isRequired"] and not category["isMultiSelect"]
    assert [c["title"] for c in category["choices"]] == ["Hardware", "Software", "Access"]
    assert dialog.input("Needed by")["type"] == "Input.Date"
    assert dialog.input("Call me back at")["type"] == "Input.Date"
    assert dialog.input("f.callback_at.time")["type"] == "Input.Time"
    assert "America/Los_Angeles" in dialog.input("f.callback_at.time")["label"]
    assert dialog.input("Urgent")["type"] == "Input.Toggle"
    location = dialog.input("Location")
    assert location["style"] == "filtered"
    assert dialog.input("f.location.other")["placeholder"] == texts.TEAMS_FORM_OTHER
    # FILE: cannot be attached in a dialog, and the form says so
    assert texts_shown[texts_shown.index("Screenshot") + 1] == texts.FORM_FILE_HINT
    # systems is only for access requests; the form can be updated after a category change
    assert "Systems you need access to" not in dialog.labels()
    assert [a["title"] for a in dialog.card["actions"]] == ["Submit", "Update form"]
    assert [c["op"] for c in h.modal_calls("get")] == ["get"]
    assert h.fake.card_problems == []


async def test_update_form_shows_systems_for_access_and_keeps_what_was_typed(h: V1Harness) -> None:
    dialog = await ticket_dialog(h)
    dialog.fill(**{"Category": "Access", "Description": "Screen goes dark every minute", "Urgent": True})
    refreshed = await h.press(h.alice, dialog, "Update form")
    updated = refreshed.dialog
    assert updated is not None
    systems = updated.input("Systems you need access to")
    assert systems["type"] == "Input.ChoiceSet" and systems["isMultiSelect"] and systems["style"] == "filtered"
    assert [c["value"] for c in systems["choices"]] == ["vpn", "salesforce", "jira", "github"]
    assert updated.input("f.systems.other")["placeholder"] == texts.TEAMS_FORM_OTHER
    assert updated.values["f.category"] == "access"
    assert updated.values["f.description"] == "Screen goes dark every minute"
    assert updated.values["f.urgent"] == "true"
    refresh = h.modal_calls("refresh")[-1]
    assert refresh["values"]["category"] == {"option": "access"}
    assert h.modal_calls("submit") == []


# --- validation -------------------------------------------------------------------------------------


async def test_a_missing_required_field_is_shown_in_the_form_and_nothing_is_sent(h: V1Harness) -> None:
    dialog = await ticket_dialog(h)
    dialog.fill(**{"Summary": ""})
    with pytest.raises(DialogValidation) as refused:  # the Teams client checks isRequired itself
        dialog.press("Submit")
    assert set(refused.value.messages) == {"f.summary", "f.category"}
    # a client that does not check: the bridge puts the errors under the fields, values kept
    dialog.fill(**{"Description": "kept"})
    answered = await h.press(h.alice, dialog, "Submit", validate=False)
    again = answered.dialog
    assert again is not None
    assert again.error_under("Summary") == texts.FORM_REQUIRED
    assert again.error_under("Category") == texts.FORM_REQUIRED
    assert again.values["f.description"] == "kept"
    assert h.modal_calls("submit") == [], "Moveworks was not called"


async def test_a_refusal_from_moveworks_is_shown_under_its_field(h: V1Harness) -> None:
    dialog = await ticket_dialog(h)
    dialog.fill(**{"Category": "Hardware", "Description": "flicker"})
    h.sim.state.modal_failures.append("Field 'description' must name the device")
    answered = await h.press(h.alice, dialog, "Submit")
    again = answered.dialog
    assert again is not None
    assert again.error_under("Description") == "Field 'description' must name the device"
    assert again.values["f.description"] == "flicker" and again.values["f.category"] == "hardware"
    assert not any(m.text.startswith("✓") for m in h.fake.in_conversation(h.dm())), "no receipt posted"


# --- submitting ---------------------------------------------------------------------------------------


async def test_submit_sends_the_documented_values_posts_the_receipt_and_the_outcome_arrives(h: V1Harness) -> None:
    dialog = await ticket_dialog(h)
    dialog.fill(**{"Category": "Access", "Summary": "Need access"})
    updated = (await h.press(h.alice, dialog, "Update form")).dialog
    assert updated is not None
    updated.fill(**{
        "Systems you need access to": ["VPN", "Jira"], "f.systems.other": "Figma",
        "Needed by": "2026-12-01", "Call me back at": "2026-12-01", "f.callback_at.time": "09:30",
        "Urgent": True, "f.location.other": "Building 7",
    })
    submitted = await h.press(h.alice, updated, "Submit")
    assert submitted.closed, submitted.body  # the dialog closes; the receipt is in the chat
    values = h.modal_calls("submit")[-1]["values"]
    assert values["summary"] == {"text": "Need access"}
    assert values["category"] == {"option": "access"}
    assert values["systems"] == {"options": ["vpn", "jira", "Figma"]}
    assert values["needed_by"] == {"date": "2026-12-01"}
    assert values["callback_at"] == {"datetime": "2026-12-01T09:30:00-08:00"}  # Los Angeles in December
    assert values["urgent"] == {"bool": True}
    assert values["location"] == {"option": "Building 7"}
    assert "requester" not in values or values["requester"] == {"text": SIM_IDENTITY}
    assert not any(k in values for k in ("header", "intro", "banner", "guide", "screenshot"))
    dm = h.dm()
    await until(lambda: any(m.text.startswith("✓ Your request was received") for m in h.fake.in_conversation(dm)),
                what="the receipt in the chat")
    await asyncio.sleep(0.2)  # the simulator files the ticket after modal_submit_delay
    await h.poll(SIM_IDENTITY)
    await h.drain()
    assert any(m.text.startswith("I filed INC") and "Need access" in m.text for m in h.fake.in_conversation(dm))


async def test_someone_else_cannot_open_the_form(h: V1Harness) -> None:
    first = h.alice.channel("please file a ticket for the printer")
    await h.ask(first)
    chain = first["conversation"]["id"]
    data = h.button(chain, "Edit/Add details")["data"]
    opened = await h.invoke(h.bob.task_fetch(first["conversation"], data))
    assert opened.message == texts.FORM_NOT_OWNER
    assert h.modal_calls("get") == []
    mine = await h.invoke(h.alice.task_fetch(first["conversation"], data))
    assert mine.dialog is not None


async def test_a_slow_submit_answers_in_time_and_posts_the_outcome_later(h: V1Harness) -> None:
    dialog = await ticket_dialog(h)
    dialog.fill(**{"Category": "Hardware"})
    h.adapter.bot.invoke_deadline = 0.3
    h.sim.inject_fault("slow", endpoint="modals", delay=1.0)
    h.sim.state.modal_failures.append("Field 'summary' is too vague")
    submit = h.alice.task_submit(h.conversation(), dialog.press("Submit"))
    answered, redelivered = await asyncio.gather(h.invoke(submit), h.invoke(submit))
    assert answered.message == redelivered.message == texts.TEAMS_FORM_STILL_SUBMITTING
    assert answered.elapsed < 1.0
    dm = h.dm()
    late = texts.TEAMS_FORM_LATE_ERRORS.format(errors="Field 'summary' is too vague")
    await until(lambda: h.fake.in_conversation(dm)[-1].text == late, what="the outcome in the chat")
    assert len(h.modal_calls("submit")) == 1, "a redelivered submit joins the one running"


# --- the get-help menu ----------------------------------------------------------------------------------


async def test_help_menu_text_item_posts_its_text_and_form_item_opens_the_dialog(h: V1Harness) -> None:
    await h.ask(h.alice.personal("get help"))
    dm = h.dm()
    card = h.fake.in_conversation(dm)[-1].cards[0]
    containers = [e for e in card["body"] if e.get("type") == "Container"]
    assert len(containers) >= 2
    names = [c["items"][0]["text"] for c in containers]
    assert names == ["💻 IT", "HR"]  # emoji codes as emoji
    buttons = {b["title"]: b for b in h.buttons(dm)}
    text_item = next(b for b in buttons.values()
                     if b["type"] == "Action.Submit" and b["data"].get("mwb") == "help"
                     and "hour" in b["title"].lower())
    assert any(b["type"] == "Action.OpenUrl" for b in buttons.values()), "a link item opens its link"
    before = len(h.fake.in_conversation(dm))
    await h.post(h.alice.personal("", value=text_item["data"]))
    await until(lambda: len(h.fake.in_conversation(dm)) > before, what="the item's text")
    assert "hour" in h.fake.in_conversation(dm)[-1].text.lower()
    form_item = next(b for b in buttons.values() if (b.get("data") or {}).get("mwb") == "form")
    opened = await h.invoke(h.alice.task_fetch(h.conversation(), form_item["data"]))
    assert opened.dialog is not None and opened.dialog.title == "File an IT ticket"
    assert h.fake.card_problems == []



async def test_someone_elses_help_item_is_refused_in_the_reply_chain(h: V1Harness) -> None:
    first = h.alice.channel("get help")
    await h.ask(first)
    chain = first["conversation"]["id"]
    item = h.button(chain, "Service desk hours")
    before = len(h.fake.in_conversation(chain))
    await h.post(h.bob.channel("", root_id=first["id"], mention=False, value=item["data"]))
    await until(lambda: len(h.fake.in_conversation(chain)) > before, what="the note")
    notes = [m.text for m in h.fake.in_conversation(chain)[before:]]
    assert len(notes) == 1 and "hour" not in notes[0].lower()
    assert "only" in notes[0].lower() or "someone else" in notes[0].lower()

# --- what the dialog sends, parsed (no network) ---------------------------------------------------


def _activity(**fields: Any) -> Any:
    from botbuilder.schema import Activity

    return Activity().deserialize({"type": "invoke", "conversation": {"id": "a:1"}, **fields})


def test_the_time_zone_comes_from_the_activity_else_utc() -> None:
    from adapters.teams.forms import zone_name

    assert zone_name(_activity(localTimezone="Europe/Berlin")) == "Europe/Berlin"
    client_info = [{"type": "clientInfo", "locale": "en-US", "timezone": "Asia/Tokyo"}]
    assert zone_name(_activity(entities=client_info)) == "Asia/Tokyo"
    assert zone_name(_activity(localTimezone="Not/AZone")) == "UTC"
    assert zone_name(_activity()) == "UTC"


def test_date_and_time_become_iso_8601_with_the_offset_of_that_day() -> None:
    from adapters.teams.forms import combine_datetime

    assert combine_datetime("2026-07-01", "09:30", "America/Los_Angeles") == "2026-07-01T09:30:00-07:00"
    assert combine_datetime("2026-12-01", "09:30", "America/Los_Angeles") == "2026-12-01T09:30:00-08:00"
    assert combine_datetime("2026-12-01", "", "UTC") == "2026-12-01T00:00:00+00:00"
    assert combine_datetime("", "", "UTC") is None
    assert combine_datetime("", "09:30", "UTC") == "T09:30"  # passed on as typed: the core says why


def test_inputs_as_teams_sends_them_become_the_core_values() -> None:
    from adapters.teams.forms import parse_values

    kinds = {"s": "text", "d": "date", "t": "datetime", "b": "bool", "one": "one", "free": "one+",
             "many": "many+", "f": "file", "empty": "text"}
    data = {"k": kinds, "tz": "Europe/Berlin", "f.s": "Hello", "f.d": "2026-03-01", "f.t": "2026-03-01",
            "f.t.time": "08:00", "f.b": "false", "f.one": "hq", "f.free": "hq", "f.free.other": "Building 7",
            "f.many": "vpn,jira", "f.many.other": "Figma, jira", "f.empty": ""}
    values, tz = parse_values(data)
    assert tz == "Europe/Berlin"
    assert values == {"s": "Hello", "d": "2026-03-01", "t": "2026-03-01T08:00:00+01:00", "b": False,
                      "one": "hq", "free": "Building 7", "many": ["vpn", "jira", "Figma"]}
