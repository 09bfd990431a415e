"""LiveKit server calls for `eloquence api`: user tokens, the server API client, error mapping."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from livekit import api as lkapi

from .api_requests import RequestError
from .settings import AppSettings


def random_suffix() -> str:
    return secrets.token_hex(4)


def http_url(livekit_url: str) -> str:
    """ws(s)://host → http(s)://host: the server API and its health check speak HTTP."""
    parts = urlsplit(livekit_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def user_token(settings: AppSettings, *, identity: str, room_name: str, metadata: str, dispatch: bool) -> str:
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


def livekit_api(settings: AppSettings, session: aiohttp.ClientSession) -> lkapi.LiveKitAPI:
    # server-side calls go to the internal URL (http://livekit:7880 in compose), never the public one
    return lkapi.LiveKitAPI(
        http_url(settings.livekit_server_url),
        settings.livekit_api_key,
        settings.livekit_api_secret,
        session=session,
        timeout=aiohttp.ClientTimeout(total=settings.api_livekit_timeout_s),
    )


async def call_livekit(what: str, call: Awaitable[Any]) -> Any:
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
