"""MoveworksClient against the real simulator over loopback HTTP (plus tiny aiohttp fakes for
wire-level garbage the simulator does not produce)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from bridge.moveworks.auth import ApiKeyAuth, ClientCredentialsAuth, parse_retry_after
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import (
    AuthError,
    InvalidRequest,
    MoveworksUnavailable,
    NotFound,
    RateLimited,
    StreamFailed,
)
from bridge.moveworks.models import (
    Message,
    OutputDelta,
    ReasoningMessage,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    ResponseInProgress,
    StreamError,
)
from bridge.simulator import Simulator, SimulatorConfig

ASSISTANT = "moveworks-bridge-dev"
EMPLOYEE = "employee@example.com"
OTHER = "other@example.com"


class Sleeps:
    """An injected `sleep` that records the requested durations instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(
        SimulatorConfig(
            assistant_name=ASSISTANT,
            api_keys={"sim-key": EMPLOYEE, "other-key": OTHER},
            client_id="sim-client",
            client_secret="sim-secret",
            client_identity="service@example.com",
            token_ttl=3600,
            token_body="flat",
            pace=0,
        )
    )
    await simulator.start(host="127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(base_url: str, sleeps: Sleeps | None = None, key: str = "sim-key", **kw: Any) -> MoveworksClient:
    kw.setdefault("poll_interval", 0.01)
    return MoveworksClient(base_url, ASSISTANT, ApiKeyAuth(key), sleep=sleeps or Sleeps(), **kw)


@pytest_asyncio.fixture
async def client(sim: Simulator, sleeps: Sleeps) -> AsyncIterator[MoveworksClient]:
    c = make_client(sim.base_url, sleeps)
    try:
        yield c
    finally:
        await c.aclose()


async def collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in agen]


def requests_to(sim: Simulator, method: str, suffix: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["method"] == method and r["path"].endswith(suffix)]


def render(events: list[Any]) -> dict[str, str]:
    """What a consumer shows: the latest snapshot of each output id (replace, never append)."""
    shown: dict[str, str] = {}
    for event in events:
        if isinstance(event, OutputDelta):
            out = event.output
            key = out.message_id if isinstance(out, Message) else out.reasoning_message_id
            shown[key] = out.text
    return shown


# --------------------------------------------------------------------------- streaming
@pytest.mark.asyncio
async def test_stream_yields_every_event_type_with_cumulative_snapshots(sim, client):
    answer = "Your laptop refresh is due in **March**; order it from the catalog."
    sim.script_answer(
        text=answer,
        reasoning=["Looking up your device", "Checking the refresh policy"],
        citations=[{"title": "Refresh policy", "url": "https://kb.example.com/refresh", "offset": 10}],
        actions=[{"type": "URL_ACTION", "label": "Catalog", "url": "https://it.example.com/catalog"}],
        chunks=4,
    )
    conv = await client.create_conversation(EMPLOYEE, title="Laptop")
    assert conv.conversation_id.startswith("conv_") and conv.title == "Laptop"

    events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="When is my laptop refresh?"))

    assert isinstance(events[0], ResponseCreated)
    assert isinstance(events[1], ResponseInProgress)
    assert isinstance(events[-1], ResponseCompleted)
    response_id = events[0].response.response_id
    assert all(getattr(e, "response", None) is None or e.response.response_id == response_id for e in events)

    deltas = [e for e in events if isinstance(e, OutputDelta)]
    reasoning = [d.output.text for d in deltas if isinstance(d.output, ReasoningMessage)]
    message = [d.output.text for d in deltas if isinstance(d.output, Message)]
    assert len(reasoning) >= 2 and len(message) == 4
    # cumulative snapshots: each one contains everything before it — a consumer replaces
    assert all(later.startswith(earlier) for earlier, later in zip(message, message[1:]))
    assert message[-1] == answer
    assert "✓ Looking up your device" in reasoning[-1] and "Checking the refresh policy" in reasoning[-1]
    assert len({d.output.message_id for d in deltas if isinstance(d.output, Message)}) == 1
    shown = render(events)
    assert answer in shown.values()

    final = events[-1].response
    assert final.status == "COMPLETED" and final.completed_at
    (msg,) = final.messages
    assert msg.text == answer
    assert msg.citations[0].title == "Refresh policy"
    assert msg.content_references[0].offset == 10
    assert msg.actions[0].url == "https://it.example.com/catalog"
    assert msg.feedback and msg.feedback.helpful

    # the stream POST carried the documented headers (the simulator would 401/403 otherwise)
    (post,) = requests_to(sim, "POST", "/responses/stream")
    assert post["identity"] == EMPLOYEE and post["status"] == 200


