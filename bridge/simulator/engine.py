"""Plays one response: CREATED → IN_PROGRESS → reasoning snapshots → answer snapshots → terminal.

The play runs as a background task, independent of any HTTP connection: the stream endpoint just
subscribes to it, the async endpoint doesn't, and a client that disconnects mid-stream can still
poll GetResponse. Stream-shaping faults are attached to the run.

A live-agent turn (`Plan.empty`, see flows.py) is only CREATED → COMPLETED with no outputs; the
agent's answer comes later as its own LIVE_AGENT message and event.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import flows
from .answers import Plan, callback_plan, default_plan, split_snapshots
from .ids import new_id, now_iso
from .state import CallbackRef, LiveChat, content

if TYPE_CHECKING:
    from .server import Simulator

END = None  # queue sentinel: the run is over


def build_message(
    sim: Simulator,
    identity: str,
    conversation_id: str,
    response_id: str,
    plan: Plan,
    *,
    message_id: str | None = None,
    created_at: str | None = None,
    content_type: str | None = None,
) -> dict[str, Any]:
    """A final assistant message: citations + ordered content_references, actions, feedback ids."""
    text = plan.text
    msg: dict[str, Any] = {
        "message_id": message_id or new_id("msg_"),
        "conversation_id": conversation_id,
        "response_id": response_id,
        "actor": "ASSISTANT",
        "content": content(content_type or plan.content_type, text),
        "created_at": created_at or now_iso(),
    }
    citations, refs = [], []
    for c in plan.citations:
        cid = new_id("cite_")
        citations.append(
            {
                "citation_id": cid,
                "url": c["url"],
                "display": {
                    "title": content(c.get("title_type") or "PLAIN_TEXT", c["title"]),
                    "body": content(c.get("body_type") or "COMMONMARK_TEXT", c.get("body") or ""),
                    "attributes": [],
                },
            }
        )
        offset = c.get("offset")
        offset = len(text) if not isinstance(offset, int) else max(0, min(offset, len(text)))
        refs.append({"citation_id": cid, "offset": offset})
    msg["citations"] = citations
    msg["content_references"] = sorted(refs, key=lambda r: r["offset"])
    state = sim.state
    modal_actions: list[dict[str, Any]] = []

    def action(a: dict[str, Any]) -> dict[str, Any]:
        if a["type"] == "URL_ACTION":
            return {"type": "URL_ACTION", "label": a["label"], "url_action": {"url": a["url"]}}
        if a["type"] == "MODAL_ACTION":  # ids are minted per read (views.py); these are the first
            state.offer_form(identity, msg, a.get("form") or "ticket", plan.form_context)
            made = {"type": "MODAL_ACTION", "label": a["label"], "modal_action": {"modal_id": ""}}
            modal_actions.append(made)
            return made
        cb = state.issue_callback(identity, msg, "action", a["label"], a.get("intent", ""), a.get("data", ""))
        return {"type": "CALLBACK_ACTION", "label": a["label"], "callback_action": {"callback_id": cb}}

    actions = [action(a) for a in plan.actions]
    if actions:
        msg["actions"] = actions
    if plan.handoff is not None:
        categories = []
        for category in plan.handoff:
            items = []
            for item in category["handoff_items"]:
                built = {k: v for k, v in item.items() if k != "action"}
                if "action" in item:
                    built["action"] = action(item["action"])
                items.append(built)
            categories.append({**category, "handoff_items": items})
        msg["handoff"] = {"handoff_categories": categories}
    for made, modal_id in zip(modal_actions, state.mint_modal_ids(msg["message_id"], len(modal_actions)),
                              strict=False):
        made["modal_action"]["modal_id"] = modal_id
    msg["feedback"] = {
        "helpful": {"callback_id": state.issue_callback(identity, msg, "helpful")},
        "unhelpful": {"callback_id": state.issue_callback(identity, msg, "unhelpful")},
    }
    return msg


class Run:
    """One live response; subscribers get `(event_type, data)` tuples, then END."""

    def __init__(self, identity: str, response: dict[str, Any], plan: Plan) -> None:
        self.identity = identity
        self.response = response
        self.plan = plan
        self.subscribers: list[asyncio.Queue] = []
        self.fail = plan.status == "FAILED"
        self.stream_error = False
        self.slow: float = 0.0
        self.task: asyncio.Task | None = None
        self.question = ""
        self.asked_at = ""  # created_at of the user's message

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        if q in self.subscribers:
            self.subscribers.remove(q)

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(data)
        for q in self.subscribers:
            q.put_nowait((event_type, snapshot))

    def close(self) -> None:
        for q in self.subscribers:
            q.put_nowait(END)


def choose_plan(
    sim: Simulator,
    identity: str,
    question: str | None,
    callback: CallbackRef | None,
    *,
    conversation_id: str | None = None,
    response_id: str | None = None,
    v1: bool = False,
) -> Plan:
    """Live-agent mode first, then buttons, scripts, the `/rest/v1` flows, the keyword defaults."""
    user = sim.state.user(identity)
    live = user.live.get(conversation_id) if conversation_id else None
    if callback is not None and callback.intent == "end_chat":
        if live is not None and conversation_id is not None:
            del user.live[conversation_id]
            return flows.end_chat_plan(live.handoff_response_id)
        return flows.end_chat_plan(None)
    if live is not None:
        return flows.live_turn_plan(question if question is not None else (callback.label if callback else ""))
    if callback is not None:
        if callback.intent == "live_agent":
            start_live(sim, identity, conversation_id, response_id)
            return flows.agent_plan("")
        if callback.intent == "file_ticket":
            return flows.filed_plan(callback.data or "IT issue", sim.state.ticket_number())
        return callback_plan(callback.label)
    assert question is not None
    for script in sim.scripts:
        if script.matches(question, identity):
            script.times -= 1
            if script.times <= 0:
                sim.scripts.remove(script)
            return script.plan(question)
    flow = flows.text_flow(question) if v1 else None
    if flow == "agent":
        start_live(sim, identity, conversation_id, response_id)
        return flows.agent_plan(question)
    if flow == "help":
        return flows.help_plan(question)
    if flow == "ticket":
        return flows.ticket_plan(question)
    return default_plan(question)


def start_live(sim: Simulator, identity: str, conversation_id: str | None, response_id: str | None) -> None:
    """Hand the conversation to a live agent; `response_id` is the handoff turn (the farewell's home)."""
    if conversation_id is not None and response_id is not None:
        sim.state.user(identity).live[conversation_id] = LiveChat(response_id, now_iso())


def start(
    sim: Simulator,
    identity: str,
    conversation_id: str,
    *,
    question: str | None = None,
    callback: tuple[str, CallbackRef] | None = None,
    files: list[dict[str, Any]] | None = None,
    v1: bool = False,
) -> Run:
    """Create the response and the user's message now; play the answer in the background.

    `files` ([{file_id, file_name}], `/rest/v1` chat input) ride on the user's PLAIN_TEXT content,
    and the answer says it received them."""
    state = sim.state
    response = state.new_response(identity, conversation_id)
    if callback is not None:
        user_content: dict[str, Any] = {
            "type": "CALLBACK_ACTION_CONTENT", "callback_action": {"callback_id": callback[0]}
        }
    else:
        user_content = content("PLAIN_TEXT", question or "")
        if files:
            user_content["plain_text"]["files"] = [dict(f) for f in files]
    user_message = state.add_message(
        identity,
        {
            "message_id": new_id("msg_"),
            "conversation_id": conversation_id,
            "response_id": response["response_id"],
            "actor": "USER",
            "content": user_content,
            "created_at": now_iso(),
        },
    )
    plan = choose_plan(sim, identity, question, callback[1] if callback else None,
                       conversation_id=conversation_id, response_id=response["response_id"], v1=v1)
    names = [f["file_name"] for f in files or []]
    if plan.empty and plan.agent_echo is not None and names:
        plan.agent_echo = (plan.agent_echo + " " if plan.agent_echo else "") + f"(attached: {', '.join(names)})"
    flows.mention_files(plan, names)
    run = Run(identity, response, plan)
    run.question = question or ""
    run.asked_at = user_message["created_at"]
    return run


def launch(sim: Simulator, run: Run) -> None:
    run.task = sim.spawn(_play(sim, run))


def _envelope(event_type: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"event_type": event_type, "response": response}


async def _play(sim: Simulator, run: Run) -> None:
    if run.plan.empty:
        await _play_empty(sim, run)
        return
    cfg, plan, resp = sim.config, run.plan, run.response
    identity, conv_id, resp_id = run.identity, resp["conversation_id"], resp["response_id"]

    def pause(base: float) -> float:
        return plan.delay if plan.delay is not None else base * cfg.pace

    try:
        run.emit("RESPONSE_CREATED", _envelope("RESPONSE_CREATED", resp))
        await asyncio.sleep(0)
        resp["status"] = "IN_PROGRESS"
        run.emit("RESPONSE_IN_PROGRESS", _envelope("RESPONSE_IN_PROGRESS", resp))
        if run.slow:
            await asyncio.sleep(run.slow)

        outputs: list[dict[str, Any]] = []
        steps = plan.reasoning
        if steps:
            reasoning = {
                "reasoning_message_id": new_id("rs_"),
                "conversation_id": conv_id,
                "response_id": resp_id,
                "created_at": now_iso(),
                "content": content("MARKDOWN_TEXT", ""),
            }
            outputs.append({"type": "REASONING_MESSAGE", "reasoning_message": reasoning})
            for k in range(len(steps) + 1):  # last round marks every step done
                await asyncio.sleep(pause(cfg.reasoning_delay))
                lines = [f"\u2713 {s}" for s in steps[:k]] + ([f"\u2192 {steps[k]}"] if k < len(steps) else [])
                reasoning["content"] = content("MARKDOWN_TEXT", "\n".join(lines))
                resp["outputs"] = copy.deepcopy(outputs)
                run.emit("RESPONSE_OUTPUT_DELTA", {"event_type": "RESPONSE_OUTPUT_DELTA", "output": outputs[-1]})

        if run.fail:
            await asyncio.sleep(pause(cfg.chunk_delay))
            reason = plan.text if plan.status == "FAILED" else "The assistant could not complete this request."
            _fail(resp, outputs, "INTERNAL_ERROR", reason)
            run.emit("RESPONSE_FAILED", _envelope("RESPONSE_FAILED", resp))
            return

        message_id, created_at = new_id("msg_"), now_iso()
        snapshot = {
            "message_id": message_id,
            "conversation_id": conv_id,
            "response_id": resp_id,
            "actor": "ASSISTANT",
            "content": content(plan.content_type, ""),
            "created_at": created_at,
        }
        msg_output = {"type": "MESSAGE", "message": snapshot}
        for i, text in enumerate(split_snapshots(plan.text, cfg.chunk_words, plan.chunks)):
            await asyncio.sleep(pause(cfg.chunk_delay))
            snapshot["content"] = content(plan.content_type, text)
            resp["outputs"] = copy.deepcopy(outputs + [msg_output])
            if i == 0:
                sim.timeline(resp_id, run.question)["first_text"] = time.monotonic()
            run.emit("RESPONSE_OUTPUT_DELTA", {"event_type": "RESPONSE_OUTPUT_DELTA", "output": msg_output})
            if i == 0 and run.stream_error:
                _fail(resp, outputs, "INTERNAL_ERROR", "Internal error while generating the response")
                run.emit("ERROR", {"error": {"code": "INTERNAL_ERROR",
                                             "message": "Internal error while generating the response"}})
                return

        final = build_message(sim, identity, conv_id, resp_id, plan, message_id=message_id, created_at=created_at)
        sim.state.add_message(identity, final)
        resp["outputs"] = outputs + [{"type": "MESSAGE", "message": final}]
        resp["status"], resp["completed_at"] = "COMPLETED", now_iso()
        conv = sim.state.user(identity).conversations.get(conv_id)
        if conv is not None and not conv.get("title") and plan.title:
            conv["title"] = plan.title
        sim.state.touch(identity, conv_id)
        run.emit("RESPONSE_COMPLETED", _envelope("RESPONSE_COMPLETED", resp))
        if cfg.answer_events:
            sim.publish_event(identity, final)
        if plan.followup:
            sim.spawn(_followup(sim, identity, conv_id, plan.followup))
    finally:
        if resp["status"] not in ("COMPLETED", "FAILED"):  # cancelled (stop/reset)
            _fail(resp, resp.get("outputs") or [], "INTERNAL_ERROR", "Response aborted")
        sim.timeline(resp_id, run.question)["end"] = time.monotonic()
        run.close()


def _fail(resp: dict[str, Any], outputs: list[dict[str, Any]], code: str, message: str) -> None:
    resp["outputs"] = copy.deepcopy(outputs)
    resp["status"], resp["completed_at"] = "FAILED", now_iso()
    resp["error"] = {"code": code, "message": message}


async def _followup(sim: Simulator, identity: str, conversation_id: str, followup: dict[str, Any]) -> None:
    await asyncio.sleep(float(followup.get("delay") or 0))
    if conversation_id in sim.state.user(identity).conversations:
        sim.inject_event(identity, followup["text"], conversation_id=conversation_id)


def _after(ts: str) -> str:
    """Now, but strictly later than the timestamp `ts` (same format as `now_iso`)."""
    now = now_iso()
    if now > ts:
        return now
    stamp = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(microseconds=1)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _play_empty(sim: Simulator, run: Run) -> None:
    """A turn with no outputs (live agent has the chat, or "End chat"): CREATED, then COMPLETED."""
    plan, resp, identity = run.plan, run.response, run.identity
    conv_id, resp_id = resp["conversation_id"], resp["response_id"]
    try:
        run.emit("RESPONSE_CREATED", _envelope("RESPONSE_CREATED", resp))
        await asyncio.sleep(0)
        if plan.late is not None:  # the farewell: in history under an earlier response, not an event
            sim.state.add_message(identity, {
                "message_id": new_id("msg_"),
                "conversation_id": conv_id,
                "response_id": plan.late["response_id"],
                "actor": "ASSISTANT",
                "content": content("PLAIN_TEXT", plan.late["text"]),
                "created_at": _after(run.asked_at),
                "citations": [],
                "content_references": [],
                "feedback": None,
            })
        resp["outputs"] = []
        resp["status"], resp["completed_at"] = "COMPLETED", now_iso()
        sim.state.touch(identity, conv_id)
        run.emit("RESPONSE_COMPLETED", _envelope("RESPONSE_COMPLETED", resp))
        delay = sim.config.live_agent_delay
        if plan.agent_echo is not None and delay is not None:
            sim.spawn(_agent_echo(sim, identity, conv_id, plan.agent_echo, float(delay)))
    finally:
        if resp["status"] not in ("COMPLETED", "FAILED"):
            _fail(resp, [], "INTERNAL_ERROR", "Response aborted")
        sim.timeline(resp_id, run.question)["end"] = time.monotonic()
        run.close()


async def _agent_echo(sim: Simulator, identity: str, conversation_id: str, echo: str, delay: float) -> None:
    await asyncio.sleep(delay)
    if conversation_id in sim.state.user(identity).live:  # not after "End chat"
        sim.agent_say(identity, conversation_id, flows.agent_reply_text(echo))
