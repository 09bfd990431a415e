"""aiohttp plumbing shared by the sidecars: /health, /metrics, request metrics, JSON errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

HealthProbe = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

logger = logging.getLogger("sidecar")


def json_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """One error shape for every sidecar: {"error": {"code", "message", ...}}."""
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status, headers=headers)


class HTTPMetrics:
    """Request count and latency per route, registered on the service's own registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.requests = Counter(
            f"{prefix}_http_requests", "HTTP requests", ["route", "method", "status"], registry=registry
        )
        self.latency = Histogram(
            f"{prefix}_http_request_seconds",
            "HTTP request latency (until headers for streamed responses)",
            ["route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            self.requests.labels(route, request.method, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - start)


def add_health_and_metrics(app: web.Application, *, registry: CollectorRegistry, health: HealthProbe) -> None:
    """GET /health (200 when ready, 503 otherwise) and GET /metrics (Prometheus text)."""

    async def health_handler(_: web.Request) -> web.Response:
        ready, body = await health()
        return web.json_response({"status": "ok" if ready else "starting", "ready": ready, **body}, status=200 if ready else 503)

    async def metrics_handler(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    app.router.add_get("/health", health_handler)
    app.router.add_get("/metrics", metrics_handler)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
