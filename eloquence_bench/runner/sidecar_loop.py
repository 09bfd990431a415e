"""One turn straight through the sidecars' wire protocols (API.md), without an AgentSession.

This is the level at which our sidecars meet the peers (the same client, pacing and endpoint
for both) and at which the concurrency mode loads the services:

    paced audio ─WS /v1/stream─▶ whisper-stt   (flush 250 ms after t0, PacedStream.endpoint_due)
    final text ─mistralai SDK──▶ local LLM     (streamed; first complete sentence)
    sentence  ─WS /v1/stream─▶  azure-tts      (first non-silent PCM frame)

Every time is measured from t0 (pacing.py) with one clock, `time.perf_counter()`. The clients of
the sidecars' protocols here serve the per-component benchmarks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from sidecar_common.pcm import is_voiced_pcm16

from ..baselines import LLMTiming
from ..corpus import Utterance
from ..pacing import PacedStream

TURN_TIMEOUT_S = 60.0


OVERLOAD_RETRY_S = 1.0
"""The sidecars' Retry-After; a shed request is retried before its first byte, as the providers do."""
OVERLOAD_BUDGET_S = 30.0


class SidecarError(RuntimeError):
    """A sidecar answered with an error event or status; the message carries its code."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def _overloaded(e: BaseException) -> bool:
    return isinstance(e, SidecarError) and e.code == "overloaded"


def llm_messages(text: str, *, exercise: str = "default", language: str = "en") -> list[dict[str, str]]:
    """What the agent sends on the first turn: the exercise's instructions, its greeting, the user."""
    from eloquence.exercises import get_exercise

    ex = get_exercise(exercise)
    return [
        {"role": "system", "content": ex.instructions(language)},
        {"role": "assistant", "content": ex.greeting(language)},
        {"role": "user", "content": text},
    ]


@dataclass
class STTResult:
    text: str
    t_final: float
    t_flush: float
    stream: PacedStream


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + path


