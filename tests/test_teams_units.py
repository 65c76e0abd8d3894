"""Teams adapter pieces that need no network: entity serialization (the §1.4 trap), Markdown
rewriting, citations/cards, inbound parsing helpers, error mapping and the app package."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from botbuilder.schema import Activity
from msrest.exceptions import HttpOperationError

from adapters.teams.bot import question_text, scope_of, thread_of
from adapters.teams.connector import (
    MessageRefused,
    StreamCanceled,
    StreamNotAllowed,
    StreamTimedOut,
    to_platform_error,
)
from adapters.teams.entities import AIMessageEntity, StreamInfoEntity, claim
from adapters.teams.package import build_package, manifest
from adapters.teams.render import (
    answer_card,
    growing_text,
    streamable,
    text_extras,
    to_teams_markdown,
)
from bridge.errors import PlatformError, PlatformRateLimited
from bridge.models import Answer, CitationLink, FeedbackTarget
from bridge.moveworks.models import Action


def test_streaminfo_entity_really_serializes() -> None:
    activity = Activity(type="typing", text="Searching…",
                        entities=[StreamInfoEntity(stream_type="informative", stream_sequence=1)])
    assert activity.serialize()["entities"] == [
        {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}
    ]
    final = Activity(type="message", text="done", entities=[StreamInfoEntity(stream_type="final", stream_id="s1")])
    assert final.serialize()["entities"] == [{"type": "streaminfo", "streamId": "s1", "streamType": "final"}]


def test_ai_entity_matches_the_documented_json() -> None:
    entity = AIMessageEntity(citation=[claim(1, "Password policy", "https://kb/1", "Rotate every 90 days")])
    assert Activity(type="message", entities=[entity]).serialize()["entities"] == [{
        "type": "https://schema.org/Message", "@type": "Message", "@context": "https://schema.org", "@id": "",
        "additionalType": ["AIGeneratedContent"],
        "citation": [{"@type": "Claim", "position": 1, "appearance": {
            "@type": "DigitalDocument", "name": "Password policy", "url": "https://kb/1",
            "abstract": "Rotate every 90 days"}}],
    }]


def test_claim_is_clipped_to_teams_limits() -> None:
    c = claim(2, "T" * 200, None, "s" * 500).serialize()
    assert len(c["appearance"]["name"]) == 80 and len(c["appearance"]["abstract"]) == 160
    assert "url" not in c["appearance"]


@pytest.mark.parametrize("source, expected", [
    ("# Title\n\nBody", "**Title**\n\nBody"),
    ("### Steps ###", "**Steps**"),
    ("a\n\n---\n\nb", "a\n\n\n\nb"),
    ("- [ ] todo\n- [x] done", "- ☐ todo\n- ☑ done"),
    ("see ![diagram](https://x/d.png)", "see [diagram](https://x/d.png)"),
    ("go to <https://x.y>", "go to [https://x.y](https://x.y)"),
    ("type <your name> here", "type &lt;your name> here"),
    ("`<kept>` in code", "`<kept>` in code"),
    ("| App | Owner |\n|---|:--:|\n| Zoom | IT |\n| Jira | Eng |\n\nafter",
     "- **App**: Zoom; **Owner**: IT\n- **App**: Jira; **Owner**: Eng\n\nafter"),
    ("```\n# not a heading\n| a | b |\n|---|---|\n```", "```\n# not a heading\n| a | b |\n|---|---|\n```"),
    ("**bold**, *italic*, [link](https://x) and 1. lists", "**bold**, *italic*, [link](https://x) and 1. lists"),
])
def test_markdown_is_rewritten_into_what_teams_renders(source: str, expected: str) -> None:
    assert to_teams_markdown(source) == expected


def _answer(citations: int = 0, **kw) -> Answer:
    links = tuple(CitationLink(i, f"Doc {i}", f"https://kb/{i}") for i in range(1, citations + 1))
    return Answer(text="x", citations=links, conversation_id="conv-1", **kw)


def test_extras_up_to_ten_citations_are_claims() -> None:
    answer = _answer(10)
    extras = text_extras(answer.text, answer)
    data = Activity(type="message", entities=extras.entities).serialize()["entities"][0]
    assert [c["position"] for c in data["citation"]] == list(range(1, 11))
    assert answer_card(answer) is None


def test_extras_more_than_ten_citations_become_a_sources_card() -> None:
    answer = _answer(12)
    extras = text_extras(answer.text, answer)
    data = Activity(type="message", entities=extras.entities).serialize()["entities"][0]
    assert "citation" not in data and data["additionalType"] == ["AIGeneratedContent"]
    card = answer_card(answer)
    assert card is not None
    body = card.content["body"]
    assert body[0]["text"] == "Sources" and len(body) == 13


def test_extras_actions_and_feedback() -> None:
    answer = _answer(
        actions=(Action("URL_ACTION", "Open portal", url="https://portal"),
                 Action("CALLBACK_ACTION", "File ticket", callback_id="cb1")),
        feedback=FeedbackTarget("conv-1", "resp-1", "msg-1", "good", "bad"),
    )
    card = answer_card(answer)
    assert card is not None
    actions = card.content["actions"]
    assert actions[0] == {"type": "Action.OpenUrl", "title": "Open portal", "url": "https://portal"}
    assert actions[1]["data"] == {"mwb": "action", "callback_id": "cb1", "conversation_id": "conv-1",
                                  "label": "File ticket"}
    assert text_extras(answer.text, answer).channel_data == {"feedbackLoopEnabled": True}
    # only the last part of an answer carries the 👍/👎; every part carries the AI label
    first_part = text_extras("part one", answer, last=False)
    assert first_part.channel_data is None and len(first_part.entities) == 1


def test_each_part_claims_the_citations_it_shows() -> None:
    links = tuple(CitationLink(i, f"Doc {i}", f"https://kb/{i}") for i in (1, 2, 3))
    answer = Answer(text="one [1]\n\ntwo [2]", citations=links, conversation_id="c")

    def positions(text: str, last: bool) -> list[int]:
        data = Activity(type="message", entities=text_extras(text, answer, last=last).entities).serialize()
        return [c["position"] for c in data["entities"][0].get("citation", [])]

    assert positions("one [1]", last=False) == [1]
    assert positions("two [2]", last=True) == [2, 3]  # [3] is shown nowhere: the last part keeps it


def _activity(**kw) -> Activity:
    base = {"type": "message", "id": "m1", "recipient": {"id": "28:bot", "name": "Bot"},
            "from": {"id": "29:u", "aadObjectId": "aad-u"}, "conversation": {"id": "a:1"}}
    base.update(kw)
    return Activity().deserialize(base)


def test_mention_stripping_keeps_other_names() -> None:
    activity = _activity(
        text="<at>Bot</at> ask <at>Dana Lee</at> about&nbsp;VPN",
        entities=[{"type": "mention", "text": "<at>Bot</at>", "mentioned": {"id": "28:bot"}},
                  {"type": "mention", "text": "<at>Dana Lee</at>", "mentioned": {"id": "29:dana"}}],
    )
    assert question_text(activity) == "ask Dana Lee about VPN"


def test_thread_keys_per_scope() -> None:
    channel = _activity(conversation={"id": "19:c@thread.tacv2;messageid=123", "conversationType": "channel"})
    thread, write_to = thread_of(channel, "t", scope_of(channel))
    assert (thread.channel, thread.thread, write_to) == ("19:c@thread.tacv2", "123", "19:c@thread.tacv2;messageid=123")
    bare = _activity(id="77", conversation={"id": "19:c@thread.tacv2", "conversationType": "channel"})
    assert thread_of(bare, "t", "channel")[1] == "19:c@thread.tacv2;messageid=77"
    group = _activity(conversation={"id": "19:g@thread.v2", "conversationType": "groupChat"})
    assert thread_of(group, "t", scope_of(group))[0].thread == ""
    assert scope_of(_activity(conversation={"id": "x"})) == "personal"


class _Response:
    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self.reason = "x"
        self._body = body

    def text(self) -> str:
        return json.dumps(self._body)


def _http_error(status: int, code: str, message: str, headers: dict | None = None, **extra) -> HttpOperationError:
    exc = HttpOperationError.__new__(HttpOperationError)
    exc.response = _Response(status, {"error": {"code": code, "message": message, **extra}}, headers)
    exc.error = None
    return exc


def test_connector_errors_map_onto_core_errors() -> None:
    limited = to_platform_error(_http_error(429, "Throttled", "quota", {"Retry-After": "3"}), "update")
    assert isinstance(limited, PlatformRateLimited) and limited.retry_after == 3.0
    assert isinstance(to_platform_error(_http_error(403, "ContentStreamNotAllowed",
                      "Content stream finished due to exceeded streaming time."), "stream"), StreamTimedOut)
    assert isinstance(to_platform_error(_http_error(403, "ContentStreamNotAllowed",
                      "Content stream was canceled by user."), "stream"), StreamCanceled)
    assert isinstance(to_platform_error(_http_error(403, "ContentStreamNotAllowed",
                      "Content stream is not allowed."), "stream"), StreamNotAllowed)
    blocked = to_platform_error(_http_error(403, "Forbidden", "blocked", subCode="MessageWritesBlocked"), "post")
    assert type(blocked) is PlatformError and blocked.permanent
    for status in (412, 502, 503, 504):
        err = to_platform_error(_http_error(status, "x", "y"), "update")
        assert type(err) is PlatformError and not err.permanent
    assert not to_platform_error(_http_error(404, "ActivityNotFound", "gone"), "update").permanent
    assert to_platform_error(_http_error(404, "ConversationNotFound", "gone"), "post").permanent


def test_a_refused_message_is_permanent_and_never_transient() -> None:
    """4xx (but 429 and 412) are Teams refusing the request: retrying it as sent cannot help."""
    for status, code in ((400, "BadSyntax"), (400, "BadRequest"), (413, "MessageSizeTooBig"), (422, "x")):
        err = to_platform_error(_http_error(status, code, "refused"), "update")
        assert isinstance(err, MessageRefused) and err.permanent, status
    for status in (412, 500, 502, 503, 504):
        err = to_platform_error(_http_error(status, "x", "y"), "stream")
        assert not err.permanent and not isinstance(err, MessageRefused), status


# --- a growing answer never rewrites what was shown -------------------------------------------------

GROWING = [
    "## Getting started with the VPN client\n\nInstall **the client** from <https://vpn.example.com> "
    "and sign in with `corp\\user`. See ![diagram](https://x/d.png) and :white_check_mark: done!\n\n"
    "| App | Owner |\n|---|:--:|\n| Zoom | IT |\n| Jira | Eng |\n\n- [ ] install\n- [x] sign in\n\n"
    "---\n\n```\n# not a heading | a |\n```\n\nLast words with *emphasis* and ``code `x` here``.",
    "Intro line\n| a | b |\n| c | d |\nnot a table after all <b>",
    "### Steps ###\n1. one\n2. two\n\n* * *\n\n__bold__ and <your name> `<kept>` ok",
]


@pytest.mark.parametrize("text", GROWING)
def test_streamed_text_always_extends_what_was_shown(text: str) -> None:
    """Every cut of a growing answer renders to a prefix of every later cut and of the final: the
    native stream never has to skip a frame, whatever the Markdown rewrite does."""
    final = to_teams_markdown(text)
    shown = ""
    for end in range(len(text) + 1):
        wire = to_teams_markdown(streamable(text[:end]))
        assert wire.startswith(shown), (text[:end], shown, wire)
        assert final.startswith(wire), (text[:end], wire)
        shown = wire


def test_streamable_holds_back_only_what_may_change() -> None:
    assert streamable("Hello wor") == "Hello wor"
    assert streamable("Intro\n## Getting sta") == "Intro"
    assert streamable("Intro\n| App | Owner |") == "Intro"  # a possible table header
    assert streamable("Intro\n| App | Owner |\n|---|") == "Intro"
    table = "| App | Owner |\n|---|---|\n| Zoom | IT |"
    assert streamable(table + "\n| Ji") == table  # an unfinished row
    assert streamable("see <https://exa") == "see "
    assert streamable("run `git st") == "run "
    assert streamable("done :white_check") == "done "
    assert streamable("valid until *31 Ma") == "valid until "  # emphasis shows once it is closed
    assert streamable("**Your laptop refresh is due") == ""
    assert streamable("a **b** c **d") == "a **b** c "
    assert streamable("* item one") == "* item one"


def test_growing_edits_render_like_the_final() -> None:
    cursor = " ▍"
    assert growing_text("Use **Settings and" + cursor, "markdown", cursor) == "Use **Settings and**" + cursor
    assert growing_text("until *31" + cursor, "markdown", cursor) == "until *31*" + cursor
    assert growing_text("Open **" + cursor, "markdown", cursor) == "Open" + cursor
    assert growing_text("## Access lev" + cursor, "markdown", cursor) == "**Access lev**" + cursor
    assert growing_text("Levels:\n| Level | What |" + cursor, "markdown", cursor) == "Levels:" + cursor
    assert growing_text("- **a** and *b*" + cursor, "markdown", cursor) == "- **a** and *b*" + cursor


def test_app_package(tmp_path: Path) -> None:
    bot = "00000000-0000-0000-0000-0000000000ab"
    out = build_package(tmp_path / "app.zip", bot, name="IT Help")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        data = json.loads(zf.read("manifest.json"))
        assert data["bots"][0]["botId"] == bot and data["id"] == bot and data["name"]["short"] == "IT Help"
        assert set(data["bots"][0]["scopes"]) == {"personal", "team", "groupChat"}
        for name, size in (("color.png", 192), ("outline.png", 32)):
            raw = zf.read(name)
            assert raw[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(raw[16:20], "big") == size and int.from_bytes(raw[20:24], "big") == size
    with pytest.raises(ValueError):
        manifest("not-a-guid")
