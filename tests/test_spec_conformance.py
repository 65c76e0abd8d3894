"""Our real MoveworksClient and the simulator, both checked against Moveworks' published OpenAPI files.

Every request the client sends (method, path, query, headers, body) is checked against the spec of
the base it talks to, and every response and stream event the simulator sends back is checked too
(tests/openapi_spec.py, tests/specs/moveworks/SOURCES.md), through the main flows: create and read
conversations, stream an answer (also when the stream breaks), create and poll a response, list
messages and events with cursors, submit feedback, press a button.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bridge.moveworks.auth import ApiKeyAuth
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import InvalidRequest
from bridge.moveworks.models import OutputDelta, ResponseCompleted
from bridge.simulator import Simulator, SimulatorConfig
from tests.openapi_spec import SpecWatch, check_request, spec_for, split_base

ASSISTANT = "moveworks-bridge-dev"
EMPLOYEE = "employee@example.com"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, keeping a copy of every request as it went on the wire."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[tuple[str, str, list[tuple[str, str]], dict[str, str], bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.requests.append(
            (request.method, request.url.path, list(request.url.params.multi_items()), dict(request.headers), body)
        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def problems(self) -> list[str]:
        found = []
        for method, path, query, headers, body in self.requests:
            found += [f"{p}  <- {method} {path}" for p in check_request(method, path, query, headers, body or None)]
        return found

    def operations(self) -> set[str]:
        names = set()
        for method, path, *_ in self.requests:
            base, rest = split_base(path) or ("", path)
            op = spec_for(base).operation(method, rest) if base else None
            names.add(op[0].name if op else f"{method} {path}")
        return names

    def query_names(self) -> set[str]:
        return {name for _, _, query, _, _ in self.requests for name, _ in query}


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[tuple[Simulator, SpecWatch]]:
    simulator = Simulator(SimulatorConfig(assistant_name=ASSISTANT, api_keys={"sim-key": EMPLOYEE}, pace=0))
    watch = SpecWatch()
    simulator.taps.append(watch)
    await simulator.start()
    try:
        yield simulator, watch
    finally:
        await simulator.stop()


def client_for(simulator: Simulator, base: str, wire: RecordingTransport) -> MoveworksClient:
    return MoveworksClient(f"{simulator.url}{base}", ASSISTANT, ApiKeyAuth("sim-key"), sleep=no_sleep,
                           poll_interval=0.01, transport=wire)


async def collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in agen]


@pytest.mark.parametrize("base", ["/assistant/v1", "/rest/v1beta1"])
async def test_main_flows_conform_to_the_published_spec(sim, base: str) -> None:
    simulator, watch = sim
    wire = RecordingTransport()
    client = client_for(simulator, base, wire)
    try:
        # conversations
        conv = await client.create_conversation(EMPLOYEE)
        assert conv.title is None  # untitled: no title yet, and never a null one on the wire
        titled = await client.create_conversation(EMPLOYEE, title="VPN help")
        assert (await client.get_conversation(EMPLOYEE, titled.conversation_id)).title == "VPN help"
        first = await client.list_conversations(EMPLOYEE, limit=1)
        assert first.next_cursor is not None
        second = await client.list_conversations(EMPLOYEE, cursor=first.next_cursor, limit=1)
        assert {c.conversation_id for c in first.items + second.items} == {conv.conversation_id,
                                                                           titled.conversation_id}

        # a streamed answer, then the same response read back
        events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id,
                                                       text="How do I reset my password?"))
        assert any(isinstance(e, OutputDelta) for e in events)
        done = events[-1]
        assert isinstance(done, ResponseCompleted)
        final = (await client.get_response(EMPLOYEE, conv.conversation_id, done.response.response_id)).messages[-1]
        assert final.citations and final.feedback is not None

        # a stream that breaks after RESPONSE_CREATED is finished by polling get-response
        simulator.inject_fault("stream_cut")
        cut = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="my vpn is down"))
        assert isinstance(cut[-1], ResponseCompleted)
        # a 500 on the stream is ambiguous: the client looks for the turn in history, then retries
        simulator.inject_fault("server_error", endpoint="stream")
        retried = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="laptop refresh"))
        assert isinstance(retried[-1], ResponseCompleted)

        # create a response and poll it
        created = await client.create_response(EMPLOYEE, conv.conversation_id, text="how much PTO do I have")
        polled = await client.wait_for_response(EMPLOYEE, conv.conversation_id, created.response_id)
        assert polled.status == "COMPLETED"

        # history, page by page
        seen, cursor = [], None
        while True:
            page = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id, cursor=cursor, limit=3)
            seen += [m.message_id for m in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)) == 8  # four turns, a question and an answer each
        turn = await client.list_response_messages(EMPLOYEE, conv.conversation_id, done.response.response_id)
        assert [m.actor for m in turn] == ["USER", "ASSISTANT"]

        # events: a range, pages with cursors, one conversation
        made = [simulator.inject_event(EMPLOYEE, f"Update {i}", conversation_id=conv.conversation_id)["event_id"]
                for i in range(5)]
        page = await client.list_events(EMPLOYEE, starting_after=made[0], limit=2)
        got = [e.event_id for e in page.items]
        while page.next_cursor:
            page = await client.list_events(EMPLOYEE, starting_after=made[0], cursor=page.next_cursor, limit=2)
            got += [e.event_id for e in page.items]
        assert got == made[1:]
        window = await client.list_events(EMPLOYEE, starting_after=made[0], ending_at=made[2])
        assert [e.event_id for e in window.items] == made[1:3]
        scoped = await client.list_events(EMPLOYEE, conv.conversation_id)
        assert [e.event_id for e in scoped.items] == made

        # feedback
        assert final.feedback.helpful
        await client.submit_feedback(EMPLOYEE, conv.conversation_id, done.response.response_id, final.message_id,
                                     final.feedback.helpful, "clear steps")
        assert simulator.state.feedback[-1]["additional_feedback"] == "clear steps"
    finally:
        await client.aclose()

    assert wire.operations() == {
        "create-conversation", "get-conversation", "list-conversations", "create-response-stream", "get-response",
        "create-response", "list-conversation-messages", "list-response-messages", "list-events", "submit-feedback",
    }
    assert {"cursor", "limit", "starting_after", "ending_at"} <= wire.query_names()
    assert not wire.problems(), "\n".join(wire.problems())
    assert watch.checked.get("event RESPONSE_OUTPUT_DELTA") and watch.checked.get("POST 201")
    assert not watch.problems, "\n".join(watch.problems)


async def test_button_presses_conform_on_assistant_v1_and_are_not_in_the_beta_spec(sim) -> None:
    """`input.callback_id` exists only from /assistant/v1 on: the beta spec's input is `{text}`."""
    simulator, watch = sim
    wire = RecordingTransport()
    client = client_for(simulator, "/assistant/v1", wire)
    try:
        conv = await client.create_conversation(EMPLOYEE)
        events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="reset my password"))
        action = next(a for a in events[-1].response.messages[-1].actions if a.callback_id)
        pressed = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, callback_id=action.callback_id))
        assert isinstance(pressed[-1], ResponseCompleted)
        assert "Done: Reset my password" in pressed[-1].response.messages[-1].text
        history = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id)
        assert history.items[1].content_type == "CALLBACK_ACTION_CONTENT"  # the press, as the user's turn
        assert not wire.problems(), "\n".join(wire.problems())

        client.base_url = f"{simulator.url}/rest/v1beta1"
        with pytest.raises(InvalidRequest):
            await collect(client.stream_response(EMPLOYEE, conv.conversation_id, callback_id=action.callback_id))
    finally:
        await client.aclose()
    beta = [p for p in wire.problems() if p.startswith("/rest/v1beta1")]
    assert beta and all("'text' is a required property" in p for p in beta), beta
    assert not watch.problems, "\n".join(watch.problems)
