"""whisper-stt latency: end of the audio sent to the `final`, and the overhead against faster-whisper.

Three parts, one run:
1. The encoder-window gate, in process: WER and time of the short ("utterance") window against the
   stock 30 s window, on held-out sentences (Piper's voice, plus espeak-ng's when it is installed).
2. Overhead: per utterance, faster-whisper called directly (stock, and through our wrapper with the
   service's window) against the service over HTTP and over the websocket (flush → final), in
   alternating order so that neither always runs on a warmer machine.
3. Concurrency: 1, 4, 8 streams at real-time pace, each ending its utterances with a flush (as the
   agent does) at staggered times; the latency is from the last audio frame sent to the `final`.

    python -m eloquence_bench.components.whisper_stt --repeats 3 --streams 1 4 8
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf
import soxr
from rich.console import Console
from rich.table import Table

from eloquence.services import WHISPER_STT, running_service
from sidecar_common.pcm import float_to_pcm16
from whisper_stt.model import WhisperTranscriber
from whisper_stt.settings import WhisperSTTSettings

from ..baselines import EngineConfig, RawWhisper
from ..quality import wer
from ..runner.sidecar_loop import ws_url
from ..speech import silence, speak, to_wav

# Held out: none of these is in the tests.
SENTENCES = [
    "Yes.",
    "No, thanks.",
    "Could you repeat the last part more slowly?",
    "I would like to practice my presentation for the meeting on Thursday.",
    "Please remind me to call my sister tomorrow afternoon.",
    "The weather in the mountains changes quickly, so always bring a warm jacket and plenty of water.",
    "When I speak in public, my voice gets shaky and I forget what I wanted to say next.",
    "Our team decided to postpone the product launch until the security review is complete.",
    "The library closes at eight o'clock on weekdays and at five on weekends.",
    "Let's start with a short warm-up exercise before we move on to the interview questions.",
    "The train to Boston leaves from platform four in about fifteen minutes.",
    "What time is it?",
]
CHUNK_S = 0.02
console = Console(width=150)


def espeak(text: str) -> np.ndarray | None:
    if shutil.which("espeak-ng") is None:
        return None
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


def padded(audio: np.ndarray, tail_s: float = 0.2) -> np.ndarray:
    return np.concatenate([silence(0.3), audio, silence(tail_s)])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ms(value: float) -> str:
    return f"{value * 1000:.0f}"


# -- 1. the gate ------------------------------------------------------------------------------------


def encoder_window_gate(transcriber: WhisperTranscriber, clips: list[tuple[str, str, np.ndarray]]) -> None:
    rows = {"full": ([], []), "utterance": ([], [])}
    retries = 0
    for _, _, audio in clips[:2]:
        transcriber.transcribe(audio)  # warm both paths
        transcriber.transcribe(audio, full_window=True)
    for _, _, audio in clips:
        for window in ("full", "utterance") if random.random() < 0.5 else ("utterance", "full"):
            start = time.perf_counter()
            result = transcriber.transcribe(audio, full_window=window == "full")
            rows[window][0].append(time.perf_counter() - start)
            rows[window][1].append(result.text)
            retries += result.retried_full_window
    reference = " ".join(text for _, text, _ in clips)
    table = Table(
        title=f"1. Encoder window gate ({len(clips)} held-out utterances, {sorted({v for v, _, _ in clips})})"
    )
    for column in ("window", "corpus WER", "median ms", "p95 ms", "speed-up"):
        table.add_column(column)
    full_median = statistics.median(rows["full"][0])
    for window, (times, texts) in rows.items():
        median = statistics.median(times)
        table.add_row(
            window,
            f"{wer(reference, ' '.join(texts)):.3f}",
            ms(median),
            ms(pct(times, 95)),
            f"{full_median / median:.2f}x",
        )
    console.print(table)
    console.print(f"   short-window passes redone on the full window (loop guard): {retries}")


# -- 2. overhead ----------------------------------------------------------------------------------


async def http_latency(session: aiohttp.ClientSession, url: str, audio: np.ndarray) -> tuple[float, str]:
    form = aiohttp.FormData()
    form.add_field("file", to_wav(audio), filename="a.wav")
    start = time.perf_counter()
    async with session.post(f"{url}/v1/audio/transcriptions", data=form) as response:
        body = await response.json()
    return time.perf_counter() - start, body["text"]


async def stream_utterances(
    session: aiohttp.ClientSession,
    url: str,
    clips: list[np.ndarray],
    *,
    realtime: bool,
    offset_s: float = 0.0,
) -> list[tuple[float, str, int]]:
    """Send each clip then a flush; (last frame sent → final, its text, interims seen) for each."""
    results = []
    await asyncio.sleep(offset_s)
    async with session.ws_connect(ws_url(url, "/v1/stream?sample_rate=16000&language=en")) as ws:
        for audio in clips:
            pcm = float_to_pcm16(audio)
            step = int(CHUNK_S * 16000) * 2
            started = time.perf_counter()
            for i, at in enumerate(range(0, len(pcm), step)):
                await ws.send_bytes(pcm[at : at + step])
                if realtime:
                    await asyncio.sleep(max(0.0, started + (i + 1) * CHUNK_S - time.perf_counter()))
            await ws.send_str(json.dumps({"type": "flush"}))
            sent = time.perf_counter()
            events = await events_until_flush_final(ws)
            interims = sum(event["type"] == "interim" for event in events)
            results.append((time.perf_counter() - sent, events[-1]["text"], interims))
    return results


async def events_until_flush_final(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """The stream's events up to and including the final its flush asked for; an error event raises."""
    events: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=120)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"stream ended: {msg.type} {msg.data!r}")
        event = json.loads(msg.data)
        if event["type"] == "error":
            raise RuntimeError(f"error event: {event.get('code')}: {event.get('message')}")
        events.append(event)
        if event["type"] == "final" and event["reason"] == "flush":
            return events


