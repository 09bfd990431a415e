"""The one server skeleton of the sidecars: a sidecar brings its handlers, the skeleton the rest.

A sidecar subclasses `SidecarAPI` (its routes, its /health fields, its async start-up) and
`create_app` wraps it: GET /health, GET /metrics, request metrics, the JSON error body for
everything a handler raises, and readiness. `run_sidecar` (cli.py) loads the model before it
builds the app, the API's `lifespan` warms it up, and only then does the server listen.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .http import Handler, HTTPMetrics, SidecarError, json_error
from .openapi import openapi_document
from .request_policy import echo_request_id, request_policy
from .settings import SidecarSettings

logger = logging.getLogger("sidecar")

SETTINGS = web.AppKey("sidecar_settings", SidecarSettings)
RESPONSE_STARTED = web.RequestKey("sidecar_response_started", bool)
"""Set once a response's headers are on their way: from then on an error can no longer be a JSON body."""

_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class SidecarAPI(abc.ABC):
    """What is a sidecar's own: its routes, its /health fields, its async start-up and shut-down."""

    metrics_prefix: ClassVar[str]
    """Prefix of the request metrics, e.g. `azure_tts` gives `azure_tts_http_requests_total`."""
    max_body_bytes: ClassVar[int] = 1024 * 1024
    """Largest body `request.read()`/`request.json()` accept; more is a 413 `too_large`."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.registry = registry
        """The sidecar's own metrics; /metrics serves them with the request metrics added."""

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The sidecar's endpoints (API.md), beside the skeleton's /health and /metrics."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """The sidecar's own /health fields; the skeleton adds `status` and `ready`."""

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """Async start-up before the `yield` (warm-up, queues: the server listens only after it),
        clean-up after it, once the server has stopped."""
        yield

    def openapi_paths(self) -> dict[str, Any]:
        """The sidecar's HTTP operations for `GET /openapi.json` (sidecar_common/openapi.py)."""
        return {}

    async def shutdown(self) -> None:  # noqa: B027 - optional, most sidecars have nothing to close
        """The server is stopping: close what keeps a handler open for good (websockets)."""


def create_app(api: SidecarAPI, *, settings: SidecarSettings) -> web.Application:
    """The aiohttp app of one sidecar around an API whose model or engines are already loaded."""
    registry = api.registry
    http_metrics = HTTPMetrics(registry, api.metrics_prefix)
    app = web.Application(
        middlewares=_middlewares(http_metrics, settings), client_max_size=api.max_body_bytes
    )
    app[SETTINGS] = settings
    readiness = _Readiness()
    app.on_response_prepare.append(_on_response_prepare)
    app.on_response_prepare.append(echo_request_id)
    # Order matters: the API's start-up runs first, and the service is ready only once it is done.
    app.cleanup_ctx.append(api.lifespan)
    app.cleanup_ctx.append(readiness.lifespan)

    async def stop(_: web.Application) -> None:
        readiness.state = "stopping"
        await api.shutdown()

    async def health(_: web.Request) -> web.Response:
        if readiness.state != "ok":
            return web.json_response({"status": readiness.state, "ready": False}, status=503)
        return web.json_response({"status": "ok", "ready": True, **api.health()})

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(
            openapi_document(
                title=api.metrics_prefix.replace("_", "-"),
                version=_version(),
                description=(api.__doc__ or "").strip().splitlines()[0] if api.__doc__ else "",
                paths=api.openapi_paths(),
                secured=bool(settings.sidecar_api_key),
            )
        )

    app.on_shutdown.append(stop)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_routes(api.routes())
    return app


async def open_websocket(
    request: web.Request, *, heartbeat: float, max_msg_size: int
) -> web.WebSocketResponse:
    """The websocket of a `WS` endpoint, opened; a plain HTTP request gets a 400 that says so."""
    ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=max_msg_size)
    if not ws.can_prepare(request).ok:
        raise SidecarError(
            400, "invalid_request", f"{request.path} is a websocket: open it with a websocket client"
        )
    await ws.prepare(request)
    return ws


def _middlewares(http_metrics: HTTPMetrics, settings: SidecarSettings) -> list[Middleware]:
    """The chain every request passes, outermost first: request metrics, JSON errors, then the
    request policy (request_policy.py: the optional shared key SIDECAR_API_KEY, the X-Request-Id,
    one log line). Every route of every sidecar, websocket upgrades included, gets them; a
    refusal is counted in the metrics and has the standard error body."""
    return [http_metrics.middleware, json_errors, request_policy(settings.sidecar_api_key)]


async def _on_response_prepare(request: web.Request, _: web.StreamResponse) -> None:
    request[RESPONSE_STARTED] = True


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever a handler raises becomes the standard JSON error body, never a Python repr or an
    aiohttp text page. Once a response has started, the error propagates: aiohttp cuts it short."""
    try:
        return await handler(request)
    except SidecarError as e:
        if request.get(RESPONSE_STARTED):
            raise
        return e.response()
    except web.HTTPException as e:
        if e.status < 400 or request.get(RESPONSE_STARTED):
            raise
        return _http_error(request, e)
    except ConnectionResetError:
        raise  # the client went away: nobody to answer
    except Exception:
        if request.get(RESPONSE_STARTED):
            raise
        logger.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal", "internal error; the service log has the details")


def _http_error(request: web.Request, error: web.HTTPException) -> web.Response:
    if error.status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif error.status == 405:
        message = f"{request.method} is not allowed on {request.path}"
    else:
        message = error.text or error.reason
    headers = {name: value for name in ("Allow", "Retry-After") if (value := error.headers.get(name))}
    return json_error(error.status, _HTTP_CODES.get(error.status, "http_error"), message, headers=headers)


class _Readiness:
    """`starting` until the API's start-up is done, `ok` while serving, `stopping` from shutdown on."""

    def __init__(self) -> None:
        self.state = "starting"

    async def lifespan(self, _: web.Application) -> AsyncIterator[None]:
        self.state = "ok"
        yield


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eloquence")
    except PackageNotFoundError:
        return "unknown"
