"""Prometheus metrics, exposed on `GET /metrics` in the text format.

One registry for the process; labels are low-cardinality (platform, outcome, endpoint class),
never user or thread ids.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "render"]

REGISTRY = CollectorRegistry(auto_describe=True)

ANSWERS = Counter(
    "bridge_answers", "Answers finished, by platform and outcome", ["platform", "outcome"],
    registry=REGISTRY,
)
INBOUND = Counter(
    "bridge_inbound_messages", "Inbound questions accepted", ["platform"], registry=REGISTRY
)
INBOUND_DUPLICATES = Counter(
    "bridge_inbound_duplicates", "Redelivered inbound messages dropped", ["platform"],
    registry=REGISTRY,
)
FIRST_TEXT_SECONDS = Histogram(
    "bridge_first_text_seconds",
    "From the first answer delta to the first visible answer text",
    ["platform"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
PLATFORM_WRITES = Counter(
    "bridge_platform_writes", "Calls that write to a chat platform", ["platform", "op"],
    registry=REGISTRY,
)
PLATFORM_RATE_LIMITED = Counter(
    "bridge_platform_rate_limited", "429s received from a chat platform", ["platform"],
    registry=REGISTRY,
)
MOVEWORKS_REQUESTS = Counter(
    "bridge_moveworks_requests", "Requests to Moveworks by endpoint and status",
    ["endpoint", "status"], registry=REGISTRY,
)
ACTIVE_ANSWERS = Gauge("bridge_active_answers", "Answers streaming now", registry=REGISTRY)
POLLER_ACTIVE = Gauge("bridge_poller_active", "1 while this process is the one polling Moveworks events",
                      registry=REGISTRY)
QUEUED_QUESTIONS = Gauge("bridge_queued_questions", "Questions this process has taken from the durable queue",
                         registry=REGISTRY)
EVENTS_DELIVERED = Counter(
    "bridge_events_delivered", "Moveworks events posted into chat", ["platform"], registry=REGISTRY
)
EVENTS_SKIPPED = Counter(
    "bridge_events_skipped", "Moveworks events explicitly not posted, by reason", ["reason"],
    registry=REGISTRY,
)
EVENT_LAG_SECONDS = Histogram(
    "bridge_event_delivery_lag_seconds",
    "From an event's created_at to its post in chat",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
POLLS = Counter(
    "bridge_polls", "Event polls by identity class", ["cls"], registry=REGISTRY
)
POLL_ERRORS = Counter("bridge_poll_errors", "Failed event polls", ["kind"], registry=REGISTRY)
EVENT_LOOP_LAG = Gauge(
    "bridge_event_loop_lag_seconds",
    "Latest event-loop lag: how late the watchdog's 0.25 s sleep woke up (serve only)",
    registry=REGISTRY,
)
EVENT_LOOP_LAG_SECONDS = Histogram(
    "bridge_event_loop_lag_observed_seconds",
    "Every event-loop lag measurement of the watchdog",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
HTTP_CONNECTIONS = Gauge(
    "bridge_http_connections_open", "Inbound HTTP connections open now (serve only)", registry=REGISTRY
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "bridge_http_connections_refused",
    "Inbound connections closed at once because the connection cap was reached",
    registry=REGISTRY,
)
HTTP_CONNECTIONS_EVICTED = Counter(
    "bridge_http_connections_evicted",
    "Idle or slow inbound connections closed to make room for a new one at the cap",
    registry=REGISTRY,
)
HTTP_SLOW_REQUESTS = Counter(
    "bridge_http_slow_requests",
    "Requests whose headers (connection closed) or body (408) did not arrive in time",
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