async def overhead(
    url: str,
    direct: RawWhisper,
    transcriber: WhisperTranscriber,
    clips: list[tuple[str, str, np.ndarray]],
    repeats: int,
) -> None:
    times: dict[str, list[float]] = {
        "faster-whisper direct (stock 30 s window)": [],
        "our wrapper direct (service window)": [],
        "service HTTP": [],
        "service stream flush→final": [],
    }
    texts: dict[str, list[str]] = {name: [] for name in times}
    refs: list[str] = []

    async with aiohttp.ClientSession() as session:
        for repeat in range(repeats):
            for _, text, audio in clips:
                refs.append(text)
                names = list(times)
                if repeat % 2:
                    names.reverse()
                for name in names:
                    if name.startswith("faster-whisper"):
                        start = time.perf_counter()
                        got, _ = await direct.transcribe(audio)
                        elapsed = time.perf_counter() - start
                    elif name.startswith("our wrapper"):
                        start = time.perf_counter()
                        got = (await asyncio.to_thread(transcriber.transcribe, audio)).text
                        elapsed = time.perf_counter() - start
                    elif name == "service HTTP":
                        elapsed, got = await http_latency(session, url, audio)
                    else:
                        ((elapsed, got, _),) = await stream_utterances(session, url, [audio], realtime=False)
                    times[name].append(elapsed)
                    texts[name].append(got)
    table = Table(title=f"2. Overhead, same audio, {len(refs)} utterances per path (median)")
    for column in ("path", "median ms", "p95 ms", "WER", "÷ faster-whisper direct", "÷ our wrapper direct"):
        table.add_column(column)
    base_stock = statistics.median(times["faster-whisper direct (stock 30 s window)"])
    base_wrapper = statistics.median(times["our wrapper direct (service window)"])
    for name, values in times.items():
        median = statistics.median(values)
        table.add_row(
            name,
            ms(median),
            ms(pct(values, 95)),
            f"{wer(' '.join(refs), ' '.join(texts[name])):.3f}",
            f"{median / base_stock:.2f}",
            f"{median / base_wrapper:.2f}",
        )
    console.print(table)


