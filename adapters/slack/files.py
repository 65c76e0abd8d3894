"""Files employees share with the bot: Slack file objects -> the core's `Attachment`, and their
bytes fetched with the bot token (`files:read`), for the core to pass on to Moveworks.

Slack serves a file's `url_private_download` (or `url_private`) to a request carrying
`Authorization: Bearer <bot token>` of a token allowed to read it. A token without `files:read`
(or a missing one) gets Slack's sign-in page, as HTML with status 200, so a successful status is
not enough: an HTML body for a file that is not HTML is refused. The token only ever goes to
Slack's own hosts (`*.slack.com`, or the configured Web API host, e.g. a test fake); redirects are
not followed, so it cannot be carried anywhere else.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from bridge.errors import AttachmentRefused, AttachmentTooLarge
from bridge.models import Attachment

log = logging.getLogger("adapters.slack")

DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# Files Slack describes but does not let us fetch: deleted, over the free plan's limit, or
# stored elsewhere (an external file's URL is not Slack's).
UNFETCHABLE_MODES = frozenset({"tombstone", "hidden_by_limit", "external"})
_HTML_START = (b"<!doctype html", b"<html")


def attachment(file: Any, team_id: str = "", enterprise_id: str | None = None) -> Attachment | None:
    """A Slack file object (message `files[]`, a `file_input`'s files) -> an `Attachment`, or None
    when Slack gives no way to fetch it. `source` keeps the URL, the file id and the workspace
    (whose bot token fetches it)."""
    if not isinstance(file, dict):
        return None
    url = file.get("url_private_download") or file.get("url_private")
    if not isinstance(url, str) or not url or file.get("mode") in UNFETCHABLE_MODES or file.get("is_external"):
        return None
    size = file.get("size")
    mimetype = file.get("mimetype")
    source: dict[str, Any] = {"url": url, "id": file.get("id"), "team": team_id}
    if enterprise_id:
        source["enterprise"] = enterprise_id
    return Attachment(
        name=str(file.get("name") or file.get("title") or file.get("id") or "file"),
        content_type=mimetype if isinstance(mimetype, str) and mimetype else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        source=source,
    )


def attachments(files: Any, team_id: str, enterprise_id: str | None = None) -> tuple[Attachment, ...]:
    if not isinstance(files, list):
        return ()
    found = (attachment(f, team_id, enterprise_id) for f in files)
    return tuple(a for a in found if a is not None)


def trusted(url: str, api_url: str) -> bool:
    """May the bot token be sent to `url`? Slack's own HTTPS hosts, or the Web API host the
    bridge is configured with (a proxy or a test fake, which may be plain HTTP on loopback)."""
    try:
        parts, api = urlsplit(url), urlsplit(api_url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if not host:
        return False
    if api.hostname and host == api.hostname.lower() and parts.port == api.port and parts.scheme == api.scheme:
        return True
    return parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))


def _html(attachment: Attachment) -> bool:
    return (attachment.content_type or "").split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


async def fetch(http: httpx.AsyncClient, attachment: Attachment, token: str, limit: int, *, api_url: str) -> bytes:
    """The file's bytes, at most `limit` of them. Raises `AttachmentTooLarge` past the limit and
    `AttachmentRefused` for anything that is not the file (error status, Slack's sign-in page,
    an untrusted host). Never logs the token or the URL's query."""
    url = attachment.source.get("url")
    if not isinstance(url, str) or not url:
        raise AttachmentRefused("no download URL")
    if not trusted(url, api_url):
        raise AttachmentRefused(f"not a Slack file host: {urlsplit(url).hostname}")
    if attachment.size is not None and attachment.size > limit:
        raise AttachmentTooLarge(f"{attachment.size} bytes > {limit}")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with http.stream("GET", url, headers=headers, timeout=DOWNLOAD_TIMEOUT,
                               follow_redirects=False) as response:
            if response.status_code != 200:
                raise AttachmentRefused(f"HTTP {response.status_code}")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "text/html" and not _html(attachment):
                raise AttachmentRefused("Slack answered with a web page (is files:read granted?)")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise AttachmentTooLarge(f"{declared} bytes > {limit}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > limit:
                    raise AttachmentTooLarge(f"more than {limit} bytes")
    except httpx.HTTPError as exc:
        raise AttachmentRefused(f"download failed: {type(exc).__name__}") from None
    if not _html(attachment) and bytes(body[:64]).lstrip().lower().startswith(_HTML_START):
        raise AttachmentRefused("Slack answered with a web page (is files:read granted?)")
    return bytes(body)
