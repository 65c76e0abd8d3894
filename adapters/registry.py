"""Adapter registry: platform name → the package that builds it. Imported lazily, so a
deployment that only uses Slack never imports botbuilder (and vice versa)."""

from __future__ import annotations

import importlib
from typing import Any

ADAPTERS = {
    "slack": "adapters.slack",
    "teams": "adapters.teams",
    "console": "adapters.console",
}


def build(name: str, ctx: Any) -> Any:
    """Build the adapter `name` from an `AdapterContext`; each package exposes `build(ctx)`."""
    try:
        module_name = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}") from None
    module = importlib.import_module(module_name)
    return module.build(ctx)
