"""The bridge's real `serve` app on loopback, with the Moveworks simulator and one platform
fake: the lifecycle shared by the Slack and Teams end-to-end harnesses."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge.process.config import Settings
from bridge.process.runtime import Runtime, build_runtime
from bridge.process.server import make_app
from bridge.simulator import Simulator, SimulatorConfig
from bridge.store import Store

ASSISTANT = "moveworks-bridge-dev"


class ServedBridge(ABC):
    """Subclasses set `platform` and `fake`, and build `settings()` for their adapter."""

    platform = ""

    def __init__(self, tmp_path: Path, fake: Any, **options: Any) -> None:
        self.tmp_path = tmp_path
        self.options = options
        self.fake = fake
        self.sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=0))
        self.runtime: Runtime | None = None
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.url = ""

    @abstractmethod
    def settings(self) -> Settings:
        """The bridge's settings for this platform's adapter, pointed at the fakes."""

    async def start(self) -> None:
        await self.fake.start()
        await self.sim.start()
        await self.boot()
        self.session = aiohttp.ClientSession()

    async def boot(self) -> None:
        settings = self.settings()
        self.runtime = build_runtime(settings, store=Store(settings.db))
        self.runner = web.AppRunner(make_app(self.runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def shutdown(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # drains answers, stops adapters, closes the store
            self.runner = None

    async def restart(self) -> None:
        await self.shutdown()
        await self.boot()

    async def stop(self) -> None:
        await self.shutdown()
        if self.session is not None:
            await self.session.close()
        await self.sim.stop()
        await self.fake.stop()

    def settled(self) -> bool:
        """Every accepted question has been answered (or failed): none waits in the durable
        inbound queue (`submit` stores it there; a worker takes it a moment later) and no answer
        is streaming."""
        if self.runtime is None:
            return True
        counts = self.runtime.store.sync.queue.counts()  # type: ignore[attr-defined]
        return self.runtime.relay.in_flight == 0 and counts["queued"] == 0 and counts["taken"] == 0

    @property
    def adapter(self) -> Any:
        assert self.runtime is not None
        return self.runtime.relay.adapters[self.platform]
