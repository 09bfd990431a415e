"""French speech out of the azure-tts sidecar (a real subprocess): espeak-ng offline, Azure's fr-FR
voices through the real Speech SDK against the USP stand-in, and the voice always in the session's
language. The French audio is judged by the multilingual Whisper base: it must hear French."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from fakes.azure_speech_server import AzureSpeechStandIn

from eloquence.services import AZURE_TTS, ServiceProcess, free_port, running_service
from eloquence_bench.quality import french_wer
from eloquence_bench.speech import PIPER_NO_NOISE_ENV
from sidecar_common.pcm import pcm16_to_float

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
    ),
]

REPLY = (
    "Très bien, respirez profondément avant de commencer. "
    "Parlez lentement et regardez votre public. "
    "Je voudrais que vous fassiez une pause après chaque idée importante."
)
ENGLISH = "Take a deep breath before you answer."
# Measured here, Whisper base (beam 5) judging REPLY: the service's espeak-ng fr+m2 0.46 (11 of 24
# words, half of them homophones: "parler" for "parlez"), detected as French (p 0.99); the English
# Piper voice reading the same text 0.83, detected as English (p 0.96). 0.6 keeps a margin of three
# words over the measure and still fails an English voice; the detected language is the sharper check.
REPLY_MAX_WER = 0.6
ESPEAK_FR = "espeak-fr+m2"
COMMON_ENV = {"PIPER_THREADS": "1", "LOG_LEVEL": "info", "TTS_CACHE_BYTES": "0", **PIPER_NO_NOISE_ENV}


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture(scope="module")
def offline_tts(service_log_dir: Path) -> Iterator[ServiceProcess]:
    """The embedded default: Piper for English, espeak-ng for French."""
    env = {**COMMON_ENV, "TTS_ENGINE": "piper"}
    with running_service(AZURE_TTS, service_log_dir / "french-tts-offline", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def azure_tts(stand_in: AzureSpeechStandIn, service_log_dir: Path) -> Iterator[ServiceProcess]:
    """Azure through the SDK, a fresh connection per chunk (faults apply at once), offline fallback."""
    env = {
        **COMMON_ENV,
        "TTS_ENGINE": "azure",
        "AZURE_SPEECH_HOST": stand_in.url,
        "AZURE_POOL_SIZE": "0",
        "AZURE_MAX_ATTEMPTS": "1",
    }
    with running_service(AZURE_TTS, service_log_dir / "french-tts-azure", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def french_judge() -> Any:
    from faster_whisper import WhisperModel

    from whisper_stt.packaged_models import resolve_model

    return WhisperModel(str(resolve_model("base")), device="cpu", compute_type="int8", cpu_threads=2)


def hear(judge: Any, pcm: bytes) -> tuple[str, str]:
    """(language Whisper base detects, its French transcript) of 16 kHz PCM."""
    audio = np.concatenate([np.zeros(4000, dtype=np.float32), pcm16_to_float(pcm)])
    language, _, _ = judge.detect_language(audio)
    segments, _ = judge.transcribe(audio, language="fr", beam_size=5, temperature=0.0, vad_filter=False)
    return language, " ".join(s.text.strip() for s in segments)


async def synthesize(
    http: aiohttp.ClientSession, service: ServiceProcess, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.post(f"{service.url}/v1/synthesize", json={"sample_rate": 16000, **body}) as resp:
        return resp, await resp.read()


async def test_french_on_the_offline_service_is_spoken_in_french_by_espeak(
    http: aiohttp.ClientSession, offline_tts: ServiceProcess, french_judge: Any
) -> None:
    resp, pcm = await synthesize(http, offline_tts, {"text": REPLY, "language": "fr", "context": "coaching"})
    assert resp.status == 200, pcm[:300]
    assert (resp.headers["X-Engine"], resp.headers["X-Voice"]) == ("espeak", ESPEAK_FR)
    samples = pcm16_to_float(pcm)
    assert len(samples) / 16000 > 4.0 and 0.5 <= float(np.max(np.abs(samples))) <= 0.8 + 1e-3
    language, transcript = hear(french_judge, pcm)
    assert language == "fr", transcript
    assert french_wer([REPLY], [transcript]) <= REPLY_MAX_WER, transcript

    resp, _ = await synthesize(http, offline_tts, {"text": ENGLISH, "language": "en", "context": "coaching"})
    assert (resp.headers["X-Engine"], resp.headers["X-Voice"]) == ("piper", "en_US-joe-medium")


async def test_french_streams_chunk_by_chunk_over_the_websocket(
    http: aiohttp.ClientSession, offline_tts: ServiceProcess
) -> None:
    async with http.ws_connect(offline_tts.url.replace("http", "ws") + "/v1/stream") as ws:
        await ws.send_json({"type": "config", "language": "fr", "context": "greeting", "sample_rate": 16000})
        await ws.send_json({"type": "text", "text": "Bonjour et bienvenue. Aujourd'hui nous travaillons "})
        await ws.send_json({"type": "text", "text": "votre introduction."})
        await ws.send_json({"type": "flush"})
        events: list[tuple[str, Any]] = []
        while True:
            msg = await ws.receive(timeout=60)
            if msg.type == aiohttp.WSMsgType.BINARY:
                events.append(("audio", msg.data))
                continue
            event = json.loads(msg.data)
            assert event["type"] != "error", event
            if event["type"] == "segment_end":
                break
            events.append((event["type"], event.get("text")))
    ends = [text for kind, text in events if kind == "sentence_end"]
    assert ends == ["Bonjour et bienvenue.", "Aujourd'hui nous travaillons votre introduction."]
    # each chunk's audio comes before its sentence_end: the first sentence plays before the second is spoken
    first_end = events.index(("sentence_end", ends[0]))
    assert any(kind == "audio" for kind, _ in events[:first_end])
    assert any(kind == "audio" for kind, _ in events[first_end + 1 :])


async def test_azure_speaks_the_context_voice_within_the_session_language(
    http: aiohttp.ClientSession, azure_tts: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    cases = [
        ("en", "coaching", "Hello.", "en-US-JennyNeural"),  # never fr-FR-HenriNeural for an English session
        ("en", "greeting", "Welcome.", "en-US-JennyNeural"),
        ("fr", "greeting", "Bonjour.", "fr-FR-DeniseNeural"),
        ("fr", "coaching", "Très bien.", "fr-FR-HenriNeural"),
    ]
    for language, context, text, voice in cases:
        resp, pcm = await synthesize(
            http, azure_tts, {"text": text, "language": language, "context": context}
        )
        assert resp.status == 200 and pcm, (language, context)
        assert (resp.headers["X-Engine"], resp.headers["X-Voice"]) == ("azure", voice)
    sent = [(r.voice, r.text) for r in faults.requests]
    assert sent == [(voice, text) for _, _, text, voice in cases]
    assert 'xml:lang="fr-FR"' in faults.requests[-1].ssml


async def test_french_falls_back_to_espeak_when_azure_fails_before_audio(
    http: aiohttp.ClientSession, azure_tts: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    faults.faults.reject_auth = True
    resp, pcm = await synthesize(
        http, azure_tts, {"text": "Bonjour.", "language": "fr", "context": "greeting"}
    )
    assert resp.status == 200 and pcm
    assert (resp.headers["X-Engine"], resp.headers["X-Voice"]) == ("espeak", ESPEAK_FR)
    assert resp.headers["X-Fallback-Reason"] == "engine_auth_failed"
    resp, pcm = await synthesize(http, azure_tts, {"text": "Hello.", "language": "en", "context": "coaching"})
    assert (resp.headers["X-Engine"], resp.headers["X-Voice"]) == ("piper", "en_US-joe-medium")


def _path_without_espeak() -> str:
    """PATH without the directories that hold espeak-ng (/bin and /usr/bin may be one)."""
    kept = [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "espeak-ng").exists()
    ]
    path = os.pathsep.join(kept)
    assert shutil.which("espeak-ng", path=path) is None
    return path


async def test_without_espeak_ng_the_service_says_so(
    http: aiohttp.ClientSession, service_log_dir: Path
) -> None:
    no_espeak = {**COMMON_ENV, "PATH": _path_without_espeak()}
    # As the primary engine: refuses to start, in one line that says what to install.
    done = subprocess.run(
        [sys.executable, "-m", "azure_tts", "--port", str(free_port())],
        env={**os.environ, **no_espeak, "TTS_ENGINE": "espeak"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "espeak-ng is not installed" in done.stderr and "apt-get install espeak-ng" in done.stderr
    assert "Traceback" not in done.stderr

    # As the extra French engine: English is served, the log and a French request say what is missing.
    log_dir = service_log_dir / "french-tts-no-espeak"
    with running_service(AZURE_TTS, log_dir, env={**no_espeak, "TTS_ENGINE": "piper"}) as proc:
        resp, _ = await synthesize(http, proc, {"text": ENGLISH, "language": "en"})
        assert resp.status == 200 and resp.headers["X-Engine"] == "piper"
        resp, body = await synthesize(http, proc, {"text": "Bonjour.", "language": "fr"})
        assert resp.status == 400
        message = json.loads(body)["error"]["message"]
        assert "no voice here speaks 'fr'" in message and "apt-get install espeak-ng" in message
        log = proc.log_path.read_text(encoding="utf-8")
    assert "espeak-ng is not installed" in log
