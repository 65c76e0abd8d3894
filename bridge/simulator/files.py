"""Files API (alpha): `POST /rest/v1alpha1/files`, `multipart/form-data`, same auth as the rest.

Rules enforced (as the upload-file page states them, plus the simulator's choices):

- every field (`purpose` is required; others are accepted and recorded) comes BEFORE the file part,
  and there is exactly one file part, named `file`, with a filename: else 400 INVALID_INPUT;
- the body must be multipart/form-data: else 400 INVALID_INPUT;
- at most 10 MiB (10 485 760 bytes) of file content: a larger file is **400 INVALID_INPUT**
  (the simulator's choice: the API's error list has no payload-too-large code), after the body
  has been read to the end so the client sees the answer instead of a reset; empty files are 400 too;
- the content type is sniffed from the bytes (PNG, JPEG, GIF, PDF, UTF-8 text, else
  application/octet-stream); the part's own Content-Type is recorded but not trusted;
- 201 `{id: "file_…", file_name, content_type, size_bytes, purpose, expire_time}`, expiring after
  `file_ttl` (24 h by default). There is no get/list/download: the id is only used in chat input
  (`input.chat.files[].file_id`) and modal FILE fields, where unknown or expired ids are 400.

Every attempt is recorded in `sim.state.uploads` (`GET /_sim/files`), successful or not:
`{identity, status, error, id, file_name, content_type, declared_content_type, size_bytes,
purpose, fields, parts, sha256, expire_time, t}`; the bytes of stored files are in
`sim.state.files[id]["data"]` (in-process only).
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from .errors import ApiError, bad_input
from .ids import new_id

if TYPE_CHECKING:
    from .server import Simulator

PATH = "/rest/v1alpha1/files"
MAX_BYTES = 10 * 1024 * 1024
MAX_FIELD = 64 * 1024
_CHUNK = 64 * 1024


def sniff(data: bytes) -> str:
    """The content type the bytes show, whatever the client claimed."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "text/plain"
    return "application/octet-stream"


def lookup(sim: Simulator, identity: str, file_id: Any) -> dict[str, Any] | None:
    """A live upload of `identity`, or None (unknown, someone else's, or expired)."""
    stored = sim.state.files.get(file_id) if isinstance(file_id, str) else None
    if stored is None or stored["identity"] != identity or stored["expires_at"] <= time.time():
        return None
    return stored


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _drain(request: web.Request) -> None:
    while await request.content.read(_CHUNK):
        pass


async def upload(sim: Simulator, request: web.Request, identity: str) -> web.Response:
    record: dict[str, Any] = {
        "identity": identity, "status": None, "error": None, "id": None, "file_name": None,
        "content_type": None, "declared_content_type": None, "size_bytes": None, "purpose": None,
        "fields": {}, "parts": [], "sha256": None, "expire_time": None, "t": time.time(),
    }
    sim.state.uploads.append(record)
    try:
        response = await _upload(sim, request, identity, record)
    except ApiError as exc:
        record["status"], record["error"] = exc.status, exc.message
        await _drain(request)
        raise
    record["status"] = response.status
    return response


async def _upload(sim: Simulator, request: web.Request, identity: str, record: dict[str, Any]) -> web.Response:
    if request.content_type != "multipart/form-data":
        raise bad_input("Content-Type must be multipart/form-data")
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:
        raise bad_input(f"Malformed multipart body: {exc}") from None
    fields: dict[str, str] = record["fields"]
    data: bytes | None = None
    size = 0
    while True:
        try:
            part = await reader.next()
        except (AssertionError, ValueError) as exc:
            raise bad_input(f"Malformed multipart body: {exc}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise bad_input("Nested multipart parts are not accepted")
        name = part.name or ""
        record["parts"].append(name)
        if name == "file":
            if data is not None:
                raise bad_input("Exactly one file part is allowed")
            if not part.filename:
                raise bad_input("The file part needs a filename")
            record["file_name"] = part.filename
            record["declared_content_type"] = part.headers.get("Content-Type")
            chunks: list[bytes] = []
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size <= MAX_BYTES:
                    chunks.append(chunk)
            data = b"".join(chunks)
            continue
        if data is not None:
            raise bad_input(f"Field '{name}' must come before the file part")
        raw = await part.read(decode=True)
        if len(raw) > MAX_FIELD:
            raise bad_input(f"Field '{name}' is too long")
        fields[name] = raw.decode("utf-8", "replace")
    purpose = fields.get("purpose")
    record["purpose"] = purpose
    if data is None:
        raise bad_input("A file part named 'file' is required")
    record["size_bytes"] = size
    if not purpose:
        raise bad_input("Field 'purpose' is required (before the file part)")
    if size > MAX_BYTES:
        raise bad_input(f"File is too large: {size} bytes, the limit is {MAX_BYTES} bytes (10 MiB)")
    if size == 0:
        raise bad_input("File is empty")
    expires_at = time.time() + float(sim.config.file_ttl)
    body = {
        "id": new_id("file_"),
        "file_name": record["file_name"],
        "content_type": sniff(data),
        "size_bytes": size,
        "purpose": purpose,
        "expire_time": _iso(expires_at),
    }
    sim.state.files[body["id"]] = {**body, "identity": identity, "expires_at": expires_at, "data": data}
    record.update(body, sha256=hashlib.sha256(data).hexdigest())
    return web.json_response(body, status=201)

