"""The events poller over loopback against the simulator, with a recording chat adapter."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.errors import PlatformRateLimited
from bridge.events.codec import event_from_payload, event_to_json
from bridge.events.poller import SERVICE, Poller
from bridge.models import ThreadKey
from bridge.moveworks.errors import InvalidRequest
from bridge.moveworks.models import Event, Page
from tests.test_poller_helpers import close_env, make_env, permanent, transient

ANN = "ann@example.com"
BOB = "bob@example.com"
THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")
TEAMS_THREAD = ThreadKey("teams", "tenant-1", "19:abc@thread.tacv2", "1700000000001")


@pytest.fixture
async def env(tmp_path):
    env = await make_env(tmp_path)
    yield env
    await close_env(env)


@pytest.fixture
async def jwt_env(tmp_path):
    env = await make_env(tmp_path, per_employee=True, emails=(ANN, BOB))
    yield env
    await close_env(env)


async def test_mapped_slack_thread_gets_the_event(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    assert await poller.poll_identity() == 0  # new identity: starts at now
    ev = env.sim.inject_event(ANN, "Your PTO request was **approved**.", conversation_id=conv,
                              actions=[{"type": "URL_ACTION", "label": "Open", "url": "https://x.test"}],
                              citations=[{"title": "PTO policy", "url": "https://kb.test/pto", "offset": 4}])
    assert await poller.poll_identity() == 1
    [post] = env.slack.posts
    assert post.thread == THREAD and post.proactive
    assert "approved" in post.answer.text and "[1]" in post.answer.text
    assert post.answer.citations[0].url == "https://kb.test/pto"
    assert post.answer.actions and post.answer.feedback is not None
    assert env.store.events.status(ev["event_id"]) == "sent"
    assert env.store.replies.was_shown(ev["event_payload"]["message"]["message_id"])
    assert env.store.checkpoints.get(SERVICE)[0] == ev["event_id"]
    assert await poller.poll_identity() == 0  # nothing new
    assert len(env.slack.posts) == 1


async def test_mapped_teams_reply_chain(env):
    user = env.employee(ANN, platform="teams", workspace="tenant-1")
    conv = await env.mapped_thread(ANN, TEAMS_THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    env.sim.inject_event(ANN, "Ticket INC123 was resolved.", conversation_id=conv)
    assert await poller.poll_identity() == 1
    assert [p.thread for p in env.teams.posts] == [TEAMS_THREAD]
    assert env.slack.posts == []


async def test_an_event_waits_while_another_process_streams_an_answer_in_the_thread(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    link = env.store.links.get(THREAD, user.user_id)
    reply = env.store.replies.start(link.id)  # `serve` is streaming an answer in this thread
    ev = env.sim.inject_event(ANN, "Ticket INC-1 was updated", conversation_id=conv)
    assert await poller.poll_identity() == 0
    assert env.slack.posts == [] and env.store.events.status(ev["event_id"]) != "sent"
    env.store.replies.finish(reply, "final")  # the answer is done
    delivered = 0
    for _ in range(5):
        delivered += await poller.poll_identity()
        if delivered:
            break
    assert delivered == 1 and [p.answer.text for p in env.slack.posts] == ["Ticket INC-1 was updated"]


async def test_single_identity_mode_never_guesses_between_two_people(env):
    """One service identity, two employees: a new notification has no known owner, and posting
    it to the wrong person would leak it, so it is skipped (with a logged reason), not guessed."""
    env.employee(ANN)
    env.employee(BOB)
    poller = env.poller()
    await poller.poll_identity()
    ev = env.sim.inject_event(ANN, "Your PTO request was approved")
    assert await poller.poll_identity() == 0
    assert env.slack.posts == []
    assert env.store.events.status(ev["event_id"]) == "skipped"


async def test_history_before_start_is_skipped_not_posted(env):
    env.employee(ANN)
    old = env.sim.inject_event(ANN, "old news")
    await asyncio.sleep(0.01)
    poller = env.poller(history_grace=0)
    assert await poller.poll_identity() == 0
    assert env.store.events.status(old["event_id"]) == "skipped"
    new = env.sim.inject_event(ANN, "fresh news")
    assert await poller.poll_identity() == 1
    assert env.slack.texts() == ["fresh news"]
    assert env.store.events.status(new["event_id"]) == "sent"


async def test_unmapped_conversation_goes_to_a_dm_and_is_mapped(env):
    env.employee(ANN, platform="teams", workspace="tenant-1")
    await asyncio.sleep(0.01)
    env.employee(ANN)  # Slack used last
    poller = env.poller()
    await poller.poll_identity()
    ev = env.sim.inject_event(ANN, "Announcement: new laptop policy")
    assert await poller.poll_identity() == 1
    [post] = env.slack.posts
    assert post.thread.channel.startswith("D-")
    links = env.store.links.for_conversation(ev["conversation_id"])
    # the DM itself, and (Slack) the thread under the posted message, where replies continue it
    assert sorted(link.thread.thread for link in links) == ["", post.message_id]
    assert all(link.active and link.thread.channel == post.thread.channel for link in links)
    # a follow-up in the same conversation lands in the same DM, without opening it again
    env.sim.inject_event(ANN, "Reminder: laptop policy", conversation_id=ev["conversation_id"])
    assert await poller.poll_identity() == 1
    second = env.slack.posts[1].thread
    assert second.channel == post.thread.channel and second.thread in ("", post.message_id)
    assert len(env.slack.directs) == 1


async def test_proactive_dm_on_teams(env):
    env.employee(ANN, platform="teams", workspace="tenant-1")
    poller = env.poller()
    await poller.poll_identity()
    env.sim.inject_event(ANN, "Approval needed: expense report")
    assert await poller.poll_identity() == 1
    [post] = env.teams.posts
    assert post.thread.platform == "teams" and post.thread.channel.startswith("D-")


async def test_message_shown_live_is_not_posted_again(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    ev = env.sim.inject_event(ANN, "same answer", conversation_id=conv)
    env.store.replies.mark_shown(ev["event_payload"]["message"]["message_id"], None, "stream")
    assert await poller.poll_identity() == 0
    assert env.slack.posts == []
    assert env.store.events.status(ev["event_id"]) == "skipped"


async def test_backlog_of_250_in_order_across_pages(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    for i in range(250):
        env.sim.inject_event(ANN, f"event {i:03d}", conversation_id=conv)
    env.sim.requests.clear()
    assert await poller.poll_identity() == 250
    assert env.slack.texts() == [f"event {i:03d}" for i in range(250)]
    pages = [r for r in env.sim.requests if r["endpoint"] == "events"]
    assert len(pages) == 3  # limit 100, following cursors


async def test_permanent_error_deactivates_link_and_falls_back_to_dm(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    env.slack.failures = [permanent("is_archived")]
    env.sim.inject_event(ANN, "ticket update", conversation_id=conv)
    assert await poller.poll_identity() == 1
    links = env.store.links.for_conversation(conv)
    assert [link.active for link in links if link.thread == THREAD] == [False]
    [post] = env.slack.posts
    assert post.thread.channel.startswith("D-")


async def test_transient_error_retries_in_order_without_skipping(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    first = env.sim.inject_event(ANN, "first", conversation_id=conv)
    env.sim.inject_event(ANN, "second", conversation_id=conv)
    env.slack.failures = [transient(), PlatformRateLimited(retry_after=1.0)]
    assert await poller.poll_identity() == 0
    assert env.store.events.status(first["event_id"]) == "retry"
    assert env.store.checkpoints.get(SERVICE)[0] is None  # not advanced past it
    assert await poller.poll_identity() == 0  # rate limited this time
    assert await poller.poll_identity() == 2
    assert env.slack.texts() == ["first", "second"]


async def test_gives_up_explicitly_after_max_attempts(env):
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller(max_attempts=3)
    await poller.poll_identity()
    stuck = env.sim.inject_event(ANN, "stuck", conversation_id=conv)
    env.sim.inject_event(ANN, "next", conversation_id=conv)
    env.slack.failures = [transient()] * 3
    assert [await poller.poll_identity() for _ in range(3)] == [0, 0, 1]
    assert env.store.events.status(stuck["event_id"]) == "skipped"
    assert env.slack.texts() == ["next"]  # the later event was not held back forever


async def test_restart_posts_nothing_twice(tmp_path):
    db = str(tmp_path / "bridge.db")
    env = await make_env(tmp_path, db=db)
    try:
        user = env.employee(ANN)
        conv = await env.mapped_thread(ANN, THREAD, user)
        poller = env.poller()
        await poller.poll_identity()
        for i in range(5):
            env.sim.inject_event(ANN, f"n{i}", conversation_id=conv)
        assert await poller.poll_identity() == 5
        # "restart": a new poller on the same database; the checkpoint is dropped too, so the
        # events are listed again and must be recognised as delivered
        env.store.db.execute("UPDATE poll_checkpoints SET last_event_id = NULL")
        again = env.poller()
        assert await again.recover() == 0
        assert await again.poll_identity() == 0
        assert len(env.slack.posts) == 5
    finally:
        await close_env(env)


async def test_claimed_but_unsent_is_redelivered_by_recover(env):
    """In-process version of the crash between claim and post (kill -9 test: test_poller_process)."""
    user = env.employee(ANN)
    conv = await env.mapped_thread(ANN, THREAD, user)
    poller = env.poller()
    await poller.poll_identity()
    ev = env.sim.inject_event(ANN, "in flight", conversation_id=conv)
    env.slack.delay = 10
    task = asyncio.create_task(poller.poll_identity())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if env.store.events.status(ev["event_id"]) == "claimed":
            break
    task.cancel()  # the process dies while posting
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.store.events.status(ev["event_id"]) == "claimed" and env.slack.posts == []
    env.slack.delay = 0
    restarted = env.poller()
    assert await restarted.recover() == 1
    assert env.slack.texts() == ["in flight"]
    assert await restarted.poll_identity() == 0
    assert len(env.slack.posts) == 1


async def test_per_employee_identities_are_polled_separately(jwt_env):
    env = jwt_env
    env.employee(ANN)
    env.employee(BOB, platform="teams", workspace="tenant-1")
    poller = env.poller()
    await poller.refresh_identities()
    assert set(poller.schedule.states) == {ANN, BOB}
    env.sim.inject_event(ANN, "for ann")
    env.sim.inject_event(BOB, "for bob")
    assert await poller.poll_identity(ANN) == 1
    assert await poller.poll_identity(BOB) == 1
    assert env.slack.texts() == ["for ann"] and env.teams.texts() == ["for bob"]
    identities = {r["identity"] for r in env.sim.requests if r["endpoint"] == "events"}
    assert identities == {ANN, BOB}


async def test_one_identity_errors_do_not_block_others(jwt_env):
    env = jwt_env
    env.employee(ANN)
    env.employee(BOB)
    poller = env.poller()
    await poller.refresh_identities()
    env.sim.inject_event(ANN, "for ann")
    env.sim.inject_event(BOB, "for bob")
    env.slack.failures = [transient()]  # ann's delivery fails once
    assert await poller.poll_identity(ANN) == 0
    assert await poller.poll_identity(BOB) == 1
    assert await poller.poll_identity(ANN) == 1


async def test_rate_limit_pauses_everyone(env):
    env.employee(ANN)
    poller = env.poller()
    await poller.poll_identity()
    env.sim.inject_fault("rate_limit", endpoint="events", retry_after=7)
    await poller.poll_identity()
    assert poller.budget.blocked_until >= poller._clock() + 6


# --- bad input -----------------------------------------------------------------------------------


class ScriptedClient:
    """A Moveworks client whose list_events pages are scripted (for malformed server output)."""

    def __init__(self, pages, errors=None):
        self.pages = pages  # cursor -> (events, next_cursor)
        self.errors = errors or {}
        self.calls: list[tuple] = []

    async def list_events(self, identity, conversation_id="-", *, starting_after=None, ending_at=None,
                          cursor=None, limit=100):
        self.calls.append((identity, starting_after, cursor))
        err = self.errors.get((starting_after, cursor))
        if err is not None:
            if isinstance(err, list):
                if err:
                    raise err.pop(0)
            else:
                raise err
        events, next_cursor = self.pages.get(cursor, ((), None))
        if starting_after and cursor is None:
            ids = [e.event_id for e in events]
            if starting_after in ids:
                events = events[ids.index(starting_after) + 1:]
        return Page(tuple(events), next_cursor)


def make_event(n: int, conv: str, text: str | None = None, **over) -> Event:
    data = {
        "event_id": f"evt_{n:05d}",
        "conversation_id": conv,
        "created_at": "2099-01-01T00:00:00Z",
        "event_payload": {
            "type": "MESSAGE_EVENT",
            "message": {
                "message_id": f"msg_{n:05d}",
                "conversation_id": conv,
                "response_id": "resp_1",
                "actor": "ASSISTANT",
                "content": {"type": "COMMONMARK_TEXT", "commonmark_text": {"text": text or f"t{n}"}},
                "created_at": "2099-01-01T00:00:00Z",
            },
        },
    }
    for k, v in over.items():
        if k == "payload":
            data["event_payload"] = v
        elif k == "content":
            data["event_payload"]["message"]["content"] = v
        else:
            data[k] = v
    return Event.from_json(data)


def scripted_env(env, pages, errors=None):
    client = ScriptedClient(pages, errors)
    poller = Poller(store=env.store, client=client, relay=env.relay, per_employee=False, interval=0.2)
    return poller, client


async def test_bad_events_are_handled_or_skipped_explicitly(env):
    user = env.employee(ANN)
    env.store.links.insert(THREAD, user.user_id, "", "conv_A", {})
    env.store.checkpoints.start(SERVICE)
    huge = "x" * 100_000
    events = [
        make_event(1, "conv_A", payload={"type": "SOMETHING_NEW"}),
        make_event(2, "conv_A", payload={"type": "MESSAGE_EVENT"}),  # missing message
        make_event(3, "conv_A", content={"type": "HTML_TEXT", "html_text": {"text": "<b>hi</b>"}}),
        make_event(4, "conv_A", content={"type": "IMAGE", "image": {"url": "x"}}),  # nothing to show
        make_event(5, "conv_A", text=huge),
        make_event(6, "conv_A", text="fine"),
    ]
    poller, _ = scripted_env(env, {None: (events, None)})
    assert await poller.poll_identity() == 3
    status = {f"evt_{n:05d}": env.store.events.status(f"evt_{n:05d}") for n in range(1, 7)}
    assert status == {"evt_00001": "skipped", "evt_00002": "skipped", "evt_00003": "sent",
                      "evt_00004": "skipped", "evt_00005": "sent", "evt_00006": "sent"}
    texts = env.slack.texts()
    assert texts[0] == "<b>hi</b>"
    assert len(texts[1]) < 21_000 and texts[1].endswith("(message truncated)_")
    assert env.store.checkpoints.get(SERVICE)[0] == "evt_00006"


async def test_duplicate_event_ids_across_pages_are_delivered_once(env):
    user = env.employee(ANN)
    env.store.links.insert(THREAD, user.user_id, "", "conv_A", {})
    env.store.checkpoints.start(SERVICE)
    e1, e2, e3 = (make_event(n, "conv_A") for n in (1, 2, 3))
    poller, _ = scripted_env(env, {None: ([e1, e2], "c1"), "c1": ([e2, e3], None)})
    assert await poller.poll_identity() == 3
    assert env.slack.texts() == ["t1", "t2", "t3"]


async def test_invalid_page_cursor_resumes_from_checkpoint(env):
    user = env.employee(ANN)
    env.store.links.insert(THREAD, user.user_id, "", "conv_A", {})
    env.store.checkpoints.start(SERVICE)
    e = [make_event(n, "conv_A") for n in range(1, 5)]
    bad = InvalidRequest("Invalid cursor", status=400, code="INVALID_CURSOR")
    pages = {None: (e, None), "c1": ((), None)}
    poller, client = scripted_env(env, pages, errors={(None, "c1"): bad})
    client.pages[None] = (e[:2], "c1")
    # after the cursor is refused, the poller restarts from its checkpoint without a cursor
    orig = client.list_events

    async def list_events(identity, conversation_id="-", *, starting_after=None, ending_at=None,
                          cursor=None, limit=100):
        if starting_after == "evt_00002" and cursor is None:
            client.calls.append((identity, starting_after, cursor))
            return Page(tuple(e[2:]), None)
        return await orig(identity, conversation_id, starting_after=starting_after, cursor=cursor,
                          limit=limit)

    client.list_events = list_events
    assert await poller.poll_identity() == 4
    assert env.slack.texts() == ["t1", "t2", "t3", "t4"]
    assert (None, None, "c1") in client.calls and (None, "evt_00002", None) in client.calls


async def test_rejected_checkpoint_restarts_from_now_without_crash_loop(env):
    env.employee(ANN)
    env.store.checkpoints.advance(SERVICE, "evt_gone")
    bad = InvalidRequest("Invalid cursor", status=400, code="INVALID_CURSOR")
    poller, client = scripted_env(env, {None: ((), None)}, errors={("evt_gone", None): bad})
    assert await poller.poll_identity() == 0
    assert env.store.checkpoints.get(SERVICE)[0] is None
    assert await poller.poll_identity() == 0  # next poll works from "now"
    assert client.calls[-1] == (None, None, None)


def test_event_payload_round_trip():
    ev = make_event(7, "conv_A", text="hello [link](https://x.test)")
    again = event_from_payload(json.dumps(event_to_json(ev)))
    assert again == ev
    assert event_from_payload("not json") is None
