"""Slack's agent surface end to end over loopback: signed events and interactions into the real
serve app, the real slack_sdk client against the fake Slack (which plays agent sessions and their
Stop button, stream chunks, suggested prompts, modals and the context_actions block as Slack
documents them), and the Moveworks simulator. Assertions are about what people see, what Slack was
told, and what Moveworks got."""

# ruff: noqa: F811 - pytest fixtures imported from the harness modules are parameters here

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

from bridge import texts
from bridge.process.config import DEFAULT_SUGGESTED_PROMPTS
from bridge.testing.waiting import until
from tests.test_slack_e2e import Harness, dm, harness_factory, questions, sign  # noqa: F401 - a fixture

LONG = " ".join(f"w{i}" for i in range(400))


def timing(h: Harness, tag: str) -> dict[str, Any]:
    """The simulator's timeline of the response to the question containing `tag`."""
    for record in h.sim.timings.values():
        if tag in record["question"]:
            return record
    return {}


def statuses(h: Harness, channel: str, thread_ts: str) -> list[tuple[str, str]]:
    session = h.fake.session(channel, thread_ts)
    return [(status, via) for status, via, _ in session["history"]] if session else []


async def interact(h: Harness, payload: dict[str, Any]) -> tuple[int, str, float]:
    body = urlencode({"payload": json.dumps(payload)})
    started = time.monotonic()
    status, text = await h.post(body, {"Content-Type": "application/x-www-form-urlencoded", **sign(body)})
    return status, text, time.monotonic() - started


async def streaming(h: Harness, channel: str, root: str) -> None:
    """The answer in `root` is streaming text, in a session that is processing."""
    def ready() -> bool:
        session = h.fake.session(channel, root)
        live = [m for m in h.answers(channel, root) if m.get("streaming")]
        return session is not None and session["status"] == "processing" and bool(live) \
            and bool(h.fake.body_text(live[0]))
    await until(ready, what="the answer to stream in a processing session")


# --- the Messages tab: suggested prompts -----------------------------------------------------------


async def test_opening_the_messages_tab_sets_the_prompts_without_a_thread(harness_factory):
    h = await harness_factory(streaming="native")
    await h.send(h.fake.home_opened("U1", "messages", channel="D1"))
    await until(lambda: h.fake.calls_to("assistant.threads.setSuggestedPrompts", ok=True), what="the prompts")
    call = h.fake.calls_to("assistant.threads.setSuggestedPrompts")[0]
    assert "thread_ts" not in call.params, "under agent_view a thread_ts makes the call fail silently"
    shown = h.fake.prompts[("D1", None)]
    assert [p["message"] for p in shown["prompts"]] == list(DEFAULT_SUGGESTED_PROMPTS)
    assert shown["title"] == texts.SLACK_PROMPTS_TITLE
    # The event fires on every open; the pinned prompts are not set again each time.
    await h.send(h.fake.home_opened("U1", "messages", channel="D1"))
    sentinel = dm("still here?")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert len(h.fake.calls_to("assistant.threads.setSuggestedPrompts")) == 1


async def test_a_workspace_on_assistant_view_gets_prompts_per_assistant_thread(harness_factory):
    h = await harness_factory(streaming="native")
    h.fake.teams["T1"].agent_view = False
    await h.send({"type": "assistant_thread_started", "event_ts": "1.0",
                  "assistant_thread": {"user_id": "U1", "channel_id": "D1", "thread_ts": "1700000000.000100",
                                       "context": {}}})
    await until(lambda: ("D1", "1700000000.000100") in h.fake.prompts, what="the thread's prompts")
    # ...and its DMs are answered as before.
    h.sim.script_answer(text="Still answered.", match="old surface")
    event = dm("old surface question")
    await h.send(event)
    assert await h.answered("D1", event["ts"]) == "Still answered."


