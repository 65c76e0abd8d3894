"""`MessageOps` over chat.postMessage / chat.update / chat.delete, for the core `EditingSink`.

The body goes in a `markdown` block (Slack renders the Markdown Moveworks writes); `text` carries
a short mrkdwn preview for notifications. If Slack refuses the markdown block for a message, the
same content is sent as mrkdwn sections instead, and this workspace keeps using sections.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.errors import PlatformError
from bridge.models import Answer

from . import blocks as bk
from .calls import TOO_LONG, TRANSIENT, error_code, to_platform_error
from .mrkdwn import preview

log = logging.getLogger("adapters.slack")


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
        # Shared per workspace: {"markdown": False} once Slack refused a markdown block.
        self._formats = formats if formats is not None else {}

    def _payload(self, text: str, answer: Answer | None, *, markdown: bool) -> dict[str, Any]:
        body = bk.markdown_body(text) if markdown else bk.mrkdwn_body(text)
        return {"text": preview(text), "blocks": body + bk.answer_extras(answer)}

    async def _send(self, op: str, method, text: str, answer: Answer | None, **kwargs: Any) -> Any:
        markdown = self._formats.get("markdown", True)
        try:
            self._on_write(op)
            return await method(**kwargs, **self._payload(text, answer, markdown=markdown))
        except SlackApiError as exc:
            if error_code(exc) in TOO_LONG and markdown:
                log.warning("slack refused a markdown block (%s); using mrkdwn sections", error_code(exc))
                try:
                    self._on_write(op)
                    result = await method(**kwargs, **self._payload(text, answer, markdown=False))
                except SlackApiError as again:
                    raise to_platform_error(again, op) from None
                except TRANSIENT as again:
                    raise PlatformError(f"{op}: {type(again).__name__}") from None
                self._formats["markdown"] = False
                return result
            raise to_platform_error(exc, op) from None
        except TRANSIENT as exc:
            raise PlatformError(f"{op}: {type(exc).__name__}") from None

    async def post(self, text: str, *, answer: Answer | None = None) -> str:
        kwargs: dict[str, Any] = {"channel": self.channel, "unfurl_links": False, "unfurl_media": False}
        if self.thread_ts:
            kwargs["thread_ts"] = self.thread_ts
        response = await self._send("post", self.client.chat_postMessage, text, answer, **kwargs)
        return str(response["ts"])

    async def edit(self, message_id: str, text: str, *, answer: Answer | None = None) -> None:
        await self._send("update", self.client.chat_update, text, answer, channel=self.channel, ts=message_id)

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
