"""Slack's documented rules (reference notes: `slack-platform-rules.md`), enforced by the fake Slack
Web API and kept by the adapter: block limits measured with slack_sdk's own models, streaming
state, the documented errors of chat.startStream, per-method tiers, re-sent mentions of edited
messages, and the app manifest against Slack's JSON Schema. Everything runs over loopback with the
real slack_sdk client."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks as bk
from adapters.slack.calls import call, to_platform_error
from adapters.slack.native import STREAM_RATE, NativeStreamSink
from adapters.slack.ops import SlackMessageOps
from bridge.errors import PlatformRateLimited
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Answer, CitationLink, FeedbackTarget, Frame
from bridge.moveworks.models import Action
from bridge.testing.slack_api import FakeSlack
from tests.test_slack_e2e import dm, harness_factory, mention, new_ts, questions  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
async def fake():
    f = FakeSlack()
    await f.start()
    yield f
    await f.stop()


def client_of(fake: FakeSlack, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or fake.token, base_url=fake.url)


def native_sink(fake: FakeSlack, clock: Clock, **kw: Any) -> NativeStreamSink:
    budgets = Budgets()
    return NativeStreamSink(
        client_of(fake), "C1", "1.0", budget_key="k", stream_budget=budgets.get("k", None),
        edit_budget=budgets.get("e", None), recipient_team_id="T1", recipient_user_id="U1", clock=clock,
        sleep=no_sleep, **kw,
    )


def long_url(i: int, size: int = 450) -> str:
    base = f"https://kb.example.com/knowledge/articles/{i}/"
    return base + "x" * (size - len(base) - 8) + "?a=1&b=2"


def feedback() -> FeedbackTarget:
    return FeedbackTarget("conv_1", "resp_1", "msg_1", "cb_good", "cb_bad")


def thread_blocks(fake: FakeSlack, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    return [b for m in fake.thread(channel, thread_ts) for b in m.get("blocks") or []]


def refusals(fake: FakeSlack) -> list[tuple[str, str | None]]:
    return [(c.method, c.error) for c in fake.calls if c.error and c.method.startswith("chat.")]


async def slack_error(awaitable: Any) -> str:
    with pytest.raises(SlackApiError) as err:
        await awaitable
    return str(err.value.response["error"])


# --- what the fake enforces ------------------------------------------------------------------------


async def test_fake_refuses_to_edit_a_message_that_is_still_streaming(fake):
    client = client_of(fake)
    opened = await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="Hello")
    ts = opened["ts"]
    assert await slack_error(client.chat_update(channel="D1", ts=ts, text="x")) == "streaming_state_conflict"
    assert fake.message("D1", ts)["streaming"], "a refused edit does not end the stream"
    await client.chat_stopStream(channel="D1", ts=ts)
    await client.chat_update(channel="D1", ts=ts, text="edited")  # allowed once stopped
    await client.chat_delete(channel="D1", ts=ts)


async def test_fake_validates_blocks_with_slack_sdks_models_and_the_limits_they_miss(fake):
    client = client_of(fake)

    def line(size: int) -> dict[str, Any]:
        return {"type": "context", "elements": [{"type": "mrkdwn", "text": "x" * size}]}

    button = {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "a"}

    async def refused(blocks: Any) -> str:
        return await slack_error(client.chat_postMessage(channel="C1", text="t", blocks=blocks))

    assert await refused([{"type": "markdown", "text": ""}]) == "invalid_blocks"  # slack_sdk's model
    assert await refused([line(3001)]) == "invalid_blocks"  # a text object: slack_sdk does not check it
    assert await refused([{"type": "markdown", "text": "x"}] * 51) == "invalid_blocks"
    assert await refused([{"type": "markdown", "text": "x" * 9001}, line(3000)]) == "msg_blocks_too_long"
    assert await refused([{"type": "actions", "elements": [{**button, "value": "v" * 2001}]}]) == "invalid_blocks"
    assert await refused([{"type": "actions", "elements": [{**button, "action_id": "a" * 256}]}]) == "invalid_blocks"
    too_wide = {**button, "text": {"type": "plain_text", "text": "x" * 76}}
    assert await refused([{"type": "actions", "elements": [too_wide]}]) == "invalid_blocks"
    assert await refused([{"type": "context", "elements": []}]) == "invalid_blocks"
    assert await refused([{"type": "no_such_block"}]) == "invalid_blocks"
    await client.chat_postMessage(channel="C1", text="t", blocks=[{"type": "markdown", "text": "x" * 9000}, line(2900)])

    posted = await client.chat_postMessage(channel="C1", text="x" * 41_000)
    assert len(fake.message("C1", posted["ts"])["text"]) == 40_000, "chat.postMessage truncates, it does not refuse"
    assert await slack_error(client.chat_update(channel="C1", ts=posted["ts"], text="x" * 4001)) == "msg_too_long"

    opened = await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="Hi")
    too_many = client.chat_stopStream(channel="D1", ts=opened["ts"], blocks=[line(10)] * 51)
    assert await slack_error(too_many) == "msg_blocks_too_many"
    assert fake.message("D1", opened["ts"])["streaming"], "a refused stop leaves the stream open"


async def test_fake_enforces_the_documented_tier_of_each_method_per_workspace():
    clock = Clock()
    fake = FakeSlack(clock=clock)
    fake.add_team("T2", token="xoxb-fake-T2")
    await fake.start()
    try:
        client = client_of(fake)
        streams = [await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x") for _ in range(20)]
        with pytest.raises(SlackApiError) as err:
            await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x")
        response = err.value.response
        assert response.status_code == 429 and response["error"] == "ratelimited"
        assert int(response.headers["Retry-After"]) >= 1
        for stream in streams:  # chat.stopStream is a Tier 2 bucket of its own
            await client.chat_stopStream(channel="D1", ts=stream["ts"])
        await client_of(fake, "xoxb-fake-T2").chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x")
        posted = await client.chat_postMessage(channel="C1", text="x")
        for _ in range(50):  # chat.update: Tier 3
            await client.chat_update(channel="C1", ts=posted["ts"], text="y")
        assert await slack_error(client.chat_update(channel="C1", ts=posted["ts"], text="y")) == "ratelimited"
        clock.now += 61
        await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x")
        await client.chat_update(channel="C1", ts=posted["ts"], text="z")
    finally:
        await fake.stop()


# --- 1. an open stream is stopped before any edit -------------------------------------------------


async def test_refused_stop_extras_end_the_stream_without_an_edit_and_follow_on_their_own(fake):
    sink = native_sink(fake, Clock())
    await sink.show(Frame("The answer, as streamed."))
    fake.fail_next("chat.stopStream", "msg_blocks_too_long")
    answer = Answer(
        text="The answer, as streamed. Done [1].",
        citations=(CitationLink(1, "IT Handbook", "https://kb.example.com/it"),),
        actions=(Action("URL_ACTION", "Open the portal", url="https://portal.example.com"),),
        feedback=feedback(), conversation_id="conv_1",
    )
    await sink.finish(answer)
    msgs = fake.thread("C1", "1.0")
    assert not any(m["streaming"] for m in msgs), "no message is left streaming"
    assert FakeSlack.body_text(msgs[0]) == answer.text
    assert not any("⚠️" in FakeSlack.body_text(m) for m in msgs), "no failure note"
    assert not fake.calls_to("chat.update"), "an open stream is never edited"
    kinds = [b["type"] for b in thread_blocks(fake, "C1", "1.0")]
    assert {"context", "actions", "context_actions"} <= set(kinds), "sources and buttons still reach the thread"


# --- 2. extras measured against the message's limits; the answer text never pays --------------


async def test_edit_mode_long_answer_with_long_citation_urls_loses_nothing(harness_factory):
    h = await harness_factory(streaming="edit")
    paragraphs = [f"Paragraph {i}: " + ("the request is routed to the service desk " * 6).strip() + "."
                  for i in range(30)]
    text = "\n\n".join(paragraphs)[:7_900]
    citations = [{"title": f"Knowledge article {i}", "url": long_url(i)} for i in range(1, 11)]
    h.sim.script_answer(text=text, match="routing", citations=citations)
    event = dm("how is routing done?")
    await h.send(event)
    await h.answered("D1", event["ts"])
    msgs = h.answers("D1", event["ts"])
    body = h.fake.body_text(msgs[0])
    assert all(p[:60] in body for p in text.split("\n\n")), "the whole answer is visible"
    assert not any("⚠️" in h.fake.body_text(m) for m in msgs), "no failure note"
    shown = json.dumps(thread_blocks(h.fake, "D1", event["ts"]))
    assert all(c["url"].split("?")[0] in shown for c in citations), "every source keeps its link"
    assert refusals(h.fake) == []


async def test_native_rewrite_of_a_long_answer_keeps_the_text_and_every_source(fake):
    sink = native_sink(fake, Clock())
    body = "".join(f"word{i:05d} " for i in range(1_090))
    await sink.show(Frame(body[:5_000]))
    final = body[:4_000] + " [1]" + body[4_000:]  # a marker inside what was streamed: a rewrite
    cites = tuple(CitationLink(i, f"Knowledge article {i}", long_url(i)) for i in range(1, 11))
    await sink.finish(Answer(text=final, citations=cites, feedback=feedback()))
    msgs = fake.thread("C1", "1.0")
    parts = [m for m in msgs if any(b["type"] == "markdown" for b in m.get("blocks") or [])]
    assert "".join(FakeSlack.body_text(m) for m in parts) == final
    shown = json.dumps(thread_blocks(fake, "C1", "1.0"))
    assert all(c.url.split("?")[0] in shown for c in cites) and "context_actions" in shown
    assert not any(m["streaming"] for m in msgs) and refusals(fake) == []


def test_extras_that_do_not_fit_move_their_sources_apart_at_full_detail():
    cites = tuple(CitationLink(i, f"Knowledge article {i}", long_url(i)) for i in range(1, 11))
    answer = Answer(text="x", citations=cites, feedback=feedback(),
                    actions=(Action("URL_ACTION", "Open", url="https://o.example.com"),), conversation_id="c")
    roomy = bk.layout_extras(answer, used=1_000, used_blocks=1)
    assert not roomy.sources and bk.text_size(roomy.blocks) <= 11_000
    tight = bk.layout_extras(answer, used=8_000, used_blocks=1)
    assert [b["type"] for b in tight.blocks] == ["actions", "context_actions"]
    assert bk.fits(tight.sources) and all(c.url in json.dumps(tight.sources) for c in cites)
    huge = tuple(CitationLink(i, "T" * 150, "https://kb.example.com/" + "y" * 2_900) for i in range(1, 41))
    assert bk.fits(bk.source_blocks(huge)), "even far too many sources fit one message (with less detail)"


# --- 3. citation lines are escaped and bounded -------------------------------------------------


def test_citation_lines_are_escaped_and_stay_within_a_text_object():
    c = CitationLink(1, "Q&A <draft>", "https://kb.example.com/a|b>c?q=<1> 2")
    line = bk.citation_line(c)
    match = re.fullmatch(r"\[1\] <([^<>|\s]+)\|([^<>]+)>", line)
    assert match, line
    assert unquote(match.group(1)) == c.url and match.group(2) == "Q&amp;A &lt;draft&gt;"
    huge = CitationLink(2, "Long", "https://kb.example.com/" + "x" * 2_990)
    lines = [e["text"] for b in bk.citation_blocks((huge,)) for e in b["elements"]]
    assert lines == ["[2] Long"], "a line that cannot hold its link keeps its title"


async def test_a_citation_with_a_very_long_url_does_not_cost_the_answer(fake):
    ops = SlackMessageOps(client_of(fake), "C1", "1.0", formats={})
    url = "https://kb.example.com/" + "x" * 2_970  # within the 3,000 of a URL, not of the line `[1] <url|Long>`
    answer = Answer(text="The answer [1].", citations=(CitationLink(1, "Long", url),))
    ts = await ops.post(answer.text, answer=answer)
    message = fake.message("C1", ts)
    assert FakeSlack.body_text(message) == answer.text
    assert [b["type"] for b in message["blocks"]] == ["markdown", "context"]
    assert refusals(fake) == []


# --- 4. an answer with only buttons --------------------------------------------------------------


async def test_an_answer_with_only_buttons_sends_no_empty_markdown_block_and_keeps_markdown(fake):
    formats: dict[str, bool] = {}
    ops = SlackMessageOps(client_of(fake), "C1", "1.0", formats=formats)
    buttons_only = Answer(text="", actions=(Action("URL_ACTION", "Open the portal", url="https://portal.example.com"),))
    ts = await ops.post("", answer=buttons_only)
    assert [b["type"] for b in fake.message("C1", ts)["blocks"]] == ["actions"]
    assert refusals(fake) == [] and formats.get("markdown", True), "nothing refused, the workspace keeps markdown"
    nxt = await ops.post("**Next** answer")
    assert fake.message("C1", nxt)["blocks"][0] == {"type": "markdown", "text": "**Next** answer"}


# --- 5. documented chat.startStream errors -------------------------------------------------------


@pytest.mark.parametrize("code", ["channel_type_not_supported", "team_not_found", "user_not_found"])
async def test_start_stream_refusals_for_this_reply_fall_back_to_edits_at_once(harness_factory, code):
    h = await harness_factory(streaming="auto")
    h.sim.script_answer(text="Delivered by edits.", match="refused", times=2)
    h.fake.fail_next("chat.startStream", code, count=50)
    event = mention("refused stream, please")
    await h.send(event)
    assert await h.answered("C1", event["ts"]) == "Delivered by edits."
    assert len(h.fake.calls_to("chat.startStream")) == 1, "one refused start, no retries"
    again = mention("refused stream, please, again")
    await h.send(again)
    assert await h.answered("C1", again["ts"]) == "Delivered by edits."
    expected = 1 if code == "channel_type_not_supported" else 2  # that channel cannot stream: not tried again
    assert len(h.fake.calls_to("chat.startStream")) == expected


@pytest.mark.parametrize("code", ["restricted_action_thread_locked", "messages_tab_disabled", "message_limit_exceeded"])
async def test_start_stream_refusals_that_forbid_posting_end_the_reply_at_once(harness_factory, code):
    h = await harness_factory(streaming="auto")
    h.sim.script_answer(text="Never shown.", match="forbidden")
    h.fake.fail_next("chat.startStream", code, count=50)
    h.fake.fail_next("chat.postMessage", code, count=50)  # posting there is refused as well
    event = dm("forbidden question")
    await h.send(event)
    await h.idle()
    assert len(h.fake.calls_to("chat.startStream")) == 1
    assert not h.fake.calls_to("chat.postMessage") and not h.fake.calls_to("chat.update")


# --- 6. tiers ------------------------------------------------------------------------------------


def test_start_and_stop_are_separate_tier2_budgets():
    from adapters.slack.admission import START_RATE, STOP_RATE, Edges

    budgets = Budgets(clock=Clock())
    edges = Edges(budgets.get("start", START_RATE), budgets.get("stop", STOP_RATE))
    assert sum(edges.admit() for _ in range(30)) == 10, "a start from one bucket, a stop from the other"


async def test_rotations_restarts_and_failure_stops_are_paid_from_the_tier2_budgets(fake):
    from adapters.slack.admission import START_RATE, STOP_RATE, Edges

    clock = Clock()
    budgets = Budgets(clock=clock)
    start, stop, append = (budgets.get("start", START_RATE), budgets.get("stop", STOP_RATE),
                           budgets.get("append", STREAM_RATE))
    assert Edges(start, stop).admit()  # what admission takes for a native answer
    sink = NativeStreamSink(
        client_of(fake), "C1", "1.0", budget_key="append", stream_budget=append, edit_budget=budgets.get("e", None),
        start_budget=start, stop_budget=stop, prepaid=True, recipient_team_id="T1", recipient_user_id="U1",
        clock=clock, sleep=no_sleep,
    )
    await sink.show(Frame("one"))  # the first frame: a start, taken by admission
    await append.acquire()  # the renderer pays an append for every later frame
    await sink.show(Frame("one two"))
    clock.now += 241
    await append.acquire()
    await sink.show(Frame("one two three"))  # rotation: a stop and a start
    fake.fail_next("chat.appendStream", "message_not_in_streaming_state")
    await append.acquire()
    await sink.show(Frame("one two three four"))  # the stream ended under us: a restart
    await sink.fail("Something broke.")  # a failure stop
    assert start.granted == len(fake.calls_to("chat.startStream")) == 3
    assert stop.granted == len(fake.calls_to("chat.stopStream")) == 2
    assert append.granted == len(fake.calls_to("chat.appendStream")) == 2


async def test_rate_limited_is_a_rate_limit_too(fake):
    client = client_of(fake)
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    fake.fail_next("chat.postEphemeral", "rate_limited")
    await call(client.chat_postEphemeral, channel="C1", user="U1", text="hi", sleep=sleep)
    assert len(fake.ephemerals) == 1 and waited, "waited and retried"
    posted = await client.chat_postMessage(channel="C1", text="x")
    fake.fail_next("chat.update", "rate_limited")
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts=posted["ts"], text="y")
    assert isinstance(to_platform_error(err.value, "update"), PlatformRateLimited)


async def test_an_edited_mention_is_not_answered_again_after_the_dedupe_window(harness_factory):
    h = await harness_factory(streaming="edit")
    h.sim.script_answer(text="Answered.", match="", times=3)
    # What Slack sends when someone edits a mention answered long ago (its dedupe row expired).
    edited = mention("what is the VPN address?")
    edited["edited"] = {"user": "U1", "ts": new_ts()}
    await h.send(edited)
    sentinel = dm("sentinel question")
    await h.send(sentinel)
    await h.answered("D1", sentinel["ts"])
    assert questions(h.sim) == ["sentinel question"]
    assert h.answers("C1", edited["ts"]) == []


# --- 7. the app manifest -------------------------------------------------------------------------


def test_manifest_validates_against_slacks_manifest_schema():
    schema = json.loads((ROOT / "tests" / "specs" / "slack-manifest.schema.2.0.0.json").read_text())
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []
    broken = {**manifest, "settings": {**manifest["settings"], "no_such_setting": True}}
    assert list(validator.iter_errors(broken)), "the schema does refuse what Slack refuses"
