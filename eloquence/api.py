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
import datetime
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from livekit import api as lkapi

from sidecar_common.http import json_error

from .api_metrics import APIMetrics
from .auth import Authenticator, AuthError, Caller
from .cors import cors_middleware, parse_origins
from .exercises import DEFAULT_EXERCISE, REGISTRY, ExerciseRegistry
from .metadata import build_metadata
from .playground.web import add_playground_routes
from .rate_limits import RateLimits, per_minute
from .services import AZURE_TTS, LOCAL_LLM, WHISPER_STT
from .settings import AppSettings

logger = logging.getLogger("eloquence.api")

IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
"""user_id / agent_id: 1–64 characters, letters, digits and `_ . @ -`, not starting with a symbol."""
ROOM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_BODY_BYTES = 16 * 1024
HEALTH_PROBE_TIMEOUT_S = 0.8

SETTINGS_KEY = web.AppKey("settings", AppSettings)
REGISTRY_KEY = web.AppKey("registry", ExerciseRegistry)
LIMITS_KEY = web.AppKey("limits", RateLimits)
AUTH_KEY = web.AppKey("auth", Authenticator)
METRICS_KEY = web.AppKey("metrics", APIMetrics)
HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)
CALLER = web.RequestKey("caller", Caller)
OPEN_PATHS = frozenset({"/api/livekit/health", "/api/openapi.json", "/metrics"})
OPEN_PREFIXES = ("/playground",)
"""Open here: probes, scrapers, the API description, and the playground (its page holds no secret;
its /playground/api/* calls check the key themselves). Every other route needs credentials."""


class RequestError(Exception):
    """A client error: becomes a 4xx JSON error response."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# --- request helpers ----------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object")
    return body


def _identifier(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise RequestError(400, "invalid_request", f"`{field}` is required", field=field)
        return None
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        raise RequestError(
            400,
            "invalid_request",
            f"`{field}` must be 1-64 characters: letters, digits, `_`, `.`, `@`, `-`",
            field=field,
        )
    return value


@dataclass(frozen=True)
class _ExerciseChoice:
    name: str
    """The exercise the agent will run (what goes into the metadata)."""
    warnings: tuple[str, ...] = ()

    def response_fields(self) -> dict[str, Any]:
        """Added to a 200 response after a fallback: what runs instead, and why."""
        return {"exercise_type": self.name, "warnings": list(self.warnings)} if self.warnings else {}


def _exercise(request: web.Request, body: dict[str, Any], *, default: str | None) -> _ExerciseChoice:
    """An unknown `exercise_type` runs the default exercise, with a warning in the response: the same
    fallback as the agent's (eloquence/metadata.py), so a client's new exercise is never refused here."""
    registry = request.app[REGISTRY_KEY]
    value = body.get("exercise_type", default)
    if value is None:
        raise RequestError(400, "invalid_request", "`exercise_type` is required", field="exercise_type")
    if not isinstance(value, str):
        raise RequestError(
            400,
            "invalid_request",
            "`exercise_type` must be a string",
            field="exercise_type",
            valid_exercises=registry.names(),
        )
    if value in registry:
        return _ExerciseChoice(value)
    fallback = registry.resolve(None).name
    warning = (
        f"unknown exercise_type {value[:64]!r}; running {fallback!r} "
        f"(valid exercises: {', '.join(registry.names())})"
    )
    logger.warning("%s", warning)
    return _ExerciseChoice(fallback, (warning,))


def _config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise RequestError(400, "invalid_request", "`config` must be an object", field="config")
    return config


async def _rate_limit(request: web.Request) -> Caller:
    """Count this request against its authenticated caller (never a body field); 429 over the limit."""
    settings = request.app[SETTINGS_KEY]
    caller = request[CALLER]
    per_min = (
        settings.api_key_rate_limit_per_minute
        if caller.kind == "api_key"
        else settings.api_rate_limit_per_minute
    )
    retry_after = await request.app[LIMITS_KEY].hit(per_minute(per_min), caller.limit_key)
    if retry_after > 0:
        request.app[METRICS_KEY].rate_limited.labels(caller.kind).inc()
        raise RequestError(
            429, "rate_limited", "too many requests; slow down", retry_after_s=round(retry_after, 1)
        )
    return caller


def _user_id(caller: Caller, body: dict[str, Any], *, required: bool) -> str | None:
    """A verified user's id comes from their token; an API-key caller names the user in the body."""
    if caller.user_id is None:
        return _identifier(body, "user_id", required=required)
    claimed = body.get("user_id")
    if claimed is not None and claimed != caller.user_id:
        raise RequestError(
            403, "user_mismatch", "`user_id` differs from the user token's subject; omit it", field="user_id"
        )
    return caller.user_id


