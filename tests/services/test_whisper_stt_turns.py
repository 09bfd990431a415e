"""whisper-stt: speculative finals at a pause, and turn context (a sentence cut by a pause heard whole).

The real server as a subprocess, the real model, real speech from Piper; the queue's rules on plain
blocking jobs.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from eloquence.services import WHISPER_STT, ServiceProcess, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import silence, speak, speak_with_pause
from sidecar_common.pcm import float_to_pcm16
from whisper_stt.transcription_queue import InterimShed, Priority, TranscriptionQueue
from whisper_stt.vad import (
    AudioHistory,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceSegmenter,
)

FIRST, REST = "I want to get better at", "presenting to my team."
SENTENCE = "The quarterly results were better than we expected."
FLUSH_AFTER_PAUSE_S = 0.3  # where the agent's VAD flushes: its silence window into the pause


@pytest.fixture(scope="module")
def whisper(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {"WHISPER_CPU_THREADS": "2", "WHISPER_SPECULATIVE_PAUSE_MS": "120"}
    with running_service(WHISPER_STT, service_log_dir / "turns", env=env) as service:
        yield service


def pause_start(audio: np.ndarray) -> int:
    """The first sample of the longest run of digital silence after the speech began."""
    speech = int(np.flatnonzero(audio)[0])
    zero = np.concatenate([[False], audio[speech:] == 0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    longest = int(np.argmax(ends - starts))
    return speech + int(starts[longest])


async def send(
    ws: aiohttp.ClientWebSocketResponse, audio: np.ndarray, *, flush_at: int | None = None
) -> None:
    """20 ms frames as fast as the socket takes them; a flush after the frame that reaches `flush_at`."""
    pcm = float_to_pcm16(audio)
    step = 320
    for at in range(0, len(audio), step):
        await ws.send_bytes(pcm[at * 2 : (at + step) * 2])
        if flush_at is not None and at < flush_at <= at + step:
            await ws.send_str(json.dumps({"type": "flush"}))


async def finals_until_flushed(ws: aiohttp.ClientWebSocketResponse, flushes: int) -> list[dict[str, Any]]:
    """Every final up to the one that answers the `flushes`-th flush."""
    finals: list[dict[str, Any]] = []
    while flushes:
        msg = await ws.receive(timeout=60)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, finals)
        event = json.loads(msg.data)
        assert event["type"] != "error", event
        if event["type"] == "final":
            finals.append(event)
            flushes -= event["reason"] == "flush"
    return finals


async def passes(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """Transcription passes run so far, by kind (final, speculative, interim), from /metrics."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    pattern = re.compile(r'^whisper_inference_seconds_count\{kind="(\w+)"\} (\S+)$', re.MULTILINE)
    return {kind: int(float(n)) for kind, n in pattern.findall(text)}


async def wait_for_passes(session: aiohttp.ClientSession, url: str, kind: str, count: int) -> None:
    async def reached() -> None:
        while (await passes(session, url)).get(kind, 0) < count:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reached(), 60)


async def test_turn_context_transcribes_a_sentence_cut_by_a_pause_whole(whisper: ServiceProcess) -> None:
    audio = np.concatenate([speak_with_pause(FIRST, REST, 0.6), silence(0.3)])
    flush_at = pause_start(audio) + int(FLUSH_AFTER_PAUSE_S * 16000)
    reference = f"{FIRST} {REST}"
    results: dict[str, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession() as session:
        for context in ("utterance", "turn"):
            url = f"{whisper.url}/v1/stream?sample_rate=16000&context={context}"
            async with session.ws_connect(url) as ws:
                await send(ws, audio, flush_at=flush_at)
                await ws.send_str(json.dumps({"type": "flush"}))
                results[context] = [f for f in await finals_until_flushed(ws, 2) if f["text"]]

    split = results["utterance"]
    assert len(split) == 2 and all("replaces" not in f for f in split), split
    # each half alone is mis-heard: the precondition that makes this fixture worth testing
    assert wer(FIRST, split[0]["text"]) > 0, split
    assert wer(reference, " ".join(f["text"] for f in split)) > 0.15, split

    first, whole = results["turn"]
    assert first["text"] == split[0]["text"] and first["replaces"] == []
    assert first["turn_start_s"] == first["start_s"]
    assert whole["replaces"] == [first["utterance_id"]] and whole["turn_start_s"] == first["start_s"]
    assert whole["start_s"] > first["end_s"]  # its own utterance starts after the pause
    assert wer(reference, whole["text"]) <= 0.05, whole["text"]


async def test_utterances_further_apart_than_the_turn_gap_are_not_joined(whisper: ServiceProcess) -> None:
    audio = np.concatenate([silence(0.3), speak(SENTENCE), silence(2.6), speak(SENTENCE), silence(0.3)])
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000&context=turn") as ws,
    ):
        await send(ws, audio)
        await ws.send_str(json.dumps({"type": "flush"}))
        first, second = await finals_until_flushed(ws, 1)
    assert first["replaces"] == [] == second["replaces"], (first, second)
    assert wer(SENTENCE, first["text"]) <= 0.15 and wer(SENTENCE, second["text"]) <= 0.15


