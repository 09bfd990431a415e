"""The HTTP pieces every sidecar shares: one error shape, and request metrics per route."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    """One error shape for every sidecar: {"error": {"code", "message", ...}}."""
    return web.json_response(
        {"error": {"code": code, "message": message, **extra}}, status=status, headers=headers
    )


class InvalidJSON(ValueError):
    """Text that is not JSON, not UTF-8, or nested too deeply to parse."""


def parse_json(data: str | bytes) -> Any:
    """`json.loads` that raises only `InvalidJSON`: deep nesting (`[[[[...`) would otherwise be a
    RecursionError, which no handler expects."""
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidJSON("nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidJSON(str(e)) from None


class SidecarError(Exception):
    """A request the sidecar refuses. Raised from a handler, it becomes the `json_error` answer.

    `message` is for people: say what is wrong and what to do, never a Python repr.
    """

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> web.Response:
        return json_error(self.status, self.code, str(self), headers=self.headers, **self.extra)


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
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource else "unmatched"
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
