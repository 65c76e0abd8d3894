"""`moveworks-bridge` / `python -m bridge`: serve, poll, simulator, chat, doctor."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

from bridge.errors import ConfigError
from bridge.process import logs
from bridge.process.config import SECRET_FIELDS, Settings

log = logging.getLogger("bridge.process.cli")

SIM_ASSISTANT = "moveworks-bridge-dev"
SIM_API_KEY = "sim-key"
SIM_EMAIL = "employee@example.com"


def _settings(**kw) -> Settings:
    return Settings.from_env(**kw)


def _setup_logs(settings: Settings | None, level: str | None = None) -> None:
    secrets = [getattr(settings, f) for f in SECRET_FIELDS] if settings else []
    if settings is not None:
        password = urlsplit(settings.db).password if "://" in settings.db else None
        if password:
            secrets.append(password)  # BRIDGE_DB=postgresql://user:password@host/db
    logs.setup(
        settings.log_format if settings else os.environ.get("BRIDGE_LOG_FORMAT", "text"),
        level or (settings.log_level if settings else "INFO"),
        [s for s in secrets if isinstance(s, str)],
    )


# --- serve / poll -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    _setup_logs(settings)
    from bridge.process.runtime import build_runtime
    from bridge.process.server import serve
    from bridge.store.aio import open_store

    if not settings.adapters:
        log.warning("no chat platform configured (set SLACK_BOT_TOKEN, TEAMS_APP_ID or BRIDGE_ADAPTERS)")
    async def main() -> None:
        store = await open_store(settings.db)  # a PostgreSQL store is opened on the event loop
        await serve(build_runtime(settings, poller=settings.poller, store=store), port=args.port)

    asyncio.run(main())
    return 0


async def _poll_forever(settings: Settings) -> None:
    from bridge.process.runtime import build_runtime
    from bridge.store.aio import open_store

    runtime = build_runtime(settings, poller=True, answers=False, store=await open_store(settings.db))
    await runtime.start(inbound=False)  # deliveries only: questions go to `serve`
    from bridge.process.server import stop_on_signals

    stop = stop_on_signals()
    assert runtime.poller is not None  # built with poller=True
    await runtime.poller.start()
    log.info("poller running (adapters: %s)", ", ".join(a.platform for a in runtime.adapters) or "none")
    try:
        await stop.wait()
    finally:
        await runtime.aclose()


def cmd_poll(args: argparse.Namespace) -> int:
    settings = _settings()
    _setup_logs(settings)
    asyncio.run(_poll_forever(settings))
    return 0


# --- simulator --------------------------------------------------------------------------------


def cmd_simulator(args: argparse.Namespace) -> int:
    from bridge.simulator import SimulatorConfig, run

    _setup_logs(None, "INFO")
    config = SimulatorConfig(
        assistant_name=args.assistant_name,
        api_keys={args.api_key: args.email},
        pace=args.pace,
        webhook_url=args.webhook_url,
        webhook_secret=os.environ.get("BRIDGE_WEBHOOK_SECRET"),
    )
    run(config, host=args.host, port=args.port)
    return 0


# --- chat -------------------------------------------------------------------------------------


async def _chat(args: argparse.Namespace) -> int:
    from adapters.console import THREAD, ConsoleAdapter, choices
    from adapters.console.forms import fill
    from bridge.models import Inbound
    from bridge.process.runtime import build_runtime
    from bridge.store import Store

    sim = None
    if args.simulate:
        from bridge.simulator import Simulator, SimulatorConfig

        sim = Simulator(SimulatorConfig(assistant_name=SIM_ASSISTANT, api_keys={SIM_API_KEY: SIM_EMAIL},
                                        pace=args.pace))
        await sim.start()
        settings = Settings(
            moveworks_base_url=f"{sim.url}/rest/v1",  # the current generation: forms, files, agents
            moveworks_assistant_name=SIM_ASSISTANT,
            moveworks_api_key=SIM_API_KEY,
            poll_interval=1.0,
        )
        store = Store(":memory:")
    else:
        settings = _settings()
        store = Store(settings.db)
    email = args.as_email or os.environ.get("MOVEWORKS_CHAT_EMAIL") or (SIM_EMAIL if sim else None)
    console = ConsoleAdapter(email=email)
    runtime = build_runtime(settings, adapters=(), store=store, poller=not args.once, answers=False)
    runtime.add_adapter(console)
    user = console.user
    await runtime.store.employees.save(user, active=True)

    async def ask(text: str, callback=None) -> None:
        inbound = Inbound(
            dedupe_id=f"console-{uuid.uuid4()}",
            thread=THREAD,
            user=user,
            text=text,
            callback_id=callback.callback_id if callback else None,
            callback_conversation_id=console.last_answer.conversation_id if callback and console.last_answer else None,
        )
        await runtime.relay.handle(inbound)

    loop = asyncio.get_running_loop()

    def _read_line(prompt: str) -> str | None:
        try:
            return input(prompt)
        except (EOFError, KeyboardInterrupt):
            return None

    try:
        if args.once is not None:
            await ask(args.once)
            last = console.last_answer
            return 0 if last is not None else 1
        if runtime.poller is not None:
            await runtime.poller.start()
        print("Ask the assistant anything. Commands: /good, /bad, /action N, /quit.", flush=True)
        while True:
            try:
                line = await loop.run_in_executor(None, lambda: input("\nyou › "))
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return 0
            if line in ("/good", "/bad"):
                answer = console.last_answer
                if answer is None or answer.feedback is None:
                    print("There is no answer to rate yet.")
                    continue
                print(await runtime.relay.feedback(user, answer.feedback, line == "/good"))
                continue
            if line.startswith("/action"):
                try:
                    label, action, text = choices(console.last_answer)[int(line.split()[1]) - 1]
                except (IndexError, ValueError):
                    print("Usage: /action N, with N from the last answer's list.")
                    continue
                if action is None:
                    print(text)
                elif action.url:
                    print(f"Open {action.url}")
                elif action.opens_form and action.ref is not None:
                    await fill(
                        await runtime.relay.forms.open(user, action.ref, action.where),
                        ask=lambda prompt: loop.run_in_executor(None, _read_line, prompt),
                        say=print,
                        refresh=lambda session, values: runtime.relay.forms.refresh(user, session, values),
                        submit=lambda session, values: runtime.relay.forms.submit(user, session, values),
                    )
                else:
                    await ask(label, callback=action)
                continue
            await ask(line)
    finally:
        await runtime.aclose()
        if sim is not None:
            await sim.stop()


def cmd_chat(args: argparse.Namespace) -> int:
    try:
        if not args.simulate:
            _settings()  # fail fast with the variable's name
    except ConfigError:
        raise
    _setup_logs(None, "WARNING")
    return asyncio.run(_chat(args))


# --- doctor -----------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from bridge.process.doctor import run_doctor

    _setup_logs(None, "ERROR")
    return asyncio.run(run_doctor(as_email=args.as_email))


# --- teams-package ----------------------------------------------------------------------------


def cmd_teams_package(argv: list[str]) -> int:
    from adapters.teams.package import main as package_main

    return package_main(argv)


# --- entry point ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moveworks-bridge",
        description="The Moveworks AI assistant in Slack and Microsoft Teams.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="HTTP server for Slack/Teams (+ the events poller)")
    serve.add_argument("--port", type=int, default=None, help="overrides $PORT")
    serve.set_defaults(func=cmd_serve)

    poll = sub.add_parser("poll", help="the events poller alone (a separate worker)")
    poll.set_defaults(func=cmd_poll)

    sim = sub.add_parser("simulator", help="a local Moveworks Conversations API simulator")
    sim.add_argument("--port", type=int, default=8089)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--pace", type=float, default=1.0, help="stream pacing multiplier; 0 = instant")
    sim.add_argument("--assistant-name", default=SIM_ASSISTANT)
    sim.add_argument("--api-key", default=SIM_API_KEY)
    sim.add_argument("--email", default=SIM_EMAIL, help="identity of the API key")
    sim.add_argument("--webhook-url", default=None, help="POST a signed notification on each event")
    sim.set_defaults(func=cmd_simulator)

    chat = sub.add_parser("chat", help="chat with the assistant in this terminal")
    chat.add_argument("--simulate", action="store_true", help="use an in-process simulator")
    chat.add_argument("--once", metavar="TEXT", default=None, help="ask one question and exit")
    chat.add_argument("--as", dest="as_email", default=None, help="employee email (user_jwt mode)")
    chat.add_argument("--pace", type=float, default=1.0, help=argparse.SUPPRESS)
    chat.set_defaults(func=cmd_chat)

    doctor = sub.add_parser("doctor", help="check configuration and connectivity")
    doctor.add_argument("--as", dest="as_email", default=None,
                        help="employee email for the Moveworks check in user_jwt mode")
    doctor.set_defaults(func=cmd_doctor)

    package = sub.add_parser("teams-package", add_help=False,
                             help="build the Teams app package zip (--bot-id, --out, --name, ...)")
    package.set_defaults(func=None)  # dispatched in main(): its options are the packager's own
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["teams-package"]:
        return cmd_teams_package(argv[1:])
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"moveworks-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