@pytest.mark.asyncio
async def test_stream_error_event_is_yielded_then_stream_stops(sim, client):
    sim.script_answer(text="one two three four five six seven eight", chunks=4)
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("stream_error", endpoint="stream")
    events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="hello"))
    assert isinstance(events[-1], StreamError)
    assert events[-1].code == "INTERNAL_ERROR" and events[-1].message
    assert not any(isinstance(e, (ResponseCompleted, ResponseFailed)) for e in events)
    assert len(requests_to(sim, "POST", "/responses/stream")) == 1


@pytest.mark.asyncio
async def test_response_failed_is_terminal(sim, client):
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("response_failed", endpoint="stream")
    events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="hello"))
    assert isinstance(events[0], ResponseCreated)
    assert isinstance(events[-1], ResponseFailed)
    assert events[-1].response.status == "FAILED"
    assert events[-1].response.error and events[-1].response.error.code == "INTERNAL_ERROR"


@pytest.mark.asyncio
async def test_stream_cut_falls_back_to_polling_and_gives_the_exact_answer(sim, client):
    answer = "To connect, open GlobalConnect and sign in with SSO. Then pick the nearest gateway."
    sim.script_answer(text=answer, chunks=3)
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("stream_cut", endpoint="stream")

    events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="vpn?"))

    assert isinstance(events[0], ResponseCreated)
    assert isinstance(events[-1], ResponseCompleted)
    assert events[-1].response.response_id == events[0].response.response_id
    assert [m.text for m in events[-1].response.messages] == [answer]
    # the final text is also delivered as a snapshot before the terminal event
    assert isinstance(events[-2], OutputDelta) and events[-2].output.text == answer
    assert answer in render(events).values()
    assert requests_to(sim, "GET", f"/responses/{events[0].response.response_id}")
    assert len(requests_to(sim, "POST", "/responses/stream")) == 1  # recovered, not re-asked


@pytest.mark.asyncio
async def test_polling_gives_up_after_poll_timeout(sim, sleeps):
    sim.script_answer(text="slow answer", delay=5)
    c = make_client(sim.base_url, sleeps, poll_timeout=0.05, poll_interval=0.01)
    try:
        conv = await c.create_conversation(EMPLOYEE)
        sim.inject_fault("stream_cut", endpoint="stream")
        with pytest.raises(StreamFailed) as info:
            await collect(c.stream_response(EMPLOYEE, conv.conversation_id, text="take your time"))
        assert info.value.code == "TIMEOUT"
    finally:
        await c.aclose()


@pytest.mark.asyncio
async def test_stream_read_timeout_falls_back_to_polling(sim):
    sim.script_answer(text="Worth the wait.")
    c = MoveworksClient(
        sim.base_url, ASSISTANT, ApiKeyAuth("sim-key"), poll_interval=0.05,
        stream_timeout=httpx.Timeout(5.0, read=0.2),
    )
    try:
        conv = await c.create_conversation(EMPLOYEE)
        sim.inject_fault("slow", endpoint="stream", delay=0.6)  # silence after RESPONSE_IN_PROGRESS
        events = await collect(c.stream_response(EMPLOYEE, conv.conversation_id, text="slow one"))
    finally:
        await c.aclose()
    assert isinstance(events[-1], ResponseCompleted)
    assert [m.text for m in events[-1].response.messages] == ["Worth the wait."]
    assert len(requests_to(sim, "POST", "/responses/stream")) == 1