def test_the_fake_fails_silently_like_slack_for_a_thread_under_agent_view():
    import asyncio

    from slack_sdk.web.async_client import AsyncWebClient

    from bridge.testing.slack_api import FakeSlack

    async def run() -> None:
        fake = FakeSlack()
        await fake.start()
        try:
            client = AsyncWebClient(token=fake.token, base_url=fake.url)
            prompts = [{"title": "a", "message": "a"}]
            response = await client.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts="1.2",
                                                                          prompts=prompts)
            assert response["ok"] and fake.prompts == {}
            five = prompts * 5
            try:
                await client.assistant_threads_setSuggestedPrompts(channel_id="D1", prompts=five)
            except Exception as exc:  # noqa: BLE001 - slack_sdk's SlackApiError
                assert "invalid_arguments" in str(exc)
            else:
                raise AssertionError("five prompts were accepted")
        finally:
            await fake.stop()

    asyncio.run(run())


# --- sessions and Stop ---------------------------------------------------------------------------


async def test_stop_mid_answer_closes_moveworks_ends_in_place_and_the_thread_goes_on(harness_factory):
    h = await harness_factory(streaming="native")
    h.sim.script_answer(text=LONG, match="long answer", chunks=80, delay=0.05)
    event = dm("a long answer please")
    await h.send(event)
    root = event["ts"]
    await streaming(h, "D1", root)
    session = h.fake.session("D1", root)
    assert session["title"] == "a long answer please" and session["initiator"] == "U1"

    stop = h.fake.press_stop("D1", root)
    assert stop["streaming_message_ts"], "Slack stopped the open stream itself"
    pressed = time.monotonic()
    assert (await h.send(stop))[0] == 200
    await until(lambda: "disconnected" in timing(h, "long answer"), what="the Moveworks stream to close")
    assert timing(h, "long answer")["disconnected"] - pressed < 1.0
    await h.idle()

    messages = h.answers("D1", root)
    assert len(messages) == 1, "ended in place, no separate note"
    shown = h.fake.body_text(messages[0])
    assert shown.startswith("w0 w1 ") and shown.endswith(texts.failure_note(texts.STOPPED))
    assert LONG not in shown and not messages[0]["streaming"]
    assert h.fake.session("D1", root)["status"] == "active"
    row = h.runtime.store.sync.db.execute("SELECT status FROM replies ORDER BY id DESC LIMIT 1").fetchone()
    assert row[0] == "canceled"

    # The thread is ready for the next question.
    h.sim.script_answer(text="Here is the short answer.", match="short one")
    follow = dm("a short one now", thread_ts=root)
    await h.send(follow)
    assert await h.answered("D1", root, 2) == "Here is the short answer."
    assert statuses(h, "D1", root)[-2:] == [("processing", "agents.sessions.setStatus"), ("active", "chat.stopStream")]


async def test_stop_is_for_the_answer_streaming_not_the_question_waiting_behind_it(harness_factory):
    h = await harness_factory(streaming="native")
    h.sim.script_answer(text=LONG, match="first question", chunks=80, delay=0.05)
    h.sim.script_answer(text="The second answer, in full.", match="second question")
    first = dm("the first question")
    await h.send(first)
    root = first["ts"]
    await streaming(h, "D1", root)
    await h.send(dm("the second question", thread_ts=root))  # waits for the thread's turn
    await h.send(h.fake.press_stop("D1", root))
    assert await h.answered("D1", root, 2) == "The second answer, in full."
    stopped, second = h.answers("D1", root)
    assert h.fake.body_text(stopped).endswith(texts.STOPPED)
    assert h.fake.session("D1", root)["status"] == "active"


