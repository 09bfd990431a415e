"""The playground page and its signalling, on the API (port 8003).

    GET    /playground                       the page (static, from eloquence/playground/static/)
    GET    /playground/static/...            its script, style and the vendored livekit-client
    GET    /playground/api/config            mode, exercises, languages, stage labels
    GET    /playground/api/status            the session host's and each sidecar's health
    POST   /playground/api/offer             forwarded to the session host (`eloquence playground`)
    DELETE /playground/api/sessions/{id}     forwarded to the session host

Every `/playground/api/*` call is authenticated as the rest of the API is (eloquence/auth.py:
an API key or a user JWT as `Authorization: Bearer`, or nothing with ELOQUENCE_API_AUTH=none).
The page reads the key from its own URL (`/playground?token=<key>`, the URL `eloquence up`
prints), as Jupyter does; the API's access log shows it as `<redacted>`. The page itself holds no
secret and loads without one. In LiveKit mode the page asks `/api/livekit/token` for a room token
and joins the room with livekit-client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ..auth import Authenticator, AuthError
from ..exercises import DEFAULT_EXERCISE, REGISTRY, SUPPORTED_LANGUAGES
from ..settings import AppSettings
from .settings import PlaygroundSettings

STATIC_DIR = Path(__file__).parent / "static"
PAGE_PATH = "/playground"
_PROBE_TIMEOUT_S = 0.8
_MAX_BODY_BYTES = 80 * 1024

_SETTINGS_KEY = web.AppKey("playground_settings", PlaygroundSettings)
_APP_SETTINGS_KEY = web.AppKey("playground_app_settings", AppSettings)
_HTTP_KEY = web.AppKey("playground_http", aiohttp.ClientSession)
_AUTH_KEY = web.AppKey("playground_auth", Authenticator)


def playground_url(api_url: str, api_key: str | None = None) -> str:
    """The URL a person opens: `<api>/playground`, with `?token=<key>` when the API needs one."""
    url = api_url.rstrip("/") + PAGE_PATH
    return url + "?token=" + quote(api_key, safe="") if api_key else url


_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]+")


class _RedactUrlToken(logging.Filter):
    """aiohttp's access log writes the request line, query included: never the page's `?token=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN_IN_URL.sub(r"\1<redacted>", message), ()
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, _RedactUrlToken) for f in access.filters):
        access.addFilter(_RedactUrlToken())


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _authorized(request: web.Request) -> web.Response | None:
    try:
        await request.app[_AUTH_KEY].authenticate(request)
    except AuthError as e:
        if e.status != 401:
            return _error(e.status, e.code, e.message)
        return _error(
            401,
            "unauthorized",
            "this playground needs the API key: open the URL `eloquence up` printed (it ends in ?token=…)",
        )
    return None


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _probe(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)) as resp:
            return {"url": url, "healthy": resp.status == 200, "status": resp.status}
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return {"url": url, "healthy": False, "error": type(e).__name__}


async def _status(request: web.Request) -> dict[str, Any]:
    settings, app_settings = request.app[_SETTINGS_KEY], request.app[_APP_SETTINGS_KEY]
    http = request.app[_HTTP_KEY]
    targets = {
        "session-host": settings.session_host_url.rstrip("/") + "/health",
        "whisper-stt": app_settings.whisper_stt_url.rstrip("/") + "/health",
        "azure-tts": app_settings.azure_tts_url.rstrip("/") + "/health",
    }
    if not app_settings.mistral_api_key and not app_settings.mistral_base_url:
        targets["local-llm"] = app_settings.local_llm_url.rstrip("/") + "/health"
    names = list(targets)
    results = await asyncio.gather(*(_probe(http, targets[n]) for n in names))
    return dict(zip(names, results, strict=True))


def _mode(settings: PlaygroundSettings, status: dict[str, Any]) -> str:
    if settings.mode != "auto":
        return settings.mode
    return "local" if status["session-host"]["healthy"] else "livekit"


async def _config(request: web.Request) -> web.Response:
    if (denied := await _authorized(request)) is not None:
        return denied
    settings = request.app[_SETTINGS_KEY]
    status = await _status(request)
    exercises = [
        {"name": e.name, "title": e.title, "languages": sorted(e.text), "default_language": e.language}
        for e in REGISTRY
    ]
    return web.json_response(
        {
            "mode": _mode(settings, status),
            "exercises": exercises,
            "default_exercise": DEFAULT_EXERCISE,
            "languages": list(SUPPORTED_LANGUAGES),
            "default_language": request.app[_APP_SETTINGS_KEY].language,
            "stages": _stage_labels(),
        }
    )


def _stage_labels() -> list[dict[str, str]]:
    from ..stages import STAGES

    return [{"field": s.field, "label": s.label} for s in STAGES]


async def _status_handler(request: web.Request) -> web.Response:
    if (denied := await _authorized(request)) is not None:
        return denied
    status = await _status(request)
    return web.json_response({"mode": _mode(request.app[_SETTINGS_KEY], status), "services": status})


async def _forward(request: web.Request, method: str, path: str, body: bytes | None) -> web.Response:
    settings = request.app[_SETTINGS_KEY]
    url = settings.session_host_url.rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    if auth := request.headers.get("Authorization"):
        headers["Authorization"] = auth
    try:
        async with request.app[_HTTP_KEY].request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=settings.offer_timeout_s),
        ) as resp:
            payload = await resp.read()
            if resp.content_type != "application/json":
                return _error(502, "agent_error", f"the session host answered HTTP {resp.status}")
            return web.Response(body=payload, status=resp.status, content_type="application/json")
    except TimeoutError:
        return _error(
            504, "agent_timeout", f"the session host at {settings.session_host_url} did not answer in time"
        )
    except (aiohttp.ClientError, OSError):
        return _error(
            503,
            "agent_unreachable",
            f"the coach's session host is not running at {settings.session_host_url}; "
            "start it with `eloquence up`",
        )


async def _offer(request: web.Request) -> web.Response:
    if (denied := await _authorized(request)) is not None:
        return denied
    body = await request.content.read(_MAX_BODY_BYTES + 1)
    if len(body) > _MAX_BODY_BYTES:
        return _error(413, "too_large", f"request body over {_MAX_BODY_BYTES} bytes")
    try:
        if not isinstance(json.loads(body), dict):
            raise ValueError
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _error(400, "invalid_json", "the request body must be a JSON object")
    return await _forward(request, "POST", "/offer", body)


async def _close(request: web.Request) -> web.Response:
    if (denied := await _authorized(request)) is not None:
        return denied
    session_id = request.match_info["session_id"]
    if not session_id.isalnum() or len(session_id) > 64:
        return _error(400, "invalid_request", "bad session id")
    return await _forward(request, "DELETE", f"/sessions/{session_id}", None)


def add_playground_routes(
    app: web.Application,
    settings: AppSettings | None = None,
    playground: PlaygroundSettings | None = None,
) -> None:
    """Serve the playground page and its signalling on the API application `app`."""
    settings = settings or AppSettings()
    _redact_access_log()
    app[_SETTINGS_KEY] = playground or PlaygroundSettings()
    app[_APP_SETTINGS_KEY] = settings
    app[_AUTH_KEY] = Authenticator.from_settings(settings)

    async def http_session(app: web.Application) -> Any:
        app[_HTTP_KEY] = aiohttp.ClientSession()
        yield
        await app[_HTTP_KEY].close()

    app.cleanup_ctx.append(http_session)
    app.router.add_get(PAGE_PATH, _page)
    app.router.add_static(PAGE_PATH + "/static", STATIC_DIR, append_version=False)
    app.router.add_get(PAGE_PATH + "/api/config", _config)
    app.router.add_get(PAGE_PATH + "/api/status", _status_handler)
    app.router.add_post(PAGE_PATH + "/api/offer", _offer)
    app.router.add_delete(PAGE_PATH + "/api/sessions/{session_id}", _close)