@pytest.mark.asyncio
async def test_json_read_timeout_is_retried_for_gets(sim, sleeps):
    c = make_client(sim.base_url, sleeps, timeout=httpx.Timeout(5.0, read=0.2))
    try:
        conv = await c.create_conversation(EMPLOYEE)
        sim.inject_fault("slow", endpoint="any", delay=0.5)
        assert (await c.get_conversation(EMPLOYEE, conv.conversation_id)).conversation_id == conv.conversation_id
        assert len(sleeps.calls) == 1
    finally:
        await c.aclose()


# --------------------------------------------------------------------------- async create + poll
@pytest.mark.asyncio
async def test_create_response_then_wait(sim, client):
    sim.script_answer(text="Polled answer.")
    conv = await client.create_conversation(EMPLOYEE)
    created = await client.create_response(EMPLOYEE, conv.conversation_id, text="poll me")
    assert created.response_id.startswith("resp_")
    final = await client.wait_for_response(EMPLOYEE, conv.conversation_id, created.response_id)
    assert final.status == "COMPLETED" and [m.text for m in final.messages] == ["Polled answer."]
    msgs = await client.list_response_messages(EMPLOYEE, conv.conversation_id, created.response_id)
    assert sorted(m.actor for m in msgs) == ["ASSISTANT", "USER"]
    assert next(m for m in msgs if m.actor == "USER").text == "poll me"


# --------------------------------------------------------------------------- retries
@pytest.mark.asyncio
async def test_rate_limit_retry_after_is_honoured(sim, client, sleeps):
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("rate_limit", endpoint="any", retry_after=7)
    again = await client.get_conversation(EMPLOYEE, conv.conversation_id)
    assert again.conversation_id == conv.conversation_id
    assert sleeps.calls == [7.0]
    statuses = [r["status"] for r in requests_to(sim, "GET", conv.conversation_id)]
    assert statuses == [429, 200]


@pytest.mark.asyncio
async def test_rate_limit_exhausted_raises_rate_limited(sim, client, sleeps):
    sim.inject_fault("rate_limit", endpoint="any", count=5, retry_after=2)
    with pytest.raises(RateLimited) as info:
        await client.list_conversations(EMPLOYEE)
    assert info.value.status == 429 and info.value.retry_after == 2
    assert info.value.code == "RATE_LIMIT_EXCEEDED"
    assert sleeps.calls == [2.0, 2.0]  # 3 attempts in total


@pytest.mark.asyncio
async def test_create_conversation_is_retried_on_429_only(sim, client, sleeps):
    sim.inject_fault("rate_limit", endpoint="create_conversation")
    await client.create_conversation(EMPLOYEE)
    assert [r["status"] for r in requests_to(sim, "POST", "/conversations")] == [429, 201]
    assert len(sleeps.calls) == 1 and 0.5 <= sleeps.calls[0] <= 1.0  # jittered backoff

    sim.inject_fault("server_error", endpoint="create_conversation")
    with pytest.raises(MoveworksUnavailable) as info:
        await client.create_conversation(EMPLOYEE)
    assert info.value.status == 500 and info.value.code == "INTERNAL_ERROR"
    assert len(requests_to(sim, "POST", "/conversations")) == 3  # no blind retry after a 500


@pytest.mark.asyncio
async def test_server_error_is_retried_on_gets(sim, client, sleeps):
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("server_error", endpoint="messages", count=2)
    page = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id)
    assert page.items == () and page.next_cursor is None
    assert [r["status"] for r in requests_to(sim, "GET", "/messages")] == [500, 500, 200]
    assert len(sleeps.calls) == 2 and sleeps.calls[1] > sleeps.calls[0] * 0.9  # exponential-ish


