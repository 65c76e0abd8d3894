"""The thread's "is thinking…" status while Moveworks reasons (`assistant.threads.setStatus`).

Slack drops the status two minutes after the last call if nothing was posted, so it is re-sent
every minute until the first answer text appears. The status is cosmetic: failures are logged and
never stop an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from bridge import texts

from .calls import TRANSIENT, call

log = logging.getLogger("adapters.slack")

REFRESH_SECONDS = 60.0  # Slack expires a status after 120 s without a post
LOADING_MESSAGE_LIMIT = 50


class StatusKeeper:
    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        refresh: float = REFRESH_SECONDS,
        on_write: Callable[[str], None] = lambda op: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.refresh = refresh
        self._on_write = on_write
        self._sleep = sleep
        self._step: str | None = None
        self._task: asyncio.Task | None = None
        self.sent = 0

    async def set(self, step: str | None) -> None:
        step = (step or "Thinking").strip()
        if len(step) > LOADING_MESSAGE_LIMIT:
            step = step[: LOADING_MESSAGE_LIMIT - 1] + "…"
        if step == self._step and self._task is not None:
            return
        self._step = step
        await self._send()
        if self._task is None:
            self._task = asyncio.create_task(self._keep_alive(), name="slack-status")

    async def _send(self) -> None:
        try:
            self._on_write("status")
            await call(
                self.client.assistant_threads_setStatus,
                attempts=2,
                channel_id=self.channel,
                thread_ts=self.thread_ts,
                status=texts.SLACK_THINKING_STATUS,
                loading_messages=[self._step or "Thinking"],
            )
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - cosmetic
            log.debug("could not set the thread status: %s", getattr(exc, "response", exc))

    async def _keep_alive(self) -> None:
        while True:
            await self._sleep(self.refresh)
            await self._send()

    async def stop(self, *, clear: bool = False) -> None:
        """Stop refreshing; `clear` removes a status that no post will replace."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if clear and self._step is not None:
            with contextlib.suppress(*TRANSIENT):
                await call(
                    self.client.assistant_threads_setStatus,
                    attempts=2,
                    channel_id=self.channel,
                    thread_ts=self.thread_ts,
                    status="",
                )
        self._step = None
