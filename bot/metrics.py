"""Prometheus metrics and a health check, served on an optional loopback HTTP port ([metrics] listen)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from bot.health import DaemonStatus
from state.reasons import failure_reason

log = structlog.get_logger(__name__)


@dataclass
class Readings:
    """Callables read at scrape time, so gauges always show the current state rather than a cached copy."""

    status: Callable[[], DaemonStatus | None] = lambda: None  # the gauges and /healthz (bot/health.py)
    events_by_kind: Callable[[], dict[str, int]] = dict
    failures_by_reason: Callable[[], dict[str, int]] = dict  # label (state.reasons.failure_reason) -> count
    job_results: Callable[[], dict[tuple[str, str], int]] = dict  # (job, result) -> runs
    planfix_requests: Callable[[], dict[tuple[str, str], int]] = dict  # (method, code) -> requests
    items_skipped: Callable[[], dict[str, int]] = dict  # method -> malformed list items left out


class _StateCollector(Collector):
    def __init__(self, readings: Readings):
        self.readings = readings

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        status = self.readings.status()  # read once per scrape
        values = {} if status is None else {
            "planfix_bot_outbox_depth": ("Messages waiting to be sent.", status.pending),
            "planfix_bot_oldest_undelivered_seconds": (
                "Age of the oldest message not yet delivered.", status.oldest_pending_seconds),
            "planfix_bot_planfix_budget_remaining": (
                "Planfix requests left today.", status.budget.remaining if status.budget else None),
            "planfix_bot_feed_lag_seconds": (
                "Seconds since the last successful poll of the Planfix action feed.", status.lag_seconds),
            "planfix_bot_tasks_set_aside": (
                "Tasks Planfix refuses to show one by one (no access, a malformed card): not watched until readable.",
                status.set_aside_count),
            "planfix_bot_healthy": ("1 when /healthz answers 200: a fresh feed poll and a writable state file.",
                                    int(status.healthy)),
        }
        for name, (doc, value) in values.items():
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))
        # Totals kept in the state file, so they survive restarts (Prometheus handles resets anyway).
        events = CounterMetricFamily("planfix_bot_events", "Detected task events, by kind.", labels=["kind"])
        for kind, count in sorted(self.readings.events_by_kind().items()):
            events.add_metric([kind], count)
        yield events
        failed = CounterMetricFamily(
            "planfix_bot_messages_failed", "Notifications given up, by reason.", labels=["reason"])
        for label, count in sorted(self.readings.failures_by_reason().items()):
            failed.add_metric([label], count)
        yield failed
        yield CounterMetricFamily(
            "planfix_bot_messages_sent", "Telegram messages sent since start.", value=status.sent if status else 0)
        polls = CounterMetricFamily("planfix_bot_job_runs", "Background job runs (feed poll, sweep, deadlines), by "
                                    "result.", labels=["job", "result"])
        for (job, result), count in sorted(self.readings.job_results().items()):
            polls.add_metric([job, result], count)
        yield polls
        requests = CounterMetricFamily("planfix_bot_planfix_requests", "Planfix API requests since start, by method "
                                       "and outcome (ok, an error code, or a failure kind).", labels=["method", "code"])
        for (method, code), count in sorted(self.readings.planfix_requests().items()):
            requests.add_metric([method, code], count)
        yield requests
        skipped = CounterMetricFamily("planfix_bot_planfix_items_skipped", "Malformed items left out of Planfix list "
                                      "answers since start, by method.", labels=["method"])
        for method, count in sorted(self.readings.items_skipped().items()):
            skipped.add_metric([method], count)
        yield skipped


@dataclass
class Metrics:
    """Counters the daemon increments, plus gauges read from its state on each scrape."""

    readings: Readings = field(default_factory=Readings)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.registry.register(_StateCollector(self.readings))
        self.started = time.monotonic()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def make_app(metrics: Metrics) -> web.Application:
    async def metrics_handler(request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_handler(request: web.Request) -> web.Response:
        status = metrics.readings.status()
        ok, detail = status.health() if status is not None else (True, "ok")
        return web.Response(status=200 if ok else 503, text=detail + "\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(metrics: Metrics, listen: str) -> web.AppRunner:
    """Start the HTTP endpoint; the caller keeps the runner and calls `cleanup()` on shutdown."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(make_app(metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics.listening", host=host, port=port)
    return runner


__all__ = ["Metrics", "Readings", "failure_reason", "make_app", "parse_listen", "serve"]
