"""AzureTTS against the real azure-tts sidecar (Piper engine) as a subprocess on loopback.

The regression suite for "AudioEmitter isn't started": every case asserts that no RuntimeError is
raised or logged, then what livekit's own tests/test_tts.py checks: one request_id per attempt,
only the last frame of a segment final, one segment id per segment, frame durations, and the
metrics events the framework emits for that case.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIError, APIStatusError, tts
from livekit.agents.metrics import TTSMetrics
from support.fault_proxy import Faults, fault_proxy

from eloquence.services import AZURE_TTS, ServiceProcess, check_health, free_port, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import PIPER_NO_NOISE_ENV, transcribe
from providers.tts import AzureTTS, resolve_tts_url
from sidecar_common.pcm import pcm16_to_float

# Piper, one thread: the box is shared.
# Piper without noise: a transcript scored here is the same on every run.
TTS_ENV = {"TTS_ENGINE": "piper", "PIPER_THREADS": "1", **PIPER_NO_NOISE_ENV}
# quick retries, so that a retried attempt does not slow the suite
FAST_RETRY = APIConnectOptions(max_retry=3, retry_interval=0.05, timeout=15.0)
# more turns than the sidecar has synthesis slots: back off and retry until a slot frees up
OVERLOAD_RETRY = APIConnectOptions(max_retry=60, retry_interval=0.25, timeout=15.0)

SHORT = "Good morning, and welcome back."
TWO_SENTENCES = "The weather is lovely today. Let us practise your presentation."
LONG = (
    "Thank you for joining this coaching session about public speaking. "
    "First, we will warm up your voice with a few simple sentences. "
    "Then you will present the opening of your talk to an imaginary audience. "
    "After that, I will give you feedback on your pace, your pauses and your clarity. "
    "Finally, we will repeat the exercise and compare the two attempts together. "
    "Remember to breathe slowly and to look at the people in the room."
)
CONCURRENT_TEXTS = [
    "Please open the window.",
    "The meeting starts at nine.",
    "I would like a cup of tea.",
    "Speak a little more slowly.",
    "Your opening was very clear.",
    "We will try again tomorrow.",
]


@pytest.fixture(scope="module")
def tts_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(AZURE_TTS, service_log_dir, env=TTS_ENV) as proc:
        yield proc


@pytest.fixture
async def azure_tts(tts_service: ServiceProcess) -> AsyncIterator[AzureTTS]:
    tts_v = AzureTTS(base_url=tts_service.url)
    yield tts_v
    await tts_v.aclose()


@dataclass
class Recorder:
    """The metrics and error events one TTS emits."""

    metrics: list[TTSMetrics] = field(default_factory=list)
    errors: list[tts.TTSError] = field(default_factory=list)

    @classmethod
    def on(cls, tts_v: tts.TTS) -> Recorder:
        rec = cls()
        tts_v.on("metrics_collected", rec.metrics.append)
        tts_v.on("error", rec.errors.append)
        return rec


@dataclass
class StreamResult:
    events: list[tts.SynthesizedAudio]
    error: BaseException | None = None


def tokens(text: str) -> list[str]:
    """Text as an LLM streams it: word by word, spaces kept."""
    return re.findall(r"\S+\s*", text) or ([text] if text else [])


async def run_stream(
    tts_v: tts.TTS,
    text: str,
    *,
    conn_options: APIConnectOptions = FAST_RETRY,
    stop_after_frames: int | None = None,
    on_frame: Any = None,
) -> StreamResult:
    """Push `text` token by token, end the input and collect the frames; stop early (an
    interruption) after `stop_after_frames`."""
    stream = tts_v.stream(conn_options=conn_options)
    for token in tokens(text):
        stream.push_text(token)
    stream.end_input()
    result = StreamResult(events=[])
    try:
        async for ev in stream:
            result.events.append(ev)
            if on_frame is not None:
                on_frame(len(result.events))
            if stop_after_frames is not None and len(result.events) >= stop_after_frames:
                break
    except APIError as e:
        result.error = e
    finally:
        await stream.aclose()
    return result


async def run_synthesize(
    tts_v: tts.TTS, text: str, *, conn_options: APIConnectOptions = FAST_RETRY, on_frame: Any = None
) -> StreamResult:
    result = StreamResult(events=[])
    stream = tts_v.synthesize(text, conn_options=conn_options)
    try:
        async for ev in stream:
            result.events.append(ev)
            if on_frame is not None:
                on_frame(len(result.events))
    except APIError as e:
        result.error = e
    finally:
        await stream.aclose()
    return result


def assert_no_runtime_error(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing raised *or logged* a RuntimeError (the emitter's tasks only log theirs)."""
    bad = [
        r
        for r in caplog.records
        if (r.exc_info and isinstance(r.exc_info[1], RuntimeError))
        or "isn't started" in r.getMessage()
        or "start_segment()" in r.getMessage()
        or (r.name == "asyncio" and r.levelno >= logging.ERROR)
    ]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def check_frames(
    events: list[tts.SynthesizedAudio], *, sample_rate: int, streamed: bool, completed: bool = True
) -> None:
    """What livekit's tests/test_tts.py checks, for one request (= one segment here)."""
    assert events, "expected audio"
    request_ids = {e.request_id for e in events}
    assert len(request_ids) == 1 and all(request_ids), f"one request_id per attempt, got {request_ids}"
    by_segment: dict[str, list[tts.SynthesizedAudio]] = defaultdict(list)
    for e in events:
        by_segment[e.segment_id].append(e)
    assert len(by_segment) == 1, f"one segment id per segment, got {list(by_segment)}"
    if streamed:
        assert all(e.segment_id for e in events), "streamed frames carry a segment id"
    *head, last = events
    assert not any(e.is_final for e in head), "only the last frame of a segment may be final"
    assert last.is_final is completed
    for e in events:
        assert 0.0 < e.frame.duration < 0.25, f"frame of {e.frame.duration * 1000:.1f} ms"
        assert e.frame.sample_rate == sample_rate
        assert e.frame.num_channels == 1


