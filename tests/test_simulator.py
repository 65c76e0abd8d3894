"""The Moveworks Conversations API simulator, exercised over real HTTP with raw httpx."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid

import httpx
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.simulator import Simulator, SimulatorConfig
from bridge.simulator.ids import new_id
from tests.openapi_spec import SpecWatch

ASSISTANT = "moveworks-bridge-dev"
ALICE, BOB = "alice@example.com", "bob@example.com"
H = {"Authorization": "Bearer key-a", "Assistant-Name": ASSISTANT}
H_BOB = {"Authorization": "Bearer key-b", "Assistant-Name": ASSISTANT}
SSE = {"Accept": "text/event-stream"}


def make_config(**kw) -> SimulatorConfig:
    base = dict(
        assistant_name=ASSISTANT,
        api_keys={"key-a": ALICE, "key-b": BOB},
        pace=0,
    )
    base.update(kw)
    return SimulatorConfig(**base)


@pytest_asyncio.fixture
async def sim():
    """A simulator whose every response and stream event is checked against Moveworks' OpenAPI files."""
    s = Simulator(make_config())
    watch = SpecWatch()
    s.taps.append(watch)
    await s.start(host="127.0.0.1", port=0)
    try:
        yield s
    finally:
        await s.stop()
    assert watch.checked, "nothing was checked against the spec"
    assert not watch.problems, "\n".join(watch.problems)


@pytest_asyncio.fixture
async def client(sim):
    async with httpx.AsyncClient(base_url=sim.base_url, headers=H, timeout=10) as c:
        yield c


def parse_sse(raw: str) -> tuple[list[tuple[str, dict]], list[str]]:
    events, comments = [], []
    for frame in raw.split("\n\n"):
        name, data = None, []
        for line in frame.split("\n"):
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if name:
            events.append((name, json.loads("\n".join(data))))
    return events, comments


async def new_conv(client, title=None) -> str:
    r = await client.post("/conversations", json={"title": title} if title else {})
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


async def stream(client, cid, body) -> tuple[httpx.Response, list[tuple[str, dict]], list[str]]:
    r = await client.post(f"/conversations/{cid}/responses/stream", json=body, headers=SSE)
    events, comments = parse_sse(r.text) if r.status_code == 200 else ([], [])
    return r, events, comments


async def ask(client, cid, text):
    _, events, _ = await stream(client, cid, {"input": {"text": text}})
    assert events[-1][0] == "RESPONSE_COMPLETED", events[-1]
    return events[-1][1]["response"]


async def wait_terminal(client, cid, rid) -> dict:
    for _ in range(200):
        r = await client.get(f"/conversations/{cid}/responses/{rid}")
        assert r.status_code == 200
        if r.json()["status"] in ("COMPLETED", "FAILED"):
            return r.json()
        await asyncio.sleep(0.01)
    raise AssertionError("response never finished")


def text_of(message: dict) -> str:
    """The text of a message's `Content`, whatever its type."""
    content = message["content"]
    return content[content["type"].lower()]["text"]