@pytest.mark.asyncio
async def test_persistent_server_error_raises_with_root_uuid_logged(sim, client, caplog):
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("server_error", endpoint="any", count=3)
    caplog.set_level(logging.DEBUG, logger="bridge.moveworks")
    with pytest.raises(MoveworksUnavailable) as info:
        await client.get_conversation(EMPLOYEE, conv.conversation_id)
    err = info.value
    assert err.status == 500 and err.code == "INTERNAL_ERROR" and err.root_uuid
    assert err.root_uuid in str(err)
    assert err.root_uuid in caplog.text
    assert "sim-key" not in caplog.text and "sim-key" not in str(err)


@pytest.mark.asyncio
async def test_create_response_not_duplicated_after_500(sim, client):
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("server_error", endpoint="create_response")
    created = await client.create_response(EMPLOYEE, conv.conversation_id, text="only once please")
    final = await client.wait_for_response(EMPLOYEE, conv.conversation_id, created.response_id)
    assert final.status == "COMPLETED"
    page = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id)
    users = [m for m in page.items if m.actor == "USER"]
    assert [m.text for m in users] == ["only once please"]
    assert len([r for r in requests_to(sim, "POST", "/responses") if r["status"] in (200, 202)]) == 1


@pytest.mark.asyncio
async def test_stream_not_duplicated_after_500(sim, client):
    sim.script_answer(text="Streamed once.")
    conv = await client.create_conversation(EMPLOYEE)
    sim.inject_fault("server_error", endpoint="stream")
    events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="stream once please"))
    assert isinstance(events[-1], ResponseCompleted)
    assert [m.text for m in events[-1].response.messages] == ["Streamed once."]
    page = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id)
    assert [m.text for m in page.items if m.actor == "USER"] == ["stream once please"]


class LoseResponses(httpx.AsyncBaseTransport):
    """A real transport that lets the first `count` matching requests reach the server and then
    drops the connection before the client sees the answer — the truly ambiguous failure."""

    def __init__(self, suffix: str, count: int = 1) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.suffix = suffix
        self.count = count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith(self.suffix) and self.count > 0:
            self.count -= 1
            await asyncio.sleep(0.05)  # let the server register the turn
            await response.aclose()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.asyncio
async def test_lost_create_response_reply_finds_the_registered_turn(sim, sleeps):
    c = make_client(sim.base_url, sleeps, transport=LoseResponses("/responses"))
    try:
        conv = await c.create_conversation(EMPLOYEE)
        created = await c.create_response(EMPLOYEE, conv.conversation_id, text="did it arrive?")
        final = await c.wait_for_response(EMPLOYEE, conv.conversation_id, created.response_id)
        assert final.status == "COMPLETED"
        assert len(requests_to(sim, "POST", "/responses")) == 1  # never re-posted
        page = await c.list_conversation_messages(EMPLOYEE, conv.conversation_id)
        assert [m.text for m in page.items if m.actor == "USER"] == ["did it arrive?"]
    finally:
        await c.aclose()


@pytest.mark.asyncio
async def test_lost_stream_before_created_finds_the_registered_turn(sim, sleeps):
    c = make_client(sim.base_url, sleeps, transport=LoseResponses("/responses/stream"))
    try:
        conv = await c.create_conversation(EMPLOYEE)
        # the same text was asked earlier in this conversation: must not be mistaken for this turn
        first = await c.create_response(EMPLOYEE, conv.conversation_id, text="again?")
        await c.wait_for_response(EMPLOYEE, conv.conversation_id, first.response_id)
        sim.script_answer(text="Recovered through history.")
        events = await collect(c.stream_response(EMPLOYEE, conv.conversation_id, text="again?"))
        assert isinstance(events[0], ResponseCreated) and isinstance(events[-1], ResponseCompleted)
        assert events[0].response.response_id != first.response_id
        assert [m.text for m in events[-1].response.messages] == ["Recovered through history."]
        assert len(requests_to(sim, "POST", "/responses/stream")) == 1
        page = await c.list_conversation_messages(EMPLOYEE, conv.conversation_id)
        assert [m.text for m in page.items if m.actor == "USER"] == ["again?", "again?"]
    finally:
        await c.aclose()


