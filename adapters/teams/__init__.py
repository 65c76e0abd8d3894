"""Microsoft Teams adapter on botbuilder-core's `CloudAdapter` (botbuilder-integration-aiohttp).

botbuilder is archived by Microsoft: every botbuilder/botframework import of the bridge lives in
this package, so it can move to the Teams SDK or the Microsoft 365 Agents SDK without touching
the core. Modules: `app` (adapter, route, ChatAdapter methods), `bot` (ActivityHandler → Inbound),
`connector` (auth wiring, continued turns, error mapping), `ops` (post/update/delete), `streaming`
(personal-chat native stream sink), `render` (Markdown, citations, cards, a live agent's byline),
`forms` (Moveworks forms as dialogs, the get-help menu), `files` (attachments in, downloads),
`entities` (Entity subclasses that really serialize), `references` (ConversationReference
persistence), `welcome` (the welcome card, once per personal install), `thread_context` (a reply
chain's earlier messages through Microsoft Graph), `package` (the Teams app package zip, with the
prompt starters).
"""

from __future__ import annotations

from bridge.contract import ChatAdapter, Core


def build(core: Core) -> ChatAdapter:
    """`TeamsAdapter` (imported lazily by `adapters.registry`)."""
    from .app import TeamsAdapter

    return TeamsAdapter(core)