def err(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


# -- ids ------------------------------------------------------------------------------------------
def test_ids_sortable_and_shaped():
    ids = [new_id("evt_") for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 4 + 21 and i[4:].isalnum() for i in ids)


# -- auth -----------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_auth_errors_and_trace_header(sim):
    async with httpx.AsyncClient(base_url=sim.base_url) as c:
        r = await c.get("/conversations")
        assert r.status_code == 401 and err(r) == "UNAUTHORIZED"
        assert uuid.UUID(r.headers["x-moveworks-root-uuid"]).version == 4
        r = await c.get("/conversations", headers={"Authorization": "Bearer nope", "Assistant-Name": ASSISTANT})
        assert r.status_code == 401 and err(r) == "UNAUTHORIZED"
        r = await c.get("/conversations", headers={"Authorization": "Bearer key-a", "Assistant-Name": "other"})
        assert r.status_code == 403 and err(r) == "FORBIDDEN" and r.json()["error"]["message"] == "Invalid assistant"
        r = await c.get("/conversations", headers={"Authorization": "Bearer key-a"})
        assert r.status_code == 403
        r = await c.get("/conversations", headers=H)
        assert r.status_code == 200 and r.headers["x-moveworks-root-uuid"]
        r = await c.get("/nope", headers=H)
        assert r.status_code == 404 and err(r) == "NOT_FOUND"
    assert [q["status"] for q in sim.requests] == [401, 401, 403, 403, 200, 404]
    assert sim.requests[4]["identity"] == ALICE and sim.requests[4]["method"] == "GET"


@pytest.mark.asyncio
async def test_cross_identity_is_404(sim, client):
    cid = await new_conv(client, "mine")
    resp = await ask(client, cid, "hello")
    async with httpx.AsyncClient(base_url=sim.base_url, headers=H_BOB) as bob:
        for path in (f"/conversations/{cid}", f"/conversations/{cid}/events", f"/conversations/{cid}/messages",
                     f"/conversations/{cid}/responses/{resp['response_id']}"):
            r = await bob.get(path)
            assert r.status_code == 404 and err(r) == "NOT_FOUND", path
        r = await bob.post(f"/conversations/{cid}/responses", json={"input": {"text": "hi"}})
        assert r.status_code == 404
        assert (await bob.get("/conversations")).json()["conversations"] == []


# -- conversations ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_conversation_crud(client):
    r = await client.post("/conversations", json={"title": "Help with VPN"})
    assert r.status_code == 201
    conv = r.json()
    assert conv["conversation_id"].startswith("conv_") and conv["title"] == "Help with VPN"
    assert conv["created_at"].endswith("Z") and conv["archived"] is False
    cid = conv["conversation_id"]
    untitled = await client.post("/conversations", content=b"")  # empty body ok
    assert untitled.status_code == 201 and "title" not in untitled.json()  # a string when present, never null
    r = await client.post("/conversations", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"
    r = await client.post("/conversations", json={"title": "x" * 257})
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"
    assert (await client.get(f"/conversations/{cid}")).json() == conv
    r = await client.patch(f"/conversations/{cid}", json={"title": "Renamed", "archived": True})
    assert r.status_code == 200 and r.json()["title"] == "Renamed" and r.json()["archived"] is True
    assert (await client.patch(f"/conversations/{cid}", json={"archived": "yes"})).status_code == 400
    listed = (await client.get("/conversations")).json()["conversations"]
    assert cid not in [c["conversation_id"] for c in listed] and len(listed) == 1
    archived = (await client.get("/conversations", params={"archived": "true"})).json()["conversations"]
    assert [c["conversation_id"] for c in archived] == [cid]
    assert (await client.get("/conversations/conv_missing")).status_code == 404
    # untitled conversations get a title from the first answer
    cid2 = await new_conv(client)
    await ask(client, cid2, "where is the cafeteria")
    assert (await client.get(f"/conversations/{cid2}")).json()["title"]


@pytest.mark.asyncio
async def test_other_prefixes(sim):
    async with httpx.AsyncClient(base_url=sim.url, headers=H) as c:
        for prefix in ("/assistant/v1", "/rest/v1"):
            r = await c.post(f"{prefix}/conversations", json={})
            assert r.status_code == 201
        assert "x-trace-id" in (await c.get("/rest/v1/conversations")).headers
        assert (await c.get("/rest/v1/auth/test")).status_code == 200


# -- streaming ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_stream_order_and_snapshots(sim, client):
    cid = await new_conv(client)
    r, events, comments = await stream(client, cid, {"input": {"text": "How do I reset my password?"}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-moveworks-root-uuid"]
    assert ": ping" in comments
    names = [n for n, _ in events]
    assert names[:2] == ["RESPONSE_CREATED", "RESPONSE_IN_PROGRESS"] and names[-1] == "RESPONSE_COMPLETED"
    assert [d["sequence_number"] for _, d in events] == list(range(1, len(events) + 1))
    assert all(d["event_type"] == n for n, d in events)
    created = events[0][1]["response"]
    assert created["status"] == "CREATED" and created["response_id"].startswith("resp_")
    assert events[1][1]["response"]["status"] == "IN_PROGRESS"
    outputs = [d["output"] for n, d in events if n == "RESPONSE_OUTPUT_DELTA"]
    kinds = [o["type"] for o in outputs]
    n_reason = kinds.count("REASONING_MESSAGE")
    assert n_reason >= 3 and kinds == ["REASONING_MESSAGE"] * n_reason + ["MESSAGE"] * (len(kinds) - n_reason)
    reasoning = [o["reasoning_message"] for o in outputs[:n_reason]]
    assert len({rm["reasoning_message_id"] for rm in reasoning}) == 1
    assert reasoning[0]["reasoning_message_id"].startswith("rs_")
    texts = [rm["content"][rm["content"]["type"].lower()]["text"] for rm in reasoning]
    for prev, cur in zip(texts, texts[1:]):
        assert cur.count("\n") >= prev.count("\n")
        assert [l[2:] for l in prev.split("\n")] == [l[2:] for l in cur.split("\n")][: prev.count("\n") + 1]
    assert all(l[:2] in ("\u2713 ", "\u2192 ") for t in texts for l in t.split("\n"))
    messages = [o["message"] for o in outputs[n_reason:]]
    assert len(messages) >= 5 and len({m["message_id"] for m in messages}) == 1
    mtexts = [text_of(m) for m in messages]
    assert all(m["content"]["type"] == "MARKDOWN_TEXT" and m["actor"] == "ASSISTANT" for m in messages)
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(mtexts, mtexts[1:]))
    assert all(not m.get("citations") and not m.get("feedback") for m in messages)
    final = events[-1][1]["response"]
    assert final["status"] == "COMPLETED" and final["completed_at"]
    assert [o["type"] for o in final["outputs"]] == ["REASONING_MESSAGE", "MESSAGE"]
    msg = final["outputs"][1]["message"]
    text = text_of(msg)
    assert text == mtexts[-1] and "1. " in text and "**" in text
    assert "<https://password.example.com|password portal>" in text and ":closed_lock_with_key:" in text
    assert len(msg["citations"]) == 4
    for c in msg["citations"]:
        assert c["citation_id"].startswith("cite_") and c["url"].startswith("https://")
        assert set(c["display"]) == {"title", "body", "attributes"}
        assert c["display"]["title"]["type"] == "MARKDOWN_TEXT"
        assert f"<{c['url']}|" in c["display"]["title"]["markdown_text"]["text"]  # a link to the document
    assert len({c["url"] for c in msg["citations"]}) == 3  # one document cited twice
    offsets = [ref["offset"] for ref in msg["content_references"]]
    assert offsets == sorted(offsets) and all(0 <= o <= len(text) for o in offsets)
    assert len(set(offsets)) == 3  # two citations share one offset
    assert {ref["citation_id"] for ref in msg["content_references"]} == {c["citation_id"] for c in msg["citations"]}
    assert msg["feedback"]["helpful"]["callback_id"] and msg["feedback"]["unhelpful"]["callback_id"]
    types = {a["type"] for a in msg["actions"]}
    assert types == {"CALLBACK_ACTION", "URL_ACTION"}
    # GetResponse and history agree with the stream
    rid = created["response_id"]
    got = (await client.get(f"/conversations/{cid}/responses/{rid}")).json()
    assert got["status"] == "COMPLETED" and got["outputs"][1]["message"] == msg
    history = (await client.get(f"/conversations/{cid}/messages")).json()
    assert [m["actor"] for m in history["messages"]] == ["ASSISTANT", "USER"]
    assert history["messages"][1]["content"] == {"type": "PLAIN_TEXT", "plain_text": {"text": "How do I reset my password?"}}
    assert history["metadata"]["next_cursor"] is None
    rmsgs = (await client.get(f"/conversations/{cid}/responses/{rid}/messages")).json()["messages"]
    assert [m["actor"] for m in rmsgs] == ["USER", "ASSISTANT"] and all(m["response_id"] == rid for m in rmsgs)


@pytest.mark.asyncio
async def test_default_answers(client):
    cid = await new_conv(client)
    vpn = await ask(client, cid, "my VPN is broken")
    assert "```" in text_of(vpn["outputs"][-1]["message"])
    generic = await ask(client, cid, "Where do I park my bike?")
    assert "Where do I park my bike?" in text_of(generic["outputs"][-1]["message"])
    pto = await ask(client, cid, "how much vacation do I have")
    assert "paid time off" in text_of(pto["outputs"][-1]["message"])
    for answer in (vpn, generic, pto):
        assert answer["outputs"][-1]["message"]["content"]["type"] == "MARKDOWN_TEXT"
    # an ITSM answer: forms offered as URL actions that all read "Complete this request", each
    # opening the form one of the citations names; the three citations share one offset
    forms = (await ask(client, cid, "I need software installed"))["outputs"][-1]["message"]
    assert [a["label"] for a in forms["actions"]] == ["Complete this request"] * 3
    assert [a["url_action"]["url"] for a in forms["actions"]] == [c["url"] for c in forms["citations"]]
    assert len({ref["offset"] for ref in forms["content_references"]}) == 1
    g3 = await ask(client, cid, "laptop")  # same again via the G3 input shape, which only /rest/v1 takes
    async with httpx.AsyncClient(base_url=client.base_url.copy_with(path="/rest/v1"), headers=H) as g3_client:
        _, events, _ = await stream(g3_client, cid, {"input": {"chat": {"text": "laptop"}}})
    assert events[-1][1]["response"]["outputs"][-1]["message"]["content"] == g3["outputs"][-1]["message"]["content"]
    r = await client.post(f"/conversations/{cid}/responses", json={"input": {"chat": {"text": "laptop"}}})
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"


@pytest.mark.asyncio
async def test_stream_input_validation(client):
    cid = await new_conv(client)
    url = f"/conversations/{cid}/responses/stream"
    r = await client.post(url, json={"input": {"text": "hi"}})  # no Accept
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"
    for body in ({}, {"input": {}}, {"input": {"text": "   "}}, {"input": "hi"}):
        r = await client.post(url, json=body, headers=SSE)
        assert r.status_code == 400 and err(r) == "INVALID_INPUT", body
    r = await client.post(url, content=b"not json", headers=SSE)
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"
    r = await client.post("/conversations/conv_nope/responses/stream", json={"input": {"text": "x"}}, headers=SSE)
    assert r.status_code == 404


@pytest.mark.asyncio
async def test_async_create_response(client):
    cid = await new_conv(client)
    r = await client.post(f"/conversations/{cid}/responses", json={"input": {"text": "vpn help"}})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "CREATED" and body["completed_at"] is None
    done = await wait_terminal(client, cid, body["response_id"])
    assert done["status"] == "COMPLETED" and done["completed_at"]
    assert [o["type"] for o in done["outputs"]] == ["REASONING_MESSAGE", "MESSAGE"]
    r = await client.post(f"/conversations/{cid}/responses", json={"input": {"text": ""}})
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"


@pytest.mark.asyncio
async def test_async_progress_is_visible(sim, client):
    sim.script_answer(text="one two three four five six", chunks=3, delay=0.05, reasoning=["a"])
    cid = await new_conv(client)
    r = await client.post(f"/conversations/{cid}/responses", json={"input": {"text": "q"}})
    rid = r.json()["response_id"]
    seen = set()
    for _ in range(100):
        cur = (await client.get(f"/conversations/{cid}/responses/{rid}")).json()
        seen.add(cur["status"])
        if cur["status"] == "COMPLETED":
            break
        await asyncio.sleep(0.01)
    assert {"IN_PROGRESS", "COMPLETED"} <= seen


@pytest.mark.asyncio
async def test_callback_input(sim, client):
    cid = await new_conv(client)
    resp = await ask(client, cid, "reset password")
    msg = resp["outputs"][-1]["message"]
    cb = next(a for a in msg["actions"] if a["type"] == "CALLBACK_ACTION")
    _, events, _ = await stream(client, cid, {"input": {"callback_id": cb["callback_action"]["callback_id"]}})
    final = events[-1][1]["response"]
    assert text_of(final["outputs"][-1]["message"]) == f":white_check_mark: Done: {cb['label']}"
    rmsgs = (await client.get(f"/conversations/{cid}/responses/{final['response_id']}/messages")).json()["messages"]
    assert rmsgs[0]["content"] == {"type": "CALLBACK_ACTION_CONTENT", "callback_action": {"callback_id": cb["callback_action"]["callback_id"]}}
    for bad in ("cb_unknown", msg["feedback"]["helpful"]["callback_id"]):
        r = await client.post(f"/conversations/{cid}/responses", json={"input": {"callback_id": bad}})
        assert r.status_code == 400 and err(r) == "INVALID_INPUT"
    # the beta API's input is `{text}` only (its spec has no callback input)
    r = await client.post(f"{sim.url}/rest/v1beta1/conversations/{cid}/responses",
                          json={"input": {"callback_id": cb["callback_action"]["callback_id"]}})
    assert r.status_code == 400 and err(r) == "INVALID_INPUT"


@pytest.mark.asyncio
async def test_feedback(sim, client):
    cid = await new_conv(client)
    first = await ask(client, cid, "pto")
    second = await ask(client, cid, "vpn")
    m1, m2 = first["outputs"][-1]["message"], second["outputs"][-1]["message"]
    url = f"/conversations/{cid}/responses/{first['response_id']}/messages/{m1['message_id']}/feedback"
    r = await client.post(url, json={"callback_id": m1["feedback"]["unhelpful"]["callback_id"], "additional_feedback": "meh"})
    assert r.status_code == 200 and r.json() == {"status": "SUBMITTED"}
    assert sim.state.feedback[-1]["rating"] == "unhelpful" and sim.state.feedback[-1]["additional_feedback"] == "meh"
    action_cb = m1["actions"][0]["callback_action"]["callback_id"]
    for body in ({"callback_id": m2["feedback"]["helpful"]["callback_id"]}, {"callback_id": "x"}, {"callback_id": action_cb}, {}):
        r = await client.post(url, json=body)
        assert r.status_code == 400 and err(r) == "INVALID_REQUEST", body
    r = await client.post(url.replace(m1["message_id"], m2["message_id"]), json={"callback_id": m2["feedback"]["helpful"]["callback_id"]})
    assert r.status_code == 404  # message belongs to another response
    assert len(sim.state.feedback) == 1


# -- pagination ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_pagination(client):
    made = [await new_conv(client, f"c{i}") for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/conversations", params=params)).json()
        seen += [c["conversation_id"] for c in body["conversations"]]
        pages += 1
        cursor = body["metadata"]["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == list(reversed(made))
    for limit in ("0", "101", "abc"):  # the spec's only 400 code of list endpoints
        r = await client.get("/conversations", params={"limit": limit})
        assert r.status_code == 400 and err(r) == "INVALID_CURSOR"
    for bad in ("garbage!!", "eyJmb28iOjF9"):
        r = await client.get("/conversations", params={"cursor": bad})
        assert r.status_code == 400 and err(r) == "INVALID_CURSOR"
    # messages: newest first, keyset cursor stable even when new messages arrive between pages
    cid = made[0]
    for q in ("a", "b", "c"):
        await ask(client, cid, q)
    page1 = (await client.get(f"/conversations/{cid}/messages", params={"limit": 4})).json()
    await ask(client, cid, "d")
    page2 = (await client.get(f"/conversations/{cid}/messages", params={"limit": 4, "cursor": page1["metadata"]["next_cursor"]})).json()
    ids = [m["message_id"] for m in page1["messages"] + page2["messages"]]
    assert len(ids) == 6 and ids == sorted(ids, reverse=True) and page2["metadata"]["next_cursor"] is None
    r = await client.get(f"/conversations/{cid}/messages", params={"cursor": page1["metadata"]["next_cursor"].swapcase()})
    assert r.status_code == 400 and err(r) == "INVALID_CURSOR"


# -- events -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_events(sim, client):
    cid = await new_conv(client, "A")
    r = await client.get(f"/conversations/{cid}/events")
    assert r.json() == {"events": [], "metadata": {"next_cursor": None}}
    e1 = sim.inject_event(ALICE, "first", conversation_id=cid)
    e2 = sim.inject_event(ALICE, "proactive", actions=[{"type": "URL_ACTION", "label": "Open", "url": "https://x.example.com"}])
    e3 = sim.inject_event(ALICE, "second", conversation_id=cid, citations=[{"title": "T", "url": "https://t.example.com"}])
    sim.inject_event(BOB, "not yours")
    ids = [e1["event_id"], e2["event_id"], e3["event_id"]]
    assert ids == sorted(ids) and all(i.startswith("evt_") for i in ids)
    sys_conv = (await client.get(f"/conversations/{e2['conversation_id']}")).json()
    assert sys_conv["title"] == "System Initiated Conversation"
    allev = (await client.get("/conversations/-/events")).json()
    assert [e["event_id"] for e in allev["events"]] == ids
    ev = allev["events"][0]
    assert set(ev) >= {"event_id", "conversation_id", "created_at", "event_payload"}
    assert ev["event_payload"]["type"] == "MESSAGE_EVENT"
    m = ev["event_payload"]["message"]
    assert m["actor"] == "ASSISTANT" and m["content"]["commonmark_text"]["text"] == "first" and m["feedback"]
    assert allev["events"][2]["event_payload"]["message"]["citations"][0]["url"] == "https://t.example.com"
    assert [e["event_id"] for e in (await client.get(f"/conversations/{cid}/events")).json()["events"]] == [ids[0], ids[2]]
    q = lambda **p: client.get("/conversations/-/events", params=p)  # noqa: E731
    assert [e["event_id"] for e in (await q(starting_after=ids[0])).json()["events"]] == ids[1:]
    assert [e["event_id"] for e in (await q(ending_at=ids[1])).json()["events"]] == ids[:2]
    assert [e["event_id"] for e in (await q(starting_after=ids[0], ending_at=ids[1])).json()["events"]] == [ids[1]]
    assert [e["event_id"] for e in (await q(start_event_id=ids[0], last_event_id=ids[2])).json()["events"]] == ids[1:]
    assert (await q(starting_after=ids[2])).json()["events"] == []
    assert (await q(starting_after=ids[1], ending_at=ids[0])).status_code == 400
    p1 = (await q(limit=2)).json()
    p2 = (await q(limit=2, cursor=p1["metadata"]["next_cursor"])).json()
    assert [e["event_id"] for e in p1["events"] + p2["events"]] == ids and p2["metadata"]["next_cursor"] is None
    assert (await q(cursor="zzz")).status_code == 400
    r = await client.get("/conversations/conv_unknown/events")
    assert r.status_code == 404 and err(r) == "NOT_FOUND"
    # injected messages are part of the conversation history too
    hist = (await client.get(f"/conversations/{cid}/messages")).json()["messages"]
    assert [mm["content"]["commonmark_text"]["text"] for mm in hist] == ["second", "first"]
    with pytest.raises(LookupError):
        sim.inject_event(BOB, "x", conversation_id=cid)


# -- scripts ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_scripted_answers(sim, client):
    sim.script_answer(text="Bob only", identity=BOB)
    sim.script_answer(
        text="Your ticket **INC-1** is filed.",
        match="TICKET",
        reasoning=["Filing the ticket"],
        citations=[{"title": "Ticket INC-1", "url": "https://itsm.example.com/INC-1", "offset": 5}],
        actions=[{"type": "URL_ACTION", "label": "View", "url": "https://itsm.example.com/INC-1"}],
        chunks=2,
        followup={"text": "INC-1 was resolved.", "delay": 0},
        times=2,
    )
    cid = await new_conv(client)
    _, events, _ = await stream(client, cid, {"input": {"text": "please file a ticket"}})
    deltas = [d["output"] for n, d in events if n == "RESPONSE_OUTPUT_DELTA"]
    assert len([o for o in deltas if o["type"] == "MESSAGE"]) == 2
    assert len([o for o in deltas if o["type"] == "REASONING_MESSAGE"]) == 2
    msg = events[-1][1]["response"]["outputs"][-1]["message"]
    assert msg["content"]["commonmark_text"]["text"] == "Your ticket **INC-1** is filed."
    assert msg["content_references"][0]["offset"] == 5
    assert msg["actions"] == [{"type": "URL_ACTION", "label": "View", "url_action": {"url": "https://itsm.example.com/INC-1"}}]
    for _ in range(100):
        evs = (await client.get(f"/conversations/{cid}/events")).json()["events"]
        if evs:
            break
        await asyncio.sleep(0.01)
    assert evs[0]["event_payload"]["message"]["content"]["commonmark_text"]["text"] == "INC-1 was resolved."
    assert "Your ticket" in text_of((await ask(client, cid, "another ticket"))["outputs"][-1]["message"])
    assert "Your ticket" not in text_of((await ask(client, cid, "another ticket"))["outputs"][-1]["message"])
    assert len(sim.scripts) == 1 and sim.scripts[0].identity == BOB
    sim.script_answer(text="Sorry, the backend failed", status="FAILED")
    _, events, _ = await stream(client, cid, {"input": {"text": "x"}})
    assert events[-1][0] == "RESPONSE_FAILED" and events[-1][1]["response"]["status"] == "FAILED"
    with pytest.raises(ValueError):
        sim.script_answer(text="x", status="BROKEN")


# -- faults -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fault_rate_limit_and_server_error(sim, client):
    sim.inject_fault("rate_limit", count=2, retry_after=3)
    for _ in range(2):
        r = await client.get("/conversations")
        assert r.status_code == 429 and err(r) == "RATE_LIMIT_EXCEEDED" and r.headers["Retry-After"] == "3"
    assert (await client.get("/conversations")).status_code == 200
    sim.inject_fault("rate_limit", endpoint="messages")
    assert (await client.get("/conversations")).status_code == 200
    cid = await new_conv(client)
    assert (await client.get(f"/conversations/{cid}/messages")).status_code == 429
    r429 = None
    sim.inject_fault("rate_limit")
    r429 = await client.get("/conversations")
    assert "Retry-After" not in r429.headers
    sim.inject_fault("server_error", endpoint="create_conversation")
    r = await client.post("/conversations", json={})
    assert r.status_code == 500 and err(r) == "INTERNAL_ERROR"
    sim.inject_fault("server_error", html=True)
    r = await client.get("/conversations")
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")


@pytest.mark.asyncio
async def test_fault_stream_cut_then_poll(sim, client):
    cid = await new_conv(client)
    sim.inject_fault("stream_cut")
    _, events, _ = await stream(client, cid, {"input": {"text": "vpn"}})
    assert [n for n, _ in events] == ["RESPONSE_CREATED"]
    done = await wait_terminal(client, cid, events[0][1]["response"]["response_id"])
    assert done["status"] == "COMPLETED"


@pytest.mark.asyncio
async def test_fault_stream_error(sim, client):
    cid = await new_conv(client)
    sim.inject_fault("stream_error", endpoint="stream")
    _, events, _ = await stream(client, cid, {"input": {"text": "vpn"}})
    names = [n for n, _ in events]
    assert names[-1] == "ERROR" and names[-2] == "RESPONSE_OUTPUT_DELTA"
    assert events[-2][1]["output"]["type"] == "MESSAGE"
    assert events[-1][1] == {"error": {"code": "INTERNAL_ERROR", "message": events[-1][1]["error"]["message"]}}
    rid = events[0][1]["response"]["response_id"]
    assert (await wait_terminal(client, cid, rid))["status"] == "FAILED"


@pytest.mark.asyncio
async def test_fault_response_failed(sim, client):
    cid = await new_conv(client)
    sim.inject_fault("response_failed", count=2)
    _, events, _ = await stream(client, cid, {"input": {"text": "vpn"}})
    assert events[-1][0] == "RESPONSE_FAILED"
    failed = events[-1][1]["response"]
    assert failed["status"] == "FAILED" and failed["completed_at"] and failed["error"]["code"]
    r = await client.post(f"/conversations/{cid}/responses", json={"input": {"text": "vpn"}})
    assert (await wait_terminal(client, cid, r.json()["response_id"]))["status"] == "FAILED"


@pytest.mark.asyncio
async def test_fault_slow(sim, client):
    sim.inject_fault("slow", endpoint="events", delay=0.2)
    t0 = time.monotonic()
    assert (await client.get("/conversations/-/events")).status_code == 200
    assert time.monotonic() - t0 >= 0.2
    cid = await new_conv(client)
    sim.inject_fault("slow", endpoint="create_response", delay=0.2)
    t0 = time.monotonic()
    r = await client.post(f"/conversations/{cid}/responses", json={"input": {"text": "vpn"}})
    assert r.status_code == 202 and time.monotonic() - t0 < 0.2  # the answer is slow, not the 202
    await wait_terminal(client, cid, r.json()["response_id"])
    assert time.monotonic() - t0 >= 0.2


@pytest.mark.asyncio
async def test_fault_expire_tokens_and_token_endpoint_fault(sim):
    async with httpx.AsyncClient() as c:
        tok = (await c.post(sim.token_url, data={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"})).json()
        hdr = {"Authorization": f"Bearer {tok['access_token']}", "Assistant-Name": ASSISTANT}
        assert (await c.get(f"{sim.base_url}/conversations", headers=hdr)).status_code == 200
        sim.inject_fault("expire_tokens")
        r = await c.get(f"{sim.base_url}/conversations", headers=hdr)
        assert r.status_code == 401 and err(r) == "UNAUTHORIZED"
        assert (await c.get(f"{sim.base_url}/conversations", headers=H)).status_code == 200  # API keys never expire
        sim.inject_fault("rate_limit")  # "any" does not hit the token endpoint
        sim.inject_fault("server_error", endpoint="token")
        r = await c.post(sim.token_url, data={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"})
        assert r.status_code == 500 and r.json()["code"] == "INTERNAL_ERROR"


# -- token endpoint -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_priv = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return priv, pub, other_priv


def assertion(priv: str, **over) -> str:
    now = int(time.time())
    claims = {"sub": "carol@example.com", "iss": "bridge", "aud": "moveworks", "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, priv, algorithm="RS256")


@pytest.mark.asyncio
async def test_token_client_credentials(sim):
    async with httpx.AsyncClient() as c:
        r = await c.post(sim.token_url, data={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"})
        body = r.json()
        assert r.status_code == 200 and body["access_token"].startswith("mwt_") and body["expires_in"] == 3600 and body["token_type"] == "Bearer"
        r = await c.post(sim.token_url, json={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "wrong"})
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED" and "error" not in r.json()
        r = await c.post(sim.token_url, data={"grant_type": "password"})
        assert r.status_code == 400
        sim.config.token_body, sim.config.token_ttl = "data", 60
        r = await c.post(sim.token_url, json={"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret"})
        assert set(r.json()) == {"data"} and r.json()["data"]["expires_in"] == 60
        hdr = {"Authorization": f"Bearer {r.json()['data']['access_token']}", "Assistant-Name": ASSISTANT}
        r = await c.post(f"{sim.base_url}/conversations", headers=hdr, json={})
        assert r.status_code == 201 and "service@example.com" in sim.state.users
    assert sim.requests[0]["path"] == "/oauth/v1/token" and sim.requests[0]["status"] == 200


@pytest.mark.asyncio
async def test_token_jwt_bearer(rsa_keys):
    priv, pub, other_priv = rsa_keys
    sim = Simulator(make_config(jwt_public_key=pub))
    await sim.start()
    try:
        async with httpx.AsyncClient() as c:
            grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
            a = assertion(priv)
            r = await c.post(sim.token_url, data={"grant_type": grant, "assertion": a})
            assert r.status_code == 200, r.text
            hdr = {"Authorization": f"Bearer {r.json()['access_token']}", "Assistant-Name": ASSISTANT}
            assert (await c.post(f"{sim.base_url}/conversations", headers=hdr, json={})).status_code == 201
            assert "carol@example.com" in sim.state.users
            assert (await c.post(sim.token_url, data={"grant_type": grant, "assertion": a})).status_code == 400  # replay
            now = int(time.time())
            bad = [
                assertion(other_priv),  # wrong signature
                assertion(priv, exp=now + 7200),  # more than an hour ahead
                assertion(priv, exp=now - 120),  # expired
                assertion(priv, jti=None),
                assertion(priv, sub=None),
                assertion(priv, aud=None),
                jwt.encode({"sub": "x@example.com", "iat": now, "exp": now + 60, "jti": "h", "iss": "i", "aud": "a"}, "secret-secret-secret-secret-32by", algorithm="HS256"),
                "not-a-jwt",
            ]
            for b in bad:
                r = await c.post(sim.token_url, json={"grant_type": grant, "assertion": b})
                assert r.status_code == 400 and "code" in r.json(), b
            assert (await c.post(sim.token_url, data={"grant_type": grant})).status_code == 400
    finally:
        await sim.stop()


# -- webhook and admin HTTP API -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_webhook(rsa_keys):
    got: list[tuple[bytes, str]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get("X-Moveworks-Signature", "")))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sim = Simulator(make_config(webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret="s3cret"))
    await sim.start()
    try:
        event = sim.inject_event(ALICE, "Your PTO was approved")
        await asyncio.wait_for(arrived.wait(), 5)
        body, sig = got[0]
        assert sig == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert json.loads(body) == {  # the documented envelope (help.moveworks.com, outbound webhook)
            "id": event["event_id"],
            "type": "CONVERSATION_RESPONSE_RECEIVED",
            "created_at": event["created_at"],
            "data": {"conversation_id": event["conversation_id"], "user_id": ALICE},
        }
    finally:
        await sim.stop()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_admin_http_api(sim, client):
    async with httpx.AsyncClient(base_url=sim.url) as admin:
        r = await admin.post("/_sim/answers", json={"text": "Scripted!", "match": "magic"})
        assert r.status_code == 201 and r.json()["match"] == "magic"
        assert (await admin.post("/_sim/answers", json={"text": "x", "bogus": 1})).status_code == 400
        cid = await new_conv(client)
        assert (await ask(client, cid, "some MAGIC words"))["outputs"][-1]["message"]["content"]["commonmark_text"]["text"] == "Scripted!"
        r = await admin.post("/_sim/events", json={"identity": ALICE, "text": "Heads up", "conversation_id": cid})
        assert r.status_code == 201 and r.json()["conversation_id"] == cid
        assert (await admin.post("/_sim/events", json={"identity": ALICE, "text": "x", "conversation_id": "conv_nope"})).status_code == 404
        r = await admin.post("/_sim/faults", json={"kind": "rate_limit", "retry_after": 1})
        assert r.status_code == 201 and r.json()["faults"][0]["kind"] == "rate_limit"
        assert (await admin.post("/_sim/faults", json={"kind": "meteor"})).status_code == 400
        assert (await client.get("/conversations")).status_code == 429
        reqs = (await admin.get("/_sim/requests")).json()["requests"]
        assert reqs[-1]["status"] == 429 and reqs[-1]["identity"] == ALICE
        state = (await admin.get("/_sim/state")).json()
        assert state["users"][ALICE]["conversations"] == 1 and state["users"][ALICE]["events"] == 1
        r = await admin.post("/_sim/config", json={"pace": 0.5, "token_ttl": 60, "token_body": "data"})
        assert r.json() == {"pace": 0.5, "token_ttl": 60, "token_body": "data"} and sim.config.pace == 0.5
        assert (await admin.post("/_sim/config", json={"token_body": "xml"})).status_code == 400
        assert (await admin.post("/_sim/reset")).status_code == 200
        assert sim.requests == [] and sim.state.users == {} and sim.faults.pending == []
        assert (await client.get("/conversations")).json()["conversations"] == []


@pytest.mark.asyncio
async def test_client_disconnect_keeps_response_running(sim, client):
    sim.script_answer(text="a b c d e f g h", chunks=4, delay=0.05)
    cid = await new_conv(client)
    rid = None
    async with client.stream("POST", f"/conversations/{cid}/responses/stream", json={"input": {"text": "q"}}, headers=SSE) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                rid = json.loads(line[5:])["response"]["response_id"]
                break
    assert rid
    done = await wait_terminal(client, cid, rid)
    assert done["status"] == "COMPLETED"
    assert done["outputs"][-1]["message"]["content"]["commonmark_text"]["text"] == "a b c d e f g h"
