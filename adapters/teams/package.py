"""Build the Teams app package: `manifest.json` (bot id from settings) + two icons, zipped.

    python -m adapters.teams.package --out moveworks-teams.zip            # bot id from TEAMS_APP_ID
    python -m adapters.teams.package --bot-id <guid> --name "IT Help" --out it-help.zip

The icons are drawn here (a 192×192 colour icon and a 32×32 white-on-transparent outline, as
Teams requires) so the repository carries no binary files; `--color`/`--outline` use your own.
Upload the zip in Teams (Apps → Manage your apps → Upload an app) or in the Teams admin center.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import zlib
from pathlib import Path

TEMPLATE = Path(__file__).with_name("appPackage") / "manifest.json"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
ACCENT = (0x5B, 0x5F, 0xC7)


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


def manifest(bot_id: str, *, app_id: str | None = None, name: str = "Moveworks", version: str = "1.0.0",
             developer: str = "Moveworks Bridge", website: str = "https://www.moveworks.com") -> dict:
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
    return json.loads(text)


def build_package(out: Path, bot_id: str, *, color: bytes | None = None, outline: bytes | None = None,
                  **options: str) -> Path:
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
    parser.add_argument("--out", type=Path, default=Path("moveworks-teams.zip"))
    args = parser.parse_args(argv)
    if not args.bot_id:
        print("TEAMS_APP_ID is not set (or pass --bot-id)", file=sys.stderr)
        return 2
    try:
        path = build_package(
            args.out, args.bot_id, app_id=args.app_id, name=args.name, version=args.version,
            developer=args.developer, website=args.website,
            color=args.color.read_bytes() if args.color else None,
            outline=args.outline.read_bytes() if args.outline else None,
        )
    except (ValueError, OSError) as exc:
        print(f"cannot build the package: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