# -- 3. concurrency ---------------------------------------------------------------------------------


async def concurrency(
    url: str, clips: list[tuple[str, str, np.ndarray]], levels: list[int], per_stream: int
) -> None:
    table = Table(
        title=f"3. Real-time streams, end of audio sent → final (flush), {per_stream} utterances per stream"
    )
    for column in ("streams", "finals", "median ms", "p95 ms", "max ms", "WER", "interims/final"):
        table.add_column(column)
    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        for level in levels:
            jobs, refs = [], []
            for s in range(level):
                chosen = [clips[(s * per_stream + k) % len(clips)] for k in range(per_stream)]
                refs.append([text for _, text, _ in chosen])
                # Staggered starts: turns of independent users end at different moments.
                jobs.append(
                    stream_utterances(
                        session, url, [a for _, _, a in chosen], realtime=True, offset_s=rng.uniform(0, 1.5)
                    )
                )
            results = await asyncio.gather(*jobs)
            latencies = [lat for stream in results for lat, _, _ in stream]
            hyp = " ".join(text for stream in results for _, text, _ in stream)
            interims = [n for stream in results for _, _, n in stream]
            ref = " ".join(t for stream in refs for t in stream)
            table.add_row(
                str(level),
                str(len(latencies)),
                ms(statistics.median(latencies)),
                ms(pct(latencies, 95)),
                ms(max(latencies)),
                f"{wer(ref, hyp):.3f}",
                f"{statistics.mean(interims):.1f}",
            )
    console.print(table)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="overhead repeats over the sentences")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--per-stream", type=int, default=3, help="utterances per stream in part 3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--window",
        choices=["utterance", "full"],
        default=None,
        help="service encoder window (default: its setting)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="service WHISPER_WORKERS (default: its setting)"
    )
    parser.add_argument("--skip-gate", action="store_true")
    args = parser.parse_args()
    random.seed(1)

    settings = WhisperSTTSettings()
    window = args.window or settings.whisper_encoder_window
    voices = {"piper": [(s, padded(speak(s))) for s in SENTENCES]}
    if espeak("test") is not None:
        voices["espeak-ng"] = [(s, padded(espeak(s))) for s in SENTENCES]  # type: ignore[arg-type]
    clips = [(voice, text, audio) for voice, items in voices.items() for text, audio in items]
    console.print(
        f"whisper-stt bench: {len(clips)} utterances, threads={args.threads}, service window={window}"
    )

    transcriber = WhisperTranscriber(
        model_path=settings.whisper_model, cpu_threads=args.threads, encoder_window=window
    )
    if not args.skip_gate:
        gate = (
            transcriber
            if window == "utterance"
            else WhisperTranscriber(
                model_path=settings.whisper_model, cpu_threads=args.threads, encoder_window="utterance"
            )
        )
        encoder_window_gate(gate, clips)

    # stock faster-whisper: int8, beam 1, English, no VAD filter, no previous-text conditioning
    direct = RawWhisper(config=EngineConfig(stt_model_path=settings.whisper_model, stt_threads=args.threads))
    workers = args.workers or settings.whisper_workers
    env = {
        "WHISPER_CPU_THREADS": str(args.threads),
        "WHISPER_ENCODER_WINDOW": window,
        "WHISPER_WORKERS": str(workers),
    }
    console.print(
        f"service: WHISPER_WORKERS={workers}, interims every {settings.whisper_interim_interval_ms} ms"
    )
    with tempfile.TemporaryDirectory() as logs, running_service(WHISPER_STT, Path(logs), env=env) as service:
        piper_clips = [c for c in clips if c[0] == "piper"]
        await overhead(service.url, direct, transcriber, piper_clips, args.repeats)
        await concurrency(service.url, piper_clips, args.streams, args.per_stream)


if __name__ == "__main__":
    asyncio.run(main())
