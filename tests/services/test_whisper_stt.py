"""whisper-stt: the real server as a subprocess on loopback, the real model, real speech from Piper."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from eloquence.services import WHISPER_STT, ServiceProcess, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import silence, speak, to_wav
from sidecar_common.pcm import float_to_pcm16 as to_pcm16
from whisper_stt.model import Transcript, TranscriptSegment, WhisperTranscriber, is_degenerate
from whisper_stt.noise_filter import NoiseFilter
from whisper_stt.settings import WhisperSTTSettings
from whisper_stt.transcription_queue import InterimShed, Overloaded, Priority, TranscriptionQueue

SENTENCES = [
    "Good morning, I would like to practice my presentation today.",
    "The quarterly results were better than we expected.",
    "Please speak a little more slowly during the introduction.",
    "My flight to Chicago leaves early tomorrow morning.",
]
LONG_SENTENCE = (
    "When I present to a large audience I often speak too quickly, so today I want to practice pausing "
    "after every important point, and I would also like some feedback on how clearly I pronounce the "
    "longer technical words in the second half of my talk."
)
# Threads kept low: this box is shared. Interims every 400 ms so a short utterance gets some.
SERVICE_ENV = {"WHISPER_CPU_THREADS": "2", "WHISPER_INTERIM_INTERVAL_MS": "400"}


@pytest.fixture(scope="module")
def whisper(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(WHISPER_STT, service_log_dir, env=SERVICE_ENV) as service:
        yield service


@pytest.fixture(scope="module")
def whisper_tiny_queue(service_log_dir: Path) -> Iterator[ServiceProcess]:
    # One worker, no interims: only the jobs a test makes occupy the worker and the one queue slot.
    env = {
        **SERVICE_ENV,
        "WHISPER_QUEUE_SIZE": "1",
        "WHISPER_RETRY_AFTER_S": "2",
        "WHISPER_INTERIM_INTERVAL_MS": "600000",
        "WHISPER_MAX_STREAMS": "2",
        "WHISPER_WORKERS": "1",
    }
    with running_service(WHISPER_STT, service_log_dir / "tiny-queue", env=env) as service:
        yield service


def utterance(text: str, *, lead_s: float = 0.5, tail_s: float = 1.0, sample_rate: int = 16000) -> np.ndarray:
    return np.concatenate(
        [
            silence(lead_s, sample_rate=sample_rate),
            speak(text, sample_rate=sample_rate),
            silence(tail_s, sample_rate=sample_rate),
        ]
    )


async def post_audio(
    session: aiohttp.ClientSession, url: str, data: bytes, *, filename: str = "audio.wav", **fields: str
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    for name, value in fields.items():
        form.add_field(name, value)
    response = await session.post(f"{url}/v1/audio/transcriptions", data=form)
    await response.read()
    return response


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/health") as response:
        assert response.status == 200
        return await response.json()  # type: ignore[no-any-return]


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, stop: str, *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Events up to and including the first of type `stop`."""
    events: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (
            f"expected an event, got {msg.type} {msg.data!r} after {events}"
        )
        events.append(json.loads(msg.data))
        if events[-1]["type"] == stop:
            return events


async def send_audio(
    ws: aiohttp.ClientWebSocketResponse,
    audio: np.ndarray,
    *,
    sample_rate: int = 16000,
    chunk_s: float = 0.1,
    realtime: float | None = None,
) -> None:
    """Send PCM in chunks; `realtime` paces it (1.0 = as fast as it is spoken)."""
    pcm = to_pcm16(audio)
    step = int(chunk_s * sample_rate) * 2
    for i in range(0, len(pcm), step):
        await ws.send_bytes(pcm[i : i + step])
        if realtime:
            await asyncio.sleep(chunk_s / realtime)


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "final"]


# -- start-up and HTTP ----------------------------------------------------------------------------


