"""Files employees send the bot in Teams reach Moveworks' Files API (simulator on `/rest/v1`), and
the bot's token goes only where Teams' documentation says it is needed.

End to end: a personal-chat message with a file (`file.download.info`, a pre-authenticated
download link) and an inline image (on the connector) is POSTed through botbuilder's real
adapter; the simulator records the uploads and the question. Token rules: the adapter's
`download` against the fake connector and a second server standing in for another host, with
the Bot Framework token coming from a fake Entra ID (botbuilder's credential factory boundary)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_asyncio
from botbuilder.schema import Activity
from botframework.connector.auth import AppCredentials, ServiceClientCredentialsFactory

from adapters.teams.app import TeamsAdapter
from adapters.teams.connector import outbound_credentials_key
from adapters.teams.files import attachments_of
from adapters.teams.package import png
from bridge import texts
from bridge.errors import AttachmentRefused, AttachmentTooLarge
from bridge.mechanisms.ratelimit import Budgets
from bridge.process.config import Settings
from bridge.process.services import Services
from bridge.store import Store
from bridge.testing.bot_connector import FakeConnector, TeamsUser
from tests.test_teams_forms import SIM_IDENTITY, V1Harness

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = png(4, 4, lambda x, y: (255, 0, 0, 255))


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[V1Harness]:
    harness = V1Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


def user_turns(h: V1Harness) -> list[dict[str, Any]]:
    return [m for m in h.sim.state.user(SIM_IDENTITY).messages.values() if m.get("actor") == "USER"]


async def test_a_file_and_a_screenshot_reach_the_upload_endpoint_with_the_question(h: V1Harness) -> None:
    report = h.fake.add_file("error-report.pdf", PDF, "application/pdf")
    screenshot = h.fake.add_inline_image(PNG)
    await h.ask(h.alice.personal("Why does this fail?", attachments=[report, screenshot]))
    uploads = [u for u in h.sim.state.uploads if u.get("status") == 201 or u.get("id")]
    assert sorted(u["file_name"] for u in uploads) == ["error-report.pdf", "image.png"]
    assert {u["content_type"] for u in uploads} == {"application/pdf", "image/png"}
    (turn,) = user_turns(h)
    files = turn["content"]["plain_text"]["files"]
    assert sorted(f["file_id"] for f in files) == sorted(u["id"] for u in uploads)
    assert turn["content"]["plain_text"]["text"] == "Why does this fail?"
    assert h.fake.token_leaks == [], "the pre-authenticated link got no token"
    assert all(d["status"] == 200 for d in h.fake.downloads) and len(h.fake.downloads) == 2
    shown = "\n".join(m.text for m in h.fake.in_conversation(h.dm()))
    for name in ("error-report.pdf", "image.png"):
        for problem in (texts.FILE_UNREADABLE, texts.FILE_TYPE, texts.FILE_TOO_BIG):
            assert problem.format(name=name, limit="10").split(",")[0] not in shown
    assert texts.FILES_ONLY not in shown


async def test_a_file_without_text_is_still_a_question(h: V1Harness) -> None:
    await h.ask(h.alice.personal("", attachments=[h.fake.add_file("vpn.txt", b"12:00 tunnel down\n", "text/plain")]))
    (upload,) = h.sim.state.uploads
    assert upload["file_name"] == "vpn.txt"
    (turn,) = user_turns(h)
    assert turn["content"]["plain_text"]["files"][0]["file_id"] == upload["id"]
    shown = [m.text for m in h.fake.in_conversation(h.dm())]
    assert shown and not any(texts.FILES_ONLY in t or texts.EMPTY_QUESTION in t for t in shown)


async def test_a_file_over_the_limit_is_not_read_to_the_end_and_the_person_is_told(tmp_path: Path) -> None:
    class Small(V1Harness):
        def settings(self) -> Settings:
            return replace(super().settings(), moveworks_file_max_mb=0.01)  # ~10 KB

    h = Small(tmp_path)
    await h.start()
    try:
        big = h.fake.add_file("dump.txt", b"x" * 200_000, "text/plain")
        await h.ask(h.alice.personal("what is in this dump?", attachments=[big]))
        assert h.sim.state.uploads == []
        shown = "\n".join(m.text for m in h.fake.in_conversation(h.dm()))
        assert texts.FILE_TOO_BIG.format(name="dump.txt", limit="0.01") in shown
        (turn,) = user_turns(h)
        assert turn["content"]["plain_text"]["text"] == "what is in this dump?"
    finally:
        await h.stop()


# --- the bot's token: only for the connector -------------------------------------------------------


class FakeEntra(ServiceClientCredentialsFactory):
    """Entra ID issuing the bot's tokens (botbuilder's credential factory is the boundary)."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    async def is_valid_app_id(self, app_id: str) -> bool:
        return True

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Any:
        entra = self

        class Credentials(AppCredentials):
            def get_access_token(self, force_refresh: bool = False) -> str:
                token = jwt.encode({"exp": 4_102_444_800, "n": len(entra.issued), "t": threading.get_ident()},
                                   "not-a-real-signing-key-0123456789", algorithm="HS256")
                entra.issued.append(token)
                return token

        return Credentials(app_id=app_id, oauth_scope=oauth_scope)


