"""How a stored message looks to the base it is read from.

On `/rest/v1` every read of a message that offers a form (a MODAL_ACTION in `actions` or in a
get-help item) carries freshly minted modal ids (`SimState.mint_modal_ids`): list messages, list
response messages, get response, list/get events and stream events all count as reads.

The older bases have no such shapes, so their readers see the message as their spec allows:
MODAL_ACTIONs and `handoff` are dropped, `plain_text.files` too, and a `LIVE_AGENT` message reads
as an `ASSISTANT` one without `sender_info`.
"""

from __future__ import annotations

from typing import Any

from .state import SimState

V1_PREFIXES = ("/rest/v1/", "/rest/v1alpha1/")


def is_v1(path: str) -> bool:
    return path.startswith(V1_PREFIXES)


def _is_message(node: dict[str, Any]) -> bool:
    return "message_id" in node and "actor" in node and "content" in node


def render(state: SimState, payload: Any, *, v1: bool) -> Any:
    """`payload` (any JSON) with every message in it rendered for the reader; parts that need no
    change are shared, never copied, and the stored objects are never modified."""
    if isinstance(payload, list):
        items = [render(state, item, v1=v1) for item in payload]
        return payload if all(a is b for a, b in zip(items, payload, strict=True)) else items
    if not isinstance(payload, dict):
        return payload
    if _is_message(payload):
        return _message(state, payload, v1)
    out = {k: render(state, v, v1=v1) for k, v in payload.items()}
    return payload if all(out[k] is payload[k] for k in payload) else out


def _modal_actions(msg: dict[str, Any]) -> list[dict[str, Any]]:
    found = [a for a in msg.get("actions") or [] if a.get("type") == "MODAL_ACTION"]
    for category in (msg.get("handoff") or {}).get("handoff_categories") or []:
        for item in category.get("handoff_items") or []:
            action = item.get("action")
            if isinstance(action, dict) and action.get("type") == "MODAL_ACTION":
                found.append(action)
    return found


def _message(state: SimState, stored: dict[str, Any], v1: bool) -> dict[str, Any]:
    if v1:
        if not _modal_actions(stored):
            return stored
        msg = _copy(stored)
        modal_actions = _modal_actions(msg)
        ids = state.mint_modal_ids(msg["message_id"], len(modal_actions))
        for action, modal_id in zip(modal_actions, ids, strict=False):
            action["modal_action"] = {"modal_id": modal_id}
        return msg
    plain = stored["content"].get("plain_text") if isinstance(stored.get("content"), dict) else None
    if not (
        _modal_actions(stored) or "handoff" in stored or "sender_info" in stored
        or stored.get("actor") == "LIVE_AGENT" or (isinstance(plain, dict) and "files" in plain)
    ):
        return stored
    msg = _copy(stored)
    if "actions" in msg:
        msg["actions"] = [a for a in msg["actions"] if a.get("type") != "MODAL_ACTION"]
        if not msg["actions"]:
            del msg["actions"]
    msg.pop("handoff", None)
    plain = msg["content"].get("plain_text")
    if isinstance(plain, dict):
        plain.pop("files", None)
    if msg.get("actor") == "LIVE_AGENT":
        msg["actor"] = "ASSISTANT"
    msg.pop("sender_info", None)
    return msg


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node
