"""`python -m bridge.simulator [--host H] [--port N] [--pace X]` — the simulator on its own."""

from __future__ import annotations

import argparse

from . import SimulatorConfig, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--pace", type=float, default=1.0, help="delay multiplier; 0 = instant")
    parser.add_argument("--assistant-name", default="moveworks-bridge-dev")
    args = parser.parse_args(argv)
    run(SimulatorConfig(assistant_name=args.assistant_name, pace=args.pace), args.host, args.port)


if __name__ == "__main__":
    main()
