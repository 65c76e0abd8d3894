"""The App Home tab end to end: `app_home_opened` (tab `home`) publishes what the assistant does,
the suggested prompts as buttons, the person's recent notifications with what became of them, and
the privacy note; pressing a prompt asks it in the person's DM. The poller runs against the
simulator (`/rest/v1`), so the notification is a real one."""

# ruff: noqa: F811 - pytest fixtures imported from the harness modules are parameters here

from __future__ import annotations

import json

from bridge import texts
from bridge.process.config import DEFAULT_SUGGESTED_PROMPTS
from bridge.testing.waiting import until
from tests.test_slack_forms import V1Harness, v1_factory  # noqa: F401 - a fixture

IDENTITY = "employee@example.com"  # the simulator's identity of the bridge's API key


async def test_home_tab_shows_prompts_notifications_and_privacy_and_a_prompt_asks_in_the_dm(v1_factory):
    h: V1Harness = await v1_factory(streaming="native")
    await h.ask("is my laptop ordered?")
    conversation = list(h.runtime.store.sync.db.query("SELECT conversation_id FROM thread_links"))[0]["conversation_id"]
    h.sim.inject_event(IDENTITY, "Your laptop request was **approved**.", conversation_id=conversation)
    await until(lambda: any("approved" in h.fake.body_text(m) for m in h.fake.bot_messages("D1")),
                what="the notification in the thread")

    await h.send(h.fake.home_opened("U1", "home"))
    await until(lambda: h.fake.home("U1") is not None, what="the Home tab")
    view = h.fake.home("U1")
    shown = h.fake.view_text(view)
    assert texts.SLACK_HOME_TITLE in shown and texts.SLACK_PRIVACY_NOTE in shown
    assert "Your laptop request was approved." in shown
    assert texts.SLACK_NOTIFICATION_STATUS["sent"] in json.dumps(view["blocks"])
    buttons = [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["value"] for b in buttons] == list(DEFAULT_SUGGESTED_PROMPTS)

    h.sim.script_answer(text="Go to id.example.com and choose *Forgot password*.", match="reset my password")
    status, _, elapsed = await h.interact(h.fake.home_action("U1", buttons[0]["action_id"]))
    assert status == 200 and elapsed < 3.0
    asked = texts.SLACK_HOME_ASKED.format(prompt=DEFAULT_SUGGESTED_PROMPTS[0])

    def prompt_message() -> dict | None:
        return next((m for m in h.fake.bot_messages("D1") if m.get("text") == asked), None)

    await until(lambda: prompt_message() is not None, what="the prompt in the DM")
    root = prompt_message()["ts"]
    assert await h.answered("D1", root) == "Go to id.example.com and choose *Forgot password*."
    session = h.fake.session("D1", root)
    assert session is not None and session["title"] == DEFAULT_SUGGESTED_PROMPTS[0] and session["status"] == "active"

    # Opening the tab again shows the latest state (published again, same view id).
    await h.send(h.fake.home_opened("U1", "home"))
    await until(lambda: h.fake.home("U1")["versions"] == 2, what="the Home tab again")
    assert h.fake.home("U1")["id"] == view["id"]


async def test_home_tab_without_notifications_says_so(v1_factory):
    h: V1Harness = await v1_factory(streaming="edit")
    await h.send(h.fake.home_opened("U2", "home"))
    await until(lambda: h.fake.home("U2") is not None, what="the Home tab")
    assert texts.SLACK_HOME_NO_NOTIFICATIONS in h.fake.view_text(h.fake.home("U2"))
