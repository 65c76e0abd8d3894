"""Adapter registry: platform name → the package that builds it. Imported lazily, so a
deployment that only uses Slack never imports botbuilder (and vice versa). Each package exposes
`build(core: bridge.contract.Core) -> bridge.contract.ChatAdapter`."""

from __future__ import annotations

import importlib

from bridge.contract import ChatAdapter, Core

ADAPTERS = {
    "slack": "adapters.slack",
    "teams": "adapters.teams",
    "console": "adapters.console",
}


def build(name: str, core: Core) -> ChatAdapter:
    try:
        module_name = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}") from None
    adapter = importlib.import_module(module_name).build(core)
    if not isinstance(adapter, ChatAdapter):
        raise TypeError(f"{module_name}.build did not return a bridge.contract.ChatAdapter")
    return adapter
