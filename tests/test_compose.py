"""What a user sees of a Moveworks answer: the final `Answer` (CommonMark text with [n] markers,
numbered sources, action buttons) composed from real-shaped MARKDOWN_TEXT messages."""

from __future__ import annotations

from typing import Any

from bridge.answers.compose import answer_from_message, answer_from_response
from bridge.moveworks.models import Message, ResponseCompleted

FORMS = "https://example.service-now.com/sp?id=sc_cat_item&sys_id="


def md(text: str) -> dict[str, Any]:
    return {"type": "MARKDOWN_TEXT", "markdown_text": {"text": text}}


def cite(cid: str, title: str, url: str | None, body: str = "", *, markdown_title: bool = True) -> dict[str, Any]:
    shown = f"**<{url}|{title}>**" if markdown_title and url else title
    data: dict[str, Any] = {
        "citation_id": cid,
        "display": {"title": md(shown) if markdown_title else {"type": "PLAIN_TEXT", "plain_text": {"text": title}},
                    "body": md(body + "\n"), "attributes": []},
    }
    if url is not None:
        data["url"] = url
    return data


def message(text: str, citations=(), refs=(), actions=()) -> Message:
    return Message.from_json({
        "message_id": "msg_1", "conversation_id": "conv_1", "response_id": "resp_1", "actor": "ASSISTANT",
        "created_at": "2026-09-25T18:40:42.411933Z", "content": md(text), "citations": list(citations),
        "content_references": [{"citation_id": c, "offset": o} for c, o in refs], "actions": list(actions),
        "feedback": {"helpful": {"callback_id": "cb_h"}, "unhelpful": {"callback_id": "cb_u"}},
    })


def url_action(url: str, label: str = "Complete this request") -> dict[str, Any]:
    return {"type": "URL_ACTION", "label": label, "url_action": {"url": url}}


def test_slack_links_and_emoji_codes_render_as_commonmark() -> None:
    text = (":wave: Open the <https://password.example.com|password portal> or <https://help.example.com> "
            ":white_check_mark: :not_an_emoji: at 10:30:00.\n"
            "Run `curl <https://x.example.com|x> :smile:` or:\n```\n<https://code.example.com|kept> :smile:\n```")
    answer = answer_from_message(message(text))
    assert answer.text == (
        "👋 Open the [password portal](https://password.example.com) or "
        "[https://help.example.com](https://help.example.com) ✅ :not_an_emoji: at 10:30:00.\n"
        "Run `curl <https://x.example.com|x> :smile:` or:\n```\n<https://code.example.com|kept> :smile:\n```"
    )


def test_markdown_citation_titles_become_plain_titles_with_the_citation_url() -> None:
    text = "There is a 401(k) plan."
    answer = answer_from_message(message(
        text,
        [cite("cite_a", "401(k) Plan Enrollment", FORMS + "plan_enrollment", "Enroll in or modify your plan"),
         {"citation_id": "cite_b",
          "display": {"title": md("<https://kb.example.com/benefits|Benefits :moneybag: FAQ>")}}],
        [("cite_a", len(text) - 1), ("cite_b", len(text) - 1)],
    ))
    assert answer.text == "There is a 401(k) plan[1][2]."
    assert [(c.number, c.title, c.url, c.snippet) for c in answer.citations] == [
        (1, "401(k) Plan Enrollment", FORMS + "plan_enrollment", "Enroll in or modify your plan"),
        (2, "Benefits 💰 FAQ", "https://kb.example.com/benefits", ""),  # no url: the title's link
    ]


def test_one_document_cited_several_times_is_one_numbered_source() -> None:
    guide = "https://kb.example.com/it/password-reset"
    text = "Open the portal. Verify with MFA. Ask the desk. Call us."
    p1, p2, p3, p4 = (text.index(s) + len(s) for s in ("portal.", "MFA.", "desk.", "us."))
    answer = answer_from_message(message(
        text,
        [cite("cite_1", "How to reset your password", guide, "Section 1"),
         cite("cite_2", "How to reset your password", guide + "/", "Section 2"),  # same URL
         cite("cite_3", "Setting up MFA", "https://kb.example.com/it/mfa"),
         cite("cite_4", "Service desk hours", None, markdown_title=False),
         cite("cite_5", "service desk  hours", None, markdown_title=False)],  # same title, no URL
        [("cite_1", p1), ("cite_2", p2), ("cite_3", p2), ("cite_1", p2), ("cite_4", p3), ("cite_5", p4)],
    ))
    assert answer.text == "Open the portal.[1] Verify with MFA.[1][2] Ask the desk.[3] Call us.[3]"
    assert [(c.number, c.title, c.url) for c in answer.citations] == [
        (1, "How to reset your password", guide),
        (2, "Setting up MFA", "https://kb.example.com/it/mfa"),
        (3, "Service desk hours", None),
    ]


