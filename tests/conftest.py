"""Shared fixtures: a real Moveworks simulator on loopback and a real client talking to it."""

from __future__ import annotations

import pytest

from bridge.moveworks import ApiKeyAuth, MoveworksClient
from bridge.simulator import Simulator, SimulatorConfig

ASSISTANT = "moveworks-bridge-dev"


@pytest.fixture
async def sim():
    simulator = Simulator(SimulatorConfig(assistant_name=ASSISTANT, api_keys={"sim-key": "employee@example.com"}, pace=0))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def mw(sim):
    async def no_sleep(_seconds: float) -> None:
        return None

    client = MoveworksClient(sim.base_url, ASSISTANT, ApiKeyAuth("sim-key"), sleep=no_sleep, poll_interval=0.01)
    yield client
    await client.aclose()


# A real PostgreSQL server (session) and a fresh schema per test (`pg_url`): see tests/pg.py.
from tests.pg import pg_server, pg_url  # noqa: E402, F401
