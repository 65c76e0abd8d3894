"""Files an employee attaches in Teams: read off the activity, fetched for the core.

What Teams sends (msteams-docs `bots/how-to/bots-filesv4.md`; the app manifest must say
`"supportsFiles": true`, and this works in personal chats only):

* a file: an attachment `application/vnd.microsoft.teams.file.download.info` whose
  `content.downloadUrl` is a pre-authenticated OneDrive/SharePoint link (read it with a plain
  GET, no credentials), `name`, `content.fileType`;
* an inline image (pasted or dragged into the message): an attachment `image/*` (often literally
  `image/*`) whose `contentUrl` is on the Bot Connector and needs the bot's token.

Other attachments (the message's own `text/html` copy, cards) are not files and are skipped.

`download` never blocks the event loop (aiohttp), stops reading past `limit`
(`AttachmentTooLarge`) and raises `AttachmentRefused` for anything else that goes wrong. The
bot's token goes only to the origin (scheme, host, port) of the activity's `serviceUrl`, which
the inbound token vouched for, never to another host, and not along a redirect. Plain http is
refused except on loopback (local development and tests).
"""

from __future__ import annotations

import ipaddress
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from botbuilder.schema import Activity

from bridge.errors import AttachmentRefused, AttachmentTooLarge
from bridge.models import Attachment

log = logging.getLogger("adapters.teams")

FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
DOWNLOAD = "download"  # a pre-authenticated link
CONNECTOR = "connector"  # on the Bot Connector: needs the bot's token
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60.0, connect=10.0, sock_read=30.0)
CHUNK = 64 * 1024
MAX_REDIRECTS = 3
_IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
                "image/bmp": ".bmp", "image/heic": ".heic"}

TokenSource = Callable[[], Awaitable[str | None]]


def attachments_of(activity: Activity) -> tuple[Attachment, ...]:
    """The files of a message activity, as the core's `Attachment`s."""
    found: list[Attachment] = []
    for attachment in activity.attachments or []:
        kind = (attachment.content_type or "").lower()
        content = attachment.content if isinstance(attachment.content, dict) else {}
        if kind == FILE_DOWNLOAD_INFO:
            url = content.get("downloadUrl")
            if not isinstance(url, str) or not url:
                continue
            name = attachment.name or "file"
            if "." not in name and isinstance(content.get("fileType"), str):
                name = f"{name}.{content['fileType']}"
            found.append(Attachment(name=name, content_type=mimetypes.guess_type(name)[0], size=None,
                                    source={"kind": DOWNLOAD, "url": url}))
        elif kind.startswith("image/") and attachment.content_url:
            # Teams often sends "image/*": the exact type is unknown until the bytes arrive;
            # pasted screenshots are PNG, so that is the guess for the core's type check.
            content_type = kind if kind in _IMAGE_TYPES else "image/png"
            name = attachment.name or f"image{_IMAGE_TYPES.get(content_type, '.png')}"
            found.append(Attachment(name=name, content_type=content_type, size=None, source={
                "kind": CONNECTOR, "url": attachment.content_url, "service_url": activity.service_url or ""}))
    return tuple(found)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetchable(url: str) -> bool:
    scheme, host, _ = _origin(url)
    return bool(host) and (scheme == "https" or (scheme == "http" and _loopback(host)))


def same_origin(url: str, service_url: str) -> bool:
    return bool(service_url) and _origin(url) == _origin(service_url)


async def download(attachment: Attachment, limit: int, token: TokenSource) -> bytes:
    """The attachment's bytes (at most `limit`), see the module docstring."""
    source: dict[str, Any] = attachment.source or {}
    url = source.get("url")
    if not isinstance(url, str) or not fetchable(url):
        raise AttachmentRefused("not a downloadable Teams attachment")
    headers: dict[str, str] = {}
    if source.get("kind") == CONNECTOR and same_origin(url, str(source.get("service_url") or "")):
        bearer = await token()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
    try:
        async with aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT) as session:
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                        url = urljoin(url, response.headers["Location"])
                        if not fetchable(url):
                            raise AttachmentRefused("redirected somewhere that is not fetched")
                        headers = {}  # the token never follows a redirect
                        continue
                    if response.status != 200:
                        raise AttachmentRefused(f"HTTP {response.status}")
                    if response.content_length is not None and response.content_length > limit:
                        raise AttachmentTooLarge(f"{response.content_length} bytes, limit {limit}")
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(CHUNK):
                        data.extend(chunk)
                        if len(data) > limit:
                            raise AttachmentTooLarge(f"more than {limit} bytes")
                    return bytes(data)
            raise AttachmentRefused("too many redirects")
    except AttachmentRefused:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AttachmentRefused(f"download failed ({type(exc).__name__})") from None