async def test_stop_while_the_assistant_is_still_reasoning(harness_factory):
    h = await harness_factory(streaming="native")
    h.sim.script_answer(text="never shown", match="slow request",
                        reasoning=["Looking up your ticket", "Checking the approvals", "Asking the team"], delay=0.6)
    event = dm("a slow request")
    await h.send(event)
    root = event["ts"]

    def planning() -> bool:
        live = [m for m in h.answers("D1", root) if m.get("streaming") and m.get("tasks")]
        session = h.fake.session("D1", root)
        return bool(live) and session is not None and session["status"] == "processing"

    await until(planning, what="the plan to show")
    await h.send(h.fake.press_stop("D1", root))
    await until(lambda: "disconnected" in timing(h, "slow request"), what="the Moveworks stream to close")
    await h.idle()
    (message,) = h.answers("D1", root)
    assert h.fake.body_text(message) == texts.failure_note(texts.STOPPED)
    assert "never shown" not in json.dumps(h.fake.messages["D1"])
    assert h.fake.session("D1", root)["status"] == "active"


async def test_a_stop_received_by_another_process_reaches_the_one_streaming(harness_factory):
    from adapters.slack.sessions import Sessions

    h = await harness_factory(streaming="native")
    h.sim.script_answer(text=LONG, match="elsewhere", chunks=80, delay=0.05)
    event = dm("stop me from elsewhere")
    await h.send(event)
    await streaming(h, "D1", event["ts"])

    class OtherProcess:  # the same store, but none of this process's answers
        def __init__(self, core: Any) -> None:
            self.core = core

        def kv(self, namespace: str) -> Any:
            return self.core.kv(namespace)

        def stop_answer(self, thread: Any) -> bool:
            return False

    other = Sessions(OtherProcess(h.adapter.core))  # type: ignore[arg-type]
    stop = h.fake.press_stop("D1", event["ts"])
    assert await other.stopped("T1", "D1", event["ts"], stop["streaming_message_ts"]) is False
    await until(lambda: "disconnected" in timing(h, "elsewhere"), what="the Moveworks stream to close")
    await h.idle()
    assert h.fake.body_text(h.answers("D1", event["ts"])[0]).endswith(texts.STOPPED)
    assert h.fake.session("D1", event["ts"])["status"] == "active"


async def test_each_dm_answer_is_a_session_and_a_rotation_keeps_it_processing(harness_factory):
    h = await harness_factory(streaming="native")
    paragraphs = [f"Paragraph {i}: " + ("lorem ipsum dolor sit amet " * 12).strip() + "." for i in range(130)]
    essay = "\n\n".join(paragraphs)
    h.sim.script_answer(text=essay, match="essay")
    event = dm("write an essay")
    await h.send(event)
    await h.answered("D1", event["ts"])
    assert "".join(h.fake.body_text(m) for m in h.answers("D1", event["ts"])) == essay
    history = statuses(h, "D1", event["ts"])
    assert history[0] == ("processing", "agents.sessions.setStatus")
    assert history[-1] == ("active", "chat.stopStream"), "the final stop ends the session: no extra call"
    assert ("processing", "chat.stopStream") in history, "a rotation's stop keeps the session processing"
    assert len(h.fake.calls_to("agents.sessions.setStatus")) == 1


async def test_an_app_not_declared_an_agent_falls_back_to_the_thread_status_once(harness_factory, caplog):
    caplog.set_level(logging.INFO, logger="adapters.slack")
    h = await harness_factory(streaming="native")
    h.fake.teams["T1"].agent = False
    for i in range(2):
        h.sim.script_answer(text=f"Answer {i}.", match=f"question {i}")
        event = dm(f"question {i}")
        await h.send(event)
        assert await h.answered("D1", event["ts"]) == f"Answer {i}."
    refused = h.fake.calls_to("agents.sessions.setStatus")
    assert [c.error for c in refused] == ["not_authorized"], "tried once for the workspace"
    assert h.fake.statuses, "the thread status still shows progress"
    assert [r for r in caplog.records if "not declared an agent" in r.getMessage()]


async def test_without_the_stop_event_subscription_the_operator_is_told(harness_factory, caplog):
    caplog.set_level(logging.WARNING, logger="adapters.slack")
    h = await harness_factory(streaming="native")
    h.fake.teams["T1"].events.discard("agent_session_stopped")
    h.sim.script_answer(text="Answered anyway.", match="no stop")
    event = dm("no stop button")
    await h.send(event)
    assert await h.answered("D1", event["ts"]) == "Answered anyway."
    assert [r for r in caplog.records if "agent_session_stopped" in r.getMessage()]
    try:
        h.fake.press_stop("D1", event["ts"])
    except AssertionError:
        pass
    else:
        raise AssertionError("Slack shows no Stop button without the subscription")


