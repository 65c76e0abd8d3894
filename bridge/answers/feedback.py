"""👍/👎 from chat to Moveworks, as the employee who asked: only the asker may rate an answer,
and every click gets an acknowledgement (`FeedbackAck`), whatever Moveworks says."""

from __future__ import annotations

import logging

from bridge import texts
from bridge.contract import FeedbackAck
from bridge.models import ChatUser, FeedbackTarget
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import MoveworksError
from bridge.store.aio import AnyStore, as_async

log = logging.getLogger(__name__)


async def submit_feedback(
    store: AnyStore,
    client: MoveworksClient,
    user: ChatUser,
    target: FeedbackTarget,
    helpful: bool,
    comment: str | None = None,
) -> FeedbackAck:
    links = await as_async(store).links.for_conversation(target.conversation_id)
    if links and links[0].user_id != user.user_id:
        return FeedbackAck(texts.FEEDBACK_NOT_OWNER, False)
    callback = target.helpful if helpful else target.unhelpful
    if not callback:
        return FeedbackAck(texts.FEEDBACK_UNAVAILABLE, False)
    identity = (links[0].identity or None) if links else None
    try:
        await client.submit_feedback(
            identity, target.conversation_id, target.response_id, target.message_id, callback,
            additional_feedback=comment,
        )
    except MoveworksError as exc:
        log.warning("feedback failed: %s", exc)
        return FeedbackAck(texts.FEEDBACK_FAILED, False)
    except Exception:  # a bad button value must still get an answer
        log.exception("feedback failed unexpectedly")
        return FeedbackAck(texts.FEEDBACK_FAILED, False)
    return FeedbackAck(texts.FEEDBACK_THANKS_HELPFUL if helpful else texts.FEEDBACK_THANKS_UNHELPFUL, True)
