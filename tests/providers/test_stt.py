"""WhisperSTT against the real whisper-stt sidecar as a subprocess on loopback, with real speech
spoken by the Piper voice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, APIError, APIStatusError, stt
from livekit.agents.language import LanguageCode
from livekit.agents.metrics import STTMetrics
from support.fault_proxy import Faults, fault_proxy

from eloquence.services import WHISPER_STT, ServiceProcess, check_health, free_port, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import silence, speak, speak_with_pause
from providers.stt import (
    SAMPLE_RATE,
    STREAM_CONNECT_OPTIONS,
    WhisperSTT,
    _ReplayBuffer,
    resolve_stt_url,
)
from providers.turn_transcript import TurnRevisions, unheard_tail
from sidecar_common.pcm import float_to_pcm16 as to_pcm16

# one inference thread: the box is shared
STT_ENV = {"WHISPER_CPU_THREADS": "1"}
SENTENCE = "The quick brown fox jumps over the lazy dog."
FIRST = "Good morning, I would like to practise my presentation."
SECOND = "Please tell me if I speak too quickly."
FRAME_MS = 20
# enough retries at 100 ms to ride out a sidecar restart (model load) on a busy box
RESTART_RETRY = APIConnectOptions(max_retry=900, retry_interval=0.1, timeout=5.0)
EVENT_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def stt_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(WHISPER_STT, service_log_dir, env=STT_ENV) as proc:
        yield proc


@pytest.fixture
async def whisper_stt(stt_service: ServiceProcess) -> AsyncIterator[WhisperSTT]:
    stt_v = WhisperSTT(base_url=stt_service.url, language="en")
    yield stt_v
    await stt_v.aclose()


def frames_of(samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> list[rtc.AudioFrame]:
    """Speech as a microphone delivers it: 20 ms frames of 16-bit mono PCM."""
    pcm = to_pcm16(samples)
    step = sample_rate * FRAME_MS // 1000
    out = []
    for start in range(0, len(samples), step):
        chunk = pcm[start * 2 : (start + step) * 2]
        out.append(
            rtc.AudioFrame(
                data=chunk, sample_rate=sample_rate, num_channels=1, samples_per_channel=len(chunk) // 2
            )
        )
    return out


async def push(stream: stt.RecognizeStream, frames: list[rtc.AudioFrame]) -> None:
    for i, frame in enumerate(frames):
        stream.push_frame(frame)
        if i % 10 == 0:
            await asyncio.sleep(0)  # let the stream send while we push


class EventLog:
    """Every SpeechEvent of one stream, and a way to wait for the n-th final."""

    def __init__(self, stream: stt.RecognizeStream) -> None:
        self.events: list[stt.SpeechEvent] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._collect(stream))

    async def _collect(self, stream: stt.RecognizeStream) -> None:
        try:
            async for ev in stream:
                self.events.append(ev)
                self._changed.set()
        except APIError as e:
            self.error = e
        finally:
            self._changed.set()

    def of(self, kind: stt.SpeechEventType) -> list[stt.SpeechEvent]:
        return [e for e in self.events if e.type == kind]

    @property
    def finals(self) -> list[str]:
        return [e.alternatives[0].text for e in self.of(stt.SpeechEventType.FINAL_TRANSCRIPT)]

    async def wait_finals(self, n: int) -> None:
        async def _wait() -> None:
            while len(self.finals) < n and not self._task.done():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), EVENT_TIMEOUT_S)
        assert len(self.finals) >= n, f"stream ended with finals {self.finals} ({self.error!r})"

    async def done(self) -> None:
        await asyncio.wait_for(self._task, EVENT_TIMEOUT_S)


async def test_recognize_transcribes_a_wav_over_http(whisper_stt: WhisperSTT) -> None:
    metrics: list[STTMetrics] = []
    whisper_stt.on("metrics_collected", metrics.append)
    speech = speak(SENTENCE)

    event = await whisper_stt.recognize(frames_of(speech))

    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT and event.request_id
    assert wer(SENTENCE, event.alternatives[0].text) <= 0.15, event.alternatives[0].text
    assert event.alternatives[0].language == "en"
    assert len(metrics) == 1 and metrics[0].audio_duration == pytest.approx(
        len(speech) / SAMPLE_RATE, abs=0.03
    )


async def test_stream_transcribes_speech_with_events_in_order(whisper_stt: WhisperSTT) -> None:
    # a 48 kHz microphone: the stream resamples to the sidecar's 16 kHz
    audio = np.concatenate(
        [silence(0.3, sample_rate=48000), speak(SENTENCE, sample_rate=48000), silence(1.0, sample_rate=48000)]
    )
    stream = whisper_stt.stream()
    log = EventLog(stream)
    await push(stream, frames_of(audio, sample_rate=48000))
    stream.end_input()
    await log.done()
    await stream.aclose()

    assert log.error is None
    text = " ".join(t for t in log.finals if t)
    assert wer(SENTENCE, text) <= 0.15, log.finals
    kinds = [e.type for e in log.events if e.type != stt.SpeechEventType.RECOGNITION_USAGE]
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH
    first_final = kinds.index(stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert set(kinds[1:first_final]) <= {stt.SpeechEventType.INTERIM_TRANSCRIPT}
    assert stt.SpeechEventType.END_OF_SPEECH in kinds[first_final:]
    assert (
        len(log.of(stt.SpeechEventType.START_OF_SPEECH))
        == len(log.of(stt.SpeechEventType.END_OF_SPEECH))
        == 1
    )
    final = log.of(stt.SpeechEventType.FINAL_TRANSCRIPT)[0].alternatives[0]
    assert 0.0 <= final.start_time < final.end_time <= len(audio) / 48000 + 0.05
    assert 0.0 < final.confidence <= 1.0
    usage = sum(e.recognition_usage.audio_duration for e in log.of(stt.SpeechEventType.RECOGNITION_USAGE))  # type: ignore[union-attr]
    assert usage == pytest.approx(len(audio) / 48000, abs=0.05)


async def test_manual_flush_finalizes_the_utterance_at_once(whisper_stt: WhisperSTT) -> None:
    assert whisper_stt.capabilities.manual_flush
    stream = whisper_stt.stream()
    log = EventLog(stream)

    # no trailing silence: only the flush (the agent's VAD end of speech) can end this utterance
    await push(stream, frames_of(speak(FIRST)))
    stream.flush()
    await log.wait_finals(1)
    assert wer(FIRST, log.finals[0]) <= 0.15, log.finals

    await push(stream, frames_of(speak(SECOND)))
    stream.flush()
    await log.wait_finals(2)
    assert wer(SECOND, log.finals[1]) <= 0.15, log.finals

    stream.end_input()
    await log.done()
    await stream.aclose()
    assert log.error is None
    assert len(log.finals) == 3 and log.finals[2] == ""  # end_input flushes once more: an empty final


async def test_a_sentence_cut_by_a_pause_reaches_the_turn_whole(whisper_stt: WhisperSTT) -> None:
    first, rest = "I want to get better at", "presenting to my team."
    sentence = f"{first} {rest}"
    audio = np.concatenate([speak_with_pause(first, rest, 0.6), silence(0.2)])
    voiced = np.flatnonzero(audio)
    gaps = np.diff(voiced)
    in_pause = int(voiced[np.argmax(gaps)]) + int(0.3 * SAMPLE_RATE)  # the agent's VAD flushes here
    frames = frames_of(audio)
    cut = in_pause // (SAMPLE_RATE * FRAME_MS // 1000)
    stream = whisper_stt.stream()
    log = EventLog(stream)
    await push(stream, frames[:cut])
    stream.flush()
    await log.wait_finals(1)
    await push(stream, frames[cut:])
    stream.flush()
    await log.wait_finals(2)
    await stream.aclose()

    revisions = TurnRevisions()
    for event in log.events:
        revisions.observe(event)
    # what the framework puts together from the finals: the start as first heard, then new words only
    heard = " ".join(text for text in log.finals if text)
    assert wer(first, log.finals[0]) > 0, log.finals  # the first half alone is mis-heard
    assert len(heard.split()) <= len(sentence.split()), log.finals  # no word twice
    whole = revisions.revise(heard)
    assert whole != heard and wer(sentence, whole) <= 0.05, (heard, whole)
    final = log.of(stt.SpeechEventType.FINAL_TRANSCRIPT)[1].alternatives[0]
    assert final.metadata == {"turn_transcript": whole, "heard": heard}
    assert revisions.revise(heard) == heard  # used once: the turn is over


def test_unheard_tail_is_what_the_whole_transcript_adds() -> None:
    assert unheard_tail(
        "Can you give me some tips for my...", "Can you give me some tips for my next job?"
    ) == ("next job?")
    # a mis-heard last word is replaced by the whole transcript, never said twice
    assert unheard_tail(
        "I want to get better at present.", "I want to get better at presenting to my team."
    ) == ("to my team.")
    assert unheard_tail("", "Hello there.") == "Hello there."
    assert unheard_tail("Hello there.", "Hello there.") == ""


def test_turn_revisions_replace_only_the_tail_that_was_heard_split() -> None:
    revisions = TurnRevisions()
    final = stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        alternatives=[
            stt.SpeechData(
                language=LanguageCode("en"),
                text="to my team.",
                metadata={
                    "turn_transcript": "I want to get better at presenting to my team.",
                    "heard": "I want to get better at present. to my team.",
                },
            )
        ],
    )
    revisions.observe(final)
    revisions.observe(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))
    assert revisions.revise("Something else.") == "Something else."
    assert revisions.revise("Hi. I want to get better at present. to my team.") == (
        "Hi. I want to get better at presenting to my team."
    )


async def test_flush_without_speech_answers_one_empty_final(whisper_stt: WhisperSTT) -> None:
    stream = whisper_stt.stream()
    log = EventLog(stream)
    await push(stream, frames_of(silence(1.0)))
    stream.flush()
    await log.wait_finals(1)
    await asyncio.sleep(0.3)  # nothing else may follow
    await stream.aclose()

    assert log.finals == [""]
    assert log.of(stt.SpeechEventType.START_OF_SPEECH) == []


async def test_reconnect_mid_utterance_loses_no_word_and_repeats_no_final(
    service_log_dir: Path,
) -> None:
    port = free_port()
    log_path = service_log_dir / "whisper-stt-restart.log"
    proc = ServiceProcess(definition=WHISPER_STT, port=port, log_path=log_path, env=STT_ENV)
    proc.start()
    restarted: ServiceProcess | None = None
    stt_v = WhisperSTT(base_url=proc.url, language="en")
    errors: list[stt.STTError] = []
    stt_v.on("error", errors.append)
    try:
        await proc.wait_healthy_async(180)
        stream = stt_v.stream(conn_options=RESTART_RETRY)
        log = EventLog(stream)

        # a first utterance, finalized before the crash: it must not be transcribed again
        await push(stream, frames_of(speak(FIRST)))
        stream.flush()
        await log.wait_finals(1)

        # the second utterance is cut by the crash: half before, half while the sidecar is down
        second = frames_of(speak(SECOND))
        half = len(second) // 2
        await push(stream, second[:half])
        await asyncio.sleep(0.5)  # the first half reaches the sidecar (and is consumed)
        proc.kill()
        await push(stream, second[half:])
        restarted = ServiceProcess(definition=WHISPER_STT, port=port, log_path=log_path, env=STT_ENV)
        await asyncio.to_thread(restarted.start)
        await restarted.wait_healthy_async(180)
        stream.flush()
        await log.wait_finals(2)
        stream.end_input()
        await log.done()
        await stream.aclose()
    finally:
        await stt_v.aclose()
        proc.stop()
        if restarted is not None:
            restarted.stop()

    assert log.error is None
    spoken = [t for t in log.finals if t]
    assert len(spoken) == 2, log.finals
    assert wer(FIRST, spoken[0]) <= 0.15 and wer(SECOND, spoken[1]) <= 0.15, spoken
    assert len(log.of(stt.SpeechEventType.START_OF_SPEECH)) == 2  # the replay does not start speech again
    assert errors and all(e.recoverable for e in errors)


async def test_a_cut_between_flush_and_final_gives_exactly_one_final(stt_service: ServiceProcess) -> None:
    # the flush reaches the sidecar, then the connection drops before its final comes back
    faults = Faults(ws_cut_after_client_text='"flush"')
    async with (
        fault_proxy(stt_service.url, faults) as proxy,
        WhisperSTT(base_url=proxy.url, language="en") as stt_v,
    ):
        errors: list[stt.STTError] = []
        stt_v.on("error", errors.append)
        stream = stt_v.stream()
        log = EventLog(stream)
        await push(stream, frames_of(speak(SENTENCE)))
        stream.flush()
        await log.wait_finals(1)
        stream.end_input()
        await log.done()
        await stream.aclose()

    assert proxy.faults.ws_cuts == 1 and proxy.faults.ws_sessions == 2
    assert log.error is None
    # the utterance and its flush were re-sent on the new socket: one final for it, then end_input's
    assert len(log.finals) == 2 and log.finals[1] == "", log.finals
    assert wer(SENTENCE, log.finals[0]) <= 0.15, log.finals
    assert len(log.of(stt.SpeechEventType.START_OF_SPEECH)) == 1
    assert len(log.of(stt.SpeechEventType.END_OF_SPEECH)) == 1
    assert [e.recoverable for e in errors] == [True]


async def test_unsupported_language_is_a_clear_error_not_retried(stt_service: ServiceProcess) -> None:
    async with WhisperSTT(base_url=stt_service.url, language="xx") as stt_v:
        errors: list[stt.STTError] = []
        stt_v.on("error", errors.append)
        with pytest.raises(APIStatusError) as http_error:
            await stt_v.recognize(frames_of(speak(SENTENCE)))
        assert http_error.value.status_code == 400 and not http_error.value.retryable

        stream = stt_v.stream()
        log = EventLog(stream)
        # the sidecar refuses the language at connect time, so the stream may fail (and close)
        # while the audio is still being pushed: a closed stream refuses more frames
        with contextlib.suppress(RuntimeError):
            await push(stream, frames_of(speak(SENTENCE)))
            stream.end_input()
        await log.done()
        await stream.aclose()

    assert isinstance(log.error, APIError) and not log.error.retryable
    assert "language" in str(log.error).lower()
    assert [e.recoverable for e in errors] == [False, False]
    assert check_health(stt_service.health_url)[0]


async def test_agent_default_options_become_fast_reconnects(stt_service: ServiceProcess) -> None:
    async with WhisperSTT(base_url=stt_service.url) as stt_v:
        default = stt_v.stream(conn_options=DEFAULT_API_CONNECT_OPTIONS)
        explicit = stt_v.stream(conn_options=RESTART_RETRY)
        assert default._conn_options is STREAM_CONNECT_OPTIONS
        assert explicit._conn_options is RESTART_RETRY
        assert STREAM_CONNECT_OPTIONS._interval_for_retry(1) <= 0.1
        await default.aclose()
        await explicit.aclose()


def test_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHISPER_STT_URL", raising=False)
    assert resolve_stt_url() == "http://127.0.0.1:8001"
    monkeypatch.setenv("WHISPER_STT_URL", "http://stt:8001/")
    assert resolve_stt_url() == "http://stt:8001"
    assert resolve_stt_url("http://explicit:1") == "http://explicit:1"


def test_replay_buffer_keeps_exactly_the_unfinalized_audio() -> None:
    buf = _ReplayBuffer(max_samples=SAMPLE_RATE * 10)
    buf.add_audio(b"\x01\x00" * 100)  # samples 0..100
    buf.add_audio(b"\x02\x00" * 100)  # 100..200
    buf.finalized(until=150, answered_flush=False)  # a VAD final ending inside the 2nd chunk
    assert buf.start == 150 and buf.replay() == [b"\x02\x00" * 50]

    buf.add_flush()  # at 200
    buf.add_audio(b"\x03\x00" * 100)  # 200..300, after the flush
    assert buf.pending_flushes == 1
    buf.finalized(until=180, answered_flush=True)  # the flush's final: all before 200 is done
    assert buf.start == 200 and buf.pending_flushes == 0
    assert buf.replay() == [b"\x03\x00" * 100]

    full = _ReplayBuffer(max_samples=100)
    full.add_audio(b"\x00\x00" * 80)
    full.add_audio(b"\x00\x00" * 80)  # over the bound: the oldest audio goes
    assert full.start == 60 and sum(len(b) for b in full.replay() if b) == 200