# --------------------------------------------------------------------------- auth in the client
@pytest.mark.asyncio
async def test_expired_token_is_refreshed_invisibly(sim, sleeps):
    auth = ClientCredentialsAuth(sim.token_url, "sim-client", "sim-secret")
    c = MoveworksClient(sim.base_url, ASSISTANT, auth, sleep=sleeps)
    try:
        conv = await c.create_conversation(None)
        sim.inject_fault("expire_tokens")
        again = await c.get_conversation(None, conv.conversation_id)  # 401 → refresh → retry
        assert again.conversation_id == conv.conversation_id
        assert len(requests_to(sim, "POST", "/oauth/v1/token")) == 2
        assert [r["status"] for r in requests_to(sim, "GET", conv.conversation_id)] == [401, 200]
        assert sleeps.calls == []  # a refresh is not a backoff

        sim.inject_fault("expire_tokens")
        events = await collect(c.stream_response(None, conv.conversation_id, text="after expiry"))
        assert isinstance(events[-1], ResponseCompleted)
        assert len(requests_to(sim, "POST", "/oauth/v1/token")) == 3
    finally:
        await c.aclose()
        await auth.aclose()


@pytest.mark.asyncio
async def test_bad_api_key_and_wrong_assistant(sim, sleeps):
    c = make_client(sim.base_url, sleeps, key="not-a-real-key-123")
    try:
        with pytest.raises(AuthError) as info:
            await c.list_conversations(EMPLOYEE)
        assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"
        assert "not-a-real-key-123" not in str(info.value)
    finally:
        await c.aclose()
    c = MoveworksClient(sim.base_url, "someone-else", ApiKeyAuth("sim-key"), sleep=sleeps)
    try:
        with pytest.raises(AuthError) as info:
            await c.list_conversations(EMPLOYEE)
        assert info.value.status == 403 and info.value.code == "FORBIDDEN"
    finally:
        await c.aclose()


@pytest.mark.asyncio
async def test_conversation_of_another_identity_is_not_found(sim, client, sleeps):
    conv = await client.create_conversation(EMPLOYEE)
    other = make_client(sim.base_url, sleeps, key="other-key")
    try:
        with pytest.raises(NotFound) as info:
            await other.get_conversation(OTHER, conv.conversation_id)
        assert info.value.status == 404 and info.value.code == "NOT_FOUND"
        with pytest.raises(NotFound):
            await collect(other.stream_response(OTHER, conv.conversation_id, text="hi"))
        assert (await other.list_conversations(OTHER)).items == ()
    finally:
        await other.aclose()


# --------------------------------------------------------------------------- pagination, events, feedback
@pytest.mark.asyncio
async def test_message_and_conversation_pagination(sim, client):
    conv = await client.create_conversation(EMPLOYEE)
    for i in range(3):
        r = await client.create_response(EMPLOYEE, conv.conversation_id, text=f"question {i}")
        await client.wait_for_response(EMPLOYEE, conv.conversation_id, r.response_id)
    first = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id, limit=4)
    assert len(first.items) == 4 and first.next_cursor
    second = await client.list_conversation_messages(EMPLOYEE, conv.conversation_id, cursor=first.next_cursor, limit=4)
    assert len(second.items) == 2 and second.next_cursor is None
    everything = first.items + second.items
    assert len({m.message_id for m in everything}) == 6
    assert [m.text for m in everything if m.actor == "USER"] == ["question 2", "question 1", "question 0"]  # newest first

    with pytest.raises(InvalidRequest) as info:
        await client.list_conversation_messages(EMPLOYEE, conv.conversation_id, cursor="garbage!")
    assert info.value.code == "INVALID_CURSOR" and info.value.status == 400

    for _ in range(2):
        await client.create_conversation(EMPLOYEE)
    page1 = await client.list_conversations(EMPLOYEE, limit=2)
    page2 = await client.list_conversations(EMPLOYEE, cursor=page1.next_cursor, limit=2)
    assert len(page1.items) == 2 and len(page2.items) == 1 and page2.next_cursor is None


