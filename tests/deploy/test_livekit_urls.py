"""The API hands clients the public LiveKit URL and calls LiveKit itself at the internal one.

In compose the public URL (LIVEKIT_URL, e.g. wss://coach.example.com) may not be reachable from
inside the api container, and `ws://127.0.0.1:7880` is the container's own loopback: server-side
calls must go to LIVEKIT_INTERNAL_URL (`http://livekit:7880` in compose). Here the public URL points
at a port where nothing listens, and the internal one at the LiveKit stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes.livekit_server import LiveKitStandin
from support.api_process import API_KEY, running_api

from eloquence.services import free_port
from eloquence.settings import AppSettings

PUBLIC_URL = f"wss://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(scope="module")
def api_url(livekit: LiveKitStandin, service_log_dir: Path) -> Iterator[str]:
    with running_api(
        livekit, service_log_dir, LIVEKIT_URL=PUBLIC_URL, LIVEKIT_INTERNAL_URL=livekit.url
    ) as url:
        yield url


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with session.post(
            url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=20)
        ) as resp:
            return resp.status, await resp.json()


async def test_create_room_reaches_livekit_at_the_internal_url(api_url: str, livekit: LiveKitStandin) -> None:
    status, body = await _post(f"{api_url}/api/livekit/create-room", {"agent_id": "agent-123"})
    assert status == 200, body
    # clients get the public URL, never the internal one
    assert body["livekit_url"] == PUBLIC_URL
    created = [r for r in livekit.requests() if r["method"] == "CreateRoom"]
    assert [r["room"] for r in created] == [body["room_name"]]
    assert created[0]["agents"][0]["agent_name"] == livekit.agent_name


async def test_job_notification_reaches_livekit_at_the_internal_url(
    api_url: str, livekit: LiveKitStandin
) -> None:
    _, room = await _post(f"{api_url}/api/livekit/create-room", {"exercise_type": "default"})
    status, body = await _post(
        f"{api_url}/api/livekit/job-notification", {"agent_id": "agent-123", "room_name": room["room_name"]}
    )
    assert status == 200, body
    assert body["dispatch_id"].startswith("AD_")


async def test_token_hands_out_the_public_url(api_url: str) -> None:
    status, body = await _post(f"{api_url}/api/livekit/token", {"exercise_type": "default", "user_id": "bob"})
    assert status == 200, body
    assert body["livekit_url"] == PUBLIC_URL


async def test_health_probes_livekit_at_the_internal_url(api_url: str, livekit: LiveKitStandin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{api_url}/api/livekit/health") as resp:
            body = await resp.json()
    assert body["livekit"]["reachable"] is True, json.dumps(body)
    assert body["livekit"]["url"] == livekit.url + "/"


def test_without_an_internal_url_server_calls_use_the_public_one() -> None:
    settings = AppSettings(LIVEKIT_URL="ws://lk.example:7880", LIVEKIT_INTERNAL_URL="")
    assert settings.livekit_server_url == "ws://lk.example:7880"
    settings = AppSettings(LIVEKIT_URL="wss://lk.example", LIVEKIT_INTERNAL_URL="http://livekit:7880")
    assert settings.livekit_server_url == "http://livekit:7880"
    assert settings.livekit_url == "wss://lk.example"
