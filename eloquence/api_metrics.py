"""Prometheus metrics and X-Request-Id for `eloquence api` (GET /metrics, open like the health check).

eloquence_api_requests_total{route,method,status}   every request, 401 and 429 included
eloquence_api_request_seconds{route}                latency histogram
eloquence_api_unauthorized_total{code}              401/403 refusals (missing, invalid, expired)
eloquence_api_rate_limited_total{kind}              429s, by caller kind (api_key, user, anonymous)
eloquence_api_tokens_issued_total{endpoint,caller}  LiveKit tokens handed out
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

logger = logging.getLogger("eloquence.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class APIMetrics:
    """The API's own registry (one per app, so tests can build several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "eloquence_api_requests", "API requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "eloquence_api_request_seconds",
            "API request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.unauthorized = Counter(
            "eloquence_api_unauthorized",
            "Requests refused for their credentials",
            ["code"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "eloquence_api_rate_limited",
            "Requests refused by a rate limit (429)",
            ["kind"],
            registry=self.registry,
        )
        self.tokens_issued = Counter(
            "eloquence_api_tokens_issued",
            "LiveKit tokens issued",
            ["endpoint", "caller"],
            registry=self.registry,
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: counts every answer, takes (or mints) the X-Request-Id and echoes it."""
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        resource = request.match_info.route.resource
        route = resource.canonical if resource else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        except web.HTTPException as e:
            status = e.status
            e.headers["X-Request-Id"] = request_id
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.requests.labels(route, request.method, str(status)).inc()
            self.latency.labels(route).observe(elapsed)
            logger.debug(
                "%s %s → %d in %.1f ms [%s]", request.method, route, status, elapsed * 1000, request_id
            )

    async def handler(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response
