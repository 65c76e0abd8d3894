"""What a crowd in one workspace must not pay for: a reply that writes nothing budgeted must not
refill the workspace's shared edit budget, and in single-identity modes nobody's answer waits for
the directory (Slack's `users.info` is rate limited per workspace)."""

from __future__ import annotations

import asyncio

from bridge.answers.relay import Relay
from bridge.mechanisms.ratelimit import Budgets
from bridge.models import Capabilities, ChatUser, Inbound, Rate, ThreadKey
from bridge.store import Store
from bridge.testing.waiting import until
from tests.spine_fakes import RecordingAdapter

EDITS = Rate(50, 60.0, burst=25)
CAPS = Capabilities(max_text_len=4000, min_edit_interval=0.02, write_budget=None)
THREAD = ThreadKey("rec", "W1", "C1", "100.1")
ANN = ChatUser("rec", "W1", "U_ANN", name="Ann")


def test_a_reply_without_a_budget_leaves_the_workspaces_budget_alone():
    budgets = Budgets()
    edits = budgets.get("slack:T1", EDITS)
    while edits.try_take():
        pass  # the workspace's Tier 3 room is used up by live answers
    status_only = budgets.get("slack:T1", None)  # a thread status, then one post
    assert status_only.unlimited
    again = budgets.get("slack:T1", EDITS)
    assert again is edits and not again.try_take(), "the next edited answer finds no fresh bucket"


class SlowDirectory(RecordingAdapter):
    def __init__(self) -> None:
        super().__init__(Budgets(), CAPS)
        self.release = asyncio.Event()

    async def resolve_email(self, user: ChatUser) -> str | None:
        await self.release.wait()
        return "ann@example.com"


async def test_in_single_identity_mode_the_answer_never_waits_for_the_directory(sim, mw):
    store = Store(":memory:")
    relay = Relay(store=store, client=mw, per_employee=False, budgets=Budgets())
    adapter = SlowDirectory()
    relay.register(adapter)
    await asyncio.wait_for(relay.handle(Inbound(dedupe_id="q1", thread=THREAD, user=ANN,
                                                text="How do I reset my password?")), 10)
    assert "reset your password" in adapter.thread(THREAD).visible()
    adapter.release.set()  # the directory answers later: the email is still remembered
    await until(lambda: (e := store.employees.get("rec", "W1", "U_ANN")) and e.email == "ann@example.com",
                timeout=5.0, what="the email remembered")
    await relay.drain(1.0)
