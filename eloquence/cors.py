"""CORS for the API: an explicit allow-list of browser origins (ELOQUENCE_CORS_ORIGINS), no wildcard.

An origin on the list gets the CORS headers (and its preflight a 204); any other origin gets none
(its preflight a 403), so a browser page elsewhere cannot read the API's answers. Requests without
an Origin (app backends, curl) are not affected: CORS protects browsers, the API key protects the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from sidecar_common.http import json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-Id"
EXPOSED_HEADERS = "Retry-After, X-Request-Id"
PREFLIGHT_MAX_AGE_S = "600"


def parse_origins(raw: str) -> frozenset[str]:
    origins = frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if "*" in origins:
        raise ValueError("ELOQUENCE_CORS_ORIGINS is an explicit list of origins; `*` is not accepted")
    bad = [o for o in origins if "://" not in o]
    if bad:
        raise ValueError(f"ELOQUENCE_CORS_ORIGINS: an origin is scheme://host[:port], not {bad[0]!r}")
    return origins


def cors_middleware(origins: Iterable[str]) -> Middleware:
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if origin not in allowed:
                return json_error(403, "origin_not_allowed", "this origin may not call the API")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    return middleware
