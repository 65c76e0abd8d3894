"""Bot Framework `Entity` subclasses that really serialize their fields.

botbuilder-python 4.17.1's `Entity` maps only `type`: extra properties (and plain dicts in
`Activity.entities`) are silently dropped by msrest, so Teams sees `{"type": "streaminfo"}` and
answers `BadSyntax`. Each class here declares its own `_attribute_map`,
which is what msrest writes to the wire.
"""

from __future__ import annotations

from typing import Any

from botbuilder.schema import Entity
from msrest.serialization import Model

AI_SCHEMA_TYPE = "https://schema.org/Message"
MAX_CITATIONS = 10  # Teams answers 400 for more claims on one message
CITATION_NAME_LIMIT = 80
CITATION_ABSTRACT_LIMIT = 160


class StreamInfoEntity(Entity):
    """`{"type": "streaminfo", "streamId", "streamType", "streamSequence"}` (omitted when None)."""

    _attribute_map = {  # msrest reads this class attribute
        "type": {"key": "type", "type": "str"},
        "stream_id": {"key": "streamId", "type": "str"},
        "stream_type": {"key": "streamType", "type": "str"},
        "stream_sequence": {"key": "streamSequence", "type": "int"},
    }

    def __init__(
        self,
        *,
        stream_type: str,
        stream_sequence: int | None = None,
        stream_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(type="streaminfo", **kwargs)
        self.stream_type = stream_type
        self.stream_sequence = stream_sequence
        self.stream_id = stream_id


class Appearance(Model):
    _attribute_map = {  # msrest reads this class attribute
        "type": {"key": "@type", "type": "str"},
        "name": {"key": "name", "type": "str"},
        "url": {"key": "url", "type": "str"},
        "abstract": {"key": "abstract", "type": "str"},
        "keywords": {"key": "keywords", "type": "[str]"},
    }

    def __init__(self, *, name: str, url: str | None = None, abstract: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.type = "DigitalDocument"
        self.name = name
        self.url = url
        self.abstract = abstract
        self.keywords: list[str] | None = None


class Claim(Model):
    _attribute_map = {  # msrest reads this class attribute
        "type": {"key": "@type", "type": "str"},
        "position": {"key": "position", "type": "int"},
        "appearance": {"key": "appearance", "type": "Appearance"},
    }

    def __init__(self, *, position: int, appearance: Appearance, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.type = "Claim"
        self.position = position
        self.appearance = appearance


class AIMessageEntity(Entity):
    """The one root `Message` entity: "AI generated" label plus citation claims for `[n]`."""

    _attribute_map = {  # msrest reads this class attribute
        "type": {"key": "type", "type": "str"},
        "schema_type": {"key": "@type", "type": "str"},
        "context": {"key": "@context", "type": "str"},
        "id": {"key": "@id", "type": "str"},
        "additional_type": {"key": "additionalType", "type": "[str]"},
        "citation": {"key": "citation", "type": "[Claim]"},
    }

    def __init__(self, *, ai_generated: bool = True, citation: list[Claim] | None = None, **kwargs: Any):
        super().__init__(type=AI_SCHEMA_TYPE, **kwargs)
        self.schema_type = "Message"
        self.context = "https://schema.org"
        self.id = ""
        self.additional_type = ["AIGeneratedContent"] if ai_generated else None
        self.citation = citation or None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def claim(position: int, title: str, url: str | None, snippet: str = "") -> Claim:
    """A citation claim within Teams' documented limits (name 80, abstract 160 characters)."""
    name = _clip(title or url or f"Source {position}", CITATION_NAME_LIMIT)
    abstract = _clip(snippet or title or name, CITATION_ABSTRACT_LIMIT)
    return Claim(position=position, appearance=Appearance(name=name, url=url or None, abstract=abstract))
