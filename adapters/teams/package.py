"""Build the Teams app package: `manifest.json` (bot id from settings) + two icons, zipped.

    moveworks-bridge teams-package --out moveworks-teams.zip          # bot id from TEAMS_APP_ID
    moveworks-bridge teams-package --bot-id <guid> --name "IT Help" --out it-help.zip

The icons are drawn here (a 192×192 colour icon and a 32×32 white-on-transparent outline, as
Teams requires) so the repository carries no binary files; `--color`/`--outline` use your own.
Upload the zip in Teams (Apps → Manage your apps → Upload an app) or in the Teams admin center.

Prompt starters: the bot's `commandLists` (personal scope) are the suggested prompts of
`BRIDGE_SUGGESTED_PROMPTS` (or `--prompts "a;b"`), the same ones Slack's Messages tab and the Teams
welcome card offer. Teams shows them in an empty personal chat and in its "View prompts" menu, and
puts a prompt's `title` into the compose box when it is picked (msteams-docs
`prompt-suggestions.md`), so the title is the prompt itself. The manifest is schema 1.21, whose
limits (`MANIFEST_LIMITS`, from the schema at `MANIFEST_SCHEMA`) take the setting's prompts of up
to 100 characters whole; 1.17, used before, allowed 32-character titles. `check_manifest` refuses
a package that the schema would refuse.

Thread context: the manifest asks for the resource-specific consent permission
`ChannelMessage.Read.Group` (`authorization.permissions.resourceSpecific`, with the
`webApplicationInfo` RSC requires), which lets the bot read a reply chain's earlier messages
through Microsoft Graph when it is mentioned in it (thread_context.py). A team owner grants it
when adding the app to a team. `--no-thread-context` leaves it out (tenants that do not allow
group-owner consent); the bot then answers mentions without the chain's context.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.process.config import DEFAULT_SUGGESTED_PROMPTS, parse_prompts

TEMPLATE = Path(__file__).with_name("appPackage") / "manifest.json"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
ACCENT = (0x5B, 0x5F, 0xC7)
MANIFEST_VERSION = "1.21"
MANIFEST_SCHEMA = "https://developer.microsoft.com/en-us/json-schemas/teams/v1.21/MicrosoftTeams.schema.json"
# The limits of schema 1.21 this package can run into (OfficeDev/microsoft-teams-app-schema, the
# "GA 1.21" MicrosoftTeams.schema.json): maxItems and maxLength of the fields it fills.
MANIFEST_LIMITS = {
    "commandLists": 3,  # bots[].commandLists: one list per scope at most
    "commands": 10,  # bots[].commandLists[].commands
    "command.title": 128,
    "command.description": 4000,
    "resourceSpecific": 16,  # authorization.permissions.resourceSpecific
    "name.short": 30,
    "name.full": 100,
    "description.short": 80,
    "description.full": 4000,
    "developer.name": 32,
}


def png(width: int, height: int, pixel) -> bytes:
    """A minimal RGBA PNG; `pixel(x, y)` returns (r, g, b, a)."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            raw.extend(pixel(x, y))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + \
        chunk(b"IEND", b"")


def _in_bubble(x: float, y: float) -> bool:
    """A speech bubble in the unit square: a rounded rectangle and a tail at the lower left."""
    cx, cy = min(max(x, 0.27), 0.73), min(max(y, 0.29), 0.59)
    body = (x - cx) ** 2 + (y - cy) ** 2 <= 0.09 ** 2
    tail = 0.3 <= x <= 0.45 and 0.66 <= y <= 0.82 and (y - 0.66) <= (0.45 - x)
    return body or tail


def color_icon() -> bytes:
    def pixel(x: int, y: int):
        return (255, 255, 255, 255) if _in_bubble(x / 192, y / 192) else (*ACCENT, 255)
    return png(192, 192, pixel)


def outline_icon() -> bytes:
    def pixel(x: int, y: int):
        u, v = (x + 0.5) / 32, (y + 0.5) / 32
        inside = _in_bubble(u, v)
        inner = _in_bubble(0.5 + (u - 0.5) * 1.25, 0.45 + (v - 0.45) * 1.25)
        return (255, 255, 255, 255) if inside and not inner else (255, 255, 255, 0)
    return png(32, 32, pixel)


def prompt_starters(prompts: Sequence[str]) -> list[dict[str, Any]]:
    """`bots[].commandLists` for the suggested prompts: one list, personal scope, each prompt a
    command whose title (what Teams puts into the compose box) is the prompt."""
    commands = [{"title": prompt, "description": prompt} for prompt in dict.fromkeys(p.strip() for p in prompts)
                if prompt]
    if not commands:
        return []
    return [{"scopes": ["personal"], "commands": commands}]


