"""`eloquence api`: mints LiveKit tokens, creates rooms and dispatches the coach (aiohttp).

    POST /api/livekit/token             {exercise_type, user_id} → {token, livekit_url, room_name}
    POST /api/livekit/create-room       {agent_id | exercise_type} → {room_name, access_token, livekit_url}
    POST /api/livekit/job-notification  {agent_id, room_name} → {dispatch_id, room_name, agent_name}
    GET  /api/livekit/health            → LiveKit reachability + each sidecar's health
    GET  /api/openapi.json              → the OpenAPI 3.1 document
    GET  /metrics                       → Prometheus metrics (eloquence/api_metrics.py)

Every other /api route needs `Authorization: Bearer <API key or user JWT>` (eloquence/auth.py);
rate limits count against that authenticated caller (eloquence/rate_limits.py); browsers need
their origin on ELOQUENCE_CORS_ORIGINS (eloquence/cors.py).
An unknown `exercise_type` runs the default exercise, as the agent does, and the 200 response then
adds `exercise_type` (what runs) and `warnings`.
Errors share the sidecars' shape: `{"error": {"code", "message", ...}}`. The API secret only
signs tokens; it is never returned nor logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from livekit import api as lkapi

from sidecar_common.http import json_error

from .api_metrics import APIMetrics
from .api_openapi import openapi_document
from .api_requests import (
    AUTH_KEY,
    CALLER,
    HTTP_KEY,
    LIMITS_KEY,
    MAX_BODY_BYTES,
    METRICS_KEY,
    REGISTRY_KEY,
    ROOM_NAME_RE,
    SETTINGS_KEY,
    RequestError,
    choose_exercise,
    exercise_config,
    identifier,
    json_body,
    rate_limit,
    request_user_id,
)
from .auth import Authenticator, AuthError
from .cors import cors_middleware, parse_origins
from .exercises import DEFAULT_EXERCISE, REGISTRY, ExerciseRegistry
from .livekit_rooms import call_livekit, http_url, livekit_api, random_suffix, user_token
from .metadata import build_metadata
from .playground.web import add_playground_routes
from .rate_limits import RateLimits
from .services import AZURE_TTS, LOCAL_LLM, WHISPER_STT
from .settings import AppSettings

logger = logging.getLogger("eloquence.api")

HEALTH_PROBE_TIMEOUT_S = 0.8
OPEN_PATHS = frozenset({"/api/livekit/health", "/api/openapi.json", "/metrics"})
OPEN_PREFIXES = ("/playground",)
"""Open here: probes, scrapers, the API description, and the playground (its page holds no secret;
its /playground/api/* calls check the key themselves). Every other route needs credentials."""


async def token_handler(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    caller = await rate_limit(request)
    body = await json_body(request)
    user_id = request_user_id(caller, body, required=True)
    assert user_id is not None
    exercise = choose_exercise(request, body, default=None)
    exercise_type = exercise.name
    metadata = build_metadata(exercise_type=exercise_type, user_id=user_id, config=exercise_config(body))
    room_name = f"eloquence_{exercise_type}_{random_suffix()}"
    token = user_token(settings, identity=user_id, room_name=room_name, metadata=metadata, dispatch=True)
    request.app[METRICS_KEY].tokens_issued.labels("token", caller.kind).inc()
    logger.info(
        "token issued: user=%s exercise=%s room=%s caller=%s", user_id, exercise_type, room_name, caller.label
    )
    return web.json_response(
        {
            "token": token,
            "livekit_url": settings.livekit_url,
            "room_name": room_name,
            **exercise.response_fields(),
        }
    )


async def create_room_handler(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    caller = await rate_limit(request)
    body = await json_body(request)
    agent_id = identifier(body, "agent_id", required=False)
    user_id = request_user_id(caller, body, required=False)
    if agent_id is None and body.get("exercise_type") is None:
        raise RequestError(400, "invalid_request", "send `agent_id` or `exercise_type`", field="agent_id")
    exercise = choose_exercise(request, body, default=DEFAULT_EXERCISE)
    exercise_type = exercise.name
    agent_id = agent_id or exercise_type
    room_name = f"voicebot_{agent_id}_{random_suffix()}"
    identity = user_id or f"user_{random_suffix()}"
    metadata = build_metadata(exercise_type=exercise_type, user_id=user_id, config=exercise_config(body))

    lk = livekit_api(settings, request.app[HTTP_KEY])
    await call_livekit(
        "create the room",
        lk.room.create_room(
            lkapi.CreateRoomRequest(
                name=room_name,
                metadata=metadata,
                empty_timeout=300,
                agents=[lkapi.RoomAgentDispatch(agent_name=settings.livekit_agent_name, metadata=metadata)],
            )
        ),
    )
    token = user_token(settings, identity=identity, room_name=room_name, metadata=metadata, dispatch=False)
    request.app[METRICS_KEY].tokens_issued.labels("create-room", caller.kind).inc()
    logger.info(
        "room created: %s (agent_id=%s exercise=%s caller=%s)",
        room_name,
        agent_id,
        exercise_type,
        caller.label,
    )
    return web.json_response(
        {
            "room_name": room_name,
            "access_token": token,
            "livekit_url": settings.livekit_url,
            **exercise.response_fields(),
        }
    )


async def job_notification_handler(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    caller = await rate_limit(request)
    body = await json_body(request)
    agent_id = identifier(body, "agent_id", required=True)
    user_id = request_user_id(caller, body, required=False)
    room_name = body.get("room_name")
    if not isinstance(room_name, str) or not ROOM_NAME_RE.match(room_name):
        raise RequestError(
            400,
            "invalid_request",
            "`room_name` is required: 1-128 letters, digits, `_ . -`",
            field="room_name",
        )
    exercise = choose_exercise(request, body, default=DEFAULT_EXERCISE)
    metadata = build_metadata(exercise_type=exercise.name, user_id=user_id, config=exercise_config(body))

    lk = livekit_api(settings, request.app[HTTP_KEY])
    dispatch = await call_livekit(
        "dispatch the agent",
        lk.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(
                agent_name=settings.livekit_agent_name, room=room_name, metadata=metadata
            )
        ),
    )
    logger.info("agent dispatched: room=%s agent_id=%s dispatch=%s", room_name, agent_id, dispatch.id)
    return web.json_response(
        {
            "dispatch_id": dispatch.id,
            "room_name": room_name,
            "agent_name": settings.livekit_agent_name,
            **exercise.response_fields(),
        }
    )


async def _probe(session: aiohttp.ClientSession, url: str, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            detail: Any = (await resp.text())[:500]
            with contextlib.suppress(ValueError):
                detail = json.loads(detail)
            return {
                "url": url,
                "healthy": resp.status == 200,
                "status": resp.status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "detail": detail,
            }
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return {"url": url, "healthy": False, "error": f"{type(e).__name__}: {e}"[:300]}


async def health_handler(request: web.Request) -> web.Response:
    """Always 200 while the API itself is up; `status` says whether everything behind it is."""
    settings = request.app[SETTINGS_KEY]
    session = request.app[HTTP_KEY]
    targets = {
        "livekit": http_url(settings.livekit_server_url).rstrip("/") + "/",
        WHISPER_STT.name: settings.whisper_stt_url.rstrip("/") + WHISPER_STT.health_path,
        AZURE_TTS.name: settings.azure_tts_url.rstrip("/") + AZURE_TTS.health_path,
    }
    if not settings.mistral_api_key and not settings.mistral_base_url:
        targets[LOCAL_LLM.name] = settings.local_llm_url.rstrip("/") + LOCAL_LLM.health_path
    names = list(targets)
    # under a second in all: `eloquence up` and load balancers poll this with a 1 s timeout
    results = await asyncio.gather(*(_probe(session, targets[n], HEALTH_PROBE_TIMEOUT_S) for n in names))
    report = dict(zip(names, results, strict=True))
    livekit = report.pop("livekit")
    healthy = livekit["healthy"] and all(r["healthy"] for r in report.values())
    return web.json_response(
        {
            "status": "ok" if healthy else "degraded",
            "livekit": {**livekit, "reachable": livekit["healthy"]},
            "services": report,
            "agent_name": settings.livekit_agent_name,
        }
    )


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[REGISTRY_KEY].names()))


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Deny by default: every route but the open ones needs credentials (a new route is protected)."""
    path = request.path
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or request.method == "OPTIONS":
        return await handler(request)
    try:
        request[CALLER] = await request.app[AUTH_KEY].authenticate(request)
    except AuthError as e:
        request.app[METRICS_KEY].unauthorized.labels(e.code).inc()
        headers = {"WWW-Authenticate": 'Bearer realm="eloquence"'} if e.status == 401 else None
        return json_error(e.status, e.code, e.message, headers=headers)
    return await handler(request)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as e:
        headers = (
            {"Retry-After": str(max(1, round(e.extra.get("retry_after_s", 1))))} if e.status == 429 else None
        )
        if e.status >= 500:
            logger.warning("%s %s → %d %s: %s", request.method, request.path, e.status, e.code, e.message)
        return json_error(e.status, e.code, e.message, headers=headers, **e.extra)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return json_error(e.status, "http_error", e.reason)
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error")


def create_app(
    settings: AppSettings | None = None, *, registry: ExerciseRegistry = REGISTRY
) -> web.Application:
    settings = settings or AppSettings()
    metrics = APIMetrics()
    app = web.Application(
        # outermost first: metrics see every answer, CORS headers go on errors too
        middlewares=[
            metrics.middleware,
            cors_middleware(parse_origins(settings.cors_origins)),
            error_middleware,
            auth_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS_KEY] = settings
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = metrics
    app[AUTH_KEY] = Authenticator.from_settings(settings)

    async def http_session_and_limits(app: web.Application) -> Any:
        app[HTTP_KEY] = aiohttp.ClientSession()
        app[LIMITS_KEY] = RateLimits(redis_url=settings.redis_url, namespace="eloquence-api")
        yield
        await app[HTTP_KEY].close()
        await app[LIMITS_KEY].aclose()

    app.cleanup_ctx.append(http_session_and_limits)
    app.router.add_post("/api/livekit/token", token_handler)
    app.router.add_post("/api/livekit/create-room", create_room_handler)
    app.router.add_post("/api/livekit/job-notification", job_notification_handler)
    app.router.add_get("/api/livekit/health", health_handler)
    app.router.add_get("/api/openapi.json", openapi_handler)
    app.router.add_get("/metrics", metrics.handler)
    add_playground_routes(app, settings)  # the browser playground: /playground
    return app


def main(args: argparse.Namespace) -> int:
    from sidecar_common.logs import configure_logging

    settings = AppSettings()
    configure_logging("info", settings.log_format)
    port = args.port or settings.api_port
    logger.info(
        "eloquence api on http://%s:%d (LiveKit %s for clients, %s from here; agent %s)",
        args.host,
        port,
        settings.livekit_url,
        settings.livekit_server_url,
        settings.livekit_agent_name,
    )
    try:
        app = create_app(settings)
    except ValueError as e:  # a bad security setting: say which, never start half-protected
        logger.error("cannot start the API: %s", e)
        return 2
    auth = app[AUTH_KEY]
    (logger.warning if auth.disabled or not auth.configured else logger.info)("%s", auth.describe())
    web.run_app(app, host=args.host, port=port, print=None)
    return 0