async def stream_stt(
    session: aiohttp.ClientSession,
    whisper_url: str,
    utterance: Utterance,
    *,
    endpoint_silence_ms: int,
    language: str = "en",
) -> STTResult:
    """Stream one utterance in real time, flush `endpoint_silence_ms` after t0, wait for the final."""
    stream = PacedStream(utterance.samples)
    url = ws_url(whisper_url, f"/v1/stream?sample_rate=16000&language={language}")
    finals: list[tuple[float, str]] = []
    t_flush: float | None = None
    flush_final = asyncio.Event()

    async with session.ws_connect(url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:

        async def receive() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                kind = event.get("type")
                if kind == "error":
                    raise SidecarError(
                        f"whisper-stt: {event.get('code')}: {event.get('message')}", code=event.get("code")
                    )
                if kind == "final":
                    finals.append((time.perf_counter(), str(event.get("text", "")).strip()))
                    if t_flush is not None:
                        flush_final.set()
                        return
            raise SidecarError(f"whisper-stt closed the stream ({ws.close_code}) before the final")

        receiver = asyncio.create_task(receive())
        try:
            async for frame in stream.frames():
                if receiver.done():
                    break
                await ws.send_bytes(frame)
                if t_flush is None and stream.endpoint_due(endpoint_silence_ms):
                    await ws.send_str(json.dumps({"type": "flush"}))
                    t_flush = time.perf_counter()
                    stream.stop()
            await asyncio.wait_for(receiver, TURN_TIMEOUT_S)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
    stream.assert_real_time()
    spoken = [(t, text) for t, text in finals if text]
    if t_flush is None or stream.t0 is None:
        raise SidecarError("the utterance never reached its endpoint")
    # the sidecar may finalize on its own before the flush; the first non-empty final counts
    t_final = spoken[0][0] if spoken else finals[-1][0]
    return STTResult(
        text=" ".join(text for _, text in spoken), t_final=t_final, t_flush=t_flush, stream=stream
    )


class TTSSpeaker:
    """One WS /v1/stream to azure-tts, segment by segment, as the agent's provider keeps it open."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sample_rate: int) -> None:
        self._ws = ws
        self.sample_rate = sample_rate
        self.audio_s = 0.0

    async def segment(self, text: str) -> float | None:
        """Speak `text` as one segment; the perf_counter time of its first audible frame."""
        await self._ws.send_str(json.dumps({"type": "text", "text": text}))
        await self._ws.send_str(json.dumps({"type": "flush"}))
        first: float | None = None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.audio_s += len(msg.data) / 2 / self.sample_rate
                if first is None and is_voiced_pcm16(msg.data):
                    first = time.perf_counter()
            elif msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                if event.get("type") == "error":
                    raise SidecarError(
                        f"azure-tts: {event.get('code')}: {event.get('message')}", code=event.get("code")
                    )
                if event.get("type") == "segment_end":
                    return first
            else:
                break
        raise SidecarError(
            f"azure-tts closed the stream ({self._ws.close_code}) before segment_end",
            code="overloaded" if self._ws.close_code == 1013 else None,
        )


@contextlib.asynccontextmanager
async def tts_speaker(session: aiohttp.ClientSession, tts_url: str, *, sample_rate: int = 24000):  # type: ignore[no-untyped-def]
    async with session.ws_connect(ws_url(tts_url, "/v1/stream"), heartbeat=None) as ws:
        await ws.send_str(json.dumps({"type": "config", "sample_rate": sample_rate}))
        yield TTSSpeaker(ws, sample_rate)


async def _speak(
    session: aiohttp.ClientSession, url: str, text: str, sample_rate: int, turn: LoopTurn
) -> tuple[float | None, float]:
    """One segment on its own socket: (first audible frame time, seconds of audio).

    A shed request (overloaded, before any audio) is retried after the Retry-After, as the
    provider does; it never repeats audio already sent.
    """
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_overloaded),
        wait=wait_fixed(OVERLOAD_RETRY_S),
        stop=stop_after_delay(OVERLOAD_BUDGET_S),
        reraise=True,
    ):
        with attempt:
            turn.tts_retries += 1 if attempt.retry_state.attempt_number > 1 else 0
            async with tts_speaker(session, url, sample_rate=sample_rate) as speaker:
                first = await speaker.segment(text)
                return first, speaker.audio_s
    raise AssertionError("unreachable")


async def tts_first_audio(
    session: aiohttp.ClientSession, tts_url: str, text: str, *, sample_rate: int = 24000
) -> float:
    """perf_counter time of the first non-silent PCM frame for `text` over WS /v1/stream."""
    async with tts_speaker(session, tts_url, sample_rate=sample_rate) as speaker:
        first = await speaker.segment(text)
    if first is None:
        raise SidecarError("azure-tts sent no audible audio")
    return first


async def tts_http_synthesize(
    session: aiohttp.ClientSession, tts_url: str, text: str, *, sample_rate: int = 24000
) -> tuple[float, float, int]:
    """POST /v1/synthesize: (seconds to the first body bytes, seconds to the end, bytes of audio)."""
    start = time.perf_counter()
    first: float | None = None
    size = 0
    body = {"text": text, "sample_rate": sample_rate}
    async with session.post(tts_url.rstrip("/") + "/v1/synthesize", json=body) as resp:
        if resp.status != 200:
            raise SidecarError(f"azure-tts: HTTP {resp.status}: {(await resp.text())[:200]}")
        async for chunk in resp.content.iter_any():
            first = time.perf_counter() - start if first is None else first
            size += len(chunk)
    if first is None:
        raise SidecarError("azure-tts sent no audio")
    return first, time.perf_counter() - start, size


@dataclass
class LoopTurn:
    """The stages of one sidecar-level turn, in ms (see `STAGES`)."""

    utterance_id: str
    stages: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    reply: str = ""
    error: str | None = None
    pacing_lead_ms: float = 0.0
    tts_retries: int = 0
    reply_audio_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "utterance_id": self.utterance_id,
            "stages": {k: round(v, 2) for k, v in self.stages.items()},
            "transcript": self.transcript,
            "reply": self.reply,
            "error": self.error,
            "pacing_lead_ms": round(self.pacing_lead_ms, 2),
            "tts_retries": self.tts_retries,
            "reply_audio_s": round(self.reply_audio_s, 2),
        }


LOOP_STAGES = ("stt_final", "stt_flush_to_final", "llm_ttft", "llm_first_sentence", "tts_first_audio", "e2e")


async def sidecar_turn(
    session: aiohttp.ClientSession,
    utterance: Utterance,
    *,
    urls: dict[str, str],
    llm: Any,
    endpoint_silence_ms: int,
    tts_sample_rate: int = 24000,
) -> LoopTurn:
    """Audio in, first reply audio out, straight through the three sidecars."""
    turn = LoopTurn(utterance_id=utterance.id)
    stt = await stream_stt(session, urls["whisper-stt"], utterance, endpoint_silence_ms=endpoint_silence_ms)
    t0 = stt.stream.t0
    assert t0 is not None
    turn.transcript = stt.text
    turn.pacing_lead_ms = stt.stream.lead_ms()
    first: asyncio.Future[LLMTiming] = asyncio.get_running_loop().create_future()
    # the reply streams to its end in the background, as in the agent; only its first sentence
    # is on the path to the first audio
    reply_task = asyncio.create_task(
        llm.stream(llm_messages(stt.text or utterance.text), on_first_sentence=first)
    )
    try:
        await asyncio.wait({first, reply_task}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            await reply_task  # raises the LLM's error
        timing = first.result()
        t_audio, audio_s = await _speak(
            session, urls["azure-tts"], timing.first_sentence, tts_sample_rate, turn
        )
        if t_audio is None:
            raise SidecarError("azure-tts sent no audible audio for the first sentence")
        full = await reply_task
        rest = full.text.strip()[len(timing.first_sentence) :].strip()
        if rest:  # the rest of the reply loads the TTS as it does in a conversation
            audio_s += (await _speak(session, urls["azure-tts"], rest, tts_sample_rate, turn))[1]
    finally:
        reply_task.cancel()
    # the user listens to the whole reply before speaking again
    turn.reply_audio_s = audio_s
    playback_end = t_audio + audio_s
    await asyncio.sleep(max(0.0, playback_end - time.perf_counter()))
    turn.reply = full.text.strip()
    turn.stages = {
        "stt_final": (stt.t_final - t0) * 1000,
        "stt_flush_to_final": max(0.0, (stt.t_final - stt.t_flush) * 1000),
        "llm_ttft": timing.ttft_ms,
        "llm_first_sentence": timing.first_sentence_ms,
        "tts_first_audio": (t_audio - timing.t_first_sentence) * 1000,
        "e2e": (t_audio - t0) * 1000,
    }
    return turn


def loop_timeline(stages: dict[str, float]) -> dict[str, Any]:
    """Stage spans in ms after t0 (the waterfall's bars); empty when a stage is missing."""
    stt, ttft, sentence, e2e = (stages.get(k) for k in ("stt_final", "llm_ttft", "llm_first_sentence", "e2e"))
    if stt is None or ttft is None or sentence is None or e2e is None:
        return {}
    return {
        "stt": (0.0, stt),
        "llm": (stt, stt + sentence),
        "llm_ttft": stt + ttft,
        "tts": (stt + sentence, e2e),
    }