def test_a_marker_never_cuts_a_link_or_an_emoji_code() -> None:
    text = "See <https://kb.example.com/vpn|the VPN guide> :rocket:"
    inside_link, inside_emoji = text.index("VPN guide"), text.index("rocket")
    answer = answer_from_message(message(
        text,
        [cite("cite_1", "VPN guide", "https://kb.example.com/vpn"), cite("cite_2", "Status", "https://s.example.com")],
        [("cite_1", inside_link), ("cite_2", inside_emoji)],
    ))
    assert answer.text == "See [the VPN guide](https://kb.example.com/vpn)[1] 🚀[2]"


def test_form_actions_take_the_titles_of_the_citations_they_open() -> None:
    forms = [("plan_enrollment", "401(k) Plan Enrollment"), ("enrollment_inquiry", "401(k) Plan Enrollment Inquiry")]
    answer = answer_from_message(message(
        "I found two forms.",
        [cite(f"cite_{key}", title, FORMS + key) for key, title in forms],
        [(f"cite_{key}", 18) for key, _ in forms],
        [url_action(FORMS + key) for key, _ in forms] + [url_action("https://app.moveworks.ai/r?v2_other"),
                                                         url_action(FORMS + "plan_enrollment")],  # a repeat
    ))
    assert answer.text == "I found two forms.[1][2]"
    assert [(a.label, a.url) for a in answer.actions] == [
        ("401(k) Plan Enrollment", FORMS + "plan_enrollment"),
        ("401(k) Plan Enrollment Inquiry", FORMS + "enrollment_inquiry"),
        ("Complete this request", "https://app.moveworks.ai/r?v2_other"),  # nothing to pair it with
    ]


def test_unpaired_generic_labels_are_numbered() -> None:
    """Moveworks' own fixture shape: short links that match no citation URL."""
    text = "It looks like **yes, there is a 401(k) plan available** :tada:"
    answer = answer_from_message(message(
        text,
        [cite("cite_enrollment", "401(k) Plan Enrollment", FORMS + "plan_enrollment")],
        [("cite_enrollment", text.index(" :tada:"))],
        [url_action(f"https://app.moveworks.ai/r?v2_fixture_{c}") for c in "abc"]
        + [{"type": "CALLBACK_ACTION", "label": "File ticket", "callback_action": {"callback_id": "cb_1"}}],
    ))
    assert answer.text == "It looks like **yes, there is a 401(k) plan available**[1] 🎉"
    assert [a.label for a in answer.actions] == [
        "Complete this request", "Complete this request (2)", "Complete this request (3)", "File ticket",
    ]
    assert answer.actions[3].callback_id == "cb_1" and answer.feedback is not None


async def test_simulator_answers_reach_the_user_clean(sim, mw) -> None:
    """The simulator's default answers are real-shaped MARKDOWN_TEXT; what the user gets is clean."""
    conv = await mw.create_conversation("employee@example.com")
    answers = {}
    for question in ("How do I reset my password?", "I need software installed"):
        events = [e async for e in mw.stream_response("employee@example.com", conv.conversation_id, text=question)]
        assert isinstance(events[-1], ResponseCompleted)
        assert events[-1].response.messages[-1].content_type == "MARKDOWN_TEXT"
        answers[question] = answer_from_response(events[-1].response, {})

    password = answers["How do I reset my password?"]
    for raw in ("<http", "|", ":closed_lock_with_key:", ":warning:", "**<"):
        assert raw not in password.text
    assert "[password portal](https://password.example.com)" in password.text and "🔐" in password.text
    assert "email.[1]\n2." in password.text and "device.[1][2]\n" in password.text  # same guide, one number
    assert [c.title for c in password.citations] == [
        "How to reset your password", "Setting up multi-factor authentication", "Account lockout policy",
    ]
    assert len({c.url for c in password.citations}) == 3
    assert {a.label for a in password.actions} == {"Reset my password", "Open password portal"}

    forms = answers["I need software installed"]
    assert "📋[1][2][3]\n" in forms.text
    assert [a.label for a in forms.actions] == [c.title for c in forms.citations] == [
        "Software installation request", "Application access request", "Admin rights request",
    ]
    assert [a.url for a in forms.actions] == [c.url for c in forms.citations]
