"""Prometheus metrics of one app (its own registry, so several apps in one process never
collide): request latency by route, and, read from the store at scrape time, campaigns by
status, the queue's length and its GPU demand, and the restarts in the campaigns' histories."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.store import Store


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "pdistill_campaigns", "Campaigns in the store by status", labels=["status"]
        )
        for status, n in self.store.status_counts().items():
            by_status.add_metric([status.value], n)
        yield by_status
        queue = self.store.queue()
        yield GaugeMetricFamily(
            "pdistill_queue_length", "Queued campaigns waiting to start", value=len(queue)
        )
        yield GaugeMetricFamily(
            "pdistill_queue_gpus",
            "GPUs the queued campaigns need",
            value=sum(c.gpus for c in queue),
        )
        notes, requeues = self.store.restart_counts()
        yield CounterMetricFamily(
            "pdistill_training_restarts",
            "Times the teacher's or a round's training or evaluation started again (a process, "
            "Train worker or node lost; a campaign resumed), from the campaigns' histories",
            value=notes,
        )
        yield CounterMetricFamily(
            "pdistill_campaign_requeues",
            "Campaigns sent back to the queue because their driver was lost or never came up",
            value=requeues,
        )


class Metrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "pdistill_http_request_duration_seconds",
            "HTTP request latency (until the response starts) by route",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(StoreCollector(store))


class LatencyMiddleware:
    """Times each HTTP request to its first response message, labelled by the route template
    (not the raw path, which would make one series per campaign id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                route = scope.get("route")
                metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
                if metrics is not None:
                    metrics.latency.labels(
                        scope["method"],
                        getattr(route, "path", "unmatched"),
                        str(status[0]),
                    ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_timed)
