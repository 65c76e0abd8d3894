# moveworks-bridge: the container image of `moveworks-bridge serve` (and of `poll` and `simulator`).
#
# NOT BUILT OR RUN HERE: no Docker daemon and no container registry are reachable from the machines
# this project is developed and tested on, so this image has never been built or started by CI.
# CI checks this file statically only (hadolint, plus tests/test_container_files.py), and runs the same
# topology (two `serve` processes, one PostgreSQL, the simulator) as plain processes in the test suite.
#
#   docker build -t moveworks-bridge:local .
#   docker run --rm -p 3978:3978 --env-file bridge.env --stop-timeout 30 moveworks-bridge:local
#
# Secrets (Slack, Teams, Moveworks, the database password) come from the environment at run time
# (`--env-file`, compose `${VAR}` interpolation, an orchestrator's secret store); none is built in.
# SQLite (the default, one host): mount a volume on /data (BRIDGE_DB=/data/bridge.db). Several
# replicas: BRIDGE_DB=postgresql://... (see docker-compose.yml). `BRIDGE_SHUTDOWN_GRACE` (20 s) is how
# long in-flight answers get after SIGTERM: give the container a longer stop timeout (30 s above).

# --- build: install the package and its runtime dependencies (no dev extras) into a venv -------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

# pip byte-compiles what it installs: the runtime user cannot write /opt/venv, so it must be done here.
RUN python -m venv /opt/venv

WORKDIR /src
# Only what the package is built from: no .env, database, test or CI file can reach the image.
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY adapters ./adapters
RUN /opt/venv/bin/pip install --no-cache-dir .

# --- runtime: the venv on a clean slim image, running as an unprivileged user ---------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="moveworks-bridge" \
      org.opencontainers.image.description="The Moveworks AI assistant in Slack and Microsoft Teams" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/venv/bin:${PATH}" \
    PORT=3978 \
    BRIDGE_DB=/data/bridge.db

RUN groupadd --system --gid 10001 bridge \
    && useradd --system --no-log-init --uid 10001 --gid bridge --home-dir /data --shell /usr/sbin/nologin bridge \
    && mkdir -p /data \
    && chown bridge:bridge /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /data
USER 10001:10001

EXPOSE 3978

# Liveness with the interpreter already in the image (no curl): exits non-zero unless /healthz is 2xx.
# No proxy: an HTTP(S)_PROXY set for outbound calls must not capture this loopback probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3978'), timeout=3)"]

# Exec form: `moveworks-bridge` is PID 1 and gets SIGTERM itself (it drains, then exits).
STOPSIGNAL SIGTERM
CMD ["moveworks-bridge", "serve"]