@pytest_asyncio.fixture
async def adapter(tmp_path: Path) -> AsyncIterator[TeamsAdapter]:
    settings = Settings(db=str(tmp_path / "bridge.db"), adapters=("teams",),
                        teams_app_id="00000000-0000-0000-0000-000000000003", teams_app_password="not-a-real-secret")
    store = Store(settings.db)
    core = Services(settings=settings, store=store, relay=None, budgets=Budgets())  # type: ignore[arg-type]
    teams = TeamsAdapter(core)
    teams.credentials._inner = FakeEntra()  # the outbound token comes from the fake Entra ID
    try:
        yield teams
    finally:
        await teams.stop()
        store.close()


def received(fake: FakeConnector, attachments: list[dict[str, Any]], text: str = "") -> tuple[Any, ...]:
    """The attachments as the adapter reads them off an activity from `fake`'s serviceUrl."""
    user = TeamsUser("29:alice", "aad-alice", "Alice", fake.url)
    return attachments_of(Activity().deserialize(json.loads(json.dumps(user.personal(text, attachments=attachments)))))


async def test_the_token_goes_to_the_connector_only(adapter: TeamsAdapter) -> None:
    connector, elsewhere = FakeConnector(), FakeConnector()
    await connector.start()
    await elsewhere.start()
    try:
        image, foreign, document = received(connector, [
            connector.add_inline_image(PNG),
            elsewhere.add_inline_image(PNG),  # an image URL on another host than the serviceUrl
            connector.add_file("notes.txt", b"hello", "text/plain"),
        ])
        assert (image.name, image.content_type, foreign.content_type) == ("image.png", "image/png", "image/png")
        assert (document.name, document.content_type) == ("notes.txt", "text/plain")
        assert await adapter.download(image, 1_000_000) == PNG
        token = adapter.credentials.token(outbound_credentials_key(adapter.cloud, adapter.app_id))
        assert token is not None and connector.downloads[-1]["authorization"] == f"Bearer {token.value}"
        assert threading.get_ident() != jwt.decode(token.value, options={"verify_signature": False})["t"]
        assert await adapter.download(document, 1_000_000) == b"hello"
        assert connector.token_leaks == [] and connector.downloads[-1]["authorization"] is None
        elsewhere.bot_token = "only-the-real-connector-knows"
        with pytest.raises(AttachmentRefused):
            await adapter.download(foreign, 1_000_000)
        assert elsewhere.downloads[-1]["authorization"] is None, "no token for another host"
        connector.bot_token = "a-token-this-bot-does-not-have"
        with pytest.raises(AttachmentRefused):
            await adapter.download(image, 1_000_000)
        with pytest.raises(AttachmentTooLarge):
            await adapter.download(document, 3)
    finally:
        await connector.stop()
        await elsewhere.stop()


async def test_links_that_are_not_https_or_loopback_are_never_fetched(adapter: TeamsAdapter) -> None:
    from bridge.models import Attachment

    for url in ("http://files.example.com/a.txt", "file:///etc/passwd", "ftp://example.com/a"):
        with pytest.raises(AttachmentRefused):
            await adapter.download(Attachment("a.txt", "text/plain", None, {"kind": "download", "url": url}), 100)
