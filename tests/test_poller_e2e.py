"""The poller inside the real serve app: simulator -> poller -> real Slack adapter -> fake Slack.

Uses the Slack end-to-end harness (tests/test_slack_e2e.py) with the poller switched on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from bridge.models import ThreadKey
from bridge.process.runtime import build_runtime
from bridge.process.server import make_app
from bridge.store import Store
from tests.test_slack_e2e import Harness, dm, mention, new_ts, until

SIM_IDENTITY = "employee@example.com"  # the simulator's default api key acts as this employee


class PollingHarness(Harness):
    """The Slack harness with the in-process poller on (as `serve` runs it)."""

    def settings(self):
        return replace(super().settings(), poller=True, poll_interval=0.2)

    async def boot(self) -> None:
        settings = self.settings()
        self.runtime = build_runtime(settings, store=Store(settings.db), poller=settings.poller)
        self.runner = web.AppRunner(make_app(self.runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def ph(tmp_path: Path):
    harness = PollingHarness(tmp_path)
    await harness.start()
    yield harness
    await harness.stop()


async def test_event_lands_in_the_mapped_slack_thread(ph):
    root = new_ts()
    await ph.send(mention("when is payday?", channel="C1", ts=root))
    await ph.answered("C1", root)
    link = ph.runtime.store.sync.links.get(ThreadKey("slack", "T1", "C1", root), "U1")
    assert link is not None
    ph.sim.inject_event(SIM_IDENTITY, "Update: your **payroll ticket** was resolved.",
                        conversation_id=link.conversation_id)

    def delivered():
        msgs = ph.answers("C1", root)
        return len(msgs) == 2 and "payroll ticket" in ph.fake.body_text(msgs[1])

    await until(delivered, what="the event in the thread")
    # nothing is posted twice on later polls
    await until(lambda: ph.runtime.poller.schedule.states["service"].polls >= 3, what="more polls")
    assert len(ph.answers("C1", root)) == 2


async def test_proactive_dm_is_opened_mapped_and_continues(ph):
    root = new_ts()
    await ph.send(mention("hello", channel="C1", ts=root))  # alice (U1) becomes the last active employee
    await ph.answered("C1", root)
    event = ph.sim.inject_event(SIM_IDENTITY, "Approval needed: Bob's expense report")
    dm_channel = "D1"
    await until(lambda: any("expense report" in ph.fake.body_text(m) for m in ph.fake.bot_messages(dm_channel)),
                what="the proactive DM")
    assert ph.fake.calls_to("conversations.open")
    [posted] = [m for m in ph.fake.bot_messages(dm_channel) if "expense report" in ph.fake.body_text(m)]
    def mapped():  # the reply thread is mapped right after the post is accepted
        links = ph.runtime.store.sync.links.for_conversation(event["conversation_id"])
        return sorted((link.thread.channel, link.thread.thread, link.user_id) for link in links)

    await until(lambda: len(mapped()) == 2, what="the DM and its reply thread mapped")
    assert mapped() == [(dm_channel, "", "U1"), (dm_channel, posted["ts"], "U1")]
    # replying in the notification's thread continues that Moveworks conversation
    await ph.send(dm("approve it please", channel=dm_channel, thread_ts=posted["ts"]))
    await ph.idle()
    user_msgs = [m for m in ph.sim.state.user(SIM_IDENTITY).conversation_messages(event["conversation_id"])
                 if m["actor"] == "USER"]
    assert user_msgs and user_msgs[-1]["content"]["plain_text"]["text"] == "approve it please"
    assert len(ph.answers(dm_channel, posted["ts"])) == 1  # the answer to the reply, in that thread
