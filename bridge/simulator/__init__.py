"""Local simulator of the Moveworks Conversations API.

Written from the spec and independent of the rest of `bridge/` (it imports nothing from it), so it
checks our client rather than mirroring it. Serves the 11 endpoints under `/assistant/v1`
(`sim.base_url`), `/rest/v1beta1` (text input only, as its spec) and `/rest/v1`, the token endpoint
`/oauth/v1/token`, and an admin API under `/_sim/` documented in `bridge.simulator.admin`. What it
sends conforms to Moveworks' published OpenAPI files (checked by tests/test_simulator.py and
tests/test_spec_conformance.py against the copies in tests/specs/moveworks/).

    sim = Simulator(SimulatorConfig(pace=0))
    await sim.start()            # ephemeral port; sim.url / sim.base_url / sim.token_url
    sim.script_answer(text="Hi", match="hello")
    await sim.stop()
"""

from .config import SimulatorConfig
from .server import Simulator, run, serve_forever

__all__ = ["Simulator", "SimulatorConfig", "serve_forever", "run"]
