"""Employees' attachments on their way to Moveworks: checked (size, kind), fetched by the adapter
with the bot's credentials, uploaded to the alpha Files API, and passed with the question
(`plain_text.files`) or a form's FILE field. Used by the relay and the forms.

The Files API is alpha (`MOVEWORKS_FILES=off` turns this off) and exists on `/rest/v1` bases only;
elsewhere an attachment gets the polite `texts.FILES_ONLY`. A file that cannot be passed on never
costs the question: the question is asked without it and the asker is told which file and why.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass

from bridge import texts
from bridge.contract import ChatAdapter
from bridge.errors import AttachmentRefused, AttachmentTooLarge
from bridge.models import Attachment
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import MoveworksError
from bridge.moveworks.models import FileRef

log = logging.getLogger(__name__)

# Kinds an IT assistant is asked about: screenshots, documents, logs, exports. Executables,
# archives and media are refused before a byte is downloaded.
ACCEPTED_TYPES = (
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/heic", "image/bmp",
    "application/pdf", "text/plain", "text/csv", "text/markdown", "application/json",
    "application/msword", "application/rtf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
)
MAX_FILES = 5  # per question


@dataclass(frozen=True)
class Passed:
    """The files Moveworks took, and one sentence per file it did not (for the asker)."""

    files: tuple[FileRef, ...]
    problems: tuple[str, ...]


def kind_of(attachment: Attachment) -> str:
    """The attachment's media type: what the platform said, else guessed from its name."""
    declared = (attachment.content_type or "").split(";")[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    return (mimetypes.guess_type(attachment.name)[0] or "application/octet-stream").lower()


class Attachments:
    def __init__(self, client: MoveworksClient, *, enabled: bool, max_mb: float, purpose: str) -> None:
        self.client = client
        self.enabled = enabled
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.max_mb = max_mb
        self.purpose = purpose

    def usable(self, adapter: ChatAdapter | None) -> bool:
        """Can attachments from this adapter reach Moveworks at all?"""
        return (
            self.enabled and adapter is not None and adapter.accepts_files
            and self.client.files_url() is not None
        )

    async def upload(self, adapter: ChatAdapter, identity: str | None, attachment: Attachment) -> FileRef:
        """One attachment → a Files API id. Raises `AttachmentRefused` with the sentence for the
        asker as its message."""
        name = attachment.name or "file"
        kind = kind_of(attachment)
        limit = f"{self.max_mb:g}"
        if kind not in ACCEPTED_TYPES:
            raise AttachmentRefused(texts.FILE_TYPE.format(name=name))
        if attachment.size is not None and attachment.size > self.max_bytes:
            raise AttachmentRefused(texts.FILE_TOO_BIG.format(name=name, limit=limit))
        try:
            content = await adapter.download(attachment, self.max_bytes)
        except AttachmentRefused as exc:
            log.info("attachment %s not downloaded: %s", kind, exc)
            raise AttachmentRefused(
                texts.FILE_TOO_BIG.format(name=name, limit=limit) if isinstance(exc, AttachmentTooLarge)
                else texts.FILE_UNREADABLE.format(name=name)
            ) from None
        if len(content) > self.max_bytes:
            raise AttachmentRefused(texts.FILE_TOO_BIG.format(name=name, limit=limit))
        try:
            uploaded = await self.client.upload_file(identity, name, content, kind, purpose=self.purpose)
        except (MoveworksError, ValueError) as exc:
            log.warning("the Files API refused an attachment (%s, %d bytes): %s", kind, len(content), exc)
            raise AttachmentRefused(texts.FILE_UNREADABLE.format(name=name)) from None
        return FileRef(uploaded.file_id, name)

    async def pass_on(
        self, adapter: ChatAdapter | None, identity: str | None, attachments: tuple[Attachment, ...]
    ) -> Passed:
        """Upload what can be uploaded; say why for the rest."""
        if not attachments:
            return Passed((), ())
        if adapter is None or not self.usable(adapter):
            return Passed((), (texts.FILES_ONLY,))
        files: list[FileRef] = []
        problems: list[str] = []
        for attachment in attachments[:MAX_FILES]:
            try:
                files.append(await self.upload(adapter, identity, attachment))
            except AttachmentRefused as refused:
                problems.append(str(refused))
        for attachment in attachments[MAX_FILES:]:
            problems.append(texts.FILE_UNREADABLE.format(name=attachment.name or "file"))
        return Passed(tuple(files), tuple(problems))
