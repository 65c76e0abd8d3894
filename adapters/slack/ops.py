"""`MessageOps` over chat.postMessage / chat.update / chat.delete, for the core `EditingSink`.

The body goes in a `markdown` block (Slack renders the Markdown Moveworks writes); `text` carries
a short mrkdwn preview for notifications. Every payload is measured before it is sent
(`blocks.layout_extras`): the answer text always goes out whole, and the extras of a final
(citations, buttons) get less detail, or the citations a follow-up message, when they would pass
Slack's limits. An answer with no text sends no (empty, hence invalid) markdown block. A live
agent's answer is posted with their `username`/`icon_url` (`blocks.authorship`; an edit cannot
change a message's author, so the byline under the text says who wrote it in every case).

If Slack refuses a non-empty markdown block as invalid (`invalid_blocks`) and accepts the same
content as mrkdwn sections, this workspace keeps using sections. Likewise a workspace that refuses
the `context_actions` block (native feedback buttons) keeps getting plain 👍/👎 buttons. A size refusal
(`msg_blocks_too_long`) never changes the format: the citations move to their follow-up message.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge import texts
from bridge.errors import PlatformError
from bridge.models import Answer

from . import blocks as bk
from .calls import INVALID_BLOCKS, TOO_LONG, TRANSIENT, call, error_code, to_platform_error
from .mrkdwn import preview

log = logging.getLogger("adapters.slack")


def message_payload(
    text: str, answer: Answer | None, *, markdown: bool = True, sources_apart: bool = False, classic: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(`text` + `blocks` of one message, the blocks of its sources follow-up or []), within
    Slack's limits. `sources_apart`: the citations go to the follow-up even if they would fit;
    `classic`: plain feedback buttons (a workspace that refuses `context_actions`)."""
    if text.strip():
        body = bk.markdown_body(text) if markdown else bk.mrkdwn_body(text)
    else:
        body = []  # an empty markdown block is invalid; the extras carry the message
    layout = bk.layout_extras(answer, used=bk.text_size(body), used_blocks=len(body), sources_apart=sources_apart,
                              classic=classic)
    content = {"text": preview(text) if text.strip() else texts.ANSWER_PREVIEW, "blocks": body + layout.blocks}
    return content, layout.sources


class SlackMessageOps:
    """One reply location: a channel, and the thread the parts go into (None: top level)."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        *,
        on_write=None,
        formats: dict[str, bool] | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self._on_write = on_write or (lambda op: None)
        # Shared per workspace: {"markdown": False} once Slack refused a markdown block,
        # {"context_actions": False} once it refused the native feedback block.
        self._formats = formats if formats is not None else {}
        self._sources: dict[str, str] = {}  # message ts -> ts of its sources follow-up

    async def _send(self, op: str, method, text: str, answer: Answer | None, **kwargs: Any) -> tuple[Any, list]:
        markdown = self._formats.get("markdown", True)
        classic = not self._formats.get("context_actions", True)
        payload, sources = message_payload(text, answer, markdown=markdown, classic=classic)
        try:
            self._on_write(op)
            return await method(**kwargs, **payload), sources
        except SlackApiError as exc:
            code = error_code(exc)
            if code in INVALID_BLOCKS and not classic and bk.has_context_actions(payload.get("blocks")):
                # An older workspace without the context_actions block: plain feedback buttons.
                payload, sources = message_payload(text, answer, markdown=markdown, classic=True)
                try:
                    self._on_write(op)
                    result = await method(**kwargs, **payload)
                except SlackApiError as again:
                    exc, code = again, error_code(again)
                except TRANSIENT as again:
                    raise PlatformError(f"{op}: {type(again).__name__}") from None
                else:
                    log.warning("slack refused the context_actions block (%s); using plain feedback buttons", code)
                    self._formats["context_actions"] = False
                    return result, sources
                classic = True
            if code in INVALID_BLOCKS and markdown and text.strip():
                log.warning("slack refused a markdown block (%s); using mrkdwn sections", code)
                payload, sources = message_payload(text, answer, markdown=False, classic=classic)
                result = await self._again(op, method, payload, **kwargs)
                self._formats["markdown"] = False
                return result, sources
            if code in TOO_LONG and answer is not None and answer.citations:
                # Slack counts more than we measured: the citations go to their own message.
                log.warning("slack refused a final's size (%s); posting its sources apart", code)
                payload, sources = message_payload(text, answer, markdown=markdown, sources_apart=True,
                                                   classic=classic)
                return await self._again(op, method, payload, **kwargs), sources
            raise to_platform_error(exc, op) from None
        except TRANSIENT as exc:
            raise PlatformError(f"{op}: {type(exc).__name__}") from None

    async def _again(self, op: str, method, payload: dict[str, Any], **kwargs: Any) -> Any:
        try:
            self._on_write(op)
            return await method(**kwargs, **payload)
        except SlackApiError as again:
            raise to_platform_error(again, op) from None
        except TRANSIENT as again:
            raise PlatformError(f"{op}: {type(again).__name__}") from None

    async def _post_sources(self, anchor: str, blocks: list[dict[str, Any]]) -> None:
        """The citations that did not fit under a final, in a message right after it (edited in
        place if the final is written again). Best effort: the answer itself is already visible."""
        if not blocks:
            return
        content: dict[str, Any] = {"text": texts.SOURCES, "blocks": blocks}
        try:
            existing = self._sources.get(anchor)
            if existing:
                self._on_write("update")
                await call(self.client.chat_update, channel=self.channel, ts=existing, **content)
                return
            kwargs: dict[str, Any] = {"channel": self.channel, "unfurl_links": False, "unfurl_media": False}
            if self.thread_ts:
                kwargs["thread_ts"] = self.thread_ts
            self._on_write("post")
            response = await call(self.client.chat_postMessage, **kwargs, **content)
            self._sources[anchor] = str(response["ts"])
        except (SlackApiError, *TRANSIENT) as exc:
            log.warning("could not post the sources of an answer: %s", error_code(exc) or type(exc).__name__)

    async def post(self, text: str, *, answer: Answer | None = None) -> str:
        kwargs: dict[str, Any] = {"channel": self.channel, "unfurl_links": False, "unfurl_media": False,
                                  **bk.authorship(answer)}
        if self.thread_ts:
            kwargs["thread_ts"] = self.thread_ts
        response, sources = await self._send("post", self.client.chat_postMessage, text, answer, **kwargs)
        ts = str(response["ts"])
        await self._post_sources(ts, sources)
        return ts

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None:
        _, sources = await self._send("update", self.client.chat_update, text, answer, channel=self.channel,
                                      ts=message_id)
        await self._post_sources(message_id, sources)

    async def delete(self, message_id: str) -> None:
        try:
            self._on_write("delete")
            await self.client.chat_delete(channel=self.channel, ts=message_id)
        except SlackApiError as exc:
            if error_code(exc) == "message_not_found":
                return
            raise to_platform_error(exc, "delete") from None
        except TRANSIENT as exc:
            raise PlatformError(f"delete: {type(exc).__name__}") from None