def audio_of(events: list[tts.SynthesizedAudio]) -> tuple[np.ndarray, int]:
    frame = rtc.combine_audio_frames([e.frame for e in events])
    return pcm16_to_float(frame.data.tobytes()), frame.sample_rate


async def assert_speaks(events: list[tts.SynthesizedAudio], text: str, *, max_wer: float = 0.2) -> None:
    samples, rate = audio_of(events)
    heard = await asyncio.to_thread(transcribe, samples, sample_rate=rate)
    assert wer(text, heard) <= max_wer, f"said {text!r}, heard {heard!r}"


def duration_of(events: list[tts.SynthesizedAudio]) -> float:
    return sum(e.frame.duration for e in events)


# --- the normal paths -------------------------------------------------------------------------


async def test_synthesize_streams_the_spoken_text(
    azure_tts: AzureTTS, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.on(azure_tts)
    result = await run_synthesize(azure_tts, TWO_SENTENCES)

    assert result.error is None
    check_frames(result.events, sample_rate=24000, streamed=False)
    assert len(rec.metrics) == 1 and not rec.errors
    m = rec.metrics[0]
    assert m.request_id == result.events[0].request_id
    assert 0 < m.ttfb < m.duration
    assert m.audio_duration == pytest.approx(duration_of(result.events), abs=0.011)
    await assert_speaks(result.events, TWO_SENTENCES)
    assert_no_runtime_error(caplog)


async def test_stream_speaks_token_by_token_text_as_one_segment(
    azure_tts: AzureTTS, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.on(azure_tts)
    result = await run_stream(azure_tts, TWO_SENTENCES)

    assert result.error is None
    check_frames(result.events, sample_rate=24000, streamed=True)
    assert len(rec.metrics) == 1 and not rec.errors
    assert rec.metrics[0].segment_id == result.events[0].segment_id
    assert rec.metrics[0].streamed and rec.metrics[0].ttfb > 0
    await assert_speaks(result.events, TWO_SENTENCES)
    assert_no_runtime_error(caplog)


@pytest.mark.parametrize("sample_rate", [16000, 24000])
async def test_audio_comes_at_the_declared_sample_rate(tts_service: ServiceProcess, sample_rate: int) -> None:
    async with AzureTTS(base_url=tts_service.url, sample_rate=sample_rate) as tts_v:
        assert tts_v.sample_rate == sample_rate and tts_v.num_channels == 1
        chunked = await run_synthesize(tts_v, SHORT)
        streamed = await run_stream(tts_v, SHORT)
    check_frames(chunked.events, sample_rate=sample_rate, streamed=False)
    check_frames(streamed.events, sample_rate=sample_rate, streamed=True)


async def test_a_different_x_sample_rate_is_an_error_not_retried(tts_service: ServiceProcess) -> None:
    faults = Faults(response_headers={"X-Sample-Rate": "16000"})
    async with fault_proxy(tts_service.url, faults) as proxy, AzureTTS(base_url=proxy.url) as tts_v:
        rec = Recorder.on(tts_v)
        result = await run_synthesize(tts_v, SHORT)

    assert isinstance(result.error, APIError) and not result.error.retryable
    assert "X-Sample-Rate=16000" in str(result.error)
    assert result.events == []
    assert proxy.faults.http_requests == 1  # not retried
    assert [e.recoverable for e in rec.errors] == [False]


# --- empty input -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", " \n\t "], ids=["empty", "space", "whitespace"])
async def test_empty_or_whitespace_text_is_silence_without_a_request(
    tts_service: ServiceProcess, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with fault_proxy(tts_service.url) as proxy, AzureTTS(base_url=proxy.url) as tts_v:
        rec = Recorder.on(tts_v)
        chunked = await run_synthesize(tts_v, text)
        streamed = await run_stream(tts_v, text)
        flushed_only = tts_v.stream()  # flush and end with no text at all
        flushed_only.flush()
        flushed_only.end_input()
        nothing = [ev async for ev in flushed_only]

    assert chunked.error is None and streamed.error is None
    assert chunked.events == [] and streamed.events == [] and nothing == []
    assert not rec.errors
    # the framework reports a ChunkedStream always, and a streamed segment only once it has audio
    assert len(rec.metrics) == 1 and rec.metrics[0].audio_duration == 0.0 and not rec.metrics[0].streamed
    assert proxy.faults.http_requests == 0 and proxy.faults.ws_sessions == 0
    assert_no_runtime_error(caplog)


# --- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
async def test_cancel_before_the_first_byte(
    azure_tts: AzureTTS, tts_service: ServiceProcess, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.on(azure_tts)
    if mode == "stream":
        stream: tts.SynthesizeStream | tts.ChunkedStream = azure_tts.stream(conn_options=FAST_RETRY)
        for token in tokens(LONG):
            stream.push_text(token)
        stream.end_input()
    else:
        stream = azure_tts.synthesize(LONG, conn_options=FAST_RETRY)
    await asyncio.sleep(0)  # let the request start, then interrupt it
    await stream.aclose()

    assert not rec.errors
    if mode == "synthesize":  # the framework reports a cancelled ChunkedStream once
        assert len(rec.metrics) == 1 and rec.metrics[0].cancelled and rec.metrics[0].audio_duration == 0
    else:
        assert rec.metrics == []
    assert check_health(tts_service.health_url)[0]
    # the instance (and its pooled socket) still works
    after = await run_stream(azure_tts, SHORT)
    check_frames(after.events, sample_rate=24000, streamed=True)
    assert_no_runtime_error(caplog)


async def test_interruption_mid_stream_drops_late_audio(
    azure_tts: AzureTTS, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.on(azure_tts)
    interrupted = await run_stream(azure_tts, LONG, stop_after_frames=3)
    check_frames(interrupted.events, sample_rate=24000, streamed=True, completed=False)
    assert rec.metrics == [] and not rec.errors

    # the next turn on the same instance hears only itself: none of the interrupted audio
    after = await run_stream(azure_tts, SHORT)
    assert after.error is None
    check_frames(after.events, sample_rate=24000, streamed=True)
    assert after.events[0].request_id != interrupted.events[0].request_id
    assert after.events[0].segment_id != interrupted.events[0].segment_id
    assert duration_of(after.events) < 4.0  # LONG is about 25 s of speech
    await assert_speaks(after.events, SHORT)
    assert len(rec.metrics) == 1
    assert_no_runtime_error(caplog)


# --- sidecar failures --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
async def test_sidecar_error_before_the_first_byte_is_retried(
    tts_service: ServiceProcess, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults = Faults(http_503=1) if mode == "synthesize" else Faults(ws_overloaded=1)
    async with fault_proxy(tts_service.url, faults) as proxy, AzureTTS(base_url=proxy.url) as tts_v:
        rec = Recorder.on(tts_v)
        if mode == "synthesize":
            result = await run_synthesize(tts_v, SHORT)
        else:
            result = await run_stream(tts_v, SHORT)

    assert result.error is None
    check_frames(result.events, sample_rate=24000, streamed=mode == "stream")
    attempts = proxy.faults.http_requests if mode == "synthesize" else proxy.faults.ws_sessions
    assert attempts == 2
    assert [e.recoverable for e in rec.errors] == [True]
    assert len(rec.metrics) == 1 and rec.metrics[0].request_id == result.events[0].request_id
    await assert_speaks(result.events, SHORT)
    assert_no_runtime_error(caplog)


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
async def test_sidecar_dying_mid_stream_fails_cleanly(
    service_log_dir: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    proc = ServiceProcess(
        definition=AZURE_TTS,
        port=free_port(),
        log_path=service_log_dir / f"azure-tts-dies-{mode}.log",
        env=TTS_ENV,
    )
    proc.start()
    try:
        await proc.wait_healthy_async(180)
        async with AzureTTS(base_url=proc.url) as tts_v:
            rec = Recorder.on(tts_v)

            def kill_on_first_frame(n: int) -> None:
                if n == 1:
                    proc.kill()

            if mode == "synthesize":
                result = await run_synthesize(tts_v, LONG, on_frame=kill_on_first_frame)
            else:
                result = await run_stream(tts_v, LONG, on_frame=kill_on_first_frame)
    finally:
        proc.stop()

    assert isinstance(result.error, APIConnectionError | APIStatusError), result.error
    check_frames(result.events, sample_rate=24000, streamed=mode == "stream", completed=False)
    # audio had been pushed, so the framework must not retry (it would repeat words)
    assert [e.recoverable for e in rec.errors] == [False]
    assert rec.metrics == []
    assert_no_runtime_error(caplog)


# --- several turns and concurrency -------------------------------------------------------------


async def test_several_segments_as_several_streams_in_a_row(
    azure_tts: AzureTTS, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.on(azure_tts)
    texts = ["Hello there.", "How was your week?", "Let us begin the exercise."]
    results = [await run_stream(azure_tts, text) for text in texts]

    for result in results:
        assert result.error is None
        check_frames(result.events, sample_rate=24000, streamed=True)
    assert len({r.events[0].request_id for r in results}) == 3
    assert len({r.events[0].segment_id for r in results}) == 3
    assert len(rec.metrics) == 3 and not rec.errors
    assert [m.segment_id for m in rec.metrics] == [r.events[0].segment_id for r in results]
    # one pooled socket serves the turns one after another
    assert all(m.connection_reused for m in rec.metrics[1:])
    for result, text in zip(results, texts, strict=True):
        await assert_speaks(result.events, text)
    assert_no_runtime_error(caplog)


async def test_many_concurrent_streams_each_get_their_own_audio(
    azure_tts: AzureTTS, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.on(azure_tts)
    streamed = [run_stream(azure_tts, text, conn_options=OVERLOAD_RETRY) for text in CONCURRENT_TEXTS]
    chunked = [run_synthesize(azure_tts, text, conn_options=OVERLOAD_RETRY) for text in CONCURRENT_TEXTS[:2]]
    results = await asyncio.gather(*streamed, *chunked)

    for i, result in enumerate(results):
        assert result.error is None, result.error
        check_frames(result.events, sample_rate=24000, streamed=i < len(streamed))
    assert len({r.events[0].request_id for r in results}) == len(results)
    assert len(rec.metrics) == len(results)
    assert all(e.recoverable for e in rec.errors)  # only overload retries, if any
    # each stream carries its own sentence: the transcript is closest to its own text
    texts = CONCURRENT_TEXTS + CONCURRENT_TEXTS[:2]
    for result, text in zip(results, texts, strict=True):
        samples, rate = audio_of(result.events)
        heard = await asyncio.to_thread(transcribe, samples, sample_rate=rate)
        closest = min(CONCURRENT_TEXTS, key=lambda candidate: wer(candidate, heard))
        assert closest == text and wer(text, heard) <= 0.5, f"said {text!r}, heard {heard!r}"
    assert_no_runtime_error(caplog)


# --- options and bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
async def test_unknown_voice_is_a_clear_error_and_not_retried(
    tts_service: ServiceProcess, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with AzureTTS(base_url=tts_service.url, voice="no-such-voice") as tts_v:
        rec = Recorder.on(tts_v)
        run = run_synthesize if mode == "synthesize" else run_stream
        result = await run(tts_v, SHORT)
        tts_v.update_options(voice=None)
        recovered = await run(tts_v, SHORT)

    assert isinstance(result.error, APIError) and not result.error.retryable
    assert "voice" in str(result.error).lower()
    assert result.events == []
    assert [e.recoverable for e in rec.errors] == [False]
    check_frames(recovered.events, sample_rate=24000, streamed=mode == "stream")
    assert_no_runtime_error(caplog)


async def test_options_are_sent_and_update_only_later_requests(tts_service: ServiceProcess) -> None:
    async with fault_proxy(tts_service.url) as proxy:
        tts_v = AzureTTS(base_url=proxy.url, context="greeting", language="en", sample_rate=16000)
        early = tts_v.stream()  # snapshot before the update
        tts_v.update_options(context="coaching")
        await run_synthesize(tts_v, SHORT)
        for token in tokens(SHORT):
            early.push_text(token)
        early.end_input()
        early_events = [ev async for ev in early]
        await early.aclose()
        await run_stream(tts_v, SHORT)
        await tts_v.aclose()

    bodies = [m for m in proxy.faults.client_messages if isinstance(m, dict)]
    http = [m for m in bodies if "text" in m and "type" not in m]
    configs = [m for m in bodies if m.get("type") == "config"]
    assert http == [
        {"text": SHORT, "format": "pcm", "sample_rate": 16000, "context": "coaching", "language": "en"}
    ]
    assert [(c["context"], c["sample_rate"], c["language"]) for c in configs] == [
        ("greeting", 16000, "en"),
        ("coaching", 16000, "en"),
    ]
    assert early_events and early_events[-1].is_final


async def test_prewarm_opens_the_socket_before_the_first_turn(tts_service: ServiceProcess) -> None:
    async with fault_proxy(tts_service.url) as proxy, AzureTTS(base_url=proxy.url) as tts_v:
        rec = Recorder.on(tts_v)
        tts_v.prewarm()
        for _ in range(100):
            if proxy.faults.ws_sessions:
                break
            await asyncio.sleep(0.02)
        assert proxy.faults.ws_sessions == 1
        result = await run_stream(tts_v, SHORT)

    check_frames(result.events, sample_rate=24000, streamed=True)
    assert proxy.faults.ws_sessions == 1
    assert rec.metrics[0].connection_reused and rec.metrics[0].acquire_time == 0.0


async def test_a_pooled_socket_closed_while_idle_is_replaced_without_a_failed_attempt(
    tts_service: ServiceProcess,
) -> None:
    # the sidecar closes the socket once it is back in the pool (as its heartbeat does to an idle one)
    faults = Faults(ws_close_after_server_text="segment_end")
    async with fault_proxy(tts_service.url, faults) as proxy, AzureTTS(base_url=proxy.url) as tts_v:
        rec = Recorder.on(tts_v)
        first = await run_stream(tts_v, SHORT)
        for _ in range(100):  # the idle socket sees the close
            if proxy.faults.ws_server_closes:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        second = await run_stream(tts_v, TWO_SENTENCES)

    assert proxy.faults.ws_server_closes == 1
    check_frames(first.events, sample_rate=24000, streamed=True)
    check_frames(second.events, sample_rate=24000, streamed=True)
    assert not rec.errors  # no failed attempt, no retry: the dead socket was never used
    assert proxy.faults.ws_sessions == 2
    assert not rec.metrics[1].connection_reused


def test_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_TTS_URL", raising=False)
    monkeypatch.delenv("PIPER_TTS_URL", raising=False)
    assert resolve_tts_url() == "http://127.0.0.1:5002"
    monkeypatch.setenv("PIPER_TTS_URL", "http://piper:5002/")
    assert resolve_tts_url() == "http://piper:5002"
    monkeypatch.setenv("AZURE_TTS_URL", "http://tts:5002")
    assert resolve_tts_url() == "http://tts:5002"
    assert resolve_tts_url("http://explicit:1") == "http://explicit:1"
    with pytest.raises(ValueError, match="sample_rate"):
        AzureTTS(sample_rate=44100)
