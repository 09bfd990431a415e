"""No secret in any log line or response: a full turn with a distinctive value in every secret variable.

The sidecars (whisper-stt, azure-tts through the Azure SDK), the API and Redis run as real processes;
the agent side (`eloquence talk`'s AgentSession) runs here, logging at DEBUG into a capture. Azure
and Mistral cannot be reached from here, so azure-tts talks to the USP stand-in and the LLM is the
Mistral-protocol server, each receiving its key as the real service would. Then every log file,
every captured log record, every HTTP response (bodies and headers) and the turn's report are
searched for each secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from fakes.azure_speech_server import AzureSpeechStandIn
from fakes.mistral_server import FakeMistralServer
from support.redis_server import running_redis

from eloquence.services import API, AZURE_TTS, WHISPER_STT, free_port, running_services
from eloquence.settings import AppSettings
from eloquence.talk import run_talk_turn
from eloquence_bench.speech import PIPER_NO_NOISE_ENV, silence, speak
from providers.endpoints import MistralEndpoint

pytestmark = pytest.mark.slow

SECRETS = {
    "MISTRAL_API_KEY": "mistral-SECRET-6f1d0c7e9b2a4d31",
    "AZURE_SPEECH_KEY": "azure-SECRET-0a9b8c7d6e5f4a3b",
    "LIVEKIT_API_SECRET": "livekit-SECRET-5e4d3c2b1a09f8e7d6c5",
    "ELOQUENCE_API_KEYS": "apikey-SECRET-1111aaaa2222bbbb,apikey-SECRET-3333cccc4444dddd",
    "ELOQUENCE_JWT_SECRET": "jwt-SECRET-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "SIDECAR_API_KEY": "sidecar-SECRET-77aa66bb55cc44dd",
    "REDIS_PASSWORD": "redis-SECRET-13579bdf2468ace0",
}
QUESTION = "How can I sound more confident in a meeting?"


def _secret_values() -> list[str]:
    return [v for value in SECRETS.values() for v in value.split(",")]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record) + json.dumps(record.__dict__, default=str))
        except Exception as e:  # a record that cannot be formatted is itself worth seeing
            self.lines.append(f"unformattable record {record.name}: {e}")


@pytest.fixture
def captured_logs() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture
async def stand_ins() -> AsyncIterator[tuple[AzureSpeechStandIn, FakeMistralServer]]:
    azure = AzureSpeechStandIn()
    await azure.start()
    async with FakeMistralServer(token_delay_s=0.01) as mistral:
        mistral.script("Stand tall and slow down. Pause before your main point.")
        yield azure, mistral
    await azure.stop()


async def test_a_full_turn_leaves_no_secret_in_any_log_or_response(
    stand_ins: tuple[AzureSpeechStandIn, FakeMistralServer],
    captured_logs: Captured,
    service_log_dir: Path,
    tmp_path: Path,
) -> None:
    azure, mistral = stand_ins
    log_dir = service_log_dir / "secrets"
    responses: list[str] = []
    with running_redis(tmp_path, password=SECRETS["REDIS_PASSWORD"]) as redis:
        env = {
            **{k: v for k, v in SECRETS.items() if k != "REDIS_PASSWORD"},
            "REDIS_URL": redis.url,
            "MISTRAL_BASE_URL": mistral.url,
            "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
            "LIVEKIT_API_KEY": "secrets-test",
            "TTS_ENGINE": "azure",
            "AZURE_SPEECH_HOST": azure.url,
            "WHISPER_CPU_THREADS": "1",
            "PIPER_THREADS": "1",
            "ELOQUENCE_LOG_FORMAT": "json",
            **PIPER_NO_NOISE_ENV,
        }
        with running_services([WHISPER_STT, AZURE_TTS, API], log_dir, env=env, timeout=180) as (
            stt,
            tts,
            api,
        ):
            api_key = SECRETS["ELOQUENCE_API_KEYS"].split(",")[1]
            async with aiohttp.ClientSession() as http:
                for method, url, headers, body in [
                    ("POST", f"{api.url}/api/livekit/token", {"Authorization": f"Bearer {api_key}"}, {}),
                    (
                        "POST",
                        f"{api.url}/api/livekit/token",
                        {"Authorization": "Bearer wrong-key-0123456789"},
                        {},
                    ),
                    ("POST", f"{api.url}/api/livekit/token", {"Authorization": "Bearer a.b.c"}, {}),
                    ("GET", f"{api.url}/api/livekit/health", {}, None),
                    ("GET", f"{api.url}/metrics", {}, None),
                    ("GET", f"{api.url}/api/openapi.json", {}, None),
                    ("GET", f"{stt.url}/health", {}, None),
                    ("GET", f"{stt.url}/metrics", {}, None),
                    ("GET", f"{tts.url}/health", {}, None),
                    ("GET", f"{tts.url}/metrics", {}, None),
                ]:
                    payload = {"exercise_type": "default", "user_id": "alice"} if body is not None else None
                    async with http.request(method, url, headers=headers, json=payload) as resp:
                        responses.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
            assert responses[0].startswith("200"), responses[0]
            assert responses[1].startswith("401") and responses[2].startswith("401")

            settings = AppSettings(
                **{k: v for k, v in env.items() if k not in ("MISTRAL_BASE_URL",)},
                WHISPER_STT_URL=stt.url,
                AZURE_TTS_URL=tts.url,
            )
            endpoint = MistralEndpoint(
                server_url=mistral.url,
                api_key=SECRETS["MISTRAL_API_KEY"],
                model="mistral-small-latest",
                is_local=False,
            )
            report = await run_talk_turn(
                audio=np.concatenate([speak(QUESTION), silence(0.1)]),
                settings=settings,
                llm_endpoint=endpoint,
                timeout_s=120,
            )
            responses.append(json.dumps(report.to_dict()))
    assert report.reply.startswith("Stand tall"), report
    assert azure.requests, "the reply was not synthesized by the Azure engine"
    assert mistral.requests, "the LLM was not called"

    files = sorted(log_dir.rglob("*.log"))
    assert {f.name for f in files} >= {"whisper-stt.log", "azure-tts.log", "api.log"}
    texts = {str(f): f.read_text(errors="replace") for f in files}
    texts["in-process logs"] = "\n".join(captured_logs.lines)
    texts["responses"] = "\n".join(responses)
    assert any(line.startswith("livekit.agents DEBUG") for line in captured_logs.lines)  # DEBUG was on
    leaks = {where: [s for s in _secret_values() if s in text] for where, text in texts.items()}
    assert {where: found for where, found in leaks.items() if found} == {}
