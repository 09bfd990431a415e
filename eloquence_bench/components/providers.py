"""Overhead of the WhisperSTT and AzureTTS plugins against the raw sidecar protocol, in one run.

On the same sidecars (started here as subprocesses unless --stt-url/--tts-url are given), each
repeat measures both sides back to back, alternating which goes first:
- STT end of speech → final: a Piper-spoken utterance is streamed (the sidecar has consumed it),
  then the flush is timed until the final arrives: `WhisperSTT.stream().flush()` → FINAL_TRANSCRIPT
  event, against `{"type":"flush"}` → `final` on a raw websocket;
- TTS time to first audio frame, streamed: `AzureTTS.stream()` (pooled socket, prewarmed) push +
  flush → first SynthesizedAudio, against config + text + flush → first binary frame on a raw,
  already open websocket;
- TTS time to first audio frame over HTTP: `AzureTTS.synthesize()` against a raw POST /v1/synthesize;
- the same TTS measurements on a cache hit (the sidecar's audio cache already holds the text).

Medians over --repeats, and the absolute difference (plugin - raw) in milliseconds. On a busy
2-core box the sidecar's own variance dwarfs the plugin, so the run also times the plugin alone:
the shared aiohttp session timestamps what the plugin's socket sends and receives, and "plugin own"
is the time between the caller and the wire (STT: flush() → flush on the wire, plus final on the
wire → FINAL_TRANSCRIPT at the caller; TTS stream: stream() + push_text → text on the wire, plus first
audio on the wire → first SynthesizedAudio; TTS http: response headers, which come with the first
audio, → first SynthesizedAudio). Run:
  python -m eloquence_bench.components.providers [--repeats 9] [--stt-url URL] [--tts-url URL] \
      [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from livekit import rtc
from livekit.agents import stt

from eloquence.services import AZURE_TTS, WHISPER_STT, ServiceDefinition, running_service
from providers.stt import WhisperSTT
from providers.tts import AzureTTS
from sidecar_common.pcm import float_to_pcm16

from ..runner.sidecar_loop import tts_http_synthesize, ws_url
from ..speech import silence, speak

UTTERANCE = "I would like to practise the opening of my presentation."
TOPICS = ["opening", "closing", "pitch", "interview", "toast", "review", "briefing", "lecture", "update",
          "demo", "keynote", "report", "summary", "debate", "story", "lesson"]  # fmt: skip
SAMPLE_RATE_TTS = 24000
SETTLE_S = 1.5  # after streaming the utterance: the sidecar has consumed it and its interims are done
FRAME_BYTES = 640  # 20 ms at 16 kHz


def sentence(n: int) -> str:
    """A one-chunk sentence that no earlier request used: the sidecar's cache misses."""
    return f"Round {n}: let us rehearse your {TOPICS[n % len(TOPICS)]} once more, slowly."


@contextlib.contextmanager
def sidecar(
    definition: ServiceDefinition, url: str | None, log_dir: Path, env: dict[str, str]
) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    with running_service(definition, log_dir, env=env) as proc:
        yield proc.url


# --- the probe: when the plugin's messages actually cross the wire -------------------------------


class WireClock:
    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, time.perf_counter()))

    def first(self, what: str, *, after: float) -> float:
        return next(t for w, t in self.marks if w == what and t >= after)


WIRE = WireClock()
OWN: dict[str, list[float]] = {}  # the plugin's own time per measure


class TimedWebSocket(aiohttp.ClientWebSocketResponse):
    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:
        msg = await super().receive(timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            WIRE.mark("in:audio")
        elif msg.type == aiohttp.WSMsgType.TEXT:
            WIRE.mark(f"in:{json.loads(msg.data).get('type')}")
        return msg

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await super().send_str(data, compress)
        WIRE.mark(f"out:{json.loads(data).get('type')}")


def timed_session() -> aiohttp.ClientSession:
    async def headers_received(*_: Any) -> None:
        WIRE.mark("in:http headers")  # the sidecar sends them with the first audio frame

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(headers_received)
    return aiohttp.ClientSession(ws_response_class=TimedWebSocket, trace_configs=[trace])


# --- STT: end of speech -> final ----------------------------------------------------------------


async def stt_plugin(whisper: WhisperSTT, pcm: bytes) -> float:
    stream = whisper.stream()
    try:
        for i in range(0, len(pcm), FRAME_BYTES):
            chunk = pcm[i : i + FRAME_BYTES]
            stream.push_frame(
                rtc.AudioFrame(
                    data=chunk, sample_rate=16000, num_channels=1, samples_per_channel=len(chunk) // 2
                )
            )
        await asyncio.sleep(SETTLE_S)
        start = time.perf_counter()
        stream.flush()
        async for ev in stream:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                end = time.perf_counter()
                sent, received = WIRE.first("out:flush", after=start), WIRE.first("in:final", after=start)
                OWN.setdefault("STT end of speech → final", []).append((sent - start) + (end - received))
                return end - start
        raise RuntimeError("the stream ended without a final")
    finally:
        await stream.aclose()


async def stt_raw(http: aiohttp.ClientSession, url: str, pcm: bytes) -> float:
    async with http.ws_connect(ws_url(url, "/v1/stream?sample_rate=16000&language=en")) as ws:
        for i in range(0, len(pcm), FRAME_BYTES):
            await ws.send_bytes(pcm[i : i + FRAME_BYTES])
        await asyncio.sleep(SETTLE_S)
        start = time.perf_counter()
        await ws.send_str(json.dumps({"type": "flush"}))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "final":
                return time.perf_counter() - start
        raise RuntimeError("the socket closed without a final")


# --- TTS: time to first audio frame -------------------------------------------------------------


async def tts_stream_plugin(azure: AzureTTS, text: str, cache: str) -> float:
    start = time.perf_counter()
    stream = azure.stream()
    stream.push_text(text)
    stream.end_input()
    first = None
    async for _ in stream:
        if first is None:
            first = time.perf_counter() - start
            sent = WIRE.first("out:text", after=start) - start
            own = sent + (start + first - WIRE.first("in:audio", after=start))
            OWN.setdefault(f"TTS first frame, stream ({cache})", []).append(own)
        # then drain: the socket goes back to the pool
    await stream.aclose()
    assert first is not None
    return first


async def tts_stream_raw(ws: aiohttp.ClientWebSocketResponse, text: str) -> float:
    start = time.perf_counter()
    await ws.send_str(json.dumps({"type": "config", "sample_rate": SAMPLE_RATE_TTS}))
    await ws.send_str(json.dumps({"type": "text", "text": text}))
    await ws.send_str(json.dumps({"type": "flush"}))
    first = None
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            first = first or time.perf_counter() - start
        elif msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "segment_end":
            break
        elif msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "error":
            raise RuntimeError(msg.data)
    assert first is not None
    return first


async def tts_http_plugin(azure: AzureTTS, text: str, cache: str) -> float:
    start = time.perf_counter()
    first = None
    async with azure.synthesize(text) as stream:
        async for _ in stream:
            if first is None:
                first = time.perf_counter() - start
                own = start + first - WIRE.first("in:http headers", after=start)
                OWN.setdefault(f"TTS first frame, http ({cache})", []).append(own)
    assert first is not None
    return first


async def tts_http_raw(http: aiohttp.ClientSession, url: str, text: str) -> float:
    first, _, _ = await tts_http_synthesize(http, url, text, sample_rate=SAMPLE_RATE_TTS)
    return first


# --- the run ------------------------------------------------------------------------------------


Pair = tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]


