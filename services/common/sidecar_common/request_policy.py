"""What every request to a sidecar passes, in one middleware: the optional shared key, the
X-Request-Id, and one log line.

- **Shared key.** With SIDECAR_API_KEY set, every route (websocket upgrades included) needs
  `Authorization: Bearer <key>`, else 401 `unauthorized`; `/health`, `/metrics` and
  `/openapi.json` stay open for probes, scrapers and clients. Unset, the sidecar is open on the
  address it binds (loopback by default).
- **X-Request-Id.** Taken from the caller when it is a sane token, else minted; echoed on the
  response (the websocket handshake included) and put on every log record of the request.
- **Log.** One line per request at INFO (`GET /v1/... 200 12.3 ms`), probes at DEBUG. The key and
  the Authorization header are never logged.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Middleware

from .http import Handler, SidecarError

logger = logging.getLogger("sidecar.requests")

OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})
REQUEST_ID = web.RequestKey("sidecar_request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sidecar_request_id", default=None
)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request is handled (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True


def request_policy(api_key: str | None) -> Middleware:
    """The middleware; `api_key` None or empty leaves the sidecar open."""
    expected = api_key.encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            if expected is not None and request.path not in OPEN_PATHS:
                _check_key(request, expected)
            response = await handler(request)
            status = response.status
            return response
        except SidecarError as e:
            status = e.status
            raise
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            level = logging.DEBUG if request.path in OPEN_PATHS else logging.INFO
            logger.log(
                level,
                "%s %s %d %.1f ms",
                request.method,
                request.path,
                status,
                (time.perf_counter() - started) * 1000,
            )
            current_request_id.reset(token)

    return middleware


def _check_key(request: web.Request, expected: bytes) -> None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    presented = credential.strip().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
        raise SidecarError(
            401,
            "unauthorized",
            "missing or invalid key: send `Authorization: Bearer <SIDECAR_API_KEY>`",
            headers={"WWW-Authenticate": 'Bearer realm="sidecar"'},
        )


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the id goes back on every response, errors and handshakes included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
