"""Files from Slack, end to end over loopback: a file shared in a DM (or added to a form's file
input) is fetched from the fake Slack with the bot token, uploaded to the simulator's Files API
(`/rest/v1alpha1/files`) and sent with the question (or the form's values). The fake serves a
file only to a bot token of its workspace holding `files:read`, and otherwise answers Slack's
sign-in page as HTML with status 200, which the bridge must not mistake for the file."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from bridge import texts
from bridge.errors import AttachmentRefused, AttachmentTooLarge
from bridge.models import Attachment
from bridge.testing.waiting import until
from tests.test_slack_e2e import dm
from tests.test_slack_forms import V1Harness, v1  # noqa: F401 - a fixture

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def shared(v1: V1Harness, text: str, *files: dict[str, Any]) -> dict[str, Any]:
    return dm(text, subtype="file_share", files=list(files))


def user_messages(v1: V1Harness) -> list[dict[str, Any]]:
    return [m for u in v1.sim.state.users.values() for m in u.messages.values() if m.get("actor") == "USER"]


def sent_files(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content") or {}
    return list((content.get("plain_text") or {}).get("files") or [])


async def test_a_shared_screenshot_reaches_moveworks_with_the_question(v1):
    file = v1.fake.add_file("vpn-error.png", PNG, "image/png")
    event = shared(v1, "My VPN shows this error", file)
    await v1.send(event)
    text = await v1.answered("D1", event["ts"])
    assert texts.FILES_ONLY not in text
    [upload] = [u for u in v1.sim.state.uploads if u["status"] == 201]
    assert upload["sha256"] == hashlib.sha256(PNG).hexdigest() and upload["file_name"] == "vpn-error.png"
    assert v1.fake.downloads == [{"file": file["id"], "authorized": True}]
    [question] = [m for m in user_messages(v1) if sent_files(m)]
    assert sent_files(question)[0]["file_id"] == upload["id"]
    assert "vpn-error.png" in text  # the simulator's answer names what it received


async def test_a_file_without_a_word_is_still_a_question(v1):
    file = v1.fake.add_file("error.png", PNG, "image/png")
    event = shared(v1, "", file)
    await v1.send(event)
    text = await v1.answered("D1", event["ts"])
    assert texts.FILES_ONLY not in text and texts.FILES_NONE_USABLE not in text
    assert any(sent_files(m) for m in user_messages(v1))


async def test_without_files_read_slacks_sign_in_page_is_not_passed_on(v1):
    v1.fake.teams["T1"].scopes.discard("files:read")
    file = v1.fake.add_file("error.png", PNG, "image/png")
    event = shared(v1, "Why does my screen look like this?", file)
    await v1.send(event)
    await until(lambda: len(v1.answers("D1", event["ts"])) >= 2 and v1.settled(),
                what="the note and the answer")
    shown = " ".join(v1.fake.body_text(m) for m in v1.answers("D1", event["ts"]))
    assert texts.FILE_UNREADABLE.format(name="error.png") in shown
    assert v1.fake.downloads == [{"file": file["id"], "authorized": False}]
    assert not [u for u in v1.sim.state.uploads if u["status"] == 201]
    assert "Why does my screen look like this?" in [
        (m.get("content") or {}).get("plain_text", {}).get("text") for m in user_messages(v1)]


async def test_download_respects_the_limit_and_never_sends_the_token_elsewhere(v1):
    file = v1.fake.add_file("dump.txt", b"x" * 5000, "text/plain")
    attachment = Attachment("dump.txt", "text/plain", None,  # Slack did not say how big
                            {"url": file["url_private_download"], "id": file["id"], "team": "T1"})
    assert await v1.adapter.download(attachment, 5000) == b"x" * 5000
    with pytest.raises(AttachmentTooLarge):
        await v1.adapter.download(attachment, 4999)
    for url in ("https://files.evil.example.com/x.png", "http://slack.com.evil.example/x",
                "http://files.slack.com/x"):  # not HTTPS
        with pytest.raises(AttachmentRefused):
            await v1.adapter.download(Attachment("x.png", "image/png", 3, {"url": url, "team": "T1"}), 100)
    unknown = Attachment("x.png", "image/png", 3, {"url": file["url_private"].replace(file["id"], "FNONE"),
                                                  "team": "T1"})
    with pytest.raises(AttachmentRefused):  # the sign-in page, not the file
        await v1.adapter.download(unknown, 100_000)


async def test_a_file_added_to_the_form_goes_to_moveworks_as_its_file_id(v1):
    _, view = await v1.open_ticket_form()
    file = v1.fake.add_file("screen.png", PNG, "image/png")
    v1.fake.fill(view["id"], {"f.category": "hardware", "f.screenshot": [file["id"]]})
    reply = await v1.submit(view["id"])
    assert reply == {"response_action": "clear"}
    [upload] = [u for u in v1.sim.state.uploads if u["status"] == 201]
    assert upload["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert v1.submits()[-1]["body"]["values"]["screenshot"] == {"file_id": upload["id"]}
