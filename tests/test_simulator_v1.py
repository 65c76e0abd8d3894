"""The simulator's `/rest/v1` generation over real HTTP: turn input shapes, files (alpha), modals,
the get-help menu, live agents, get-event and the outbound webhook envelope.

All delays are configured small (`live_agent_delay`, `modal_submit_delay`), so nothing sleeps long.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from aiohttp import web

from bridge.simulator import Simulator, SimulatorConfig
from bridge.simulator.webhook import signing_secret
from tests.openapi_spec import SpecWatch

ASSISTANT = "moveworks-bridge-dev"
ALICE, BOB = "alice@example.com", "bob@example.com"
H = {"Authorization": "Bearer key-a", "Assistant-Name": ASSISTANT}
H_BOB = {"Authorization": "Bearer key-b", "Assistant-Name": ASSISTANT}
SSE = {"Accept": "text/event-stream"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(32)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
MIB = 1024 * 1024


def make_config(**kw: Any) -> SimulatorConfig:
    base: dict[str, Any] = dict(
        assistant_name=ASSISTANT, api_keys={"key-a": ALICE, "key-b": BOB}, pace=0,
        live_agent_delay=0.05, modal_submit_delay=0.05,
    )
    base.update(kw)
    return SimulatorConfig(**base)


@pytest_asyncio.fixture
async def sim():
    s = Simulator(make_config())
    await s.start(host="127.0.0.1", port=0)
    try:
        yield s
    finally:
        await s.stop()


@pytest_asyncio.fixture
async def v1(sim):
    async with httpx.AsyncClient(base_url=f"{sim.url}/rest/v1", headers=H, timeout=10) as c:
        yield c


@pytest_asyncio.fixture
async def admin(sim):
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as c:
        yield c


# -- helpers ------------------------------------------------------------------------------------------
def parse_sse(raw: str) -> list[tuple[str, dict]]:
    events = []
    for frame in raw.split("\n\n"):
        name, data = None, []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if name:
            events.append((name, json.loads("\n".join(data))))
    return events


def err(r: httpx.Response) -> tuple[str, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"], body["error"]["message"]


def text_of(message: dict) -> str:
    c = message["content"]
    return c[c["type"].lower()]["text"]


async def new_conv(c: httpx.AsyncClient) -> str:
    r = await c.post("/conversations", json={})
    assert r.status_code == 201, r.text
    return r.json()["conversation_id"]


async def turn(c: httpx.AsyncClient, cid: str, inp: dict) -> tuple[httpx.Response, list[tuple[str, dict]]]:
    r = await c.post(f"/conversations/{cid}/responses/stream", json={"input": inp}, headers=SSE)
    return r, (parse_sse(r.text) if r.status_code == 200 else [])


async def say(c: httpx.AsyncClient, cid: str, inp: dict | str) -> dict:
    """One streamed turn; the final response."""
    r, events = await turn(c, cid, {"chat": {"text": inp}} if isinstance(inp, str) else inp)
    assert r.status_code == 200, r.text
    assert events[-1][0] == "RESPONSE_COMPLETED", events[-1]
    return events[-1][1]["response"]


def answer(response: dict) -> dict:
    return response["outputs"][-1]["message"]


async def wait_for(probe: Callable[[], Awaitable[Any]], timeout: float = 3.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.01)


async def events_of(c: httpx.AsyncClient, cid: str = "-") -> list[dict]:
    r = await c.get(f"/conversations/{cid}/events", params={"limit": 100})
    assert r.status_code == 200
    return r.json()["events"]


def multipart(parts: list[tuple[str, str | None, bytes, str | None]]) -> tuple[bytes, str]:
    """A multipart/form-data body with parts in exactly this order: (name, filename, data, content_type)."""
    boundary = "sim" + uuid.uuid4().hex
    out = b""
    for name, filename, data, ctype in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


async def upload(sim: Simulator, parts: list, headers: dict | None = None) -> httpx.Response:
    body, ctype = multipart(parts)
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.post(f"{sim.url}/rest/v1alpha1/files", content=body,
                            headers={**(H if headers is None else headers), "Content-Type": ctype})


async def upload_ok(sim: Simulator, name: str, data: bytes, headers: dict | None = None) -> dict:
    r = await upload(sim, [("purpose", None, b"conversation_attachment", None), ("file", name, data, "text/plain")],
                     headers)
    assert r.status_code == 201, r.text
    return r.json()


def modal_id_of(message: dict) -> str:
    return next(a for a in message["actions"] if a["type"] == "MODAL_ACTION")["modal_action"]["modal_id"]


async def ticket_offer(v1: httpx.AsyncClient, text: str = "my laptop is broken, file a ticket") -> tuple[str, dict]:
    cid = await new_conv(v1)
    return cid, answer(await say(v1, cid, text))


def modal_url(msg: dict, modal_id: str) -> str:
    return (f"/conversations/{msg['conversation_id']}/responses/{msg['response_id']}"
            f"/messages/{msg['message_id']}/modals/{modal_id}")


def by_name(fields: list[dict]) -> dict[str, dict]:
    return {f["name"]: f for f in fields}


GOOD = {
    "summary": {"text": "Laptop screen flickers"},
    "description": {"text": "Since Monday.\nWorse on battery."},
    "category": {"option": "hardware"},
    "needed_by": {"date": "2031-05-04"},
    "callback_at": {"datetime": "2031-05-03T09:30:00Z"},
    "urgent": {"bool": True},
    "location": {"option": "Building 7, desk 12"},  # free input
}


# -- input shapes and trace header --------------------------------------------------------------------
async def test_v1_input_shapes(sim, v1):
    cid = await new_conv(v1)
    r, events = await turn(v1, cid, {"chat": {"text": "how do I reset my password"}})
    assert r.status_code == 200 and r.headers["x-trace-id"] and r.headers["x-moveworks-root-uuid"]
    first = events[-1][1]["response"]
    cb = next(a for a in answer(first)["actions"] if a["type"] == "CALLBACK_ACTION")["callback_action"]["callback_id"]
    assert "password" in text_of(answer(await say(v1, cid, {"text": "password again"})))
    done = await say(v1, cid, {"action": {"callback_id": cb}})
    assert text_of(answer(done)).startswith(":white_check_mark: Done: ")
    assert text_of(answer(await say(v1, cid, {"callback_id": cb}))).startswith(":white_check_mark: Done: ")
    msgs = (await v1.get(f"/conversations/{cid}/responses/{done['response_id']}/messages")).json()["messages"]
    assert msgs[0]["content"] == {"type": "CALLBACK_ACTION_CONTENT", "callback_action": {"callback_id": cb}}
    # none, two, or a shape that is not one of the four
    for bad in ({}, {"text": "a", "chat": {"text": "b"}}, {"chat": {"text": "a"}, "action": {"callback_id": cb}},
                {"text": "a", "callback_id": cb}, {"callback": {"callback_id": cb}}, {"chat": {"text": "  "}},
                {"chat": "hi"}, {"action": {"callback_id": "cb_unknown"}}, {"action": {}}):
        for path in (f"/conversations/{cid}/responses/stream", f"/conversations/{cid}/responses"):
            r = await v1.post(path, json={"input": bad}, headers=SSE)
            assert r.status_code == 400 and err(r)[0] == "INVALID_INPUT", (bad, path)
            assert r.headers["x-trace-id"]
    r = await v1.get("/conversations")
    assert r.headers["x-trace-id"] == r.headers["x-moveworks-root-uuid"]
    # the older bases keep their own input shapes
    r = await v1.post(f"{sim.url}/assistant/v1/conversations/{cid}/responses", json={"input": {"chat": {"text": "x"}}})
    assert r.status_code == 400 and "x-trace-id" not in r.headers


# -- files (alpha) -----------------------------------------------------------------------------------
async def test_files_upload_rules(sim, admin):
    got = await upload_ok(sim, "vpn-error.png", PNG)  # declared text/plain: sniffed instead
    assert set(got) == {"id", "file_name", "content_type", "size_bytes", "purpose", "expire_time"}
    assert got["id"].startswith("file_") and got["file_name"] == "vpn-error.png"
    assert got["content_type"] == "image/png" and got["size_bytes"] == len(PNG)
    assert got["purpose"] == "conversation_attachment" and got["expire_time"].endswith("Z")
    assert (await upload_ok(sim, "doc.bin", PDF))["content_type"] == "application/pdf"
    assert (await upload_ok(sim, "photo", b"\xff\xd8\xff\xe0" + bytes(20)))["content_type"] == "image/jpeg"
    assert (await upload_ok(sim, "notes.png", "héllo\n".encode()))["content_type"] == "text/plain"

    f = ("file", "a.txt", b"hello", "text/plain")
    purpose = ("purpose", None, b"conversation_attachment", None)
    refused = {
        "file before purpose": [f, purpose],
        "field after the file": [purpose, f, ("note", None, b"late", None)],
        "two files": [purpose, f, ("file", "b.txt", b"again", "text/plain")],
        "no file": [purpose],
        "no purpose": [f],
        "empty": [purpose, ("file", "a.txt", b"", "text/plain")],
    }
    for why, parts in refused.items():
        r = await upload(sim, parts)
        assert r.status_code == 400 and err(r)[0] == "INVALID_INPUT", why
        assert r.headers["x-trace-id"]
    r = await upload(sim, [f, purpose])
    assert "before the file part" in err(r)[1]
    # size: exactly 10 MiB passes, one byte more is 400 (the simulator's documented choice)
    assert (await upload_ok(sim, "big.txt", b"a" * (10 * MIB)))["size_bytes"] == 10 * MIB
    r = await upload(sim, [purpose, ("file", "huge.txt", b"a" * (10 * MIB + 1), "text/plain")])
    assert r.status_code == 400 and "10 MiB" in err(r)[1]
    # auth like the other endpoints; not multipart at all
    assert (await upload(sim, [purpose, f], headers={})).status_code == 401
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{sim.url}/rest/v1alpha1/files", json={"purpose": "x"}, headers=H)
        assert r.status_code == 400 and err(r)[0] == "INVALID_INPUT"
    # every attempt is recorded for tests
    log = (await admin.get("/_sim/files")).json()["files"]
    first = log[0]
    assert first["status"] == 201 and first["identity"] == ALICE and first["declared_content_type"] == "text/plain"
    assert first["content_type"] == "image/png" and first["parts"] == ["purpose", "file"]
    assert first["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert first["fields"] == {"purpose": "conversation_attachment"}
    order = next(x for x in log if x["parts"] == ["file", "purpose"])
    assert order["status"] == 400 and "before the file part" in order["error"]
    assert sim.state.files[got["id"]]["data"] == PNG
    assert (await admin.get("/_sim/files", params={"clear": 1})).status_code == 200
    assert (await admin.get("/_sim/files")).json()["files"] == []


async def test_chat_turn_with_files(sim, v1, admin):
    shot = await upload_ok(sim, "vpn-error.png", PNG)
    log = await upload_ok(sim, "vpn.log", b"connect failed\n")
    cid = await new_conv(v1)
    files = [{"file_id": shot["id"], "file_name": "vpn-error.png"}, {"file_id": log["id"]}]
    resp = await say(v1, cid, {"chat": {"text": "my VPN fails, see attached", "files": files}})
    text = text_of(answer(resp))
    assert "I received vpn-error.png and vpn.log" in text and "VPN" in text
    msg = answer(resp)  # citations still point into the (longer) text
    assert all(0 <= ref["offset"] <= len(text) for ref in msg["content_references"])
    user = (await v1.get(f"/conversations/{cid}/responses/{resp['response_id']}/messages")).json()["messages"][0]
    assert user["actor"] == "USER" and user["content"] == {"type": "PLAIN_TEXT", "plain_text": {
        "text": "my VPN fails, see attached",
        "files": [{"file_id": shot["id"], "file_name": "vpn-error.png"},
                  {"file_id": log["id"], "file_name": "vpn.log"}]}}
    # files alone are a turn too
    only = await say(v1, cid, {"chat": {"files": [{"file_id": shot["id"], "file_name": "again.png"}]}})
    assert "I received again.png" in text_of(answer(only))
    # unknown, someone else's, expired
    bob_file = await upload_ok(sim, "bob.txt", b"bob", headers=H_BOB)
    assert (await admin.post("/_sim/config", json={"file_ttl": 0.05})).json()["file_ttl"] == 0.05
    short = await upload_ok(sim, "short.txt", b"soon gone")
    await asyncio.sleep(0.1)
    for fid in ("file_nope", bob_file["id"], short["id"]):
        r, _ = await turn(v1, cid, {"chat": {"text": "see file", "files": [{"file_id": fid}]}})
        assert r.status_code == 400 and err(r) == ("INVALID_INPUT", f"Unknown or expired file_id '{fid}'")
    r, _ = await turn(v1, cid, {"chat": {"text": "x", "files": "file_1"}})
    assert r.status_code == 400
    # an older base sees the user's message without files
    async with httpx.AsyncClient(base_url=f"{sim.url}/assistant/v1", headers=H) as old:
        m = (await old.get(f"/conversations/{cid}/responses/{resp['response_id']}/messages")).json()["messages"][0]
        assert m["content"] == {"type": "PLAIN_TEXT", "plain_text": {"text": "my VPN fails, see attached"}}


# -- smart handoff and modals ------------------------------------------------------------------------
async def test_smart_handoff_and_get_modal(v1):
    cid, msg = await ticket_offer(v1)
    assert text_of(msg).startswith("I can file a ticket for you")
    assert [(a["type"], a["label"]) for a in msg["actions"]] == [
        ("CALLBACK_ACTION", "File ticket"), ("MODAL_ACTION", "Edit/Add details"), ("URL_ACTION", "Other help options")]
    modal_action = msg["actions"][1]
    assert set(modal_action) == {"type", "label", "modal_action"}
    assert modal_action["modal_action"]["modal_id"].startswith("modal_")
    assert msg["handoff"] == {"handoff_categories": []}
    assert msg["feedback"]["helpful"]["callback_id"] and msg["feedback"]["unhelpful"]["callback_id"]
    r = await v1.get(modal_url(msg, modal_id_of(msg)))
    assert r.status_code == 200 and r.headers["x-trace-id"]
    modal = r.json()
    assert set(modal) == {"modal_id", "title", "fields"} and modal["modal_id"] == modal_id_of(msg)
    fields = modal["fields"]
    assert {f["type"] for f in fields} == {"DISPLAY", "TEXT", "CHOICE", "DATE", "DATETIME", "BOOLEAN", "FILE"}
    for f in fields:
        assert {"name", "type", "label", "visible", "required", "read_only", "triggers_refresh"} <= set(f)
        assert f["type"].lower() in f, f
    f = by_name(fields)
    assert f["header"]["display"] == {"text": {"style": "HEADER", "text": "Report an IT issue"}}
    assert "<a href=" in f["intro"]["display"]["text"]["text"] and "<br>" in f["intro"]["display"]["text"]["text"]
    assert f["banner"]["display"]["image"]["url"].startswith("https://")
    assert set(f["guide"]["display"]["download"]) == {"url", "text"}
    assert f["requester"]["read_only"] and f["requester"]["text"]["prefill"] == ALICE
    assert f["summary"]["required"] and f["summary"]["text"] == {"multiline": False,
                                                                  "prefill": "my laptop is broken, file a ticket"}
    assert f["description"]["text"]["multiline"] is True
    cat = f["category"]
    assert cat["required"] and cat["triggers_refresh"]
    assert cat["choice"] == {"options": [{"value": "hardware", "display_value": "Hardware"},
                                         {"value": "software", "display_value": "Software"},
                                         {"value": "access", "display_value": "Access"}],
                             "prefill": [], "multi": False, "allows_free_input": False}
    assert f["systems"]["choice"]["multi"] and f["systems"]["choice"]["allows_free_input"]
    assert f["systems"]["visible"] is False and f["systems"]["required"] is False
    assert f["location"]["choice"]["allows_free_input"] and not f["location"]["choice"]["multi"]
    assert f["needed_by"]["date"] == {"prefill": None} and f["callback_at"]["datetime"] == {"prefill": None}
    assert f["urgent"]["boolean"] == {"prefill": False}
    assert f["screenshot"]["file"] == {} and not f["screenshot"]["required"]
    # "File ticket" files at once
    cb = msg["actions"][0]["callback_action"]["callback_id"]
    filed = text_of(answer(await say(v1, cid, {"action": {"callback_id": cb}})))
    assert filed == "I filed INC0010001: my laptop is broken, file a ticket. You'll get updates here."


async def test_modal_ids_are_minted_per_read(sim, v1, admin):
    cid, streamed = await ticket_offer(v1)
    rid = streamed["response_id"]
    reads = [modal_id_of(streamed)]
    for path in (f"/conversations/{cid}/messages", f"/conversations/{cid}/responses/{rid}/messages"):
        reads.append(modal_id_of(next(m for m in (await v1.get(path)).json()["messages"] if m["actor"] == "ASSISTANT")))
    reads.append(modal_id_of(answer((await v1.get(f"/conversations/{cid}/responses/{rid}")).json())))
    assert len(set(reads)) == len(reads)
    msg = streamed
    for modal_id in reads:  # the latest 5 reads resolve (the 5th is the id minted with the message)
        assert (await v1.get(modal_url(msg, modal_id))).status_code == 200
    for _ in range(3):  # three more reads: the creation id and the two oldest read ids stop resolving
        reads.append(modal_id_of(next(m for m in (await v1.get(f"/conversations/{cid}/messages")).json()["messages"]
                                      if m["actor"] == "ASSISTANT")))
    codes = [(await v1.get(modal_url(msg, m))).status_code for m in reads]
    assert codes == [404, 404, 200, 200, 200, 200, 200]
    r = await v1.get(modal_url(msg, reads[0]))
    assert err(r)[0] == "NOT_FOUND" and "read it again" in err(r)[1]
    # the id only opens the form of its own message, for its own identity
    cid2, other = await ticket_offer(v1, "another ticket please")
    assert (await v1.get(modal_url(other, reads[-1]))).status_code == 404
    async with httpx.AsyncClient(base_url=f"{sim.url}/rest/v1", headers=H_BOB) as bob:
        assert (await bob.get(modal_url(msg, reads[-1]))).status_code == 404
    # what each modal endpoint received is recorded
    calls = (await admin.get("/_sim/modals")).json()["calls"]
    assert [c["op"] for c in calls] == ["get"] * len(calls) and calls[0]["modal_id"] == reads[0]
    assert calls[0]["status"] == 200 and calls[-1]["status"] == 404 and calls[0]["message_id"] == msg["message_id"]


async def test_modal_refresh(v1, admin):
    _, msg = await ticket_offer(v1)
    url = modal_url(msg, modal_id_of(msg))
    values = {"category": {"option": "access"}, "summary": {"text": "Need VPN"}}
    r = await v1.post(url + "/refresh", json={"values": values})
    assert r.status_code == 200
    fields = by_name(r.json()["fields"])
    assert list(fields) == [f["name"] for f in (await v1.get(url)).json()["fields"]]  # every field, same order
    assert fields["systems"]["visible"] is True and fields["systems"]["required"] is True
    for f in fields.values():
        if f["type"] == "CHOICE":
            assert "options" not in f["choice"], f["name"]
            assert {"prefill", "multi", "allows_free_input"} <= set(f["choice"])
    assert fields["category"]["choice"]["prefill"] == [{"value": "access"}]
    assert fields["summary"]["text"]["prefill"] == "Need VPN"
    r = await v1.post(url + "/refresh", json={"values": {"category": {"option": "software"}}})
    again = by_name(r.json()["fields"])
    assert again["systems"]["visible"] is False
    # nothing was stored: GET shows the original form, with options
    fresh = by_name((await v1.get(url)).json()["fields"])
    assert fresh["category"]["choice"]["options"] and fresh["category"]["choice"]["prefill"] == []
    r = await v1.post(url + "/refresh", json={"values": {"nope": {"text": "x"}}})
    assert r.status_code == 400 and err(r) == ("INVALID_INPUT", "Field 'nope' is not part of this form")
    calls = (await admin.get("/_sim/modals")).json()["calls"]
    assert calls[0]["op"] == "refresh" and calls[0]["values"] == values


async def test_modal_submit_success(sim, v1, admin):
    cid, msg = await ticket_offer(v1)
    shot = await upload_ok(sim, "screen.png", PNG)
    values = {**GOOD, "screenshot": {"file_id": shot["id"]}, "requester": {"text": "mallory@example.com"},
              "systems": {"options": ["vpn"]}}  # systems is hidden (category hardware): dropped, not checked
    r = await v1.post(modal_url(msg, modal_id_of(msg)) + "/submit", json={"values": values})
    assert r.status_code == 200 and r.json() == {"status": "SUBMITTED", "receipt_text": r.json()["receipt_text"]}
    assert r.json()["receipt_text"].startswith("Your request was received")
    call = (await admin.get("/_sim/modals")).json()["calls"][-1]
    assert call["op"] == "submit" and call["status"] == 200 and call["values"] == values
    assert call["kept"]["requester"] == {"text": ALICE} and "systems" not in call["kept"]
    assert call["kept"]["screenshot"] == {"file_id": shot["id"]} and call["kept"]["location"] == GOOD["location"]
    # the outcome arrives later, as an assistant message and an event (what a poller delivers)
    assert not [e for e in await events_of(v1) if "INC" in text_of(e["event_payload"]["message"])]

    async def filed() -> list[dict]:
        return [e for e in await events_of(v1) if "INC" in text_of(e["event_payload"]["message"])]

    event = (await wait_for(filed))[0]
    message = event["event_payload"]["message"]
    assert event["conversation_id"] == cid and message["actor"] == "ASSISTANT"
    assert text_of(message) == "I filed INC0010001: Laptop screen flickers. You'll get updates here."
    history = (await v1.get(f"/conversations/{cid}/messages")).json()["messages"]
    assert history[0]["message_id"] == message["message_id"]
    # numbers increase; a multi choice with free input takes unlisted values
    msg2 = answer((await v1.get(f"/conversations/{cid}/responses/{msg['response_id']}")).json())
    r = await v1.post(modal_url(msg2, modal_id_of(msg2)) + "/submit", json={"values": {
        **GOOD, "summary": {"text": "VPN access"}, "category": {"option": "access"},
        "systems": {"options": ["vpn", "Payroll DB"]}}})
    assert r.status_code == 200
    second = await wait_for(lambda: _texts_with(v1, "INC0010002"))
    assert second == ["I filed INC0010002: VPN access. You'll get updates here."]
    kept = (await admin.get("/_sim/modals")).json()["calls"][-1]["kept"]
    assert kept["systems"] == {"options": ["vpn", "Payroll DB"]}


async def _texts_with(v1: httpx.AsyncClient, needle: str) -> list[str]:
    return [t for e in await events_of(v1) if needle in (t := text_of(e["event_payload"]["message"]))]


async def test_modal_submit_validation(sim, v1, admin):
    _, msg = await ticket_offer(v1)
    url = modal_url(msg, modal_id_of(msg)) + "/submit"

    async def refused(values: dict) -> str:
        r = await v1.post(url, json={"values": values})
        assert r.status_code == 400, (values, r.text)
        code, message = err(r)
        assert code == "INVALID_INPUT"
        return message

    without = {k: v for k, v in GOOD.items() if k != "summary"}
    assert await refused(without) == "Field 'summary' is required"
    assert await refused({**GOOD, "summary": {"text": ""}}) == "Field 'summary' is required"
    assert await refused({"description": {"text": "only this"}}) == "Field 'summary' is required"  # first in order
    assert await refused({**GOOD, "category": None}) == "Field 'category' is required"
    not_a_date = "Field 'needed_by' must be a date (YYYY-MM-DD)"
    assert await refused({**GOOD, "needed_by": {"date": "05/04/2031"}}) == not_a_date
    assert await refused({**GOOD, "needed_by": {"date": "2031-02-30"}}) == not_a_date
    assert "'callback_at'" in await refused({**GOOD, "callback_at": {"datetime": "tomorrow"}})
    assert "'urgent'" in await refused({**GOOD, "urgent": {"bool": "yes"}})
    assert "'summary'" in await refused({**GOOD, "summary": "plain string"})
    assert "'category'" in await refused({**GOOD, "category": {"option": "furniture"}})  # not listed, no free input
    assert "'category'" in await refused({**GOOD, "category": {"options": ["hardware"]}})  # single takes option
    assert await refused({**GOOD, "category": {"option": "access"}}) == "Field 'systems' is required"
    assert "'systems'" in await refused({**GOOD, "category": {"option": "access"}, "systems": {"option": "vpn"}})
    assert "'screenshot'" in await refused({**GOOD, "screenshot": {"file_id": "file_nope"}})
    display = "Field 'header' is a display field and is never submitted"
    assert await refused({**GOOD, "header": {"text": "x"}}) == display
    assert await refused({**GOOD, "bogus": {"text": "x"}}) == "Field 'bogus' is not part of this form"
    r = await v1.post(url, json={"values": ["not", "an", "object"]})
    assert r.status_code == 400
    # forced failure from the admin API, then the same values pass
    r = await admin.post("/_sim/modal-failures", json={"message": "Field 'summary' is too vague"})
    assert r.status_code == 201 and r.json() == {"pending": ["Field 'summary' is too vague"]}
    assert await refused(GOOD) == "Field 'summary' is too vague"
    assert (await v1.post(url, json={"values": GOOD})).status_code == 200
    assert (await admin.post("/_sim/modal-failures", json={})).status_code == 400
    calls = (await admin.get("/_sim/modals")).json()["calls"]
    assert calls[0]["values"] == without and calls[0]["error"] == "Field 'summary' is required"
    assert [c["status"] for c in calls][-2:] == [400, 200]
    assert sim.state.modal_calls == calls


# -- get-help menu ---------------------------------------------------------------------------------
async def test_get_help_menu(v1):
    cid = await new_conv(v1)
    first = answer(await say(v1, cid, "show me the help menu"))
    categories = first["handoff"]["handoff_categories"]
    assert [c["category_id"] for c in categories] == ["it", "hr"]
    it, hr = categories
    assert it["name"] == ":computer: IT" and it["description"]
    assert [(i["title"], i["type"]) for i in it["handoff_items"]] == [
        ("File a ticket", "ACTION"), ("Talk to an agent", "ACTION"), ("Service desk hours", "TEXT")]
    ticket, agent, hours = it["handoff_items"]
    assert ticket["action"]["type"] == "MODAL_ACTION"
    assert ticket["action"]["modal_action"]["modal_id"].startswith("modal_")
    assert agent["action"]["type"] == "CALLBACK_ACTION" and agent["action"]["callback_action"]["callback_id"]
    assert hours["text"]["type"] == "MARKDOWN_TEXT" and hours["text"]["markdown_text"]["text"].startswith(
        "The service desk is open 8\u201318")
    assert hr["name"] == "HR" and 1 <= len(hr["handoff_items"]) <= 2
    assert first["feedback"]["helpful"]["callback_id"]
    # the menu's form: fresh id per read, and it opens the ticket form
    history = (await v1.get(f"/conversations/{cid}/messages")).json()["messages"]
    again = next(m for m in history if m["actor"] == "ASSISTANT")
    modal_id = again["handoff"]["handoff_categories"][0]["handoff_items"][0]["action"]["modal_action"]["modal_id"]
    assert modal_id != ticket["action"]["modal_action"]["modal_id"]
    r = await v1.get(modal_url(again, modal_id))
    assert r.status_code == 200 and "summary" in by_name(r.json()["fields"])
    assert "handoff" in answer(await say(v1, cid, "how do I get help"))
    # "Talk to an agent" from the menu starts live-agent mode
    connect = answer(await say(v1, cid, {"action": {"callback_id": agent["action"]["callback_action"]["callback_id"]}}))
    assert text_of(connect).startswith("Connecting you with a live agent")
    r, events = await turn(v1, cid, {"chat": {"text": "hello?"}})
    assert [n for n, _ in events] == ["RESPONSE_CREATED", "RESPONSE_COMPLETED"]


# -- live agents -------------------------------------------------------------------------------------
async def test_live_agent_mode(sim, v1, admin):
    cid = await new_conv(v1)
    handoff = await say(v1, cid, "I want to talk to an agent")
    connect = answer(handoff)
    assert text_of(connect).startswith("Connecting you with a live agent")
    assert [(a["type"], a["label"]) for a in connect["actions"]] == [("CALLBACK_ACTION", "End chat")]
    end_cb = connect["actions"][0]["callback_action"]["callback_id"]
    assert sim.state.user(ALICE).live[cid].handoff_response_id == handoff["response_id"]

    # a turn in live mode: CREATED, COMPLETED, no outputs; the user's message is stored
    r, events = await turn(v1, cid, {"chat": {"text": "my screen is black"}})
    assert [n for n, _ in events] == ["RESPONSE_CREATED", "RESPONSE_COMPLETED"]
    assert [d["sequence_number"] for _, d in events] == [1, 2]
    done = events[-1][1]["response"]
    assert done["status"] == "COMPLETED" and done["outputs"] == []
    rid = done["response_id"]
    assert (await v1.get(f"/conversations/{cid}/responses/{rid}")).json()["outputs"] == []
    msgs = (await v1.get(f"/conversations/{cid}/responses/{rid}/messages")).json()["messages"]
    assert [(m["actor"], text_of(m)) for m in msgs] == [("USER", "my screen is black")]
    # create-response behaves the same: COMPLETED, no outputs
    r = await v1.post(f"/conversations/{cid}/responses", json={"input": {"text": "still there?"}})
    assert r.status_code == 202 and r.json()["status"] == "COMPLETED" and r.json()["outputs"] == []

    # the agent answers each turn after live_agent_delay, as LIVE_AGENT events on their own responses
    async def agent_events() -> list[dict]:
        got = [e for e in await events_of(v1, cid) if e["event_payload"]["message"]["actor"] == "LIVE_AGENT"]
        return got if len(got) == 2 else []

    replies = [e["event_payload"]["message"] for e in await wait_for(agent_events)]
    assert [text_of(m) for m in replies] == ["Thanks, I'm looking at it: my screen is black",
                                             "Thanks, I'm looking at it: still there?"]
    for m in replies:
        assert m["sender_info"]["display_name"] == "Dana Fielding"
        assert m["sender_info"]["avatar_url"].startswith("https://")
        assert m["response_id"] not in (rid, handoff["response_id"], r.json()["response_id"])
    # and on demand, from the admin API
    said = await admin.post("/_sim/live-agent", json={"identity": ALICE, "conversation_id": cid,
                                                      "text": "Try holding the power button", "display_name": "Sam"})
    assert said.status_code == 201 and said.json()["live"] is True
    event = said.json()["event"]
    assert event["event_payload"]["message"]["sender_info"]["display_name"] == "Sam"
    got = (await v1.get(f"/conversations/{cid}/events/{event['event_id']}")).json()
    assert text_of(got["event_payload"]["message"]) == "Try holding the power button"

    # "End chat": no outputs; the farewell is a late message under the handoff response, not an event
    before = {e["event_id"] for e in await events_of(v1)}
    ended = await say(v1, cid, {"action": {"callback_id": end_cb}})
    assert ended["outputs"] == []
    press = (await v1.get(f"/conversations/{cid}/responses/{ended['response_id']}/messages")).json()["messages"]
    assert [m["actor"] for m in press] == ["USER"] and press[0]["content"]["type"] == "CALLBACK_ACTION_CONTENT"
    history = (await v1.get(f"/conversations/{cid}/messages")).json()["messages"]
    farewell = history[0]
    assert text_of(farewell) == "You've ended your live agent chat session."
    assert farewell["response_id"] == handoff["response_id"] and farewell["created_at"] > press[0]["created_at"]
    under = (await v1.get(f"/conversations/{cid}/responses/{handoff['response_id']}/messages")).json()["messages"]
    assert under[-1]["message_id"] == farewell["message_id"]
    await asyncio.sleep(0.1)  # no agent echo after the end, no farewell event
    assert {e["event_id"] for e in await events_of(v1)} == before
    assert cid not in sim.state.user(ALICE).live
    assert "password" in text_of(answer(await say(v1, cid, "reset my password")))  # answers resume


async def test_live_agent_admin_and_old_bases(sim, admin):
    watch = SpecWatch()
    sim.taps.append(watch)
    async with httpx.AsyncClient(base_url=f"{sim.url}/rest/v1", headers=H) as v1, \
            httpx.AsyncClient(base_url=sim.base_url, headers=H) as old:
        # the /rest/v1 flows are triggered on /rest/v1 only
        cid = await new_conv(old)
        plain = answer(await say(old, cid, {"text": "please file a ticket, talk to an agent"}))
        assert not any(a["type"] == "MODAL_ACTION" for a in plain.get("actions", []))
        assert "handoff" not in plain and cid not in sim.state.user(ALICE).live
        # live mode through the admin API; the agent's message reads as ASSISTANT on older bases
        await sim_config(admin, live_agent_delay=None)
        r = await admin.post("/_sim/live-agent", json={"identity": ALICE, "conversation_id": cid, "active": True})
        assert r.json() == {"live": True, "event": None}
        r = await old.post(f"/conversations/{cid}/responses", json={"input": {"text": "hi"}})
        assert r.json()["status"] == "COMPLETED" and r.json()["outputs"] == []
        await admin.post("/_sim/live-agent",
                         json={"identity": ALICE, "conversation_id": cid, "text": "Hello from Dana"})
        ev = (await old.get(f"/conversations/{cid}/events")).json()["events"][-1]["event_payload"]["message"]
        assert ev["actor"] == "ASSISTANT" and "sender_info" not in ev
        ev1 = (await v1.get(f"/conversations/{cid}/events")).json()["events"][-1]["event_payload"]["message"]
        assert ev1["actor"] == "LIVE_AGENT" and ev1["sender_info"]["display_name"] == "Dana Fielding"
        await asyncio.sleep(0.1)
        assert len((await v1.get(f"/conversations/{cid}/events")).json()["events"]) == 1  # no automatic reply
        # v1-made forms and menus read without MODAL_ACTION / handoff on older bases
        await admin.post("/_sim/live-agent", json={"identity": ALICE, "conversation_id": cid, "active": False})
        await say(v1, cid, "file a ticket")
        await say(v1, cid, "help menu")
        for m in (await old.get(f"/conversations/{cid}/messages")).json()["messages"]:
            assert "handoff" not in m and all(a["type"] != "MODAL_ACTION" for a in m.get("actions", []))
            assert m["actor"] in ("USER", "ASSISTANT")
    for bad in ({"identity": ALICE, "conversation_id": "conv_nope", "text": "x"},):
        assert (await admin.post("/_sim/live-agent", json=bad)).status_code == 404
    assert (await admin.post("/_sim/live-agent", json={"identity": ALICE, "conversation_id": cid})).status_code == 400
    assert watch.checked and not watch.problems, "\n".join(watch.problems)


async def sim_config(admin: httpx.AsyncClient, **values: Any) -> dict:
    r = await admin.post("/_sim/config", json=values)
    assert r.status_code == 200, r.text
    return r.json()


# -- get-event ---------------------------------------------------------------------------------------
async def test_get_event(sim, v1):
    cid, other = await new_conv(v1), await new_conv(v1)
    event = sim.inject_event(ALICE, "Your laptop has shipped", conversation_id=cid)
    r = await v1.get(f"/conversations/{cid}/events/{event['event_id']}")
    assert r.status_code == 200 and r.headers["x-trace-id"]
    listed = (await v1.get(f"/conversations/{cid}/events")).json()["events"]
    assert r.json() == listed[0] == event
    r = await v1.get(f"/conversations/-/events/{event['event_id']}")
    assert r.status_code == 400 and err(r)[0] == "INVALID_INPUT"
    for path in (f"/conversations/{other}/events/{event['event_id']}", f"/conversations/{cid}/events/evt_nope",
                 f"/conversations/conv_nope/events/{event['event_id']}"):
        r = await v1.get(path)
        assert r.status_code == 404 and err(r)[0] == "NOT_FOUND", path
    async with httpx.AsyncClient(base_url=f"{sim.url}/rest/v1", headers=H_BOB) as bob:
        assert (await bob.get(f"/conversations/{cid}/events/{event['event_id']}")).status_code == 404
    async with httpx.AsyncClient(base_url=sim.base_url, headers=H) as old:  # /rest/v1 only
        assert (await old.get(f"/conversations/{cid}/events/{event['event_id']}")).status_code == 404


# -- outbound webhook --------------------------------------------------------------------------------
async def test_webhook_documented_envelope_and_rotation(admin, sim):
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
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        shown = await sim_config(admin, webhook_url=url, webhook_secrets=["new-key", "old-key"],
                                 webhook_envelope="documented")
        assert shown["webhook_secrets"] == ["new-key", "old-key"] and shown["webhook_envelope"] == "documented"
        assert (await admin.post("/_sim/config", json={"webhook_envelope": "xml"})).status_code == 400
        assert (await admin.post("/_sim/config", json={"webhook_secrets": "k"})).status_code == 400
        event = sim.inject_event(ALICE, "Your PTO was approved")
        await asyncio.wait_for(arrived.wait(), 5)
        body, sig = got[0]
        assert json.loads(body) == {
            "id": event["event_id"],
            "type": "CONVERSATION_RESPONSE_RECEIVED",
            "created_at": event["created_at"],
            "data": {"conversation_id": event["conversation_id"], "user_id": ALICE},
        }
        assert event["event_id"].startswith("evt_") and event["conversation_id"].startswith("conv_")
        assert sig == "sha256=" + hmac.new(b"new-key", body, hashlib.sha256).hexdigest()  # the first secret signs
        # the receiver fetches the content with get-event, as the envelope's user
        async with httpx.AsyncClient(base_url=f"{sim.url}/rest/v1", headers=H) as v1:
            r = await v1.get(f"/conversations/{event['conversation_id']}/events/{event['event_id']}")
            assert text_of(r.json()["event_payload"]["message"]) == "Your PTO was approved"
        # agent replies and filed-ticket messages are delivered the same way
        arrived.clear()
        sim.agent_say(ALICE, event["conversation_id"], "Agent here")
        await asyncio.wait_for(arrived.wait(), 5)
        assert json.loads(got[1][0])["data"]["user_id"] == ALICE
    finally:
        await runner.cleanup()


def test_webhook_signing_key_choice():
    assert signing_secret(["new-key", "old-key"]) == "new-key"
    assert signing_secret("new-key, old-key") == "new-key"  # BRIDGE_WEBHOOK_SECRET style
    assert signing_secret("only") == "only" and signing_secret(None) is None and signing_secret([]) is None


async def test_admin_config_knobs(admin, sim):
    shown = await sim_config(admin, live_agent_delay=0.2, modal_submit_delay=0.1, file_ttl=60)
    assert shown == {"pace": 0.0, "token_ttl": 3600, "token_body": "flat", "live_agent_delay": 0.2,
                     "modal_submit_delay": 0.1, "file_ttl": 60.0}
    assert (await sim_config(admin, live_agent_delay=None))["live_agent_delay"] is None
    for bad in ({"live_agent_delay": -1}, {"modal_submit_delay": "soon"}, {"file_ttl": 0}, {"nope": 1}):
        assert (await admin.post("/_sim/config", json=bad)).status_code == 400, bad
    state = (await admin.get("/_sim/state")).json()
    assert state["modal_calls"] == 0 and state["uploads"] == 0 and state["live_chats"] == {}