async def test_the_pass_started_at_a_pause_is_the_flush_final(whisper: ServiceProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000") as ws,
    ):
        before = await passes(session, whisper.url)
        # 300 ms of silence: a pause (120 ms), not yet an end of speech (600 ms)
        await send(ws, np.concatenate([silence(0.3), speak(SENTENCE), silence(0.3)]))
        await wait_for_passes(session, whisper.url, "speculative", before.get("speculative", 0) + 1)
        await ws.send_str(json.dumps({"type": "flush"}))
        (final,) = await finals_until_flushed(ws, 1)
        after = await passes(session, whisper.url)
    assert final["reason"] == "flush" and wer(SENTENCE, final["text"]) <= 0.15, final
    assert after.get("final", 0) == before.get("final", 0)  # no pass of its own: the pause's was it


async def test_speech_after_a_pause_makes_its_pass_stale(whisper: ServiceProcess) -> None:
    # a 400 ms pause: the pass on the first words ends in it, then the sentence goes on
    audio = np.concatenate([speak_with_pause(FIRST, REST, 0.4), silence(0.2)])
    resume = pause_start(audio) + int(0.4 * 16000)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?sample_rate=16000") as ws,
    ):
        before = await passes(session, whisper.url)
        await send(ws, audio[:resume])
        await wait_for_passes(session, whisper.url, "speculative", before.get("speculative", 0) + 1)
        await send(ws, audio[resume:])
        await ws.send_str(json.dumps({"type": "flush"}))
        finals = await finals_until_flushed(ws, 1)
    assert len(finals) == 1 and wer(f"{FIRST} {REST}", finals[0]["text"]) <= 0.05, finals


async def test_an_unknown_context_is_refused_then_closed(whisper: ServiceProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{whisper.url}/v1/stream?context=sentence") as ws,
    ):
        msg = await ws.receive(timeout=30)
        event = json.loads(msg.data)
        closing = await ws.receive(timeout=30)
    assert event["type"] == "error" and event["code"] == "invalid_request", event
    assert "context" in event["message"] and closing.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008


# -- the segmenter's pauses and the audio history ------------------------------------------------


def test_the_segmenter_reports_a_pause_and_the_speech_going_on() -> None:
    spoken = speak_with_pause(FIRST, REST, 0.4)
    audio = np.concatenate([spoken, silence(1.0)])
    segmenter = UtteranceSegmenter(
        aggressiveness=2,
        min_speech_ms=120,
        end_silence_ms=600,
        pre_speech_ms=300,
        max_utterance_s=28,
        pause_ms=120,
    )
    boundaries = [b for at in range(0, len(audio), 320) for b in segmenter.push(audio[at : at + 320])]
    kinds = [type(b) for b in boundaries]
    # the 400 ms pause and the final silence each pause the utterance; only the final one ends it
    assert kinds == [SpeechStarted, SpeechPaused, SpeechResumed, SpeechPaused, SpeechEnded], kinds
    first_pause, last_pause, ended = boundaries[1], boundaries[3], boundaries[4]
    assert isinstance(first_pause, SpeechPaused) and isinstance(last_pause, SpeechPaused)
    assert isinstance(ended, SpeechEnded)
    assert abs(first_pause.end_s - pause_start(spoken) / 16000) < 0.3, first_pause  # the mid-sentence one
    assert first_pause.end_s + 0.5 < last_pause.end_s == ended.end_s
    # a pause's audio is the end's, but for a shorter silent tail
    assert last_pause.first_sample == ended.first_sample
    assert np.array_equal(last_pause.audio, ended.audio[: len(last_pause.audio)])
    assert 0.1 <= (len(ended.audio) - len(last_pause.audio)) / 16000 <= 0.2


