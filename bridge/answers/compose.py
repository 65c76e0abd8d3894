"""Composing the final, platform-neutral `Answer` from Moveworks messages: the text as CommonMark
with `[n]` citation markers inserted at their offsets, numbered sources (each cited document once,
in reading order), actions with labels a user can tell apart, and the feedback target. Used by
live answers and by notifications.

Moveworks cites a document once per section it used, so several citations can share a URL (or,
without one, a title): they get one number, and every marker points at it. Citation titles may be
MARKDOWN_TEXT links to the document; a source shows their plain text. Forms are often offered as
several URL actions that all read "Complete this request": each takes the title of the citation
whose URL it opens, and labels still alike get numbered."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from bridge import texts
from bridge.answers.markdown import emojize, markup_spans, normalise_markdown, plain_text
from bridge.models import Answer, CitationLink, FeedbackTarget, Sender
from bridge.moveworks.models import Action, Citation, Message, Response


def _url_key(url: str) -> str:
    return url.strip().rstrip("/")


def _source(c: Citation) -> tuple[tuple[str, str], str, str | None]:
    """(identity of the cited document, plain title, URL)."""
    title, link = plain_text(c.title)
    url = (c.url or "").strip() or link
    if url:
        return ("url", _url_key(url)), title or url, url
    return ("title", title.casefold()), title or "Source", None


def _safe_offset(offset: int, spans: list[tuple[int, int]]) -> int:
    """`offset`, moved to the end of a link, emoji code or code span it would cut in two."""
    for start, end in spans:
        if start < offset < end:
            return end
    return offset


def _labels(actions: list[Action], titles: dict[str, str]) -> tuple[Action, ...]:
    """Identical actions once; a label shared by several actions replaced by the title of the
    citation whose URL the action opens, and labels still alike numbered: "X", "X (2)", "X (3)"."""
    kept: list[Action] = []
    seen: set[tuple[str, str, str | None, str | None, str]] = set()
    for action in actions:
        label = plain_text(action.label)[0] or action.label
        key = (action.type, label, action.url, action.callback_id, action.where if action.opens_form else "")
        if key not in seen:
            seen.add(key)
            kept.append(replace(action, label=label) if label != action.label else action)
    shared = Counter(a.label for a in kept)
    paired = [
        replace(a, label=titles[_url_key(a.url)])
        if shared[a.label] > 1 and a.url and titles.get(_url_key(a.url)) else a
        for a in kept
    ]
    shared = Counter(a.label for a in paired)
    taken = set(shared)
    counts: Counter[str] = Counter()
    out = []
    for action in paired:
        if shared[action.label] > 1:
            counts[action.label] += 1
            n = counts[action.label]
            if n > 1:
                label = f"{action.label} ({n})"
                while label in taken:
                    n += 1
                    label = f"{action.label} ({n})"
                taken.add(label)
                action = replace(action, label=label)
        out.append(action)
    return tuple(out)


def answer_from_message(
    message: Message | None,
    *,
    extra: tuple[Message, ...] = (),
    response_id: str | None = None,
    conversation_id: str | None = None,
) -> Answer:
    """Build the final, platform-neutral answer: CommonMark text with [n] citation markers,
    numbered citations, actions and feedback callback ids. `extra` are earlier messages of the
    same response, shown before `message`."""
    messages = [m for m in (*extra, message) if m is not None]
    numbers: dict[tuple[str, str], int] = {}
    links: list[CitationLink] = []
    titles: dict[str, str] = {}  # citation URL -> plain title, to name the actions that open it
    bodies: list[str] = []
    for msg in messages:
        by_id = {c.citation_id: c for c in msg.citations}

        def number(citation_id: str, by_id: dict[str, Citation] = by_id) -> int | None:
            c = by_id.get(citation_id)
            if c is None:
                return None
            key, title, url = _source(c)
            if url:
                titles.setdefault(_url_key(url), title)
            if key not in numbers:
                numbers[key] = len(links) + 1
                links.append(CitationLink(len(links) + 1, title, url, plain_text(c.body)[0]))
            return numbers[key]

        text = msg.text
        spans = markup_spans(text)
        inserts: dict[int, list[int]] = {}
        for ref in msg.content_references:  # ascending offsets; number in reading order
            n = number(ref.citation_id)
            offset = _safe_offset(min(ref.offset, len(text)), spans)
            if n is not None and n not in inserts.setdefault(offset, []):
                inserts[offset].append(n)
        for c in msg.citations:  # cited but never referenced: still listed
            number(c.citation_id)
        for offset in sorted(inserts, reverse=True):
            text = text[:offset] + "".join(f"[{n}]" for n in inserts[offset]) + text[offset:]
        bodies.append(normalise_markdown(text).strip())
    last = messages[-1] if messages else None
    feedback = None
    if last is not None and last.feedback is not None:
        feedback = FeedbackTarget(
            conversation_id=last.conversation_id or conversation_id or "",
            response_id=last.response_id or response_id or "",
            message_id=last.message_id,
            helpful=last.feedback.helpful,
            unhelpful=last.feedback.unhelpful,
        )
    actions = _labels([
        replace(a, ref=m.ref, where=f"a{i}") for m in messages for i, a in enumerate(m.actions)
    ], titles)
    help_menu = tuple(
        replace(cat, name=emojize(cat.name), description=emojize(cat.description), items=tuple(
            replace(
                item, ref=m.ref, where=f"h{c}.{i}", title=emojize(item.title),
                action=replace(item.action, ref=m.ref, where=f"h{c}.{i}") if item.action is not None else None,
            )
            for i, item in enumerate(cat.items)
        ))
        for m in messages for c, cat in enumerate(m.help_menu)
    )
    agent = next((m for m in reversed(messages) if m.actor == "LIVE_AGENT"), None)
    sender = Sender(agent.sender_name or texts.LIVE_AGENT, agent.sender_avatar) if agent else None
    text = "\n\n".join(t for t in bodies if t)
    if not text and not actions and not help_menu:
        text = texts.NO_ANSWER
    return Answer(
        text=text,
        citations=tuple(links),
        actions=actions,
        feedback=feedback,
        conversation_id=(last.conversation_id if last else None) or conversation_id,
        response_id=(last.response_id if last else None) or response_id,
        message_ids=tuple(m.message_id for m in messages),
        ai_generated=sender is None,
        help_menu=help_menu,
        sender=sender,
    )


def answer_from_response(response: Response, streamed: dict[str, Message]) -> Answer:
    """The final answer of a completed response; streamed snapshots fill in if it lists none."""
    messages = [m for m in response.messages if m.actor != "USER"] or list(streamed.values())
    if not messages:
        return answer_from_message(None, response_id=response.response_id,
                                   conversation_id=response.conversation_id)
    return answer_from_message(
        messages[-1],
        extra=tuple(messages[:-1]),
        response_id=response.response_id,
        conversation_id=response.conversation_id,
    )