# --- reasoning as a plan -------------------------------------------------------------------------


async def test_reasoning_steps_stream_as_a_plan_that_the_answer_completes(harness_factory):
    h = await harness_factory(streaming="native")
    steps = ["Looking up your ticket", "Checking the approvals"]
    h.sim.script_answer(text="Your ticket INC-7 is approved.", match="ticket", reasoning=steps, delay=1.1, chunks=2)
    event = dm("what about my ticket?")
    await h.send(event)
    assert await h.answered("D1", event["ts"]) == "Your ticket INC-7 is approved."
    (message,) = h.answers("D1", event["ts"])
    assert message["task_display_mode"] == "plan" and message["plan_title"] == texts.SLACK_PLAN_TITLE
    assert [t["title"] for t in message["tasks"].values()] == steps
    assert {t["status"] for t in message["tasks"].values()} == {"complete"}
    start = h.fake.calls_to("chat.startStream")[0].params
    assert start["task_display_mode"] == "plan" and "markdown_text" not in start
    assert [c["type"] for c in start["chunks"]] == ["plan_update", "task_update"]
    assert start["chunks"][1]["status"] == "in_progress"


async def test_where_chunks_are_refused_the_status_line_shows_the_steps(harness_factory, caplog):
    caplog.set_level(logging.INFO, logger="adapters.slack")
    h = await harness_factory(streaming="native")
    h.fake.teams["T1"].chunks = False
    for i in range(2):
        h.sim.script_answer(text=f"Answer {i}.", match=f"older {i}", reasoning=["Searching the knowledge base"],
                            delay=0.4)
        event = dm(f"older {i}")
        await h.send(event)
        assert await h.answered("D1", event["ts"]) == f"Answer {i}."
    with_chunks = [c for c in h.fake.calls_to("chat.startStream") if c.params.get("chunks")]
    assert [c.error for c in with_chunks] == ["invalid_chunks"], "tried once for the workspace"
    assert any("Searching the knowledge base" in (s.get("loading_messages") or []) for s in h.fake.statuses)


# --- feedback with a comment ---------------------------------------------------------------------


async def answered_with_feedback(h: Harness, tag: str, channel: str = "D1") -> dict[str, Any]:
    h.sim.script_answer(text="Use the portal.", match=tag)
    event = dm(f"which portal {tag}?", channel=channel)
    await h.send(event)
    await h.answered(channel, event["ts"])
    return h.answers(channel, event["ts"])[-1]


async def test_thumbs_down_opens_a_comment_modal_and_sends_one_rating_with_the_comment(harness_factory):
    h = await harness_factory(streaming="native")
    answer = await answered_with_feedback(h, "down")
    assert any(b["type"] == "context_actions" for b in answer["blocks"])
    status, _, elapsed = await interact(h, h.fake.feedback_click(answer, "D1", helpful=False))
    assert status == 200 and elapsed < 3.0
    await until(lambda: h.fake.open_views("U1"), what="the comment modal")
    (view,) = h.fake.open_views("U1")
    assert texts.SLACK_FEEDBACK_ASK_UNHELPFUL in h.fake.view_text(view)
    assert h.sim.state.feedback == [], "nothing is sent before the person decides"
    h.fake.fill(view["id"], {"mw_feedback_comment": "The portal link is outdated."})
    status, body, elapsed = await interact(h, h.fake.submission(view["id"]))
    h.fake.answer_submission(view["id"], status, body, elapsed)
    assert h.fake.view_response_problems == []
    (sent,) = h.sim.state.feedback
    assert sent["rating"] == "unhelpful" and sent["additional_feedback"] == "The portal link is outdated."
    assert texts.FEEDBACK_THANKS_UNHELPFUL in h.fake.view_text(h.fake.view(view["id"]))