async def test_health_reports_model_language_queue_and_streams(whisper: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as session:
        body = await health(session, whisper.url)
    assert body["ready"] is True and body["status"] == "ok"
    assert body["model"].endswith("model") and body["language"] == "en"
    assert body["queue_depth"] == 0 and body["active_streams"] == 0


async def test_routing_errors_get_the_json_error_body(whisper: ServiceProcess) -> None:
    cases = [
        ("GET", "/v1/nope", 404, "not_found"),
        ("DELETE", "/health", 405, "method_not_allowed"),
        ("GET", "/v1/stream", 400, "invalid_request"),
    ]
    async with aiohttp.ClientSession() as session:
        for method, path, status, code in cases:
            async with session.request(method, f"{whisper.url}{path}") as response:
                error = (await response.json())["error"]
            assert (response.status, error["code"]) == (status, code) and path in error["message"], error


@pytest.mark.parametrize(
    ("sample_rate", "channels", "subtype", "fmt", "filename"),
    [
        (16000, 1, "PCM_16", "WAV", "a.wav"),
        (44100, 2, "PCM_16", "FLAC", "a.flac"),
        (48000, 1, "VORBIS", "OGG", "a.ogg"),
        (22050, 1, "FLOAT", "WAV", "a.wav"),
        (8000, 1, "PCM_U8", "WAV", "a.wav"),
    ],
    ids=["wav16k", "flac44k-stereo", "ogg48k", "wav-float32", "wav-8bit-8k"],
)
async def test_http_transcribes_any_format_rate_and_channels_accurately(
    whisper: ServiceProcess, sample_rate: int, channels: int, subtype: str, fmt: str, filename: str
) -> None:
    text = SENTENCES[0]
    mono = utterance(text, lead_s=0.3, tail_s=0.3, sample_rate=sample_rate)
    audio = np.stack([mono, mono * 0.9], axis=1) if channels == 2 else mono
    data = to_wav(audio, sample_rate=sample_rate, subtype=subtype, fmt=fmt)
    async with aiohttp.ClientSession() as session:
        response = await post_audio(session, whisper.url, data, filename=filename)
        body = await response.json()
    assert response.status == 200, body
    assert wer(text, body["text"]) <= 0.15, body["text"]


async def test_http_accuracy_on_clean_speech_and_response_formats(whisper: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as session:
        texts = []
        for sentence in SENTENCES:
            response = await post_audio(session, whisper.url, to_wav(utterance(sentence, tail_s=0.3)))
            assert response.status == 200
            texts.append((await response.json())["text"])
        data = to_wav(utterance(SENTENCES[1], tail_s=0.3))
        plain = await post_audio(session, whisper.url, data, response_format="text", language="en")
        verbose = await post_audio(
            session,
            whisper.url,
            data,
            response_format="verbose_json",
            temperature="0",
            # Longer than the 223 tokens the model keeps: truncated, not an error.
            prompt="A coaching session about presentations and business meetings. " * 30,
        )
        verbose_body = await verbose.json()
    assert wer(" ".join(SENTENCES), " ".join(texts)) <= 0.15, texts
    assert plain.content_type == "text/plain" and wer(SENTENCES[1], await plain.text()) <= 0.15
    assert verbose_body["language"] == "en" and verbose_body["duration"] == pytest.approx(
        len(utterance(SENTENCES[1], tail_s=0.3)) / 16000, abs=0.05
    )
    segments = verbose_body["segments"]
    assert segments and wer(SENTENCES[1], " ".join(s["text"] for s in segments)) <= 0.15
    for segment in segments:
        assert 0 <= segment["start"] < segment["end"] <= verbose_body["duration"] + 0.5
        assert {"id", "avg_logprob", "no_speech_prob"} <= segment.keys()


async def test_short_real_phrases_pass_and_silence_or_noise_gives_empty_text(whisper: ServiceProcess) -> None:
    noise = np.random.default_rng(1).normal(0, 0.003, 32000).astype(np.float32)
    async with aiohttp.ClientSession() as session:
        thanks = await (
            await post_audio(session, whisper.url, to_wav(utterance("Thank you.", tail_s=0.3)))
        ).json()
        quiet = await (await post_audio(session, whisper.url, to_wav(silence(2.0)))).json()
        hiss = await (await post_audio(session, whisper.url, to_wav(noise))).json()
    # A real "Thank you." has voiced frames under it: the hallucination filter must let it through.
    assert wer("Thank you.", thanks["text"]) == 0, thanks
    assert quiet["text"] == "" and hiss["text"] == "", (quiet, hiss)


# -- bad input over HTTP --------------------------------------------------------------------------


async def test_http_bad_input_gets_clear_4xx_and_service_stays_healthy(whisper: ServiceProcess) -> None:
    speech = utterance(SENTENCES[2], tail_s=0.2)
    wav = to_wav(speech)
    clipped = np.clip(speech * 20, -1, 1)
    async with aiohttp.ClientSession() as session:

        async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
            body = await response.json()
            assert "object at 0x" not in body["error"]["message"], body  # a clear message, never a repr
            return response.status, body["error"]["code"]

        assert await error_of(await post_audio(session, whisper.url, b"this is not audio at all" * 50)) == (
            400,
            "invalid_audio",
        )
        assert await error_of(await post_audio(session, whisper.url, wav[:30])) == (400, "invalid_audio")
        assert await error_of(await post_audio(session, whisper.url, to_wav(silence(0.05)))) == (
            400,
            "audio_too_short",
        )
        assert await error_of(await post_audio(session, whisper.url, wav, language="xx")) == (
            400,
            "unsupported_language",
        )
        # No model serves German (en: tiny.en, fr: base): refused, not silently transcribed as English.
        assert await error_of(await post_audio(session, whisper.url, wav, language="de")) == (
            400,
            "unsupported_language",
        )
        assert await error_of(await post_audio(session, whisper.url, wav, response_format="srt")) == (
            400,
            "invalid_request",
        )
        assert await error_of(await post_audio(session, whisper.url, wav, temperature="hot")) == (
            400,
            "invalid_request",
        )
        big = b"RIFF" + bytes(26 * 1024 * 1024)
        assert await error_of(await post_audio(session, whisper.url, big)) == (413, "too_large")
        async with session.post(f"{whisper.url}/v1/audio/transcriptions", json={"file": "x"}) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_request")
        form = aiohttp.FormData()
        form.add_field("language", "en")
        async with session.post(f"{whisper.url}/v1/audio/transcriptions", data=form) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_request")

        # A WAV cut in the middle of its data is read up to the cut, or refused; never a crash.
        truncated = await post_audio(session, whisper.url, wav[: len(wav) // 2])
        assert truncated.status in (200, 400)
        clipped_response = await post_audio(session, whisper.url, to_wav(clipped))
        assert clipped_response.status == 200 and isinstance((await clipped_response.json())["text"], str)

        ok = await post_audio(session, whisper.url, wav)
        assert ok.status == 200 and wer(SENTENCES[2], (await ok.json())["text"]) <= 0.15
        assert (await health(session, whisper.url))["queue_depth"] == 0


# -- streaming ------------------------------------------------------------------------------------


async def test_stream_events_come_in_order_with_sane_timestamps(whisper: ServiceProcess) -> None:
    lead_s = 0.6
    audio = utterance(LONG_SENTENCE, lead_s=lead_s, tail_s=1.2)
    speech_s = len(speak(LONG_SENTENCE)) / 16000
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000&language=en") as ws,
    ):
        await send_audio(ws, audio, realtime=1.5)
        events = await receive_until(ws, "end_of_speech")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start_of_speech" and kinds[-2:] == ["final", "end_of_speech"], kinds
    assert set(kinds[1:-2]) == {"interim"}, kinds
    assert len({e["utterance_id"] for e in events}) == 1
    start, *interims, final, end = events
    assert lead_s - 0.35 <= start["start_s"] <= lead_s + 0.3, start
    assert start["start_s"] < start["end_s"] <= start["start_s"] + 0.5, start  # detected soon after it began
    assert final["start_s"] == start["start_s"] == end["start_s"] and final["end_s"] == end["end_s"]
    assert lead_s + speech_s - 0.5 <= final["end_s"] <= lead_s + speech_s + 0.5, final
    interim_ends = [e["end_s"] for e in interims]
    assert interim_ends == sorted(interim_ends) and all(
        start["start_s"] < t <= final["end_s"] + 0.7 for t in interim_ends
    )
    assert interims and all(e["text"] for e in interims)
    assert wer(LONG_SENTENCE, final["text"]) <= 0.15, final["text"]
    assert final["language"] == "en" and final["reason"] == "end_of_speech"
    assert final["avg_logprob"] < 0 and 0 <= final["no_speech_prob"] <= 1


async def test_two_utterances_separated_by_a_pause_give_two_finals(whisper: ServiceProcess) -> None:
    audio = np.concatenate(
        [utterance(SENTENCES[1], tail_s=1.5), utterance(SENTENCES[3], lead_s=0.0, tail_s=1.2)]
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000") as ws,
    ):
        await send_audio(ws, audio)
        first = await receive_until(ws, "end_of_speech")
        second = await receive_until(ws, "end_of_speech")
    (final1,), (final2,) = finals(first), finals(second)
    assert final1["utterance_id"] != final2["utterance_id"]
    assert final1["end_s"] < second[0]["start_s"] and second[0]["type"] == "start_of_speech"
    assert wer(SENTENCES[1], final1["text"]) <= 0.15 and wer(SENTENCES[3], final2["text"]) <= 0.15, (
        final1,
        final2,
    )


async def test_flush_always_gives_exactly_one_final(whisper: ServiceProcess) -> None:
    half_said = speak(SENTENCES[0])  # no trailing silence: the service's VAD has not ended it
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{whisper.url}/v1/stream") as ws:
        await send_audio(ws, np.concatenate([silence(0.3), half_said]))
        await ws.send_str(json.dumps({"type": "flush"}))
        spoken = await receive_until(ws, "end_of_speech")
        # Nothing said since: each flush is answered at once by one empty final.
        await send_audio(ws, silence(1.0))
        await ws.send_str(json.dumps({"type": "flush"}))
        empty1 = await receive_until(ws, "final")
        await ws.send_str(json.dumps({"type": "flush"}))
        empty2 = await receive_until(ws, "final")
    (final,) = finals(spoken)
    assert final["reason"] == "flush" and wer(SENTENCES[0], final["text"]) <= 0.15, final
    assert [e["type"] for e in empty1] == ["final"] and [e["type"] for e in empty2] == ["final"]
    assert empty1[0]["text"] == "" == empty2[0]["text"]
    ids = [final["utterance_id"], empty1[0]["utterance_id"], empty2[0]["utterance_id"]]
    assert len(set(ids)) == 3


async def test_four_concurrent_streams_each_get_their_own_transcript(whisper: ServiceProcess) -> None:
    rates = [16000, 24000, 44100, 48000]

    async def one_stream(session: aiohttp.ClientSession, text: str, rate: int) -> str:
        async with session.ws_connect(f"{whisper.url}/v1/stream?sample_rate={rate}&language=en") as ws:
            await send_audio(
                ws, utterance(text, tail_s=0.2, sample_rate=rate), sample_rate=rate, realtime=3.0
            )
            await ws.send_str(json.dumps({"type": "flush"}))
            events = await receive_until(ws, "final", timeout=60)
            return str(finals(events)[-1]["text"])

    async with aiohttp.ClientSession() as session:
        texts = await asyncio.gather(
            *(one_stream(session, s, r) for s, r in zip(SENTENCES, rates, strict=True))
        )
    for sentence, text in zip(SENTENCES, texts, strict=True):
        assert wer(sentence, text) <= 0.15, (sentence, text)


# -- bad input on the socket ----------------------------------------------------------------------


async def test_stream_bad_frames_get_error_events_and_the_stream_goes_on(whisper: ServiceProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000") as ws,
    ):
        await ws.send_bytes(b"\x01\x02\x03")
        odd = await receive_until(ws, "error")
        await ws.send_str("this is not json")
        not_json = await receive_until(ws, "error")
        await ws.send_str(json.dumps({"type": "transcribe_please"}))
        unknown = await receive_until(ws, "error")
        await send_audio(ws, utterance(SENTENCES[3], tail_s=0.2))
        await ws.send_str(json.dumps({"type": "flush"}))
        events = await receive_until(ws, "final")
    assert odd[-1]["code"] == "invalid_audio" and "odd" in odd[-1]["message"]
    assert not_json[-1]["code"] == "invalid_message" and unknown[-1]["code"] == "invalid_message"
    assert wer(SENTENCES[3], finals(events)[-1]["text"]) <= 0.15


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("language=xx", "unsupported_language"),
        ("language=de", "unsupported_language"),
        ("sample_rate=abc", "invalid_request"),
        ("sample_rate=1000000", "invalid_request"),
    ],
)
async def test_stream_bad_parameters_get_an_error_then_close(
    whisper: ServiceProcess, query: str, code: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?{query}") as ws,
    ):
        (event,) = await receive_until(ws, "error")
        closing = await ws.receive(timeout=10)
    assert event["code"] == code and event["message"]
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1008


async def test_client_disconnect_mid_utterance_leaks_nothing(whisper: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as session:
        # Warm: the thread pool exists and the counts are at their idle values.
        await post_audio(session, whisper.url, to_wav(utterance(SENTENCES[1], tail_s=0.2)))
        idle = await health(session, whisper.url)
        for _ in range(3):
            ws = await session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000")
            await send_audio(
                ws, np.concatenate([silence(0.3), speak(LONG_SENTENCE)[: 16000 * 3]]), realtime=4.0
            )
            await ws.send_str(json.dumps({"type": "flush"}))  # a final is queued or running: then vanish
            await ws.close()
        deadline = time.monotonic() + 20
        while True:
            now = await health(session, whisper.url)
            settled = now["active_streams"] == 0 and now["queue_depth"] == 0 and now["running"] == 0
            if settled and now["open_tasks"] <= idle["open_tasks"] and now["threads"] <= idle["threads"]:
                break
            assert time.monotonic() < deadline, (idle, now)
            await asyncio.sleep(0.2)
        ok = await post_audio(session, whisper.url, to_wav(utterance(SENTENCES[2], tail_s=0.2)))
        assert ok.status == 200 and wer(SENTENCES[2], (await ok.json())["text"]) <= 0.15


# -- overload -------------------------------------------------------------------------------------


async def _fill_queue(session: aiohttp.ClientSession, url: str) -> list[asyncio.Task[aiohttp.ClientResponse]]:
    """One long request running and one waiting: a queue of size 1 is then full."""
    blocker = to_wav(np.concatenate([speak(LONG_SENTENCE), *(speak(s) for s in SENTENCES)]))
    tasks = []
    for _ in range(2):
        tasks.append(asyncio.create_task(post_audio(session, url, blocker)))
        deadline = time.monotonic() + 20
        while True:
            state = await health(session, url)
            if state["running"] + state["queue_depth"] >= len(tasks):
                break
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.01)
    return tasks


async def test_full_queue_gives_429_with_retry_after_then_recovers(
    whisper_tiny_queue: ServiceProcess,
) -> None:
    url = whisper_tiny_queue.url
    async with aiohttp.ClientSession() as session:
        blockers = await _fill_queue(session, url)
        rejected = await post_audio(session, url, to_wav(utterance(SENTENCES[0], tail_s=0.2)))
        body = await rejected.json()
        assert rejected.status == 429 and rejected.headers["Retry-After"] == "2"
        assert body["error"]["code"] == "overloaded"
        for response in await asyncio.gather(*blockers):
            assert response.status == 200
        ok = await post_audio(session, url, to_wav(utterance(SENTENCES[0], tail_s=0.2)))
        assert ok.status == 200 and wer(SENTENCES[0], (await ok.json())["text"]) <= 0.15
        async with session.get(f"{url}/metrics") as response:
            assert 'whisper_rejections_total{reason="queue_full"}' in await response.text()


async def test_full_queue_sends_overloaded_and_closes_the_stream_1013(
    whisper_tiny_queue: ServiceProcess,
) -> None:
    url = whisper_tiny_queue.url
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/v1/stream?sample_rate=16000") as ws:
            await send_audio(ws, np.concatenate([silence(0.3), speak(SENTENCES[0])]))
            blockers = await _fill_queue(session, url)
            await ws.send_str(json.dumps({"type": "flush"}))
            events = await receive_until(ws, "error")
            closing = await ws.receive(timeout=10)
        assert events[-1]["code"] == "overloaded" and "final" not in [e["type"] for e in events]
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1013
        await asyncio.gather(*blockers)
        assert (await health(session, url))["active_streams"] == 0


# -- the model wrapper and the noise filter, in process -------------------------------------------


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    settings = WhisperSTTSettings()
    return WhisperTranscriber(model_path=settings.whisper_model, cpu_threads=2, encoder_window="utterance")


def test_short_encoder_window_keeps_the_full_window_accuracy(transcriber: WhisperTranscriber) -> None:
    """The gate of the latency lever: WER on the short window is no worse than on the stock 30 s one."""
    phrases = ["Yes.", "Thank you.", "Stop.", SENTENCES[0], SENTENCES[3]]
    short_texts, full_texts = [], []
    for phrase in phrases:
        audio = utterance(phrase, lead_s=0.2, tail_s=0.3)
        short = transcriber.transcribe(audio)
        full = transcriber.transcribe(audio, full_window=True)
        assert short.encoder_frames < 3000 and full.encoder_frames == 3000
        short_texts.append(short.text)
        full_texts.append(full.text)
    reference = " ".join(phrases)
    short_wer, full_wer = wer(reference, " ".join(short_texts)), wer(reference, " ".join(full_texts))
    assert short_wer <= 0.15 and short_wer <= full_wer + 0.03, (short_texts, full_texts)


def test_degenerate_short_window_output_is_recognized() -> None:
    def transcript(text: str, duration: float) -> Transcript:
        segment = TranscriptSegment(0.0, duration, text, -0.3, 0.1, 1.0)
        return Transcript(
            text=text, language="en", duration=duration, segments=(segment,), encoder_frames=1000
        )

    assert is_degenerate(transcript("Stop stop stop stop stop stop", 1.0))
    assert is_degenerate(transcript("Yes? . . . . . . .", 1.0))
    looped = Transcript(
        text="Quarterly results, " * 5,
        language="en",
        duration=4.0,
        encoder_frames=1000,
        segments=tuple(TranscriptSegment(i, i + 0.8, "Quarterly results,", -0.3, 0.1, 1.0) for i in range(5)),
    )
    assert is_degenerate(looped)  # one turn of the loop per segment
    assert not is_degenerate(transcript("Yes.", 1.0))
    assert not is_degenerate(transcript(LONG_SENTENCE, 13.0))
    # Legitimately repeated speech keeps a speaking rate: not a loop.
    assert not is_degenerate(transcript(f"{SENTENCES[1]} {SENTENCES[1]}", 6.0))


def test_noise_filter_drops_on_acoustic_evidence_not_on_text_alone() -> None:
    settings = WhisperSTTSettings()
    noise_filter = NoiseFilter(
        no_speech_threshold=settings.whisper_no_speech_threshold,
        logprob_threshold=settings.whisper_logprob_threshold,
        compression_ratio_threshold=settings.whisper_compression_ratio_threshold,
        repetition_max=settings.whisper_repetition_max,
        hallucination_max_speech_s=settings.whisper_hallucination_max_speech_s,
        vad_aggressiveness=settings.whisper_vad_aggressiveness,
    )
    spoken = utterance("Thank you for watching.", lead_s=0.1, tail_s=0.1)
    quiet = np.random.default_rng(2).normal(0, 0.002, len(spoken)).astype(np.float32)
    duration = len(spoken) / 16000

    def verdict(
        text: str, audio: np.ndarray, *, no_speech: float = 0.2, logprob: float = -0.3, ratio: float = 1.2
    ) -> str | None:
        segment = TranscriptSegment(0.0, duration, text, logprob, no_speech, ratio)
        transcript = Transcript(
            text=text, language="en", duration=duration, segments=(segment,), encoder_frames=3000
        )
        filtered, dropped = noise_filter.apply(transcript, audio)
        assert filtered.text == ("" if dropped else text)
        return dropped[0].reason if dropped else None

    for phrase in [
        "Thank you for watching.",
        "Thank you.",
        "Merci.",
        "Sous-titres réalisés par la communauté d'Amara.org",
    ]:
        assert verdict(phrase, quiet) == "hallucination", phrase
        assert verdict(phrase, spoken) is None, phrase  # voiced frames under it: real speech passes
    assert verdict("Thank you for watching.", spoken, no_speech=0.95) == "no_speech"
    assert verdict("Thank you for watching.", spoken, logprob=-2.0) == "low_logprob"
    assert verdict("I think I think I think I think I think", spoken) == "repetition"
    assert verdict("la la la la la la la la la la la la la la la", spoken, ratio=3.1) == "repetition"
    assert verdict("The quarterly results were better than we expected.", quiet) is None

    # A loop spread over segments, one turn each: the first stays, the repeats go.
    loop = tuple(
        TranscriptSegment(i * 0.5, i * 0.5 + 0.5, "Quarterly results,", -0.3, 0.1, 1.0) for i in range(6)
    )
    transcript = Transcript(text="", language="en", duration=3.0, segments=loop, encoder_frames=1000)
    filtered, dropped = noise_filter.apply(transcript, spoken)
    assert (
        filtered.text == "Quarterly results,"
        and {d.reason for d in dropped} == {"repetition"}
        and len(dropped) == 5
    )


async def test_queue_runs_finals_before_interims_and_sheds_interims_first() -> None:
    """The admission rules on plain blocking jobs: the order in which the one worker runs them."""
    queue = TranscriptionQueue(max_pending=2, workers=1, retry_after_s=1)
    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> Callable[[], str]:
        def run() -> str:
            if name == "busy":
                gate.wait(10)
            ran.append(name)
            return name

        return run

    try:
        busy = asyncio.create_task(queue.run(job("busy"), priority=Priority.FINAL))
        while queue.running == 0:
            await asyncio.sleep(0.01)
        interim_a = asyncio.create_task(queue.run(job("interim-a"), priority=Priority.INTERIM, stream_id="a"))
        interim_b = asyncio.create_task(queue.run(job("interim-b"), priority=Priority.INTERIM, stream_id="b"))
        await asyncio.sleep(0.01)
        # The queue is full of interims: a final evicts the newest one instead of being refused.
        final_1 = asyncio.create_task(queue.run(job("final-1"), priority=Priority.FINAL))
        await asyncio.sleep(0.01)
        with pytest.raises(InterimShed):
            await interim_b
        # While a final waits, no new interim is admitted.
        with pytest.raises(InterimShed):
            await queue.run(job("interim-c"), priority=Priority.INTERIM, stream_id="c")
        final_2 = asyncio.create_task(queue.run(job("final-2"), priority=Priority.FINAL))
        await asyncio.sleep(0.01)
        with pytest.raises(InterimShed):
            await interim_a  # evicted for final-2
        with pytest.raises(Overloaded) as overloaded:
            await queue.run(job("final-3"), priority=Priority.FINAL)
        assert overloaded.value.retry_after_s == 1 and queue.depth == 2
        gate.set()
        assert await asyncio.gather(busy, final_1, final_2) == ["busy", "final-1", "final-2"]
        assert ran == ["busy", "final-1", "final-2"] and queue.depth == 0
        # An idle queue runs interims again.
        assert await queue.run(job("interim-d"), priority=Priority.INTERIM, stream_id="d") == "interim-d"
    finally:
        gate.set()
        await queue.aclose()


async def test_streams_over_the_limit_get_overloaded_and_1013(whisper_tiny_queue: ServiceProcess) -> None:
    url = f"{whisper_tiny_queue.url}/v1/stream?sample_rate=16000"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as first,
        session.ws_connect(url) as second,
    ):
        await send_audio(first, silence(0.2))
        await send_audio(second, silence(0.2))
        deadline = time.monotonic() + 10
        while (await health(session, whisper_tiny_queue.url))["active_streams"] < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with session.ws_connect(url) as third:
            (event,) = await receive_until(third, "error")
            await third.receive(timeout=10)
        assert event["code"] == "overloaded" and third.close_code == 1013
        # The two admitted streams are unaffected.
        await first.send_str(json.dumps({"type": "flush"}))
        assert finals(await receive_until(first, "final"))[0]["text"] == ""