@pytest.mark.asyncio
async def test_events_pagination_and_checkpoint(sim, client):
    conv = await client.create_conversation(EMPLOYEE)
    injected = [sim.inject_event(EMPLOYEE, f"notice {i}", conversation_id=conv.conversation_id) for i in range(5)]
    sim.inject_event(OTHER, "not yours")
    seen = []
    cursor = None
    while True:
        page = await client.list_events(EMPLOYEE, cursor=cursor, limit=2)
        seen.extend(page.items)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert [e.message.text for e in seen] == [f"notice {i}" for i in range(5)]  # oldest first
    assert all(e.type == "MESSAGE_EVENT" and e.conversation_id == conv.conversation_id for e in seen)
    assert [e.event_id for e in seen] == [i["event_id"] for i in injected]

    after = await client.list_events(EMPLOYEE, starting_after=seen[2].event_id)
    assert [e.event_id for e in after.items] == [e.event_id for e in seen[3:]]
    window = await client.list_events(EMPLOYEE, starting_after=seen[0].event_id, ending_at=seen[2].event_id)
    assert [e.event_id for e in window.items] == [e.event_id for e in seen[1:3]]
    scoped = await client.list_events(EMPLOYEE, conv.conversation_id)
    assert len(scoped.items) == 5


@pytest.mark.asyncio
async def test_submit_feedback(sim, client):
    conv = await client.create_conversation(EMPLOYEE)
    events = await collect(client.stream_response(EMPLOYEE, conv.conversation_id, text="reset my password"))
    final = events[-1].response
    (msg,) = final.messages
    assert msg.feedback and msg.feedback.helpful
    sim.inject_fault("rate_limit", endpoint="feedback", retry_after=1)
    await client.submit_feedback(
        EMPLOYEE, conv.conversation_id, final.response_id, msg.message_id, msg.feedback.helpful, "thanks"
    )
    assert [r["status"] for r in requests_to(sim, "POST", "/feedback")] == [429, 200]
    with pytest.raises(InvalidRequest) as info:
        await client.submit_feedback(EMPLOYEE, conv.conversation_id, final.response_id, msg.message_id, "bogus")
    assert info.value.code == "INVALID_REQUEST"


@pytest.mark.asyncio
async def test_on_request_hook_sees_every_attempt(sim, sleeps):
    seen: list[tuple[str, str, int | None, float]] = []
    c = make_client(sim.base_url, sleeps, on_request=lambda *a: seen.append(a))
    try:
        conv = await c.create_conversation(EMPLOYEE)
        await collect(c.stream_response(EMPLOYEE, conv.conversation_id, text="hi"))
        sim.inject_fault("server_error", endpoint="messages")
        await c.list_conversation_messages(EMPLOYEE, conv.conversation_id)
    finally:
        await c.aclose()
    assert [(m, e, s) for m, e, s, _ in seen] == [
        ("POST", "create_conversation", 201),
        ("POST", "stream", 200),
        ("GET", "list_conversation_messages", 500),
        ("GET", "list_conversation_messages", 200),
    ]
    assert all(isinstance(t, float) and t >= 0 for *_, t in seen)