async def test_closing_the_modal_still_records_the_rating_without_a_comment(harness_factory):
    h = await harness_factory(streaming="edit")
    answer = await answered_with_feedback(h, "skip")
    await interact(h, h.fake.feedback_click(answer, "D1", helpful=True))
    await until(lambda: h.fake.open_views("U1"), what="the comment modal")
    (view,) = h.fake.open_views("U1")
    closed = h.fake.closing(view["id"])
    assert closed is not None, "the modal asks Slack for view_closed"
    assert (await interact(h, closed))[0] == 200
    await until(lambda: h.sim.state.feedback, what="the rating")
    (sent,) = h.sim.state.feedback
    assert sent["rating"] == "helpful" and sent["additional_feedback"] is None
    assert h.fake.ephemerals == [], "a rating that went through needs no message"


async def test_without_a_modal_the_rating_goes_at_once(harness_factory):
    h = await harness_factory(streaming="edit")
    answer = await answered_with_feedback(h, "late")
    await interact(h, h.fake.feedback_click(answer, "D1", helpful=False, age=5.0))  # the trigger expired
    await until(lambda: h.fake.ephemerals, what="the acknowledgement")
    assert h.fake.ephemerals[-1]["text"] == texts.FEEDBACK_THANKS_UNHELPFUL
    assert len(h.sim.state.feedback) == 1 and h.fake.open_views() == []


async def test_a_workspace_without_context_actions_gets_plain_feedback_buttons(harness_factory):
    for mode in ("edit", "native"):
        h = await harness_factory(streaming=mode)
        h.fake.teams["T1"].context_actions = False
        first = await answered_with_feedback(h, f"{mode} one")
        kinds = [b["type"] for b in first["blocks"]]
        assert "context_actions" not in kinds and "actions" in kinds, mode
        second = await answered_with_feedback(h, f"{mode} two")
        assert "context_actions" not in [b["type"] for b in second["blocks"]]
        refused = [c for c in h.fake.calls if c.error == "invalid_blocks"]
        assert len(refused) == 1, f"{mode}: refused once, then remembered"
        await interact(h, h.fake.feedback_click(second, "D1", helpful=False))
        await until(lambda h=h: h.fake.open_views("U1"), what="the comment modal")
        (view,) = h.fake.open_views("U1")
        status, body, elapsed = await interact(h, h.fake.submission(view["id"]))
        h.fake.answer_submission(view["id"], status, body, elapsed)
        assert h.sim.state.feedback[-1]["rating"] == "unhelpful"
    assert questions(h.sim)


# --- the manifest and the fake's own rules ---------------------------------------------------------


def test_the_manifest_declares_the_agent_surface_the_adapter_uses():
    from pathlib import Path

    import yaml

    from adapters.slack.app import SCOPES
    from bridge.testing.slack_api import DEFAULT_EVENTS, DEFAULT_SCOPES

    manifest = yaml.safe_load((Path(__file__).resolve().parent.parent / "manifest.yml").read_text())
    features = manifest["features"]
    assert "assistant_view" not in features
    prompts = features["agent_view"]["suggested_prompts"]
    assert [p["message"] for p in prompts] == list(DEFAULT_SUGGESTED_PROMPTS), "the static list is the defaults"
    assert features["app_home"]["home_tab_enabled"] and features["app_home"]["messages_tab_enabled"]
    assert [c["command"] for c in features["slash_commands"]] == ["/moveworks"]
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_home_opened", "agent_session_stopped"} <= events
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(SCOPES)
    assert set(SCOPES) == DEFAULT_SCOPES and events == DEFAULT_EVENTS, "the fake installs what the manifest asks"