async def measure(results: dict[str, dict[str, list[float]]], name: str, i: int, pair: Pair) -> None:
    plugin, raw = pair
    row = results.setdefault(name, {"plugin": [], "raw": []})
    order = [("plugin", plugin), ("raw", raw)]
    for side, run in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
        row[side].append(await run())


async def run(args: argparse.Namespace, stt_url: str, tts_url: str) -> dict[str, dict[str, list[float]]]:
    pcm = float_to_pcm16(np.concatenate([silence(0.3), speak(UTTERANCE)]))
    results: dict[str, dict[str, list[float]]] = {}
    async with timed_session() as http:
        whisper = WhisperSTT(base_url=stt_url, language="en", http_session=http)
        azure = AzureTTS(base_url=tts_url, sample_rate=SAMPLE_RATE_TTS, http_session=http)
        azure.prewarm()
        ws_tts = await http.ws_connect(ws_url(tts_url, "/v1/stream"))
        try:
            # warm-up: models, pools and keep-alive connections, not measured
            await stt_plugin(whisper, pcm)
            await stt_raw(http, stt_url, pcm)
            await tts_stream_plugin(azure, "Warming up.", "warm-up")
            await tts_stream_raw(ws_tts, "Warming up.")
            for i in range(args.repeats):
                stt_pair = (partial(stt_plugin, whisper, pcm), partial(stt_raw, http, stt_url, pcm))
                await measure(results, "STT end of speech → final", i, stt_pair)
                # distinct texts of the same length, so that the sidecar's cache misses
                a, b, c, d = (sentence(4 * i + k + 1) for k in range(4))
                for cache in ("cold", "cache hit"):  # then the cache hits: the same texts again
                    stream = (partial(tts_stream_plugin, azure, a, cache), partial(tts_stream_raw, ws_tts, b))
                    over_http = (
                        partial(tts_http_plugin, azure, c, cache),
                        partial(tts_http_raw, http, tts_url, d),
                    )
                    await measure(results, f"TTS first frame, stream ({cache})", i, stream)
                    await measure(results, f"TTS first frame, http ({cache})", i, over_http)
        finally:
            await ws_tts.close()
            await whisper.aclose()
            await azure.aclose()
    return results


def report(results: dict[str, dict[str, list[float]]], repeats: int) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"plugin vs raw sidecar protocol (medians of {repeats}, ms)")
    for col in ("measure", "plugin", "raw", "plugin - raw", "plugin own"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    rows = []
    for name, sides in results.items():
        plugin, raw = statistics.median(sides["plugin"]) * 1000, statistics.median(sides["raw"]) * 1000
        own = statistics.median(OWN[name]) * 1000
        rows.append({"measure": name, "plugin_ms": round(plugin, 1), "raw_ms": round(raw, 1),
                     "diff_ms": round(plugin - raw, 1), "plugin_own_ms": round(own, 2),
                     "repeats": len(sides["plugin"])})  # fmt: skip
        table.add_row(name, f"{plugin:.1f}", f"{raw:.1f}", f"{plugin - raw:+.1f}", f"{own:.2f}")
    Console().print(table)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--stt-url", help="a running whisper-stt (default: start one here)")
    parser.add_argument("--tts-url", help="a running azure-tts (default: start one here, Piper engine)")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="providers-bench-") as tmp:
        log_dir = Path(tmp)
        with (
            sidecar(WHISPER_STT, args.stt_url, log_dir, {"WHISPER_CPU_THREADS": "2"}) as stt_url,
            sidecar(
                AZURE_TTS, args.tts_url, log_dir, {"TTS_ENGINE": "piper", "PIPER_THREADS": "1"}
            ) as tts_url,
        ):
            results = asyncio.run(run(args, stt_url, tts_url))
    rows = report(results, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
