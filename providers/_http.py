"""HTTP plumbing shared by WhisperSTT and AzureTTS: one bounded keep-alive session, and the
mapping of sidecar failures to livekit's API errors at each I/O edge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

import aiohttp
from livekit.agents import APIConnectionError, APIError, APIStatusError, APITimeoutError, utils

# Several streams per sidecar at once, never an unbounded number of sockets.
CONNECTOR_LIMIT = 32
# The sidecars are long-lived neighbours: keep connections warm between turns.
KEEPALIVE_TIMEOUT_S = 120.0


class SidecarSession:
    """The aiohttp session one provider uses, and the sidecar's shared key.

    An injected session wins; inside an agent job the job's shared session is used; anywhere
    else (tests, CLI) the provider opens its own bounded keep-alive session and closes it in
    `aclose()`. The session may be shared, so the key goes on each request (`headers`), never
    on the session.
    """

    def __init__(self, session: aiohttp.ClientSession | None, *, api_key: str | None = None) -> None:
        self._session = session
        self._owned: aiohttp.ClientSession | None = None
        self._api_key = resolve_sidecar_key(api_key)

    @property
    def headers(self) -> dict[str, str]:
        """`Authorization: Bearer <SIDECAR_API_KEY>` when a key is set; nothing otherwise."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def get(self) -> aiohttp.ClientSession:
        if self._session is not None and not self._session.closed:
            return self._session
        if self._owned is not None and not self._owned.closed:
            return self._owned
        try:
            self._session = utils.http_context.http_session()
            return self._session
        except RuntimeError:
            pass
        connector = aiohttp.TCPConnector(limit=CONNECTOR_LIMIT, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        self._owned = aiohttp.ClientSession(connector=connector)
        return self._owned

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.close()
            self._owned = None


def resolve_sidecar_key(api_key: str | None = None) -> str | None:
    """An explicit key, else SIDECAR_API_KEY, else None (the sidecars are open)."""
    return api_key or os.environ.get("SIDECAR_API_KEY") or None


def error_body(raw: bytes | str) -> Any:
    """The sidecar's `{"error": {...}}` body, or the raw text when it is not JSON."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except ValueError:
        return text


def error_message(body: Any, default: str) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and (err.get("code") or err.get("message")):
            return f"{err.get('code', 'error')}: {err.get('message', '')}".strip()
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return default


async def raise_for_sidecar_status(resp: aiohttp.ClientResponse) -> None:
    """Turn a 4xx/5xx answer into APIStatusError with the sidecar's code and message.

    429 and 5xx stay retryable (the framework decides when to retry); other 4xx do not.
    """
    if resp.status < 400:
        return
    body: Any = None
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        body = error_body(await resp.read())
    if isinstance(body, dict) and (retry_after := resp.headers.get("Retry-After")):
        body = {**body, "retry_after": retry_after}
    raise APIStatusError(
        message=error_message(body, resp.reason or f"HTTP {resp.status}"),
        status_code=resp.status,
        request_id=resp.headers.get("X-Request-Id"),
        body=body,
    )


def to_api_error(e: BaseException, *, request_id: str | None = None) -> APIError:
    """The one mapping used at every I/O edge (call as `raise to_api_error(e) from e`)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, asyncio.TimeoutError):
        return APITimeoutError()
    if isinstance(e, aiohttp.ClientResponseError):  # includes a refused websocket upgrade
        return APIStatusError(
            message=e.message or f"HTTP {e.status}", status_code=e.status, request_id=request_id, body=None
        )
    return APIConnectionError()


def sidecar_event(data: str, service: str) -> dict[str, Any]:
    """One JSON event from a sidecar's websocket; anything else is a protocol error (not retried)."""
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise APIError(f"{service} sent something that is not an event: {data[:200]!r}", retryable=False)
    return event
