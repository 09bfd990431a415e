"""`eloquence api` as a real process, against a LiveKit stand-in that speaks LiveKit's wire protocol."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from livekit import api as lkapi

from eloquence.exercises import exercise_names
from eloquence.services import API, ServiceDefinition, ServiceProcess, free_port, running_service

API_KEY = "eloquence-test-key"
API_SECRET = "s3cr3t-never-shown-0123456789abcdef"
AGENT_NAME = "eloquence-coach-test"
EXISTING_ROOM = "voicebot_agent-123_existing"
APP_KEY = "app-backend-key-0123456789abcdef"
"""The API key an app backend sends (ELOQUENCE_API_KEYS); tests/eloquence/test_api_auth.py tests auth."""

FAKE_LIVEKIT = ServiceDefinition(
    name="fake-livekit",
    console_script="",
    module_argv=(
        "fakes.livekit_server",
        "--api-key",
        API_KEY,
        "--api-secret",
        API_SECRET,
        "--room",
        EXISTING_ROOM,
    ),
    default_port=0,
    health_path="/",
)
TESTS_DIR = Path(__file__).resolve().parents[1]


def _api_env(livekit_port: int, **extra: str) -> dict[str, str]:
    dead = free_port()  # nothing listens there: the sidecars are all down in this module
    return {
        "LIVEKIT_URL": f"ws://127.0.0.1:{livekit_port}",
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "LIVEKIT_AGENT_NAME": AGENT_NAME,
        "ELOQUENCE_API_KEYS": APP_KEY,
        "WHISPER_STT_URL": f"http://127.0.0.1:{dead}",
        "AZURE_TTS_URL": f"http://127.0.0.1:{dead}",
        "LOCAL_LLM_URL": f"http://127.0.0.1:{dead}",
        "MISTRAL_API_KEY": "",
        "MISTRAL_BASE_URL": "",
        **extra,
    }


@pytest.fixture(scope="module")
def fake_livekit(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(
        FAKE_LIVEKIT, service_log_dir, env={"PYTHONPATH": str(TESTS_DIR)}, timeout=60
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def api_url(fake_livekit: ServiceProcess, service_log_dir: Path) -> Iterator[str]:
    with running_service(API, service_log_dir, env=_api_env(fake_livekit.port), timeout=60) as proc:
        yield proc.url


class Responses:
    """Every response body seen in this module, to check the secret never leaks."""

    bodies: list[str] = []


async def _call(
    method: str, url: str, *, body: object = None, raw: bytes | None = None
) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {APP_KEY}"}) as session:
        kwargs: dict = {}
        if raw is not None:
            kwargs["data"] = raw
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=20), **kwargs) as resp:
            text = await resp.text()
            Responses.bodies.append(text + json.dumps(dict(resp.headers)))
            return resp.status, json.loads(text), dict(resp.headers)


def _verify(token: str) -> lkapi.Claims:
    return lkapi.TokenVerifier(API_KEY, API_SECRET).verify(token)


async def test_token_carries_room_identity_one_hour_ttl_grants_and_dispatch(api_url: str) -> None:
    status, body, _ = await _call(
        "POST",
        f"{api_url}/api/livekit/token",
        body={"exercise_type": "confidence_boost", "user_id": "alice_01"},
    )
    assert status == 200, body
    assert set(body) == {"token", "livekit_url", "room_name"}
    assert body["livekit_url"].startswith("ws://127.0.0.1:")
    assert re.fullmatch(r"eloquence_confidence_boost_[0-9a-f]{8}", body["room_name"])

    claims = _verify(body["token"])  # raises on a bad signature or issuer
    assert claims.identity == "alice_01"
    assert claims.video is not None
    assert claims.video.room == body["room_name"]
    assert claims.video.room_join is True
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data
    assert not claims.video.room_admin and not claims.video.room_create

    raw = jwt.decode(body["token"], options={"verify_signature": False})
    assert raw["exp"] - raw["nbf"] == 3600

    assert claims.room_config is not None
    (dispatch,) = claims.room_config.agents
    assert dispatch.agent_name == AGENT_NAME
    assert json.loads(dispatch.metadata) == {"exercise_type": "confidence_boost", "user_id": "alice_01"}
    assert json.loads(claims.metadata)["exercise_type"] == "confidence_boost"


async def test_token_with_a_wrong_secret_does_not_verify(api_url: str) -> None:
    _, body, _ = await _call(
        "POST", f"{api_url}/api/livekit/token", body={"exercise_type": "default", "user_id": "bob"}
    )
    with pytest.raises(jwt.InvalidSignatureError):
        lkapi.TokenVerifier(API_KEY, "another-secret-that-is-also-long-enough-0123").verify(body["token"])


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"exercise_type": "default"}', "invalid_request", "user_id"),
        (b'{"exercise_type": "default", "user_id": "has space"}', "invalid_request", "user_id"),
        (b'{"exercise_type": "default", "user_id": "' + b"x" * 65 + b'"}', "invalid_request", "user_id"),
        (b'{"exercise_type": "default", "user_id": "<script>"}', "invalid_request", "user_id"),
        (b'{"exercise_type": "default", "user_id": 42}', "invalid_request", "user_id"),
        (b'{"user_id": "carol"}', "invalid_request", "exercise_type"),
        (b'{"exercise_type": "default", "user_id": "carol", "config": "fr"}', "invalid_request", "config"),
        # falsy values are refused too, not read as "no config" (found by the fuzzer: 0.0 was accepted)
        (b'{"exercise_type": "default", "user_id": "carol", "config": 0.0}', "invalid_request", "config"),
        (b'{"exercise_type": "default", "user_id": "carol", "config": []}', "invalid_request", "config"),
    ],
)
async def test_token_rejects_bad_bodies_with_a_clear_error(
    api_url: str, payload: bytes, code: str, field: str | None
) -> None:
    status, body, _ = await _call("POST", f"{api_url}/api/livekit/token", raw=payload)
    assert status == 400, body
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if field:
        assert body["error"]["field"] == field


async def test_a_null_config_is_no_config(api_url: str) -> None:
    status, body, _ = await _call(
        "POST",
        f"{api_url}/api/livekit/token",
        body={"exercise_type": "default", "user_id": "carol", "config": None},
    )
    assert status == 200, body
    (dispatch,) = _verify(body["token"]).room_config.agents
    assert json.loads(dispatch.metadata) == {"exercise_type": "default", "user_id": "carol"}  # no config


async def test_an_unknown_exercise_runs_the_default_with_a_warning_as_the_agent_does(api_url: str) -> None:
    # the users' template for a new exercise must get a token, not a 400
    status, body, _ = await _call(
        "POST",
        f"{api_url}/api/livekit/token",
        body={"exercise_type": "storytelling", "user_id": "dave", "config": {"language": "fr"}},
    )
    assert status == 200, body
    assert body["exercise_type"] == "default"
    (warning,) = body["warnings"]
    assert "storytelling" in warning and "default" in warning
    assert re.fullmatch(r"eloquence_default_[0-9a-f]{8}", body["room_name"])
    (dispatch,) = _verify(body["token"]).room_config.agents
    metadata = json.loads(dispatch.metadata)
    assert metadata == {"exercise_type": "default", "user_id": "dave", "config": {"language": "fr"}}
    # what the agent makes of that metadata: the same exercise, in the asked language, without a warning
    from eloquence.metadata import parse_metadata

    meta = parse_metadata(("job", dispatch.metadata))
    assert (meta.exercise.name, meta.language, meta.warnings) == ("default", "fr", ())

    status, body, _ = await _call(
        "POST", f"{api_url}/api/livekit/create-room", body={"exercise_type": "storytelling"}
    )
    assert status == 200, body
    assert body["exercise_type"] == "default" and len(body["warnings"]) == 1


async def test_a_known_exercise_gets_no_warning_and_a_non_string_one_is_refused(api_url: str) -> None:
    _, body, _ = await _call(
        "POST", f"{api_url}/api/livekit/token", body={"exercise_type": "interview_prep", "user_id": "erin"}
    )
    assert "warnings" not in body and "exercise_type" not in body
    status, body, _ = await _call(
        "POST", f"{api_url}/api/livekit/token", body={"exercise_type": ["default"], "user_id": "erin"}
    )
    assert status == 400
    assert body["error"]["field"] == "exercise_type"
    assert body["error"]["valid_exercises"] == exercise_names()


async def test_create_room_creates_a_voicebot_room_with_the_coach_dispatched(
    api_url: str, fake_livekit: ServiceProcess
) -> None:
    status, body, _ = await _call(
        "POST",
        f"{api_url}/api/livekit/create-room",
        body={"agent_id": "agent-123", "exercise_type": "interview_prep"},
    )
    assert status == 200, body
    assert set(body) == {"room_name", "access_token", "livekit_url"}
    assert re.fullmatch(r"voicebot_agent-123_[0-9a-f]{8}", body["room_name"])
    claims = _verify(body["access_token"])
    assert claims.video is not None and claims.video.room == body["room_name"] and claims.video.room_join

    _, log, _ = await _call("GET", f"{fake_livekit.url}/_fake/requests")
    (created,) = [r for r in log if r["method"] == "CreateRoom" and r["room"] == body["room_name"]]
    assert json.loads(created["metadata"])["exercise_type"] == "interview_prep"
    assert created["agents"] == [{"agent_name": AGENT_NAME, "metadata": created["metadata"]}]


async def test_create_room_from_an_exercise_type_alone(api_url: str) -> None:
    status, body, _ = await _call(
        "POST", f"{api_url}/api/livekit/create-room", body={"exercise_type": "presentation_skills"}
    )
    assert status == 200, body
    assert re.fullmatch(r"voicebot_presentation_skills_[0-9a-f]{8}", body["room_name"])


async def test_create_room_needs_an_agent_or_an_exercise(api_url: str) -> None:
    status, body, _ = await _call("POST", f"{api_url}/api/livekit/create-room", body={})
    assert status == 400 and body["error"]["field"] == "agent_id"
    status, body, _ = await _call("POST", f"{api_url}/api/livekit/create-room", body={"agent_id": "a/b"})
    assert status == 400 and body["error"]["field"] == "agent_id"


async def test_job_notification_dispatches_the_agent_to_an_existing_room(
    api_url: str, fake_livekit: ServiceProcess
) -> None:
    status, body, _ = await _call(
        "POST",
        f"{api_url}/api/livekit/job-notification",
        body={"agent_id": "agent-123", "room_name": EXISTING_ROOM, "exercise_type": "confidence_boost"},
    )
    assert status == 200, body
    assert body["room_name"] == EXISTING_ROOM and body["agent_name"] == AGENT_NAME
    assert body["dispatch_id"].startswith("AD_")
    _, log, _ = await _call("GET", f"{fake_livekit.url}/_fake/requests")
    (dispatch,) = [r for r in log if r["method"] == "CreateDispatch"]
    assert dispatch["agent_name"] == AGENT_NAME and dispatch["room"] == EXISTING_ROOM
    assert json.loads(dispatch["metadata"])["exercise_type"] == "confidence_boost"


async def test_job_notification_errors_are_clear(api_url: str) -> None:
    url = f"{api_url}/api/livekit/job-notification"
    status, body, _ = await _call("POST", url, body={"agent_id": "agent-123", "room_name": "no_such_room"})
    assert status == 502
    assert body["error"]["code"] == "livekit_error" and "not_found" in body["error"]["message"]
    status, body, _ = await _call("POST", url, body={"agent_id": "agent-123", "room_name": "../etc"})
    assert status == 400 and body["error"]["field"] == "room_name"
    status, body, _ = await _call("POST", url, body={"room_name": EXISTING_ROOM})
    assert status == 400 and body["error"]["field"] == "agent_id"


async def test_health_reports_livekit_up_and_every_sidecar_down(api_url: str) -> None:
    status, body, _ = await _call("GET", f"{api_url}/api/livekit/health")
    assert status == 200
    assert body["status"] == "degraded"
    assert body["livekit"]["reachable"] is True
    assert set(body["services"]) == {"whisper-stt", "azure-tts", "local-llm"}
    assert all(s["healthy"] is False and s["error"] for s in body["services"].values())


async def test_health_reports_livekit_unreachable(
    fake_livekit: ServiceProcess, service_log_dir: Path
) -> None:
    env = _api_env(free_port())  # nothing listens at this LiveKit URL
    with running_service(API, service_log_dir / "api-no-livekit", env=env, timeout=60) as proc:
        status, body, _ = await _call("GET", f"{proc.url}/api/livekit/health")
        assert status == 200
        assert body["status"] == "degraded"
        assert body["livekit"]["reachable"] is False and body["livekit"]["error"]
        # without LiveKit, creating a room is a clear 503, not a crash
        status, body, _ = await _call("POST", f"{proc.url}/api/livekit/create-room", body={"agent_id": "x1"})
        assert status == 503 and body["error"]["code"] == "livekit_unreachable"
        # and the API is still healthy afterwards
        status, _, _ = await _call("GET", f"{proc.url}/api/livekit/health")
        assert status == 200


async def test_openapi_document_describes_the_four_endpoints(api_url: str) -> None:
    status, doc, _ = await _call("GET", f"{api_url}/api/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/livekit/token",
        "/api/livekit/create-room",
        "/api/livekit/job-notification",
        "/api/livekit/health",
    }
    token_schema = doc["paths"]["/api/livekit/token"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert token_schema["required"] == ["exercise_type", "user_id"]
    # any name is accepted (an unknown one runs `default`): listed, not enumerated
    exercise_schema = token_schema["properties"]["exercise_type"]
    assert "enum" not in exercise_schema
    assert exercise_schema["examples"] == exercise_names()
    ok = doc["paths"]["/api/livekit/token"]["post"]["responses"]["200"]["content"]["application/json"]
    assert {"exercise_type", "warnings"} <= set(ok["schema"]["properties"])


async def test_secret_never_appears_in_a_response_or_the_log(api_url: str, service_log_dir: Path) -> None:
    # runs last in this module: every response above has been recorded
    await _call("GET", f"{api_url}/api/livekit/health")
    assert len(Responses.bodies) > 20
    assert not [b for b in Responses.bodies if API_SECRET in b]
    log = (service_log_dir / "api.log").read_text(errors="replace")
    assert "token issued" in log
    assert API_SECRET not in log
    assert APP_KEY not in log
