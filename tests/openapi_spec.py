"""Checks HTTP exchanges against Moveworks' own OpenAPI files (tests/specs/moveworks/, see SOURCES.md).

JSON Schema 2020-12 (what OpenAPI 3.1 schemas are) with `jsonschema`; every `$ref` of a spec is made
absolute so any fragment validates on its own. Discriminators are ignored (the files declare them
without a mapping), each SSE event's data is checked against the schema its event name selects
(the spec's `ResponseStreamData` oneOf has identical branches), and an error status an operation
does not declare is checked against the common envelope `{"error": {"code", "message"}}`.

Every `check_*` function returns a list of human-readable violations; empty means conforming.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).parent / "specs" / "moveworks"
SPEC_FILES = {
    "/rest/v1beta1": "moveworks-beta-conversations-api-openapi.yaml",
    "/assistant/v1": "moveworks-conversations-api-openapi.yaml",
}
STREAM_DATA = {
    "RESPONSE_CREATED": "ResponseCreatedData",
    "RESPONSE_IN_PROGRESS": "ResponseInProgressData",
    "RESPONSE_OUTPUT_DELTA": "ResponseOutputDeltaData",
    "RESPONSE_COMPLETED": "ResponseCompletedData",
    "RESPONSE_FAILED": "ResponseFailedData",
    "ERROR": "StreamingErrorData",
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        raise ValueError("no time part")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed.tzinfo is not None  # RFC 3339 needs an offset


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme in ("mailto", "urn", "tel")) and " " not in value


def _absolute_refs(node: Any, uri: str) -> Any:
    if isinstance(node, dict):
        out = {k: _absolute_refs(v, uri) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            out["$ref"] = uri + ref
        return out
    if isinstance(node, list):
        return [_absolute_refs(v, uri) for v in node]
    return node


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("operationId") or f"{self.method.upper()} {self.template}")

    def parameters(self, where: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.spec.get("parameters") or [] if p.get("in") == where}


class Spec:
    """One OpenAPI file, ready to validate instances of any of its schemas."""

    def __init__(self, base: str, path: Path) -> None:
        self.base = base
        self.uri = f"urn:moveworks-openapi:{path.name}"
        self.doc = _absolute_refs(yaml.safe_load(path.read_text(encoding="utf-8")), self.uri)
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource(self.uri, resource)
        self.operations: list[Operation] = []
        for template, item in self.doc["paths"].items():
            regex = "^" + re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            for method in METHODS:
                if method in item:
                    self.operations.append(Operation(method.upper(), template, re.compile(regex), item[method]))
        # literal segments win over templated ones (".../responses/stream" before ".../responses/{id}")
        self.operations.sort(key=lambda op: op.template.count("{"))
        envelope = {"type": "object", "required": ["error"], "properties": {"error": self.ref("Error")}}
        self._envelope = envelope

    def ref(self, name: str) -> dict[str, Any]:
        if name not in self.doc["components"]["schemas"]:
            raise KeyError(f"{self.base}: no schema {name}")
        return {"$ref": f"{self.uri}#/components/schemas/{name}"}

    @functools.cache  # noqa: B019 - specs live for the whole test session
    def _validator(self, schema_json: str) -> Draft202012Validator:
        return Draft202012Validator(json.loads(schema_json), registry=self.registry, format_checker=FORMATS)

    def validate(self, schema: dict[str, Any], instance: Any, where: str) -> list[str]:
        validator = self._validator(json.dumps(schema, sort_keys=True))
        problems = []
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            detail = error.message if len(error.message) < 300 else error.message[:300] + "…"
            if error.context:  # oneOf/anyOf: say what the closest branch missed
                deepest = max(error.context, key=lambda e: len(e.absolute_path))
                where_in = "/".join(str(p) for p in deepest.absolute_path)
                detail += f" [deepest miss: {where_in}: {deepest.message[:200]}]"
            problems.append(f"{self.base} {where}: {path}: {detail}")
        return problems

    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in self.operations:
            if op.method != method.upper():
                continue
            match = op.pattern.match(path)
            if match:
                return op, {k: unquote(v) for k, v in match.groupdict().items()}
        return None

    # ------------------------------------------------------------------ requests
    def check_request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
    ) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"{self.base}: no operation {method} {path}"]
        op, path_params = found
        where = f"{op.name} request"
        problems: list[str] = []
        for name, param in op.parameters("path").items():
            value = path_params.get(name)
            if not value:
                problems.append(f"{self.base} {where}: path parameter {name} is empty")
            else:
                problems += self.validate(param.get("schema") or {}, value, f"{where} path {name}")
        declared = op.parameters("query")
        seen: dict[str, int] = {}
        for name, raw in query:
            seen[name] = seen.get(name, 0) + 1
            if name not in declared:
                problems.append(f"{self.base} {where}: undeclared query parameter {name}={raw!r}")
                continue
            schema = declared[name].get("schema") or {}
            problems += self.validate(schema, _coerce(raw, schema), f"{where} query {name}")
        for name, count in seen.items():
            if count > 1:
                problems.append(f"{self.base} {where}: query parameter {name} sent {count} times")
        for name, param in declared.items():
            if param.get("required") and name not in seen:
                problems.append(f"{self.base} {where}: missing required query parameter {name}")
        lower = {k.lower(): v for k, v in headers.items()}
        for name, param in op.parameters("header").items():
            value = lower.get(name.lower())
            if value is None:
                if param.get("required"):
                    problems.append(f"{self.base} {where}: missing required header {name}")
                continue
            problems += self.validate(param.get("schema") or {}, value, f"{where} header {name}")
        auth = lower.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            problems.append(f"{self.base} {where}: Authorization is not 'Bearer <token>'")
        request_body = op.spec.get("requestBody")
        if not body:
            if request_body and request_body.get("required"):
                problems.append(f"{self.base} {where}: missing required body")
            return problems
        if not request_body:
            return problems + [f"{self.base} {where}: body sent to an operation that takes none: {body[:80]!r}"]
        ctype = lower.get("content-type", "").split(";")[0].strip().lower()
        media = request_body.get("content") or {}
        if ctype not in media:
            return problems + [f"{self.base} {where}: body Content-Type {ctype!r} not in {sorted(media)}"]
        try:
            instance = json.loads(body)
        except ValueError:
            return problems + [f"{self.base} {where}: body is not JSON"]
        return problems + self.validate(media[ctype].get("schema") or {}, instance, f"{where} body")

    # ------------------------------------------------------------------ responses
    def check_response(self, method: str, path: str, status: int, content_type: str, body: bytes | None) -> list[str]:
        found = self.operation(method, path)
        ctype = content_type.split(";")[0].strip().lower()
        if found is None:
            if status >= 400:  # a path or method the API does not have: still the error envelope
                return self._check_json(self._envelope, ctype, body, f"{method} {path} {status}")
            return [f"{self.base}: {status} answered to {method} {path}, which the spec does not have"]
        op, _ = found
        where = f"{op.name} {status}"
        declared = (op.spec.get("responses") or {}).get(str(status))
        if declared is None:
            if status >= 400:
                return self._check_json(self._envelope, ctype, body, where + " (undeclared error status)")
            return [f"{self.base} {where}: status {status} is not declared (declared: {sorted(op.spec['responses'])})"]
        media = declared.get("content") or {}
        if not media:
            return [] if not body else [f"{self.base} {where}: body where the spec declares none"]
        if ctype not in media:
            return [f"{self.base} {where}: Content-Type {ctype!r} not in {sorted(media)}"]
        if ctype != "application/json":
            return []  # the event stream: its events are checked one by one (check_stream_event)
        return self._check_json(media[ctype].get("schema") or {}, ctype, body, where)

    def _check_json(self, schema: dict[str, Any], ctype: str, body: bytes | None, where: str) -> list[str]:
        if ctype != "application/json":
            return [f"{self.base} {where}: Content-Type {ctype!r} is not application/json"]
        try:
            instance = json.loads(body or b"")
        except ValueError:
            return [f"{self.base} {where}: body is not JSON: {(body or b'')[:80]!r}"]
        return self.validate(schema, instance, where)

    def check_stream_event(self, event: str, data: Any) -> list[str]:
        name = STREAM_DATA.get(event)
        if name is None:
            return [f"{self.base} stream: unknown event name {event!r}"]
        problems = self.validate(self.ref("StreamEventType"), event, "stream event name")
        problems += self.validate(self.ref(name), data, f"stream {event} data")
        if event != "ERROR" and isinstance(data, dict) and data.get("event_type") != event:
            problems.append(f"{self.base} stream {event}: data.event_type is {data.get('event_type')!r}")
        return problems


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    """A query string value as the type its schema declares (left a string when it does not parse)."""
    kind = schema.get("type")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


@functools.cache
def spec_for(base: str) -> Spec:
    return Spec(base, SPEC_DIR / SPEC_FILES[base])


def split_base(path: str) -> tuple[str, str] | None:
    """('/assistant/v1', '/conversations/…') for a path under a base that has a spec, else None."""
    for base in SPEC_FILES:
        if path == base or path.startswith(base + "/"):
            return base, path[len(base):] or "/"
    return None


def check_request(method: str, url_path: str, query: list[tuple[str, str]], headers: dict[str, str],
                  body: bytes | None) -> list[str]:
    found = split_base(url_path)
    if found is None:
        return [f"request to {url_path}: no published spec for that base"]
    base, path = found
    return spec_for(base).check_request(method, path, query, headers, body)


def check_response(method: str, url_path: str, status: int, content_type: str, body: bytes | None) -> list[str]:
    found = split_base(url_path)
    if found is None:
        return []
    base, path = found
    return spec_for(base).check_response(method, path, status, content_type, body)


def check_stream_event(url_path: str, event: str, data: Any) -> list[str]:
    found = split_base(url_path)
    if found is None:
        return []
    return spec_for(found[0]).check_stream_event(event, data)


class SpecWatch:
    """A `Simulator.taps` observer: checks everything the simulator sends on a base with a spec.

    HTML error pages (the `server_error` fault with `html=True` imitates a proxy in front of the API)
    are outside the API's contract and are skipped. `problems` lists every violation seen.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked: dict[str, int] = {}

    def __call__(self, item: Any) -> None:
        if split_base(item.path) is None:
            return
        if item.event is not None:
            found = check_stream_event(item.path, item.event, item.data)
            key = f"event {item.event}"
        elif item.status >= 500 and item.content_type.startswith("text/html"):
            return
        else:
            found = check_response(item.method, item.path, item.status, item.content_type, item.body)
            key = f"{item.method} {item.status}"
        self.checked[key] = self.checked.get(key, 0) + 1
        self.problems += [f"{p}  <- {item.method} {item.path}" for p in found]
