"""The `/rest/v1` conversation flows: smart handoff (a ticket form), the get-help menu, live agents.

Triggered by text turns made on `/rest/v1` only (older bases keep their plain answers), after
admin-scripted answers and before the keyword defaults:

- live agent: "talk to an agent", "live agent" or the word "human" (or the "Talk to an agent"
  button of the help menu) answers "Connecting you with a live agent…" with an "End chat"
  CALLBACK_ACTION, and puts the conversation in live-agent mode. From then on every turn (on any
  base) completes with no outputs; the agent (`LIVE_AGENT`, `sender_info` Dana Fielding) answers
  on its own response, as an event, `live_agent_delay` s later ("Thanks, I'm looking at it: …"),
  or when told to (`POST /_sim/live-agent`). "End chat" completes with no outputs too; the
  farewell is stored under the handoff turn's response id and is not an event (a late message).
- get-help menu: "help menu" or "get help" answers with `handoff.handoff_categories` (IT: the
  ticket form as a MODAL_ACTION, "Talk to an agent", service desk hours as TEXT; HR: a link and
  a TEXT item).
- smart handoff: "ticket" answers "I can file a ticket for you…" with the actions File ticket
  (CALLBACK_ACTION: files at once), Edit/Add details (MODAL_ACTION: the form of `modals.py`) and
  Other help options (URL_ACTION); `handoff` stays empty.

Precedence: live mode, then agent, help menu, ticket.
"""

from __future__ import annotations

import re
from typing import Any

from .answers import Plan, _title

INTENTS = ("live_agent", "end_chat", "file_ticket")
AGENT_NAME = "Dana Fielding"
AGENT_AVATAR = "https://static.example.com/avatars/dana-fielding.png"
HELP_OPTIONS_URL = "https://help.example.com/get-help"
FAREWELL = "You've ended your live agent chat session."

_AGENT = re.compile(r"talk to an agent|live agent|\bhumans?\b", re.IGNORECASE)
_HELP = re.compile(r"help menu|get help", re.IGNORECASE)
_TICKET = re.compile(r"ticket", re.IGNORECASE)


def text_flow(question: str) -> str | None:
    """Which flow a `/rest/v1` text turn triggers: "agent", "help", "ticket" or None."""
    if _AGENT.search(question):
        return "agent"
    if _HELP.search(question):
        return "help"
    if _TICKET.search(question):
        return "ticket"
    return None


def agent_plan(question: str) -> Plan:
    return Plan(
        text="Connecting you with a live agent\u2026 An agent from the IT service desk will join this chat shortly.",
        reasoning=["Finding an available agent"],
        actions=[{"type": "CALLBACK_ACTION", "label": "End chat", "intent": "end_chat"}],
        title=_title(question) if question else "Live agent chat",
        content_type="MARKDOWN_TEXT",
    )


def ticket_plan(question: str) -> Plan:
    """The smart handoff offer; `handoff` stays empty, the offers ride on `actions`."""
    return Plan(
        text=(
            "I can file a ticket for you with the IT service desk. :ticket:\n\n"
            "Choose **File ticket** to send it as it is, or **Edit/Add details** to fill in the form first."
        ),
        reasoning=["Understanding the issue", "Preparing a ticket"],
        actions=[
            {"type": "CALLBACK_ACTION", "label": "File ticket", "intent": "file_ticket", "data": question},
            {"type": "MODAL_ACTION", "label": "Edit/Add details", "form": "ticket"},
            {"type": "URL_ACTION", "label": "Other help options", "url": HELP_OPTIONS_URL},
        ],
        handoff=[],
        form_context={"question": question},
        title=_title(question),
        content_type="MARKDOWN_TEXT",
    )


def help_plan(question: str) -> Plan:
    """The get-help menu: `handoff.handoff_categories` whose ACTION items hold actions."""
    markdown = "MARKDOWN_TEXT"
    categories = [
        {
            "category_id": "it",
            "name": ":computer: IT",
            "description": "Laptops, accounts, software and network access",
            "handoff_items": [
                {"title": "File a ticket", "type": "ACTION",
                 "action": {"type": "MODAL_ACTION", "label": "File a ticket", "form": "ticket"}},
                {"title": "Talk to an agent", "type": "ACTION",
                 "action": {"type": "CALLBACK_ACTION", "label": "Talk to an agent", "intent": "live_agent"}},
                {"title": "Service desk hours", "type": "TEXT",
                 "text": {"type": markdown, "markdown_text": {
                     "text": "The service desk is open 8\u201318 (Mon\u2013Fri, local time). "
                             "Outside these hours call **+1 555 0100** for urgent issues."}}},
            ],
        },
        {
            "category_id": "hr",
            "name": "HR",
            "description": "Benefits, payroll and time off",
            "handoff_items": [
                {"title": "HR policies", "type": "ACTION",
                 "action": {"type": "URL_ACTION", "label": "HR policies", "url": "https://hr.example.com/policies"}},
                {"title": "Payroll questions", "type": "TEXT",
                 "text": {"type": markdown, "markdown_text": {
                     "text": "Write to *payroll@example.com*; payroll answers within two business days."}}},
            ],
        },
    ]
    return Plan(
        text="Here's where you can get help. Pick a team below. :wave:",
        reasoning=["Looking up your support options"],
        handoff=categories,
        form_context={"question": question},
        title=_title(question) if question else "Get help",
        content_type="MARKDOWN_TEXT",
    )


def filed_plan(summary: str, ticket: str) -> Plan:
    """What the "File ticket" button answers."""
    return Plan(
        text=f"I filed {ticket}: {summary}. You'll get updates here.",
        reasoning=["Filing the ticket"],
        content_type="MARKDOWN_TEXT",
    )


def live_turn_plan(echo: str) -> Plan:
    """A turn while a human agent has the conversation: no outputs; the agent answers later."""
    return Plan(text="", reasoning=[], empty=True, agent_echo=echo)


def end_chat_plan(handoff_response_id: str | None) -> Plan:
    """"End chat": no outputs; the farewell is a late message under the handoff turn (if live)."""
    late = {"response_id": handoff_response_id, "text": FAREWELL} if handoff_response_id else None
    return Plan(text="", reasoning=[], empty=True, late=late)


def agent_reply_text(echo: str) -> str:
    return f"Thanks, I'm looking at it: {echo}" if echo else "Thanks, I'm looking at it."


def mention_files(plan: Plan, names: list[str]) -> None:
    """Make the answer say which attached files arrived ("I received a.png and b.txt. …")."""
    if not names or plan.empty:
        return
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    prefix = f"I received {listed}. "
    plan.text = prefix + plan.text
    for c in plan.citations:
        if isinstance(c.get("offset"), int):
            c["offset"] += len(prefix)


def sender_info(display_name: str | None = None, avatar_url: str | None = None) -> dict[str, Any]:
    return {"display_name": display_name or AGENT_NAME, "avatar_url": avatar_url or AGENT_AVATAR}
