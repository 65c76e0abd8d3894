"""Composing the final, platform-neutral `Answer` from Moveworks messages: the text with `[n]`
citation markers inserted at their offsets, numbered sources (each cited document once, in
reading order), actions and the feedback target. Used by live answers and by notifications."""

from __future__ import annotations

from bridge import texts
from bridge.answers.markdown import normalise_markdown
from bridge.models import Answer, CitationLink, FeedbackTarget
from bridge.moveworks.models import Citation, Message, Response


def answer_from_message(
    message: Message | None,
    *,
    extra: tuple[Message, ...] = (),
    response_id: str | None = None,
    conversation_id: str | None = None,
) -> Answer:
    """Build the final, platform-neutral answer: text with [n] citation markers, numbered
    citations, actions and feedback callback ids. `extra` are earlier messages of the same
    response, shown before `message`."""
    messages = [m for m in (*extra, message) if m is not None]
    numbers: dict[str, int] = {}
    links: list[CitationLink] = []
    bodies: list[str] = []
    for msg in messages:
        by_id = {c.citation_id: c for c in msg.citations}

        def number(citation_id: str, by_id: dict[str, Citation] = by_id) -> int | None:
            if citation_id not in by_id:
                return None
            if citation_id not in numbers:
                c = by_id[citation_id]
                numbers[citation_id] = len(links) + 1
                links.append(CitationLink(len(links) + 1, c.title or c.url or "Source", c.url, c.body))
            return numbers[citation_id]

        text = msg.text
        inserts: dict[int, list[int]] = {}
        for ref in msg.content_references:  # ascending offsets; number in reading order
            n = number(ref.citation_id)
            offset = min(ref.offset, len(text))
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
    actions = tuple(a for m in messages for a in m.actions)
    text = "\n\n".join(t for t in bodies if t)
    if not text and not actions:
        text = texts.NO_ANSWER
    return Answer(
        text=text,
        citations=tuple(links),
        actions=actions,
        feedback=feedback,
        conversation_id=(last.conversation_id if last else None) or conversation_id,
        response_id=(last.response_id if last else None) or response_id,
        message_ids=tuple(m.message_id for m in messages),
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
