"""The two rendering strategies most open-source chat bots use, for comparison with ours.

Both read the same Moveworks stream through the project's client and write to the fake Slack with
the real `slack_sdk` client, configured the way popular bots configure it (two retries on 429).
  (a) `post_once`: wait for the whole answer, then post it in one message.
  (b) `update_every`: post on the first text, then `chat.update` every 20 deltas and at the end.
Errors are swallowed the way those bots do (logged, the next write tries again); whatever the
user ends up seeing is measured, not assumed.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bridge.moveworks import MoveworksClient
from bridge.moveworks.auth import ApiKeyAuth
from bridge.moveworks.models import Message, OutputDelta, ResponseCompleted

log = logging.getLogger("bench.baselines")


class BaselineBot:
    def __init__(self, strategy: str, *, base_url: str, assistant: str, api_key: str, slack_url: str,
                 slack_token: str, every: int = 20) -> None:
        self.strategy = strategy
        self.every = every
        self.mw = MoveworksClient(base_url, assistant, ApiKeyAuth(api_key))
        self.slack = AsyncWebClient(token=slack_token, base_url=slack_url)
        self.slack.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))

    async def aclose(self) -> None:
        await self.mw.aclose()

    async def answer(self, question: str, channel: str, thread_ts: str) -> None:
        conversation = (await self.mw.create_conversation(None)).conversation_id
        text, deltas, ts = "", 0, None
        async for event in self.mw.stream_response(None, conversation, text=question):
            if isinstance(event, OutputDelta) and isinstance(event.output, Message):
                text, deltas = event.output.text, deltas + 1
                if self.strategy == "update_every" and text:
                    if ts is None:
                        ts = await self._write(channel, thread_ts, text, None)
                    elif deltas % self.every == 0:
                        await self._write(channel, thread_ts, text, ts)
            elif isinstance(event, ResponseCompleted) and event.response.messages:
                text = event.response.messages[-1].text
        await self._write(channel, thread_ts, text, ts)

    async def _write(self, channel: str, thread_ts: str, text: str, ts: str | None) -> str | None:
        try:
            if ts is None:
                resp = await self.slack.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text)
                return resp["ts"]
            await self.slack.chat_update(channel=channel, ts=ts, text=text)
        except SlackApiError as exc:
            log.info("slack write failed: %s", exc.response.get("error"))
        return ts