# --------------------------------------------------------------------------- wire-level fakes
class FakeServer:
    """A tiny aiohttp server for payloads the simulator never sends."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.hits: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    def route(self, method: str, path: str, handler: Any) -> None:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.hits[path] = self.hits.get(path, 0) + 1
            return await handler(request)

        self.app.router.add_route(method, path, counted)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/rest/v1beta1"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    yield server
    await server.stop()


def _response(status: str, outputs: list[Any] | None = None) -> dict[str, Any]:
    return {"response_id": "resp_1", "conversation_id": "conv_1", "status": status,
            "created_at": "2026-01-01T00:00:00Z", "outputs": outputs or []}


def _message(mid: str, text: str, actor: str = "ASSISTANT", rid: str = "resp_1") -> dict[str, Any]:
    return {"message_id": mid, "conversation_id": "conv_1", "response_id": rid, "actor": actor,
            "created_at": "2026-01-01T00:00:01Z",
            "content": {"type": "COMMONMARK_TEXT", "commonmark_text": {"text": text}}}


@pytest.mark.asyncio
async def test_malformed_sse_lines_are_skipped(fake, sleeps, caplog):
    delta = {"event_type": "RESPONSE_OUTPUT_DELTA", "sequence_number": 3,
             "output": {"type": "MESSAGE", "message": _message("msg_1", "Hello")}, "surprise": [1, 2]}
    body = "\r\n".join([
        ": keep-alive comment",
        "retry: 1000",
        "",
        "event: RESPONSE_CREATED",
        "data: " + json.dumps({"event_type": "RESPONSE_CREATED", "sequence_number": 1, "response": _response("CREATED")}),
        "",
        "this line has no colon at all",
        "event: RESPONSE_OUTPUT_DELTA",
        "data: {not json",
        "",
        "event: PING",
        "data: {}",
        "",
        "event: SOMETHING_NEW",
        'data: {"event_type": "SOMETHING_NEW", "x": 1}',
        "",
        "event: RESPONSE_OUTPUT_DELTA",
        'data: {"event_type": "RESPONSE_OUTPUT_DELTA", "output": {"type": "MESSAGE", "message": {"actor": "ASSISTANT"}}}',
        "",
        "event: RESPONSE_OUTPUT_DELTA",
        'data: {"event_type": "RESPONSE_OUTPUT_DELTA", "output": {"type": "HOLOGRAM", "hologram": {}}}',
        "",
        "data: [1, 2, 3]",
        "",
        "data: \x00\x01\x02 binary-ish",
        "",
        # event_type in the data wins over the SSE event name
        "event: message",
        "data: " + json.dumps(delta),
        "",
        "event: RESPONSE_COMPLETED",
        "data: " + json.dumps({"event_type": "RESPONSE_COMPLETED", "sequence_number": 4,
                               "response": _response("COMPLETED", [{"type": "MESSAGE", "message": _message("msg_1", "Hello")}])}),
        "",
        "",
    ])

    async def stream(request: web.Request) -> web.StreamResponse:
        assert request.headers["Accept"] == "text/event-stream"
        assert request.headers["Assistant-Name"] == ASSISTANT
        assert request.headers["Authorization"] == "Bearer sim-key"
        assert await request.json() == {"input": {"text": "hi"}}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in (body[:37], body[37:200], body[200:]):  # split mid-line on purpose
            await resp.write(part.encode())
        await resp.write_eof()
        return resp

    fake.route("POST", "/rest/v1beta1/conversations/conv_1/responses/stream", stream)
    await fake.start()
    c = make_client(fake.base_url, sleeps)
    caplog.set_level(logging.DEBUG, logger="bridge.moveworks")
    try:
        events = await collect(c.stream_response(EMPLOYEE, "conv_1", text="hi"))
    finally:
        await c.aclose()
    assert [type(e) for e in events] == [ResponseCreated, OutputDelta, ResponseCompleted]
    assert events[1].output.text == "Hello"
    assert "malformed" in caplog.text


@pytest.mark.asyncio
async def test_html_502_is_unavailable_with_a_clear_message(fake, sleeps):
    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, content_type="text/html",
                            text="<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>",
                            headers={"x-moveworks-root-uuid": "root-123"})

    fake.route("GET", "/rest/v1beta1/conversations/conv_1", bad_gateway)
    await fake.start()
    c = make_client(fake.base_url, sleeps)
    try:
        with pytest.raises(MoveworksUnavailable) as info:
            await c.get_conversation(EMPLOYEE, "conv_1")
    finally:
        await c.aclose()
    err = info.value
    assert err.status == 502 and err.root_uuid == "root-123" and err.code is None
    assert "502" in str(err) and "non-JSON body (text/html)" in str(err) and "Bad Gateway" in str(err)
    assert "<html>" not in str(err)
    assert fake.hits["/rest/v1beta1/conversations/conv_1"] == 3


@pytest.mark.asyncio
async def test_flat_error_body_and_trace_id(fake, sleeps):
    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"code": "NOT_FOUND", "message": "no such conversation"}, status=404,
                                 headers={"x-trace-id": "trace-9"})

    fake.route("GET", "/rest/v1beta1/conversations/conv_x", not_found)
    await fake.start()
    c = make_client(fake.base_url, sleeps)
    try:
        with pytest.raises(NotFound) as info:
            await c.get_conversation(EMPLOYEE, "conv_x")
    finally:
        await c.aclose()
    assert info.value.code == "NOT_FOUND" and info.value.root_uuid == "trace-9"
    assert "no such conversation" in str(info.value)
    assert fake.hits["/rest/v1beta1/conversations/conv_x"] == 1  # 404 is never retried


@pytest.mark.asyncio
async def test_completed_without_outputs_reads_history(fake, sleeps):
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for kind, status in (("RESPONSE_CREATED", "CREATED"), ("RESPONSE_COMPLETED", "COMPLETED")):
            data = {"event_type": kind, "response": _response(status)}
            await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        await resp.write_eof()
        return resp

    async def response_messages(request: web.Request) -> web.Response:
        return web.json_response({"messages": [_message("msg_u", "exit chat", "USER")]})

    async def history(request: web.Request) -> web.Response:
        assert request.query["limit"] == "10"
        return web.json_response({"messages": [  # newest first; the reply is filed under resp_0
            _message("msg_b", "You are back with the assistant.", rid="resp_0"),
            _message("msg_a", "Live chat ended.", rid="resp_0"),
            _message("msg_u", "exit chat", "USER"),
            _message("msg_old", "older answer", rid="resp_0"),
        ], "metadata": {"next_cursor": None}})

    fake.route("POST", "/rest/v1beta1/conversations/conv_1/responses/stream", stream)
    fake.route("GET", "/rest/v1beta1/conversations/conv_1/responses/resp_1/messages", response_messages)
    fake.route("GET", "/rest/v1beta1/conversations/conv_1/messages", history)
    await fake.start()
    c = make_client(fake.base_url, sleeps)
    try:
        events = await collect(c.stream_response(EMPLOYEE, "conv_1", callback_id="cb_exit"))
    finally:
        await c.aclose()
    final = events[-1]
    assert isinstance(final, ResponseCompleted)
    assert [m.text for m in final.response.messages] == ["Live chat ended.", "You are back with the assistant."]
    assert sleeps.calls == [1.5]


# --------------------------------------------------------------------------- small units
def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


@pytest.mark.asyncio
async def test_input_validation():
    async with MoveworksClient("http://127.0.0.1:9/x", ASSISTANT, ApiKeyAuth("k")) as c:
        with pytest.raises(ValueError):
            c.stream_response(EMPLOYEE, "conv_1")
        with pytest.raises(ValueError):
            c.stream_response(EMPLOYEE, "conv_1", text="a", callback_id="b")
        with pytest.raises(ValueError):
            await c.create_response(EMPLOYEE, "conv_1", text="   ")
    with pytest.raises(ValueError):
        MoveworksClient("http://x", "", ApiKeyAuth("k"))
    with pytest.raises(ValueError):
        MoveworksClient("ftp://x", ASSISTANT, ApiKeyAuth("k"))
