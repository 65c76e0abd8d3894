"""Local simulator of the Moveworks Conversations API.

Written from the spec and independent of the rest of `bridge/` (it imports nothing from it), so it
checks our client rather than mirroring it. Serves the 11 endpoints under `/assistant/v1`
(`sim.base_url`), `/rest/v1beta1` (text input only, as its spec) and `/rest/v1`, the token endpoint
`/oauth/v1/token`, and an admin API under `/_sim/` documented in `bridge.simulator.admin`. What it
sends conforms to Moveworks' published OpenAPI files (checked by tests/test_simulator.py and
tests/test_spec_conformance.py against the copies in tests/specs/moveworks/).

`/rest/v1` also has what its docs add (no spec file; tests/test_simulator_v1.py): input
`chat`/`action`/`text`/`callback_id` (exactly one), `x-trace-id`, get-event, modals, `LIVE_AGENT`
messages, and the alpha Files API `POST /rest/v1alpha1/files`. Text turns on `/rest/v1` trigger:

- "…ticket…"                   smart handoff: File ticket / Edit/Add details (MODAL_ACTION) / Other help
                                options; the form has every field type (modals.py)
- "help menu", "get help"      get-help menu: `handoff.handoff_categories` IT (form, agent, hours) and HR
- "talk to an agent", "human"  live agent: later turns complete with no outputs, Dana Fielding
                                (LIVE_AGENT) answers as an event; "End chat" leaves a late farewell
- `chat.files`                 ids from the Files API ride on the user message; the answer names them

    sim = Simulator(SimulatorConfig(pace=0))
    await sim.start()            # ephemeral port; sim.url / sim.base_url / sim.token_url
    sim.script_answer(text="Hi", match="hello")
    await sim.stop()
"""

from .config import SimulatorConfig
from .server import Simulator, run, serve_forever

__all__ = ["Simulator", "SimulatorConfig", "serve_forever", "run"]