def check_manifest(data: dict[str, Any]) -> None:
    """Raise ValueError naming what schema 1.21 would refuse among the fields filled here."""
    limits = MANIFEST_LIMITS
    if data.get("manifestVersion") != MANIFEST_VERSION or data.get("$schema") != MANIFEST_SCHEMA:
        raise ValueError(f"the manifest template is not schema {MANIFEST_VERSION}: update MANIFEST_LIMITS")
    for key, value in (("name.short", data["name"]["short"]), ("name.full", data["name"].get("full", "")),
                       ("description.short", data["description"]["short"]),
                       ("description.full", data["description"]["full"]),
                       ("developer.name", data["developer"]["name"])):
        if len(value) > limits[key]:
            raise ValueError(f"{key} is {len(value)} characters; Teams allows {limits[key]}")
    for bot in data.get("bots") or []:
        lists = bot.get("commandLists") or []
        if len(lists) > limits["commandLists"]:
            raise ValueError(f"{len(lists)} command lists; Teams allows {limits['commandLists']}")
        for command_list in lists:
            commands = command_list.get("commands") or []
            if len(commands) > limits["commands"]:
                raise ValueError(f"{len(commands)} prompt starters; Teams allows {limits['commands']}")
            for command in commands:
                for field in ("title", "description"):
                    value = command.get(field)
                    if not isinstance(value, str) or not value:
                        raise ValueError(f"a prompt starter needs a {field}")
                    if len(value) > limits[f"command.{field}"]:
                        raise ValueError(f"prompt starter {field} {value[:40]!r}… is {len(value)} characters; "
                                         f"Teams allows {limits[f'command.{field}']}")
    rsc = ((data.get("authorization") or {}).get("permissions") or {}).get("resourceSpecific") or []
    if len(rsc) > limits["resourceSpecific"]:
        raise ValueError(f"{len(rsc)} resource-specific permissions; Teams allows {limits['resourceSpecific']}")


def manifest(bot_id: str, *, app_id: str | None = None, name: str = "Moveworks", version: str = "1.0.0",
             developer: str = "Moveworks Bridge", website: str = "https://www.moveworks.com",
             prompts: Sequence[str] = DEFAULT_SUGGESTED_PROMPTS, thread_context: bool = True) -> dict:
    if not _GUID.match(bot_id):
        raise ValueError("the bot id (TEAMS_APP_ID) must be the Azure Bot's Microsoft App ID, a GUID")
    text = TEMPLATE.read_text(encoding="utf-8")
    values = {
        "VERSION": version, "APP_ID": app_id or bot_id, "BOT_ID": bot_id, "SHORT_NAME": name[:30],
        "FULL_NAME": f"{name} AI assistant"[:100], "DEVELOPER_NAME": developer, "WEBSITE_URL": website,
        "PRIVACY_URL": f"{website.rstrip('/')}/privacy", "TERMS_URL": f"{website.rstrip('/')}/terms",
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", json.dumps(value)[1:-1])
    data: dict[str, Any] = json.loads(text)
    starters = prompt_starters(prompts)
    for bot in data["bots"]:
        if starters:
            bot["commandLists"] = starters
        else:
            bot.pop("commandLists", None)
    if not thread_context:
        data.pop("authorization", None)
        data.pop("webApplicationInfo", None)
    check_manifest(data)
    return data


def build_package(out: Path, bot_id: str, *, color: bytes | None = None, outline: bytes | None = None,
                  **options: Any) -> Path:
    import zipfile

    data = manifest(bot_id, **options)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(data, indent=2))
        zf.writestr("color.png", color or color_icon())
        zf.writestr("outline.png", outline or outline_icon())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.teams.package", description=__doc__.split("\n")[0])
    parser.add_argument("--bot-id", default=os.environ.get("TEAMS_APP_ID"), help="Azure Bot app id (TEAMS_APP_ID)")
    parser.add_argument("--app-id", help="Teams app id (defaults to the bot id)")
    parser.add_argument("--name", default="Moveworks")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--developer", default="Moveworks Bridge")
    parser.add_argument("--website", default="https://www.moveworks.com")
    parser.add_argument("--color", type=Path, help="your own 192x192 PNG")
    parser.add_argument("--outline", type=Path, help="your own 32x32 white-on-transparent PNG")
    parser.add_argument("--prompts", default=os.environ.get("BRIDGE_SUGGESTED_PROMPTS"),
                        help="prompt starters, ';'-separated (default: BRIDGE_SUGGESTED_PROMPTS, else built-in)")
    parser.add_argument("--no-thread-context", dest="thread_context", action="store_false",
                        help="leave out the ChannelMessage.Read.Group permission (no thread context)")
    parser.add_argument("--out", type=Path, default=Path("moveworks-teams.zip"))
    args = parser.parse_args(argv)
    if not args.bot_id:
        print("TEAMS_APP_ID is not set (or pass --bot-id)", file=sys.stderr)
        return 2
    try:
        prompts = parse_prompts(args.prompts)
        path = build_package(
            args.out, args.bot_id, app_id=args.app_id, name=args.name, version=args.version,
            developer=args.developer, website=args.website, prompts=prompts,
            thread_context=args.thread_context,
            color=args.color.read_bytes() if args.color else None,
            outline=args.outline.read_bytes() if args.outline else None,
        )
    except (ValueError, OSError, ConfigError) as exc:
        print(f"cannot build the package: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (prompt starters: {'; '.join(prompts)}; thread context: "
          f"{'ChannelMessage.Read.Group requested' if args.thread_context else 'off'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