def test_audio_history_gives_back_any_span_it_still_holds() -> None:
    rng = np.random.default_rng(0)
    history = AudioHistory(seconds=0.5)
    data = np.arange(100_000, dtype=np.float32)
    pos = 0
    while pos < len(data):
        n = int(rng.integers(1, 12_000))  # some pushes are longer than the whole history
        history.push(data[pos : pos + n])
        pos = min(pos + n, len(data))
        assert history.end == pos and history.start == max(0, pos - 8000)
        for _ in range(5):
            a = int(rng.integers(history.start, history.end + 1))
            b = int(rng.integers(a, history.end + 1))
            assert np.array_equal(history.between(a, b), data[a:b]), (a, b)
    with pytest.raises(ValueError):
        history.between(history.start - 1, history.end)


# -- the queue's rules for speculative passes ---------------------------------------------------


def blocking_jobs(ran: list[str]) -> tuple[Callable[[str], Callable[[], str]], dict[str, threading.Event]]:
    gates: dict[str, threading.Event] = {}

    def job(name: str) -> Callable[[], str]:
        gate = gates.setdefault(name, threading.Event())
        if not name.startswith("blocked"):
            gate.set()

        def run() -> str:
            gate.wait(10)
            ran.append(name)
            return name

        return run

    return job, gates


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_no_interim_starts_while_a_final_runs() -> None:
    queue = TranscriptionQueue(max_pending=4, workers=2, retry_after_s=1)
    ran: list[str] = []
    job, gates = blocking_jobs(ran)
    try:
        final = asyncio.create_task(queue.run(job("blocked-final"), priority=Priority.FINAL))
        while queue.running == 0:
            await asyncio.sleep(0.01)
        interim = asyncio.create_task(queue.run(job("interim"), priority=Priority.INTERIM, stream_id="a"))
        await settle()
        assert queue.running == 1 and queue.depth == 1  # a worker is free, yet the interim waits
        gates["blocked-final"].set()
        assert await asyncio.gather(final, interim) == ["blocked-final", "interim"]
        assert ran == ["blocked-final", "interim"]
    finally:
        for gate in gates.values():
            gate.set()
        await queue.aclose()


async def test_speculative_passes_go_before_interims_and_a_flush_promotes_them() -> None:
    queue = TranscriptionQueue(max_pending=4, workers=2, retry_after_s=1)
    ran: list[str] = []
    job, gates = blocking_jobs(ran)
    try:
        # the worker that is not kept for finals is busy with stream z's speculative pass
        busy = asyncio.create_task(queue.run(job("blocked-z"), priority=Priority.SPECULATIVE, stream_id="z"))
        while queue.running == 0:
            await asyncio.sleep(0.01)
        interim = asyncio.create_task(queue.run(job("interim-a"), priority=Priority.INTERIM, stream_id="a"))
        speculative = asyncio.create_task(
            queue.run(job("spec-b"), priority=Priority.SPECULATIVE, stream_id="b")
        )
        await settle()
        assert queue.running == 1 and queue.depth == 2
        # stream a pauses too: its speculative pass replaces its waiting interim
        spec_a = asyncio.create_task(queue.run(job("spec-a"), priority=Priority.SPECULATIVE, stream_id="a"))
        with pytest.raises(InterimShed):
            await interim
        # b's flush came: its pass is a final now and takes the worker kept for finals
        assert queue.reprioritize("b", Priority.SPECULATIVE, Priority.FINAL)
        assert await speculative == "spec-b" and ran == ["spec-b"]
        assert not queue.reprioritize("b", Priority.SPECULATIVE, Priority.FINAL)  # nothing left waiting
        gates["blocked-z"].set()
        assert await asyncio.gather(busy, spec_a) == ["blocked-z", "spec-a"]
        assert ran == ["spec-b", "blocked-z", "spec-a"]
    finally:
        for gate in gates.values():
            gate.set()
        await queue.aclose()