async def test_the_fake_enforces_slacks_documented_agent_rules():
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    from bridge.testing.slack_api import FakeSlack

    fake = FakeSlack()
    await fake.start()
    client = AsyncWebClient(token=fake.token, base_url=fake.url)

    async def error(method: str, **kwargs: Any) -> str | None:
        try:
            await client.api_call(method, json=kwargs)
        except SlackApiError as exc:
            return str(exc.response["error"])
        return None

    try:
        sessions = "agents.sessions.setStatus"
        assert await error(sessions, channel_id="D1", status="processing") == "thread_ts_required"
        assert await error(sessions, channel_id="D1", thread_ts="1.1", status="busy") == "invalid_status"
        assert await error(sessions, channel_id="D1", thread_ts="1.1", status="processing", title="x" * 201) \
            == "invalid_arguments"
        assert await error(sessions, channel_id="D1", thread_ts="1.1", status="processing", title="First") is None
        assert await error(sessions, channel_id="D1", thread_ts="1.1", status="active", title="Second") is None
        assert fake.session("D1", "1.1")["title"] == "First", "a title counts only when the session is created"

        stream = "chat.startStream"
        bad_task = [{"type": "task_update", "id": "t", "title": "Step", "status": "running"}]
        assert await error(stream, channel="D1", thread_ts="1.1", chunks=bad_task) == "invalid_chunks"
        assert await error(stream, channel="D1", thread_ts="1.1", chunks=[{"type": "sparkles"}]) == "invalid_chunks"
        assert await error(stream, channel="D1", thread_ts="1.1", task_display_mode="grid") == "invalid_arguments"
        started = await client.chat_startStream(channel="D1", thread_ts="1.1", task_display_mode="plan",
                                                chunks=[{"type": "plan_update", "title": "Plan"},
                                                        {"type": "task_update", "id": "t", "title": "Step",
                                                         "status": "in_progress"}])
        await client.api_call(sessions, json={"channel_id": "D1", "thread_ts": "1.1", "status": "processing"})
        event = fake.press_stop("D1", "1.1")
        assert event["streaming_message_ts"] == [started["ts"]]
        assert fake.session("D1", "1.1")["status"] == "processing", "Stop changes nothing by itself"
        assert await error("chat.appendStream", channel="D1", ts=started["ts"], markdown_text="x") == "stopped_by_user"
        assert await error("chat.stopStream", channel="D1", ts=started["ts"]) == "message_not_in_streaming_state"

        second = await client.chat_startStream(channel="D1", thread_ts="1.1", markdown_text="hello")
        await client.chat_stopStream(channel="D1", ts=second["ts"])
        assert fake.session("D1", "1.1")["status"] == "active", "chat.stopStream's session_status defaults to active"

        feedback = {"type": "feedback_buttons", "action_id": "f",
                    "positive_button": {"text": {"type": "plain_text", "text": "Yes"}, "value": "1"},
                    "negative_button": {"text": {"type": "plain_text", "text": "No"}, "value": "0"}}
        outside = [{"type": "actions", "elements": [feedback]}]
        assert await error("chat.postMessage", channel="D1", text="x", blocks=outside) == "invalid_blocks"
        inside = [{"type": "context_actions", "elements": [feedback]}]
        assert await error("chat.postMessage", channel="D1", text="x", blocks=inside) is None
        fake.teams["T1"].context_actions = False
        assert await error("chat.postMessage", channel="D1", text="x", blocks=inside) == "invalid_blocks"
        fake.teams["T1"].chunks = False
        plan = [{"type": "plan_update", "title": "Plan"}]
        assert await error(stream, channel="D1", thread_ts="1.2", chunks=plan) == "invalid_chunks"
        fake.teams["T1"].agent = False
        assert await error(sessions, channel_id="D1", thread_ts="1.2", status="processing") == "not_authorized"

        home = {"type": "home", "blocks": [{"type": "markdown", "text": "no"}]}
        assert await error("views.publish", user_id="U1", view=home) == "invalid_arguments"
        assert await error("conversations.replies", channel="C1", ts="9.9") == "thread_not_found"
        fake.teams["T1"].scopes.discard("channels:history")
        assert await error("conversations.replies", channel="C1", ts="9.9") == "missing_scope"
    finally:
        await fake.stop()
