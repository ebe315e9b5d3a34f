"""An optional Prometheus endpoint, started by `cervantes serve` when `[metrics] port` > 0.

Commands report each request through `observe(fields)`, with the fields they log it with. While
metrics are off that is one global lookup, and prometheus_client is never imported.
"""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

from bot.chat import buttons
from bot.chat.parsing import COMMANDS
from config import MetricsSection

log = logging.getLogger(__name__)

# Label values only from fixed sets, never from what users type: each new value is a series kept forever
COMMAND_LABELS = frozenset((*COMMANDS, *buttons.LABELS, "inline"))
OUTCOME_LABELS = frozenset(("ok", "busy", "timeout", "error", "limited", "limited_silent", "superseded", "stopping"))
DELIVERY_LABELS = frozenset(("delivered", "partial", "undelivered", "unconfirmed", "stopping", "unknown"))
SCOPE_LABELS = frozenset(("bot", "chat", "group"))


def _label(value, known: frozenset) -> str:
    return value if value in known else "other"

LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)  # a 300-character reply takes seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Metrics:
    def __init__(self, registry, service):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("cervantes_requests", "Requests by command and outcome (ok, busy, "
                                "timeout, error, limited, limited_silent, stopping; inline: superseded; "
                                "anything else: other)",
                                ["command", "outcome"], registry=registry)
        self.latency = Histogram("cervantes_request_latency_seconds", "From a request to its reply's "
                                 "last character", buckets=LATENCY_BUCKETS_S, registry=registry)
        self.batch_size = Histogram("cervantes_batch_size", "Most rows a request shared a model call "
                                    "with, itself included", buckets=BATCH_BUCKETS, registry=registry)
        self.characters = Counter("cervantes_characters_generated", "Characters generated",
                                  registry=registry)
        self.deliveries = Counter("cervantes_deliveries", "Generated replies by how their delivery "
                                  "went (delivered, partial, undelivered, unconfirmed, stopping)", ["outcome"],
                                  registry=registry)
        self.first_visible = Histogram("cervantes_first_visible_seconds", "From a command to the first "
                                       "text of its reply in the chat", buckets=LATENCY_BUCKETS_S,
                                       registry=registry)
        self.final_text = Histogram("cervantes_final_text_seconds", "From a command to its reply's "
                                    "final text in the chat", buckets=LATENCY_BUCKETS_S, registry=registry)
        self.throttled = Counter("cervantes_throttled", "429 answers from the chat platform, by scope "
                                 "(bot, chat, group)", ["scope"], registry=registry)
        queue = Gauge("cervantes_queue_depth", "Requests waiting for the generation worker",
                      registry=registry)
        queue.set_function(lambda: service.stats().waiting)  # read at each scrape

    def observe(self, fields: dict) -> None:
        self.requests.labels(_label(fields["command"], COMMAND_LABELS),
                             _label(fields["outcome"], OUTCOME_LABELS)).inc()
        if "latency_ms" in fields:  # absent when the request never ran (busy)
            self.latency.observe(fields["latency_ms"] / 1000)
        if fields.get("batch_size"):
            self.batch_size.observe(fields["batch_size"])
        if fields.get("characters"):
            self.characters.inc(fields["characters"])
        if "delivery" in fields:
            self.deliveries.labels(_label(fields["delivery"], DELIVERY_LABELS)).inc()
        if "first_visible_ms" in fields:
            self.first_visible.observe(fields["first_visible_ms"] / 1000)
        if "final_ms" in fields:
            self.final_text.observe(fields["final_ms"] / 1000)


_active: _Metrics | None = None
_server = None


def observe(fields: dict) -> None:
    """Count one request from its log fields (command, outcome, latency_ms, batch_size, characters)."""
    if _active is None:
        return
    try:
        _active.observe(fields)
    except Exception:  # a metrics bug must not cost a user their reply
        log.exception("metrics: could not count %s", fields)


def observe_throttled(scope: str) -> None:
    """Count one 429 from the chat platform: scope is "bot", "chat" or "group"."""
    if _active is not None:
        _active.throttled.labels(_label(scope, SCOPE_LABELS)).inc()


def start(service, address: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
    """Serve /metrics on address:port (0: any free port) and start counting; the bound address."""
    global _active, _server
    if _server is not None:
        raise RuntimeError("the metrics endpoint is already started")
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()  # our own: a restart in the same process registers afresh
    metrics = _Metrics(registry, service)
    _server, _ = start_http_server(port, address, registry=registry)
    _active = metrics
    return _server.server_address[:2]


def stop() -> None:
    global _active, _server
    server, _active, _server = _server, None, None
    if server is not None:
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def serving(section: MetricsSection, service) -> AsyncIterator[None]:
    """The endpoint while the block runs, if `section.port` > 0; otherwise nothing at all."""
    if section.port <= 0:
        yield
        return
    host, port = start(service, section.address, section.port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        stop()