def _random_suffix() -> str:
    return secrets.token_hex(4)


def _http_url(livekit_url: str) -> str:
    """ws(s)://host → http(s)://host: the server API and its health check speak HTTP."""
    parts = urlsplit(livekit_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def _user_token(
    settings: AppSettings, *, identity: str, room_name: str, metadata: str, dispatch: bool
) -> str:
    grants = lkapi.VideoGrants(
        room_join=True, room=room_name, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    token = (
        lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_metadata(metadata)
        .with_grants(grants)
        .with_ttl(datetime.timedelta(seconds=settings.api_token_ttl_s))
    )
    if dispatch:
        # joining with this token dispatches the coach into the room, with the exercise metadata
        token = token.with_room_config(
            lkapi.RoomConfiguration(
                agents=[lkapi.RoomAgentDispatch(agent_name=settings.livekit_agent_name, metadata=metadata)]
            )
        )
    return token.to_jwt()


def _livekit_api(request: web.Request) -> lkapi.LiveKitAPI:
    settings = request.app[SETTINGS_KEY]
    # server-side calls go to the internal URL (http://livekit:7880 in compose), never the public one
    return lkapi.LiveKitAPI(
        _http_url(settings.livekit_server_url),
        settings.livekit_api_key,
        settings.livekit_api_secret,
        session=request.app[HTTP_KEY],
        timeout=aiohttp.ClientTimeout(total=settings.api_livekit_timeout_s),
    )


async def _call_livekit(what: str, call: Awaitable[Any]) -> Any:
    try:
        return await call
    except lkapi.TwirpError as e:
        raise RequestError(
            502, "livekit_error", f"LiveKit refused to {what}: {e.code}: {e.message}"
        ) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise RequestError(
            503, "livekit_unreachable", f"could not reach LiveKit to {what} ({type(e).__name__})"
        ) from None


# --- handlers -----------------------------------------------------------------------------


async def token_handler(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    caller = await _rate_limit(request)
    body = await _json_body(request)
    user_id = _user_id(caller, body, required=True)
    assert user_id is not None
    exercise = _exercise(request, body, default=None)
    exercise_type = exercise.name
    metadata = build_metadata(exercise_type=exercise_type, user_id=user_id, config=_config(body))
    room_name = f"eloquence_{exercise_type}_{_random_suffix()}"
    token = _user_token(settings, identity=user_id, room_name=room_name, metadata=metadata, dispatch=True)
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
    caller = await _rate_limit(request)
    body = await _json_body(request)
    agent_id = _identifier(body, "agent_id", required=False)
    user_id = _user_id(caller, body, required=False)
    if agent_id is None and body.get("exercise_type") is None:
        raise RequestError(400, "invalid_request", "send `agent_id` or `exercise_type`", field="agent_id")
    exercise = _exercise(request, body, default=DEFAULT_EXERCISE)
    exercise_type = exercise.name
    agent_id = agent_id or exercise_type
    room_name = f"voicebot_{agent_id}_{_random_suffix()}"
    identity = user_id or f"user_{_random_suffix()}"
    metadata = build_metadata(exercise_type=exercise_type, user_id=user_id, config=_config(body))

    lk = _livekit_api(request)
    await _call_livekit(
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
    token = _user_token(settings, identity=identity, room_name=room_name, metadata=metadata, dispatch=False)
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
    caller = await _rate_limit(request)
    body = await _json_body(request)
    agent_id = _identifier(body, "agent_id", required=True)
    user_id = _user_id(caller, body, required=False)
    room_name = body.get("room_name")
    if not isinstance(room_name, str) or not ROOM_NAME_RE.match(room_name):
        raise RequestError(
            400,
            "invalid_request",
            "`room_name` is required: 1-128 letters, digits, `_ . -`",
            field="room_name",
        )
    exercise = _exercise(request, body, default=DEFAULT_EXERCISE)
    metadata = build_metadata(exercise_type=exercise.name, user_id=user_id, config=_config(body))

    lk = _livekit_api(request)
    dispatch = await _call_livekit(
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
        "livekit": _http_url(settings.livekit_server_url).rstrip("/") + "/",
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


# --- OpenAPI --------------------------------------------------------------------------------


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "valid_exercises": {"type": "array", "items": {"type": "string"}},
                    "retry_after_s": {"type": "number"},
                },
            }
        },
    }


def openapi_document(exercises: list[str]) -> dict[str, Any]:
    identifier = {"type": "string", "pattern": IDENTIFIER_RE.pattern, "maxLength": 64}
    exercise = {
        "type": "string",
        "examples": exercises,
        "description": (
            f"one of {', '.join(exercises)}; any other name runs `{DEFAULT_EXERCISE}`, and the 200 "
            "response then carries `exercise_type` (what runs) and `warnings`"
        ),
    }
    fallback = {
        "exercise_type": {"type": "string", "description": "after a fallback: the exercise that runs"},
        "warnings": {"type": "array", "items": {"type": "string"}, "description": "after a fallback: why"},
    }
    config = {"type": "object", "description": 'exercise options, e.g. {"language": "fr"}'}

    def errors(*codes: int) -> dict[str, Any]:
        return {
            str(code): {
                "description": desc,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for code, desc in {
                400: "invalid body or field",
                401: "missing or invalid credentials (WWW-Authenticate: Bearer)",
                403: "`user_id` differs from the verified user token's subject",
                413: "body too large",
                429: "rate limited (Retry-After header)",
                502: "LiveKit refused the call",
                503: "LiveKit, or the identity provider's signing keys (JWKS), unreachable",
            }.items()
            if code in codes
        }

    def post(
        summary: str,
        required: list[str],
        props: dict[str, Any],
        response: dict[str, Any],
        *codes: int,
        any_of: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "object", "required": required, "properties": props}
        if any_of:  # at least one of these fields
            body["anyOf"] = [{"required": [name]} for name in any_of]
        return {
            "post": {
                "summary": summary,
                "security": [{"bearerAuth": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {"schema": {"type": "object", "properties": response}}
                        },
                    },
                    **errors(*codes),
                },
            }
        }

    string = {"type": "string"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eloquence API",
            "version": "0.1.0",
            "description": "LiveKit tokens, rooms and agent dispatch for the Eloquence coach.",
        },
        "paths": {
            "/api/livekit/token": post(
                "Mint a 1 h LiveKit token for a new room; joining dispatches the coach with the exercise.",
                ["exercise_type", "user_id"],
                {"exercise_type": exercise, "user_id": identifier, "config": config},
                {"token": string, "livekit_url": string, "room_name": string, **fallback},
                400,
                401,
                403,
                413,
                429,
                503,
            ),
            "/api/livekit/create-room": post(
                "Create a room `voicebot_<agent>_<random>` with the coach dispatched, and a token for it.",
                [],
                {"agent_id": identifier, "exercise_type": exercise, "user_id": identifier, "config": config},
                {"room_name": string, "access_token": string, "livekit_url": string, **fallback},
                400,
                401,
                403,
                413,
                429,
                502,
                503,
                any_of=["agent_id", "exercise_type"],
            ),
            "/api/livekit/job-notification": post(
                "Dispatch the coach to an existing room.",
                ["agent_id", "room_name"],
                {
                    "agent_id": identifier,
                    "room_name": {"type": "string", "pattern": ROOM_NAME_RE.pattern, "maxLength": 128},
                    "exercise_type": exercise,
                    "user_id": identifier,
                    "config": config,
                },
                {"dispatch_id": string, "room_name": string, "agent_name": string, **fallback},
                400,
                401,
                403,
                413,
                429,
                502,
                503,
            ),
            "/api/livekit/health": {
                "get": {
                    "summary": "LiveKit reachability and each sidecar's health (200 while the API is up).",
                    "responses": {
                        "200": {
                            "description": "`status` is ok when everything is healthy, else degraded",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"type": "string", "enum": ["ok", "degraded"]},
                                            "livekit": {"type": "object"},
                                            "services": {"type": "object"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {"Error": _error_schema()},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (ELOQUENCE_API_KEYS) or a user JWT (HS256 or JWKS)",
                }
            },
        },
    }
